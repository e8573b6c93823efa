"""A virtual patient from the campaign seed: drug, doses inside the
firmware's limits (docs/limits.md), refill visits before the reservoir runs
low, dose changes, and at most one fault with its time. Everything is drawn
from random.Random("SEED:INDEX"): the same seed gives the same patients on any
machine, and one patient can be replayed alone (`pumpctl campaign --only N`)."""
from __future__ import annotations

import random
from typing import Any

from pumpctl.campaign import faults

RESERVOIR_NL = 20_000_000  # the emulated pump's 20 mL reservoir; every visit fills it
MAX_INTERVAL_DAYS = 90  # a refill at least every 3 months ...
REFILL_AT_FRACTION = 0.6  # ... and before 60 % of the fill is used (low-reservoir stays a reminder)
START = "2025-01-06T09:00"
# The catheter volume the clinician enters at the implant: the fluid model's
# dead volume (boards/unix/fluid_model.py, DEAD_VOLUME_NL), so that priming
# fills the true catheter and no patient starts under-delivered by a
# mismatch the campaign itself made.
CATHETER_UL = 200

# drug: (concentration text, ng/mL, unit, unit in ng, (lowest, highest) daily dose in units, step)
# Doses are the lower half of the maintenance ranges, at the concentrated
# solutions used for long refill intervals (0.05-0.2 mL/day), inside the
# firmware's limits (firmware/limits.py: below each drug's daily maximum,
# rates within 0.048-24 mL/day). Low flows are also what keeps a campaign
# fast: the emulator's cost grows with the strokes (docs/campaign.md).
DRUGS: dict[str, tuple[str, int, str, int, tuple[float, float], float]] = {
    "morphine": ("25mg/mL", 25_000_000, "mg", 1_000_000, (1.2, 4.0), 0.1),
    "hydromorphone": ("15mg/mL", 15_000_000, "mg", 1_000_000, (0.8, 2.5), 0.1),
    "baclofen": ("2000ug/mL", 2_000_000, "ug", 1_000, (100.0, 400.0), 10.0),
    "ziconotide": ("100ug/mL", 100_000, "ug", 1_000, (5.0, 12.0), 0.1),
}
MIN_RATE_NL_DAY = 48_000  # firmware/limits.py: the mechanism's slowest rate


def _dose_text(units: float, unit: str) -> str:
    return ("%.1f" % units).rstrip("0").rstrip(".") + unit + "/day"


def _dose(rng: random.Random, drug: str, around: float | None = None) -> float:
    conc_text, conc, unit, unit_ng, (lo, hi), step = DRUGS[drug]
    if around is None:
        x = rng.uniform(lo, hi)
    else:
        x = min(hi, max(lo, around * rng.choice((0.8, 0.9, 1.1, 1.2, 1.25))))
    x = round(round(x / step) * step, 1)
    while x * unit_ng * 1_000_000 // conc < MIN_RATE_NL_DAY:  # never below the mechanism's slowest rate
        x = round(x + step, 1)
    return x


def patient(campaign_seed: int, index: int, days: int, fault: str, fault_class: faults.FaultClass | None
            ) -> dict[str, Any]:
    """The patient's plan and scenario (plain data: it travels to a Dask worker)."""
    rng = random.Random("%d:%d" % (campaign_seed, index))
    drug = rng.choice(sorted(DRUGS))
    conc_text, conc, unit, unit_ng, _, _ = DRUGS[drug]
    dose = _dose(rng, drug)
    rx = {"drug": drug, "conc": conc_text, "dose": _dose_text(dose, unit)}
    steps: list[dict[str, Any]] = [
        {"step": "implant", "catheter": "%dmm:%duL" % (rng.randint(40, 60) * 10, CATHETER_UL),
         "fill": "20mL", "prime_duration": "30min", "prescription": dict(rx)}]
    demand = 0
    plan_doses = [(0, dose * unit_ng)]  # (from day, ng/day)
    # the visits: before the reservoir runs low at the highest dose the course may reach
    day = 0
    fault_day = None
    if fault_class is not None:
        lo = max(1, int(days * 0.15))
        hi = max(lo, int(days * 0.6))
        fault_day = rng.randint(lo, hi)
    params = faults.draw_params(fault_class, rng) if fault_class is not None else {}
    events: list[tuple[int, dict[str, Any]]] = []
    while True:
        vol_day = dose * unit_ng * 1_000_000 / conc * 1.3  # nL/day, with room for a raised dose
        interval = max(7, min(MAX_INTERVAL_DAYS, int(RESERVOIR_NL * REFILL_AT_FRACTION / vol_day)))
        day += interval
        if day >= days:
            break
        visit: dict[str, Any] = {"step": "visit", "withdrawn": "true", "added": "20mL", "accept_discrepancy": True}
        if rng.random() < 0.5:  # a titration at the visit
            dose = _dose(rng, drug, dose)
            visit["prescription"] = {"drug": drug, "conc": conc_text, "dose": _dose_text(dose, unit)}
            plan_doses.append((day, dose * unit_ng))
        events.append((day, visit))
        if rng.random() < 0.15 and day + 10 < days:  # a dose change between visits
            d2 = day + rng.randint(5, min(interval, days - day) - 1) if min(interval, days - day) > 6 else None
            if d2 is not None:
                dose = _dose(rng, drug, dose)
                events.append((d2, {"step": "program", "prescription": {"drug": drug, "conc": conc_text,
                                                                       "dose": _dose_text(dose, unit)}}))
                plan_doses.append((d2, dose * unit_ng))
    if fault_day is not None and fault_class is not None and fault_class.onset == "refill":
        # armed before a refill that has another after it (where it can be found)
        visit_days = [d for d, st in events if st["step"] == "visit"]
        if len(visit_days) >= 2:
            fault_day = rng.randint(max(1, visit_days[-2] - 30), visit_days[-2] - 1) if fault_day >= visit_days[-2] \
                else fault_day
        elif visit_days:
            fault_day = min(fault_day, visit_days[0] - 1)
        fault_day = max(1, fault_day)
    if fault_day is not None:
        events.append((fault_day, {"step": "fault", "class": fault, "params": params}))
    events.sort(key=lambda e: (e[0], e[1]["step"] != "visit"))  # a fault on a visit day comes after the visit
    at = 0
    for d, st in events:
        if d > at:
            steps.append(_days(d - at, demand))
            at = d
        steps.append(st)
    if days > at:
        steps.append(_days(days - at, demand))
    dev = random.Random("%d:%d:device" % (campaign_seed, index))  # the same pump whatever the fault
    device = {"bias_ppm": dev.randint(*faults.DEVICE_BIAS_PPM), "noise_ppm": dev.randint(*faults.DEVICE_NOISE_PPM),
              "seed": dev.randrange(1, 2 ** 31)}
    return {"index": index, "seed": campaign_seed, "drug": drug, "device": device, "conc_ng_ml": conc, "unit": unit,
            "days": days, "fault": fault, "fault_day": fault_day, "fault_params": params,
            "fault_inject": fault_class.bench_calls(params) if fault_class else [],
            "fault_onset": fault_class.onset if fault_class else None,
            "fault_detect": list(fault_class.detect) if fault_class else [],
            "doses_ng_day": plan_doses,
            "scenario": {"name": "campaign %d patient %d (%s)" % (campaign_seed, index, fault),
                         "description": "generated by pumpctl campaign", "start": START, "steps": steps}}


def _days(n: int, demand: int) -> dict[str, Any]:
    st: dict[str, Any] = {"step": "days", "days": n}
    if demand:
        st["demand"] = demand
    return st


def assign(n: int, classes: list[str], none_share: float, campaign_seed: int) -> list[str]:
    """The fault class of each of n patients: a share with none, the rest in
    turn over the classes (so every class gets its patients), in shuffled order."""
    n_none = round(n * none_share) if classes else n
    out = [faults.NONE] * n_none + [classes[i % len(classes)] for i in range(n - n_none)]
    random.Random("%d:assign" % campaign_seed).shuffle(out)
    return out
