# The prescription: drug, concentration and therapy, entered in drug units and
# converted through the concentration to volume. `validate` checks every hard
# limit and returns the volume form the scheduler runs; it changes nothing, so
# a rejected prescription leaves the active one untouched.
import limits
from limits import LimitError, check_range
from units import S_PER_DAY, dose_to_volume_nl, fmt_mass, fmt_volume, volume_to_dose_ng

# A bolus is whole strokes: a dose that is not within this of a whole number
# of strokes is refused with the nearest deliverable doses, never rounded
# silently (what is checked and shown is what the pump delivers).
BOLUS_ROUNDING_PCT = 5


class Therapy:
    # Volume form of a validated prescription, all integers.
    def __init__(self, drug, conc_ng_ml, step_start_s, step_rate_nl_day, periodic, demand):
        self.drug = drug
        self.conc_ng_ml = conc_ng_ml
        self.step_start_s = step_start_s  # seconds of day, first is 0, increasing
        self.step_rate_nl_day = step_rate_nl_day
        self.periodic = periodic  # [(time_s, strokes, duration_s)]
        self.demand = demand  # None or (strokes, duration_s, lockout_s, max_per_day)
        self.daily_ng = 0  # 24-hour maximum: basal + periodic + demand maximum

    def basal_nl_per_day(self):
        total = 0
        n = len(self.step_start_s)
        for i in range(n):
            end = self.step_start_s[i + 1] if i + 1 < n else S_PER_DAY
            total += self.step_rate_nl_day[i] * (end - self.step_start_s[i])
        return total // S_PER_DAY


def _int(d, key, what):
    try:
        v = d[key]
    except (KeyError, TypeError):
        raise LimitError("missing", "%s: missing %r" % (what, key))
    if not isinstance(v, int) or isinstance(v, bool):
        raise LimitError("type", "%s: %r must be an integer" % (what, key))
    return v


def stroke_dose_ng(strokes, stroke_nl, conc):
    return volume_to_dose_ng(strokes * stroke_nl, conc)


def _bolus_strokes(dose_ng, conc, stroke_nl, what, ug):
    volume = dose_to_volume_nl(dose_ng, conc)
    strokes = (volume + stroke_nl // 2) // stroke_nl
    one = stroke_dose_ng(1, stroke_nl, conc)
    if strokes < 1:
        raise LimitError("bolus_min", "%s: %s is less than one stroke (%s = %s): choose at least %s"
                         % (what, fmt_mass(dose_ng, ug), fmt_volume(stroke_nl), fmt_mass(one, ug), fmt_mass(one, ug)))
    given = stroke_dose_ng(strokes, stroke_nl, conc)
    if abs(given - dose_ng) * 100 > BOLUS_ROUNDING_PCT * dose_ng:
        low = stroke_dose_ng(volume // stroke_nl, stroke_nl, conc)
        high = stroke_dose_ng(volume // stroke_nl + 1, stroke_nl, conc)
        # Below one stroke there is one choice: the stroke (the programmer says so).
        choice = "%s or %s" % (fmt_mass(low, ug), fmt_mass(high, ug)) if low else fmt_mass(high, ug)
        raise LimitError("bolus_rounding", "%s: %s is not a whole number of %s strokes (%s each): choose %s"
                         % (what, fmt_mass(dose_ng, ug), fmt_volume(stroke_nl), fmt_mass(one, ug), choice))
    return strokes


def _bolus_rate_nl_day(strokes, stroke_nl, duration_s):
    return strokes * stroke_nl * S_PER_DAY // duration_s


def _check_bolus(dose_ng, duration_s, max_bolus_ng, what, ug):
    if dose_ng < 1:
        raise LimitError("bolus_min", "%s: dose must be positive" % what)
    if dose_ng > max_bolus_ng:
        raise LimitError("bolus_max", "%s: %s exceeds the single-bolus maximum %s: lower the dose"
                         % (what, fmt_mass(dose_ng, ug), fmt_mass(max_bolus_ng, ug)))
    check_range("bolus_duration", what + " duration", duration_s,
                limits.BOLUS_DURATION_MIN_S, limits.BOLUS_DURATION_MAX_S, "s")


def _bolus(dose_ng, duration_s, conc, stroke_nl, drug, what):
    # Strokes of a bolus; the dose checked is the larger of entered and delivered.
    max_bolus_ng, ug = limits.drug_limits(drug)[2], limits.doses_in_ug(drug)
    _check_bolus(dose_ng, duration_s, max_bolus_ng, what, ug)
    strokes = _bolus_strokes(dose_ng, conc, stroke_nl, what, ug)
    _check_bolus(max(dose_ng, stroke_dose_ng(strokes, stroke_nl, conc)), duration_s, max_bolus_ng, what, ug)
    return strokes


def validate(p, stroke_nl, override=False):
    # p: dict as sent by the programmer. Returns a Therapy or raises LimitError.
    # `override`: the clinician accepts going above the drug's soft daily
    # maximum (never above the hard one).
    drug = p.get("drug") if isinstance(p, dict) else None
    if not isinstance(drug, str):
        raise LimitError("drug", "prescription: 'drug' must name a drug")
    max_conc = limits.drug_limits(drug)[0]
    conc = _int(p, "conc_ng_ml", "prescription")
    check_range("concentration", drug + " concentration", conc, 1, max_conc, "ng/mL")

    steps = p.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= limits.MAX_STEPS:
        raise LimitError("steps", "prescription: 1..%d steps required" % limits.MAX_STEPS)
    starts, rates = [], []
    top_entered = 0
    for i, step in enumerate(steps):
        what = "step %d" % (i + 1)
        start = _int(step, "start_s", what)
        dose = _int(step, "dose_ng_day", what)
        if (i == 0 and start != 0) or (i > 0 and not starts[-1] < start < S_PER_DAY):
            raise LimitError("step_start", "%s: start %d s must be %s" % (
                what, start, "0 (midnight)" if i == 0 else "after the previous step and before midnight"))
        rate = dose_to_volume_nl(dose, conc)
        _check_rate(rate, what)
        top_entered = max(top_entered, dose)
        starts.append(start)
        rates.append(rate)
    max_rate = max(rates)

    periodic = []
    daily_ng = 0
    per = p.get("periodic", [])
    if not isinstance(per, list) or len(per) > limits.MAX_PERIODIC:
        raise LimitError("periodic", "prescription: at most %d periodic boluses" % limits.MAX_PERIODIC)
    for i, b in enumerate(per):
        what = "periodic bolus %d" % (i + 1)
        t = _int(b, "time_s", what)
        dose = _int(b, "dose_ng", what)
        dur = _int(b, "duration_s", what)
        check_range("periodic_time", what + " time", t, 0, S_PER_DAY - 1, "s")
        if any(t == q[0] for q in periodic):
            raise LimitError("periodic_time", "%s: time %d s used twice" % (what, t))
        strokes = _bolus(dose, dur, conc, stroke_nl, drug, what)
        _check_added_rate(max_rate, strokes, stroke_nl, dur, what)
        periodic.append((t, strokes, dur))
        daily_ng += max(dose, stroke_dose_ng(strokes, stroke_nl, conc))
    periodic.sort()

    demand = None
    d = p.get("demand")
    if d is not None:
        what = "demand bolus"
        dose = _int(d, "dose_ng", what)
        dur = _int(d, "duration_s", what)
        lockout = _int(d, "lockout_s", what)
        per_day = _int(d, "max_per_day", what)
        check_range("lockout", what + " lockout", lockout, limits.LOCKOUT_MIN_S, limits.LOCKOUT_MAX_S, "s")
        check_range("demand_per_day", what + " activations", per_day, 1, limits.DEMAND_MAX_PER_DAY, "per day")
        if dur > lockout:
            raise LimitError("bolus_duration", "%s: duration %d s longer than lockout %d s" % (what, dur, lockout))
        strokes = _bolus(dose, dur, conc, stroke_nl, drug, what)
        _check_added_rate(max_rate, strokes, stroke_nl, dur, what)
        demand = (strokes, dur, lockout, per_day)
        daily_ng += per_day * max(dose, stroke_dose_ng(strokes, stroke_nl, conc))

    # The basal counts at its highest step as if it ran all day: volume follows
    # elapsed time and the step follows the clock, so only this bound holds
    # whatever the clock is set to (docs/dosing.md).
    # The entered dose counts when it is above what the rounded rate gives.
    therapy = Therapy(drug, conc, starts, rates, periodic, demand)
    daily_ng += max(top_entered, volume_to_dose_ng(max_rate, conc))
    therapy.daily_ng = daily_ng
    check_daily(drug, daily_ng, override, "%s: 24-hour maximum (highest step all day + periodic + demand maximum)"
                % drug)
    return therapy


def check_daily(drug, daily_ng, override, what):
    # The soft maximum needs an override; the hard maximum is never exceeded.
    soft = limits.drug_limits(drug)[1]
    hard = limits.hard_daily(drug)
    ug = limits.doses_in_ug(drug)
    if daily_ng > hard:
        raise LimitError("daily_hard_max" if hard > soft else "daily_max",
                         "%s %s exceeds the hard maximum %s/day: lower the dose"
                         % (what, fmt_mass(daily_ng, ug), fmt_mass(hard, ug)))
    if daily_ng > soft and not override:
        raise LimitError("daily_max", "%s %s exceeds the usual maximum %s/day: lower the dose, or confirm with"
                         " override up to %s/day" % (what, fmt_mass(daily_ng, ug), fmt_mass(soft, ug),
                                                     fmt_mass(hard, ug)))


def _check_rate(rate, what):
    if not limits.RATE_MIN_NL_DAY <= rate <= limits.RATE_MAX_NL_DAY:
        raise LimitError("rate", "%s: %s/day is outside the mechanism's %s/day to %s/day: change the dose or the"
                         " concentration" % (what, fmt_volume(rate), fmt_volume(limits.RATE_MIN_NL_DAY),
                                             fmt_volume(limits.RATE_MAX_NL_DAY)))


def _check_added_rate(basal_max, strokes, stroke_nl, duration_s, what):
    rate = _bolus_rate_nl_day(strokes, stroke_nl, duration_s)
    if basal_max + rate > limits.RATE_MAX_NL_DAY:
        # Under the wire's 100 characters, whatever `what` (pumpctl adds the shortest duration).
        raise LimitError("rate", "%s: %s/day + basal %s/day exceeds the %s/day maximum: make it longer"
                         % (what, fmt_volume(rate), fmt_volume(basal_max), fmt_volume(limits.RATE_MAX_NL_DAY)))


def clinician_bolus_strokes(dose_ng, duration_s, therapy, stroke_nl):
    # Replaces basal for its duration. Returns strokes; the 24-hour ceiling
    # with everything else delivered is the pump's check (Pump.clinician_bolus).
    what = "clinician bolus"
    strokes = _bolus(dose_ng, duration_s, therapy.conc_ng_ml, stroke_nl, therapy.drug, what)
    _check_added_rate(0, strokes, stroke_nl, duration_s, what)
    return strokes


def priming_strokes(volume_nl, duration_s, stroke_nl):
    check_range("priming_volume", "priming volume", volume_nl, stroke_nl, limits.PRIMING_VOLUME_MAX_NL, "nL")
    check_range("bolus_duration", "priming duration", duration_s,
                limits.BOLUS_DURATION_MIN_S, limits.BOLUS_DURATION_MAX_S, "s")
    strokes = (volume_nl + stroke_nl - 1) // stroke_nl  # a catheter is filled, never under-filled
    _check_added_rate(0, strokes, stroke_nl, duration_s, "priming bolus")
    return strokes


def compact(rx):
    # The prescription with rows as lists: the wire's form and the record's.
    if rx is None:
        return None
    out = {"drug": rx["drug"], "conc": rx["conc_ng_ml"],
           "steps": [[s["start_s"], s["dose_ng_day"]] for s in rx["steps"]]}
    per = rx.get("periodic")
    if per:
        out["periodic"] = [[b["time_s"], b["dose_ng"], b["duration_s"]] for b in per]
    d = rx.get("demand")
    if d is not None:
        out["demand"] = [d["dose_ng"], d["duration_s"], d["lockout_s"], d["max_per_day"]]
    return out


def expand(c):
    # compact() undone, for a record the pump wrote itself (shapes trusted,
    # every limit still checked by validate()).
    if c is None or "conc_ng_ml" in c:
        return c  # already the dict form (records of firmware 0.1)
    rx = {"drug": c["drug"], "conc_ng_ml": c["conc"],
          "steps": [{"start_s": s, "dose_ng_day": d} for s, d in c["steps"]]}
    if c.get("periodic"):
        rx["periodic"] = [{"time_s": t, "dose_ng": d, "duration_s": u} for t, d, u in c["periodic"]]
    if c.get("demand") is not None:
        d, u, lock, n = c["demand"]
        rx["demand"] = {"dose_ng": d, "duration_s": u, "lockout_s": lock, "max_per_day": n}
    return rx


def max_daily_nl(therapy, stroke_nl):
    # Volume of a day at the prescribed rates with every bolus the therapy
    # allows (reservoir forecasts and review screens).
    nl = therapy.basal_nl_per_day() + sum(q[1] for q in therapy.periodic) * stroke_nl
    if therapy.demand is not None:
        nl += therapy.demand[0] * therapy.demand[3] * stroke_nl
    return nl


def strokes_within(therapy, stroke_nl, secs):
    # Most strokes the therapy can ask for in any `secs` (secs <= a day and a
    # minute): the highest step for the whole time, every periodic bolus
    # once, every demand activation the lockout and the daily count allow.
    return reach(therapy, stroke_nl, 1)(secs)


def reach(therapy, stroke_nl, unit_s):
    # strokes_within as a function of whole units of `unit_s` seconds (a
    # divisor of a day): reach(t, s, u)(b) == strokes_within(t, s, b * u).
    # The therapy's constants are worked out here once, so that a call is a
    # few integer operations: the 24-hour ceiling check makes up to 1441.
    # They are the function's defaults: locals, the fastest reads, and a
    # MicroPython closure over more than four names allocates at every call.
    # The highest step gives top * b / d strokes in b units; as q * b plus
    # the ceiling of r * b / d (r < d), a one-minute unit keeps every value
    # a small int for b <= 1441 while stroke_nl <= 517 (the mechanism's: 500).
    d = S_PER_DAY // unit_s * stroke_nl
    q, r = divmod(max(therapy.step_rate_nl_day), d)
    fixed = 1 + sum(p[1] for p in therapy.periodic)
    if therapy.demand is None:
        return lambda b, q=q, r=r, d=d, c=fixed: q * b - (-r * b // d) + c
    dem, _, lockout, most = therapy.demand

    def strokes(b, q=q, r=r, d=d, c=fixed, u=unit_s, lock=lockout, dem=dem, most=most):
        n = u * b // lock + 1  # activations the lockout allows
        return q * b - (-r * b // d) + c + dem * (n if n < most else most)

    return strokes


def guard_limits(therapy, stroke_nl):
    # Most strokes the therapy can ask for in any hour and any 24 hours, for
    # the independent dose guard: basal at its highest step, every periodic
    # bolus, and every demand activation the lockout allows.
    per = sum(q[1] for q in therapy.periodic)
    dem_strokes, dem_hour, dem_day = 0, 0, 0
    if therapy.demand is not None:
        dem_strokes, _, lockout, per_day = therapy.demand
        dem_hour = dem_strokes * (3600 // lockout + 1)
        dem_day = dem_strokes * per_day
    top = max(therapy.step_rate_nl_day)
    hour = -(-top * 3600 // (S_PER_DAY * stroke_nl)) + per + dem_hour
    day = -(-top // stroke_nl) + per + dem_day
    return hour, day
