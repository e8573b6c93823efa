"""Property-based tests of the dosing engine: the same firmware modules, run
under CPython, against an independent exact reference (fractions)."""
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import firmware_on_cpython  # noqa: F401  (must come before firmware imports)
import limits
import prescription
from limits import LimitError
from pump import Pump
from scheduler import DEMAND_OK
from unix_board import UnixBoard, run_virtual

STROKE_NL = 500
CONC = 10_000_000  # morphine 10 mg/mL
DAY = 86400
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def flex_rx(draw):
    n = draw(st.integers(1, limits.MAX_STEPS))
    starts = sorted(draw(st.sets(st.integers(1, DAY - 1), min_size=n - 1, max_size=n - 1)))
    doses = draw(st.lists(st.integers(500_000, 19_000_000), min_size=n, max_size=n))
    return {"drug": "morphine", "conc_ng_ml": CONC,
            "steps": [{"start_s": s, "dose_ng_day": d} for s, d in zip([0] + starts, doses)]}


def exact_nl(therapy, tod, secs):
    total = Fraction(0)
    starts, rates = therapy.step_start_s, therapy.step_rate_nl_day
    for t in range(tod, tod + secs):
        i = max(j for j, s in enumerate(starts) if s <= t % DAY)
        total += Fraction(rates[i], DAY)
    return total


def delivered(pump):
    # Completed strokes plus the one the motor is running (due, not yet confirmed).
    return pump.board.motor.completed + (1 if pump.stroking else 0)


def make(rx, tod=0):
    board = UnixBoard(virtual=True, start_ticks=(1 << 62) - 5000)
    pump = Pump(board)
    pump.clock.set(20000, tod)
    pump.reservoir.fill(20_000_000)
    pump.program(rx)
    return pump


@SETTINGS
@given(flex_rx(), st.integers(0, DAY - 1), st.integers(1, 3 * DAY))
def test_delivered_volume_equals_prescribed_within_one_stroke(rx, tod, secs):
    pump = make(rx, tod)
    run_virtual(pump, secs * 1000)
    exact = exact_nl(pump.therapy, tod, secs) / STROKE_NL
    assert exact - 1 <= delivered(pump) <= exact


@SETTINGS
@given(flex_rx(), st.lists(st.tuples(st.integers(60, 8 * 3600), st.integers(0, DAY - 1)), min_size=1, max_size=8))
def test_clock_changes_never_deliver_more_than_elapsed_time_allows(rx, plan):
    pump = make(rx)
    exact = Fraction(0)
    for secs, new_tod in plan:
        exact += exact_nl(pump.therapy, pump.clock.tod_s, secs)
        run_virtual(pump, secs * 1000)
        pump.set_clock(pump.clock.day, new_tod)
    assert exact / STROKE_NL - 1 <= delivered(pump) <= exact / STROKE_NL


@SETTINGS
@given(st.integers(900, 6 * 3600), st.integers(1, 8),
       st.lists(st.integers(1, 4 * 3600), min_size=1, max_size=40))
def test_demand_boluses_respect_lockout_and_daily_maximum(lockout, per_day, gaps):
    rx = {"drug": "morphine", "conc_ng_ml": CONC, "steps": [{"start_s": 0, "dose_ng_day": 2_000_000}],
          "demand": {"dose_ng": 100_000, "duration_s": 300, "lockout_s": lockout, "max_per_day": per_day}}
    pump = make(rx)
    started = []
    t = 0
    for gap in gaps:
        run_virtual(pump, gap * 1000)
        t += gap
        if pump.demand_bolus()[0] == DEMAND_OK:
            started.append(t)
    for a, b in zip(started, started[1:]):
        assert b - a >= lockout
    for a in started:
        assert len([b for b in started if a <= b < a + DAY]) <= per_day


def independent_daily_ng(rx):
    conc = rx["conc_ng_ml"]
    steps = rx["steps"]
    total = Fraction(0)
    for i, s in enumerate(steps):
        end = steps[i + 1]["start_s"] if i + 1 < len(steps) else DAY
        rate = round(Fraction(s["dose_ng_day"] * 1_000_000, conc))
        total += Fraction(rate * (end - s["start_s"]), DAY)
    return total * conc / 1_000_000


@SETTINGS
@given(flex_rx(), st.integers(1_000_000, 25_000_000))
def test_no_accepted_prescription_exceeds_the_daily_maximum(rx, conc):
    rx["conc_ng_ml"] = conc
    try:
        therapy = prescription.validate(rx, STROKE_NL)
    except LimitError:
        return
    assert independent_daily_ng(rx) <= limits.DRUGS["morphine"][1] + 1
    assert all(limits.RATE_MIN_NL_DAY <= r <= limits.RATE_MAX_NL_DAY for r in therapy.step_rate_nl_day)


@SETTINGS
@given(flex_rx(), st.integers(0, 2 * DAY))
def test_a_refused_program_changes_nothing(rx, secs):
    pump = make({"drug": "morphine", "conc_ng_ml": CONC, "steps": [{"start_s": 0, "dose_ng_day": 5_000_000}]})
    run_virtual(pump, secs * 1000)
    bad = dict(rx, steps=rx["steps"] + [{"start_s": 0, "dose_ng_day": 1}])  # out of order
    before = (pump.therapy, list(pump.sched.step_rate), pump.sched.basal_phase, pump.rx)
    try:
        pump.program(bad)
    except LimitError:
        pass
    assert before == (pump.therapy, list(pump.sched.step_rate), pump.sched.basal_phase, pump.rx)
