# Hazards found by an independent review (issue #12), each provoked as the
# reviewer did. Every test failed on the firmware before the fix. Doses are
# checked by an oracle of the test's own: the motor's stroke record (board
# times of completed strokes) and the concentrations the test put in.
import alarms
import events
from fixtures import DAY_MS, HOUR_MS, continuous, make_pump, raises_limit, run, strokes
from flashkit import FlashPump, new_image
from scheduler import KIND_CLINICIAN, KIND_DEMAND

MORPHINE_25 = 25000000  # ng/mL
STROKE_NL = 500


def stroke_times(pump):
    m = pump.board.motor
    return [m.record[i % len(m.record)] for i in range(m.completed)]


def most_in_24h(times, since_ms=0):
    # Largest number of strokes in any 24-hour window (two pointers).
    times = [t for t in times if t >= since_ms]
    best, lo = 0, 0
    for hi in range(len(times)):
        while times[hi] - times[lo] >= DAY_MS:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def strokes_between(pump, start_ms, end_ms):
    return len([t for t in stroke_times(pump) if start_ms <= t < end_ms])


def active(pump, alarm):
    return bool(pump.alarms.active & (1 << alarm))


def sounded(pump):
    # Any tone on the buzzer so far (the board records every change).
    b = pump.board
    return any(b.tones[2 * i + 1] for i in range(min(b.tone_changes, len(b.tones) // 2)))


def sample_battery_now(pump, mv):
    # The next housekeeping pass reads `mv` once.
    pump.board.battery = mv
    pump.next_housekeeping = pump.now_s()
    run(pump, 1000)


def test_clinician_boluses_add_up_against_the_24_hour_ceiling():
    # Hazard 1: six 5 mg morphine boluses back to back were all accepted.
    pump = make_pump(continuous(10000000, conc=MORPHINE_25))
    run(pump, DAY_MS)
    refused = 0
    for _ in range(6):
        try:
            pump.clinician_bolus(5000000, 3600)
        except Exception as e:
            assert e.limit == "daily_max" and "20 mg/day" in e.message, e.message
            refused += 1
        run(pump, HOUR_MS)
    run(pump, DAY_MS)
    assert refused >= 4
    dose_ng = most_in_24h(stroke_times(pump)) * STROKE_NL * MORPHINE_25 // 1000000
    assert dose_ng <= 20000000 + STROKE_NL * MORPHINE_25 // 1000000, dose_ng
    assert not pump.alarms.active & alarms.CRITICAL_MASK


def test_the_guard_alone_holds_the_24_hour_ceiling_when_the_scheduler_runs_away():
    # Defence in depth: a scheduler fault starts 25 mg of morphine that no
    # command check saw; the guard stops it from the stroke record alone.
    pump = make_pump(continuous(10000000, conc=MORPHINE_25))
    run(pump, DAY_MS)
    pump.sched.start_bolus(KIND_CLINICIAN, 2000, 7200)
    pump.guard.allow_bolus(2000)  # the hour window's bolus budget does not stop it
    run(pump, DAY_MS)
    assert active(pump, alarms.DOSE_GUARD) and pump.status()["state"] == "stopped"
    dose_ng = most_in_24h(stroke_times(pump)) * STROKE_NL * MORPHINE_25 // 1000000
    assert dose_ng <= 20000000 + 5 * STROKE_NL * MORPHINE_25 // 1000000, dose_ng


def test_priming_into_an_already_primed_catheter_is_refused():
    # Hazard 2: 1 mL of 25 mg/mL morphine "primed" into a primed catheter.
    pump = make_pump(continuous(10000000, conc=MORPHINE_25))
    pump.catheter.assume_primed(200000)  # implanted and primed
    run(pump, HOUR_MS)
    before = strokes(pump)
    raises_limit("catheter_primed", pump.priming_bolus, 1000000, 3600)
    run(pump, HOUR_MS)
    assert strokes(pump) - before <= 35  # only the basal: 0.4 mL/day is 33 strokes an hour


def test_priming_a_revised_catheter_is_capped_at_its_volume_and_the_excess_is_dose():
    pump = make_pump(continuous(10000000, conc=MORPHINE_25))
    pump.revise_catheter(200000)  # 400 strokes of saline to push out
    raises_limit("priming_volume", pump.priming_bolus, 1000000, 3600)
    pump.priming_bolus(220000, 1200)  # the 10 % margin: 40 strokes reach the patient
    run(pump, 1300 * 1000)
    assert pump.catheter.primed()
    assert pump.reservoir.dose_strokes() >= 40
    assert pump.status()["ceiling_24h_ng"] >= 40 * STROKE_NL * MORPHINE_25 // 1000000


def test_refill_with_another_concentration_cancels_a_running_clinician_bolus():
    # Hazard 3: a 5 mg bolus at 10 mg/mL carried on at 25 mg/mL (12.5 mg).
    pump = make_pump(continuous(4000000))
    pump.catheter.assume_primed(100000)
    run(pump, HOUR_MS)
    pump.clinician_bolus(5000000, 12 * 3600)  # 500 uL over 12 h
    run(pump, HOUR_MS)
    t0 = pump.board.clock.elapsed_ms
    result = pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(4000000, conc=MORPHINE_25))
    assert result["bolus_cancelled"] and pump.status()["bolus"] is None
    assert pump.log.of_type(events.BOLUS_CANCELLED)[-1][4] == KIND_CLINICIAN
    run(pump, 11 * HOUR_MS)
    # Oracle: 200 old strokes in the catheter (10 mg/mL) then 25 mg/mL; no
    # bolus, so 11 h of basal: at most 0.4 mL/day old (bridge) then 0.16.
    n = strokes_between(pump, t0, t0 + 11 * HOUR_MS)
    assert n <= 0.4e6 / 500 * 11 / 24 + 2, n


def test_refill_with_another_concentration_cancels_a_running_demand_bolus():
    rx = continuous(4000000)
    rx["demand"] = {"dose_ng": 500000, "duration_s": 3600, "lockout_s": 7200, "max_per_day": 4}
    pump = make_pump(rx)
    run(pump, HOUR_MS)
    assert pump.demand_bolus() == (0, 0)
    run(pump, 600 * 1000)
    pump.refill(pump.reservoir.remaining_nl, 20000000, dict(rx, conc_ng_ml=MORPHINE_25))
    assert pump.status()["bolus"] is None
    assert pump.log.of_type(events.BOLUS_CANCELLED)[-1][4] == KIND_DEMAND


def test_concentration_change_while_suspended_is_bridged_on_resume():
    # Hazard 4: 20 -> 5 mg/mL at 10 mg/day: without a bridge the catheter's
    # 20 mg/mL went in at the new volume rate (5 mg in 3 h).
    pump = make_pump(continuous(10000000, conc=20000000))  # 0.5 mL/day
    pump.catheter.assume_primed(200000)  # 400 strokes of 20 mg/mL in the line
    run(pump, DAY_MS)
    pump.suspend()
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(10000000, conc=5000000))  # 2 mL/day
    pump.resume()
    t0 = pump.board.clock.elapsed_ms
    run(pump, 3 * HOUR_MS)
    # Oracle: the first 400 strokes are 20 mg/mL (10 ug each): at most 10 mg/day.
    n = strokes_between(pump, t0, t0 + 3 * HOUR_MS)
    assert n * 10000 <= 10000000 * 3 // 24 + 10000, n


def test_concentration_change_after_an_empty_stop_is_bridged():
    pump = make_pump(continuous(10000000, conc=20000000), fill_nl=1100000)
    pump.catheter.assume_primed(200000)
    run(pump, 2 * DAY_MS)
    assert active(pump, alarms.RESERVOIR_EMPTY)
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(10000000, conc=5000000))
    assert pump.sched.bridge_left == 400
    t0 = pump.board.clock.elapsed_ms
    run(pump, 3 * HOUR_MS)
    assert strokes_between(pump, t0, t0 + 3 * HOUR_MS) * 10000 <= 10000000 * 3 // 24 + 10000


def baclofen_pump():
    # Baclofen 500 ug/mL, 400 ug/day = 0.8 mL/day: a stop is a withdrawal emergency.
    return make_pump({"drug": "baclofen", "conc_ng_ml": 500000, "steps": [{"start_s": 0, "dose_ng_day": 400000}]})


def test_one_low_battery_reading_does_not_stop_therapy():
    # Hazard 5: one 2600 mV sample stopped a baclofen pump for good, silently.
    pump = baclofen_pump()
    run(pump, HOUR_MS)
    sample_battery_now(pump, 2600)
    pump.board.battery = 3200
    before = strokes(pump)
    run(pump, DAY_MS)
    assert strokes(pump) - before >= 1599  # 0.8 mL/day is 1600 strokes
    assert not active(pump, alarms.BATTERY_EOS)


def test_end_of_service_stops_with_a_sounding_alarm_and_recovery_restarts_therapy():
    pump = baclofen_pump()
    run(pump, HOUR_MS)
    pump.board.battery = 2600
    run(pump, HOUR_MS)
    assert active(pump, alarms.BATTERY_EOS) and pump.status()["state"] == "stopped"
    assert sounded(pump), "the stop must sound"
    pump.board.battery = 3200
    run(pump, HOUR_MS)
    assert not active(pump, alarms.BATTERY_EOS)
    assert pump.status()["state"] == "delivering"
    assert pump.log.of_type(events.THERAPY_RESUMED)
    before = strokes(pump)
    run(pump, DAY_MS)
    assert strokes(pump) - before >= 1599


def corrupt_state(fp):
    # Both slots of the state record become unreadable (decayed flash).
    import os
    d = fp.board.flash + "/state"
    for name in os.listdir(d):
        if name.startswith("pump."):
            with open(d + "/" + name, "r+b") as f:
                f.seek(20)
                f.write(b"\x00garbage\x00")


def test_unreadable_state_keeps_the_identity_and_invents_no_therapy():
    # Hazard 6: a baclofen pump came back as morphine under a new serial.
    fp = FlashPump(new_image())
    pump = fp.power_on()
    pump.device["serial"] = "IT-0042"
    pump.reservoir.fill(20000000)
    pump.program({"drug": "baclofen", "conc_ng_ml": 500000, "steps": [{"start_s": 0, "dose_ng_day": 400000}]})
    run(pump, HOUR_MS)
    corrupt_state(fp)
    fp.power_off()
    pump = fp.power_on()
    assert pump.device["serial"] == "IT-0042"
    assert pump.rx is None and pump.therapy is None
    assert active(pump, alarms.INTEGRITY) and alarms.is_critical(alarms.INTEGRITY)
    run(pump, HOUR_MS)
    assert sounded(pump), "the integrity alarm must sound"
    assert strokes(pump) == 0


def test_a_failed_flash_write_refuses_the_change_and_therapy_continues():
    # Hazard 7: program() applied the change, then the save failed: the new
    # therapy ran while the programmer was told it failed.
    fp = FlashPump(new_image(), flash_faults=True)
    pump = fp.power_on()
    pump.reservoir.fill(20000000)
    pump.program(continuous(10000000))
    fp.dev.failing = True  # the flash chip starts refusing writes
    raises_limit("flash_fault", pump.program, continuous(20000000))
    assert pump.rx == continuous(10000000)
    assert active(pump, alarms.FLASH_FAULT) and alarms.is_critical(alarms.FLASH_FAULT)
    before = strokes(pump)
    run(pump, 2 * HOUR_MS)  # checkpoints fail too: no exception escapes the loop
    assert 150 <= strokes(pump) - before <= 170  # 1 mL/day: 83 strokes an hour
    assert pump.status()["state"] == "delivering"
    fp.dev.failing = False
    run(pump, 2 * HOUR_MS)  # the next checkpoint succeeds: the alarm clears
    assert not active(pump, alarms.FLASH_FAULT)
    fp.power_off()
    assert fp.power_on().rx == continuous(10000000)



def test_a_suspend_the_flash_cannot_save_still_stops_the_pump_and_is_saved_once_it_can():
    # A clinician must always be able to stop delivery: with the flash
    # failing, a suspend is obeyed and says it is not saved; it is saved at
    # the first write the flash takes again.
    fp = FlashPump(new_image(), flash_faults=True)
    pump = fp.power_on()
    pump.reservoir.fill(20000000)
    pump.program(continuous(10000000))
    run(pump, HOUR_MS)
    pump.set_low_threshold(3000000)  # saved: no delivery since would make the pump save again
    fp.dev.failing = True
    assert pump.suspend() is False  # obeyed, not saved
    before = strokes(pump)
    run(pump, HOUR_MS)
    assert strokes(pump) == before
    fp.dev.failing = False
    run(pump, 2 * 60 * 1000)  # the flash is tried again after a minute
    fp.power_off()
    pump = fp.power_on()
    assert pump.suspended
    run(pump, HOUR_MS)
    assert strokes(pump) == 0


def test_an_alarm_the_flash_cannot_save_as_acknowledged_is_silenced_all_the_same():
    fp = FlashPump(new_image(), flash_faults=True)
    pump = fp.power_on()
    pump.reservoir.fill(20000000)
    pump.program(continuous(10000000))
    fp.dev.failing = True
    run(pump, HOUR_MS)  # a checkpoint fails: the flash-fault alarm sounds
    assert active(pump, alarms.FLASH_FAULT)
    assert pump.acknowledge(alarms.FLASH_FAULT) == (True, False)
    changes = pump.board.tone_changes
    run(pump, 5 * 60 * 1000)
    assert pump.board.tone_changes == changes and pump.board.tone_hz == 0  # silent

def test_refill_discrepancy_warns_on_either_twenty_percent_or_two_ml():
    # Hazard 8: 1.5 mL expected, nothing withdrawn: no warning (needed both).
    pump = make_pump(continuous(), fill_nl=1500000 + 1000000)
    pump.reservoir.remaining_nl = 1500000
    pump.reservoir.reseal()
    result = pump.refill(0, 20000000)
    assert result["warning"] and active(pump, alarms.REFILL_DISCREPANCY)


def test_clinician_bolus_replaces_the_basal_for_its_whole_duration():
    # Hazard 9: a 2 mg / 24 h bolus handed back one stroke-interval early.
    pump = make_pump(continuous(10000000))
    run(pump, HOUR_MS)
    pump.clinician_bolus(2000000, 86400)  # 200 uL: 400 strokes
    t0 = pump.board.clock.elapsed_ms
    run(pump, DAY_MS + HOUR_MS)
    # The schedule counts whole seconds: the window ends 2 s short of 24 h.
    assert strokes_between(pump, t0, t0 + DAY_MS - 2000) == 400


def test_motor_motion_without_a_command_stops_with_a_critical_alarm():
    # Hazard 10: index pulses with no stroke running raised nothing.
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    remaining = pump.reservoir.remaining_nl
    pump.board.motor.uncommanded = 3
    run(pump, 1000)
    assert active(pump, alarms.UNCOMMANDED_MOTION) and alarms.is_critical(alarms.UNCOMMANDED_MOTION)
    assert not pump.sched.running
    assert pump.reservoir.remaining_nl == remaining - 3 * STROKE_NL  # the fluid moved: counted


def test_an_unclean_reset_flags_the_wall_clock_until_it_is_set():
    # Hazard 11: the clock came back from the last checkpoint, unflagged.
    fp = FlashPump(new_image())
    pump = fp.power_on()
    pump.reservoir.fill(20000000)
    pump.program(continuous())
    run(pump, 3 * HOUR_MS)
    fp.power_off()  # no clean shutdown
    pump = fp.power_on()
    assert active(pump, alarms.CLOCK_UNCERTAIN) and pump.status()["clock_uncertain"]
    assert pump.status()["state"] == "delivering"  # therapy goes on meanwhile
    pump.set_clock(20001, 8 * 3600)
    assert not active(pump, alarms.CLOCK_UNCERTAIN)


def test_a_daily_dose_over_the_maximum_by_rounding_is_refused():
    # Hazard 14: 20.000012 mg/day at 25 mg/mL rounded to 20 mg and passed.
    pump = make_pump()
    raises_limit("daily_max", pump.program, continuous(20000012, conc=MORPHINE_25))


def test_a_bolus_that_is_not_whole_strokes_is_refused_with_the_deliverable_doses():
    # Hazard 14: a 0.075 ug ziconotide demand dose became 0.1 ug (+33 %).
    rx = {"drug": "ziconotide", "conc_ng_ml": 100000, "steps": [{"start_s": 0, "dose_ng_day": 6000}],
          "demand": {"dose_ng": 75, "duration_s": 300, "lockout_s": 3600, "max_per_day": 4}}
    pump = make_pump()
    e = raises_limit("bolus_rounding", pump.program, rx)
    assert "0.05 ug" in e.message and "0.1 ug" in e.message, e.message
