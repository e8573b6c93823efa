"""The patient's path end to end on a virtual-time emulator, through the real
link: implant test (and a failing one), pain diary add/list, trial record."""
import csv
import io
import json

import pytest

from linkkit import Pump, of_type
from pumpctl import cli
from pumpctl.commands import diary, implant
from pumpctl.fw import alarms, events, link_commands as lc, wire

RX = ["--drug", "morphine", "--conc", "10mg/mL", "--dose", "2mg/day"]


class BlankPump(Pump):
    """A provisioned emulated pump straight from the factory: empty, no therapy."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path, blank=True)


@pytest.fixture
def blank(tmp_path):
    p = BlankPump(tmp_path)
    yield p
    p.stop()


def test_implant_end_to_end(blank, capsys):
    assert blank.bench("status")["remaining_nl"] == 0 and blank.therapy()["rx"] is None
    rc, out, err = blank.pumpctl(capsys, "implant", "--serial", "SN-0042", "--model", "IT-40",
                                 "--catheter", "500mm:120uL,300mm:80uL", "--fill", "20mL",
                                 "--prime-duration", "30min", *RX, "--yes", "--bench", str(blank.emu.bench_path))
    assert rc == 0, err
    for line in ("identity      serial SN-0042, model IT-40", "catheter      2 segment(s), 0.2000 mL",
                 "first fill    20.000 mL", "priming       400 strokes", "motor test    passed",
                 "alarm test    passed", "start therapy delivering", "implant test complete"):
        assert line in out, line
    blank.serial = "SN-0042"  # the keys followed the new identity, on the pump and in the key store
    th = blank.therapy()
    assert th["rx"]["steps"] == [[0, 2_000_000]] and th["catheter_nl"] == 200_000
    st = blank.bench("status")
    assert st["running"] and st["strokes"] == 400 + 4 and st["failed"] == 0
    log = blank.log()
    steps = [(r[4], r[5]) for r in of_type(log, events.IMPLANT_STEP)]
    assert steps == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1)]
    audits = of_type(log, lc.EV_COMMAND, b"implant")
    assert len(audits) == 7 and all(r[4] == wire.ROLE_CLINICIAN and r[7] == 0 for r in audits)
    # A second implant on the implanted pump is refused before anything is sent (issue 13, finding 2) ...
    seq = blank.last_seq()
    rc, out, err = blank.pumpctl(capsys, "implant", "--serial", "SN-0043", "--catheter", "500mm:150uL", "--fill",
                                 "10mL", *RX, "--yes", "--bench", str(blank.emu.bench_path))
    assert rc == cli.EXIT_INPUT and "already implanted" in err and "--reimplant" in err, err
    assert "pumpctl catheter" in err and "nothing sent" in err
    assert blank.identify()["serial"] == "SN-0042" and blank.therapy()["catheter_nl"] == 200_000
    assert not of_type(blank.log(seq + 1), lc.EV_COMMAND, b"implant")
    # ... and --reimplant shows what would change, side by side.
    rc, out, err = blank.pumpctl(capsys, "implant", "--serial", "SN-0043", "--catheter", "500mm:150uL", *RX,
                                 "--reimplant", "--dry-run", "--bench", str(blank.emu.bench_path))
    assert rc == 0, err
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "serial SN-0042" in rows["identity"] and "serial SN-0043" in rows["identity"]
    assert rows["identity"].endswith("<< changed") and rows["catheter"].endswith("<< changed")
    assert "0.2000 mL" in rows["catheter"] and "0.1500 mL" in rows["catheter"]
    assert "unchanged (filled before)" in rows["reservoir"]
    assert "dry run: nothing was sent" in out and blank.identify()["serial"] == "SN-0042"
    # --reimplant keeps the fill: a therapy of another drug is refused before the first step, not at the last.
    seq = blank.last_seq()
    rc, _, err = blank.pumpctl(capsys, "implant", "--catheter", "500mm:150uL", "--drug", "baclofen", "--conc",
                               "2mg/mL", "--dose", "100ug/day", "--reimplant", "--yes", "--bench",
                               str(blank.emu.bench_path))
    assert rc == cli.EXIT_INPUT and "the reservoir holds morphine 10 mg/mL" in err and "nothing sent" in err, err
    assert not of_type(blank.log(seq + 1), lc.EV_COMMAND, b"implant") and blank.therapy()["catheter_nl"] == 200_000


def test_implant_is_refused_on_the_demonstration_pump(pump, capsys):
    rc, _, err = pump.pumpctl(capsys, "implant", "--catheter", "500mm:120uL", "--fill", "10mL", *RX, "--yes")
    assert rc == cli.EXIT_INPUT and "already implanted (therapy morphine 10 mg/mL, reservoir" in err, err


IMPLANT = ["implant", "--serial", "SN-7", "--catheter", "500mm:120uL,300mm:80uL", "--fill", "20mL",
           "--prime-duration", "30min", *RX, "--yes"]


def test_an_interrupted_implant_resumes_from_its_step_with_a_countdown(blank, capsys, monkeypatch):
    bench = ["--bench", str(blank.emu.bench_path)]
    # Without --bench a virtual-time emulator's clock stands still: pumpctl says so instead of waiting for ever.
    monkeypatch.setattr(implant.TimeSource, "STILL_S", 0.3)
    rc, out, err = blank.pumpctl(capsys, *IMPLANT)
    assert rc == cli.EXIT_INPUT and "paused at step 'priming'" in err and "--resume --bench" in err, err
    assert "priming       400 strokes, 0.2000 mL over 30 min" in out
    blank.serial = "SN-7"
    # Ctrl-C while priming: the step is named, and how to go on.
    calls = []
    real_wait = implant.TimeSource.wait

    def wait_then_interrupt(self, seconds):
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_wait(self, seconds)

    monkeypatch.setattr(implant.TimeSource, "wait", wait_then_interrupt)
    rc, out, err = blank.pumpctl(capsys, *IMPLANT, "--resume", *bench)
    assert rc == cli.EXIT_INTERRUPTED and "interrupted at step 'priming'" in err and "--resume" in err, err
    assert "done before: identity, catheter, first fill)" in out and "waits for the priming" in out, out  # under way
    monkeypatch.setattr(implant.TimeSource, "wait", real_wait)
    rc, out, err = blank.pumpctl(capsys, *IMPLANT, "--resume", *bench)
    assert rc == 0 and "implant test complete: pump SN-7" in out, err
    assert "steps: priming -> motor test -> alarm test -> start therapy" in out
    assert "min left (" in out and "strokes to go)" in out  # the countdown
    steps = [(r[4], r[5]) for r in of_type(blank.log(), events.IMPLANT_STEP)]
    assert steps == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1)]  # each step once
    assert blank.therapy()["rx"]["steps"] == [[0, 2_000_000]]


def test_implant_stalled_motor_stops_at_the_motor_test(blank):
    c = blank.client("clinician")
    try:
        clock = implant.TimeSource(str(blank.emu.bench_path))
        steps = implant.implant_steps(blank.serial, "IT-40", [[500, 120_000]], 20_000_000, 1800,
                                  {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 2_000_000]]})
        lines = []
        implant.run_implant(c, steps[:4], clock, lines.append)  # identity .. priming pass
        blank.bench("motor", stall=True)  # the gear shaft breaks before the motor test
        with pytest.raises(implant.ImplantFailed) as e:
            implant.run_implant(c, steps[4:], clock, lines.append)
        assert e.value.step == "motor test" and "not confirmed" in e.value.reason
        assert not any("alarm test" in x or "start therapy" in x for x in lines)
        assert c.request(lc.STATUS)["state"] != "delivering"
    finally:
        c.close()
    assert not blank.bench("status")["running"] and blank.therapy()["rx"] is None
    motor = [r for r in of_type(blank.log(), events.IMPLANT_STEP) if r[4] == 5]
    assert len(motor) == 1 and motor[0][5] == 0


def test_a_priming_stopped_by_a_stall_fails_at_priming_and_a_resume_primes_what_is_left(blank, capsys):
    bench = ["--bench", str(blank.emu.bench_path)]
    blank.bench("motor", stall=True)  # the gear shaft is broken from the start
    rc, out, err = blank.pumpctl(capsys, *IMPLANT, *bench)
    assert rc == 2 and "FAILED at step 'priming'" in out + err, out + err
    assert "the priming stopped before the catheter was primed (alarms: motor-stall" in out + err
    assert blank.call(lc.STATUS)["catheter_primed"] is False
    blank.serial = "SN-7"
    blank.bench("motor", stall=False)  # mended: the alarm cleared (no therapy starts), then the test goes on
    rc, out, err = blank.pumpctl(capsys, "resume", "--yes")
    assert rc == 0 and "nothing starts" in out and "pump idle" in out, out + err
    assert alarms.MOTOR_STALL not in blank.call(lc.STATUS)["alarms"]
    rc, out, err = blank.pumpctl(capsys, *IMPLANT, "--resume", *bench)
    assert rc == 0 and "implant test complete" in out, out + err
    assert "steps: priming -> motor test -> alarm test -> start therapy" in out
    st = blank.call(lc.STATUS)
    assert st["catheter_primed"] is True and st["state"] == "delivering"
    # No stroke of the first priming went in (stalled from the start): the
    # second primes the whole 0.2 mL (400 strokes), what the first left.
    priming = [r[5] for r in of_type(blank.log(), events.BOLUS_STARTED) if r[4] == 4]
    assert priming == [400, 400, 4], priming  # then the motor test's 4 strokes (a bolus of the same kind)


def test_implant_input_errors(blank, capsys):
    rc, _, err = blank.pumpctl(capsys, "implant", "--catheter", "500:120uL", "--fill", "20mL", *RX, "--yes")
    assert rc == 1 and "catheter length" in err
    # What the pump would refuse at a later step is refused before the first: nothing half done.
    for bad, says in ((["--catheter", "2000mm:120uL", "--fill", "20mL"], "at most 1500 mm long"),
                      (["--catheter", "500mm:600uL,500mm:600uL", "--fill", "20mL"], "more than the 1.000 mL"),
                      (["--catheter", "500mm:120uL", "--fill", "25mL"], "the first fill is from 1.0005 mL"),
                      (["--catheter", "500mm:120uL", "--fill", "0.5mL"], "to 20.000 mL (the reservoir)"),
                      (["--catheter", "500mm:120uL", "--fill", "20mL", "--prime-duration", "1min"],
                       "exceeds the 24 mL/day maximum: make it longer"),
                      (["--catheter", "500mm:120uL", "--fill", "20mL", "--prime-duration", "25h"],
                       "priming duration 25 h outside 60 s to 24 h"),
                      (["--serial", "../../SN-1", "--catheter", "500mm:120uL", "--fill", "20mL"],
                       "letters, digits, '-', '_' or '.'"),
                      (["--model", "IT\n40", "--catheter", "500mm:120uL", "--fill", "20mL"], "on one line")):
        rc, _, err = blank.pumpctl(capsys, "implant", *bad, *RX, "--yes")
        assert rc == 1 and says in err and "nothing sent" in err, err
    assert blank.call(lc.STATUS)["remaining_nl"] == 0
    assert not [r for r in blank.log() if r[3] == events.IMPLANT_STEP]


def test_diary_add_and_list(pump, capsys, tmp_path):
    for pain, act, note in ((6, "walking", "after lunch"), (3, "rest", ""), (8, "sleep", "woke at 3")):
        rc, out, err = pump.pumpctl(capsys, "diary", "add", "--pain", str(pain), "--activity", act, "--note", note)
        assert rc == 0 and "recorded" in out, err
    rc, _, err = pump.pumpctl(capsys, "diary", "list", "--role", "patient")
    assert rc == 2 and "FORBIDDEN" in err
    rc, out, _ = pump.pumpctl(capsys, "diary", "list")
    assert rc == 0 and "walking" in out and "woke at 3" in out
    rc, out, _ = pump.pumpctl(capsys, "diary", "list", "--json")
    entries = json.loads(out)["entries"]
    assert [(e["pain"], e["activity"], e["note"]) for e in entries] == [
        (6, "walking", "after lunch"), (3, "rest", ""), (8, "sleep", "woke at 3")]
    seqs = [r[0] for r in of_type(pump.log(), events.DIARY)]
    assert [e["seq"] for e in entries] == seqs
    f = tmp_path / "diary.csv"
    rc, _, _ = pump.pumpctl(capsys, "diary", "list", "--csv", str(f))
    rows = list(csv.reader(io.StringIO(f.read_text())))
    assert rc == 0 and rows[0] == diary.DIARY_HEADERS and len(rows) == 4 and rows[3][3] == "8"


def test_trial_cli_round_trip(tmp_path, capsys):
    f = str(tmp_path / "trial.json")

    def run(*argv):
        capsys.readouterr()
        rc = cli.main(["trial", argv[0], "--file", f] + list(argv[1:]))
        out, err = capsys.readouterr()
        return rc, out, err

    assert run("new", "--patient", "P-01", "--drug", "morphine", "--mode", "continuous", "--start", "2025-03-01",
               "--days", "5", "--baseline", "8", "--rate", "0.5mg/day")[0] == 0
    assert run("new", "--patient", "P-01", "--drug", "morphine", "--mode", "continuous", "--days", "5",
               "--baseline", "8", "--rate", "0.5mg/day")[0] == 1  # exists: --force
    assert run("screen", "failed_conservative_care", "yes")[0] == 0
    assert run("day", "--date", "2025-03-01", "--pain", "7")[0] == 0
    assert run("titrate", "--date", "2025-03-02", "--rate", "1mg/day")[0] == 0
    assert run("day", "--date", "2025-03-02", "--pain", "5", "--side-effect", "nausea:mild")[0] == 0
    assert run("day", "--date", "2025-03-03", "--pain", "4")[0] == 0
    assert run("day", "--date", "2025-03-04", "--pain", "3")[0] == 0
    rc, _, err = run("day", "--date", "2025-03-04", "--pain", "2")
    assert rc == 1 and "already an entry" in err
    rc, _, err = run("day", "--date", "2025-03-09", "--pain", "2")
    assert rc == 1 and "outside the trial" in err
    rc, out, _ = run("evaluate", "--json")
    ev = json.loads(out)
    assert rc == 0 and ev["outcome"] == "meets" and ev["reduction_percent"] == 50.0
    rc, out, _ = run("decide", "--name", "Dr A", "--decision", "implant", "--date", "2025-03-06")
    assert rc == 0 and "Physician decision (Dr A, 2025-03-06): implant" in out
    data = json.loads(open(f).read())
    assert data["physician_decision"]["decision"] == "implant"
    assert "consider implant" in data["physician_decision"]["tool_recommendation"]
    assert data["titrations"][0]["rate_ng_day"] == 1_000_000


def test_a_pump_with_no_catheter_recorded_is_programmed_only_past_a_warning_about_it(blank, capsys):
    # Found by driving the emulator: a factory-blank pump was programmed,
    # refilled and given a bolus with no catheter recorded, and nothing said
    # that an implanted catheter's saline would then be booked as drug. The
    # review says so (a pump on the bench has no catheter: it may go on).
    for argv in (["refill", "--withdrawn", "0mL", "--added", "20mL", *RX, "--yes"],
                 ["bolus", "--dose", "0.5mg", "--over", "30min", "--yes"]):
        rc, out, err = blank.pumpctl(capsys, *argv)
        assert rc == 0 and "no catheter is recorded" in out and "pumpctl implant" in out, (argv, out, err)


def test_a_clock_the_rtc_moves_at_a_reset_before_any_therapy_is_logged_as_set(blank, capsys):
    # Found by driving the emulator: before the first therapy the emulator's
    # RTC stand-in (this computer's clock) replaced a clock the clinician had
    # set to another date at a reset, with nothing in the log to say why the
    # timeline jumped. It is logged as a clock setting.
    import socket
    import time
    from linkkit import wait_for
    rc, out, err = blank.pumpctl(capsys, "clock", "--set", "2025-01-06T09:00", "--yes")
    assert rc == 0, err
    seq = blank.last_seq()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(blank.emu.bench_path))
        s.sendall(b'{"cmd": "soft_reset"}\n')
        s.settimeout(10)
        assert s.recv(100) == b""  # the connection closes: no reply
    assert wait_for(lambda: blank.emu.resets and blank.emu.bench_path.exists())
    st = blank.call(lc.STATUS)
    assert abs(st["day"] * 86400 + st["tod_s"] - time.time()) < 120, st  # the RTC's time
    moved = of_type(blank.log(seq + 1), events.CLOCK_SET)
    assert [tuple(r[4:6]) for r in moved] == [(20094, 9 * 3600)], moved  # from 2025-01-06 09:00
