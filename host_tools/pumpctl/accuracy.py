"""Flow-rate accuracy as IEC 60601-2-24 measures it: the overall flow-rate
error A and the trumpet curve (the largest and smallest mean flow over every
observation window of a given length, against the set rate), computed from
samples of the cumulative delivered volume. docs/accuracy.md gives the
protocol as implemented and how to read the figures.

Pure: no pump and no emulator here (pumpctl.accuracyrun takes the samples
from one), so every figure can be checked against a hand-computed oracle
(tests/host/test_accuracy_analysis.py). Then the same result as JSON, as the terminal
table (console.table), as PNG plots and as one self-contained HTML report.

The arithmetic is exact (integers and Fractions): a window's mean flow is
(V[j+k] - V[j]) / (k * sample_s), V the cumulative volume at each sample,
and its deviation 100 * (mean flow - set rate) / set rate."""
from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

from pumpctl import units as u
from pumpctl.fw import limits

SAMPLE_S = 30  # the standard's sample interval
STABILISE_S = 3600  # its start-up (stabilisation) period: the first hour, not analysed
ANALYSIS_S = 86400  # analysed here: 24 h (the standard's 1 h holds too few strokes at implant rates)
# Observation windows: the standard's 2, 5, 11, 19 and 31 min, then 1 h, 6 h and 24 h.
WINDOWS_S = (120, 300, 660, 1140, 1860, 3600, 21600, 86400)
FEW_STROKES = 10  # a window holding fewer strokes than this measures the stroke size, not the flow
# The rates tested (the standard asks for an intermediate rate and the minimum of the pump's range):
INTERMEDIATE_NL_DAY = 1_000_000  # 1 mL/day: the middle of the clinical range, one 0.5 uL stroke every 43.2 s
MINIMUM_NL_DAY = limits.RATE_MIN_NL_DAY  # 0.048 mL/day: one stroke every 15 min
SOURCE_FLUID, SOURCE_STROKES = "fluid", "strokes"
SOURCE_TEXT = {
    SOURCE_FLUID: "true delivered volume (the emulator's fluid model: what reached the intrathecal space)",
    SOURCE_STROKES: "NOT the true volume: completed strokes x the nominal stroke volume (this emulator has no fluid "
                    "model), so only the timing of the strokes is measured, never their size",
}


class AccuracyError(ValueError):
    """Samples or options the analysis cannot use; the message says why."""


@dataclass(frozen=True)
class Samples:
    """The cumulative delivered volume (nL) and completed strokes at
    t = i * sample_s, i = 0..n, from the start of the run; samples from
    index `start` on are analysed (before it: the start-up period)."""
    set_nl_day: int
    volumes_nl: Sequence[int | float | Fraction]
    strokes: Sequence[int]
    sample_s: int = SAMPLE_S
    stroke_nl: int = 500
    start: int = 0
    source: str = SOURCE_FLUID

    def __post_init__(self) -> None:
        if type(self.set_nl_day) is not int or self.set_nl_day <= 0:
            raise AccuracyError("set rate %r nL/day: a positive whole number" % (self.set_nl_day,))
        if len(self.volumes_nl) != len(self.strokes):
            raise AccuracyError("%d volume samples but %d stroke counts" % (len(self.volumes_nl), len(self.strokes)))
        if not 0 <= self.start <= len(self.volumes_nl) - 2:
            raise AccuracyError("the analysis needs at least two samples after the start-up period (%d samples, "
                                "start-up %d)" % (len(self.volumes_nl), self.start))
        if self.sample_s <= 0 or self.stroke_nl <= 0:
            raise AccuracyError("sample interval and stroke volume must be positive")
        if self.source not in SOURCE_TEXT:
            raise AccuracyError("unknown source %r" % self.source)

    @property
    def intervals(self) -> int:
        """Sample intervals in the analysis period."""
        return len(self.volumes_nl) - 1 - self.start


@dataclass(frozen=True)
class Window:
    """One observation window length P of the trumpet curve."""
    window_s: int
    windows: int  # how many windows of this length (sliding by one sample); 0: longer than the analysis period
    max_pct: Fraction | None  # E_P(max): the largest deviation of a window's mean flow from the set rate, %
    min_pct: Fraction | None  # E_P(min): the smallest
    strokes_expected: Fraction  # set rate x P / nominal stroke volume
    strokes_min: int | None  # fewest completed strokes in one window
    strokes_max: int | None  # most

    @property
    def few_strokes(self) -> bool:
        held = self.strokes_min if self.strokes_min is not None else self.strokes_expected
        return held < FEW_STROKES


@dataclass(frozen=True)
class Analysis:
    set_nl_day: int
    sample_s: int
    stabilise_s: int  # the start-up period before the analysis
    duration_s: int  # the analysis period
    delivered_nl: Fraction  # over the analysis period
    expected_nl: Fraction  # set rate x analysis period
    strokes: int  # completed in the analysis period
    overall_pct: Fraction  # A: 100 * (mean flow - set rate) / set rate over the analysis period
    mean_nl_day: Fraction
    windows: tuple[Window, ...]
    stroke_nl: int
    source: str

    @property
    def few_stroke_windows(self) -> list[Window]:
        return [w for w in self.windows if w.windows and w.few_strokes]


def _pct(volume: Fraction | int, span_s: int, set_nl_day: int) -> Fraction:
    """Deviation (%) of the mean flow `volume` over `span_s` from the set rate."""
    expected = Fraction(set_nl_day * span_s, u.S_PER_DAY)
    return 100 * (Fraction(volume) - expected) / expected


def analyse(s: Samples, windows_s: Sequence[int] = WINDOWS_S) -> Analysis:
    """A and the trumpet curve of the analysis period of `s` (exact)."""
    vol = [v if isinstance(v, (int, Fraction)) else Fraction(v) for v in s.volumes_nl[s.start:]]
    cnt = list(s.strokes[s.start:])
    n = len(vol) - 1
    span = n * s.sample_s
    rows = []
    for w in windows_s:
        if w <= 0 or w % s.sample_s:
            raise AccuracyError("observation window %s is not a whole number of %d-s sample intervals"
                                % (u.fmt_duration(w), s.sample_s))
        k = w // s.sample_s
        expected = Fraction(s.set_nl_day * w, u.S_PER_DAY * s.stroke_nl)
        if k > n:
            rows.append(Window(w, 0, None, None, expected, None, None))
            continue
        # All windows of one length share a denominator: the extremes of the
        # mean flow are the extremes of the volume delivered in the window.
        dv = [vol[j + k] - vol[j] for j in range(n - k + 1)]
        dc = [cnt[j + k] - cnt[j] for j in range(n - k + 1)]
        rows.append(Window(w, len(dv), _pct(max(dv), w, s.set_nl_day), _pct(min(dv), w, s.set_nl_day), expected,
                           min(dc), max(dc)))
    delivered = Fraction(vol[-1] - vol[0])
    return Analysis(set_nl_day=s.set_nl_day, sample_s=s.sample_s, stabilise_s=s.start * s.sample_s, duration_s=span,
                    delivered_nl=delivered, expected_nl=Fraction(s.set_nl_day * span, u.S_PER_DAY),
                    strokes=cnt[-1] - cnt[0], overall_pct=_pct(delivered, span, s.set_nl_day),
                    mean_nl_day=delivered * u.S_PER_DAY / span, windows=tuple(rows), stroke_nl=s.stroke_nl,
                    source=s.source)


# -- JSON ----------------------------------------------------------------------------------
def _num(x: Fraction | None, places: int = 4) -> float | None:
    return None if x is None else round(float(x), places)


def to_json(a: Analysis) -> dict[str, Any]:
    """One rate's figures, labelled, units in the key names (accuracy.schema.json)."""
    return {
        "set_nl_day": a.set_nl_day, "source": a.source, "stabilise_s": a.stabilise_s, "analysis_s": a.duration_s,
        "sample_s": a.sample_s, "overall_error_pct": _num(a.overall_pct), "mean_nl_day": _num(a.mean_nl_day, 1),
        "delivered_nl": _num(a.delivered_nl, 1), "expected_nl": _num(a.expected_nl, 1), "strokes": a.strokes,
        "stroke_nl": a.stroke_nl,
        "windows": [{"window_s": w.window_s, "windows": w.windows, "max_pct": _num(w.max_pct),
                     "min_pct": _num(w.min_pct), "strokes_expected": _num(w.strokes_expected, 2),
                     "strokes_min": w.strokes_min, "strokes_max": w.strokes_max,
                     "few_strokes": bool(w.windows and w.few_strokes)} for w in a.windows],
    }


# -- text ----------------------------------------------------------------------------------
PCT_PLACES = 2
TABLE_HEADERS = ["window", "windows", "max", "min", "strokes per window", "1 stroke", "note"]


def window_label(window_s: int) -> str:
    return u.fmt_duration(window_s) if window_s < 3600 or window_s % 3600 else "%d h" % (window_s // 3600)


def strokes_text(w: Window) -> str:
    exp = u.decimal_text(w.strokes_expected, 1)
    if w.strokes_min is None:
        return "(%s expected)" % exp
    held = str(w.strokes_min) if w.strokes_min == w.strokes_max else "%d-%d" % (w.strokes_min, w.strokes_max)
    return "%s (%s expected)" % (held, exp)


def stroke_share_text(w: Window) -> str:
    """What one stroke more or fewer does to a window's mean flow: the trumpet's step."""
    return "%s %%" % u.decimal_text(100 / w.strokes_expected, 1, strip=False)


def window_rows(a: Analysis) -> list[list[str]]:
    rows = []
    for w in a.windows:
        if not w.windows:
            rows.append([window_label(w.window_s), "0", "-", "-", strokes_text(w), stroke_share_text(w),
                         "longer than the %s analysed" % u.fmt_duration(a.duration_s)])
            continue
        note = "< %d strokes: quantised" % FEW_STROKES if w.few_strokes else ""
        rows.append([window_label(w.window_s), str(w.windows), u.fmt_pct(w.max_pct, PCT_PLACES),
                     u.fmt_pct(w.min_pct, PCT_PLACES), strokes_text(w), stroke_share_text(w), note])
    return rows


def summary_rows(a: Analysis) -> list[list[str]]:
    return [
        ["set rate", u.fmt_rate_volume(a.set_nl_day)],
        ["overall flow-rate error A", "%s (mean %s over %s %s)" % (
            u.fmt_pct(a.overall_pct, PCT_PLACES), u.fmt_volume(a.mean_nl_day, 4) + "/day",
            u.fmt_duration(a.duration_s), "after a %s start-up" % u.fmt_duration(a.stabilise_s)
            if a.stabilise_s else "from the start")],
        ["delivered", "%s (%s at the set rate; %d strokes of nominal %s)" % (
            u.fmt_pump_value(round(a.delivered_nl), "nL"), u.fmt_pump_value(round(a.expected_nl), "nL"), a.strokes,
            u.fmt_pump_value(a.stroke_nl, "nL"))],
        ["volume measured", SOURCE_TEXT[a.source]],
    ]


def notes(a: Analysis) -> list[str]:
    out = []
    few = a.few_stroke_windows
    if few:
        names = [window_label(w.window_s) for w in few]
        out.append("%s hold%s fewer than %d strokes (one %s stroke every %s at this rate): a window's extremes "
                   "there are whole strokes more or fewer than the set rate calls for (the column \"1 stroke\"), "
                   "the mechanism's quantisation rather than a flow error; read A and the longer windows" % (
                       "windows of " + (" and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and "
                                        + names[-1]), "s" if len(names) == 1 else "", FEW_STROKES,
                       u.fmt_pump_value(a.stroke_nl, "nL"), stroke_interval_text(a)))
    if a.source != SOURCE_FLUID:
        out.append("volume: " + SOURCE_TEXT[a.source])
    return out


def stroke_interval_text(a: Analysis) -> str:
    s = Fraction(a.stroke_nl * u.S_PER_DAY, a.set_nl_day)
    return "%s s" % u.decimal_text(s, 1) if s < 120 else u.fmt_duration(round(s))


def render_text(a: Analysis) -> str:
    from pumpctl.console import table
    lines = [table(summary_rows(a)), "", "Trumpet curve (deviation of the mean flow in a window from the set rate, "
             "largest and smallest over every window of that length):", table(window_rows(a), TABLE_HEADERS)]
    lines += ["note: %s" % n for n in notes(a)]
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------------
def rate_slug(nl_day: int) -> str:
    """A file-name part for a rate: 1mL-day, 0.048mL-day."""
    return "%smL-day" % u.ml_number(nl_day)


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def trumpet_png(a: Analysis, title: str = "") -> bytes:
    """The trumpet curve: E_P(max) and E_P(min) against the window length P
    (log scale), A as a dashed line, windows with few strokes shaded."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator
    ws = [w for w in a.windows if w.windows]
    x = [w.window_s / 60 for w in ws]
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    few = [w.window_s / 60 for w in ws if w.few_strokes]
    if few:
        ax.axvspan(min(x) / 1.3, max(few) * 1.15, color="#f3e6c4", zorder=0,
                   label="< %d strokes per window" % FEW_STROKES)
    ax.axhline(0, color="#666", linewidth=0.8)
    ax.axhline(float(a.overall_pct), color="#2c6fbb", linestyle="--", linewidth=1.2,
               label="A = %s" % u.fmt_pct(a.overall_pct, PCT_PLACES))
    ax.plot(x, [float(w.max_pct) for w in ws if w.max_pct is not None], "^-", color="#c0392b", label="E max")
    ax.plot(x, [float(w.min_pct) for w in ws if w.min_pct is not None], "v-", color="#27ae60", label="E min")
    ax.xaxis.set_major_locator(FixedLocator(x))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([window_label(w.window_s).replace(" ", "\u00a0") for w in ws], fontsize=8)
    ax.set_xlim(min(x) / 1.3, max(x) * 1.3)
    ax.set_xlabel("observation window P")
    ax.set_ylabel("deviation from the set rate (%)")
    ax.grid(True, color="#ddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.set_title(title or "Trumpet curve at %s" % u.fmt_rate_volume(a.set_nl_day), loc="left", fontsize=10)
    return _png(fig)


def flow_png(s: Samples, title: str = "") -> bytes:
    """The whole run, start-up included: the mean flow over the last hour
    (mL/day) and the delivered volume minus the set volume (µL), by hour."""
    from matplotlib.figure import Figure
    vol = [float(v) for v in s.volumes_nl]
    hours = [i * s.sample_s / 3600 for i in range(len(vol))]
    k = max(1, 3600 // s.sample_s)
    fig = Figure(figsize=(8, 4.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    if len(vol) > k:
        top.plot(hours[k:], [(vol[i] - vol[i - k]) * u.S_PER_DAY / 3600 / u.NL_PER_ML for i in range(k, len(vol))],
                 color="#2c6fbb", linewidth=1, label="mean flow over the last hour")
    top.axhline(s.set_nl_day / u.NL_PER_ML, color="#666", linestyle="--", linewidth=1, label="set rate")
    top.set_ylabel("mL/day")
    lo, hi = top.get_ylim()
    top.set_ylim(min(lo, 0.8 * s.set_nl_day / u.NL_PER_ML), max(hi, 1.2 * s.set_nl_day / u.NL_PER_ML))
    top.legend(fontsize=8, loc="upper right", frameon=False, ncols=2)
    bottom.plot(hours, [(vol[i] - vol[0] - s.set_nl_day * i * s.sample_s / u.S_PER_DAY) / 1000
                        for i in range(len(vol))], color="#c0392b", linewidth=1)
    bottom.axhline(0, color="#666", linewidth=0.8)
    bottom.set_ylabel("delivered - set (µL)")
    bottom.set_xlabel("hours from the start of delivery")
    for ax in (top, bottom):
        if s.start:
            ax.axvspan(0, hours[s.start], color="#eee", zorder=0)
        ax.grid(True, color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
    top.set_title(title or "Flow at %s (start-up period shaded)" % u.fmt_rate_volume(s.set_nl_day), loc="left",
                  fontsize=10)
    return _png(fig)


# -- the HTML report -----------------------------------------------------------------------
@dataclass
class RateResult:
    """One rate's run: its samples, the analysis, the emulator's own figures and the plots."""
    samples: Samples
    analysis: Analysis
    pump: dict[str, Any]  # what the emulator said: fluid-model parameters, final state and alarms
    trumpet: bytes = b""
    flow: bytes = b""


def write_plots(r: RateResult, out: Path) -> dict[str, str]:
    """The two PNGs of one rate into `out`; their paths."""
    slug = rate_slug(r.analysis.set_nl_day)
    r.trumpet, r.flow = trumpet_png(r.analysis), flow_png(r.samples)
    paths = {"trumpet": out / ("trumpet-%s.png" % slug), "flow": out / ("flow-%s.png" % slug)}
    paths["trumpet"].write_bytes(r.trumpet)
    paths["flow"].write_bytes(r.flow)
    return {k: str(v) for k, v in paths.items()}


def html_document(results: Sequence[RateResult], setup_rows: Sequence[Sequence[str]], title: str) -> str:
    """The report as one self-contained HTML page (plots embedded), in the visit report's style."""
    from pumpctl.visit import _CSS, _html_table
    e = html.escape

    def img(data: bytes, alt: str) -> str:
        return '<img alt="%s" src="data:image/png;base64,%s">' % (e(alt), base64.b64encode(data).decode("ascii"))

    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">', "<title>%s</title>" % e(title),
             "<style>%s</style></head><body>" % _CSS, "<h1>%s</h1>" % e(title),
             '<p class="sub">IEC 60601-2-24 method (overall flow-rate error and trumpet curve), adapted to an '
             "implanted pump's rates: docs/accuracy.md</p>",
             "<h2>Test set-up</h2>", _html_table(None, [list(r) for r in setup_rows])]
    for r in results:
        a = r.analysis
        parts.append("<h2>%s</h2>" % e(u.fmt_rate_volume(a.set_nl_day)))
        parts.append(_html_table(None, summary_rows(a)))
        parts.append(_html_table(TABLE_HEADERS, window_rows(a), numeric={1, 2, 3},
                                 row_class=["changed" if w.windows and w.few_strokes else "" for w in a.windows]))
        ns = notes(a)
        if ns:
            parts.append('<div class="attn"><ul>%s</ul></div>' % "".join("<li>%s</li>" % e(n) for n in ns))
        parts.append(img(r.trumpet or trumpet_png(a), "trumpet curve at %s" % u.fmt_rate_volume(a.set_nl_day)))
        parts.append(img(r.flow or flow_png(r.samples), "flow over the run at %s" % u.fmt_rate_volume(a.set_nl_day)))
    parts.append('<p class="foot">Rows shaded: windows holding fewer than %d strokes. A window\'s deviation is its '
                 "mean flow against the set rate; A is the mean flow over the whole analysis period against the set "
                 "rate. Generated by pumpctl for a teaching and research device, not a medical device.</p>"
                 % FEW_STROKES)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(results: Sequence[RateResult], setup_rows: Sequence[Sequence[str]], path: str | os.PathLike[str],
               title: str = "Flow-rate accuracy") -> Path:
    path = Path(path)
    path.write_text(html_document(results, setup_rows, title), encoding="utf-8")
    return path
