# The tick path allocates nothing, in every mode and across every transition.
import micropython

from fixtures import HOUR_MS, MORPHINE_10MG_ML, continuous, flex, make_pump, run
from scheduler import KIND_BRIDGE, KIND_CLINICIAN, KIND_DEMAND, KIND_PERIODIC, KIND_PRIMING

STEP_MS = 250


def locked_ticks(pump, ms):
    # Advance in fixed small steps (a real-time loop) with the heap locked.
    clock = pump.board.clock
    micropython.heap_lock()
    try:
        for _ in range(ms // STEP_MS):
            clock.advance(STEP_MS)
            pump.tick()
    finally:
        micropython.heap_unlock()


def locked_jumps(pump, ms):
    # Advance event to event (virtual time) with the heap locked.
    clock = pump.board.clock
    end = clock.elapsed_ms + ms
    micropython.heap_lock()
    try:
        while clock.elapsed_ms < end:
            step = pump.ms_to_next_event()
            clock.advance(step if step > 0 else 1)
            pump.tick()
    finally:
        micropython.heap_unlock()


def full_rx():
    rx = flex([(0, 4000000), (3600, 8000000), (7200, 2000000)])
    rx["periodic"] = [{"time_s": 1800, "dose_ng": 500000, "duration_s": 600}]
    rx["demand"] = {"dose_ng": 200000, "duration_s": 300, "lockout_s": 900, "max_per_day": 6}
    return rx


def test_flex_steps_and_periodic_bolus_tick_without_allocating():
    pump = make_pump(full_rx(), tod_s=86400 - 600)  # crosses midnight and two steps
    run(pump, 1000)
    locked_ticks(pump, 3 * HOUR_MS)
    assert pump.reservoir.strokes[KIND_PERIODIC] > 0


def test_demand_bolus_ticks_without_allocating():
    pump = make_pump(full_rx())
    run(pump, 1000)
    pump.demand_bolus()
    locked_ticks(pump, HOUR_MS)
    assert pump.reservoir.strokes[KIND_DEMAND] == 40


def test_clinician_and_priming_boluses_tick_without_allocating():
    pump = make_pump(full_rx())
    run(pump, 1000)
    pump.clinician_bolus(200000, 600)
    locked_ticks(pump, 900 * 1000)
    pump.priming_bolus(100000, 600)
    locked_jumps(pump, 800 * 1000)
    assert pump.reservoir.strokes[KIND_CLINICIAN] == 40
    assert pump.reservoir.strokes[KIND_PRIMING] == 200


def test_bridge_end_ticks_without_allocating():
    pump = make_pump(continuous())
    pump.catheter_nl = 20000
    run(pump, 1000)
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(conc=2 * MORPHINE_10MG_ML))
    locked_jumps(pump, 2 * HOUR_MS)
    assert pump.reservoir.strokes[KIND_BRIDGE] == 40


def test_stall_stop_ticks_without_allocating():
    pump = make_pump(continuous())
    run(pump, 1000)
    pump.board.motor.stalled = True
    locked_jumps(pump, HOUR_MS)
    assert not pump.sched.running


def test_virtual_jumps_across_a_day_allocate_nothing():
    pump = make_pump(full_rx())
    run(pump, 1000)
    locked_jumps(pump, 24 * HOUR_MS)
