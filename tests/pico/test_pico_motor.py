# The Pico board's mechanism: stepper driven by PWM, strokes confirmed only by
# the index sensor, stall and sensor faults, a bare board's honest failure and
# the explicit bench demo. Timer and index callbacks run under heap_lock.
import json

import alarms
import hal
import machine
from identify_link import IdentifyLink
from picokit import BENCH, FakeSerial, expect, make_board, make_config
from pico_board import DEMO_MODEL, PicoBoard
from pump import Pump
from usb_link import UsbLink

# 20 mg/day at 1 mg/mL: 20 mL/day, one 0.5 uL stroke every 2.16 s.
FAST = {"drug": "morphine", "conc_ng_ml": 1000000, "steps": [{"start_s": 0, "dose_ng_day": 20000000}]}
STROKE_EVERY_MS = 2160
FEEDBACK = BENCH["MOTOR_FEEDBACK"]


def running_pump(board):
    pump = Pump(board)
    pump.reservoir.fill(20000000)
    pump.program(FAST)
    board.start(pump)
    return pump


def mechanism(board, ms, stalled=False, index_after_ms=None):
    # The cam turns while the driver steps; the index passes the sensor at
    # the end of a revolution, unless the mechanism is stalled.
    motor = board.motor
    at = motor.nominal_ms if index_after_ms is None else index_after_ms
    end = machine.clock.now + ms
    while machine.clock.now < end:
        machine.advance(5)
        if motor.running and motor.result == hal.STROKE_BUSY and not stalled:
            if machine.clock.ticks_ms() - motor.started >= at:
                machine.pulse(FEEDBACK, 0)


def test_strokes_are_confirmed_by_the_index_pulse():
    board = make_board(BENCH)
    pump = running_pump(board)
    mechanism(board, 5 * STROKE_EVERY_MS + 500)
    assert board.motor.done == 5 and board.motor.failed == 0, board.info()
    assert pump.reservoir.delivered_nl() == 5 * 500
    assert pump.fault is None and not pump.alarms.active
    step = machine.pwm(BENCH["STEP_PIN"])
    # The steps stop at the index (in its interrupt, not at the next tick):
    # one revolution of steps per stroke.
    assert step.duty_u16() == 0
    assert 5 * 200 <= step.pulses() <= 5 * 200 + 5, step.pulses()
    assert machine.level(BENCH["ENABLE_PIN"]) == 1  # driver off between strokes
    assert machine.level(BENCH["DIR_PIN"]) == 1  # forward, never reversed
    assert machine.line(FEEDBACK).hard  # hard IRQ: checked allocation-free


def test_driver_is_energised_and_stepping_only_during_a_stroke():
    board = make_board(BENCH)
    running_pump(board)
    machine.advance(STROKE_EVERY_MS - 100)
    assert not board.motor.running and machine.level(BENCH["ENABLE_PIN"]) == 1
    while not board.motor.running:
        machine.advance(10)
    assert machine.level(BENCH["ENABLE_PIN"]) == 0
    assert machine.pwm(BENCH["STEP_PIN"]).duty_u16() == 32768
    assert machine.pwm(BENCH["STEP_PIN"]).freq() == 800
    assert machine.level(25) == 1  # LED lit during the stroke


def test_a_stalled_mechanism_stops_therapy_with_an_alarm():
    board = make_board(BENCH)
    pump = running_pump(board)
    while not pump.alarms.active:
        mechanism(board, 10, stalled=True)
    assert pump.alarms.active == 1 << alarms.MOTOR_STALL
    mechanism(board, 400, stalled=True)  # the alarm sounds at once
    assert board.motor.failed == 3 and board.motor.done == 0
    assert not pump.sched.running
    assert pump.reservoir.delivered_nl() == 0
    buzzer = machine.pwm(BENCH["BUZZER_PIN"])
    assert buzzer.duty_u16() == 32768 and buzzer.freq() in (alarms.TONE_A[1], alarms.TONE_B[1]), \
        (buzzer.duty_u16(), buzzer.freq(), machine.clock.now)
    assert machine.pwm(BENCH["STEP_PIN"]).duty_u16() == 0
    assert machine.level(BENCH["ENABLE_PIN"]) == 1
    # Each failed stroke ran the motor no longer than its timeout.
    assert machine.pwm(BENCH["STEP_PIN"]).pulses() <= 3 * (board.motor.timeout_ms + 100) * 800 // 1000


def test_one_missed_index_is_not_a_stall():
    board = make_board(BENCH)
    pump = running_pump(board)
    while not board.motor.failed:
        mechanism(board, 10, stalled=True)
    mechanism(board, 3 * STROKE_EVERY_MS)
    assert board.motor.failed == 1 and board.motor.done >= 3, board.info()
    assert pump.reservoir.delivered_nl() == board.motor.done * 500  # the missed one is owed, not lost
    assert not pump.alarms.active & (1 << alarms.MOTOR_STALL)
    assert pump.failed_strokes == 0


def test_an_index_far_too_early_is_a_sensor_fault_not_a_stroke():
    board = make_board(BENCH)
    pump = running_pump(board)
    mechanism(board, 4 * STROKE_EVERY_MS, index_after_ms=10)
    assert board.motor.done == 0 and board.motor.failed == 3
    assert pump.alarms.active & (1 << alarms.MOTOR_STALL)


def test_index_pulses_without_a_stroke_are_counted_as_stray():
    board = make_board(BENCH)
    running_pump(board)
    machine.advance(500)
    machine.pulse(FEEDBACK, 0)
    machine.pulse(FEEDBACK, 0)
    assert board.motor.stray == 2
    assert board.info()["stray_index_pulses"] == 2


def test_index_pulses_without_a_stroke_stop_therapy_with_a_critical_alarm():
    # The cam turned with no stroke commanded (a driver fault): the next tick
    # counts the motion as delivered, stops the pump and sounds the alarm.
    board = make_board(BENCH)
    pump = running_pump(board)
    machine.advance(500)
    remaining = pump.reservoir.remaining_nl
    machine.pulse(FEEDBACK, 0)
    machine.advance(board.TICK_MS)
    assert pump.alarms.active & (1 << alarms.UNCOMMANDED_MOTION)
    assert pump.status()["state"] == "stopped"
    assert pump.reservoir.remaining_nl == remaining - board.STROKE_NL


def test_an_encoder_needs_all_its_pulses_per_stroke():
    board = make_board(BENCH, FEEDBACK_PULSES_PER_STROKE=4)
    running_pump(board)
    while not board.motor.running:
        machine.advance(10)
    for _ in range(3):
        machine.advance(60)
        machine.pulse(FEEDBACK, 0)
    assert board.motor.result == hal.STROKE_BUSY
    machine.advance(60)
    machine.pulse(FEEDBACK, 0)
    assert board.motor.result == hal.STROKE_DONE


def test_bare_pico_fails_every_stroke_and_says_why():
    board = make_board()  # config.py as shipped: nothing fitted
    pump = running_pump(board)
    machine.advance(4 * STROKE_EVERY_MS)
    assert board.motor.failed == 3 and board.motor.done == 0
    assert pump.alarms.active & (1 << alarms.MOTOR_STALL)
    assert not pump.sched.running
    assert pump.fault is None
    info = board.info()
    assert info["motor_feedback"] == "none: every stroke fails confirmation"
    assert not info["bench_demo_no_feedback"]
    assert board.MODEL != DEMO_MODEL


def test_bench_demo_flag_counts_timed_strokes_and_is_reported():
    board = make_board(BENCH_DEMO_NO_FEEDBACK=True)
    pump = running_pump(board)
    machine.advance(5 * STROKE_EVERY_MS + 500)
    assert board.motor.done == 5 and board.motor.failed == 0
    assert not pump.alarms.active
    assert pump.device["model"] == DEMO_MODEL == board.info()["model"]
    assert board.info()["bench_demo_no_feedback"]
    host = FakeSerial()
    link = IdentifyLink(board, pump, UsbLink(host, host))
    host.send(b"\r\n")
    link.poll()
    report = json.loads(bytes(host.tx).decode())
    assert report["bench_demo_no_feedback"] and "BENCH DEMO" in report["model"]
    assert report["state"] == "delivering"


def test_bench_demo_flag_with_a_feedback_sensor_is_refused():
    e = expect(ValueError, PicoBoard, make_config(BENCH, BENCH_DEMO_NO_FEEDBACK=True), machine.clock.ticks_ms)
    assert "BENCH_DEMO_NO_FEEDBACK" in str(e)


def test_motor_stop_de_energises_mid_stroke():
    board = make_board(BENCH)
    running_pump(board)
    while not board.motor.running:
        machine.advance(10)
    board.motor_stop()
    assert machine.pwm(BENCH["STEP_PIN"]).duty_u16() == 0
    assert machine.level(BENCH["ENABLE_PIN"]) == 1
    assert board.motor_poll() == hal.STROKE_FAILED
    assert machine.level(25) == 0
