"""The implant test: identity, catheter, first fill, priming, motor and
alarm tests, start of therapy. Resumable (the pump's event log says which
step was reached) and refused on an implanted pump unless --reimplant."""
import sys
import time
from typing import Any

from pumpctl import report
from pumpctl import units as u
from pumpctl.commands.therapy import know_therapy, rx_from_args
from pumpctl.console import EXIT_OK, EXIT_REFUSED, DryRun, Interrupted, UsageError, confirm, emit, fail, table
from pumpctl.fw import events, limits, prescription
from pumpctl.fw import implant as fw_implant
from pumpctl.fw import link_commands as lc
from pumpctl.keystore import KeyStore
from pumpctl.link import LinkError, PumpError, PumpGone
from pumpctl.session import connected, read_log, session_role, state_dir

IMPLANT_STEP_NAMES = {"identity": "identity", "catheter": "catheter", "fill": "first fill", "prime": "priming",
                      "motor_test": "motor test", "motor_result": "motor test", "alarm_test": "alarm test",
                      "alarm_result": "alarm test", "start": "start therapy", "prime_wait": "priming"}
_POLL_CHUNK_S = 60  # virtual seconds advanced between polls (well inside the 5-min session idle timeout)


class ImplantFailed(Exception):
    def __init__(self, step, reason, limit=None):
        super().__init__("%s: %s" % (step, reason))
        self.step, self.reason, self.limit = step, reason, limit


class ImplantStalled(Exception):
    """Pump time does not move while pumpctl waits in real time: a virtual-time emulator without --bench."""


class TimeSource:
    """Lets a polled implant step progress: real time (sleep), or the bench
    of a virtual-time emulator (advance). In real time it watches the pump's
    clock: one that stands still is a virtual-time emulator, and waiting would
    never end (ImplantStalled)."""

    STILL_S = 5.0  # real seconds without the pump's clock moving

    def __init__(self, bench_path=None):
        self.bench_path = bench_path
        self._seen = None  # (pump time, real time) when the pump's clock last moved

    def wait(self, seconds):
        if self.bench_path:
            from pumpctl.bench import BenchClient, BenchError
            try:
                with BenchClient(self.bench_path) as b:
                    b.call("advance", ms=int(seconds * 1000))
            except (OSError, BenchError, ValueError) as e:
                # The emulator reset or stopped under us (a power cut): the
                # link is lost, not pumpctl broken.
                raise PumpGone("the emulator's bench port %s stopped answering (%s)" % (
                    self.bench_path, getattr(e, "strerror", None) or e)) from None
        else:
            time.sleep(min(seconds, 1.0))

    def observe(self, st):
        """The pump's STATUS at a poll."""
        if self.bench_path:
            return
        now, pump_t = time.monotonic(), st["day"] * 86400 + st["tod_s"]
        if self._seen is None or pump_t != self._seen[0]:
            self._seen = (pump_t, now)
        elif now - self._seen[1] > self.STILL_S:
            raise ImplantStalled()


class Countdown:
    """The time left of a running priming bolus or motor test, from its
    strokes left: a line each minute of pump time left (rewritten in place at
    a terminal)."""

    def __init__(self, name, say, strokes, duration_s):
        self.name, self.say, self.strokes, self.duration_s = name, say, max(strokes, 1), duration_s
        self.tty = sys.stdout.isatty() and getattr(say, "live", True)
        self.last = None

    def update(self, strokes_left):
        left_s = -(-strokes_left * self.duration_s // self.strokes)
        minute = -(-left_s // 60)
        if minute == self.last:
            return
        self.last = minute
        line = "%-13s %s left (%d of %d strokes to go)" % (self.name, u.fmt_duration(minute * 60) if left_s >= 60
                                                         else "%d s" % left_s, strokes_left, self.strokes)
        if self.tty:
            sys.stdout.write("\r" + line + " " * 8)
            sys.stdout.flush()
        else:
            self.say(line)

    def done(self):
        if self.tty and self.last is not None:
            sys.stdout.write("\r" + " " * 72 + "\r")
            sys.stdout.flush()


def run_implant(c, steps, clock, say, bolus_wait_s=None, current=None):
    """Runs the implant steps [(step, args)] on a logged-in clinician client,
    in order; say(line) reports each. Raises ImplantFailed at the first step
    that fails (the firmware leaves the pump stopped), PumpError-wrapped.
    `current` (a dict) holds the step under way, for an interruption, and
    the results of the steps done ("results"). Two
    steps only wait, for an implant resumed while the pump runs one:
    `prime_wait` (a priming bolus) and `motor_result` (the motor test)."""
    current = {} if current is None else current
    results = current.setdefault("results", [])
    for step, extra in steps:
        name = IMPLANT_STEP_NAMES[step]
        current["step"] = name
        try:
            if step == "prime_wait":
                _wait_bolus(c, clock, bolus_wait_s, Countdown(name, say, extra["strokes"], extra["duration_s"]))
                try:
                    _primed(c, name, may_continue=True)
                except PrimingCutShort as cut:
                    _prime_rest(c, name, say, clock, bolus_wait_s, extra.get("prime_s") or extra["duration_s"],
                                cut.strokes)
                say("%-13s done" % name)
                results.append({"step": step, "reply": {}})
                continue
            r = {"done": False} if step == "motor_result" else c.request(lc.IMPLANT, dict({"step": step}, **extra))
            if step == "prime":
                say("%-13s %d strokes, %s over %s" % (name, r["strokes"], u.fmt_volume(r["volume_nl"], 4),
                                                      u.fmt_duration(extra["duration_s"])))
                _wait_bolus(c, clock, bolus_wait_s, Countdown(name, say, r["strokes"], extra["duration_s"]))
                try:
                    _primed(c, name, may_continue=True)
                except PrimingCutShort as cut:
                    _prime_rest(c, name, say, clock, bolus_wait_s, extra["duration_s"], cut.strokes)
                say("%-13s done" % name)
            elif step in ("motor_test", "motor_result", "alarm_test"):
                poll = "alarm_result" if step == "alarm_test" else "motor_result"
                while not r["done"]:
                    clock.wait(_POLL_CHUNK_S if poll == "motor_result" else 5)
                    clock.observe(c.request(lc.STATUS))
                    r = c.request(lc.IMPLANT, {"step": poll})
                if not r["passed"]:
                    raise ImplantFailed(name, r["reason"])
                say("%-13s passed: %s" % (name, r["reason"]))
            elif step == "identity":
                say("%-13s serial %s, model %s" % (name, r["serial"], r["model"]))
            elif step == "catheter":
                say("%-13s %d segment(s), %s" % (name, len(extra["segments"]), u.fmt_volume(r["catheter_nl"], 4)))
            elif step == "fill":
                say("%-13s %s in the reservoir" % (name, u.fmt_volume(r["remaining_nl"])))
            elif step == "start":
                say("%-13s delivering; 24-hour maximum %s" % (name, report.total_text(
                    r["daily_ng"], r["max_daily_nl"], u.drug_unit(extra["rx"]["drug"]))))
        except PumpError as e:
            raise ImplantFailed(name, "%s%s: %s" % (e.name, " (%s)" % e.limit if e.limit else "",
                                                    report.clinical_reason(e.reason, c.context.get("drug"))), e.limit)
        results.append({"step": step, "reply": r})
    current.pop("step", None)
    return results


class PrimingCutShort(Exception):
    """The priming bolus ended short, with no alarm, because a reset took
    strokes off its plan (the reserve, docs/persistence.md): the catheter
    needs the rest, and nothing is wrong with the pump."""

    def __init__(self, strokes):
        super().__init__(strokes)
        self.strokes = strokes


def _priming_end(c, scan=64):
    """The pump's last record of a priming bolus's end (BOLUS_DELIVERED or
    BOLUS_CANCELLED, kind priming) within the last `scan` records, or None."""
    info = c.request(lc.LOG_READ, {"first": 1, "max": 1})
    last = info["last_seq"]
    if last < info["first_seq"]:
        return None
    recs, _ = read_log(c, max(info["first_seq"], last - scan + 1), last)
    ends = [r for r in recs if r[3] in (events.BOLUS_DELIVERED, events.BOLUS_CANCELLED) and r[4] == _KIND_PRIMING]
    return ends[-1] if ends else None


def _primed(c, name, may_continue=False):
    # The priming bolus ended: by filling the catheter, stopped by an alarm
    # (a stall, an occlusion) with saline still in it, cut short by a reset
    # (its reserve took the last strokes off the plan) or cancelled.
    st = c.request(lc.STATUS)
    if st.get("catheter_primed") is not False:
        return
    alarms = [report.alarm_slug(a) for a in report.alarm_ids(st["alarms"])]
    if alarms:
        raise ImplantFailed(name, "the priming stopped before the catheter was primed (alarms: %s): resolve the "
                            "cause, clear the alarm (`pumpctl resume`), then go on with the same command and "
                            "--resume (it primes what is left)" % ", ".join(alarms), "not_primed")
    end = _priming_end(c)
    cut = end is not None and end[3] == events.BOLUS_DELIVERED and end[6] > 0
    if end is not None and cut and may_continue:
        raise PrimingCutShort(end[6])
    if end is not None and cut:
        why = ("a reset during it (a power loss) took up to %d strokes off its plan: the pump counts them as given "
               "so that it never over-delivers (docs/persistence.md), so the catheter still needs them" % end[6])
    elif end is not None and end[3] == events.BOLUS_CANCELLED and end[7] == events.CANCELLED_UNSAVED:
        why = "the pump stopped it because its flash could not save the priming's progress (a flash fault)"
    elif end is not None and end[3] == events.BOLUS_CANCELLED:
        why = "a command (a suspend or a refill) cancelled it"
    else:
        why = "it ended with no alarm raised"
    raise ImplantFailed(name, "the priming ended before the catheter was primed: %s. Nothing needs clearing: go on "
                        "with the same command and --resume (it primes what is left)" % why, "not_primed")


def _prime_rest(c, name, say, clock, bolus_wait_s, duration_s, strokes):
    """Once, after a priming a reset cut short: prime what the catheter still
    needs (the pump computes it) over the same duration."""
    say("%-13s ended up to %d strokes short: a reset during it took them off its plan (the pump counts them as "
        "given, never over-delivering); priming the rest" % (name, strokes))
    r = c.request(lc.IMPLANT, {"step": "prime", "duration_s": duration_s})
    say("%-13s %d strokes, %s over %s" % (name, r["strokes"], u.fmt_volume(r["volume_nl"], 4),
                                          u.fmt_duration(duration_s)))
    _wait_bolus(c, clock, bolus_wait_s, Countdown(name, say, r["strokes"], duration_s))
    _primed(c, name)
    return r


def _wait_bolus(c, clock, limit_s=None, countdown=None):
    waited = 0
    try:
        while True:
            st = c.request(lc.STATUS)
            if st.get("bolus") is None:
                return
            if countdown is not None:
                countdown.update(st["bolus"]["strokes_left"])
            clock.observe(st)
            if limit_s is not None and waited > limit_s:
                raise ImplantFailed("priming", "priming did not finish in %s" % u.fmt_duration(limit_s))
            clock.wait(_POLL_CHUNK_S)
            waited += _POLL_CHUNK_S
    finally:
        if countdown is not None:
            countdown.done()


def implant_steps(serial, model, segments, fill_nl, prime_s, rx):
    return [("identity", {"serial": serial, "model": model}), ("catheter", {"segments": segments}),
            ("fill", {"volume_nl": fill_nl}), ("prime", {"duration_s": prime_s}), ("motor_test", {}),
            ("alarm_test", {}), ("start", {"rx": rx})]


# firmware/implant.py STEP_* (IMPLANT_STEP records, a = step) -> the link's step names
_LOGGED_STEPS = {1: "identity", 2: "catheter", 3: "fill", 4: "prime", 5: "motor_test", 6: "alarm_test", 7: "start"}
_MOTOR_TEST = (fw_implant.MOTOR_TEST_STROKES, fw_implant.MOTOR_TEST_S)  # a priming-kind bolus
_KIND_PRIMING = 4


def implant_progress(c, scan=4096):
    """What the pump's event log says of the implant test last begun (since
    its latest `identity` step, within the last `scan` records):
    {"begun": bool, "passed": [step, ...], "failed": step or None,
     "motor_test_started": bool, "priming": (strokes, duration_s) or None}."""
    info = c.request(lc.LOG_READ, {"first": 1, "max": 1})
    end, recs = info["last_seq"], []
    while end >= info["first_seq"] and info["last_seq"] - end < scan:
        start = max(info["first_seq"], end - 255)
        chunk, _ = read_log(c, start, end)
        recs = chunk + recs
        if any(r[3] == events.IMPLANT_STEP and r[4] == 1 for r in chunk):
            break
        end = start - 1
    begin = max((i for i, r in enumerate(recs) if r[3] == events.IMPLANT_STEP and r[4] == 1), default=None)
    out: "dict[str, Any]" = {"begun": begin is not None, "passed": [], "failed": None, "motor_test_started": False,
                             "priming": None}
    if begin is None:
        return out
    primed, last_start = False, None
    for r in recs[begin:]:
        if r[3] == events.IMPLANT_STEP and r[4] in _LOGGED_STEPS:
            step = _LOGGED_STEPS[r[4]]
            if r[5]:
                out["passed"].append(step)
                out["failed"] = None if out["failed"] == step else out["failed"]
            else:
                out["failed"] = step
            if step == "prime":  # logged once its bolus has started
                primed, out["priming"] = True, last_start
        elif r[3] == events.BOLUS_STARTED and r[4] == _KIND_PRIMING:
            last_start = (r[5], r[6])
            if primed and last_start == _MOTOR_TEST:
                out["motor_test_started"] = True
    return out


def _implanted(st, th):
    """What shows that a pump is implanted (not factory-fresh), or []."""
    signs = []
    if th.get("rx"):
        rx = th["rx"]
        signs.append("therapy %s %s" % (rx["drug"], u.fmt_conc(rx["conc"], u.drug_unit(rx["drug"]))))
    if st.get("remaining_nl"):
        signs.append("reservoir %s" % u.fmt_volume(st["remaining_nl"]))
    if th.get("catheter_nl"):
        signs.append("catheter %s" % u.fmt_volume(th["catheter_nl"], 4))
    return signs


def rx_summary(rx, daily_ng=None):
    """A prescription on one line: 'morphine 10 mg/mL: 3 mg/day from 00:00, 5 mg/day from 08:00; ...'."""
    if not rx:
        return "none"
    unit = u.drug_unit(rx["drug"])
    parts = [", ".join("%s/day from %s" % (u.fmt_mass(d, unit), u.fmt_tod(t)) for t, d in rx["steps"])]
    if rx.get("periodic"):
        parts.append("%d periodic bolus(es)" % len(rx["periodic"]))
    if rx.get("demand"):
        d = rx["demand"]  # as the program and visit reviews: dose over duration (volume), lockout, maximum
        parts.append("demand %s, lockout %s, max %d/24 h" % (report._bolus(d[0], d[1], rx["conc"], unit),
                                                            u.fmt_duration(d[2]), d[3]))
    if daily_ng:
        parts.append("24-h maximum %s/day" % u.fmt_mass(daily_ng, unit))
    return "%s %s: %s" % (rx["drug"], u.fmt_conc(rx["conc"], unit), "; ".join(parts))


def _implant_review(ident, st, th, serial, model, segments, fill, prime_s, rx, check, todo):
    cur_rx = th.get("rx")
    total = sum(nl for _, nl in segments) if segments else th.get("catheter_nl") or 0
    tests = [t for t, k in (("motor (4 strokes)", "motor_test"), ("motor test under way", "motor_result"),
                            ("alarm tones", "alarm_test")) if k in todo]
    rows = [
        ["identity", "serial %s, model %s" % (ident["serial"], ident["model"]),
         "serial %s, model %s" % (serial, model) if "identity" in todo else "unchanged"],
        ["catheter", u.fmt_volume(th["catheter_nl"], 4) if th.get("catheter_nl") else "none",
         (", ".join("%d mm %s" % (mm, u.fmt_volume(nl, 4)) for mm, nl in segments)
          + " (total %s)" % u.fmt_volume(total, 4)) if segments and "catheter" in todo else "unchanged"],
        ["reservoir", u.fmt_volume(st.get("remaining_nl")) if st.get("remaining_nl") else "empty",
         "first fill %s" % u.fmt_volume(fill) if "fill" in todo else "unchanged (filled before)"],
        ["priming", "-", "the catheter volume over %s" % u.fmt_duration(prime_s) if "prime" in todo
         else "waits for the priming under way" if "prime_wait" in todo else "done"],
        ["tests", "-", ", ".join(tests) or "done"],
        ["therapy", rx_summary(cur_rx, th.get("daily_ng")), rx_summary(rx, check.get("daily_ng"))],
    ]
    for r in rows:
        same = r[2].startswith(("unchanged", "done", "waits")) or r[1] == "-" or r[1] == r[2]
        r.append("" if same else "<< changed")
    return rows


def _check_fill(fill_nl, st, ident):
    # Before any step: a first fill the pump would refuse would stop the
    # test half done (identity and catheter already recorded).
    low = st["residual_nl"] + ident["stroke_nl"]
    high = st.get("capacity_nl") or ident["reservoir_nl"]
    if not low <= fill_nl <= high:
        raise u.UnitError("--fill %s: the first fill is from %s (the residual volume and a stroke) to %s (the "
                          "reservoir)" % (u.fmt_volume(fill_nl), u.fmt_volume(low, 4), u.fmt_volume(high)))


def _check_priming(volume_nl, prime_s, ident):
    # The priming step's duration and rate, by the pump's own arithmetic,
    # before any step: refused there, the test would stop with the pump filled.
    if not volume_nl:
        return  # no catheter: the pump says so at the step
    try:
        prescription.priming_strokes(volume_nl, prime_s, ident["stroke_nl"])
    except limits.LimitError as e:
        raise u.UnitError("--prime-duration %s: %s" % (u.fmt_duration(prime_s), report.clinical_reason(e.message)))


def _check_drug_in_the_pump(now, rx, todo):
    # Without a fill step (--reimplant keeps the fill) the therapy must be
    # of the drug the reservoir holds: the pump refuses another at the last
    # step, after the catheter, the priming and the tests.
    if "fill" in todo or now is None or (now["drug"], now["conc"]) == (rx["drug"], rx["conc"]):
        return
    held = "%s %s" % (now["drug"], u.fmt_conc(now["conc"], u.drug_unit(now["drug"])))
    raise u.UnitError("--drug %s %s: the reservoir holds %s, which this implant test does not change (the pump "
                      "was filled before): prescribe %s, or change the drug with a refill first (`pumpctl refill "
                      "... --drug ... --conc ...`)" % (rx["drug"], u.fmt_conc(rx["conc"], u.drug_unit(rx["drug"])),
                                                       held, held))


def cmd_implant(args):
    u.pump_identity(args.serial, args.model)
    segments = u.catheter_segments(args.catheter) if args.catheter else None
    fill = u.volume_nl(args.fill, "first fill volume") if args.fill else None
    prime_s = u.duration_s(args.prime_duration, "priming duration")
    rx = rx_from_args(args)
    if args.resume and args.reimplant:
        raise UsageError("--resume continues the implant test under way, --reimplant starts it again: give one")
    store = KeyStore(args.keystore)
    bench = args.bench or _virtual_bench(args)
    with connected(args, session_role(args, "clinician")) as c:
        old = c.identity["serial"]
        serial = args.serial or old
        model = args.model or c.identity["model"]
        st = c.request(lc.STATUS)
        th = c.request(lc.THERAPY)
        progress = implant_progress(c)
        signs = _implanted(st, th)
        all_steps = implant_steps(serial, model, segments, fill, prime_s, rx)
        if args.resume:
            steps = _resume_steps(all_steps, progress, st)
            if not steps:
                emit(args, {"serial": old, "steps": [], "done_before": progress["passed"]},
                     "the implant test of pump %s is complete: nothing to resume" % old)
                return EXIT_OK
        else:
            steps = all_steps
            if signs and not args.reimplant:
                unfinished = progress["begun"] and "start" not in progress["passed"]
                raise ImplantRefused(old, signs, unfinished)
        if args.reimplant and st.get("remaining_nl"):
            steps = [s for s in steps if s[0] != "fill"]  # a filled pump is refilled, not filled again
        todo = [s for s, _ in steps]
        for s, extra in steps:
            if s == "catheter" and not segments:
                raise UsageError("the catheter step needs --catheter (segments LENGTH:VOLUME, e.g. 500mm:120uL)")
            if s == "fill" and fill is None:
                raise UsageError("the first fill needs --fill (e.g. --fill 20mL)")
            if s == "fill":
                _check_fill(fill, st, c.identity)
            if s == "prime":
                _check_priming(sum(v for _, v in segments) if segments else th.get("catheter_nl") or 0, prime_s,
                               c.identity)
        _check_drug_in_the_pump(th.get("rx"), rx, todo)
        know_therapy(c, rx)
        check = c.request(lc.PROGRAM, {"rx": rx, "check": True}) if th.get("rx") is None or \
            (th["rx"]["drug"], th["rx"]["conc"]) == (rx["drug"], rx["conc"]) else \
            {"daily_ng": None, "max_daily_nl": None}
        if not args.json:
            what = "resumed implant test" if args.resume else "implant test AGAIN (--reimplant)" if args.reimplant \
                else "implant test"
            done_before = _done_before(progress["passed"], todo)
            print("Review: %s of pump %s%s\n%s\n" % (
                what, old, " (done before: %s)" % ", ".join(IMPLANT_STEP_NAMES[p] for p in done_before)
                if args.resume and done_before else "",
                table(_implant_review(c.identity, st, th, serial, model, segments, fill or 0, prime_s, rx,
                                             check, todo), ["", "now", "after the implant test", ""])))
            print("steps: %s\n" % " -> ".join(IMPLANT_STEP_NAMES[s] for s in todo))
        if getattr(args, "dry_run", False):
            raise DryRun("implant", [dict({"step": st_}, **extra) for st_, extra in steps if st_ != "prime_wait"],
                         {"check": check, "steps": todo})
        confirm(args, "Run the implant test?")
        say = _Quiet() if args.json else (lambda line: print(line, flush=True))
        current: "dict[str, Any]" = {}
        try:
            results = run_implant(c, steps, TimeSource(bench), say, current=current)
        except ImplantFailed as e:
            return _implant_failed(args, e, c.request(lc.STATUS)["state"], bool(current.get("results")))
        except ImplantStalled:
            raise UsageError("implant test paused at step '%s': the pump's clock stands still, so it is a "
                             "virtual-time emulator: give its bench port, then resume: the same command with "
                             "--resume --bench PATH/bench.sock" % current.get("step", "?"))
        except KeyboardInterrupt:
            raise Interrupted("implant test interrupted at step '%s' (the pump goes on with a running priming or "
                              "test); to go on from there: the same command with --resume" % current.get("step", "?"))
        except LinkError as e:
            lost = LinkError("implant test stopped at step '%s': the link to the pump was lost (%s). A pump that "
                             "kept power goes on with a running priming or test; one that lost power resumes it "
                             "when it starts again. When the pump answers again (`pumpctl status`; an emulator: "
                             "start it again with `pumpctl emulate`), go on from there: the same command with "
                             "--resume" % (current.get("step", "?"), e))
            lost.request_sent = True
            raise lost from None
        finally:
            if serial != old and store.has(old) and not store.has(serial):
                _refile_keys(store, old, serial, model)
    emit(args, {"serial": serial, "steps": results},
         "implant test complete: pump %s delivering %s" % (serial, rx["drug"]))
    return EXIT_OK


def _implant_failed(args, e, state, changed):
    """A failed step: the text lines on standard output, or with --json the
    error object IMPLANT_FAILED (its line on stderr). Exit 2."""
    message = "implant test FAILED at step '%s': %s" % (e.step, e.reason)
    if not args.json:
        print("%s\npump %s; nothing further was done" % (message, state))
        return EXIT_REFUSED
    return fail(args, EXIT_REFUSED, "IMPLANT_FAILED", message, lines=[message],
                extra={"limit": e.limit, "changed": changed, "failed_step": e.step, "state": state})


class _Quiet:
    """say() under --json: nothing on standard output, no live countdown."""
    live = False

    def __call__(self, line):
        pass


class ImplantRefused(UsageError):
    def __init__(self, serial, signs, unfinished):
        super().__init__(
            "pump %s is already implanted (%s): nothing sent. %s" % (
                serial, ", ".join(signs),
                "An implant test was begun and not finished: go on with the same command and --resume."
                if unfinished else "A new catheter is `pumpctl catheter`, a new drug `pumpctl refill`; to run "
                                   "the implant test on it again, add --reimplant (the review shows what changes)."))


def _done_before(passed, todo):
    """The steps a resumed implant test has done: those the log passed, but
    not one still to run or under way (a priming is logged as passed when
    its bolus starts; `prime_wait` waits for it)."""
    under_way = set(todo) | ({"prime"} if "prime_wait" in todo else set()) | \
        ({"motor_test"} if "motor_result" in todo else set())
    return [p for p in passed if p not in under_way]


def _resume_steps(all_steps, progress, st):
    """The implant steps still to run, from the pump's log and state."""
    if not progress["begun"]:
        return all_steps
    passed = set(progress["passed"])
    if st.get("remaining_nl"):
        passed.add("fill")
    steps = [s for s in all_steps if s[0] not in passed]
    running = st.get("bolus") is not None
    if "prime" in passed and not running and st.get("catheter_primed") is False:
        passed.discard("prime")  # stopped part-way: primed again, what is left
        steps = [s for s in all_steps if s[0] not in passed]
    if "prime" in passed and "motor_test" not in passed:
        if progress["motor_test_started"]:
            steps = [("motor_result", {})] + [s for s in steps if s[0] != "motor_test"]
        elif running:
            strokes, dur = progress["priming"] or (st["bolus"]["strokes_left"], 0)
            prime_s = dict(all_steps).get("prime", {}).get("duration_s")
            steps = [("prime_wait", {"strokes": strokes, "duration_s": dur, "prime_s": prime_s})] + steps
    return steps


def _virtual_bench(args):
    """The bench port of the emulator --port auto finds, when it runs in virtual time."""
    if args.port not in ("auto",):
        return None
    from pumpctl.emulator import running
    rec = running(state_dir(args))
    return rec.get("bench") if rec and rec.get("virtual") else None


def _refile_keys(store, old, new, model):
    # The pump's keys follow its new identity (the pump re-files them too).
    store.put(new, store.get(old, "patient"), store.get(old, "clinician"), model)
