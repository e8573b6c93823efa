# Everything on the tick path stays a small int on an RP2040 (31-bit: above
# 2^30 an int is a heap long int), for every prescription the hard limits
# allow. Run by the 31-bit unix port too (the src31/mpy31 variants), where an
# out-of-range intermediate allocates and, under the locked heap, faults.
# mprun: native (also run on the emulator's native build: tests/mprun.py)
import time

import micropython

from fixtures import (DAY_MS, HOUR_MS, MORPHINE_10MG_ML, continuous, expected_basal_strokes, flex, make_pump, run,
                      strokes, within_one_stroke)
from lockkit import locked_jumps
from scheduler import DEMAND_DAILY_MAX, DEMAND_OK, KIND_CLINICIAN, KIND_DEMAND, KIND_PERIODIC
from virtual_clock import VirtualClock

NEAR_WRAP = time.ticks_add(0, -60000)  # board ticks a minute before they wrap


def test_integrity_check_of_a_prescription_allocates_nothing():
    # Hazard 12: the check once computed 75 * 43,200,000 (weight times the
    # basal period of a 500 nL stroke), a long int on an RP2040, every 5 min.
    pump = make_pump(continuous())
    assert pump.sched.basal_period == 43200000
    micropython.heap_lock()
    try:
        ok = pump.sched.intact() and pump.reservoir.intact()
    finally:
        micropython.heap_unlock()
    assert ok


def full_config(conc=MORPHINE_10MG_ML):
    rx = flex([(i * 8000, 1000000 + i * 1111111) for i in range(10)], conc=conc)
    rx["periodic"] = [{"time_s": 4000 + i * 9000, "dose_ng": 200000, "duration_s": 3600} for i in range(8)]
    rx["demand"] = {"dose_ng": 100000, "duration_s": 900, "lockout_s": 900, "max_per_day": 6}
    return rx


def changed(good):
    # Every single-bit flip of a 32-bit word, and small and large steps.
    for b in range(32):
        yield good ^ (1 << b) if b < 31 else good ^ (-1 << 31)
    for c in (1, -1, 1 << 16, 1 << 30):
        yield good + c


# The prescription in the scheduler, listed here apart from the code that
# seals and checks it.
RX_ARRAYS = ("step_start", "step_rate", "next_start", "next_rate", "per_time", "per_strokes", "per_duration")
RX_VALUES = ("n_steps", "next_n", "n_per", "demand_strokes", "demand_lockout", "demand_max", "demand_duration",
             "basal_period")


def test_every_single_changed_prescription_value_is_detected():
    # Whichever one value of the loaded prescription changes, and however,
    # the check fails; restored, it passes.
    s = make_pump(full_config()).sched
    assert s.intact()
    for name in RX_ARRAYS:
        arr = getattr(s, name)
        for i in range(len(arr)):
            good = arr[i]
            for bad in changed(good):
                arr[i] = bad
                assert not s.intact(), (name, i, good, bad)
            arr[i] = good
    for name in RX_VALUES:
        good = getattr(s, name)
        for bad in changed(good):
            setattr(s, name, bad)
            assert not s.intact(), (name, good, bad)
        setattr(s, name, good)
    assert s.intact()


def test_a_damaged_sealed_copy_is_detected_too():
    # The second copy is memory like the first: a flip in it is a mismatch.
    s = make_pump(full_config()).sched
    for copy in list(s.sealed_arrays) + [s.sealed_values]:
        for i in range(len(copy)):
            good = copy[i]
            for b in (0, 13, 30):
                copy[i] = good ^ (1 << b)
                assert not s.intact(), (i, b)
            copy[i] = good
    assert s.intact()


def test_a_new_prescription_and_a_bridge_end_are_sealed():
    # What the pump loads legitimately passes the check: a refill with a new
    # concentration and profile (loaded behind a bridge), and the bridge's
    # end, when the new profile takes over.
    pump = make_pump(continuous())
    pump.catheter.assume_primed(20000)  # 40 strokes of the old concentration
    run(pump, 1000)
    pump.refill(pump.reservoir.remaining_nl, 20000000, full_config(conc=2 * MORPHINE_10MG_ML))
    assert pump.bridging and pump.sched.next_n == 10
    assert pump.sched.intact()
    run(pump, DAY_MS)
    assert not pump.bridging and pump.sched.n_steps == 10
    assert pump.sched.intact()
    assert not pump.alarms.active


def test_virtual_clock_runs_past_the_ticks_range():
    # ticks_add takes |delta| < 2^29 on a 31-bit port: 13 days in one go.
    clock = VirtualClock(NEAR_WRAP)
    clock.advance(13 * DAY_MS)
    daily = VirtualClock(NEAR_WRAP)
    for _ in range(13):
        daily.advance(DAY_MS)
    assert clock.elapsed_ms == daily.elapsed_ms == 13 * DAY_MS
    assert clock.ticks_ms() == daily.ticks_ms()


def test_ticks_allocate_nothing_once_board_time_passes_2_to_the_30_ms():
    # 13 days: the bench's elapsed ms is a long int on a 31-bit port; the
    # board models only store it on the tick path.
    pump = make_pump(continuous(), start_ticks=NEAR_WRAP)
    run(pump, 13 * DAY_MS)
    before = strokes(pump)
    locked_jumps(pump, HOUR_MS)
    assert 82 <= strokes(pump) - before <= 84  # 2000 strokes a day


def test_the_highest_rate_ticks_without_allocating():
    # 24 mL/day (hydromorphone 1 mg/mL, 24 mg/day): a stroke every 1.8 s,
    # across the ticks wrap.
    pump = make_pump(continuous(24000000, conc=1000000, drug="hydromorphone"), start_ticks=NEAR_WRAP)
    assert pump.sched.step_rate[0] == 24000000
    locked_jumps(pump, 6 * HOUR_MS)
    within_one_stroke(strokes(pump), expected_basal_strokes(pump, 0, 6 * 3600))


def test_the_highest_concentration_ticks_without_allocating():
    # Bupivacaine 40 mg/mL at its 20 mg/day maximum: the heaviest strokes
    # the 24-hour ceiling weighs.
    pump = make_pump(continuous(20000000, conc=40000000, drug="bupivacaine"))
    locked_jumps(pump, DAY_MS + 1000)
    assert strokes(pump) == 1000


def test_eight_day_long_periodic_boluses_tick_without_allocating():
    # Eight periodic boluses of 24 h each keep the bolus channel busy and
    # the rest waiting, day after day.
    rx = continuous(480000)  # 0.048 mL/day, the lowest rate
    rx["periodic"] = [{"time_s": i * 3600, "dose_ng": 2000000, "duration_s": 86400} for i in range(8)]
    pump = make_pump(rx)
    locked_jumps(pump, 2 * DAY_MS)
    assert 780 <= pump.reservoir.strokes[KIND_PERIODIC] <= 790  # 400 strokes a day from 01:00
    assert pump.sched.per_pending


def test_the_most_demand_boluses_tick_without_allocating():
    # 24 activations a day at the shortest lockout, each lasting all of it.
    rx = continuous(1000000)
    rx["demand"] = {"dose_ng": 500000, "duration_s": 900, "lockout_s": 900, "max_per_day": 24}
    pump = make_pump(rx)
    codes = []
    for _ in range(25):
        codes.append(pump.demand_bolus()[0])
        locked_jumps(pump, 900 * 1000 + 1000)
    assert codes == [DEMAND_OK] * 24 + [DEMAND_DAILY_MAX]
    assert pump.reservoir.strokes[KIND_DEMAND] == 24 * 100


def test_day_long_boluses_tick_without_allocating():
    # The longest clinician bolus, then the longest demand bolus (lockout a day).
    rx = continuous(1000000)
    rx["demand"] = {"dose_ng": 2000000, "duration_s": 86400, "lockout_s": 86400, "max_per_day": 1}
    pump = make_pump(rx)
    pump.clinician_bolus(5000000, 86400)  # 500 uL: 1000 strokes
    locked_jumps(pump, DAY_MS + 1000)
    assert pump.reservoir.strokes[KIND_CLINICIAN] == 1000
    assert pump.demand_bolus()[0] == DEMAND_OK  # 200 uL: 400 strokes
    locked_jumps(pump, DAY_MS + 1000)
    assert pump.reservoir.strokes[KIND_DEMAND] == 400
