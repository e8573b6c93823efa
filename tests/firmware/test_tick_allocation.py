# The tick path allocates nothing, in every mode and across every transition.
# An allocation under the locked heap raises MemoryError inside Pump.tick,
# which turns it into a fault: the lockkit helpers assert there was none, and
# the last tests here show that they do see one.
# mprun: native (also run on the emulator's native build: tests/mprun.py)
import alarms
from fixtures import (HOUR_MS, MORPHINE_10MG_ML, continuous, expected_basal_strokes, flex, make_pump, run,
                      within_one_stroke)
from lockkit import locked_jumps, locked_ticks, tick_fault
from scheduler import KIND_BASAL, KIND_BRIDGE, KIND_CLINICIAN, KIND_DEMAND, KIND_PERIODIC, KIND_PRIMING


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
    pump.revise_catheter(100000)
    pump.priming_bolus(100000, 600)
    locked_jumps(pump, 800 * 1000)
    assert pump.reservoir.strokes[KIND_CLINICIAN] == 40
    assert pump.reservoir.strokes[KIND_PRIMING] == 200


def test_a_bolus_stopped_for_the_flash_ticks_without_allocating():
    pump = make_pump(full_rx())  # its periodic bolus is due at 00:30
    run(pump, 1000)
    pump.flash_error = OSError(5)  # a save failed: a bolus no saved state knows of is not started
    locked_ticks(pump, HOUR_MS)
    assert pump.reservoir.strokes[KIND_PERIODIC] == 0
    assert pump.reservoir.strokes[KIND_BASAL] > 0


def test_bridge_end_ticks_without_allocating():
    pump = make_pump(continuous())
    pump.catheter.assume_primed(20000)
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


def test_intermittent_motor_failures_and_their_warning_tick_without_allocating():
    pump = make_pump(continuous())
    run(pump, 1000)
    pump.board.motor.intermittent = 4  # the window of attempts slides and the warning is raised
    locked_jumps(pump, 2 * HOUR_MS)
    assert pump.alarms.active & (1 << alarms.STROKE_FAILURES) and pump.sched.running


def test_virtual_jumps_across_a_day_allocate_nothing():
    pump = make_pump(full_rx())
    run(pump, 1000)
    locked_jumps(pump, 24 * HOUR_MS)
    # A day of the flex profile and its periodic bolus (100 strokes), delivered.
    assert pump.reservoir.strokes[KIND_PERIODIC] == 100
    within_one_stroke(pump.reservoir.strokes[KIND_BASAL], expected_basal_strokes(pump, 0, 86401))
    assert pump.sched.running


def expect_tick_fault(drive, pump):
    # `drive` must fail, naming the MemoryError the tick turned into a fault.
    try:
        drive(pump, 2000)
    except AssertionError as e:
        assert "MemoryError" in str(e), e
        assert isinstance(tick_fault(pump), MemoryError) and not pump.sched.running
        return
    raise AssertionError("an allocating tick went unnoticed")


def test_an_allocating_scheduler_fails_the_locked_tick_helper():
    pump = make_pump(continuous())
    run(pump, 1000)
    pump.sched.advance = lambda secs, tod: [secs, tod]  # builds a list on the tick path
    expect_tick_fault(locked_ticks, pump)


def test_an_allocating_board_fails_the_locked_jump_helper():
    pump = make_pump(continuous())
    run(pump, 1000)
    board = pump.board
    board.ticks_ms = lambda: board.clock.ticks_ms() + 0.0  # a float on the tick path
    expect_tick_fault(locked_jumps, pump)


def test_midnight_ticks_without_allocating_and_the_day_is_logged_after():
    # The day's totals close inside the tick (counts move to the closed part);
    # service(), unlocked, writes the DAILY_TOTAL records.
    import events
    pump = make_pump(full_rx(), tod_s=86400 - 1200)
    run(pump, 1000)
    pump.demand_bolus()
    locked_ticks(pump, 1800 * 1000)  # a real-time loop across midnight, a bolus running
    locked_jumps(pump, 2 * 24 * HOUR_MS)  # virtual jumps across two more
    days = [(r[4], r[5] & 0xFF) for r in pump.log.of_type(events.DAILY_TOTAL)]
    assert days == [(20000, KIND_BASAL), (20000, KIND_DEMAND), (20001, KIND_BASAL), (20001, KIND_PERIODIC),
                    (20002, KIND_BASAL), (20002, KIND_PERIODIC)], days
    assert pump.totals.day == 20003


def test_midnight_merges_a_day_not_yet_logged_without_allocating():
    # With the log failing the closed day stays; the next midnight merges
    # the open day into it, inside the tick.
    import events
    pump = make_pump(full_rx(), tod_s=86400 - 600)
    run(pump, 1000)

    def failing(*a, **k):
        raise OSError(5)
    real, pump.log.append = pump.log.append, failing
    locked_jumps(pump, 25 * HOUR_MS)
    assert pump.totals.pending and pump.totals.c_last == 20001 and pump.totals.c_day == 20000
    pump.log.append = real
    run(pump, 120 * 1000)
    assert not pump.totals.pending and pump.log.of_type(events.DAILY_TOTAL)
