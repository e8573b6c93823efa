# Dosing engine: every infusion mode delivers what it should, read from the
# emulated board's stroke record.
# mprun: native (also run on the emulator's native build: tests/mprun.py)
import events
from fixtures import (DAY_MS, HOUR_MS, MORPHINE_10MG_ML, continuous, expected_basal_strokes, flex,
                      make_pump, run, strokes, within_one_stroke)
from scheduler import (DEMAND_DAILY_MAX, DEMAND_LOCKOUT, DEMAND_NOT_PRESCRIBED, DEMAND_OK, KIND_BASAL,
                       KIND_BRIDGE, KIND_CLINICIAN, KIND_DEMAND, KIND_PERIODIC, KIND_PRIMING)

FLEX = [(0, 6000000), (7 * 3600, 12000000), (12 * 3600 + 1800, 9000000), (22 * 3600, 3000000)]


def with_demand(rx, dose_ng=500000, duration_s=600, lockout_s=3600, max_per_day=4):
    rx["demand"] = {"dose_ng": dose_ng, "duration_s": duration_s, "lockout_s": lockout_s, "max_per_day": max_per_day}
    return rx


def strokes_between(pump, t0_ms, t1_ms):
    times, _ = pump.board.motor.times(0, 100000)
    return len([t for t in times if t0_ms <= t < t1_ms])


def test_flex_steps_deliver_each_steps_volume_in_its_window():
    pump = make_pump(flex(FLEX))
    run(pump, DAY_MS + 1000)
    for i, (start, _) in enumerate(FLEX):
        end = FLEX[i + 1][0] if i + 1 < len(FLEX) else 86400
        got = strokes_between(pump, start * 1000, end * 1000)
        exact = expected_basal_strokes(pump, 0, end) - expected_basal_strokes(pump, 0, start)
        assert abs(got - exact) <= 1, (i, got, exact)


def test_flex_over_a_week_has_no_drift_and_no_double_stroke_at_boundaries():
    pump = make_pump(flex(FLEX), tod_s=11 * 3600)
    run(pump, 7 * DAY_MS)
    within_one_stroke(strokes(pump), expected_basal_strokes(pump, 11 * 3600, 7 * 86400))


def test_delivery_crosses_midnight_without_double_or_missed_stroke():
    pump = make_pump(continuous(), tod_s=86400 - 30)
    run(pump, 60 * 1000)
    # 2000 strokes/day: the stroke at 43.2 s falls due 13.2 s after midnight.
    assert strokes(pump) == 1
    assert pump.clock.day == 20001


def test_periodic_bolus_fires_at_its_time_on_top_of_basal():
    rx = continuous(dose_ng_day=2000000)
    rx["periodic"] = [{"time_s": 8 * 3600, "dose_ng": 1000000, "duration_s": 600}]
    pump = make_pump(rx)
    run(pump, 8 * HOUR_MS - 1000)
    assert pump.reservoir.strokes[KIND_PERIODIC] == 0
    run(pump, 11 * 60 * 1000)
    # 1 mg at 10 mg/mL = 100 uL = 200 strokes within the 10 minutes.
    assert pump.reservoir.strokes[KIND_PERIODIC] == 200
    assert pump.reservoir.strokes[KIND_BASAL] > 0


def test_periodic_bolus_repeats_daily():
    rx = continuous(dose_ng_day=2000000)
    rx["periodic"] = [{"time_s": 8 * 3600, "dose_ng": 1000000, "duration_s": 600}]
    pump = make_pump(rx)
    run(pump, 3 * DAY_MS)
    assert pump.reservoir.strokes[KIND_PERIODIC] == 600
    assert len(pump.log.of_type(events.BOLUS_DELIVERED)) == 3


def test_clinician_bolus_replaces_basal_then_therapy_resumes():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    basal_before = pump.reservoir.strokes[KIND_BASAL]
    pump.clinician_bolus(500000, 1800)  # 0.5 mg over 30 min: 50 uL = 100 strokes
    run(pump, 1800 * 1000)
    assert pump.reservoir.strokes[KIND_CLINICIAN] == 100
    assert pump.reservoir.strokes[KIND_BASAL] == basal_before
    run(pump, HOUR_MS)
    assert pump.reservoir.strokes[KIND_BASAL] > basal_before
    assert pump.log.of_type(events.BOLUS_DELIVERED)[-1][4] == KIND_CLINICIAN


def test_priming_bolus_fills_the_catheter_as_volume_not_dose():
    pump = make_pump()  # new pump, no therapy yet
    pump.revise_catheter(250000)
    strokes_ = pump.priming_bolus(250000, 1200)  # 250 uL catheter in 20 min
    run(pump, 1300 * 1000)
    assert strokes_ == 500
    assert pump.reservoir.strokes[KIND_PRIMING] == 500
    assert pump.reservoir.strokes[KIND_BASAL] == 0


def test_bridge_bolus_delivers_catheter_volume_at_old_profile_then_new_therapy():
    pump = make_pump(continuous(dose_ng_day=10000000))  # 1 mL/day
    pump.catheter.assume_primed(100000)  # 100 uL = 200 strokes at the old 2000 strokes/day
    run(pump, HOUR_MS)
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(dose_ng_day=10000000, conc=2 * MORPHINE_10MG_ML))
    assert pump.sched.bridge_left == 200
    run(pump, 3 * HOUR_MS)  # 3 h of old profile = 250 strokes: the bridge ends inside
    assert pump.reservoir.strokes[KIND_BRIDGE] == 200
    assert pump.log.of_type(events.BRIDGE_DONE)
    basal_after_bridge = pump.reservoir.strokes[KIND_BASAL]
    run(pump, DAY_MS)
    # The new therapy runs at 0.5 mL/day: 1000 strokes a day.
    within_one_stroke(pump.reservoir.strokes[KIND_BASAL] - basal_after_bridge, 1000)


def test_a_catheter_revision_during_a_bridge_ends_it_and_the_new_profile_runs():
    # Morphine 10 mg/mL at 5 mg/day (1000 strokes a day), then hydromorphone
    # 10 mg/mL at 1 mg/day (200 a day): the old catheter goes with its
    # morphine, so once the new one is primed the hydromorphone runs at its
    # own 200 strokes a day, not at the morphine's 1000.
    pump = make_pump(continuous(dose_ng_day=5000000))
    pump.catheter.assume_primed(200000)
    run(pump, HOUR_MS)
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(dose_ng_day=1000000, drug="hydromorphone"))
    run(pump, HOUR_MS)
    assert pump.sched.bridge_left > 300  # the bridge runs
    pump.revise_catheter(100000)
    pump.priming_bolus(100000, 1200)
    run(pump, 1300 * 1000)
    before = pump.reservoir.strokes[KIND_BASAL] + pump.reservoir.strokes[KIND_BRIDGE]
    run(pump, 12 * HOUR_MS)
    after = pump.reservoir.strokes[KIND_BASAL] + pump.reservoir.strokes[KIND_BRIDGE]
    within_one_stroke(after - before, 100)
    assert pump.log.of_type(events.BRIDGE_DONE)


def test_demand_bolus_delivers_the_prescribed_dose():
    pump = make_pump(with_demand(continuous()))
    assert pump.demand_bolus() == (DEMAND_OK, 0)
    run(pump, 700 * 1000)
    assert pump.reservoir.strokes[KIND_DEMAND] == 100  # 0.5 mg = 50 uL


def test_demand_bolus_in_lockout_is_refused_with_time_until_allowed():
    pump = make_pump(with_demand(continuous()))
    pump.demand_bolus()
    run(pump, 1200 * 1000)
    code, wait = pump.demand_bolus()
    assert code == DEMAND_LOCKOUT
    assert wait == 3600 - 1200
    refused = pump.log.of_type(events.BOLUS_REFUSED)[-1]
    assert refused[5] == DEMAND_LOCKOUT and refused[6] == wait


def test_demand_bolus_beyond_daily_activations_is_refused_until_oldest_ages_out():
    pump = make_pump(with_demand(continuous(), max_per_day=2))
    for _ in range(2):
        assert pump.demand_bolus()[0] == DEMAND_OK
        run(pump, 3600 * 1000)
    code, wait = pump.demand_bolus()
    assert code == DEMAND_DAILY_MAX
    assert wait == 86400 - 7200
    run(pump, wait * 1000)
    assert pump.demand_bolus()[0] == DEMAND_OK


def test_demand_bolus_without_prescription_is_refused():
    pump = make_pump(continuous())
    assert pump.demand_bolus()[0] == DEMAND_NOT_PRESCRIBED


def test_failed_stroke_is_not_counted_as_delivered():
    pump = make_pump(continuous())
    pump.board.motor.stalled = True
    run(pump, HOUR_MS)
    assert pump.board.motor.failed == 3  # then the stall interlock stops delivery
    assert pump.reservoir.total_strokes() == 0
    assert pump.reservoir.remaining_nl == 20000000


def test_intermittent_stall_delays_but_never_loses_or_doubles_a_stroke():
    pump = make_pump(continuous())
    pump.board.motor.intermittent = 3  # every third attempt fails, then is retried
    run(pump, DAY_MS + 1000)
    assert strokes(pump) == 2000


def test_suspend_stops_delivery_and_resume_gives_no_catch_up():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    before = strokes(pump)
    pump.suspend()
    run(pump, 5 * HOUR_MS)
    assert strokes(pump) == before
    pump.resume()
    run(pump, 60 * 1000)
    assert strokes(pump) - before <= 2


def test_priming_a_revised_catheter_while_suspended_leaves_the_pump_suspended():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    pump.suspend()
    basal = pump.reservoir.strokes[KIND_BASAL]
    pump.revise_catheter(100000)
    pump.priming_bolus(100000, 600)
    run(pump, 2 * HOUR_MS)
    assert pump.reservoir.strokes[KIND_PRIMING] == 200
    assert pump.reservoir.strokes[KIND_BASAL] == basal
    assert pump.status()["state"] == "suspended"
