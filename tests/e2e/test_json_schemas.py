"""`pumpctl ... --json` against its JSON schemas (issue 13): every command
that offers --json prints one labelled object, errors included, and each
output is validated with `jsonschema` against its schema in
host_tools/pumpctl/schemas/ (draft 2020-12; docs/pumpctl.md, "JSON output").

All commands run in this process (cli.main) against ONE fresh provisioned
virtual-time emulator (tests/e2e/linkkit.Pump, the pump of conftest's `pump`
fixture, here for the whole module). Each case sets up what it needs through
the link or the bench first (a running bolus, an alarm, an unprimed
catheter...), so any one of them can also run alone (-k).

The schemas describe the output pumpctl SHOULD give. Where today's output
does not follow it, the case is listed in NEEDS_OUTPUT_CHANGE below with the
exact reason: it fails, with that reason in its message, until the output is
changed; once it passes, its entry must be removed (the test says so), so the
list cannot go stale.
"""
import datetime as dt
import json
import re
import secrets
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from linkkit import Pump
from pumpctl import cli, paths
from pumpctl.fw import alarms, link_commands as lc
from pumpctl.keystore import KeyStore
from pumpctl.link import PumpError

# -- the outputs that do not follow their schema yet -------------------------------------------
# case id -> why its output must change (command, what it prints now, what it should print).
NEEDS_OUTPUT_CHANGE: "dict[str, str]" = {}

# -- the schemas ------------------------------------------------------------------------------
SCHEMA_DIR = resources.files("pumpctl") / "schemas"  # as installed: the package's own data
SUFFIX = ".schema.json"


def _load_schemas():
    out = {}
    for f in SCHEMA_DIR.iterdir():
        if f.name.endswith(SUFFIX):
            out[f.name[:-len(SUFFIX)]] = json.loads(f.read_text(encoding="utf-8"))
    return out


SCHEMAS = _load_schemas()
REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())


def schema_problems(doc, name):
    """Every way `doc` breaks schema `name`, one line each (empty: valid)."""
    v = Draft202012Validator(SCHEMAS[name], registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER)
    lines = []
    for e in sorted(v.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        leaves = [c for c in e.context if not c.context] if e.context else []
        detail = "; ".join(sorted({"%s: %s" % ("/".join(map(str, c.absolute_path)), c.message[:160])
                                   for c in leaves}))[:600]
        lines.append("at /%s: %s%s" % ("/".join(map(str, e.absolute_path)), e.message[:300],
                                       " [%s]" % detail if detail else ""))
    return lines


def schema_of(command):
    """The schema of a command line: every `trial` action shares trial.schema.json."""
    return "trial" if command.split()[0] == "trial" else command


# -- the pump ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_pump(tmp_path_factory):
    """One fresh provisioned virtual-time emulator for every case of this file."""
    p = Pump(tmp_path_factory.mktemp("json-schemas"))
    # From 06:00 of its day, not this computer's time of day: the cases run
    # one after another, and where the flex therapy's noon periodic bolus
    # falls among them is then the same on every run.
    p.call(lc.SET_CLOCK, {"day": p.call(lc.STATUS)["day"], "tod_s": 6 * 3600})
    yield p
    p.stop()


def run(pump, capsys, argv):
    """pumpctl ARGV --json in this process: (exit code, stdout, stderr). The
    pump's port and key store are added unless the case names its own."""
    extra = ["--json"]
    if "--port" not in argv and argv[0] not in ("devices", "advance", "trial", "accuracy"):
        extra += ["--port", pump.port]
    if "--keystore" not in argv and argv[0] not in ("advance", "trial", "accuracy"):
        extra += ["--keystore", str(pump.keystore)]
    capsys.readouterr()
    rc = cli.main(list(argv) + extra)
    out, err = capsys.readouterr()
    return rc, out, err


# Set-ups, through the link and the bench (not through pumpctl), so a case stands alone.
def status(p, role="clinician"):
    return p.call(lc.STATUS, role=role)


def advance(p, minutes):
    p.bench("advance", ms=int(minutes * 60_000))


def no_bolus(p):
    for _ in range(30):
        if status(p)["bolus"] is None:
            return
        advance(p, 5)
    raise AssertionError("a bolus still runs after 150 min")


def delivering(p):
    if status(p)["state"] == "suspended":
        p.call(lc.RESUME)


def motor_stalled(p):
    p.bench("motor", stall=True)  # the implant test's motor test fails


def motor_mended(p):
    # After the failed motor test: a working motor, the stall alarm acknowledged, therapy resumed.
    p.bench("motor", stall=False)
    if alarms.MOTOR_STALL in [a if isinstance(a, int) else a["id"] for a in status(p)["alarms"]]:
        p.call(lc.ACK_ALARM, {"alarm": alarms.MOTOR_STALL})
    if status(p)["state"] != "delivering":
        p.call(lc.RESUME)


def suspended(p):
    if status(p)["state"] != "suspended":
        p.call(lc.SUSPEND)


def low_reservoir_alarm(p):
    # A threshold at the full reservoir: the low-reservoir alarm is raised at the next tick.
    p.call(lc.SET_LOW, {"low_nl": status(p)["capacity_nl"]})
    advance(p, 1)
    assert 7 in status(p)["alarms"] or "low-reservoir" in status(p)["alarms"]


def low_threshold_back(p):
    p.call(lc.SET_LOW, {"low_nl": 2_000_000})


def clinician_bolus_running(p):
    no_bolus(p)
    p.call(lc.BOLUS, {"dose_ng": 100_000, "duration_s": 600})


def catheter_not_primed(p):
    no_bolus(p)
    p.call(lc.IMPLANT, {"step": "catheter", "segments": [[500, 120_000], [300, 80_000]]})


def with_demand(p):
    rx = p.therapy()["rx"]
    if not rx.get("demand"):
        p.call(lc.PROGRAM, {"rx": dict(rx, demand=[200_000, 300, 1800, 4])})


def demand_in_lockout(p):
    with_demand(p)
    no_bolus(p)
    try:
        p.call(lc.DEMAND, role="patient")
    except PumpError as e:
        assert e.limit == "demand_lockout", e  # already in its lockout: as wanted
    advance(p, 6)  # the bolus is over, the 30-min lockout is not


def later(p, **delta):
    """The pump's clock moved by `delta`, as YYYY-MM-DDTHH:MM:SS."""
    st = status(p)
    t = dt.datetime(1970, 1, 1) + dt.timedelta(days=st["day"], seconds=st["tod_s"]) + dt.timedelta(**delta)
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def wrong_keys(p):
    path = p.keystore.parent / "wrong-keys.json"
    KeyStore(path).put(p.serial, secrets.token_bytes(32), secrets.token_bytes(32), "wrong")
    return path


def trial_path(p, mode="continuous"):
    return p.keystore.parent / ("trial-%s.json" % mode)


def trial_made(p, mode="continuous"):
    """A fresh trial record with days 2 to 4 recorded (pumpctl itself, quietly)."""
    f = str(trial_path(p, mode))
    steps = [["new", "--patient", "P-01", "--drug", "morphine", "--mode", mode, "--start", "2025-03-01", "--days",
              "5", "--baseline", "8", "--force"] + (["--rate", "0.5mg/day"] if mode == "continuous" else [])]
    if mode == "continuous":
        steps += [["day", "--date", "2025-03-0%d" % d, "--pain", str(p_)] for d, p_ in ((2, 5), (3, 4), (4, 3))]
    for s in steps:
        assert cli.main(["trial", s[0], "--file", f] + s[1:]) == 0


# -- the cases -------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str  # the behaviour
    command: str  # the parser's command (`diary list` is `diary-list`)
    argv: "list[str] | Callable[[Pump], list[str]]"
    rc: int = 0
    schema: str = ""  # default: the command's
    before: "Callable[[Pump], Any] | None" = None
    check: "Callable[[Any, Pump], Any] | None" = None

    def __post_init__(self):
        self.schema = self.schema or schema_of(self.command)

    @property
    def dry_run(self):
        return "--dry-run" in self.argv if isinstance(self.argv, list) else "-dry-run-" in self.id


def _all(*fs):
    def go(p):
        for f in fs:
            f(p)
    return go


def refused(code, limit=None, **more):
    def check(doc, p):
        e = doc["error"]
        assert e["code"] == code and e["limit"] == limit, e
        for k, v in more.items():
            assert v(e[k]) if callable(v) else e[k] == v, (k, e)
        return True
    return check


PROGRAM_FLEX = ["program", "--drug", "morphine", "--conc", "10mg/mL", "--step", "00:00=10mg/day", "--step",
                "08:00=12mg/day", "--periodic", "12:00=0.5mg/10min", "--demand", "0.2mg/5min,lockout=30min,max=4"]
IMPLANT = ["implant", "--reimplant", "--catheter", "500mm:120uL,300mm:80uL", "--drug", "morphine", "--conc",
           "10mg/mL", "--dose", "10mg/day"]
CASES = [
    # reading
    Case("identify-names-the-pump-and-says-its-keys-are-stored", "identify", ["identify"],
         check=lambda d, p: d["serial"] == p.serial and d["keys_in_store"] is True),
    Case("rotate-keys-dry-run-shows-the-entropy-and-no-key", "rotate-keys", ["rotate-keys", "--dry-run"]),
    Case("provision-of-a-provisioned-pump-names-its-key-store", "provision", ["provision"],
         check=lambda d, p: d["serial"] == p.serial),
    Case("devices-lists-the-running-emulator", "devices",
         lambda p: ["devices", "--state", str(p.emu.state_dir)],
         check=lambda d, p: [x["serial"] for x in d["devices"]] == [p.serial]),
    Case("advance-moves-virtual-time-and-reports-the-pump", "advance",
         lambda p: ["advance", "10min", "--bench", str(p.emu.bench_path)],
         check=lambda d, p: d["advanced_s"] == 600),
    Case("status-shows-an-active-alarm-and-the-running-bolus", "status", ["status"],
         before=_all(low_reservoir_alarm, clinician_bolus_running),
         check=lambda d, p: d["status"]["alarms"] and d["status"]["bolus"] is not None),
    Case("status-for-the-patient-role-shows-the-same", "status", ["status", "--role", "patient"],
         before=_all(low_reservoir_alarm, clinician_bolus_running)),
    Case("interrogate-gives-identity-status-therapy-and-labelled-alarms", "interrogate", ["interrogate"],
         before=low_reservoir_alarm, check=lambda d, p: d["alarms"] and d["therapy"]["rx"]),
    Case("alarms-lists-the-active-alarms-labelled", "alarms", ["alarms"], before=low_reservoir_alarm,
         check=lambda d, p: "low-reservoir" in [a["name"] for a in d["alarms"]]),
    Case("log-gives-one-labelled-object-per-record", "log", ["log", "--from", "1", "--to", "40"],
         check=lambda d, p: len(d["records"]) == min(40, d["last_seq"])),
    Case("clock-shows-the-pump-clock", "clock", ["clock"]),
    # dry runs: the review and what would be sent, nothing sent
    Case("program-dry-run-shows-the-review-and-what-would-be-sent", "program", PROGRAM_FLEX + ["--dry-run"]),
    Case("bolus-dry-run-shows-the-pumps-check", "bolus", ["bolus", "--dose", "1mg", "--over", "30min", "--dry-run"],
         before=no_bolus),
    Case("catheter-dry-run-shows-the-segments-it-would-send", "catheter",
         ["catheter", "--segments", "500mm:120uL,300mm:80uL", "--dry-run"]),
    Case("prime-dry-run-shows-the-pumps-check", "prime", ["prime", "--volume", "0.2mL", "--over", "25min",
                                                          "--dry-run"], before=catheter_not_primed),
    Case("suspend-dry-run-shows-the-therapy-that-stops-and-any-warning", "suspend", ["suspend", "--dry-run"],
         before=delivering),
    Case("resume-dry-run-shows-the-therapy-that-resumes", "resume", ["resume", "--dry-run"], before=suspended),
    Case("maintenance-dry-run-says-delivery-stops", "maintenance", ["maintenance", "--dry-run"]),
    Case("refill-dry-run-shows-the-expected-volume-and-discrepancy", "refill",
         ["refill", "--withdrawn", "15mL", "--added", "18mL", "--dry-run"]),
    Case("refill-dry-run-with-a-new-concentration-shows-the-new-prescription", "refill",
         ["refill", "--withdrawn", "15mL", "--added", "18mL", "--drug", "morphine", "--conc", "20mg/mL", "--dose",
          "10mg/day", "--dry-run"], before=no_bolus),
    Case("visit-dry-run-is-the-refills-review", "visit",
         ["visit", "--withdrawn", "15mL", "--added", "18mL", "--report-dir", "reports", "--dry-run"]),
    Case("alarms-ack-dry-run-names-the-alarms-it-would-acknowledge", "alarms", ["alarms", "--ack", "all", "--dry-run"],
         before=low_reservoir_alarm, check=lambda d, p: "low-reservoir" in d["review"]["would_acknowledge"]),
    Case("clock-set-dry-run-shows-the-current-clock", "clock", lambda p: ["clock", "--set", later(p, hours=1),
                                                                          "--dry-run"]),
    Case("low-threshold-dry-run-shows-the-current-threshold", "low-threshold", ["low-threshold", "3mL", "--dry-run"]),
    Case("alarm-date-dry-run-shows-the-current-date", "alarm-date", ["alarm-date", "2140-01-01", "--dry-run"]),
    Case("implant-dry-run-lists-the-steps-it-would-send", "implant", IMPLANT + ["--dry-run"], before=no_bolus),
    # changes, confirmed with --yes
    Case("program-sends-a-flex-therapy-and-gives-the-pumps-summary", "program", PROGRAM_FLEX + ["--yes"],
         before=_all(delivering, no_bolus)),
    Case("diary-records-an-entry-with-the-patient-key", "diary",
         ["diary", "--pain", "6", "--activity", "walking", "--note", "after lunch"]),
    Case("diary-list-gives-the-entries", "diary-list", ["diary", "list"],
         before=lambda p: p.call(lc.DIARY, {"pain": 5, "activity": "rest", "note": "x"}, role="patient"),
         check=lambda d, p: d["entries"]),
    Case("demand-starts-a-demand-bolus", "demand", ["demand"], before=_all(delivering, with_demand, no_bolus,
                                                                          lambda p: advance(p, 31))),
    Case("bolus-starts-a-clinician-bolus", "bolus", ["bolus", "--dose", "1mg", "--over", "30min", "--yes"],
         before=_all(delivering, no_bolus), check=lambda d, p: d["strokes"] == 200),
    Case("suspend-stops-delivery", "suspend", ["suspend", "--yes"], before=delivering,
         check=lambda d, p: d["state"] == "suspended"),
    Case("resume-restarts-delivery", "resume", ["resume", "--yes"], before=suspended,
         check=lambda d, p: d["state"] == "delivering"),
    Case("clock-set-moves-the-pump-clock", "clock", lambda p: ["clock", "--set", later(p, hours=1), "--yes"]),
    Case("low-threshold-sets-the-alarm-volume", "low-threshold", ["low-threshold", "3mL", "--yes"],
         check=lambda d, p: d["low_nl"] == 3_000_000),
    Case("alarm-date-sets-the-reminder-date", "alarm-date", ["alarm-date", "2140-01-01", "--yes"]),
    Case("catheter-records-a-revision", "catheter", ["catheter", "--segments", "500mm:120uL,300mm:80uL", "--yes"],
         before=no_bolus, check=lambda d, p: d["catheter_nl"] == 200_000),
    Case("prime-starts-the-priming-bolus", "prime", ["prime", "--volume", "0.2mL", "--over", "25min", "--yes"],
         before=catheter_not_primed),
    Case("refill-records-the-new-fill", "refill",
         ["refill", "--withdrawn", "15mL", "--added", "18mL", "--accept-discrepancy", "--yes"]),
    Case("visit-records-the-refill-and-writes-the-report", "visit",
         ["visit", "--withdrawn", "15mL", "--added", "18mL", "--report-dir", "reports", "--accept-discrepancy",
          "--yes"], before=lambda p: advance(p, 24 * 60)),
    Case("alarms-ack-acknowledges-an-alarm", "alarms", ["alarms", "--ack", "low-reservoir", "--yes"],
         before=low_reservoir_alarm,
         check=lambda d, p: (low_threshold_back(p), d["acknowledged"][0]["name"] == "low-reservoir")[1]),
    Case("implant-failing-at-a-step-is-an-error-object", "implant",
         lambda p: IMPLANT + ["--bench", str(p.emu.bench_path), "--yes"], rc=2,
         schema="error", before=_all(delivering, no_bolus, motor_stalled),
         check=refused("IMPLANT_FAILED", "not_primed", failed_step="priming")),
    Case("implant-runs-the-whole-test-again-on-an-implanted-pump", "implant",
         lambda p: IMPLANT + ["--bench", str(p.emu.bench_path), "--yes"], before=_all(motor_mended, no_bolus),
         check=lambda d, p: [s["step"] for s in d["steps"]][-1] == "start"),
    Case("maintenance-on-a-board-without-a-repl-is-refused-by-the-pump", "maintenance", ["maintenance", "--yes"],
         rc=2, schema="error", check=refused("BAD_ARGS")),
    # trial records (a file, no pump)
    Case("trial-new-starts-a-record", "trial new",
         lambda p: ["trial", "new", "--file", str(trial_path(p)), "--patient", "P-01", "--drug", "morphine",
                    "--mode", "continuous", "--start", "2025-03-01", "--days", "5", "--baseline", "8", "--rate",
                    "0.5mg/day", "--force"]),
    Case("trial-screen-records-an-answer", "trial screen",
         lambda p: ["trial", "screen", "--file", str(trial_path(p)), "failed_conservative_care", "yes", "--note",
                    "PT, NSAIDs"], before=trial_made),
    Case("trial-baseline-sets-the-baseline", "trial baseline",
         lambda p: ["trial", "baseline", "--file", str(trial_path(p)), "7"], before=trial_made),
    Case("trial-day-records-pain-and-side-effects", "trial day",
         lambda p: ["trial", "day", "--file", str(trial_path(p)), "--date", "2025-03-05", "--pain", "3",
                    "--side-effect", "nausea:mild"], before=trial_made),
    Case("trial-titrate-changes-the-rate", "trial titrate",
         lambda p: ["trial", "titrate", "--file", str(trial_path(p)), "--date", "2025-03-03", "--rate", "1mg/day"],
         before=trial_made),
    Case("trial-inject-records-a-test-injection", "trial inject",
         lambda p: ["trial", "inject", "--file", str(trial_path(p, "injection")), "--time", "2025-03-01T09:00",
                    "--dose", "0.1mg"], before=lambda p: trial_made(p, "injection")),
    Case("trial-evaluate-applies-the-50-percent-rule", "trial evaluate",
         lambda p: ["trial", "evaluate", "--file", str(trial_path(p))], before=trial_made,
         check=lambda d, p: d["reduction_percent"] is not None),
    Case("trial-decide-records-the-physicians-decision", "trial decide",
         lambda p: ["trial", "decide", "--file", str(trial_path(p)), "--name", "Dr A", "--decision", "implant",
                    "--date", "2025-03-06"], before=trial_made),
    Case("trial-extend-changes-the-planned-days", "trial extend",
         lambda p: ["trial", "extend", "--file", str(trial_path(p)), "--days", "7"], before=trial_made,
         check=lambda d, p: d["trial"]["planned_days"] == 7),
    # the accuracy test (its own fresh emulator, no pump of this file)
    Case("accuracy-measures-a-rate-and-gives-a-and-the-trumpet-figures", "accuracy",
         ["accuracy", "--rate", "1mL/day", "--hours", "1", "--stabilise", "30min", "--stroke-bias", "-10%",
          "--out", "accuracy"],
         check=lambda d, p: d["rates"][0]["source"] == "fluid" and d["rates"][0]["overall_error_pct"] < -8),
    # refusals and errors: error.schema.json, with the exit code
    Case("a-dose-above-the-drugs-24-hour-maximum-is-refused-by-the-pump", "program",
         ["program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "25mg/day", "--yes"], rc=2,
         schema="error", check=refused("LIMIT", "daily_max", changed=False)),
    Case("a-bolus-above-the-bolus-maximum-is-refused-by-the-pump", "bolus",
         ["bolus", "--dose", "30mg", "--over", "30min", "--yes"], rc=2, schema="error", before=no_bolus,
         check=lambda d, p: d["error"]["code"] == "LIMIT" and d["error"]["limit"] in ("bolus_max", "daily_max")),
    Case("a-bad-unit-is-refused-before-anything-is-sent", "bolus", ["bolus", "--dose", "1xg", "--over", "30min"],
         rc=1, schema="error", check=refused("INPUT")),
    Case("no-pump-found-is-a-link-error", "status", ["status", "--port", "auto", "--state", "no-emulator-here"],
         rc=3, schema="error", check=refused("LINK", message=lambda m: m.startswith("no pump found"))),
    Case("a-wrong-key-is-an-authentication-error", "status", lambda p: ["status", "--keystore", str(wrong_keys(p))],
         rc=4, schema="error", check=refused("AUTH")),
    Case("the-patient-role-may-not-program", "program",
         ["program", "--role", "patient", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "4mg/day", "--yes"],
         rc=2, schema="error", check=refused("FORBIDDEN")),
    Case("a-demand-too-soon-is-refused-with-the-wait", "demand", ["demand"], rc=2, schema="error",
         before=_all(delivering, demand_in_lockout),
         check=refused("LIMIT", "demand_lockout", wait_s=lambda w: w > 0)),
    Case("a-review-not-confirmed-without-a-terminal-is-cancelled", "program",
         ["program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "4mg/day"], rc=5, schema="error",
         check=refused("CANCELLED")),
    Case("a-missing-option-is-a-usage-error", "bolus", ["bolus", "--over", "30min", "--yes"], rc=1, schema="error",
         check=refused("USAGE")),
    Case("a-first-implant-on-an-implanted-pump-is-refused", "implant",
         ["implant", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "10mg/day", "--yes"], rc=1,
         schema="error", check=refused("USAGE", message=lambda m: "already implanted" in m)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_json_output_matches_its_schema(case: Case, one_pump, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # `devices` looks at the folders here; reports go here
    if case.before:
        case.before(one_pump)
        capsys.readouterr()
    argv: "list[str]" = case.argv(one_pump) if callable(case.argv) else list(case.argv)
    rc, out, err = run(one_pump, capsys, argv)
    assert "Traceback" not in err, err
    assert rc == case.rc, "pumpctl %s: exit %d, expected %d\nstdout: %s\nstderr: %s" % (
        " ".join(argv), rc, case.rc, out[:2000], err[:2000])
    try:
        doc = json.loads(out)
    except ValueError as e:
        pytest.fail("pumpctl %s --json: standard output is not one JSON document (%s): %r" % (
            " ".join(argv), e, out[:500]))
    problems = schema_problems(doc, case.schema)
    known = NEEDS_OUTPUT_CHANGE.get(case.id)
    if problems:
        pytest.fail("pumpctl %s --json does not follow %s%s:\n  %s%s" % (
            " ".join(argv), case.schema, SUFFIX, "\n  ".join(problems),
            "\nknown, output to change (NEEDS_OUTPUT_CHANGE): %s" % known if known else ""), pytrace=False)
    assert not known, ("%s follows its schema now: remove it from NEEDS_OUTPUT_CHANGE" % case.id)
    if case.schema == "error":
        assert doc["error"]["exit"] == rc
    else:
        assert "error" not in doc
        assert doc.get("dry_run") is (True if "--dry-run" in argv else None)
    if case.check:
        assert case.check(doc, one_pump) not in (False, None, [], {}), json.dumps(doc, indent=1)[:3000]


# -- the schemas cannot drift from the commands ----------------------------------------------------
def json_commands():
    """{command line: takes --dry-run} of every pumpctl command that takes --json ('trial new', ...)."""
    found = {}

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    opts = {o for a in sub._actions for o in a.option_strings}
                    if "--json" in opts:
                        found[" ".join(prefix + [name])] = "--dry-run" in opts
                    walk(sub, prefix + [name])

    walk(cli.build_parser(), [])
    return found


def referenced(name, seen=None):
    """The schema files `name` refers to ($ref), itself included, transitively."""
    seen = set() if seen is None else seen
    if name in seen:
        return seen
    seen.add(name)
    for target in re.findall(r'"\$ref": "([a-z-]+)\.schema\.json#', json.dumps(SCHEMAS[name])):
        referenced(target, seen)
    return seen


def test_every_json_command_has_a_schema_and_a_case_and_every_case_a_command():
    commands = json_commands()
    assert len(commands) >= 30, sorted(commands)  # the walk works
    no_schema = sorted(c for c in commands if schema_of(c) not in SCHEMAS)
    assert not no_schema, "commands with --json and no schema in %s: %s" % (SCHEMA_DIR, no_schema)
    covered = {c.command for c in CASES}
    assert not sorted(set(commands) - covered), "commands with --json that no case runs"
    assert not sorted(covered - set(commands)), "cases of commands that take no --json"
    dry = {c.command for c in CASES if c.dry_run}
    assert not sorted(c for c, takes in commands.items() if takes and c not in dry), "--dry-run never validated"
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids)
    assert not sorted(set(NEEDS_OUTPUT_CHANGE) - set(ids)), "NEEDS_OUTPUT_CHANGE names no case"


def test_every_schema_file_is_used():
    used = set()
    for c in CASES:
        used |= referenced(c.schema)
    assert sorted(SCHEMAS) == sorted(used), "schema files no case uses: %s" % sorted(set(SCHEMAS) - used)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_a_valid_draft_2020_12_schema_named_for_its_file(name):
    s = SCHEMAS[name]
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"].endswith("/" + name + SUFFIX)
    assert s.get("title") and s.get("description")


def test_the_schemas_are_package_data():
    toml = tomllib.loads((paths.ROOT / "host_tools" / "pyproject.toml").read_text())
    assert "schemas/*.json" in toml["tool"]["setuptools"]["package-data"]["pumpctl"]


# -- docs/pumpctl.md "JSON output": every schema listed, every example valid ------------------------
DOC = paths.ROOT / "docs" / "pumpctl.md"


def doc_examples():
    """[(schema name, example object)] of the section "JSON output"."""
    text = DOC.read_text()
    start = text.index("## 12. JSON output")
    section = text[start:]
    return [(m.group(1), json.loads(m.group(2))) for m in re.finditer(
        r"^#### .*?\(`([a-z-]+)\.schema\.json`\)\n+```json\n(.*?)```", section, re.S | re.M)]


def test_the_docs_give_a_valid_example_for_every_schema():
    examples = doc_examples()
    assert sorted({n for n, _ in examples}) == sorted(set(SCHEMAS) - {"common"})
    for name, ex in examples:
        assert schema_problems(ex, name) == [], (name, schema_problems(ex, name))


@pytest.mark.parametrize("name", sorted(set(SCHEMAS) - {"common"}))
def test_a_schema_rejects_an_unknown_key_and_a_missing_one(name):
    # A schema that can fail: each docs example, valid, made invalid twice.
    ex = next(e for n, e in doc_examples() if n == name)
    inner = ex["error"] if name == "error" else ex
    extra = json.loads(json.dumps(ex))
    (extra["error"] if name == "error" else extra)["unexpected_key"] = 1
    assert schema_problems(extra, name), "%s accepts an unknown top-level key" % name
    for key in list(inner):
        fewer = json.loads(json.dumps(ex))
        del (fewer["error"] if name == "error" else fewer)[key]
        if not schema_problems(fewer, name):
            continue
        break
    else:
        pytest.fail("%s: no key of the example is required" % name)
