"""pumpctl's command line without a pump: every --help, --version, where the
emulator's state is looked for, and what a user reads for bad input and for a
bug in pumpctl itself: one clear line, a distinct exit code, never a Python
traceback (issue 13, findings 1, 4, 5, 8, 17)."""
import json
import os
import subprocess
import sys
import threading

import pytest

from pumpctl import cli, paths, report
from pumpctl import session
from pumpctl.commands import device
from pumpctl import units as u
from pumpctl.keystore import KeyStore, KeyStoreError


def subcommands():
    """Every command line with --help: each subcommand, and each of theirs."""
    out = [[]]

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    out.append(prefix + [name])
                    walk(sub, prefix + [name])

    walk(cli.build_parser(), [])
    return out


def test_the_walk_finds_every_command():
    found = {" ".join(c) for c in subcommands()}
    for c in ("emulate", "status", "program", "trial", "trial evaluate", "scenario", "deploy", "diary-list"):
        assert c in found


@pytest.mark.parametrize("argv", subcommands(), ids=lambda a: " ".join(a) or "pumpctl")
def test_every_help_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pumpctl") and "%%" not in out


def test_trial_evaluate_help_says_50_percent(capsys):
    with pytest.raises(SystemExit):
        cli.main(["trial", "evaluate", "--help"])
    assert "50 % criterion" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("pumpctl 0.")


# -- finding 1: one state folder, found from any directory ------------------------------------
@pytest.mark.parametrize("where", ["root", "docs", "outside"])
def test_default_state_is_the_checkouts_run_folder_from_any_directory(where, monkeypatch, tmp_path):
    monkeypatch.delenv(paths.STATE_ENV, raising=False)
    monkeypatch.chdir({"root": paths.ROOT, "docs": paths.ROOT / "docs", "outside": tmp_path}[where])
    assert paths.default_state() == paths.ROOT / "run"
    args = cli.build_parser().parse_args(["status"])
    assert session.state_dir(args) == paths.ROOT / "run"


def test_state_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.STATE_ENV, str(tmp_path / "mine"))
    assert paths.default_state() == tmp_path / "mine"
    args = cli.build_parser().parse_args(["status", "--state", "other"])
    assert session.state_dir(args) == "other"  # an explicit --state wins


# -- finding 4: bad input, one clear line ------------------------------------------------------
def one_clear_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("pumpctl: "), err
    return lines[0]


def test_a_huge_number_in_a_prescription_file_is_refused_in_clinical_units(tmp_path, capsys):
    f = tmp_path / "rx.json"
    f.write_text('{"drug": "morphine", "conc_ng_ml": 10000000, '
                 '"steps": [{"start_s": 0, "dose_ng_day": 100000000000000000000}]}')
    rc = cli.main(["program", "--file", str(f), "--port", "/dev/nonexistent-pump"])
    line = one_clear_line(capsys.readouterr().err)
    assert rc == cli.EXIT_INPUT
    assert "dose_ng_day" in line and "mg/day" in line and "1073.741823 mg/day" in line and "nothing sent" in line


@pytest.mark.parametrize("device", ["/dev/zero", "fifo", "folder"])
def test_an_input_file_that_never_ends_is_refused_at_once(device, tmp_path, capsys):
    path = {"/dev/zero": "/dev/zero", "fifo": str(tmp_path / "fifo"), "folder": str(tmp_path)}[device]
    if device == "fifo":
        os.mkfifo(path)  # nobody ever writes it: a plain open() would wait for ever
    done = {}

    def run():
        done["rc"] = cli.main(["program", "--file", path, "--port", "/dev/nonexistent-pump"])
        done["ks"] = pytest.raises(KeyStoreError, KeyStore(path).has, "EMU-1")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading %s hangs" % path
    assert done["rc"] == cli.EXIT_INPUT
    assert "not a regular file" in one_clear_line(capsys.readouterr().err)
    assert "not a regular file" in str(done["ks"].value)


def test_a_trial_or_scenario_file_that_is_a_device_is_refused(capsys):
    assert cli.main(["trial", "evaluate", "--file", "/dev/zero"]) == cli.EXIT_INPUT
    assert "not a regular file" in one_clear_line(capsys.readouterr().err)
    assert cli.main(["scenario", "/dev/zero"]) == cli.EXIT_INPUT
    assert "not a regular file" in one_clear_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv,says", [
    (["program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "-1mg/day"], "negative"),
    (["bolus", "--dose", "-0.5mg", "--over", "30min"], "negative"),
    (["program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "2000mg/day"], "more than the pump accepts"),
    (["emulate", "--prescription", "{not json"], "not JSON"),
    (["emulate", "--prescription", '{"drug": "morphine"}'], "--prescription"),
    (["log", "--csv", "/nonexistent-folder/log.csv", "--port", "/dev/nonexistent-pump"], "no such port"),
])
def test_bad_values_get_one_line_naming_them(argv, says, capsys, tmp_path):
    if argv[0] == "emulate":
        argv = argv + ["--state", str(tmp_path / "s")]
    elif "--port" not in argv:
        argv = argv + ["--port", "/dev/nonexistent-pump"]
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("pumpctl: ")]  # (after argparse's usage)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and says in lines[0], err
    assert rc in (cli.EXIT_INPUT, cli.EXIT_LINK)
    assert not (tmp_path / "s" / "flash.img").exists()  # refused before any emulator started


# -- the guard: a bug in pumpctl is one line and exit 70 ---------------------------------------
def _boom(args):
    raise KeyError("rx")


def test_an_unexpected_exception_is_one_line_and_exit_70(monkeypatch, capsys):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(device, "cmd_identify", _boom)
    assert cli.main(["identify"]) == cli.EXIT_INTERNAL
    line = one_clear_line(capsys.readouterr().err)
    assert "internal error" in line and "KeyError" in line and "--debug" in line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, monkeypatch, capsys):
    monkeypatch.setattr(device, "cmd_identify", _boom)
    if how == "env":
        monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert cli.main(["identify"] + (["--debug"] if how == "flag" else [])) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" in err and "_boom" in err


def test_the_guard_holds_for_a_real_process(tmp_path):
    # No pump, a closed stdin and an unreadable key store: exit codes, never a traceback.
    env = dict(os.environ, PUMPCTL_STATE=str(tmp_path / "none"))
    env.pop(cli.DEBUG_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "pumpctl", "status"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == cli.EXIT_LINK and "no pump found" in one_clear_line(proc.stderr)


# -- finding 8: refusals in clinical units ------------------------------------------------------
@pytest.mark.parametrize("limit,reason,drug,conc,says", [
    ("overfill", "refill: 25000000 nL added exceeds the reservoir's 20000000 nL", "morphine", None,
     ["25.000 mL added", "20.000 mL", "what to do"]),
    ("rate", "clinician bolus: 28800000 nL/day on top of basal 0 exceeds mechanism maximum 24000000 nL/day",
     "morphine", 10_000_000, ["28.800 mL/day", "24.000 mL/day", "longer time"]),
    ("rate", "step 1 rate 10000 nL/day outside 48000..24000000 nL/day", "morphine", 10_000_000,
     ["0.010 mL/day", "at 10 mg/mL: 0.48 mg/day to 20 mg/day"]),
    ("rate", "step 1: 0.01 mL/day is outside the mechanism's 48 uL/day to 24 mL/day: change the dose or the "
             "concentration", "morphine", 10_000_000, ["at 10 mg/mL: 0.48 mg/day to 20 mg/day"]),
    ("rate", "step 1 rate 10000 nL/day outside 48000..24000000 nL/day", "ziconotide", 100_000,
     ["µg/day", "19.2 µg/day"]),
    ("daily_max", "morphine: 24-hour maximum 25000000 ng (highest step all day + periodic + demand maximum) "
                  "exceeds 20000000 ng/day", "morphine", 10_000_000, ["25 mg", "20 mg/day", "lower"]),
    ("bolus_max", "clinician bolus dose 4800 ng outside 1..4800 ng", "ziconotide", 100_000, ["4.8 µg"]),
    ("lockout", "demand bolus lockout 600 s outside 900..86400 s", "morphine", None, ["10 min", "15 min to 24 h"]),
])
def test_refusals_read_in_clinical_units(limit, reason, drug, conc, says):
    text = "\n".join(report.refusal_lines("LIMIT", limit, reason, drug, conc))
    assert "(%s)" % limit in text
    for s in says:
        assert s in text, text
    assert " nL" not in text and " ng" not in text, text


def test_units_refuse_negative_and_oversized_values():
    with pytest.raises(u.UnitError, match="negative"):
        u.rate_ng_day("-1mg/day")
    with pytest.raises(u.UnitError, match="more than the pump accepts"):
        u.volume_nl("2000mL")
    assert u.fmt_pump_value(500, "nL") == "0.5 µL"
    assert u.fmt_pump_value(0, "nL") == "0 mL"  # beside a range in mL ("0 µL is outside 1 mL to 20 mL" read oddly)
    assert json.loads(json.dumps(u.firmware_prescription(u.prescription("morphine", "10mg/mL", "4mg/day"))))[
        "steps"] == [{"start_s": 0, "dose_ng_day": 4_000_000}]


def test_a_short_status_is_completed_from_identity_and_therapy():
    # firmware/link.py sends a STATUS too large for one frame without the
    # fields IDENTIFY and THERAPY also give, marked "short".
    from pumpctl.fw import link_commands as lc
    from pumpctl.link import Client
    c = Client.__new__(Client)
    c.identity, c.role, asked = {"reservoir_nl": 20_000_000}, "clinician", []
    c.request = lambda mtype, payload=None: asked.append(mtype) or {"max_daily_nl": 600_000}
    st = c._completed_status({"short": True, "remaining_nl": 1})
    assert st == {"remaining_nl": 1, "capacity_nl": 20_000_000, "max_daily_nl": 600_000, "priming_nl": None}
    assert asked == [lc.THERAPY]
    c.role = "patient"  # THERAPY is the clinician's
    assert c._completed_status({"short": True})["max_daily_nl"] is None and asked == [lc.THERAPY]
    assert c._completed_status({"remaining_nl": 1}) == {"remaining_nl": 1}  # a whole one as it came


# -- audit rx #2: the pump clock takes exactly the documented forms ----------------------------
@pytest.mark.parametrize("text,expected", [
    ("2026-11-28T10:00", (20785, 36000)),
    ("2026-11-28T10:00:30", (20785, 36030)),
    ("2026-11-28", "refused"),  # a date alone: midnight?
    ("2026-W48-6T10:00", "refused"),  # an ISO week date
    ("20261128T1000", "refused"),  # the compact form
    ("2026-11-28T10", "refused"),  # the hour alone
    ("2026-11-28T10:00:00.999", "refused"),  # a fraction of a second: cut off?
    ("2026-11-28 10:00", "refused"),
])
def test_the_clock_takes_exactly_the_documented_forms(text, expected):
    if expected != "refused":
        assert u.parse_datetime(text) == expected
        return
    with pytest.raises(u.UnitError) as e:
        u.parse_datetime(text)
    assert "YYYY-MM-DDTHH:MM[:SS]" in str(e.value) and "e.g. 2025-06-01T08:00" in str(e.value)


@pytest.mark.parametrize("text", ["2026-W48-6", "20261128", "2026-11-28T10:00"])
def test_an_alarm_date_takes_only_the_documented_form(text):
    assert u.parse_date("2026-11-28") == 20785
    with pytest.raises(u.UnitError, match=r"is not YYYY-MM-DD: give it as e\.g\. 2025-06-01"):
        u.parse_date(text)


@pytest.mark.parametrize("text", ["2026-11-28T10:00+05:00", "2026-11-28T10:00:00-08:00", "2026-11-28T10:00Z"])
def test_a_clock_time_with_a_time_zone_is_refused_before_reaching_the_pump(text, capsys):
    rc = cli.main(["clock", "--set", text, "--port", "/dev/nonexistent-pump"])
    line = one_clear_line(capsys.readouterr().err)
    assert rc == cli.EXIT_INPUT
    assert "time zone" in line and "the pump clock is local time without a zone" in line
    assert "with no offset or Z" in line and "nothing sent" in line


# -- audit rx #3: a key given twice in a prescription file ---------------------------------------
@pytest.mark.parametrize("text,key", [
    ('{"drug": "clonidine", "conc": "1000ug/mL", "dose": "100ug/day", "dose": "150ug/day"}', "dose"),
    ('{"drug": "clonidine", "conc": "1000ug/mL", "drug": "morphine", "dose": "100ug/day"}', "drug"),
    ('{"drug": "morphine", "conc_ng_ml": 10000000, '
     '"steps": [{"start_s": 0, "dose_ng_day": 1000000, "dose_ng_day": 5000000}]}', "dose_ng_day"),
])
def test_a_key_given_twice_in_a_prescription_file_is_refused_naming_it(text, key, tmp_path, capsys):
    f = tmp_path / "rx.json"
    f.write_text(text)
    rc = cli.main(["program", "--file", str(f), "--port", "/dev/nonexistent-pump"])
    line = one_clear_line(capsys.readouterr().err)
    assert rc == cli.EXIT_INPUT
    assert 'key "%s" given twice' % key in line and "give it once" in line and "nothing sent" in line


# -- audit rx #6: Ctrl-C while pumpctl is still loading -----------------------------------------
# As the console script `pumpctl` starts, with Ctrl-C arriving while Python
# imports `module` (the first tenth of a second of every command).
CTRL_C_WHILE_IMPORTING = """
import os, signal, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["CTRL_C_AT"]:
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, CtrlC())
from pumpctl.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("module", ["pumpctl.console", "cryptography"])
@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_ctrl_c_while_pumpctl_loads_exits_130_without_a_traceback(module, json_output, tmp_path):
    env = dict(os.environ, CTRL_C_AT=module, PUMPCTL_STATE=str(tmp_path / "none"))
    env.pop(cli.DEBUG_ENV, None)
    proc = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_IMPORTING, "status"] + ["--json"] * json_output,
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == cli.EXIT_INTERRUPTED, proc.stderr
    assert "interrupted" in one_clear_line(proc.stderr)
    if json_output:
        err = json.loads(proc.stdout)["error"]
        assert err["code"] == "INTERRUPTED" and err["exit"] == cli.EXIT_INTERRUPTED and err["changed"] is False
    else:
        assert proc.stdout == ""


# -- audit rx #7: a negative value where a command takes a value -----------------------------------
@pytest.mark.parametrize("argv,says", [
    (["low-threshold", "-1mL"], "low-reservoir threshold: '-1mL' is negative"),
    (["low-threshold", "--", "-1mL"], "low-reservoir threshold: '-1mL' is negative"),
    (["low-threshold", "--yes", "-.5mL"], "low-reservoir threshold: '-.5mL' is negative"),
    (["advance", "-1h"], "time to advance: '-1h' is negative"),
    (["bolus", "--dose", "1mg", "--over", "-30min"], "is negative"),
])
def test_a_negative_value_reaches_its_commands_own_check(argv, says, tmp_path, capsys):
    where = ["--state", str(tmp_path)] + ["--port", "/dev/nonexistent-pump"] * (argv[0] != "advance")
    rc = cli.main(argv[:1] + where + argv[1:])  # (after "--" all is the value)
    line = one_clear_line(capsys.readouterr().err)
    assert rc == cli.EXIT_INPUT
    assert says in line and "give a positive value" in line and "nothing sent" in line


@pytest.mark.parametrize("argv", [
    ["low-threshold", "--json", "-1mL"],
    ["advance", "--json", "-1h"],
    ["low-threshold", "--json"],  # the volume missing
    ["low-threshold", "--js", "3mL", "--bogus"],  # argparse takes --js for --json
    ["status", "--json", "--bogus"],
])
def test_every_usage_error_under_json_is_a_json_error_on_stdout(argv, tmp_path, capsys):
    rc = cli.main(argv + ["--state", str(tmp_path)])
    err = json.loads(capsys.readouterr().out)["error"]
    assert rc == cli.EXIT_INPUT
    assert err["code"] in ("USAGE", "INPUT") and err["exit"] == cli.EXIT_INPUT and err["changed"] is False


# -- audit rx #8: a rounding refusal names each deliverable dose once ----------------------------
@pytest.mark.parametrize("reason,choice,todo", [
    # the firmware before this fix named the one stroke twice below two strokes
    ("clinician bolus: 0.2 ug is not a whole number of 0.5 uL strokes (0.25 ug each): choose 0.25 ug or 0.25 ug",
     "choose 0.25 µg", "one 0.5 µL stroke"),
    ("periodic bolus 1: 2.5 ug is not a whole number of 0.5 uL strokes (5 ug each): choose 5 ug (one stroke)",
     "choose 5 µg (one stroke)", "one 0.5 µL stroke"),
    ("clinician bolus: 12.5 ug is not a whole number of 0.5 uL strokes (5 ug each): choose 10 ug or 15 ug",
     "choose 10 µg or 15 µg", "one of the two deliverable doses"),
])
def test_a_rounding_refusal_names_each_deliverable_dose_once(reason, choice, todo):
    lines = report.refusal_lines("LIMIT", "bolus_rounding", reason, "baclofen", 500_000)
    assert lines[0].endswith(choice), lines
    assert lines[1].startswith("  what to do: ") and todo in lines[1], lines


# -- audit fl #6: the pump stops answering -----------------------------------------------------------
def test_advance_says_the_emulator_is_not_running_when_its_bench_port_does_not_answer(tmp_path, capsys):
    import socket
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "bench.sock"))  # left by an emulator that was killed: nobody listens
    stale.close()
    rc = cli.main(["advance", "1h", "--state", str(tmp_path)])
    line = one_clear_line(capsys.readouterr().err)
    assert rc == cli.EXIT_LINK
    assert "the pump is not answering: the emulator with state folder" in line and "is not running" in line
    assert "start it again with `pumpctl emulate --virtual --state" in line and "refused" not in line


@pytest.mark.parametrize("kind", ["emulator", "device"])
def test_status_says_the_pump_stopped_answering_and_what_to_do(kind, tmp_path, monkeypatch, capsys):
    master, slave = os.openpty()
    port = os.ttyname(slave)
    os.close(slave)
    if kind == "emulator":  # the port record of the emulator running with this state folder
        (tmp_path / "port.json").write_text(json.dumps({"port": port, "pid": os.getpid(), "virtual": True}))
    real_open = session.open_port

    def open_then_the_other_end_goes(spec, *a, **kw):
        opened = real_open(spec, *a, **kw)
        os.close(master)  # the emulator killed, the Pico unplugged
        return opened

    monkeypatch.setattr(session, "open_port", open_then_the_other_end_goes)
    rc = cli.main(["status", "--state", str(tmp_path)] + (["--port", port] if kind == "device" else []))
    line = one_clear_line(capsys.readouterr().err)
    assert rc == cli.EXIT_LINK
    assert line.startswith("pumpctl: the pump is not answering: ") and "device reports" not in line
    if kind == "emulator":
        assert "the emulator with state folder" in line and "not running any more" in line
        assert "start it again with `pumpctl emulate --state" in line
    else:
        assert "check its USB cable" in line and "`pumpctl emulate`" in line
