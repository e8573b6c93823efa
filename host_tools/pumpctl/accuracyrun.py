"""The sampler of `pumpctl accuracy`: a fresh virtual-time emulator runs a
continuous rate, and every 30 s of virtual time the cumulative volume
delivered is read through the bench port (docs/accuracy.md).

The volume is the fluid model's TRUE volume into the intrathecal space
(bench `fluid`, `delivered_nl`). An emulator without the fluid model has no
`fluid` command: then, and only then, the volume is the count of completed
strokes x the nominal stroke volume, and the samples say so (source
"strokes"); the stroke-error options need the fluid model and are refused
without it."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pumpctl import units as u
from pumpctl.accuracy import SAMPLE_S, SOURCE_FLUID, SOURCE_STROKES, Samples
from pumpctl.bench import BenchClient, BenchError
from pumpctl.console import UsageError
from pumpctl.emulator import Emulator, EmulatorError
from pumpctl.fw import limits

# The test solution: hydromorphone 1 mg/mL, so that 1 nL is 1 ng and every
# rate of the mechanism's range (0.048-24 mL/day) is a dose the pump takes
# (24 mg/day is within hydromorphone's 25 mg/day). The standard measures
# volume; the drug only has to let the pump run the rate.
TEST_DRUG, TEST_CONC_NG_ML = "hydromorphone", 1_000_000
RESIDUAL_NL = 1_000_000  # firmware/reservoir.py: below this the pump treats itself as empty


@dataclass(frozen=True)
class StrokeError:
    """The fluid model's stroke-volume error (bench `stroke_error`); None: the model's own default."""
    bias_ppm: int | None = None
    noise_ppm: int | None = None
    drift_ppm_per_day: int | None = None
    seed: int | None = None

    def arguments(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def prescription(nl_day: int) -> dict[str, Any]:
    """The firmware prescription of a continuous rate (the emulator's --prescription)."""
    return {"drug": TEST_DRUG, "conc_ng_ml": TEST_CONC_NG_ML,
            "steps": [{"start_s": 0, "dose_ng_day": nl_day * TEST_CONC_NG_ML // u.NL_PER_ML}]}


def check_rate(nl_day: int) -> None:
    if not limits.RATE_MIN_NL_DAY <= nl_day <= limits.RATE_MAX_NL_DAY:
        raise u.UnitError("rate %s is outside the pump's range, %s to %s" % (
            u.fmt_rate_volume(nl_day), u.fmt_rate_volume(limits.RATE_MIN_NL_DAY),
            u.fmt_rate_volume(limits.RATE_MAX_NL_DAY)))
    if nl_day * TEST_CONC_NG_ML % u.NL_PER_ML:
        raise u.UnitError("rate %s is not a whole number of nL/day" % u.fmt_rate_volume(nl_day))


def _fluid(b: BenchClient) -> dict[str, Any] | None:
    try:
        return b.call("fluid")
    except BenchError as e:
        if "unknown command" in str(e):
            return None  # an emulator without the fluid model
        raise


def sample(nl_day: int, stabilise_s: int, analysis_s: int, error: StrokeError = StrokeError(),
           sample_s: int = SAMPLE_S, state_dir: str | Path | None = None,
           progress: Callable[[int, int], None] | None = None) -> tuple[Samples, dict[str, Any]]:
    """Runs `nl_day` on a fresh virtual-time emulator for `stabilise_s` +
    `analysis_s` and samples the delivered volume every `sample_s`. Returns
    the samples and what the emulator reported (fluid-model parameters, the
    pump's state and alarms at the end)."""
    check_rate(nl_day)
    if stabilise_s % sample_s or analysis_s % sample_s or analysis_s < 2 * sample_s:
        raise u.UnitError("start-up and analysis periods must be whole numbers of %d-s samples (analysis at least "
                          "%d s)" % (sample_s, 2 * sample_s))
    tmp = Path(tempfile.mkdtemp(prefix="pumpctl-accuracy-")) if state_dir is None else None
    emu = Emulator((tmp or Path(state_dir or ".")) / "pump", virtual=True, prescription=prescription(nl_day))
    try:
        emu.start()
        try:
            with emu.bench() as b:
                return _run(b, nl_day, stabilise_s, analysis_s, error, sample_s, progress)
        except (BenchError, OSError) as e:  # the emulator died or refused a bench request: a bench failure
            raise EmulatorError("the emulator's bench port failed during the accuracy test (%s)%s" % (
                str(e).removeprefix("bench: ") or type(e).__name__,
                "; it stopped: %s" % emu.exit_reason() if emu.exit_reason() else ""))
    finally:
        emu.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(b: BenchClient, nl_day: int, stabilise_s: int, analysis_s: int, error: StrokeError, sample_s: int,
         progress: Callable[[int, int], None] | None) -> tuple[Samples, dict[str, Any]]:
    st = b.call("status")
    fluid = _fluid(b)
    if fluid is None and error.arguments():
        raise UsageError("--stroke-bias, --noise, --drift and --seed set the emulator's fluid model (bench command "
                         "stroke_error), and this emulator has none (boards/unix without fluid_model.py): run "
                         "without them to measure the strokes' timing only")
    if fluid is not None and error.arguments():
        try:
            b.call("stroke_error", **error.arguments())
        except BenchError as e:
            raise u.UnitError("the emulator refused the stroke error: %s" % str(e).removeprefix("bench: "))
        fluid = b.call("fluid")
    total_s = stabilise_s + analysis_s
    need = nl_day * total_s // u.S_PER_DAY
    usable = st["remaining_nl"] - RESIDUAL_NL
    if need > usable:
        hours = (usable * u.S_PER_DAY // nl_day - stabilise_s) // 3600
        raise u.UnitError("at %s the test (%s) needs %s and the emulated pump's reservoir holds %s above its "
                          "residual volume: %s" % (
                              u.fmt_rate_volume(nl_day), u.fmt_duration(total_s), u.fmt_pump_value(need, "nL"),
                              u.fmt_pump_value(usable, "nL"),
                              "give fewer --hours (at most %d)" % hours if hours >= 1
                              else "give a shorter --stabilise or a lower --rate"))
    source = SOURCE_FLUID if fluid is not None else SOURCE_STROKES
    stroke_nl = st["stroke_nl"]

    def volume(status: dict[str, Any], f: dict[str, Any] | None) -> int | float:
        return f["delivered_nl"] if f is not None else status["strokes"] * stroke_nl

    volumes, strokes = [volume(st, fluid)], [st["strokes"]]
    n = total_s // sample_s
    for i in range(n):
        st = b.call("advance", ms=sample_s * 1000)
        if st["state"] != "delivering":
            raise EmulatorError("the emulated pump stopped delivering %s into the test (state %s, alarms: %s): no "
                                "accuracy figures" % (u.fmt_duration((i + 1) * sample_s), st["state"],
                                                      ", ".join(st["alarms"]) or "none"))
        f = b.call("fluid") if fluid is not None else None
        volumes.append(volume(st, f))
        strokes.append(st["strokes"])
        if progress is not None:
            progress(i + 1, n)
    info: dict[str, Any] = {"state": st["state"], "alarms": list(st["alarms"]), "stroke_nl": stroke_nl,
                            "source": source, "fluid_params": None, "fluid_faults": None}
    if fluid is not None:
        last = b.call("fluid")
        info["fluid_params"] = last.get("params")
        info["fluid_faults"] = last.get("faults")
    samples = Samples(set_nl_day=nl_day, volumes_nl=volumes, strokes=strokes, sample_s=sample_s, stroke_nl=stroke_nl,
                      start=stabilise_s // sample_s, source=source)
    return samples, info
