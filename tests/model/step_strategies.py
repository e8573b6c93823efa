"""Hypothesis strategies for campaign steps (plain dicts, see driver.py).

Doses are drawn as fractions of the drug's hard daily maximum, within and
beyond it, so that both acceptances near the limit and refusals happen;
concentrations are the usual ones (DOMAIN.md) plus one over the hard limit.
"""
from hypothesis import strategies as st

from oracle import DAILY_MAX_NG

CONCENTRATIONS = {  # ng/mL; the last one is over the drug's maximum concentration
    "morphine": [1_000_000, 5_000_000, 10_000_000, 25_000_000, 30_000_000],
    "hydromorphone": [2_000_000, 10_000_000, 15_000_000, 20_000_000],
    "ziconotide": [25_000, 100_000, 200_000],
    "baclofen": [50_000, 500_000, 2_000_000, 4_000_000],
    "clonidine": [500_000, 2_000_000, 3_000_000],
    "bupivacaine": [7_500_000, 40_000_000, 50_000_000],
    "sufentanil": [25_000, 100_000, 150_000],
}
DRUGS = sorted(DAILY_MAX_NG)
DAY_S = 86400
MIN_MS, HOUR_MS = 60_000, 3_600_000


def pct(lo, hi):
    return st.integers(lo, hi).map(lambda p: p / 100)


@st.composite
def drug_and_conc(draw, usual_only=False):
    drug = draw(st.sampled_from(DRUGS))
    concs = CONCENTRATIONS[drug][:-1] if usual_only else CONCENTRATIONS[drug]
    return drug, draw(st.sampled_from(concs))


@st.composite
def prescription(draw, drug, conc, top=110):
    """A prescription of `drug` at `conc`: flex steps, periodic and demand boluses."""
    daily = DAILY_MAX_NG[drug]
    n = draw(st.sampled_from([1, 1, 1, 2, 3, 11]))
    starts = [0] + sorted(draw(st.sets(st.integers(1, DAY_S - 1), min_size=n - 1, max_size=n - 1)))
    rx = {"drug": drug, "conc_ng_ml": conc,
          "steps": [{"start_s": s, "dose_ng_day": int(daily * draw(pct(2, top)))} for s in starts]}
    periodic = draw(st.lists(st.fixed_dictionaries({
        "time_s": st.integers(0, DAY_S - 1), "dose_ng": pct(1, 30).map(lambda f: int(daily * f)),
        "duration_s": st.integers(60, 3600)}), max_size=2, unique_by=lambda b: b["time_s"]))
    if periodic:
        rx["periodic"] = periodic
    if draw(st.booleans()):
        lockout = draw(st.integers(900, 6 * 3600))
        rx["demand"] = {"dose_ng": int(daily * draw(pct(1, 10))), "duration_s": draw(st.integers(60, 900)),
                        "lockout_s": lockout, "max_per_day": draw(st.integers(1, 12))}
    return rx


@st.composite
def any_prescription(draw, current):
    """Mostly the drug and concentration in the pump (a plain reprogramming),
    sometimes another (which only a refill may bring)."""
    if current is not None and draw(st.integers(0, 9)) < 8:
        drug, conc = current["drug"], current["conc_ng_ml"]
    else:
        drug, conc = draw(drug_and_conc())
    return draw(prescription(drug, conc))


@st.composite
def implant(draw):
    """Operating room: clock, catheter, first fill, priming, start of therapy."""
    drug, conc = draw(drug_and_conc(usual_only=True))
    segments = draw(st.lists(st.tuples(st.integers(200, 900), st.integers(40_000, 150_000)), min_size=1,
                             max_size=2).map(lambda s: [list(x) for x in s]))
    prime_s = draw(st.integers(300, 1800))
    return [
        {"op": "set_clock", "day": 20454 + draw(st.integers(0, 2)), "tod_s": draw(st.integers(0, DAY_S - 1))},
        {"op": "catheter", "segments": segments},
        {"op": "first_fill", "volume_nl": draw(st.integers(5, 20)) * 1_000_000, "drug": drug, "conc_ng_ml": conc},
        {"op": "prime", "duration_s": prime_s},
        {"op": "advance", "ms": prime_s * 1000 + 2 * MIN_MS},
        {"op": "start_therapy", "rx": draw(prescription(drug, conc, top=80))},
    ]


def advance(lo_ms, hi_ms):
    return st.integers(lo_ms, hi_ms).map(lambda ms: {"op": "advance", "ms": ms})


@st.composite
def clinician_bolus(draw, drug):
    daily = DAILY_MAX_NG.get(drug, 1_000_000)
    return {"op": "clinician_bolus", "dose_ng": max(1, int(daily * draw(pct(1, 30)))),
            "duration_s": draw(st.integers(60, 4 * 3600)), "override": draw(st.booleans())}


def priming_bolus():
    return st.fixed_dictionaries({"op": st.just("priming_bolus"), "volume_nl": st.integers(500, 1_200_000),
                                  "duration_s": st.integers(60, 3600)})


@st.composite
def refill(draw, current):
    step = {"op": "refill", "added_nl": draw(st.sampled_from([1_500_000, 5_000_000, 12_000_000, 20_000_000,
                                                             25_000_000])),
            "withdrawn_delta_nl": draw(st.sampled_from([0, 0, 0, -3_000_000, 1_000_000]))}
    kind = draw(st.sampled_from(["same", "same", "new concentration", "new drug"]))
    if kind == "new concentration" and current is not None:
        conc = draw(st.sampled_from(CONCENTRATIONS.get(current["drug"], [1])))
        step["rx"] = draw(prescription(current["drug"], conc))
    elif kind == "new drug":
        drug, conc = draw(drug_and_conc())
        step["rx"] = draw(prescription(drug, conc))
    if "rx" in step:
        step["override"] = draw(st.booleans())
    return step


def set_clock():
    return st.fixed_dictionaries({"op": st.just("set_clock"), "day": st.integers(20453, 20458),
                                  "tod_s": st.integers(0, DAY_S - 1)})


def fault():
    return st.one_of(
        st.booleans().map(lambda on: {"op": "motor", "stall": on}),
        st.sampled_from([0, 2, 3, 7]).map(lambda n: {"op": "motor", "intermittent": n}),
        st.sampled_from([0, 150, 300, 900]).map(lambda p: {"op": "pressure", "mmhg": p}),
        st.fixed_dictionaries({"op": st.just("battery_glitch"), "mv": st.sampled_from([2600, 2800, 2000]),
                               "ms": st.integers(1000, 2 * HOUR_MS)}),
        st.booleans().map(lambda on: {"op": "flash_fault", "on": on}),
    )


def clear_faults():
    return st.just([{"op": "motor", "stall": False, "intermittent": 0}, {"op": "pressure", "mmhg": 0},
                    {"op": "flash_fault", "on": False}])


def reset():
    # Power cuts and watchdog resets are common; flash decay is rare.
    off = st.sampled_from([0, 1000, 10 * MIN_MS, 2 * HOUR_MS])
    cut = st.fixed_dictionaries({"op": st.just("arm_power_cut"), "after": st.integers(1, 80),
                                 "tear": st.booleans(), "off_ms": off})
    now = off.map(lambda ms: {"op": "power_cut", "off_ms": ms})
    decay = st.sampled_from(["newest", "both"]).map(lambda s: {"op": "decay_state", "slots": s})
    return st.sampled_from([cut, cut, cut, now, now, st.just({"op": "watchdog"}), st.just({"op": "watchdog"}),
                            decay]).flatmap(lambda strategy: strategy)
