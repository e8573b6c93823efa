"""`pumpctl accuracy`: the IEC 60601-2-24 flow-rate accuracy test on a fresh
virtual-time emulator (docs/accuracy.md): the overall flow-rate error and the
trumpet curve at each rate, as a table, JSON, PNG plots and an HTML report."""
import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

from pumpctl import units as u
from pumpctl.console import EXIT_OK, UsageError, emit, note

NOISE_MAX_PPM = 200_000  # the fluid model's stroke_error ranges (bench port)
BIAS_MAX_PPM = 500_000
DRIFT_MAX_PPM = 20_000
HOURS_MAX = 24 * 30


def _hours(text):
    try:
        h = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r: a whole number of hours, e.g. 24" % text)
    if not 1 <= h <= HOURS_MAX:
        raise argparse.ArgumentTypeError("%d: from 1 to %d hours" % (h, HOURS_MAX))
    return h


def _seed(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r: a whole number" % text)


def stroke_error(args):
    """The stroke-error options as the fluid model's arguments (ppm)."""
    from pumpctl.accuracyrun import StrokeError
    bias = noise = drift = None
    if args.stroke_bias is not None:
        bias = u.percent_ppm(args.stroke_bias, "--stroke-bias", signed=True)
        if abs(bias) > BIAS_MAX_PPM:
            raise u.UnitError("--stroke-bias %s: from -50%% to +50%%" % args.stroke_bias)
    if args.noise is not None:
        noise = u.percent_ppm(args.noise, "--noise")
        if noise > NOISE_MAX_PPM:
            raise u.UnitError("--noise %s: at most 20%% per stroke" % args.noise)
    if args.drift is not None:
        text = args.drift.strip()
        if not text.endswith("/day"):
            raise u.UnitError("--drift %r: a percentage a day, e.g. -1%%/day" % args.drift)
        drift = u.percent_ppm(text[:-4], "--drift", signed=True)
        if abs(drift) > DRIFT_MAX_PPM:
            raise u.UnitError("--drift %s: from -2%%/day to +2%%/day" % args.drift)
    if args.seed is not None and args.seed < 0:
        raise u.UnitError("--seed %d: a whole number from 0" % args.seed)
    return StrokeError(bias_ppm=bias, noise_ppm=noise, drift_ppm_per_day=drift, seed=args.seed)


def setup_rows(err, stabilise_s, analysis_s, info):
    from pumpctl import accuracy as acc
    from pumpctl.accuracyrun import TEST_CONC_NG_ML, TEST_DRUG
    params = info.get("fluid_params")

    def pct(ppm):
        return u.fmt_pct(Fraction(ppm, 10_000), 2)

    def model(name, text):
        given = getattr(err, name)
        if params is None:
            return "none (this emulator has no fluid model)"
        value = params.get(name, given)
        return "%s (%s)" % (text(value), "set" if given is not None else "the model's default")

    rows = [["protocol", "start-up %s (not analysed), then %s analysed; delivered volume sampled every %d s" % (
                u.fmt_duration(stabilise_s), u.fmt_duration(analysis_s), acc.SAMPLE_S)],
            ["observation windows", ", ".join(acc.window_label(w) for w in acc.WINDOWS_S)],
            ["pump", "emulated, fresh, virtual time; nominal stroke %s" % u.fmt_pump_value(info["stroke_nl"], "nL")],
            ["test solution", "%s %s (only so the pump runs the rate: the test measures volume)" % (
                TEST_DRUG, u.fmt_conc(TEST_CONC_NG_ML, "mg"))],
            ["stroke bias", model("bias_ppm", pct)],
            ["stroke noise", model("noise_ppm", lambda v: "%s SD per stroke" % pct(v).lstrip("+"))],
            ["stroke drift", model("drift_ppm_per_day", lambda v: "%s a day" % pct(v))],
            ["noise seed", model("seed", str)]]
    if params is not None:
        if "fill_ppm" in params:
            rows.append(["fill-level effect", "%s full reservoir to %s empty (the model's)" % (
                pct(params["fill_ppm"]), pct(-params["fill_ppm"]))])
        if "temp_dc" in params:
            rows.append(["temperature", "%s °C" % u.decimal_text(Fraction(params["temp_dc"], 10), 1, strip=False)])
    return rows


def _slugs(names):
    from pumpctl import report
    return [report.alarm_slug(report.alarm_lookup(a)) if report.alarm_lookup(a) is not None else a for a in names]


STABILISE_MAX_S = 24 * 3600


def cmd_accuracy(args):
    from pumpctl import accuracy as acc
    from pumpctl import accuracyrun
    rates = [u.volume_rate_nl_day(r, "--rate") for r in args.rate] if args.rate else [
        acc.INTERMEDIATE_NL_DAY, acc.MINIMUM_NL_DAY]
    for r in rates:
        accuracyrun.check_rate(r)
    if len(set(rates)) != len(rates):
        raise UsageError("--rate: each rate once")
    stabilise_s = u.duration_s(args.stabilise, "--stabilise")
    if stabilise_s % acc.SAMPLE_S:
        raise u.UnitError("--stabilise %s: a whole number of %d-s samples" % (args.stabilise, acc.SAMPLE_S))
    if stabilise_s > STABILISE_MAX_S:
        raise u.UnitError("--stabilise %s: at most %s (the standard's start-up period is 1 h)" % (
            args.stabilise, u.fmt_duration(STABILISE_MAX_S)))
    analysis_s = args.hours * 3600
    err = stroke_error(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, rates_json, info = [], [], {}
    for nl_day in rates:
        if not args.json:
            note("accuracy: %s for %s of virtual time on a fresh emulated pump..." % (
                u.fmt_rate_volume(nl_day), u.fmt_duration(stabilise_s + analysis_s)))
        samples, info = accuracyrun.sample(nl_day, stabilise_s, analysis_s, err)
        r = acc.RateResult(samples, acc.analyse(samples), info)
        plots = acc.write_plots(r, out)
        results.append(r)
        rates_json.append(dict(acc.to_json(r.analysis), plots=plots, pump_state=info["state"],
                               alarms=_slugs(info["alarms"])))
    rows = setup_rows(err, stabilise_s, analysis_s, info)
    report = acc.write_html(results, rows, out / "accuracy.html")
    data = {"standard": "IEC 60601-2-24", "sample_s": acc.SAMPLE_S, "windows_s": list(acc.WINDOWS_S),
            "few_strokes": acc.FEW_STROKES, "stroke_error": {
                "bias_ppm": err.bias_ppm, "noise_ppm": err.noise_ppm, "drift_ppm_per_day": err.drift_ppm_per_day,
                "seed": err.seed}, "fluid_params": info.get("fluid_params"), "rates": rates_json,
            "report": str(report), "json": str(out / "accuracy.json")}
    (out / "accuracy.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def text():
        from pumpctl.console import table
        parts = [table(rows), ""]
        for r in results:
            parts += ["== %s" % u.fmt_rate_volume(r.analysis.set_nl_day), acc.render_text(r.analysis), ""]
        parts.append("report: %s (plots and accuracy.json beside it)" % report)
        return "\n".join(parts)

    emit(args, data, text)
    sys.stdout.flush()
    return EXIT_OK


def add_parser(sub):
    s = sub.add_parser("accuracy", help="flow-rate accuracy test (IEC 60601-2-24 trumpet curve) on a fresh "
                                        "virtual-time emulated pump",
                       description="flow-rate accuracy test, IEC 60601-2-24 method, on a fresh virtual-time "
                                   "emulated pump: overall flow-rate error and trumpet curve at each rate "
                                   "(docs/accuracy.md)")
    s.set_defaults(func=cmd_accuracy)
    s.add_argument("--rate", action="append", help="set rate by volume, e.g. 1mL/day (repeat; default: 1mL/day, the "
                                                   "intermediate rate, and 0.048mL/day, the minimum)")
    s.add_argument("--hours", type=_hours, default=24, help="hours analysed after the start-up period (default 24)")
    s.add_argument("--stabilise", default="1h", help="start-up period, not analysed (default 1h, as the standard)")
    s.add_argument("--stroke-bias", help="the emulated mechanism's stroke-volume bias, e.g. -10%% (fluid model)")
    s.add_argument("--noise", help="per-stroke volume noise, e.g. 2%% (fluid model)")
    s.add_argument("--drift", help="stroke-volume drift, e.g. -1%%/day (fluid model)")
    s.add_argument("--seed", type=_seed, help="seed of the fluid model's noise (the same seed, the same strokes)")
    s.add_argument("--out", default="accuracy", help="folder for the report, plots and accuracy.json "
                                                     "(default: accuracy)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    return s
