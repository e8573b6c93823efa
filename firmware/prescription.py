# The prescription: drug, concentration and therapy, entered in drug units and
# converted through the concentration to volume. `validate` checks every hard
# limit and returns the volume form the scheduler runs; it changes nothing, so
# a rejected prescription leaves the active one untouched.
import limits
from limits import LimitError, check_range
from units import S_PER_DAY, dose_to_volume_nl, volume_to_dose_ng


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


def _bolus_strokes(dose_ng, conc, stroke_nl, what):
    volume = dose_to_volume_nl(dose_ng, conc)
    strokes = (volume + stroke_nl // 2) // stroke_nl
    if strokes < 1:
        raise LimitError("bolus_min", "%s: dose %d ng is less than one stroke (%d nL)" % (what, dose_ng, stroke_nl))
    return strokes


def _bolus_rate_nl_day(strokes, stroke_nl, duration_s):
    return strokes * stroke_nl * S_PER_DAY // duration_s


def _check_bolus(dose_ng, duration_s, max_bolus_ng, what):
    check_range("bolus_max", what + " dose", dose_ng, 1, max_bolus_ng, "ng")
    check_range("bolus_duration", what + " duration", duration_s,
                limits.BOLUS_DURATION_MIN_S, limits.BOLUS_DURATION_MAX_S, "s")


def validate(p, stroke_nl):
    # p: dict as sent by the programmer. Returns a Therapy or raises LimitError.
    drug = p.get("drug") if isinstance(p, dict) else None
    if not isinstance(drug, str):
        raise LimitError("drug", "prescription: 'drug' must name a drug")
    max_conc, max_daily, max_bolus = limits.drug_limits(drug)
    conc = _int(p, "conc_ng_ml", "prescription")
    check_range("concentration", drug + " concentration", conc, 1, max_conc, "ng/mL")

    steps = p.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= limits.MAX_STEPS:
        raise LimitError("steps", "prescription: 1..%d steps required" % limits.MAX_STEPS)
    starts, rates = [], []
    for i, step in enumerate(steps):
        what = "step %d" % (i + 1)
        start = _int(step, "start_s", what)
        dose = _int(step, "dose_ng_day", what)
        if (i == 0 and start != 0) or (i > 0 and not starts[-1] < start < S_PER_DAY):
            raise LimitError("step_start", "%s: start %d s must be %s" % (
                what, start, "0 (midnight)" if i == 0 else "after the previous step and before midnight"))
        rate = dose_to_volume_nl(dose, conc)
        check_range("rate", what + " rate", rate, limits.RATE_MIN_NL_DAY, limits.RATE_MAX_NL_DAY, "nL/day")
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
        _check_bolus(dose, dur, max_bolus, what)
        strokes = _bolus_strokes(dose, conc, stroke_nl, what)
        _check_added_rate(max_rate, strokes, stroke_nl, dur, what)
        periodic.append((t, strokes, dur))
        daily_ng += volume_to_dose_ng(strokes * stroke_nl, conc)
    periodic.sort()

    demand = None
    d = p.get("demand")
    if d is not None:
        what = "demand bolus"
        dose = _int(d, "dose_ng", what)
        dur = _int(d, "duration_s", what)
        lockout = _int(d, "lockout_s", what)
        per_day = _int(d, "max_per_day", what)
        _check_bolus(dose, dur, max_bolus, what)
        check_range("lockout", what + " lockout", lockout, limits.LOCKOUT_MIN_S, limits.LOCKOUT_MAX_S, "s")
        check_range("demand_per_day", what + " activations", per_day, 1, limits.DEMAND_MAX_PER_DAY, "per day")
        if dur > lockout:
            raise LimitError("bolus_duration", "%s: duration %d s longer than lockout %d s" % (what, dur, lockout))
        strokes = _bolus_strokes(dose, conc, stroke_nl, what)
        _check_added_rate(max_rate, strokes, stroke_nl, dur, what)
        demand = (strokes, dur, lockout, per_day)
        daily_ng += per_day * volume_to_dose_ng(strokes * stroke_nl, conc)

    # The basal counts at its highest step as if it ran all day: volume follows
    # elapsed time and the step follows the clock, so only this bound holds
    # whatever the clock is set to (docs/dosing.md).
    therapy = Therapy(drug, conc, starts, rates, periodic, demand)
    daily_ng += volume_to_dose_ng(max_rate, conc)
    therapy.daily_ng = daily_ng
    if daily_ng > max_daily:
        raise LimitError("daily_max", "%s: 24-hour maximum %d ng (highest step all day + periodic + demand maximum)"
                         " exceeds %d ng/day" % (drug, daily_ng, max_daily))
    return therapy


def _check_added_rate(basal_max, strokes, stroke_nl, duration_s, what):
    rate = _bolus_rate_nl_day(strokes, stroke_nl, duration_s)
    if basal_max + rate > limits.RATE_MAX_NL_DAY:
        raise LimitError("rate", "%s: %d nL/day on top of basal %d exceeds mechanism maximum %d nL/day"
                         % (what, rate, basal_max, limits.RATE_MAX_NL_DAY))


def clinician_bolus_strokes(dose_ng, duration_s, therapy, stroke_nl):
    # Replaces basal for its duration; still counted against the daily maximum
    # on top of the therapy's full 24-hour total (conservative). Returns strokes.
    what = "clinician bolus"
    _, max_daily, max_bolus = limits.drug_limits(therapy.drug)
    _check_bolus(dose_ng, duration_s, max_bolus, what)
    strokes = _bolus_strokes(dose_ng, therapy.conc_ng_ml, stroke_nl, what)
    _check_added_rate(0, strokes, stroke_nl, duration_s, what)
    total = therapy.daily_ng + volume_to_dose_ng(strokes * stroke_nl, therapy.conc_ng_ml)
    if total > max_daily:
        raise LimitError("daily_max", "%s: %d ng with the therapy's 24-hour total exceeds %d ng/day"
                         % (what, total, max_daily))
    return strokes


def priming_strokes(volume_nl, duration_s, stroke_nl):
    check_range("priming_volume", "priming volume", volume_nl, stroke_nl, limits.PRIMING_VOLUME_MAX_NL, "nL")
    check_range("bolus_duration", "priming duration", duration_s,
                limits.BOLUS_DURATION_MIN_S, limits.BOLUS_DURATION_MAX_S, "s")
    strokes = (volume_nl + stroke_nl - 1) // stroke_nl  # a catheter is filled, never under-filled
    _check_added_rate(0, strokes, stroke_nl, duration_s, "priming bolus")
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
