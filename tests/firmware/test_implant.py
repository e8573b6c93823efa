# The implant test in the operating room: each step logged; a failed step
# leaves the pump stopped and says which step failed and why.
import alarms
import events
import implant
from fixtures import continuous, make_pump, raises_limit, run
from scheduler import KIND_PRIMING


def new_pump():
    pump = make_pump(fill_nl=0)
    pump.reservoir.volume_in_nl = 0
    return pump


def steps_logged(pump):
    return [(r[4], r[5]) for r in pump.log.of_type(events.IMPLANT_STEP)]


def run_until(pump, result, limit_ms=600000):
    step = 1000
    for _ in range(limit_ms // step):
        r = result(pump)
        if r is not None:
            return r
        run(pump, step)
    raise AssertionError("step did not finish")


def test_full_implant_sequence_logs_every_step_and_starts_therapy():
    pump = new_pump()
    implant.set_identity(pump, "SN-0001", "emulated 20 mL")
    assert implant.set_catheter(pump, [[500, 120000], [300, 80000]]) == 200000
    implant.first_fill(pump, 20000000)
    implant.prime(pump, 900)
    run(pump, 1000 * 1000)
    assert pump.reservoir.strokes[KIND_PRIMING] == 400
    implant.start_motor_test(pump)
    assert run_until(pump, implant.motor_test_result)[0]
    implant.start_alarm_test(pump)
    assert run_until(pump, implant.alarm_test_result)[0]
    implant.start_therapy(pump, continuous())
    assert pump.status()["state"] == "delivering"
    assert [s for s, ok in steps_logged(pump)] == [1, 2, 3, 4, 5, 6, 7]
    assert all(ok for s, ok in steps_logged(pump))
    # The catheter's 400 strokes pushed saline; the motor test's 4 pushed
    # morphine 10 mg/mL out of the tip: 4 x 0.5 uL x 10 mg/mL.
    assert pump.reservoir.drug_delivered_ng() == 4 * 500 * 10000000 // 1000000


def test_alarm_test_sounds_every_alarm_tone_once():
    pump = new_pump()
    implant.start_alarm_test(pump)
    run_until(pump, implant.alarm_test_result)
    board = pump.board
    tones = set(board.tones[2 * i + 1] for i in range(board.tone_changes))
    for a in range(alarms.COUNT):
        assert alarms.TONE_A[a] in tones


def test_motor_test_without_stroke_confirmation_fails_and_leaves_pump_stopped():
    pump = new_pump()
    implant.set_catheter(pump, [[500, 100000]])
    implant.first_fill(pump, 20000000)
    pump.board.motor.stalled = True
    implant.start_motor_test(pump)
    ok, reason = run_until(pump, implant.motor_test_result)
    assert not ok and "not confirmed" in reason
    assert steps_logged(pump)[-1] == (implant.STEP_MOTOR_TEST, 0)
    assert pump.alarms.active & (1 << alarms.MOTOR_STALL) and not pump.sched.running


def test_a_priming_a_stall_stopped_is_cleared_by_resume_and_primes_only_what_is_left():
    # Before any therapy: resume clears the stall (nothing starts); the
    # implant's priming then pushes only the saline still in the catheter.
    pump = new_pump()
    implant.set_catheter(pump, [[500, 100000]])  # 200 strokes
    implant.first_fill(pump, 20000000)
    implant.prime(pump, 1800)
    run(pump, 300000)  # some strokes in
    pump.board.motor.stalled = True
    run(pump, 120000)
    assert pump.alarms.active & (1 << alarms.MOTOR_STALL) and not pump.catheter.primed()
    left = pump.catheter.saline
    assert 0 < left < 200
    raises_limit("alarm", implant.prime, pump, 1800)  # the stall first
    pump.board.motor.stalled = False
    pump.resume()
    assert not pump.alarms.active & (1 << alarms.MOTOR_STALL) and pump.therapy is None
    assert not pump.sched.running
    assert implant.prime(pump, 1800) == left
    raises_limit("not_programmed", pump.resume)  # no alarm to clear, no therapy: nothing to resume


def test_catheter_out_of_range_is_refused_naming_the_segment():
    pump = new_pump()
    e = raises_limit("catheter", implant.set_catheter, pump, [[500, 100000], [2000, 1000]])
    assert "segment 2 length" in e.message
    assert pump.catheter.volume_nl == 0


def test_first_fill_over_capacity_is_refused():
    pump = new_pump()
    raises_limit("overfill", implant.first_fill, pump, 25000000)
    assert pump.reservoir.remaining_nl == 0


def test_priming_before_the_catheter_is_set_is_refused():
    pump = new_pump()
    raises_limit("catheter_unset", implant.prime, pump, 600)


def test_a_serial_is_letters_digits_and_marks_and_a_model_one_line_of_text():
    # The serial names host files and key-store entries: "../x" would be a path.
    pump = new_pump()
    for serial in ("../../x", "SN 1", "SN\n1", "", "A" * 25, "SN\u00e91"):
        raises_limit("serial", implant.set_identity, pump, serial, "IT-40")
    for model in ("IT\n40", "IT\x1b[2J", ""):
        raises_limit("model", implant.set_identity, pump, "SN-1", model)
    assert not steps_logged(pump)
    implant.set_identity(pump, "SN-0042_b.1", "SynchroMed II 40 mL")
    assert pump.device["serial"] == "SN-0042_b.1"


def test_an_implant_step_that_cannot_be_saved_changes_nothing_and_can_be_repeated():
    # Identity, catheter and first fill are changes like any other: with the
    # flash refusing writes each is refused and undone, and done once it works.
    from flashkit import FlashPump, new_image
    fp = FlashPump(new_image(), flash_faults=True)
    pump = fp.power_on()
    fp.dev.failing = True
    serial = pump.device["serial"]
    raises_limit("flash_fault", implant.set_identity, pump, "SN-0002", "IT-40")
    assert pump.device["serial"] == serial
    raises_limit("flash_fault", implant.set_catheter, pump, [[500, 120000]])
    assert pump.catheter.volume_nl == 0 and "catheter" not in pump.device
    raises_limit("flash_fault", implant.first_fill, pump, 20000000)
    assert pump.reservoir.remaining_nl == 0 and pump.reservoir.volume_in_nl == 0
    fp.dev.failing = False
    implant.set_identity(pump, "SN-0002", "IT-40")
    implant.set_catheter(pump, [[500, 120000]])
    implant.first_fill(pump, 20000000)
    assert pump.device["serial"] == "SN-0002" and pump.catheter.volume_nl == 120000
    assert pump.reservoir.remaining_nl == 20000000
    fp.persist.save(clean=True)
    fp.power_off()
    pump = fp.power_on()  # and all three are on flash
    assert pump.device["serial"] == "SN-0002" and pump.catheter.volume_nl == 120000
    assert pump.reservoir.remaining_nl == 20000000
    fp.power_off()


def test_the_motor_tests_strokes_of_drug_count_once_the_therapy_names_it():
    # Found by driving the emulator: the implant names the drug only when
    # therapy starts, so the motor test's strokes of drug beyond the primed
    # catheter were booked as priming with no dose, and the 24-hour ceiling
    # did not count them. Oracle: the stroke record, less the catheter.
    pump = new_pump()
    implant.set_catheter(pump, [[500, 200000]])  # 400 strokes
    implant.first_fill(pump, 20000000)
    implant.prime(pump, 900)
    run(pump, 1000 * 1000)
    implant.start_motor_test(pump)
    assert run_until(pump, implant.motor_test_result)[0]
    beyond = pump.board.motor.completed - 400
    assert beyond == implant.MOTOR_TEST_STROKES
    implant.start_therapy(pump, continuous())
    st = pump.status()
    dose_ng = beyond * 500 * 10000000 // 1000000  # morphine 10 mg/mL
    assert st["drug_delivered_ng"] == dose_ng
    assert st["ceiling_24h_ng"] >= dose_ng
    assert st["today_dose_ng"] == dose_ng  # the day's count
