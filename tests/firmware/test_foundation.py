# Foundation: the core runs on the emulated board in virtual time.
import micropython

from fixtures import DAY_MS, HOUR_MS, MORPHINE_10MG_ML, continuous, make_pump, run, strokes
from lockkit import assert_no_tick_fault

STROKE_NL = 500


def test_default_rate_delivers_the_prescribed_strokes_in_a_day():
    # 10 mg/day at 10 mg/mL = 1 mL/day = 2000 strokes of 500 nL.
    pump = make_pump(continuous())
    run(pump, DAY_MS + 1000)  # the last stroke of the day falls due at 24:00:00
    assert strokes(pump) == 2000, strokes(pump)


def test_strokes_are_evenly_spaced():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    times, _ = pump.board.motor.times(0, 1000)
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 86400 s / 2000 strokes = 43.2 s, on a one-second grid.
    assert min(gaps) >= 43000 and max(gaps) <= 44000, (min(gaps), max(gaps))


def test_ticks_wrapping_during_delivery_loses_nothing():
    # Start the board clock a minute before ticks_ms wraps.
    import time

    pump = make_pump(continuous(), start_ticks=time.ticks_add(0, -60000))
    run(pump, DAY_MS + 1000)  # the last stroke of the day falls due at 24:00:00
    assert strokes(pump) == 2000


def test_reservoir_is_debited_once_per_completed_stroke():
    pump = make_pump(continuous(), fill_nl=20000000)
    run(pump, DAY_MS + 1000)  # the last stroke of the day falls due at 24:00:00
    assert pump.reservoir.remaining_nl == 20000000 - 2000 * STROKE_NL


def test_ten_thousand_ticks_allocate_nothing():
    pump = make_pump(continuous(dose_ng_day=200000000 // 10, conc=MORPHINE_10MG_ML))
    clock = pump.board.clock
    run(pump, 1000)  # warm up: first-time attribute caches
    micropython.heap_lock()
    try:
        for _ in range(10000):
            clock.advance(100)
            pump.tick()
    finally:
        micropython.heap_unlock()
    assert_no_tick_fault(pump)  # Pump.tick turns a MemoryError into a fault
    assert strokes(pump) > 0
