"""`make fuzz`, bounded (issue #15): frames from a host without keys leave
the pump answering, its therapy, ledger and log as they were."""
import sys

from pumpctl import paths

sys.path.insert(0, str(paths.ROOT / "tools"))
import fuzz  # noqa: E402


def test_a_short_fuzz_campaign_leaves_the_pump_as_it_was(tmp_path):
    res = fuzz.campaign(12_000, seed=20261125, state_dir=tmp_path)
    assert res["failures"] == [] and res["frames"] == 12_000


def test_the_campaign_reports_a_pump_that_changed_meanwhile(tmp_path):
    def an_hour_passes(emu, frames):
        if frames >= 5000:
            with emu.bench() as b:
                b.call("advance", ms=3_600_000)

    res = fuzz.campaign(6000, seed=3, state_dir=tmp_path, during=an_hour_passes)
    assert any(f.startswith("strokes changed") for f in res["failures"]), res["failures"]


def test_the_same_seed_sends_the_same_frames():
    from pumpctl.fw import link_commands as lc, wire
    seeds = [wire.Session().seal(lc.IDENTIFY, n, {"versions": [2]}) for n in range(1, 4)]
    a = fuzz.Mutator(fuzz.random.Random(5), seeds)
    b = fuzz.Mutator(fuzz.random.Random(5), seeds)
    sent = [a.frame() for _ in range(500)]
    assert sent == [b.frame() for _ in range(500)]
    assert all(f.endswith(b"\x00") and f.count(0) >= 1 for f in sent)
