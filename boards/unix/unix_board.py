# The emulated pump: virtual hardware behind the firmware's board interface.
# Bench code (tests, the bench server) drives the models directly: it is test
# equipment, not part of the pump.
import array

from micropython import const

import hal
from motor_model import MotorModel
from virtual_clock import RealClock, VirtualClock

TONE_RECORD_LEN = const(256)


class UnixBoard(hal.Board):
    MODEL = "emulated 20 mL"
    OCCLUSION_MMHG = 200  # catheter pressure above baseline meaning occlusion

    def __init__(self, virtual=True, start_ticks=0, flash_dir=None, stroke_ms=40,
                 reset_cause=hal.RESET_POWER_ON):
        self.clock = VirtualClock(start_ticks) if virtual else RealClock(start_ticks)
        self.motor = MotorModel(self.clock, stroke_ms)
        self.battery = 3200  # mV, fresh lithium cell
        self.pressure = 0  # mmHg above baseline, as the bench sets it
        # The fluid model (boards/unix/fluid_model.py), when the emulator has
        # one, settles after each tick and leaves here what the sensor reads:
        self.fluid = None
        self.occlusion_mmhg = 0  # the occluded line's pressure
        self.occlusion_rise = 0  # what a completed stroke adds to it until the next settle
        self.tone_hz = 0
        self.tones = array.array("q", [0] * (2 * TONE_RECORD_LEN))  # (time, hz) pairs
        self.tone_changes = 0
        self.led_on = False
        self.fed_ms = 0  # board time of the last watchdog feed
        self.watchdog = None  # WatchdogModel when the emulator runs one
        self.flash = flash_dir
        self.cause = reset_cause

    def ticks_ms(self):
        return self.clock.ticks_ms()

    def motor_begin(self):
        self.motor.begin()

    def motor_poll(self):
        r = self.motor.poll()
        if r == hal.STROKE_DONE:
            self.occlusion_mmhg += self.occlusion_rise  # the sensor sees this stroke before the next settle
        return r

    def motor_ms_left(self):
        return self.motor.ms_left()

    def motor_stop(self):
        self.motor.stop()

    def motor_uncommanded(self):
        return self.motor.take_uncommanded()

    def pressure_mmhg(self):
        p = self.occlusion_mmhg
        return self.pressure if self.pressure > p else p

    def battery_mv(self):
        return self.battery

    def buzzer(self, tone_hz):
        # Records bench time: stored as it is, never computed with (it is a
        # long int after 12.4 days on a 31-bit port; storing one allocates nothing).
        if tone_hz != self.tone_hz:
            i = 2 * (self.tone_changes % TONE_RECORD_LEN)
            self.tones[i] = self.clock.elapsed_ms
            self.tones[i + 1] = tone_hz
            self.tone_changes += 1
            self.tone_hz = tone_hz

    def led(self, on):
        self.led_on = on

    def wdt_feed(self):
        self.fed_ms = self.clock.elapsed_ms
        if self.watchdog is not None:
            self.watchdog.feed()

    def reset_cause(self):
        return self.cause

    def flash_dir(self):
        return self.flash


def run_virtual(pump, ms):
    # Advance virtual time by `ms`, jumping from one due event to the next:
    # nothing sleeps, and no stroke, boundary or motor result is skipped.
    # `left` counts down on its own: no arithmetic on the clock's elapsed_ms,
    # a long int after 12.4 days on a 31-bit port.
    board = pump.board
    clock = board.clock
    left = ms
    while True:
        pump.tick()
        if board.fluid is not None:
            board.fluid.settle(board, left <= 0)  # and up to date when the bench reads it
        if pump.needs_service():
            pump.service()
        if left <= 0:
            return
        step = pump.ms_to_next_event()
        if step < 1:
            step = 1
        if step > left:
            step = left
        clock.advance(step)
        left -= step
