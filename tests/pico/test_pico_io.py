# Sensors, buzzer, the pin map check, flash, and the USB link transport.
import json
import os

import alarms
import config
import hal
import machine
import micropython
from identify_link import IdentifyLink
from picokit import BENCH, FakeSerial, expect, make_board, make_config
from pico_board import PicoBoard
from pump import Pump
from usb_link import UsbLink


def test_battery_scaled_through_its_divider():
    board = make_board(BENCH)  # 1:1 divider (ratio 2) on GP27
    machine.set_adc_mv(27, 1600)
    assert abs(board.battery_mv() - 3200) <= 3, board.battery_mv()
    machine.set_adc_mv(27, 1350)
    assert abs(board.battery_mv() - 2700) <= 3


def test_bare_pico_measures_vsys_on_gp29():
    board = make_board()
    machine.set_adc_mv(29, 1650)  # VSYS/3 on USB power
    assert abs(board.battery_mv() - 4950) <= 4


def test_pressure_scaled_above_the_sensor_zero():
    board = make_board(BENCH)
    assert board.OCCLUSION_MMHG == 200
    machine.set_adc_mv(26, 330)
    assert board.pressure_mmhg() == 0
    machine.set_adc_mv(26, 330 + 1320)
    assert abs(board.pressure_mmhg() - 129) <= 1, board.pressure_mmhg()
    machine.set_adc_mv(26, 100)  # below zero: noise, not a negative pressure
    assert board.pressure_mmhg() == 0


def test_without_a_pressure_sensor_there_is_no_occlusion_reading():
    board = make_board()
    assert board.pressure_mmhg() == -1
    assert board.OCCLUSION_MMHG == hal.Board.OCCLUSION_MMHG


def test_sensor_reads_allocate_nothing():
    board = make_board(BENCH)
    machine.set_adc_mv(26, 2000)
    machine.set_adc_mv(27, 1600)
    micropython.heap_lock()
    try:
        p = board.pressure_mmhg()
        b = board.battery_mv()
        board.buzzer(880)
        board.buzzer(0)
        board.led(True)
        board.wdt_feed()
    finally:
        micropython.heap_unlock()
    assert p > 0 and b > 0


def test_high_catheter_pressure_after_strokes_is_an_occlusion():
    board = make_board(BENCH)
    pump = Pump(board)
    pump.reservoir.fill(20000000)
    pump.program({"drug": "morphine", "conc_ng_ml": 1000000, "steps": [{"start_s": 0, "dose_ng_day": 20000000}]})
    board.start(pump)
    machine.set_adc_mv(26, 330 + 2500)  # about 245 mmHg
    end = machine.clock.now + 4 * 2160
    while machine.clock.now < end:
        machine.advance(5)
        m = board.motor
        if m.running and m.result == hal.STROKE_BUSY and machine.clock.ticks_ms() - m.started >= m.nominal_ms:
            machine.pulse(5, 0)
    assert board.motor.done == 3, board.info()  # the mechanism turned ...
    assert pump.alarms.active & (1 << alarms.OCCLUSION)  # ... against a blocked catheter
    assert pump.reservoir.delivered_nl() == 0


def test_buzzer_plays_the_tone_on_pwm():
    board = make_board(BENCH)
    pwm = machine.pwm(16)
    board.buzzer(880)
    assert pwm.freq() == 880 and pwm.duty_u16() == 32768
    changes = pwm.changes
    board.buzzer(880)
    assert pwm.changes == changes  # unchanged tone: the PWM is left alone
    board.buzzer(440)
    assert pwm.freq() == 440
    board.buzzer(0)
    assert pwm.duty_u16() == 0


def test_pin_map_conflicts_are_refused():
    cases = (({"BUZZER_PIN": 2}, "both"), ({"PRESSURE_ADC": 22}, "no ADC"), ({"BUZZER_PIN": 18}, "PWM slice"),
             ({"STEP_PIN": 30}, "not a GPIO"), ({"MAINTENANCE_BUTTON": 5}, "both"))
    for overrides, words in cases:
        e = expect(ValueError, PicoBoard, make_config(BENCH, **overrides), machine.clock.ticks_ms)
        assert words in str(e), (overrides, str(e))


def test_shipped_config_and_bench_prototype_are_valid():
    for base in (None, BENCH):
        board = make_board(base)
        assert board.flash_dir().endswith(config.FLASH_DIR)


def test_flash_dir_is_created_on_the_littlefs_root():
    board = make_board()
    d = board.flash_dir()
    assert os.stat(d)[0] & 0x4000  # a directory
    with open(d + "/probe", "w") as f:
        f.write("x")
    make_board()  # a second boot finds it there
    assert os.listdir(d) == ["probe"]


def test_usb_link_reads_what_is_there_without_waiting():
    host = FakeSerial()
    usb = UsbLink(host, host)
    buf = bytearray(8)
    assert usb.read_into(buf) == 0
    host.send(b"\x00abc\x03de\x00fghijk")
    assert usb.read_into(buf) == 8 and bytes(buf) == b"\x00abc\x03de\x00"
    assert usb.read_into(buf) == 6 and bytes(buf[:6]) == b"fghijk"
    assert usb.read_into(buf) == 0


def test_usb_link_writes_in_small_chunks():
    host = FakeSerial()
    usb = UsbLink(host, host)
    data = bytes(range(256)) * 2
    assert usb.write(data) == 512
    assert bytes(host.tx) == data
    assert max(host.writes) <= 64


def test_usb_link_takes_ctrl_c_while_open_and_gives_it_back():
    host = FakeSerial()
    usb = UsbLink(host, host)
    usb.open()
    assert usb.interrupt_char == -1
    usb.close()
    assert usb.interrupt_char == 3


def test_identify_link_answers_each_line():
    board = make_board(BENCH)
    pump = Pump(board)
    host = FakeSerial()
    link = IdentifyLink(board, pump, UsbLink(host, host))
    link.poll()
    assert host.tx == b""
    host.send(b"hello\r")
    link.poll()
    line = bytes(host.tx)
    assert line.endswith(b"\r\n")
    report = json.loads(line.decode())
    assert report["motor_feedback"] == "GP5, 1 pulse(s) per stroke"
    assert report["battery_sense"] == "ADC GP27" and report["pressure_sense"] == "ADC GP26"
    assert report["state"] == "idle" and report["firmware"] == pump.device["firmware"]
    assert len(report["id"]) == 16
