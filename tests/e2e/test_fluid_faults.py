"""Faults of the physical path (issue #16), injected through the bench port
into the emulator's fluid model (boards/unix/fluid_model.py,
docs/fluid-model.md), and what the pump detects, or honestly does not, and
when. The pump runs the demonstration therapy: morphine 10 mg/mL at 1 mL/day
(one 500 nL stroke every 43.2 s) from a 20 mL reservoir, catheter primed."""
import re

import pytest

from linkkit import DAY_MS, Pump, wait_for
from pumpctl import cli, paths, scenario
from pumpctl.emulator import Emulator
from pumpctl.fw import link_commands as lc

HOUR_MS = 3_600_000
STROKE_NL = 500
NG_PER_NL = 10  # morphine 10 mg/mL


@pytest.fixture
def pump(tmp_path):
    p = Pump(tmp_path)
    p.bench("stroke_error", noise_ppm=0)  # each test's arithmetic is exact but for the fill-level effect
    yield p
    p.stop()


def days(p, n):
    """Advances n days a request at a time (each a bounded wait on a loaded machine): the last status."""
    for _ in range(n):
        st = p.bench("advance", ms=DAY_MS)
    return st


def refill_at_truth(p, added_nl=20_000_000):
    """A refill where the clinician aspirates what is really in the reservoir:
    (the pump's review of it, the status after it)."""
    withdrawn = p.bench("fluid")["reservoir_nl"]
    review = p.call(lc.REFILL, {"withdrawn_nl": withdrawn, "added_nl": added_nl, "check": True})
    p.call(lc.REFILL, {"withdrawn_nl": withdrawn, "added_nl": added_nl})
    return review, p.bench("status")


def test_nothing_in_the_firmware_can_reach_the_fluid_model():
    for src in (paths.ROOT / "firmware").glob("*.py"):
        assert not re.search(r"fluid_model|FluidModel|\.fluid\b|occlusion_mmhg|occlusion_rise|\.worn\b|\.blocked\b", src.read_text()), src


def test_the_pumps_gauge_is_its_belief_and_the_truth_differs_under_a_stroke_bias(pump):
    pump.bench("stroke_error", bias_ppm=-100_000)
    st = pump.bench("advance", ms=DAY_MS)
    f = pump.bench("fluid")
    believed = 20_000_000 - st["remaining_nl"]
    assert believed == st["strokes"] * STROKE_NL  # the pump counts nominal strokes
    truly = 20_000_000 - f["reservoir_nl"]
    assert abs(truly - believed * 9 // 10) <= believed // 100  # -10 %, and the fill-level effect (<= 0.5 %)
    assert f["strokes"] == st["strokes"] and f["delivered_nl"] == truly  # the catheter was full: out = in
    assert f["delivered_ng"] == f["delivered_nl"] * NG_PER_NL


@pytest.mark.parametrize("bias_ppm,detected", [(-100_000, True), (-20_000, False)])
def test_a_stroke_bias_is_seen_only_at_the_refill_and_only_beyond_the_threshold(pump, bias_ppm, detected):
    pump.bench("stroke_error", bias_ppm=bias_ppm)
    st = days(pump, 15)
    assert st["alarms"] == [] and st["state"] == "delivering"  # no alarm can see it between visits
    review, after = refill_at_truth(pump)
    assert review["warning"] is detected, review  # > 20 % or > 2 mL of the expected 5 mL
    assert ("refill discrepancy" in after["alarms"]) is detected


def test_a_pocket_fill_goes_unseen_until_the_next_refill(pump):
    days(pump, 10)
    before = pump.bench("fluid")
    assert pump.bench("pocket_fill", pct=100) == {"pocket_fill_pct": 100}
    review, after = refill_at_truth(pump)
    assert not review["warning"] and after["alarms"] == []  # the refill itself looks right
    f = pump.bench("fluid")
    assert f["pocket_nl"] == 20_000_000 and f["pocket_ng"] == 200_000_000  # 200 mg of morphine beside the pump
    assert f["reservoir_nl"] == 0 and f["faults"]["pocket_fill_pct"] == 0  # the miss was this refill's
    st = days(pump, 10)
    f2 = pump.bench("fluid")
    assert st["state"] == "delivering" and st["alarms"] == []  # pumping nothing, and silent
    assert f2["delivered_nl"] == before["delivered_nl"] and f2["stroke_nl_last"] == 0
    review, after = refill_at_truth(pump)
    assert review["warning"] and review["withdrawn_nl"] == 0 and review["expected_nl"] > 9_000_000
    assert "refill discrepancy" in after["alarms"]


def test_an_occlusion_raises_the_alarm_within_five_strokes_and_its_release_is_a_bolus(pump):
    pump.bench("advance", ms=HOUR_MS)
    onset = pump.bench("fluid")
    reply = pump.bench("occlusion", on=True)
    assert reply["occluded"] and reply["pressure_mmhg"] == 0
    st = pump.bench("advance", ms=HOUR_MS)
    f = pump.bench("fluid")
    assert "occlusion" in st["alarms"] and st["state"] == "stopped"
    assert f["strokes"] - onset["strokes"] == 5  # 80, 160 mmHg counted; 240, 320, 400 refused: 3 in a row
    assert f["delivered_nl"] == onset["delivered_nl"] and f["held_nl"] > 2400
    assert f["pressure_mmhg"] == f["held_nl"] * 160 // 1000
    released = pump.bench("occlusion", on=False)
    f2 = pump.bench("fluid")
    assert released["release_last_nl"] == f["held_nl"] and f2["pressure_mmhg"] == 0
    # No unintended bolus, IEC 60601-2-24 asks; the physics makes one, and the bench says so.
    assert f2["delivered_nl"] == f["delivered_nl"] + f["held_nl"]
    pump.call(lc.RESUME)
    assert pump.bench("advance", ms=HOUR_MS)["state"] == "delivering"


def test_resumed_against_the_occlusion_the_pump_ends_in_a_motor_stall_past_the_mechanisms_limit(pump):
    pump.bench("occlusion", on=True)
    for _ in range(2):
        assert "occlusion" in pump.bench("advance", ms=HOUR_MS)["alarms"]
        pump.call(lc.RESUME)  # without clearing the line
    st = pump.bench("advance", ms=HOUR_MS)
    assert "motor stall" in st["alarms"] and pump.bench("fluid")["pressure_mmhg"] >= 600


def test_a_disconnected_catheter_is_not_detected_by_the_pump(pump):
    pump.bench("advance", ms=HOUR_MS)
    before = pump.bench("fluid")
    assert pump.bench("disconnect", on=True) == {"leak_pct": 100}
    st = days(pump, 10)
    f = pump.bench("fluid")
    assert st["alarms"] == [] and st["state"] == "delivering"
    assert f["delivered_nl"] == before["delivered_nl"] and f["pocket_nl"] > 9_900_000
    review, after = refill_at_truth(pump)
    assert not review["warning"] and after["alarms"] == []  # the volume is right: it went to the wrong place
    assert pump.bench("disconnect", on=False) == {"leak_pct": 0}


def test_a_partial_leak_splits_each_stroke(pump):
    pump.bench("disconnect", leak_pct=30)
    pump.bench("advance", ms=DAY_MS)
    f = pump.bench("fluid")
    moved = f["delivered_nl"] + f["pocket_nl"]
    assert abs(f["pocket_nl"] - moved * 3 // 10) <= f["strokes"]  # per-stroke floors


@pytest.mark.parametrize("nl_per_day,detected", [(100_000, True), (10_000, False)])
def test_a_septum_leak_is_seen_at_the_refill_if_it_is_large_enough(pump, nl_per_day, detected):
    pump.bench("septum_leak", nl_per_day=nl_per_day)
    st = days(pump, 15)
    f = pump.bench("fluid")
    assert st["alarms"] == []
    assert f["pocket_nl"] == 15 * nl_per_day
    review, after = refill_at_truth(pump)
    assert review["warning"] is detected
    assert ("refill discrepancy" in after["alarms"]) is detected


def test_a_stroke_volume_drift_lowers_every_stroke_and_no_alarm_sees_it(pump):
    pump.bench("stroke_error", drift_ppm_per_day=-10_000)
    st = days(pump, 10)
    f = pump.bench("fluid")
    assert f["drift_ppm"] == -100_000 and st["alarms"] == []
    assert 445 <= f["stroke_nl_last"] <= 452  # -10 %, and the fill-level effect


def test_motor_wear_warns_of_stroke_failures_then_ends_in_a_motor_stall(pump):
    pump.bench("stroke_error", seed=16)
    assert pump.bench("wear", ppm_per_day=20_000)["wear_ppm_per_day"] == 20_000
    for day in range(1, 16):
        st = pump.bench("advance", ms=DAY_MS)
        if st["alarms"]:
            break
    f = pump.bench("fluid")
    # The worn gear train's first failed strokes are retried: a warning, therapy goes on.
    assert st["alarms"] == ["stroke failures"] and st["state"] == "delivering", st
    assert st["failed"] >= 3 and f["wear_ppm"] >= 20_000 * (day - 1)
    assert f["stroke_nl_last"] < 500 - 500 * (day - 1) * 2 // 100 + 5
    warned_day = day
    for day in range(day + 1, 40):
        st = pump.bench("advance", ms=DAY_MS)
        if "motor stall" in st["alarms"]:
            break
    assert st["alarms"] == ["motor stall", "stroke failures"] and st["state"] == "stopped", st
    assert day > warned_day  # the warning came at least a day before the stall


def test_the_truth_outlives_a_soft_reset_and_a_power_cut(tmp_path):
    emu = Emulator(tmp_path / "pump", virtual=True).start()
    try:
        with emu.bench() as b:
            b.call("stroke_error", bias_ppm=50_000, seed=3)
            b.call("advance", ms=DAY_MS)
            b.call("septum_leak", nl_per_day=1000)
            before = b.call("fluid")
        _request_closing(emu, "soft_reset")
        assert wait_for(lambda: emu.resets == [2] and emu.bench_path.exists())
        with emu.bench() as b:
            after = b.call("fluid")
            assert after == before  # nothing moved while it reset; nothing forgotten
            b.call("advance", ms=HOUR_MS)
            moved = b.call("fluid")
            assert moved["strokes"] > before["strokes"] and moved["params"]["bias_ppm"] == 50_000
        _request_closing(emu, "power_cut")
        assert wait_for(lambda: emu.proc.poll() is not None)
    finally:
        emu.kill()
    emu = Emulator(tmp_path / "pump", virtual=True).start()
    try:
        with emu.bench() as b:
            assert b.call("status")["reset_cause"] == 3  # a power loss, as the pump logged it
            assert b.call("fluid") == moved
    finally:
        emu.stop()


def _request_closing(emu, cmd):
    import socket
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(emu.bench_path))
        s.sendall(b'{"cmd": "%s"}\n' % cmd.encode())
        s.settimeout(10)
        assert s.recv(100) == b""  # the connection closes: no reply


SCENARIO = {
    "name": "physical faults", "start": "2025-03-03T09:00",
    "steps": [
        {"step": "implant", "catheter": "500mm:120uL,300mm:80uL", "fill": "20mL",
         "prescription": {"drug": "morphine", "conc": "10mg/mL", "dose": "5mg/day"}},
        {"step": "fault", "stroke_bias": "-10%", "noise": "0%"},
        {"step": "days", "days": 28},
        {"step": "check", "state": "delivering", "no_alarms": True},
        {"step": "visit", "withdrawn": "true", "added": "20mL", "accept_discrepancy": True},
        {"step": "fault", "occlusion": True},
        {"step": "days", "hours": 2},
        {"step": "check", "state": "stopped", "alarms": ["occlusion"]},
        {"step": "resolve"},
        {"step": "days", "hours": 2},
        {"step": "check", "state": "delivering", "no_alarms": True},
        {"step": "fault", "pocket_fill": 100},
        {"step": "visit", "withdrawn": "true", "added": "20mL"},
        {"step": "days", "days": 7},
        {"step": "check", "state": "delivering", "no_alarms": True},
        {"step": "visit", "withdrawn": "true", "added": "20mL", "accept_discrepancy": True},
    ]}


def test_a_scenario_injects_physical_faults_and_withdraws_the_truth(tmp_path, capsys):
    import json
    path = tmp_path / "faults.json"
    path.write_text(json.dumps(SCENARIO))
    state = tmp_path / "state"
    rc = scenario.run(path, tmp_path / "reports", state, cli.main)
    out = capsys.readouterr().out
    assert rc == 0, out
    # The bias is warned at the first visit, the pocket fill (no warning at its
    # own visit: the step would stop with exit 5) at the next one.
    assert out.count("REFILL DISCREPANCY") == 2, out
    assert "withdrawn: what is truly in the reservoir, 0.0000 mL" in out  # after the pocket fill
    truth = json.loads((state / "fluid.json").read_text())
    assert truth["sinks"]["pocket"][0] >= 20_000_000 and truth["sinks"]["pocket"][1] >= 200_000_000
    assert truth["released_nl"] > 2_000 and not truth["occluded"] and truth["bias_ppm"] == 0  # resolved


IMPLANT = {"step": "implant", "catheter": "500mm:120uL", "fill": "20mL",
           "prescription": {"drug": "morphine", "conc": "10mg/mL", "dose": "2mg/day"}}


@pytest.mark.parametrize("step,why", [
    ({"step": "fault", "stroke_bias": "-60%"}, "outside -500000 to 500000"),
    ({"step": "fault", "drift": "1%/fortnight"}, "per day, week, month or year"),
    ({"step": "fault", "septum_leak": "1mL"}, "a volume a day"),
    ({"step": "fault", "disconnect": 101}, "a whole percentage"),
    ({"step": "fault", "occlusion": "yes"}, "true or false"),
    ({"step": "visit", "withdrawn": "truth", "added": "20mL"}, "withdrawn"),
    ({"step": "days", "days": 100000}, "a whole number of days (1 to 3660)"),
    ({"step": "days", "hours": 0}, "or hours (1 to 87840)"),
    # What pumpctl implant and the pump would refuse mid-course, refused before it starts:
    (dict(IMPLANT, serial="../SN-1"), "step 1 (implant): serial '../SN-1': 1 to 24 letters, digits"),
    (dict(IMPLANT, catheter="2000mm:120uL"), "step 1 (implant): catheter segment"),
    (dict(IMPLANT, fill="twenty"), "step 1 (implant): fill"),
    (dict(IMPLANT, prime_duration=30), "step 1 (implant): 'prime_duration' has the wrong type"),
    ({"step": "days", "days": 1, "diary": [{"pain": 5, "activity": "rest", "note": "a\nb"}]}, "one line of text"),
    ({"step": "days", "days": 1, "diary": [{"pain": 5, "activity": "rest", "note": "é" * 17}]}, "too long"),
])
def test_a_malformed_physical_fault_stops_the_file_before_anything_runs(tmp_path, step, why):
    import json
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"steps": [step]}))
    with pytest.raises(ValueError) as e:  # ScenarioError, or the units' own error for a volume
        scenario.load(path)
    assert why in str(e.value)
