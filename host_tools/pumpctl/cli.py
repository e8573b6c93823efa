"""pumpctl command line: the emulator launcher and the virtual programmer.
docs/pumpctl.md is the user's guide.

Exit codes:
  0  done
  1  input refused by pumpctl before anything was sent (malformed, ambiguous
     or unknown value, bad option)
  2  refused by the pump (a hard limit, the role, the arguments): nothing changed
  3  link failure: no such port, pump busy, no reply
  4  authentication: no key for this pump, wrong key, locked out, not
     provisioned, session expired
  5  cancelled at the review (or not confirmed without a terminal): nothing changed
  6  `scenario` only: a `check` step failed (docs/scenarios.md)
 70  internal error in pumpctl (a bug): one line; the traceback with --debug or PUMPCTL_DEBUG=1
 74  the output could not be written (a full disk, an I/O error)
130  interrupted (Ctrl-C)
141  standard output closed (e.g. piped into `head`): the rest of the output is dropped
"""
import sys

from pumpctl.argv import json_requested

EXIT_INTERRUPTED_AT_START = 130  # = console.EXIT_INTERRUPTED (console is not loaded yet when it is needed)


def _interrupted_while_starting():
    """Ctrl-C while Python loads pumpctl (its first tenth of a second or so):
    exit 130 with one line (and under --json the JSON error), never a
    traceback. Nothing had been sent to a pump."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: the same answer, not a traceback
    message = "interrupted while starting: nothing was sent to the pump"
    try:
        sys.stderr.write("\npumpctl: %s\n" % message)
        sys.stderr.flush()
        if json_requested(sys.argv[1:]):
            import json
            sys.stdout.write(json.dumps({"error": {"code": "INTERRUPTED", "limit": None, "message": message,
                                                   "exit": EXIT_INTERRUPTED_AT_START, "changed": False}},
                                        indent=2, sort_keys=True) + "\n")
            sys.stdout.flush()
    except (OSError, ValueError):
        pass  # stdout or stderr closed: the exit code still says it
    return EXIT_INTERRUPTED_AT_START


# The console script `pumpctl` imports this module first: Ctrl-C during the
# imports below (cryptography, rich, pyserial: most of a short command's
# time) is an interruption like any other, not a Python traceback.
try:
    import argparse
    import errno
    import json
    import os
    import select
    import traceback

    from pumpctl import console, paths, report
    from pumpctl import units as u
    from pumpctl.commands import (accuracy, campaign, device, diary, implant, reading, settings, therapy, trial,
                                  visit, web)
    from pumpctl.console import (DEBUG_ENV, EXIT_AUTH, EXIT_CANCELLED, EXIT_INPUT, EXIT_INTERNAL,
                                 EXIT_INTERRUPTED, EXIT_LINK, EXIT_OK, EXIT_OUTPUT, EXIT_PIPE, EXIT_REFUSED,
                                 Cancelled, DryRun, Interrupted, Once, Parser, UsageError, emit, fail, jsonable,
                                 quiet_stdout)
    from pumpctl.emulator import EmulatorError
    from pumpctl.fw import link_commands as lc
    from pumpctl.fw import wire
    from pumpctl.keystore import KeyStoreError
    from pumpctl.link import AuthError, LinkError, PumpError
except KeyboardInterrupt:
    raise SystemExit(_interrupted_while_starting()) from None

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_INPUT", "EXIT_REFUSED", "EXIT_LINK", "EXIT_AUTH", "EXIT_CANCELLED",
           "EXIT_INTERNAL", "EXIT_OUTPUT", "EXIT_INTERRUPTED", "EXIT_PIPE", "DEBUG_ENV"]

_AUTH_CODES = (wire.NOT_AUTHENTICATED, wire.AUTH_FAILED, wire.LOCKED_OUT)




def cmd_scenario(args):
    from pumpctl import scenario
    return scenario.run(args.file, args.report_dir, args.state, run_command=main)

# -- the parser ---------------------------------------------------------------------------------
STATE_HELP = ("emulator state folder (default: $%s, else run/ in the checkout, %s, from any directory)"
              % (paths.STATE_ENV, paths.ROOT / "run"))


def _json_arg(text):
    try:
        return paths.loads_json(text)
    except paths.DuplicateKeyError as e:
        raise argparse.ArgumentTypeError(str(e))
    except ValueError as e:
        raise argparse.ArgumentTypeError("not JSON (%s): e.g. '{\"drug\": \"morphine\", \"conc\": \"10mg/mL\", "
                                         "\"dose\": \"4mg/day\"}'" % e)


def _common(json_output=True):
    p = Parser(add_help=False)
    g = p.add_argument_group("connection and output")
    g.add_argument("--port", default="auto",
                   help="device path, pyserial URL (socket://host:port, rfc2217://...), 'auto' (a Pico on USB, "
                        "else the emulator of --state) or 'emulator' (start one for this command)")
    g.add_argument("--state", help=STATE_HELP)
    g.add_argument("--keystore", help="key store file (default: $PUMPCTL_KEYSTORE or ~/.config/pumpctl/keys.json)")
    g.add_argument("--role", choices=("clinician", "patient"), help="log in with this role's key")
    if json_output:
        g.add_argument("--json", action="store_true", help="machine-readable output (errors too: {\"error\": {...}})")
    g.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply (default 2)")
    return p


def _reviewed():
    """Options of the commands that change the pump: review, then confirm."""
    p = Parser(add_help=False)
    g = p.add_argument_group("review and confirm")
    g.add_argument("--yes", action="store_true", help="confirm the review without asking")
    g.add_argument("--dry-run", action="store_true", help="show the review and what would be sent, send nothing, "
                                                          "exit 0")
    return p


def _override_option(p):
    p.add_argument("--override", action="store_true",
                   help="allow a 24-hour total above the drug's usual maximum, up to its hard maximum (ziconotide, "
                        "baclofen); shown at the review, sent only after confirmation, logged by the pump")


def _rx_options(p):
    g = p.add_argument_group("prescription (clinician units)")
    g.add_argument("--drug", action=Once, help="e.g. morphine, baclofen, ziconotide")
    g.add_argument("--conc", action=Once, help="concentration, e.g. 10mg/mL or 500ug/mL")
    g.add_argument("--dose", action=Once, help="continuous daily dose, e.g. 4mg/day")
    g.add_argument("--step", action="append", help="flex step TIME=RATE, e.g. 08:00=5mg/day (repeat)")
    g.add_argument("--periodic", action="append", help="periodic bolus TIME=DOSE/DURATION, e.g. 12:00=0.5mg/10min")
    g.add_argument("--demand", action=Once, help="patient demand bolus DOSE/DURATION,lockout=DURATION,max=N")
    g.add_argument("--file", action=Once, help="prescription as JSON (docs/pumpctl.md)")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    p = Parser(prog="pumpctl", description="Virtual clinician programmer for the intrathecal pump.",
               epilog="exit codes: 0 done, 1 input refused by pumpctl, 2 refused by the pump, 3 link failure, "
                      "4 authentication, 5 cancelled at the review, 6 scenario check failed, 70 internal error, "
                      "74 output not written, 130 interrupted, 141 output closed")
    p.add_argument("--version", action="version", version=version_text())
    p.add_argument("--debug", action="store_true", help="on an internal error, show the Python traceback "
                                                         "(also $%s=1; may go anywhere on the line)" % DEBUG_ENV)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name, func, help, parents: "tuple[Parser, ...]" = (common,)):
        s = sub.add_parser(name, help=help, description=help, parents=list(parents))
        s.set_defaults(func=func)
        return s

    e = add("emulate", device.cmd_emulate, "start the emulated pump and show its ports", parents=())
    e.add_argument("--state", help="folder for the flash image, bench socket and port record; " + STATE_HELP)
    e.add_argument("--virtual", action="store_true", help="virtual time, advanced through the bench port")
    e.add_argument("--prescription", type=_json_arg, help="therapy (JSON, either form of `--file` in "
                                                          "docs/pumpctl.md) when the flash holds none")
    e.add_argument("--blank", action="store_true", help="a new pump stays empty and unprogrammed (for `implant`)")
    e.add_argument("--code", choices=("native", "source"), help="what the emulator runs: the firmware compiled to "
                   "native code (default, faster) or its plain sources (tracebacks with line numbers); "
                   "docs/emulator-speed.md")
    e.add_argument("--no-status", dest="status", action="store_false", help="no live status line")
    e.add_argument("--keystore", help="key store for the new pump's keys")
    e.add_argument("--timeout", type=float, default=2.0, help=argparse.SUPPRESS)

    reviewed = (common, _reviewed())
    add("identify", device.cmd_identify, "who is there (no login)")
    add("provision", device.cmd_provision, "give a new pump its keys and store them")
    add("rotate-keys", device.cmd_rotate_keys, "new link keys for both roles (clinician; no key is sent)", reviewed)
    s = add("devices", device.cmd_devices, "the pumps pumpctl can reach: Picos on USB and running emulators", parents=())
    s.add_argument("--state", help=STATE_HELP)
    s.add_argument("--keystore", help="key store (to say whether it holds each pump's keys)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--timeout", type=float, default=1.0, help=argparse.SUPPRESS)
    s = add("advance", device.cmd_advance, "advance a virtual-time emulator's clock (its bench port)", parents=())
    s.add_argument("duration", help="how long, e.g. 90min, 12h, 28day")
    s.add_argument("--state", help=STATE_HELP)
    s.add_argument("--bench", help="the emulator's bench socket (default: bench.sock in --state)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add("status", reading.cmd_status, "state, reservoir, alarms, battery (patient or clinician)")
    add("interrogate", reading.cmd_interrogate, "full report: device, clock, therapy, reservoir, alarms, totals")
    s = add("program", therapy.cmd_program, "program a therapy (review, then confirm)", reviewed)
    _override_option(s)
    _rx_options(s)
    s = add("bolus", therapy.cmd_bolus, "clinician bolus (replaces basal while it runs; review from the pump's dry run)",
            reviewed)
    s.add_argument("--dose", action=Once, required=True, help="e.g. 1mg")
    s.add_argument("--over", action=Once, required=True, help="duration, e.g. 30min")
    _override_option(s)
    s = add("prime", therapy.cmd_prime, "priming bolus to fill a new or revised catheter (after `pumpctl catheter`)",
            reviewed)
    s.add_argument("--volume", action=Once, required=True, help="e.g. 0.2mL")
    s.add_argument("--over", action=Once, required=True, help="duration, e.g. 15min")
    s = add("catheter", therapy.cmd_catheter, "record a catheter revision (the new catheter is then primed with "
                                      "`pumpctl prime`)", reviewed)
    s.add_argument("--segments", action=Once, required=True, help="segments LENGTH:VOLUME pump end first, e.g. "
                                                     "500mm:120uL,300mm:80uL")
    add("demand", therapy.cmd_demand, "patient demand bolus (patient role)")
    add("suspend", therapy.cmd_suspend, "stop delivery until resumed", reviewed)
    add("maintenance", therapy.cmd_maintenance, "stop the pump and return the board to its REPL (Pico)", reviewed)
    add("resume", therapy.cmd_resume, "resume the programmed therapy", reviewed)
    s = add("refill", therapy.cmd_refill, "guided refill: expected vs withdrawn, then the new fill (and prescription)",
            reviewed)
    s.add_argument("--withdrawn", action=Once, required=True, help="volume drawn out of the reservoir, e.g. 9.5mL")
    s.add_argument("--added", action=Once, required=True, help="volume put in, e.g. 20mL")
    s.add_argument("--accept-discrepancy", action="store_true", help="acknowledge a discrepancy warning")
    _override_option(s)
    _rx_options(s)
    s = add("visit", visit.cmd_visit, "refill visit: the guided refill (and new prescription), then the report of the "
                                "interval since the last visit (text, and HTML in --report-dir)", reviewed)
    s.add_argument("--withdrawn", action=Once, required=True, help="volume drawn out of the reservoir, e.g. 9.5mL")
    s.add_argument("--added", action=Once, required=True, help="volume put in, e.g. 20mL")
    s.add_argument("--accept-discrepancy", action="store_true", help="acknowledge a discrepancy warning")
    s.add_argument("--report-dir", default="reports", help="folder for the HTML reports and visits.json (default: "
                                                           "reports, as for `scenario`; keep one per patient or clinic)")
    _override_option(s)
    _rx_options(s)
    s = sub.add_parser("scenario", help="run a scripted patient course on a fresh virtual-time emulator",
                       description="run a scripted patient course (docs/scenarios.md) on a fresh virtual-time "
                                   "emulator")
    s.set_defaults(func=cmd_scenario)
    s.add_argument("file", help="the scenario (JSON)")
    s.add_argument("--report-dir", default="reports", help="folder for the visit reports (default: reports)")
    s.add_argument("--state", help="emulator state folder, new or empty (default: a temporary folder)")
    s.add_argument("--timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    s = add("alarms", reading.cmd_alarms, "list alarms (priority, raised, tone, what to do); --ack to acknowledge",
            reviewed)
    s.add_argument("--ack", help="alarm id or name (e.g. motor-stall, low-reservoir), or 'all'")
    s = add("clock", settings.cmd_clock, "show or set the pump clock", reviewed)
    s.add_argument("--set", action=Once, help="'now' (this computer's local time) or the pump's local date and time "
                                                "YYYY-MM-DDTHH:MM[:SS] (no time zone)")
    s = add("low-threshold", settings.cmd_low, "set the low-reservoir alarm volume", reviewed)
    s.add_argument("volume", help="e.g. 3mL")
    s = add("alarm-date", settings.cmd_alarm_date, "set the alarm (next refill) date", reviewed)
    s.add_argument("date", help="YYYY-MM-DD or 'off'")
    s = add("log", reading.cmd_log, "download the event log (table, --json or --csv)")
    s.add_argument("--from", dest="first", type=int, default=1, help="first sequence number")
    s.add_argument("--to", dest="last", type=int, help="last sequence number")
    s.add_argument("--csv", help="write CSV to FILE ('-' for standard output)")
    s = add("diary", diary.cmd_diary, "add a pain diary entry (patient role)")
    s.add_argument("--pain", type=int, required=True, help="pain score 0 (none) to 10 (worst)")
    s.add_argument("--activity", required=True, help=", ".join(lc.ACTIVITIES))
    s.add_argument("--note", default="", help="short note (up to 32 bytes)")
    s = sub.add_parser("diary-list", help="pain diary entries from the event log (clinician role)",
                       parents=[common])
    s.set_defaults(func=diary.cmd_diary_list)
    s.add_argument("--from", dest="first", type=int, default=1, help="first log sequence number")
    s.add_argument("--csv", help="write CSV to FILE ('-' for standard output)")
    trial.add_parser(sub)
    accuracy.add_parser(sub)  # the IEC 60601-2-24 accuracy test (docs/accuracy.md)
    campaign.add_parser(sub)  # virtual patients on Dask (docs/campaign.md)
    s = add("implant", implant.cmd_implant, "implant test: identity, catheter, first fill, priming, motor and alarm "
                                    "tests, start of therapy (stops at the first failed step)", reviewed)
    s.add_argument("--serial", help="pump serial (default: the pump's own)")
    s.add_argument("--model", help="pump model (default: the pump's own)")
    s.add_argument("--catheter", help="segments LENGTH:VOLUME pump end first, e.g. 500mm:120uL,300mm:80uL")
    s.add_argument("--fill", help="first fill volume, e.g. 20mL")
    s.add_argument("--resume", action="store_true", help="go on with an implant test that was interrupted, from "
                                                         "the step it reached (the pump's event log says which)")
    s.add_argument("--reimplant", action="store_true", help="run the implant test on a pump that is already "
                                                            "implanted (the review shows what changes)")
    s.add_argument("--prime-duration", default="30min", help="priming bolus duration (default 30min)")
    s.add_argument("--bench", help="bench socket of a virtual-time emulator: advance its time while polling "
                                   "(found by itself for the emulator of --port auto)")
    _rx_options(s)
    s = add("web", web.cmd_web, "the programmer and patient handset in a browser: a local server on 127.0.0.1 with "
                                "a fresh token in the address it prints (docs/web.md)", parents=(_common(False),))
    s.add_argument("--http-port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)")
    s.add_argument("--virtual", action="store_true", help="with --port emulator: virtual time")
    s.add_argument("--report-dir", default="reports", help="folder of the HTML reports shown (default: reports)")
    from pumpctl.deploy import add_deploy_parser  # installs the firmware on a Pico (boards/pico)

    add_deploy_parser(sub)
    return p



def _refusal(e, args):
    """A refusal by the pump: (lines for stderr, the JSON error object)."""
    drug = (getattr(args, "drug", None) or "").strip().lower() or e.context.get("drug")
    try:
        conc = u.conc_ng_ml(args.conc) if getattr(args, "conc", None) else e.context.get("conc")
    except u.UnitError:
        conc = e.context.get("conc")
    given, sent = e.context.get("given_ng"), bool(e.context.get("override_sent"))
    other, request = e.context.get("other"), e.context.get("request")  # after a drug change; what was sent
    given, other = report.ceiling_for(drug, given, e.context.get("given_drug"), other)  # a refill to another drug
    lines = report.refusal_lines(e.name, e.limit, e.reason, drug, conc, given, sent, other, request)
    if not e.trusted:
        lines.append("  (unauthenticated reply)")
    lines.append("nothing was changed on the pump")
    err = {"code": e.name, "limit": e.limit, "message": report.clinical_reason(e.reason, drug, other, e.limit),
           "exit": EXIT_REFUSED,
           "pump_code": e.code, "trusted": e.trusted, "changed": False}
    for k, v in report.refusal_parts(e.limit, e.reason, drug, conc, given, sent, e.name, other, request):
        err["what_to_do" if k == "what to do" else "hint"] = v
    for k in ("wait_s", "retry_s"):
        if k in e.reply:
            err[k] = e.reply[k]
    return lines, err


def _input_errors():
    from pumpctl import scenario, trial, visit
    return (u.UnitError, paths.InputFileError, trial.TrialError, visit.VisitError, scenario.ScenarioError)


def _stdout_closed():
    """True when standard output is a pipe nobody reads any more (`| head`)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, ValueError, OSError):
        return True


def version_text():
    try:
        from importlib.metadata import version
        v = version("pumpctl")
    except Exception:  # not installed (run from the source tree)
        v = "unknown"
    return "pumpctl %s (link protocol %d, firmware in %s)" % (v, wire.PROTOCOL_VERSION, paths.ROOT / "firmware")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get(DEBUG_ENV))
    try:
        rc = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, not at exit: a reader gone by then is a BrokenPipeError handled below
        return rc
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        return fail(argv, EXIT_INTERRUPTED, "INTERRUPTED", "interrupted (a command already sent may have been "
                     "carried out: check with `pumpctl status`)", newline=True)
    except BrokenPipeError:
        if not _stdout_closed():
            return _internal_error(debug, argv)
        quiet_stdout()
        return EXIT_PIPE
    except OSError as e:
        if e.errno not in _OUTPUT_ERRNOS or e.filename:
            return _internal_error(debug, argv)
        return _output_error(e, debug)
    except Exception:
        return _internal_error(debug, argv)


# A write that failed on its way out: the output's disk is full or failing
# (`pumpctl log --csv - > /full/disk`), not a fault of pumpctl's.
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _output_error(e, debug):
    if debug:
        traceback.print_exc()
    quiet_stdout()  # what is left to print would fail the same way
    console.note("pumpctl: could not write the output (%s): free space or choose another place for it; a command "
                 "sent to the pump may have been carried out (check with `pumpctl status`)" % (e.strerror or e))
    return EXIT_OUTPUT


def _internal_error(debug, argv=()):
    etype, e, _ = sys.exc_info()
    if debug:
        traceback.print_exc()
    what = "%s: %s" % (etype.__name__ if etype else "error", e) if str(e) else (etype.__name__ if etype else "error")
    return fail(argv, EXIT_INTERNAL, "INTERNAL", "internal error (%s); nothing more was sent to the pump. Rerun "
                 "with --debug (or %s=1) for the details and report them." % (what, DEBUG_ENV))


def _main(argv) -> int:
    if argv[:1] == ["diary"] and argv[1:2] in (["add"], ["list"]):
        # `diary add ...` is `diary ...` (patient); `diary list` is the clinician's listing.
        argv = (["diary"] if argv[1] == "add" else ["diary-list"]) + argv[2:]
    argv = [a for a in argv if a != "--debug"]
    console.JSON_ARGV[:] = argv
    args = None
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except DryRun as e:
        assert args is not None
        emit(args, {"dry_run": True, "command": e.command, "would_send": u.labelled_payload(e.payload),
                    "review": e.review},
             "dry run: nothing was sent to the pump; confirming would send %s %s" % (
                 e.command, json.dumps(e.payload, sort_keys=True, default=jsonable)))
        return EXIT_OK
    except UsageError as e:
        return fail(args or argv, EXIT_INPUT, "USAGE", str(e))
    except u.UnitError as e:
        return fail(args or argv, EXIT_INPUT, "INPUT", "%s (nothing sent)" % e)
    except _input_errors() as e:  # trial, visit, scenario files and values
        return fail(args or argv, EXIT_INPUT, "INPUT", str(e))
    except (KeyStoreError, AuthError) as e:
        return fail(args or argv, EXIT_AUTH, "AUTH", str(e))
    except PumpError as e:
        if e.code in _AUTH_CODES:
            msg = "%s (log in again)" % e if e.code == wire.NOT_AUTHENTICATED else str(e)
            return fail(args or argv, EXIT_AUTH, e.name, msg, extra={"pump_code": e.code})
        lines, err = _refusal(e, args)
        return fail(args or argv, EXIT_REFUSED, err.pop("code"), err.pop("message"), lines=lines, extra=err)
    except (LinkError, EmulatorError) as e:
        # null: a request was sent and may have been carried out
        changed = None if getattr(e, "request_sent", False) else False
        return fail(args or argv, EXIT_LINK, "LINK", str(e), extra={"changed": changed})
    except Cancelled as e:
        return fail(args or argv, EXIT_CANCELLED, "CANCELLED", str(e))
    except Interrupted as e:
        return fail(args or argv, EXIT_INTERRUPTED, "INTERRUPTED", str(e), extra={"changed": e.changed})
    except OSError as e:
        if not e.filename:
            raise
        # a file named on the command line
        return fail(args or argv, EXIT_INPUT, "INPUT", "%s: %s" % (e.filename, e.strerror or e))
