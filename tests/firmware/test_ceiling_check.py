# The 24-hour ceiling's command-time check (Pump._check_ceiling), made fast,
# answers what its definition answers: prescription.reach, Pump._future and
# DoseGuard.worst_window against a straightforward reference written here
# (its own arithmetic, no precomputation, every one of the 1441 windows), for
# random therapies, bridges, boluses and window histories. And the fast
# path's arithmetic stays in small ints: on the 31-bit port (src31, mpy31) a
# value above 2^30 is a heap long int, which fails under heap_lock.
import random

import micropython

import hal
import limits
import prescription
from catheter import CEILING_UNITS
from guard import CEILING_BUCKET_S, CEILING_BUCKETS
from prescription import Therapy
from pump import Pump
from scheduler import KIND_CLINICIAN, KIND_NONE

STROKE_NL = 500
DAY = 86400
CASES = 120


class Board(hal.Board):
    # Enough of a board for the pump's command checks (no motor, no flash).
    def ticks_ms(self):
        return 0


# -- the reference ------------------------------------------------------------
def ref_strokes(t, secs):
    # Most strokes in any `secs`: the highest step all the time, rounded up,
    # and one more; every periodic bolus; every demand activation the lockout
    # and the daily count allow.
    top = 0
    for rate in t.step_rate_nl_day:
        top = max(top, rate)
    per_stroke = DAY * STROKE_NL  # nL*s/day of one stroke
    n = (top * secs + per_stroke - 1) // per_stroke + 1
    for p in t.periodic:
        n += p[1]
    if t.demand is not None:
        strokes, _, lockout, per_day = t.demand
        n += strokes * min(per_day, secs // lockout + 1)
    return n


def ref_weight(t):
    # Ceiling units of a stroke: its dose over the drug's hard daily maximum, rounded up.
    num = STROKE_NL * t.conc_ng_ml * CEILING_UNITS
    den = 1000000 * limits.hard_daily(t.drug)
    return (num + den - 1) // den


def ref_future(therapy, cath_weight, extra, running, bridge, secs):
    # Most ceiling units in the next `secs`: the bolus strokes at the heavier
    # weight, the earlier drug's extra weight, and the larger of the two
    # profiles each at its own drug's weight.
    w = ref_weight(therapy) if therapy is not None else cath_weight
    old_t, old_w, old_n = bridge if bridge is not None else (None, 0, 0)
    heavy = max(w, old_w)
    total = (extra + running) * heavy + old_n * (heavy - w)
    if therapy is None:
        return total
    basal = ref_strokes(therapy, secs) * w
    if old_t is not None:
        basal = max(basal, ref_strokes(old_t, secs) * old_w)
    return total + basal


def ref_worst(oldest_first, future_s):
    # Every window from the one ending a minute from now to the one ending
    # 24 h and a minute from now: what it keeps of the past plus the future.
    past = sum(oldest_first)
    worst = 0
    for k in range(len(oldest_first)):
        worst = max(worst, past + future_s((k + 1) * CEILING_BUCKET_S))
        past -= oldest_first[k]
    return worst


# -- random cases -------------------------------------------------------------
def pick(lo, hi):
    # Mostly anywhere in [lo, hi], often at an end.
    r = random.randrange(8)
    if r == 0:
        return lo
    if r == 1:
        return hi
    return random.randint(lo, hi)


def random_therapy():
    drug = random.choice(sorted(limits.DRUGS))
    conc = pick(1, limits.DRUGS[drug][0])
    n = random.randint(1, limits.MAX_STEPS)
    starts = [0]
    while len(starts) < n:
        s = random.randint(1, DAY - 1)
        if s not in starts:
            starts.append(s)
    starts.sort()
    rates = [pick(limits.RATE_MIN_NL_DAY, limits.RATE_MAX_NL_DAY) for _ in range(n)]
    if random.randrange(4) == 0:
        # The largest remainder of a minute's worth of strokes (the widest intermediate).
        rates[random.randrange(n)] = random.randint(1, 30) * 720000 - 1
    periodic = []
    for i in range(random.randint(0, limits.MAX_PERIODIC)):
        periodic.append((i * 3600, pick(1, 300), pick(limits.BOLUS_DURATION_MIN_S, DAY)))
    demand = None
    if random.randrange(2):
        demand = (pick(1, 100), 60, pick(limits.LOCKOUT_MIN_S, limits.LOCKOUT_MAX_S),
                  pick(1, limits.DEMAND_MAX_PER_DAY))
    return Therapy(drug, conc, starts, rates, periodic, demand)


def random_command(pump):
    # A command's future: therapy (or none), a new bolus, the running bolus
    # kept or not, a bridge. Returns (Pump._future's, the reference's).
    therapy = random_therapy() if random.randrange(10) else None
    extra = 0 if random.randrange(2) else pick(1, 2000)
    s = pump.sched
    s.bolus_kind, s.bolus_left, s.owed_bolus = KIND_NONE, 0, 0
    if random.randrange(2):
        s.bolus_kind, s.bolus_left, s.owed_bolus = KIND_CLINICIAN, pick(0, 500), pick(0, 3)
    keep = random.randrange(3) != 0
    running = s.bolus_left + s.owed_bolus if keep and s.bolus_kind != KIND_NONE else 0
    pump.catheter.weight = pick(0, 30000)
    bridge = None
    if random.randrange(3) == 0:
        bridge = (random_therapy() if random.randrange(4) else None, pick(0, 30000), pick(0, 2000))
    fast = pump._future(therapy, extra, keep, bridge)
    cath = pump.catheter.weight

    def ref(secs):
        return ref_future(therapy, cath, extra, running, bridge, secs)

    return fast, ref


def random_history(guard, unit):
    # Fills the ceiling window as some delivery left it; returns the time.
    c = guard.ceiling
    c.index = random.randint(0, 1 << 20)  # the current bucket's number
    style = random.randrange(5)
    for j in range(c.n):
        v = 0
        if style == 1:  # dense: every minute a few strokes
            v = unit * random.randint(0, 3)
        elif style == 2:  # sparse
            v = unit * random.randint(1, 5) if random.randrange(40) == 0 else 0
        elif style == 3:  # steady: one or two strokes a minute
            v = unit * (1 + (j & 1))
        elif style == 4:  # a bolus: a run of heavy minutes
            v = unit * random.randint(5, 20) if 300 <= j < 300 + random.randint(0, 200) else 0
        c.used[j] = v
    c.used_sum = sum(c.used)
    return c.index * CEILING_BUCKET_S + random.randrange(CEILING_BUCKET_S)


def oldest_first(guard):
    c = guard.ceiling
    return [c.used[(c.index + 1 + k) % c.n] for k in range(c.n)]


def make():
    return Pump(Board())


# -- the tests ----------------------------------------------------------------
def test_reach_is_strokes_within_for_whole_minutes_and_seconds():
    random.seed(14)
    for _ in range(CASES):
        t = random_therapy()
        per_minute = prescription.reach(t, STROKE_NL, CEILING_BUCKET_S)
        for b in range(CEILING_BUCKETS + 1):
            assert per_minute(b) == ref_strokes(t, b * CEILING_BUCKET_S), (t.step_rate_nl_day, t.demand, b)
        for secs in (0, 1, 59, 61, 3599, DAY, DAY + 60, random.randint(0, DAY + 60)):
            assert prescription.strokes_within(t, STROKE_NL, secs) == ref_strokes(t, secs), secs


def test_future_is_the_reference_for_every_minute_of_the_day():
    random.seed(1441)
    pump = make()
    for _ in range(CASES):
        fast, ref = random_command(pump)
        for b in range(CEILING_BUCKETS + 1):
            assert fast(b) == ref(b * CEILING_BUCKET_S), b


def test_worst_window_is_the_largest_of_all_1441_windows():
    random.seed(24)
    pump = make()
    for case in range(CASES):
        fast, ref = random_command(pump)
        mono_s = random_history(pump.guard, pick(1, 30000))
        pump.guard.ceiling.roll(mono_s)
        expected = ref_worst(oldest_first(pump.guard), ref)
        got = pump.guard.worst_window(mono_s, fast)
        assert got == expected, (case, got, expected)


def test_worst_window_for_any_non_decreasing_future():
    # Flat stretches and jumps anywhere, ties with the past included.
    random.seed(60)
    pump = make()
    for case in range(CASES):
        steps = random.randrange(4)
        f = [0] * (CEILING_BUCKETS + 1)
        total = random.randint(0, 1000)
        for b in range(CEILING_BUCKETS + 1):
            if steps == 0 or random.randrange(steps * 3) == 0:
                total += random.randint(0, 50)
            f[b] = total
        mono_s = random_history(pump.guard, random.randint(1, 50))
        pump.guard.ceiling.roll(mono_s)
        expected = ref_worst(oldest_first(pump.guard), lambda secs: f[secs // CEILING_BUCKET_S])
        assert pump.guard.worst_window(mono_s, lambda b: f[b]) == expected, case


def test_worst_window_of_an_empty_or_rolled_window():
    pump = make()
    g = pump.guard
    assert g.worst_window(0, lambda b: 7 * b) == 7 * CEILING_BUCKETS
    g.ceiling.add(100, 50, 0)  # the current minute: every window from now on holds it
    assert g.worst_window(100, lambda b: b) == 50 + CEILING_BUCKETS
    assert g.worst_window(100 + CEILING_BUCKETS * CEILING_BUCKET_S, lambda b: b) == CEILING_BUCKETS  # rolled out


def test_the_check_allocates_nothing_so_no_value_leaves_the_small_ints():
    # The largest values a command check meets: the widest remainder of a
    # minute of strokes over the whole window, the heaviest drug at its hard
    # maximum in a full window, a bridge and a bolus. Under heap_lock a long
    # int would raise MemoryError (on the 31-bit port: above 2^30).
    pump = make()
    top = prescription.Therapy("ziconotide", 100000, [0, 40000], [720000 * 3 - 1, 216000], [(0, 4, 600)],
                               (2, 60, 900, 24))
    old = prescription.Therapy("morphine", 25000000, [0], [720000 - 1], [], (3, 60, 900, 24))
    w = pump._weight(top)
    assert w == ref_weight(top) and w > 23000  # the heaviest stroke of any drug here
    g = pump.guard
    for j in range(CEILING_BUCKETS):
        g.ceiling.used[j] = 2 * w
    g.ceiling.used_sum = 2 * w * CEILING_BUCKETS
    assert g.ceiling.used_sum < 1 << 30
    pump.sched.bolus_kind, pump.sched.bolus_left = KIND_CLINICIAN, 40
    fast = pump._future(top, 10, True, (old, pump._weight(old), 2000))
    values = []
    for b in range(CEILING_BUCKETS + 1):
        values.append(0)
    micropython.heap_lock()
    try:
        for b in range(CEILING_BUCKETS + 1):
            values[b] = fast(b)
        worst = g.worst_window(0, fast)
    finally:
        micropython.heap_unlock()
    ref = lambda secs: ref_future(top, 0, 10, 40, (old, pump._weight(old), 2000), secs)  # noqa: E731
    assert values == [ref(b * CEILING_BUCKET_S) for b in range(CEILING_BUCKETS + 1)]
    assert worst == ref_worst(oldest_first(g), ref)
