# Clock changes: the schedule follows the new time of day; volume follows
# elapsed time, so there is never a double dose and never a catch-up.
import events
from fixtures import (DAY_MS, HOUR_MS, basal_units, continuous, flex, make_pump, run, strokes,
                      within_one_stroke)
from scheduler import KIND_PERIODIC

STEPS = [(0, 2000000), (8 * 3600, 12000000), (20 * 3600, 4000000)]


def units(tod, secs):
    starts = [s for s, _ in STEPS]
    rates = [d for _, d in STEPS]  # at 10 mg/mL, ng/day / 10 = nL/day
    return basal_units(starts, [r // 10 for r in rates], tod, secs)


def test_clock_set_forward_switches_step_without_catch_up():
    pump = make_pump(flex(STEPS), tod_s=6 * 3600)
    run(pump, HOUR_MS)  # 06:00-07:00 in the night step
    pump.set_clock(pump.clock.day, 12 * 3600)  # jump to noon, into the day step
    run(pump, HOUR_MS)
    exact = (units(6 * 3600, 3600) + units(12 * 3600, 3600)) // (500 * 86400)
    within_one_stroke(strokes(pump), exact)


def test_clock_set_back_repeats_the_step_rate_but_never_doubles_volume():
    pump = make_pump(flex(STEPS), tod_s=10 * 3600)
    run(pump, 2 * HOUR_MS)
    pump.set_clock(pump.clock.day, 9 * 3600)  # back three hours
    run(pump, 2 * HOUR_MS)
    exact = (units(10 * 3600, 7200) + units(9 * 3600, 7200)) // (500 * 86400)
    within_one_stroke(strokes(pump), exact)


def test_clock_set_across_midnight_keeps_24_hour_volume_within_the_schedule():
    pump = make_pump(continuous(), tod_s=22 * 3600)
    run(pump, HOUR_MS)
    pump.set_clock(pump.clock.day + 1, 2 * 3600)
    run(pump, 23 * HOUR_MS)
    within_one_stroke(strokes(pump), 2000)


def test_periodic_bolus_is_not_repeated_when_the_clock_is_set_back_across_it():
    rx = continuous(dose_ng_day=2000000)
    rx["periodic"] = [{"time_s": 8 * 3600, "dose_ng": 1000000, "duration_s": 600}]
    pump = make_pump(rx, tod_s=7 * 3600)
    run(pump, 2 * HOUR_MS)  # fires at 08:00
    pump.set_clock(pump.clock.day, 7 * 3600)
    run(pump, 2 * HOUR_MS)  # crosses 08:00 again
    assert pump.reservoir.strokes[KIND_PERIODIC] == 200


def test_periodic_bolus_skipped_by_a_forward_jump_is_not_delivered_late():
    rx = continuous(dose_ng_day=2000000)
    rx["periodic"] = [{"time_s": 8 * 3600, "dose_ng": 1000000, "duration_s": 600}]
    pump = make_pump(rx, tod_s=7 * 3600)
    pump.set_clock(pump.clock.day, 9 * 3600)
    run(pump, 2 * HOUR_MS)
    assert pump.reservoir.strokes[KIND_PERIODIC] == 0


def test_clock_change_is_logged_with_old_and_new_time():
    pump = make_pump(continuous(), tod_s=3600)
    pump.set_clock(20005, 7200)
    rec = pump.log.of_type(events.CLOCK_SET)[-1]
    assert rec[4:8] == (20000, 3600, 20005, 7200)


def test_many_random_clock_changes_never_exceed_elapsed_time_volume():
    import random

    random.seed(7)
    pump = make_pump(flex(STEPS), tod_s=0)
    total_units = 0
    for _ in range(40):
        secs = random.randint(60, 6 * 3600)
        total_units += units(pump.clock.tod_s, secs)
        run(pump, secs * 1000)
        pump.set_clock(pump.clock.day, random.randint(0, 86399))
    # Phase is carried across changes, so the bound stays one stroke.
    within_one_stroke(strokes(pump), total_units // (500 * 86400))


def test_the_clock_stops_at_the_last_date_it_keeps_and_asks_to_be_set_while_therapy_goes_on():
    # 2149-06-06 (events.DAY_MAX: a log record holds the day in 16 bits) is
    # the last date; time running past it must not make dates the log and
    # the saved state cannot hold.
    import alarms
    pump = make_pump(continuous())  # 10 mg/day: 2000 strokes a day
    pump.set_clock(events.DAY_MAX, 23 * 3600)
    before = strokes(pump)
    run(pump, 2 * DAY_MS)
    assert (pump.clock.day, pump.clock.tod_s) == (events.DAY_MAX, 86399)
    assert pump.alarms.active & (1 << alarms.CLOCK_UNCERTAIN)
    within_one_stroke(strokes(pump) - before, 4000)  # delivery follows elapsed time
    assert pump.log.read(1, 100000)[-1][1] == events.DAY_MAX  # the log still writes, at the last date
    pump.set_clock(20000, 0)
    assert not pump.alarms.active & (1 << alarms.CLOCK_UNCERTAIN)
