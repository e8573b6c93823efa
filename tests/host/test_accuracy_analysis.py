"""pumpctl.accuracy, the IEC 60601-2-24 analysis, against oracles computed
by hand (no pump, no emulator): a steady flow, a flow 10 % short, one
missing stroke, the stroke quantisation of an implant rate, the start-up
period left out; then the JSON against its schema, the table, the plots and
the report; and the units the command reads (docs/accuracy.md)."""
import bisect
import json
from fractions import Fraction

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from pumpctl import accuracy as acc
from pumpctl import paths
from pumpctl import units as u

S = acc.SAMPLE_S
DAY = 86400


def linear(nl_per_sample, n):
    """Cumulative volume of a flow of exactly `nl_per_sample` every sample interval."""
    return [nl_per_sample * i for i in range(n + 1)]


def strokes_at(times_s, n, stroke_nl=500):
    """Cumulative (volume, strokes) at each 30-s sample of strokes completed at `times_s`."""
    times = sorted(times_s)
    cnt = [bisect.bisect_right(times, i * S) for i in range(n + 1)]
    return [k * stroke_nl for k in cnt], cnt


def windows(a):
    return {w.window_s: w for w in a.windows}


# -- A and the trumpet, by hand ---------------------------------------------------------------
def test_a_perfectly_steady_flow_is_0_percent_in_every_window():
    # 500 nL every 30 s is 1.44 mL/day, delivered exactly at every sample: every window is exact.
    n = 2 * 120  # 2 h of samples
    a = acc.analyse(acc.Samples(1_440_000, linear(500, n), list(range(n + 1))), acc.WINDOWS_S[:6])
    assert a.overall_pct == 0 and a.mean_nl_day == 1_440_000 and a.delivered_nl == a.expected_nl == 120_000
    for w in a.windows:
        assert (w.max_pct, w.min_pct) == (0, 0), w
        assert w.windows == n - w.window_s // S + 1  # sliding by one sample: 237 windows of 2 min in 2 h
        assert w.strokes_min == w.strokes_max == w.strokes_expected == w.window_s // S
    assert windows(a)[120].windows == 237


def test_a_flow_10_percent_short_is_minus_10_percent_overall_and_in_every_window():
    n = 24 * 120
    a = acc.analyse(acc.Samples(1_440_000, linear(450, n), list(range(n + 1))))
    assert a.overall_pct == -10
    assert all(w.max_pct == w.min_pct == -10 for w in a.windows)
    assert windows(a)[DAY].windows == 1  # the 24-h window is the whole analysis period: A itself


def test_one_missing_stroke_shows_in_each_window_by_its_share_of_the_window():
    # One stroke every 30 s, the one due at 60 min never comes. A window of P
    # minutes holds 2P strokes, so the one missing is 100/(2P) % of it:
    # 2 min: 1500 nL instead of 2000, -25 %; 5 min: -10 %; 11 min: -1/22 =
    # -4.545 %; 1 h: -1/120 = -0.833 %; over the 2 h analysed, A = -1/240.
    n = 240
    vol = [500 * i - (500 if i >= 120 else 0) for i in range(n + 1)]
    a = acc.analyse(acc.Samples(1_440_000, vol, [v // 500 for v in vol]), (120, 300, 660, 3600))
    w = windows(a)
    assert w[120].min_pct == Fraction(-25) and w[120].max_pct == 0
    assert w[300].min_pct == Fraction(-10)
    assert w[660].min_pct == Fraction(-100, 22)
    assert w[3600].min_pct == Fraction(-100, 120)
    assert a.overall_pct == Fraction(-100, 240)
    assert (w[120].strokes_min, w[120].strokes_max) == (3, 4)


def test_at_1_ml_a_day_a_2_minute_window_holds_2_or_3_strokes_plus_8_and_minus_28_percent():
    # 1 mL/day of 500 nL strokes: one every 43.2 s, 2.78 per 2-min window.
    # 3 strokes in a window: 1500 nL against 1388.9 nL set, +8 %; 2: 1000 nL, -28 %.
    n = 24 * 120
    times = [Fraction(432, 10) * m for m in range(1, 2001)]
    vol, cnt = strokes_at(times, n)
    a = acc.analyse(acc.Samples(1_000_000, vol, cnt))
    w = windows(a)[120]
    assert (w.max_pct, w.min_pct) == (8, -28)
    assert (w.strokes_min, w.strokes_max) == (2, 3) and w.strokes_expected == Fraction(1_000_000 * 120, DAY * 500)
    assert w.few_strokes and windows(a)[300].few_strokes and not windows(a)[660].few_strokes
    assert [x.window_s for x in a.few_stroke_windows] == [120, 300]
    assert a.overall_pct == 0 and a.strokes == 2000  # the 2000th stroke falls at 86400 s, the last sample


def test_the_start_up_period_is_not_analysed():
    # The first hour delivers nothing (e.g. a catheter filling); then the set rate exactly.
    start = 120
    vol = [0] * start + [500 * i for i in range(24 * 120 + 1)]
    a = acc.analyse(acc.Samples(1_440_000, vol, [v // 500 for v in vol], start=start))
    assert a.overall_pct == 0 and a.stabilise_s == 3600 and a.duration_s == DAY
    assert all(w.max_pct == w.min_pct == 0 for w in a.windows)
    whole = acc.analyse(acc.Samples(1_440_000, vol, [v // 500 for v in vol]), (3600,))
    assert whole.windows[0].min_pct == -100  # analysed from the start, the empty hour is a -100 % window


def test_a_window_longer_than_the_analysis_period_has_no_figures():
    a = acc.analyse(acc.Samples(1_440_000, linear(500, 240), list(range(241))))
    w = windows(a)
    assert w[21600].windows == 0 and w[21600].max_pct is None and w[21600].strokes_min is None
    row = next(r for r in acc.window_rows(a) if r[0] == "6 h")
    assert row[2:4] == ["-", "-"] and "longer than the 2 h analysed" in row[-1]


def test_volumes_as_floats_from_the_fluid_model_are_analysed_exactly():
    a = acc.analyse(acc.Samples(1_440_000, [450.5 * i for i in range(241)], list(range(241))), (120,))
    assert a.overall_pct == Fraction(-99, 10) and a.windows[0].max_pct == Fraction(-99, 10)


@pytest.mark.parametrize("kw,needle", [
    ({"set_nl_day": 0}, "positive"),
    ({"strokes": [0, 1]}, "stroke counts"),
    ({"start": 240}, "at least two samples"),
    ({"source": "guess"}, "unknown source"),
])
def test_samples_it_cannot_use_are_refused(kw, needle):
    base = {"set_nl_day": 1_440_000, "volumes_nl": linear(500, 240), "strokes": list(range(241))}
    with pytest.raises(acc.AccuracyError, match=needle):
        acc.Samples(**dict(base, **kw))


def test_a_window_off_the_sample_grid_is_refused():
    with pytest.raises(acc.AccuracyError, match="whole number of 30-s"):
        acc.analyse(acc.Samples(1_440_000, linear(500, 240), list(range(241))), (45,))


# -- what it shows ---------------------------------------------------------------------------
def _implant_rate():
    n = 24 * 120
    vol, cnt = strokes_at([Fraction(432, 10) * m for m in range(1, 2001)], n)
    return acc.Samples(1_000_000, vol, cnt)


def test_the_json_follows_its_schema():
    schemas = {f.name: json.loads(f.read_text()) for f in (paths.ROOT / "host_tools/pumpctl/schemas").glob("*.json")}
    reg = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
    a = acc.analyse(_implant_rate())
    rate = dict(acc.to_json(a), plots={"trumpet": "t.png", "flow": "f.png"}, pump_state="delivering", alarms=[])
    doc = {"standard": "IEC 60601-2-24", "sample_s": 30, "windows_s": list(acc.WINDOWS_S), "few_strokes": 10,
           "stroke_error": {"bias_ppm": -100000, "noise_ppm": None, "drift_ppm_per_day": None, "seed": None},
           "fluid_params": None, "rates": [rate], "report": "accuracy.html", "json": "accuracy.json"}
    v = Draft202012Validator(schemas["accuracy.schema.json"], registry=reg)
    assert [e.message for e in v.iter_errors(doc)] == []
    assert rate["windows"][0] == {"window_s": 120, "windows": 2877, "max_pct": 8.0, "min_pct": -28.0,
                                  "strokes_expected": 2.78, "strokes_min": 2, "strokes_max": 3, "few_strokes": True}


def test_the_table_gives_stroke_counts_beside_percentages_and_flags_few_strokes():
    a = acc.analyse(_implant_rate())
    rows = acc.window_rows(a)
    assert rows[0] == ["2 min", "2877", "+8.00 %", "-28.00 %", "2-3 (2.8 expected)", "36.0 %",
                       "< 10 strokes: quantised"]
    assert [r[0] for r in rows] == ["2 min", "5 min", "11 min", "19 min", "31 min", "1 h", "6 h", "24 h"]
    assert rows[-1][:5] == ["24 h", "1", "0.00 %", "0.00 %", "2000 (2000 expected)"] and rows[-1][-1] == ""
    text = acc.render_text(a)
    assert "windows of 2 min and 5 min hold fewer than 10 strokes" in text
    assert "one 0.5 µL stroke every 43.2 s" in text
    assert "0.00 % (mean 1.0000 mL/day over 24 h from the start)" in text


def test_a_result_from_strokes_says_it_is_not_the_true_volume():
    s = _implant_rate()
    a = acc.analyse(acc.Samples(s.set_nl_day, s.volumes_nl, s.strokes, source=acc.SOURCE_STROKES))
    assert "NOT the true volume" in acc.render_text(a)
    assert acc.to_json(a)["source"] == "strokes"


def test_plots_and_a_self_contained_report(tmp_path):
    s = _implant_rate()
    r = acc.RateResult(s, acc.analyse(s), {})
    written = acc.write_plots(r, tmp_path)
    for key in ("trumpet", "flow"):
        assert open(written[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert written["trumpet"].endswith("trumpet-1mL-day.png")
    page = acc.write_html([r], [["stroke bias", "-10.00 %"]], tmp_path / "a.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    assert "http" not in page.replace("https://", "")  # nothing fetched
    assert "2-3 (2.8 expected)" in page and "-28.00 %" in page


# -- the units it reads ----------------------------------------------------------------------
@pytest.mark.parametrize("text,nl", [("1mL/day", 1_000_000), ("0.048mL/day", 48_000), ("24 mL/day", 24_000_000),
                                     ("40uL/h", 960_000), ("1mL/d", 1_000_000)])
def test_volume_rate(text, nl):
    assert u.volume_rate_nl_day(text) == nl


@pytest.mark.parametrize("text,ppm", [("-10%", -100_000), ("+2.5%", 25_000), ("0%", 0), ("10 %", 100_000),
                                      ("0.0001%", 1)])
def test_signed_percent(text, ppm):
    assert u.percent_ppm(text, signed=True) == ppm


@pytest.mark.parametrize("fn,text,needle", [
    (lambda t: u.volume_rate_nl_day(t), "1mg/day", "unknown unit"),
    (lambda t: u.volume_rate_nl_day(t), "1mL", "form 1mL/day"),
    (lambda t: u.percent_ppm(t), "-2%", "negative"),
    (lambda t: u.percent_ppm(t, signed=True), "10", "not a percentage"),
    (lambda t: u.percent_ppm(t, signed=True), "0.00001%", "finer than"),
])
def test_unit_refusals_say_why(fn, text, needle):
    with pytest.raises(u.UnitError, match=needle):
        fn(text)


def test_formats():
    assert u.fmt_pct(Fraction(-10), 2) == "-10.00 %" and u.fmt_pct(8) == "+8.0 %"
    assert u.fmt_rate_volume(48_000) == "0.048 mL/day" and u.fmt_rate_volume(1_234_567) == "1.234567 mL/day"


# -- the sampler, against a stand-in bench (the emulator's own run: tests/e2e/test_accuracy_on_emulator.py) ----
class FakeBench:
    """A bench port whose pump delivers one 450-nL stroke every 30 s and
    stops (internal fault) after `stop_after` samples; `fluid` False: an
    emulator without the fluid model."""

    def __init__(self, fluid=True, stop_after=None):
        self.fluid, self.stop_after, self.n, self.calls = fluid, stop_after, 0, []

    def status(self):
        stopped = self.stop_after is not None and self.n >= self.stop_after
        return {"state": "stopped" if stopped else "delivering", "alarms": ["internal fault"] if stopped else [],
                "strokes": self.n, "stroke_nl": 500, "remaining_nl": 20_000_000}

    def call(self, cmd, **kw):
        from pumpctl.bench import BenchError
        self.calls.append(cmd)
        if cmd == "fluid":
            if not self.fluid:
                raise BenchError('bench: unknown command "fluid" (commands: advance, status, strokes)')
            return {"delivered_nl": 450 * self.n, "params": {"bias_ppm": -100_000}, "faults": {}}
        if cmd == "advance":
            assert kw == {"ms": 30_000}
            self.n += 1
        return self.status() if cmd in ("status", "advance") else {}


def test_the_sampler_reads_the_true_volume_every_30_s():
    from pumpctl import accuracyrun
    b = FakeBench()
    s, info = accuracyrun._run(b, 1_440_000, 3600, 7200, accuracyrun.StrokeError(), S, None)
    assert len(s.volumes_nl) == 361 and s.start == 120 and s.source == acc.SOURCE_FLUID
    assert s.volumes_nl[:3] == [0, 450, 900] and s.strokes[:3] == [0, 1, 2]
    assert acc.analyse(s).overall_pct == -10 and info["fluid_params"] == {"bias_ppm": -100_000}
    assert b.calls.count("advance") == 360 and "stroke_error" not in b.calls


def test_without_the_fluid_model_the_sampler_counts_strokes_and_says_so():
    from pumpctl import accuracyrun
    s, info = accuracyrun._run(FakeBench(fluid=False), 1_440_000, 0, 3600, accuracyrun.StrokeError(), S, None)
    assert s.source == acc.SOURCE_STROKES and s.volumes_nl[:3] == [0, 500, 1000] and info["fluid_params"] is None
    from pumpctl.console import UsageError
    with pytest.raises(UsageError, match="this emulator has none"):
        accuracyrun._run(FakeBench(fluid=False), 1_440_000, 0, 3600, accuracyrun.StrokeError(bias_ppm=-1), S, None)


def test_a_pump_that_stops_during_the_test_gives_no_figures():
    from pumpctl import accuracyrun
    from pumpctl.emulator import EmulatorError
    with pytest.raises(EmulatorError, match="stopped delivering 5 min into the test .*internal fault"):
        accuracyrun._run(FakeBench(stop_after=10), 1_440_000, 0, 3600, accuracyrun.StrokeError(), S, None)
