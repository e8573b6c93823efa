"""`pumpctl scenario`: a scripted patient course on a fresh virtual-time
emulator. The format is docs/scenarios.md. Every pump action goes through
pumpctl's own commands (cli.main) or the link, as a clinician or patient
would; time and faults go through the emulator's bench port."""
from __future__ import annotations

import shutil
from fractions import Fraction
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pumpctl import paths
from pumpctl.console import EXIT_INTERRUPTED
from pumpctl.session import provision_if_new
from pumpctl import units as u

if TYPE_CHECKING:
    from pumpctl.emulator import Emulator

S_PER_DAY = 86400
EXIT_CHECK = 6  # a `check` step failed
STEPS = ("implant", "days", "visit", "program", "fault", "resolve", "check")
DAYS_STEP_MAX = 3660  # ten years in one `days` step
RX_KEYS = ("drug", "conc", "dose", "step", "periodic", "demand")
DEMAND_WINDOW = (9 * 3600, 21 * 3600)  # demand presses spread over 09:00-21:00


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the step."""


class CheckFailed(Exception):
    pass


# -- the file ------------------------------------------------------------------------------
def _rx(d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, dict) or set(d) - set(RX_KEYS):
        raise ScenarioError("%s: a prescription is an object with %s" % (where, ", ".join(RX_KEYS)))
    try:
        u.prescription(d.get("drug"), d.get("conc"), d.get("dose"), d.get("step") or [], d.get("periodic") or [],
                       d.get("demand"))
    except (u.UnitError, TypeError, AttributeError) as e:
        raise ScenarioError("%s: %s" % (where, e)) from None
    return d


def _rx_argv(d: dict[str, Any]) -> list[str]:
    argv = ["--drug", d["drug"], "--conc", d["conc"]]
    if d.get("dose"):
        argv += ["--dose", d["dose"]]
    for s in d.get("step") or []:
        argv += ["--step", s]
    for p in d.get("periodic") or []:
        argv += ["--periodic", p]
    if d.get("demand"):
        argv += ["--demand", d["demand"]]
    return argv


def _need(step: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in step:
        raise ScenarioError("%s: '%s' is required" % (where, key))
    if not isinstance(step[key], kind) or isinstance(step[key], bool) and kind is not bool:
        raise ScenarioError("%s: '%s' has the wrong type (%r)" % (where, key, step[key]))
    return step[key]


def _pain(p: Any, where: str) -> None:
    vals = p if isinstance(p, list) else [p]
    if not (1 <= len(vals) <= 2) or not all(type(v) is int and 0 <= v <= 10 for v in vals):
        raise ScenarioError("%s: pain is 0-10, or [first day, last day] to change linearly" % where)


def load(path: str | Path) -> dict[str, Any]:
    """Reads and checks a scenario: every error before the emulator starts."""
    try:
        sc = paths.loads_json(paths.read_text(path, "scenario"))
    except paths.InputFileError as e:
        raise ScenarioError(str(e)) from None
    except paths.DuplicateKeyError as e:
        raise ScenarioError("%s: %s" % (path, e)) from None
    except ValueError as e:
        raise ScenarioError("%s: not valid JSON (%s)" % (path, e)) from None
    if not isinstance(sc, dict) or not isinstance(sc.get("steps"), list) or not sc["steps"]:
        raise ScenarioError("%s: an object with a non-empty 'steps' list" % path)
    if "start" in sc:
        try:
            u.parse_datetime(sc["start"])
        except u.UnitError as e:
            raise ScenarioError("start: %s" % e) from None
    for i, st in enumerate(sc["steps"], 1):
        where = "step %d" % i
        if not isinstance(st, dict) or st.get("step") not in STEPS:
            raise ScenarioError("%s: {\"step\": one of %s, ...}" % (where, ", ".join(STEPS)))
        kind = st["step"]
        where = "step %d (%s)" % (i, kind)
        if kind == "implant":
            for k in ("serial", "model", "prime_duration"):
                if k in st:
                    _need(st, k, where)
            try:
                u.catheter_segments(_need(st, "catheter", where))
                u.volume_nl(_need(st, "fill", where), "fill")
                u.pump_identity(st.get("serial"), st.get("model"))
                u.duration_s(st.get("prime_duration", "30min"), "prime_duration")
            except u.UnitError as e:
                raise ScenarioError("%s: %s" % (where, e)) from None
            _rx(_need(st, "prescription", where, dict), where)
        elif kind == "days":
            if ("days" in st) == ("hours" in st):
                raise ScenarioError("%s: give 'days' or 'hours'" % where)
            n = st.get("days", st.get("hours"))
            most = DAYS_STEP_MAX if "days" in st else DAYS_STEP_MAX * 24
            if type(n) is not int or not 1 <= n <= most:
                raise ScenarioError("%s: a whole number of days (1 to %d) or hours (1 to %d); a longer course is "
                                    "several steps" % (where, DAYS_STEP_MAX, DAYS_STEP_MAX * 24))
            if "hours" in st and (st.get("diary") or st.get("demand")):
                raise ScenarioError("%s: diary entries and demand presses go with 'days'" % where)
            for e in st.get("diary") or []:
                if not isinstance(e, dict) or "pain" not in e or "activity" not in e:
                    raise ScenarioError("%s: a diary entry is {\"pain\", \"activity\", [\"note\", \"time\", "
                                        "\"every\"]}" % where)
                _pain(e["pain"], where)
                from pumpctl.fw import link_commands as lc
                if e["activity"] not in lc.ACTIVITIES:
                    raise ScenarioError("%s: activity %r: one of %s" % (where, e["activity"], ", ".join(lc.ACTIVITIES)))
                u.time_of_day(e.get("time", "20:00"), "diary time")
                if not isinstance(e.get("note", ""), str):
                    raise ScenarioError("%s: a diary note is text" % where)
                try:
                    u.diary_note(e.get("note", ""))
                except u.UnitError as err:
                    raise ScenarioError("%s: %s" % (where, err)) from None
            if type(st.get("demand", 0)) is not int or st.get("demand", 0) < 0:
                raise ScenarioError("%s: 'demand' is the number of presses a day" % where)
        elif kind == "visit":
            w = _need(st, "withdrawn", where)
            if w not in ("expected", "true"):
                u.volume_nl(w, "%s withdrawn" % where)
            u.volume_nl(_need(st, "added", where), "%s added" % where)
            if "prescription" in st:
                _rx(st["prescription"], where)
        elif kind == "program":
            _rx(_need(st, "prescription", where, dict), where)
        elif kind == "fault":
            keys = set(st) - {"step"}
            if not keys or keys - BOARD_FAULTS - set(PHYSICAL_FAULTS):
                raise ScenarioError("%s: one or more of motor (\"stall\" or \"intermittent:N\"), battery_mv, "
                                    "pressure_mmhg, %s" % (where, ", ".join(PHYSICAL_FAULTS)))
            physical_faults(st, where)
        elif kind == "check":
            if not set(st) - {"step"} or set(st) - {"step", "state", "alarms", "no_alarms"}:
                raise ScenarioError("%s: state, alarms (names that must be active), no_alarms (true, or names "
                                    "that must not be)" % where)
            _check_names(st, where)
    return sc


STATES = ("delivering", "suspended", "stopped", "idle", "priming")
BOARD_FAULTS = {"motor", "battery_mv", "pressure_mmhg"}


# -- faults of the physical path: the emulator's fluid model (docs/fluid-model.md) ----------
def _ppm(v: Any, what: str, lo: int, hi: int, per: bool = False) -> int:
    # "-10%" (or "-1%/month" with per=True: a rate a day) or whole ppm; exact, never a float.
    if type(v) is int:
        n = v
    elif isinstance(v, str) and v.strip():
        text, days = v.strip(), 1
        if per:
            text, _, unit = text.partition("/")
            days = {"day": 1, "week": 7, "month": 30, "year": 365}.get(unit.strip())
            if days is None:
                raise ScenarioError("%s: %r: a percentage per day, week, month or year, e.g. \"-1%%/month\""
                                    % (what, v))
        try:
            if not text.endswith("%"):
                raise ValueError
            q = Fraction(text[:-1].strip()) * 10_000 / days
        except (ValueError, ZeroDivisionError):
            raise ScenarioError("%s: %r: a percentage (e.g. \"-10%%\") or whole ppm" % (what, v)) from None
        n = round(q)
    else:
        raise ScenarioError("%s: %r: a percentage (e.g. \"-10%%\") or whole ppm" % (what, v))
    if not lo <= n <= hi:
        raise ScenarioError("%s: %r is %d ppm%s, outside %d to %d" % (what, v, n, "/day" if per else "", lo, hi))
    return n


def _pct(v: Any, what: str) -> int:
    n = 100 if v is True else 0 if v is False else v
    if isinstance(n, str) and n.strip().endswith("%") and n.strip()[:-1].strip().isdigit():
        n = int(n.strip()[:-1])
    if type(n) is not int or not 0 <= n <= 100:
        raise ScenarioError("%s: %r: a whole percentage 0-100 (true: 100, false: 0)" % (what, v))
    return n


def _per_day_nl(v: Any, what: str) -> int:
    if type(v) is int and v >= 0:
        return v
    text = v.strip() if isinstance(v, str) else ""
    if not text.endswith("/day"):
        raise ScenarioError("%s: %r: a volume a day (\"0.1mL/day\") or whole nL a day" % (what, v))
    try:
        return u.volume_nl(text[:-4], what)
    except u.UnitError as e:
        raise ScenarioError(str(e)) from None


def _occluded(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise ScenarioError("%s: true or false" % what)
    return v


# key -> (bench command, its argument, the value parsed, the value `resolve` sets back)
PHYSICAL_FAULTS = {
    "occlusion": ("occlusion", "on", _occluded, False),
    "disconnect": ("disconnect", "leak_pct", _pct, 0),
    "pocket_fill": ("pocket_fill", "pct", _pct, 0),
    "septum_leak": ("septum_leak", "nl_per_day", _per_day_nl, 0),
    "stroke_bias": ("stroke_error", "bias_ppm", lambda v, w: _ppm(v, w, -500_000, 500_000), 0),
    "noise": ("stroke_error", "noise_ppm", lambda v, w: _ppm(v, w, 0, 200_000), None),
    "seed": ("stroke_error", "seed", lambda v, w: v if type(v) is int and v >= 0 else _bad_seed(w), None),
    "drift": ("stroke_error", "drift_ppm_per_day", lambda v, w: _ppm(v, w, -20_000, 20_000, per=True), 0),
    "wear": ("wear", "ppm_per_day", lambda v, w: _ppm(v, w, 0, 20_000, per=True), 0),
}


def _bad_seed(what: str) -> int:
    raise ScenarioError("%s: a whole number >= 0" % what)


def physical_faults(st: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    """The bench requests of a fault step's physical faults, in a fixed order."""
    calls = []
    for key, (cmd, arg, parse, _) in PHYSICAL_FAULTS.items():
        if key in st:
            value = parse(st[key], "%s %s" % (where, key))
            calls.append((cmd, {arg: value}))
    return calls


def _check_names(st: dict[str, Any], where: str) -> None:
    # A typo in a check fails here, before the emulator starts.
    from pumpctl import report
    if "state" in st and st["state"] not in STATES:
        raise ScenarioError("%s: state %r: one of %s" % (where, st["state"], ", ".join(STATES)))
    for key in ("alarms", "no_alarms"):
        names = st.get(key)
        if key not in st or key == "no_alarms" and names is True:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ScenarioError("%s: '%s' must be a list of alarm names%s" % (
                where, key, " or true" if key == "no_alarms" else ""))
        for n in names:
            if report.alarm_lookup(n) is None:
                raise ScenarioError("%s: unknown alarm %r (alarms: %s)" % (where, n, ", ".join(report.ALARM_SLUGS)))


def _slugs(names: list[str]) -> list[str]:
    # The bench names alarms as the pump does (`motor stall`); pumpctl shows one name (motor-stall).
    from pumpctl import report
    return [report.alarm_slug(report.alarm_lookup(n)) if report.alarm_lookup(n) is not None else n for n in names]


def same_alarm(a: str, b: str) -> bool:
    """True when two alarm names (`motor stall`, `motor-stall`, an id) name the same alarm."""
    from pumpctl import report
    x = report.alarm_lookup(a)
    return x is not None and x == report.alarm_lookup(b)


# -- running -------------------------------------------------------------------------------
class Runner:
    def __init__(self, sc: dict[str, Any], report_dir: Path, state: Path, run_command: Callable[[list[str]], int],
                 out=None) -> None:
        self.sc, self.report_dir, self.state = sc, report_dir, state
        self.run_command = run_command  # pumpctl's own command line (cli.main)
        self.out = out or sys.stdout
        self.emu: Emulator | None = None
        self.keystore = state / "keys.json"
        self.nominal: dict[str, int] = {}
        self.physical: set[str] = set()  # physical faults a fault step set, until a resolve
        self.visits: list[str] = []

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    @property
    def pump(self) -> Emulator:
        if self.emu is None or self.emu.port is None:
            raise RuntimeError("the scenario's emulator is not running")
        return self.emu

    @property
    def port(self) -> str:
        port = self.pump.port
        assert port is not None
        return port

    def pumpctl(self, *argv: str, ok=(0,)) -> int:
        rc = self.run_command(list(argv) + ["--port", self.port, "--keystore", str(self.keystore), "--timeout", "5"])
        if rc == EXIT_INTERRUPTED:
            raise KeyboardInterrupt  # Ctrl-C in a pumpctl step stops the scenario
        if rc not in ok:
            raise _StepFailed(rc)
        return rc

    def bench(self, cmd: str, **kw: Any) -> dict[str, Any]:
        with self.pump.bench() as b:
            return b.call(cmd, **kw)

    def advance(self, secs: int) -> None:
        if secs > 0:
            self.bench("advance", ms=secs * 1000)

    def client(self, role: str):
        from pumpctl.keystore import KeyStore
        from pumpctl.link import Client, open_port
        c = Client(open_port(self.port), timeout=5.0)
        ident = c.identify()
        c.login(role, KeyStore(self.keystore).get(ident["serial"], role))
        return c

    def start(self) -> None:
        from pumpctl.emulator import Emulator
        from pumpctl.keystore import KeyStore
        from pumpctl.link import Client, open_port
        self.emu = Emulator(self.state, virtual=True, blank=True).start()
        c = Client(open_port(self.port), timeout=5.0)
        try:
            self.say(provision_if_new(c, KeyStore(self.keystore)))
        finally:
            c.close()
        if "start" in self.sc:
            self.pumpctl("clock", "--set", self.sc["start"], "--yes")

    def run(self) -> int:
        try:
            try:
                self.start()
            except _StepFailed as e:
                self.say("scenario stopped while setting up the pump: exit %d" % e.rc)
                return e.rc
            for i, st in enumerate(self.sc["steps"], 1):
                s = self.bench("status")
                self.say("\n== step %d: %s (pump time %s)" % (i, st["step"], u.fmt_datetime(s["day"], s["tod_s"])))
                try:
                    getattr(self, "do_" + st["step"])(st)
                except _StepFailed as e:
                    self.say("scenario stopped at step %d (%s): exit %d" % (i, st["step"], e.rc))
                    return e.rc
                except CheckFailed as e:
                    self.say("CHECK FAILED at step %d: %s" % (i, e))
                    return EXIT_CHECK
            self.say("\nscenario complete: %d step(s); reports in %s" % (len(self.sc["steps"]), self.report_dir))
            for v in self.visits:
                self.say("  %s" % v)
            return 0
        finally:
            if self.emu is not None:
                self.emu.stop()

    # -- steps ----------------------------------------------------------------------------
    def do_implant(self, st: dict[str, Any]) -> None:
        argv = ["implant", "--catheter", st["catheter"], "--fill", st["fill"],
                "--prime-duration", st.get("prime_duration", "30min"), "--bench", str(self.pump.bench_path), "--yes"]
        for k in ("serial", "model"):
            if st.get(k):
                argv += ["--" + k, st[k]]
        self.pumpctl(*(argv + _rx_argv(st["prescription"])))

    def do_program(self, st: dict[str, Any]) -> None:
        self.pumpctl("program", "--yes", *_rx_argv(st["prescription"]))

    def do_visit(self, st: dict[str, Any]) -> None:
        from pumpctl.fw import link_commands as lc
        added = u.volume_nl(st["added"])
        if st["withdrawn"] == "true":
            withdrawn = self.bench("fluid")["reservoir_nl"]  # what the syringe really aspirates
            self.say("withdrawn: what is truly in the reservoir, %s" % u.fmt_volume(withdrawn, 4))
        elif st["withdrawn"] == "expected":
            c = self.client("clinician")
            try:
                withdrawn = c.request(lc.REFILL, {"withdrawn_nl": 0, "added_nl": added, "check": True})["expected_nl"]
            finally:
                c.close()
            self.say("withdrawn: the expected volume, %s" % u.fmt_volume(withdrawn, 4))
        else:
            withdrawn = u.volume_nl(st["withdrawn"])
        argv = ["visit", "--withdrawn", "%duL" % (withdrawn // 1000) if withdrawn % 1000 == 0
                else "%s" % _ml(withdrawn), "--added", st["added"], "--report-dir", str(self.report_dir), "--yes"]
        if st.get("accept_discrepancy"):
            argv.append("--accept-discrepancy")
        if st.get("prescription"):
            argv += _rx_argv(st["prescription"])
        self.pumpctl(*argv)
        from pumpctl import visitrun
        last = visitrun.load_visits(self.report_dir).get(self._serial(), {})
        if last.get("report"):  # the file this visit wrote (a second visit the same day: -2, ...)
            self.visits.append(str(Path(self.report_dir) / last["report"]))
        else:
            s = self.bench("status")
            self.visits.append(str(visitrun.report_path(self.report_dir, self._serial(), _date(s["day"]))))

    def _serial(self) -> str:
        c = self.client("clinician")
        try:
            return c.identity["serial"]
        finally:
            c.close()

    def do_days(self, st: dict[str, Any]) -> None:
        from pumpctl.fw import link_commands as lc
        from pumpctl.link import PumpError
        if "hours" in st:
            self.advance(st["hours"] * 3600)
            s = self.bench("status")
            self.say("%d hour(s) later: %s, alarms: %s" % (st["hours"], s["state"],
                                                           ", ".join(_slugs(s["alarms"])) or "none"))
            return
        n = st["days"]
        presses = st.get("demand", 0)
        diary = st.get("diary") or []
        given = refused = entries = 0
        for k in range(n):
            s = self.bench("status")
            now = s["tod_s"]
            acts = []  # (seconds from now, kind, data)
            for j in range(presses):
                lo, hi = DEMAND_WINDOW
                t = lo + (hi - lo) * (2 * j + 1) // (2 * presses)
                acts.append(((t - now) % S_PER_DAY, "demand", None))
            for e in diary:
                if k % int(e.get("every", 1)):
                    continue
                p = e["pain"]
                pain = p if isinstance(p, int) else round(p[0] + (p[1] - p[0]) * k / max(n - 1, 1))
                t = u.time_of_day(e.get("time", "20:00"))
                acts.append(((t - now) % S_PER_DAY, "diary", {"pain": pain, "activity": e["activity"],
                                                              "note": e.get("note", "")}))
            acts.sort(key=lambda a: (a[0], a[1]))
            at = 0
            for when, kind, data in acts:
                self.advance(when - at)
                at = when
                role = "patient"
                c = self.client(role)
                try:
                    if kind == "demand":
                        try:
                            c.request(lc.DEMAND)
                            given += 1
                        except PumpError:
                            refused += 1  # lockout, daily maximum, not running: the pump logs why
                    else:
                        c.request(lc.DIARY, data)
                        entries += 1
                finally:
                    c.close()
            self.advance(S_PER_DAY - at)
        s = self.bench("status")
        self.say("%d day(s): %d diary entr%s, %d demand press%s (%d given, %d refused); now %s, reservoir %s, "
                 "alarms: %s" % (n, entries, "y" if entries == 1 else "ies", given + refused,
                                 "" if given + refused == 1 else "es", given, refused, s["state"],
                                 u.fmt_volume(s["remaining_nl"]), ", ".join(_slugs(s["alarms"])) or "none"))

    def do_fault(self, st: dict[str, Any]) -> None:
        if "motor" in st:
            m = str(st["motor"])
            if m == "stall":
                self.bench("motor", stall=True)
            elif m.startswith("intermittent:"):
                self.bench("motor", intermittent=int(m.split(":", 1)[1]))
            else:
                raise ScenarioError("fault: motor %r: \"stall\" or \"intermittent:N\"" % m)
        if "battery_mv" in st:
            self.nominal.setdefault("battery_mv", NOMINAL_BATTERY_MV)
            self.bench("battery", mv=int(st["battery_mv"]))
        if "pressure_mmhg" in st:
            self.nominal.setdefault("pressure_mmhg", NOMINAL_PRESSURE_MMHG)
            self.bench("pressure", mmhg=int(st["pressure_mmhg"]))
        for cmd, args in physical_faults(st, "fault"):
            self.bench(cmd, **args)
        self.physical |= {k for k in PHYSICAL_FAULTS if k in st}
        self.say("bench fault: %s" % ", ".join("%s %s" % (k, st[k]) for k in st if k != "step"))

    def do_resolve(self, st: dict[str, Any]) -> None:
        self.bench("motor", stall=False, intermittent=0)
        for key, cmd, arg in (("battery_mv", "battery", "mv"), ("pressure_mmhg", "pressure", "mmhg")):
            if key in self.nominal:
                self.bench(cmd, **{arg: self.nominal[key]})
        self.nominal.clear()
        for key in sorted(self.physical):
            cmd, arg, _, back = PHYSICAL_FAULTS[key]
            if back is not None:
                self.bench(cmd, **{arg: back})
        self.physical.clear()
        self.say("bench: fault removed")
        self.pumpctl("alarms", "--ack", "all")
        self.pumpctl("resume", "--yes")

    def do_check(self, st: dict[str, Any]) -> None:
        s = self.bench("status")
        problems = []
        if "state" in st and s["state"] != st["state"]:
            problems.append("state is %s, expected %s" % (s["state"], st["state"]))
        active = s["alarms"]
        for a in st.get("alarms") or []:
            if not any(same_alarm(a, x) for x in active):
                problems.append("alarm %r not active (active: %s)" % (a, ", ".join(_slugs(active)) or "none"))
        na = st.get("no_alarms")
        if na is True and active:
            problems.append("alarms active: %s" % ", ".join(_slugs(active)))
        elif isinstance(na, list):
            problems += ["alarm %r is active" % a for a in na if any(same_alarm(a, x) for x in active)]
        if problems:
            raise CheckFailed("; ".join(problems))
        self.say("check passed: state %s, alarms: %s" % (s["state"], ", ".join(_slugs(s["alarms"])) or "none"))


NOMINAL_BATTERY_MV = 3200  # the emulated board: a fresh lithium cell
NOMINAL_PRESSURE_MMHG = 0  # above baseline


class _StepFailed(Exception):
    def __init__(self, rc: int) -> None:
        self.rc = rc


def _ml(nl: int) -> str:
    return "%s mL" % ("%d.%06d" % divmod(nl, 1_000_000)).rstrip("0").rstrip(".")


def _date(day: int):
    from pumpctl import visit
    return visit.as_date(day)


def run(path: str | Path, report_dir: str | Path, state: str | Path | None,
        run_command: Callable[[list[str]], int], out=None) -> int:
    """Runs the scenario file; `run_command` runs one pumpctl command line (cli.main)."""
    sc = load(path)
    report_dir = Path(report_dir)
    tmp = None
    if state is None:
        tmp = state = Path(tempfile.mkdtemp(prefix="pumpctl-scenario-"))
    state = Path(state)
    if state.exists() and any(state.iterdir()):
        raise ScenarioError("state folder %s is not empty: a scenario starts from a new pump (delete it, or give "
                            "another --state)" % state)
    report_dir.mkdir(parents=True, exist_ok=True)
    made = not state.exists()
    done = False
    try:
        rc = Runner(sc, report_dir, state, run_command, out).run()
        done = True
        return rc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not done:
            _discard(state, made)  # interrupted (Ctrl-C) or failed: nothing half-made blocks a rerun


def _discard(state: Path, made: bool) -> None:
    # The folder was new or empty before this run: take back what the run put in it.
    if made:
        shutil.rmtree(state, ignore_errors=True)
    elif state.is_dir():
        for child in state.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
