"""What pumpctl shows and asks: output (text or --json), review prompts,
the exceptions that end a command with a known exit code, and progress.
Exit codes: see pumpctl.cli."""
import argparse
import contextlib
import json
import os
import re
import sys

from pumpctl.argv import json_requested
from pumpctl.fw import link_commands as lc
from pumpctl.fw import wire
from pumpctl.link import LinkError, PumpError

EXIT_OK, EXIT_INPUT, EXIT_REFUSED, EXIT_LINK, EXIT_AUTH, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5
EXIT_INTERNAL, EXIT_OUTPUT, EXIT_INTERRUPTED, EXIT_PIPE = 70, 74, 130, 141
DEBUG_ENV = "PUMPCTL_DEBUG"


class Cancelled(Exception):
    pass


class Interrupted(Exception):
    """Ctrl-C; `changed` False where it is known that nothing was changed (at a
    prompt), else None (unknown)."""

    def __init__(self, message, changed=None):
        super().__init__(message)
        self.changed = changed


class UsageError(Exception):
    pass



# -- output ------------------------------------------------------------------------
def jsonable(x):
    if isinstance(x, (bytes, bytearray)):
        return x.hex()
    raise TypeError(type(x).__name__)


def emit(args, data, text):
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=jsonable))
    else:
        print(text() if callable(text) else text)


def note(msg):
    print(msg, file=sys.stderr)


def interactive():
    return sys.stdin is not None and not sys.stdin.closed and sys.stdin.isatty()


def ask(prompt):
    """A line typed at the terminal. Ctrl-D (end of input) cancels and Ctrl-C
    interrupts, both before anything is changed."""
    # The prompt goes with the review on standard output (input() would put
    # it on stderr at a terminal).
    try:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        return input()
    except EOFError:
        print()
        raise Cancelled("no answer (end of input): nothing changed")
    except KeyboardInterrupt:
        print()
        raise Interrupted("interrupted at the prompt: nothing changed", changed=False)


def confirm(args, question):
    """Review-then-confirm: --yes, or 'y' typed at a terminal. Anything else
    cancels, and nothing has been changed."""
    if getattr(args, "yes", False):
        return
    if not interactive():
        raise Cancelled("not confirmed: nothing changed (run at a terminal, or add --yes)")
    answer = ask("%s [y/N] " % question).strip().lower()
    if answer not in ("y", "yes"):
        raise Cancelled("cancelled: nothing changed")


class DryRun(Exception):
    """--dry-run at the end of a review: what would be sent, nothing sent."""

    def __init__(self, command, payload, review=None):
        super().__init__(command)
        self.command, self.payload, self.review = command, payload, review


def send_reviewed(args, c, question, mtype, payload, review=None):
    """The end of every review: with --dry-run stop here (exit 0, nothing sent,
    what would be sent shown); else --yes or 'y' at the terminal, then send.
    A review left open past the session's idle time logs in again and, for a
    command the pump can dry-run, checks that its figures are still the ones
    reviewed before sending."""
    if getattr(args, "dry_run", False):
        raise DryRun(lc.COMMANDS[mtype][0], payload, review)
    confirm(args, question)
    if c.session_stale():
        _resume_session(c, mtype, payload, review)
    try:
        return _send_noted(args, c, mtype, payload)
    except PumpError as e:
        if e.code != wire.NOT_AUTHENTICATED or c.role is None:
            raise
    _resume_session(c, mtype, payload, review)  # the pump's clock ended it (nothing was done)
    return _send_noted(args, c, mtype, payload)


def _send_noted(args, c, mtype, payload):
    with _in_flight(args, c, mtype, _log_position(c, mtype)):
        return c.request(mtype, payload)


def _log_position(c, mtype):
    # The pump's last log record before a therapy-changing command (clinician).
    if not lc.COMMANDS[mtype][2] or c.role != "clinician":
        return None
    return c.request(lc.LOG_READ, {"first": 1, "max": 1})["last_seq"]


@contextlib.contextmanager
def _in_flight(args, c, mtype, log_seq):
    # A therapy-changing command is noted before it is sent and the note
    # removed once the pump answered (a reply or a refusal); with no answer
    # (the link failed, pumpctl was killed) it stays for the next command to
    # that pump to report (pumpctl.inflight).
    if log_seq is None:
        yield
        return
    from pumpctl.inflight import Journal
    from pumpctl.keystore import default_path
    journal, serial = Journal(default_path(getattr(args, "keystore", None))), c.identity["serial"]
    journal.begin(serial, mtype, log_seq)
    try:
        yield
    except LinkError:
        raise  # no answer: the note stays (so does it when pumpctl is interrupted or killed)
    except Exception:
        journal.end(serial)  # answered (a refusal), or not sent (the figures changed meanwhile)
        raise
    journal.end(serial)


# Figures of a dry run that change by themselves as the pump delivers.
_MOVING = ("empty_in_s",)


def _resume_session(c, mtype, payload, review):
    note("pumpctl: the pump ended the session while the review was open (after %s without a command): logging "
         "in again" % ("%d min" % (c.idle_s // 60) if c.idle_s else "a while"))
    c.relogin()
    still_as_reviewed(c, mtype, payload, review)


def still_as_reviewed(c, mtype, payload, review):
    """For a command the pump can dry-run: its dry run now, compared with the
    one reviewed; Cancelled (nothing sent) if a figure differs."""
    reviewed = (review or {}).get("check")
    if not isinstance(reviewed, dict) or not isinstance(payload, dict):
        return
    now = c.request(mtype, dict(payload, check=True))
    changed = sorted(k for k in set(now) | set(reviewed) if k not in _MOVING and now.get(k) != reviewed.get(k))
    if changed:
        raise Cancelled("the pump's figures changed while the review was open (%s): nothing sent; run the command "
                        "again to review them as they are now" % ", ".join(changed))


class Progress:
    """A progress bar on stderr (rich), only when enabled and at a terminal."""

    def __init__(self, total, what, enabled=True):
        self.total = max(total, 0)
        self.bar = None
        if enabled and self.total and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar
            self.bar = Bar(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("records"),
                           TimeRemainingColumn(), console=_console(sys.stderr), transient=True)
            self.task = self.bar.add_task(what, total=self.total)
            self.bar.start()

    def update(self, n):
        if self.bar is not None:
            self.bar.update(self.task, completed=min(n, self.total))

    def done(self):
        if self.bar is not None:
            self.bar.stop()


def write_csv(target, headers, rows, what):
    """Rows as CSV to the file `target` ('-': standard output); says where on stderr."""
    import csv
    out = sys.stdout if target == "-" else open(target, "w", newline="")
    try:
        w = csv.writer(out)
        w.writerow(headers)
        w.writerows(rows)
    finally:
        if out is not sys.stdout:
            out.close()
    if target != "-":
        note("%d %s written to %s" % (len(rows), what, target))
    return EXIT_OK


# -- tables: rich at a terminal, plain aligned text when piped -------------------
# Cells that call for attention are styled at a terminal; the words stay the
# same in plain text, so nothing depends on colour.
_STYLES = (("<< changed", "bold yellow"), ("WARNING", "bold red"), ("FAILED", "bold red"),
           ("critical", "bold red"), ("ABOVE", "bold red"))


def styled(stream=None):
    """True when `stream` (stdout) is a terminal that takes styles."""
    stream = stream or sys.stdout
    return (stream is not None and not stream.closed and stream.isatty()
            and os.environ.get("TERM") != "dumb")


def _console(stream, width=None, force_terminal=None):
    from rich.console import Console
    return Console(file=stream, width=width, force_terminal=force_terminal, no_color=bool(os.environ.get("NO_COLOR")),
                   highlight=False)


_CONTROL = {i: "\\x%02x" % i for i in list(range(0x20)) + [0x7F]}
_CONTROL.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})


def _one_line(cell):
    # Text from a pump (a diary note, a serial) may hold a line break or a
    # terminal escape: shown escaped, it cannot break the table or the screen.
    return cell.translate(_CONTROL)


def table(rows, headers=None, indent=""):
    """Rows of cells (ragged rows allowed) as a table: the one renderer of
    every screen and report in pumpctl."""
    rows = [[_one_line(str(c)) for c in r] for r in rows]
    if not rows and not headers:
        return ""
    if styled():
        return _rich_table(rows, headers, indent)
    if headers:
        rows = [[str(h) for h in headers]] + rows
    ncol = max(len(r) for r in rows)
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(ncol)]
    lines = []
    for n, r in enumerate(rows):
        lines.append((indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r))).rstrip())
        if headers and n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _rich_table(rows, headers, indent):
    import io
    import shutil

    from rich import box
    from rich.table import Table
    from rich.text import Text
    ncol = max([len(r) for r in rows] + [len(headers or [])])
    t = Table(box=box.SIMPLE_HEAD if headers else None, show_header=bool(headers), header_style="bold",
              pad_edge=False, show_edge=False)
    for i in range(ncol):
        t.add_column(str(headers[i]) if headers and i < len(headers) else "", overflow="fold")
    for r in rows:
        cells = []
        for c in r + [""] * (ncol - len(r)):
            style = next((s for word, s in _STYLES if word in c), "")
            cells.append(Text(c, style=style))
        t.add_row(*cells)
    buf = io.StringIO()
    width = shutil.get_terminal_size().columns - len(indent)
    _console(buf, width=max(width, 40), force_terminal=True).print(t)
    return "\n".join((indent + line).rstrip() for line in buf.getvalue().rstrip("\n").split("\n"))


# -- errors ------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    # argparse takes only "-1" or "-1.5" for a negative number: "-1mL" or
    # "-30min" would be an unknown option ("the following arguments are
    # required: volume"). Anything starting "-" and a digit is a value here
    # (no pumpctl option looks like that), for its command to refuse with the
    # reason ("is negative").
    NEGATIVE_VALUE = re.compile(r"^-\.?\d")

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._negative_number_matcher = self.NEGATIVE_VALUE

    def error(self, message):  # exit 1 (refused input), not argparse's 2 (= refused by the pump)
        self.print_usage(sys.stderr)
        raise UsageError(message)


class Once(argparse.Action):
    """An option that may be given once: a therapy figure given twice is
    ambiguous (which one did the clinician mean?), so it is refused rather
    than the last one silently kept."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest, None)
        if given is not None:
            parser.error("%s given twice (%s, then %s): give it once" % (option_string, given, values))
        setattr(namespace, self.dest, values)


def _json_mode(args, argv):
    if args is not None:
        return bool(getattr(args, "json", False))
    return json_requested(argv)


JSON_ARGV: "list[str]" = []  # the command line being run, for errors raised before its options are parsed
UNKNOWN_CHANGE = ("INTERRUPTED", "INTERNAL")  # errors where the pump may or may not have been changed


def fail(args_or_argv, rc, code, message, lines=None, extra=None, newline=False):
    """An error: one line `pumpctl: ...` on stderr (or the lines given), and
    with --json the error object on stdout: {"error": {"code", "limit",
    "message", "exit", "changed", ...}}: "changed" is false unless `extra`
    says otherwise (null for an interruption or an internal error: unknown).
    Returns the exit code."""
    for line in lines or ["%spumpctl: %s" % ("\n" if newline else "", message)]:
        note(line)
    args = None if isinstance(args_or_argv, (list, tuple)) else args_or_argv
    argv = args_or_argv if isinstance(args_or_argv, (list, tuple)) else JSON_ARGV
    if _json_mode(args, list(argv)):
        err = {"code": code, "limit": None, "message": message, "exit": rc,
               "changed": None if code in UNKNOWN_CHANGE else False}
        err.update(extra or {})
        try:
            print(json.dumps({"error": err}, indent=2, sort_keys=True, default=jsonable))
        except BrokenPipeError:
            quiet_stdout()
    return rc


def quiet_stdout():
    # The reader is gone: what is left to print goes nowhere, and so does the
    # flush at exit (the Python documentation's recipe for SIGPIPE).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, ValueError, OSError):
        pass
