"""The emulator's native build (host_tools/pumpctl/nativecode.py,
docs/emulator-speed.md) is the same pump as its sources: the same course in
virtual time gives the same strokes at the same board times, the same ledger
and the same true volumes, faults included."""
import pytest

from pumpctl.emulator import Emulator

DAY_MS = 86_400_000
START_TICKS = (1 << 30) - 3_600_000  # ticks wrap an hour in (as on a Pico after 12.4 days)
# 2.4 mL/day of hydromorphone 1 mg/mL: a stroke every 18 s, 4,800 a day.
RX = {"drug": "hydromorphone", "conc_ng_ml": 1_000_000, "steps": [{"start_s": 0, "dose_ng_day": 2_400_000}]}


def course(tmp_path, code):
    emu = Emulator(tmp_path / code, virtual=True, prescription=RX, start_ticks=START_TICKS, code=code).start()
    try:
        with emu.bench() as b:
            assert b.call("status")["code"] == code
            b.call("stroke_error", bias_ppm=-50_000, noise_ppm=20_000, drift_ppm_per_day=300, seed=7)
            b.call("advance", ms=DAY_MS // 2)
            b.call("motor", intermittent=5)  # every 5th attempt fails: retried strokes
            b.call("advance", ms=DAY_MS // 4)
            b.call("motor", intermittent=0)
            b.call("occlusion", on=True)  # strokes held back, then an occlusion stop
            b.call("advance", ms=DAY_MS // 8)
            b.call("occlusion", on=False)
            b.call("advance", ms=DAY_MS)
            status = b.call("status")
            record = b.call("strokes", first=0, limit=4096)
            fluid = b.call("fluid")
    finally:
        emu.stop()
    return status, record, fluid


@pytest.fixture(scope="module")
def courses(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("code")
    return course(tmp, "native"), course(tmp, "source")


def test_the_native_build_makes_the_same_strokes_at_the_same_times(courses):
    (_, native, _), (_, source, _) = courses
    assert native["count"] > 3000  # (the occlusion stops delivery until a clinician resumes it)
    assert native == source


def test_the_native_build_keeps_the_same_ledger_and_alarms(courses):
    (native, _, _), (source, _, _) = courses
    same = ("strokes_by_kind", "remaining_nl", "strokes", "failed", "alarms", "state", "board_ms", "running")
    assert {k: native[k] for k in same} == {k: source[k] for k in same}
    assert "occlusion" in native["alarms"]  # the course reached the fault it was meant to


def test_the_native_build_moves_the_same_true_volumes(courses):
    (_, _, native), (_, _, source) = courses
    assert native == source
    assert native["delivered_nl"] > 0
