# Safety interlocks and alarms, each provoked on the emulated board: the motor
# stops (or does not), the alarm is raised, and strokes that did not complete
# leave the ledger untouched.
import alarms
import events
from fixtures import DAY_MS, HOUR_MS, MORPHINE_10MG_ML, continuous, flex, make_pump, raises_limit, run, strokes
from scheduler import KIND_BASAL


def active(pump, alarm):
    return bool(pump.alarms.active & (1 << alarm))


def raised_in_log(pump, alarm):
    return any(r[4] == alarm for r in pump.log.of_type(events.ALARM_RAISED))


def test_motor_stall_stops_delivery_after_three_failed_strokes_with_critical_alarm():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    before = pump.reservoir.remaining_nl
    pump.board.motor.stalled = True
    run(pump, HOUR_MS)
    assert pump.board.motor.failed == 3
    assert active(pump, alarms.MOTOR_STALL) and raised_in_log(pump, alarms.MOTOR_STALL)
    assert not pump.sched.running and not pump.board.motor.running
    assert pump.reservoir.remaining_nl == before


def test_stall_does_not_restart_by_itself_and_no_bolus_follows_the_clinicians_resume():
    pump = make_pump(continuous())
    pump.board.motor.stalled = True
    run(pump, 6 * HOUR_MS)
    pump.board.motor.stalled = False
    run(pump, HOUR_MS)
    assert strokes(pump) == 0
    pump.resume()
    run(pump, 60 * 1000)
    assert strokes(pump) <= 2  # no catch-up of the hours stopped
    assert not active(pump, alarms.MOTOR_STALL)


STROKE_MS = 43200  # continuous(): 1 mL/day, a 500 nL stroke every 43.2 s


def run_until_failed(pump, n):
    # Runs stroke by stroke until the motor has failed n attempts.
    while pump.board.motor.failed < n:
        run(pump, STROKE_MS)


def test_intermittent_motor_failures_raise_the_stroke_failures_warning_and_therapy_continues():
    pump = make_pump(continuous())
    pump.board.motor.intermittent = 5  # every 5th attempt fails: never 3 in a row, so never a stall
    run_until_failed(pump, 2)
    assert not active(pump, alarms.STROKE_FAILURES)
    run_until_failed(pump, 3)
    assert active(pump, alarms.STROKE_FAILURES) and not alarms.is_critical(alarms.STROKE_FAILURES)
    run(pump, DAY_MS)
    assert pump.sched.running and not active(pump, alarms.MOTOR_STALL)
    assert strokes(pump) >= 2000  # retried: the day's dose is delivered
    assert len([r for r in pump.log.of_type(events.ALARM_RAISED) if r[4] == alarms.STROKE_FAILURES]) == 1


def test_three_motor_failures_within_29_attempts_warn_and_further_apart_do_not():
    warned = make_pump(continuous())
    warned.board.motor.intermittent = 14  # attempts 14, 28 and 42: 29 attempts from first to third
    run(warned, DAY_MS)
    assert active(warned, alarms.STROKE_FAILURES)
    quiet = make_pump(continuous())
    quiet.board.motor.intermittent = 15  # 15, 30, 45: never three among 29
    run(quiet, DAY_MS)
    assert quiet.board.motor.failed > 100 and not active(quiet, alarms.STROKE_FAILURES)


def test_acknowledging_stroke_failures_clears_it_and_only_new_failures_raise_it_again():
    pump = make_pump(continuous())
    pump.board.motor.intermittent = 5
    run_until_failed(pump, 3)
    pump.board.motor.intermittent = 0
    assert pump.acknowledge(alarms.STROKE_FAILURES) == (True, True)
    assert not active(pump, alarms.STROKE_FAILURES)
    pump.board.motor.intermittent = 5
    failed = pump.board.motor.failed
    run_until_failed(pump, failed + 2)
    assert not active(pump, alarms.STROKE_FAILURES)  # the failures before the acknowledgement do not count
    run_until_failed(pump, failed + 3)
    assert active(pump, alarms.STROKE_FAILURES)


def test_a_stall_raises_the_stall_not_the_stroke_failures_warning():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    pump.board.motor.stalled = True
    run(pump, HOUR_MS)
    assert active(pump, alarms.MOTOR_STALL) and not active(pump, alarms.STROKE_FAILURES)


def test_strokes_refused_for_catheter_pressure_are_not_motor_failures():
    pump = make_pump(continuous())
    pump.board.pressure = 250
    run(pump, HOUR_MS)
    assert active(pump, alarms.OCCLUSION) and not active(pump, alarms.STROKE_FAILURES)


def test_occlusion_pressure_over_threshold_stops_delivery_without_counting_strokes():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    before = (pump.reservoir.remaining_nl, pump.reservoir.total_strokes())
    pump.board.pressure = 250  # mmHg above baseline: catheter occluded
    run(pump, HOUR_MS)
    assert active(pump, alarms.OCCLUSION) and not pump.sched.running
    assert (pump.reservoir.remaining_nl, pump.reservoir.total_strokes()) == before


def test_occlusion_clearing_gives_no_unintended_bolus():
    pump = make_pump(continuous())
    pump.board.pressure = 250
    run(pump, 3 * HOUR_MS)
    pump.board.pressure = 0
    pump.resume()
    run(pump, 10 * 60 * 1000)
    assert pump.reservoir.total_strokes() <= 14  # 10 minutes at 2000/day is 13.9 strokes


def test_low_reservoir_raises_non_critical_alarm_and_keeps_delivering():
    pump = make_pump(continuous(), fill_nl=2100000)  # 2.1 mL, low threshold 2 mL
    run(pump, 3 * HOUR_MS)
    assert active(pump, alarms.RESERVOIR_LOW)
    assert not alarms.is_critical(alarms.RESERVOIR_LOW)
    assert pump.sched.running


def test_reservoir_at_residual_volume_stops_with_critical_alarm():
    pump = make_pump(continuous(), fill_nl=1100000)  # 0.1 mL above the 1 mL residual
    run(pump, DAY_MS)
    assert active(pump, alarms.RESERVOIR_EMPTY)
    assert pump.reservoir.remaining_nl == 1000000
    assert strokes(pump) == 200 and not pump.sched.running


def test_refill_after_empty_restarts_therapy():
    pump = make_pump(continuous(), fill_nl=1100000)
    run(pump, DAY_MS)
    pump.refill(1000000, 20000000)
    assert not active(pump, alarms.RESERVOIR_EMPTY) and pump.sched.running
    run(pump, HOUR_MS)
    assert strokes(pump) > 200


def test_battery_elective_replacement_indicator_is_non_critical():
    pump = make_pump(continuous())
    pump.board.battery = 2850
    run(pump, 6 * 60 * 1000)
    assert active(pump, alarms.BATTERY_ERI) and pump.sched.running


def test_battery_end_of_service_stops_therapy():
    pump = make_pump(continuous())
    pump.board.battery = 2650
    run(pump, 6 * 60 * 1000)
    assert active(pump, alarms.BATTERY_EOS) and not pump.sched.running


def test_dose_guard_stops_a_scheduler_that_asks_for_too_much():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    pump.sched.owed_basal += 1000  # a scheduler fault: a burst of strokes
    run(pump, HOUR_MS)
    assert active(pump, alarms.DOSE_GUARD) and not pump.sched.running
    assert pump.guard.hour.used_sum <= pump.guard.hour_max


def test_dose_guard_does_not_trip_on_a_lower_rate_programmed_mid_hour():
    pump = make_pump(continuous(dose_ng_day=20000000))
    run(pump, 2 * HOUR_MS)
    pump.program(continuous(dose_ng_day=2000000))
    run(pump, 3 * HOUR_MS)
    assert not active(pump, alarms.DOSE_GUARD)


def test_corrupted_prescription_in_memory_stops_therapy_with_integrity_alarm():
    pump = make_pump(flex([(0, 4000000), (43200, 8000000)]))
    run(pump, HOUR_MS)
    pump.sched.step_rate[1] ^= 1 << 20  # a bit flips in RAM
    run(pump, 6 * 60 * 1000)
    assert active(pump, alarms.INTEGRITY) and not pump.sched.running


def test_corrupted_ledger_stops_therapy_with_integrity_alarm():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    pump.reservoir.remaining_nl += 4096
    run(pump, 6 * 60 * 1000)
    assert active(pump, alarms.INTEGRITY)


class Boom(Exception):
    pass


def test_unexpected_exception_in_the_loop_goes_to_safe_state_and_logs_the_cause():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)

    def broken():
        raise Boom("sensor bus")

    pump.board.battery_mv = broken
    run(pump, 6 * 60 * 1000)
    assert active(pump, alarms.INTERNAL_FAULT) and not pump.sched.running
    assert not pump.board.motor.running
    fault = pump.log.of_type(events.FAULT)[-1]
    assert b"Boom: sensor bus" in fault[8]


def test_critical_alarm_sounds_two_tone_and_repeats():
    pump = make_pump(continuous())
    pump.board.motor.stalled = True
    run(pump, 20 * 60 * 1000)
    tones = [pump.board.tones[2 * i + 1] for i in range(pump.board.tone_changes)]
    stall = alarms.MOTOR_STALL
    assert alarms.TONE_A[stall] in tones and alarms.TONE_B[stall] in tones
    starts = [pump.board.tones[2 * i] for i in range(pump.board.tone_changes)
              if pump.board.tones[2 * i + 1] == alarms.TONE_A[stall]]
    assert starts[-1] - starts[0] >= alarms.REPEAT_S[stall] * 1000  # sounded again


def test_acknowledging_silences_then_a_persisting_critical_alarm_comes_back():
    pump = make_pump(continuous())
    pump.board.motor.stalled = True
    run(pump, 60 * 1000)
    assert pump.acknowledge(alarms.MOTOR_STALL) == (True, True)
    n = pump.board.tone_changes
    run(pump, 30 * 60 * 1000)
    assert pump.board.tone_changes == n  # silent for a while
    run(pump, 60 * 60 * 1000)
    assert pump.board.tone_changes > n  # still stalled: it sounds again
    assert pump.log.of_type(events.ALARM_ACKNOWLEDGED)


def test_non_critical_alarm_has_its_own_single_tone():
    pump = make_pump(continuous(), fill_nl=2100000)
    run(pump, 3 * HOUR_MS)
    low = alarms.RESERVOIR_LOW
    tones = [pump.board.tones[2 * i + 1] for i in range(pump.board.tone_changes)]
    assert alarms.TONE_A[low] in tones
    assert all(t in (0, alarms.TONE_A[low]) for t in tones)


def test_alarm_date_reached_raises_and_acknowledge_clears_it():
    pump = make_pump(continuous())
    pump.set_alarm_date(pump.clock.day + 2)
    run(pump, 2 * DAY_MS + 2 * 60 * 1000)
    assert active(pump, alarms.ALARM_DATE)
    pump.acknowledge(alarms.ALARM_DATE)
    assert not active(pump, alarms.ALARM_DATE) and pump.alarm_day == 0


def test_an_alarm_date_not_after_today_is_refused_and_changes_nothing():
    # A date already reached would only sound at once: a mistyped year.
    pump = make_pump(continuous())
    pump.set_alarm_date(pump.clock.day + 30)
    for day in (pump.clock.day, pump.clock.day - 400, events.DAY_MAX + 1):
        raises_limit("alarm_date", pump.set_alarm_date, day)
        assert pump.alarm_day == pump.clock.day + 30
    pump.set_alarm_date(0)  # off
    assert pump.alarm_day == 0


def test_alarm_cleared_when_its_condition_ends_is_logged():
    pump = make_pump(continuous())
    pump.board.battery = 2850
    run(pump, 6 * 60 * 1000)
    pump.board.battery = 3100
    run(pump, 6 * 60 * 1000)
    assert not active(pump, alarms.BATTERY_ERI)
    assert any(r[4] == alarms.BATTERY_ERI for r in pump.log.of_type(events.ALARM_CLEARED))


def test_refill_discrepancy_over_threshold_warns_until_acknowledged():
    pump = make_pump(continuous(), fill_nl=20000000)
    run(pump, 10 * DAY_MS)  # 10 mL delivered: 10 mL expected
    expected = pump.reservoir.remaining_nl
    result = pump.refill(expected - 3000000, 20000000)  # 3 mL less came back: 30 %
    assert result["warning"] and result["discrepancy_nl"] == -3000000
    assert active(pump, alarms.REFILL_DISCREPANCY)
    pump.acknowledge(alarms.REFILL_DISCREPANCY)
    assert not active(pump, alarms.REFILL_DISCREPANCY)


def test_small_refill_discrepancy_is_recorded_without_warning():
    pump = make_pump(continuous(), fill_nl=20000000)
    run(pump, 10 * DAY_MS)
    result = pump.refill(pump.reservoir.remaining_nl - 500000, 20000000)
    assert not result["warning"] and result["discrepancy_nl"] == -500000
    assert pump.log.of_type(events.REFILL)[-1][7] == -500000


def test_overfill_beyond_capacity_is_rejected_and_changes_nothing():
    from fixtures import raises_limit

    pump = make_pump(continuous())
    before = pump.reservoir.remaining_nl
    raises_limit("overfill", pump.refill, before, 20000001)
    assert pump.reservoir.remaining_nl == before and not pump.log.of_type(events.REFILL)


def test_concentration_change_at_refill_needs_and_gets_a_bridge_bolus():
    pump = make_pump(continuous())
    pump.catheter.assume_primed(200000)
    run(pump, HOUR_MS)
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(conc=2 * MORPHINE_10MG_ML))
    assert pump.sched.bridge_left == 400
    assert pump.reservoir.conc_ng_ml == 2 * MORPHINE_10MG_ML


def test_priming_debits_volume_but_not_dose():
    pump = make_pump()
    pump.reservoir.conc_ng_ml = MORPHINE_10MG_ML
    pump.revise_catheter(200000)
    pump.priming_bolus(200000, 1200)
    run(pump, 1300 * 1000)
    assert pump.reservoir.remaining_nl == 20000000 - 200000
    assert pump.reservoir.drug_delivered_ng() == 0


def test_ninety_days_with_two_refills_balance_to_the_nanolitre():
    pump = make_pump(continuous(dose_ng_day=4000000), fill_nl=20000000)  # 0.4 mL/day
    for day in range(90):
        if day in (30, 60):
            pump.refill(pump.reservoir.remaining_nl, 20000000)
        run(pump, DAY_MS)
    r = pump.reservoir
    assert r.balance_nl() == 0
    assert r.volume_in_nl == 60000000
    assert r.delivered_nl() == pump.board.motor.completed * 500
    assert r.volume_in_nl == r.delivered_nl() + r.withdrawn_nl + r.remaining_nl
    assert r.strokes[KIND_BASAL] == pump.board.motor.completed


def test_dose_guard_does_not_trip_on_a_demand_bolus_after_a_lower_rate_follows_a_full_day():
    # Found by the JSON-schema campaign (issue #13): a day at 10 mg/day, then
    # 4 mg/day with a demand bolus pressed at once. The old rate's strokes
    # must not count against the new therapy's day.
    pump = make_pump(continuous())
    run(pump, DAY_MS)
    rx = continuous(dose_ng_day=4000000)
    rx["demand"] = {"dose_ng": 200000, "duration_s": 300, "lockout_s": 1800, "max_per_day": 4}
    pump.program(rx)
    assert pump.demand_bolus()[0] == 0
    run(pump, HOUR_MS)
    assert not active(pump, alarms.DOSE_GUARD) and pump.sched.running


def test_dose_guard_still_stops_a_runaway_of_the_new_therapy_after_a_lower_rate():
    pump = make_pump(continuous())
    run(pump, DAY_MS)
    pump.program(continuous(dose_ng_day=4000000))
    run(pump, HOUR_MS)
    pump.sched.owed_basal += 1000  # a scheduler fault under the new therapy
    run(pump, HOUR_MS)
    assert active(pump, alarms.DOSE_GUARD) and not pump.sched.running


def test_dose_guard_does_not_trip_on_demand_boluses_after_a_change_to_a_higher_daily_maximum():
    # Found by driving the emulator (hazard 36): a day at 10 mg/day, then
    # 8 mg/day with three 1 mg demand boluses a day (an 11 mg/day maximum).
    # The old rate's strokes counted against the new therapy's day, which
    # was higher, so nothing was exempted: the second demand bolus tripped.
    pump = make_pump(continuous())
    run(pump, DAY_MS)
    rx = continuous(dose_ng_day=8000000)
    rx["demand"] = {"dose_ng": 1000000, "duration_s": 600, "lockout_s": 900, "max_per_day": 3}
    pump.program(rx)
    for _ in range(3):
        assert pump.demand_bolus()[0] == 0
        run(pump, 16 * 60 * 1000)
    run(pump, HOUR_MS)
    assert not active(pump, alarms.DOSE_GUARD) and pump.sched.running


def bridged_to_a_lower_rate():
    # 10 mg/day of 10 mg/mL (1 mL/day), refilled with 20 mg/mL at 4 mg/day
    # (0.2 mL/day): the catheter's 0.2 mL of the old strength goes first at
    # the old rate, then the new rate, a fifth of the volume.
    from flashkit import FlashPump, first_fill, new_image
    fp = FlashPump(new_image())
    pump = fp.power_on()
    first_fill(pump)
    pump.catheter.assume_primed(200000)
    run(pump, 2 * HOUR_MS)
    pump.refill(pump.reservoir.remaining_nl, 10000000, continuous(dose_ng_day=4000000, conc=2 * MORPHINE_10MG_ML))
    run(pump, 6 * HOUR_MS)
    assert not pump.bridging
    return fp, pump


def test_a_reset_after_a_bridge_to_a_lower_rate_does_not_trip_the_dose_guard():
    # Found by driving the emulator (hazard 36): the bridge's strokes at the
    # old rate were exempted from the new, lower limits only while the pump
    # ran; a reset brought the new limits back on windows that still held
    # them, and the guard stopped therapy at the first stroke for a day.
    fp, pump = bridged_to_a_lower_rate()
    board = fp.board
    fp.power_off()
    pump = fp.power_on(board=board)
    before = board.motor.completed
    run(pump, 4 * HOUR_MS)
    assert not active(pump, alarms.DOSE_GUARD) and pump.sched.running
    assert board.motor.completed - before >= 4 * 400 // 24 - 1  # 400 strokes a day


def test_the_dose_guard_holds_the_new_rate_once_a_bridge_ends():
    # Found by driving the emulator (hazard 36): after the bridge the guard
    # kept the old profile's (five times higher) limits, and a scheduler
    # fault got 69 strokes through in the hour before it tripped.
    fp, pump = bridged_to_a_lower_rate()
    before = fp.board.motor.completed
    pump.sched.owed_basal += 1000  # a scheduler fault under the new therapy
    run(pump, HOUR_MS)
    assert active(pump, alarms.DOSE_GUARD) and not pump.sched.running
    # The new therapy's hour: 400 strokes a day, about 17, and the guard's margin.
    assert fp.board.motor.completed - before <= 400 // 24 + 1 + 2 + 1, fp.board.motor.completed - before


def test_a_resume_before_any_therapy_ends_the_suspend_it_answers():
    # Found by the model soak (seed 9108): suspended before the first
    # therapy, a priming stopped by an occlusion, then a resume: it cleared
    # the occlusion and was acknowledged, but the pump stayed suspended, and
    # the therapy programmed next did not start.
    pump = make_pump(None)
    pump.revise_catheter(118078)
    pump.suspend()
    pump.board.pressure = 300
    pump.priming_bolus(47592, 1996)
    run(pump, 1000)
    assert active(pump, alarms.OCCLUSION)
    pump.board.pressure = 0
    pump.resume()
    assert not pump.suspended
    pump.reservoir.fill(20000000)
    pump.program(continuous())
    before = strokes(pump)
    run(pump, HOUR_MS)
    assert strokes(pump) - before >= 80  # 1 mL/day
