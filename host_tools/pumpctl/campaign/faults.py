"""The fault classes a campaign injects: data, so that a new fault of the
emulator (a bench command) is one entry here.

Each class says
- `inject`: bench commands [(cmd, args)] that provoke it (`args` may hold
  `{param}` names filled from the patient's own draw, `params`);
- `params`: how a patient draws its parameters (name -> (low, high) integers);
- `needs`: the bench commands it needs (a class whose commands the emulator
  does not have is left out of the campaign, and the report says so);
- `onset`: "at" (the fault starts when injected) or "refill" (it is armed and
  happens at the next refill visit: a pocket fill);
- `detect`: the alarms that count as detecting it (pumpctl's alarm names);
- `expect`: what a reader should expect of the pump, shown in the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Alarms that mean "something is wrong with the pump or the patient's
# therapy": raised on a patient with no fault, each is a false alarm. The
# routine ones (low reservoir, the refill date) are not.
CONCERN_ALARMS = ("reservoir-empty", "motor-stall", "occlusion", "battery-end-of-service", "internal-fault",
                  "integrity-error", "dose-limit-guard", "refill-discrepancy", "flash-fault",
                  "uncommanded-motor-motion", "battery-replacement-eri", "stroke-failures")


@dataclass(frozen=True)
class FaultClass:
    name: str
    title: str
    inject: tuple[tuple[str, dict[str, Any]], ...]
    detect: tuple[str, ...]
    expect: str
    params: dict[str, tuple[int, int]] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    onset: str = "at"
    fallback: "FaultClass | None" = None  # the same fault by older bench commands, when `needs` is missing

    def bench_calls(self, params: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for cmd, args in self.inject:
            out.append((cmd, {k: (params[v[1:-1]] if isinstance(v, str) and v[:1] == "{" else v)
                              for k, v in args.items()}))
        return out


FAULT_CLASSES: dict[str, FaultClass] = {}


def _add(fc: FaultClass) -> None:
    FAULT_CLASSES[fc.name] = fc


# -- faults of the motor and the board (bench commands every emulator has) ----------------
_add(FaultClass("motor-stall", "motor stall (a broken gear shaft)", (("motor", {"stall": True}),),
                ("motor-stall",), "critical alarm within minutes; therapy stopped"))
_add(FaultClass("motor-intermittent", "intermittent motor (every Nth stroke fails)",
                (("motor", {"intermittent": "{every}"}),), ("stroke-failures", "motor-stall"),
                "failed strokes are retried; the stroke-failures warning at the third in 29 attempts",
                params={"every": (2, 6)}))
_add(FaultClass("battery-depletion", "battery at end of service", (("battery", {"mv": "{mv}"}),),
                ("battery-end-of-service",), "critical alarm at the next battery check (5 min)",
                params={"mv": (2500, 2690)}))

# -- faults of the fluid path (boards/unix fluid model: `fluid` and its commands) ----------
_PRESSURE_OCCLUSION = FaultClass("occlusion", "catheter occlusion (pressure above the occlusion limit)",
                                 (("pressure", {"mmhg": "{mmhg}"}),), ("occlusion",),
                                 "occlusion alarm at the first stroke against it", params={"mmhg": (250, 600)})
_add(FaultClass("occlusion", "catheter occlusion", (("occlusion", {"on": True}),), ("occlusion",),
                "pressure rises with the strokes: occlusion alarm once it crosses the limit",
                needs=("fluid", "occlusion"), fallback=_PRESSURE_OCCLUSION))
_add(FaultClass("disconnect", "catheter disconnection (all drug to the pocket)",
                (("disconnect", {"on": True, "leak_pct": 100}),), ("occlusion", "refill-discrepancy"),
                "strokes succeed, the reservoir empties as counted: nothing the pump observes changes "
                "(not detectable by the pump)", needs=("fluid", "disconnect")))
_add(FaultClass("catheter-leak", "catheter leak (part of each stroke to the pocket)",
                (("disconnect", {"on": True, "leak_pct": "{pct}"}),), ("occlusion", "refill-discrepancy"),
                "as a disconnection, partly: not detectable by the pump", params={"pct": (20, 60)},
                needs=("fluid", "disconnect")))
_add(FaultClass("pocket-fill", "pocket fill (the refill needle misses the septum)",
                (("pocket_fill", {"pct": "{pct}"}),), ("refill-discrepancy",),
                "the drug goes to the pocket at the refill; the reservoir is short at the NEXT refill "
                "(discrepancy warning)", params={"pct": (60, 100)}, needs=("fluid", "pocket_fill"), onset="refill"))
_add(FaultClass("septum-leak", "septum leak (the reservoir loses drug to the pocket)",
                (("septum_leak", {"nl_per_day": "{nl_per_day}"}),), ("refill-discrepancy",),
                "the reservoir is short at the next refill: warning above 2 mL or 20 %",
                params={"nl_per_day": (20_000, 150_000)}, needs=("fluid", "septum_leak")))
_add(FaultClass("stroke-drift", "stroke volume drifting down (under-infusion)",
                (("stroke_error", {"drift_ppm_per_day": "{drift}"}),), ("refill-discrepancy",),
                "the reservoir holds more than counted at a refill: warning once the drift passes 2 mL or 20 %",
                params={"drift": (-3000, -800)}, needs=("fluid", "stroke_error")))
_add(FaultClass("motor-wear", "motor wear (stroke volume falls with use)",
                (("wear", {"ppm_per_day": "{ppm}"}),), ("refill-discrepancy", "stroke-failures", "motor-stall"),
                "like a drift, found at a refill; the worn gear train's failed strokes warn before it stalls",
                params={"ppm": (1000, 4000)},
                needs=("fluid", "wear")))

NONE = "none"

# Every patient's pump, faulty or not, with the fluid model: its own stroke
# volume bias (device to device) and per-stroke noise, from its own seed
# (bench `stroke_error`). Drawn uniformly; ppm of the nominal stroke.
DEVICE_BIAS_PPM = (-30_000, 30_000)  # +-3 %: inside the +-10-15 % accuracy claimed for SynchroMed-class pumps
DEVICE_NOISE_PPM = (5_000, 20_000)  # per-stroke SD 0.5-2 %


def available(bench_commands: set[str]) -> tuple[dict[str, FaultClass], dict[str, str]]:
    """The classes this emulator can inject ({name: class}, each resolved to the
    form its commands allow) and the ones it cannot ({name: why})."""
    ok, missing = {}, {}
    for name, fc in FAULT_CLASSES.items():
        use: FaultClass | None = fc
        while use is not None and not set(use.needs) <= bench_commands:
            use = use.fallback
        if use is None:
            missing[name] = "needs bench command(s) %s" % ", ".join(sorted(set(fc.needs) - bench_commands))
        else:
            ok[name] = use
    return ok, missing


def draw_params(fc: FaultClass, rng) -> dict[str, int]:
    return {k: rng.randint(lo, hi) for k, (lo, hi) in sorted(fc.params.items())}
