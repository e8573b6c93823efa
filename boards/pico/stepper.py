# The pump mechanism on a stepper driver (A4988, DRV8825, TMC2209 in
# step/dir mode). One stroke is one cam revolution: the board steps the motor
# with PWM on the driver's STEP input and the index sensor's pulse ends the
# stroke. Only that pulse confirms delivery; a stroke it does not confirm in
# time failed (stall, slipping gear, lost sensor), and so does every stroke of
# a board without the sensor, unless it is explicitly a bench demo.
# begin/poll/ms_left/stop run on the tick path and _on_index in the sensor's
# hard interrupt: nothing here allocates.
from time import ticks_diff

from micropython import const

from machine import PWM, Pin

import hal

_STEP_DUTY = const(32768)  # 50 %: every driver here wants >= 1-2 us high
_TIMEOUT_NUM = const(3)  # no index within 1.5 x the nominal time: failed
_TIMEOUT_DEN = const(2)
_EARLY_DEN = const(2)  # an index in under half the nominal time is no stroke
_LATENCY_MS = const(20)  # allowance for soft-timer and interrupt latency
# Counters wrap below 2**30: beyond, an int is allocated on the RP2040 (in an
# interrupt: a MemoryError). A noisy sensor could get there in days.
COUNT_MASK = const((1 << 29) - 1)


class StrokeDrive:
    def __init__(self, cfg, ticks):
        self._ticks = ticks
        self.nominal_ms = (cfg.STEPS_PER_STROKE * 1000 + cfg.STEP_HZ - 1) // cfg.STEP_HZ
        self.timeout_ms = self.nominal_ms * _TIMEOUT_NUM // _TIMEOUT_DEN + _LATENCY_MS
        self.early_ms = self.nominal_ms // _EARLY_DEN
        self.feedback = cfg.MOTOR_FEEDBACK is not None
        self.demo = cfg.BENCH_DEMO_NO_FEEDBACK and not self.feedback
        self._per_stroke = cfg.FEEDBACK_PULSES_PER_STROKE
        self._step = None
        self._enable = None
        self._energised = 1
        if cfg.STEP_PIN is not None:
            self._step = PWM(Pin(cfg.STEP_PIN), freq=cfg.STEP_HZ, duty_u16=0)
        if cfg.DIR_PIN is not None:
            # Set once: the pump never runs backward (it would draw CSF back).
            Pin(cfg.DIR_PIN, Pin.OUT, value=cfg.DIR_FORWARD)
        if cfg.ENABLE_PIN is not None:
            self._energised = cfg.ENABLE_ACTIVE
            self._enable = Pin(cfg.ENABLE_PIN, Pin.OUT, value=1 - cfg.ENABLE_ACTIVE)
        if self.feedback:
            pull = Pin.PULL_UP if cfg.FEEDBACK_PULL_UP else Pin.PULL_DOWN
            index = Pin(cfg.MOTOR_FEEDBACK, Pin.IN, pull)
            edge = Pin.IRQ_FALLING if cfg.FEEDBACK_ACTIVE == 0 else Pin.IRQ_RISING
            # Hard: the steps stop within microseconds of the index, not at the
            # next tick, so a stroke never runs past its end.
            index.irq(self._on_index, edge, hard=True)
        self.running = False
        self.result = hal.STROKE_BUSY
        self.started = 0
        self.pulses = 0
        self.stray = 0  # index pulses while no stroke runs: moved without a command
        self.done = 0
        self.failed = 0

    def begin(self):
        self.pulses = 0
        self.result = hal.STROKE_BUSY
        self.started = self._ticks()
        self.running = True
        self._energise(True)
        if self._step is not None:
            self._step.duty_u16(_STEP_DUTY)

    def _on_index(self, _pin):
        if not self.running:
            self.stray = (self.stray + 1) & COUNT_MASK
            return
        if self.result != hal.STROKE_BUSY:
            return  # contact bounce after the stroke ended
        self.pulses += 1
        if self.pulses < self._per_stroke:
            return
        self._halt_steps()
        if ticks_diff(self._ticks(), self.started) < self.early_ms:
            self.result = hal.STROKE_FAILED  # too soon for a revolution: sensor fault
        else:
            self.result = hal.STROKE_DONE

    def take_stray(self):
        # Strokes of motion seen with no stroke commanded (any pulse counts
        # as a stroke begun); pulses arriving meanwhile are kept.
        n = self.stray
        if not n:
            return 0
        self.stray = (self.stray - n) & COUNT_MASK
        return (n + self._per_stroke - 1) // self._per_stroke

    def poll(self):
        if not self.running:
            return hal.STROKE_FAILED
        r = self.result
        if r == hal.STROKE_BUSY:
            elapsed = ticks_diff(self._ticks(), self.started)
            if elapsed < self._limit_ms():
                return hal.STROKE_BUSY
            # Out of time. With a sensor: no index, so no stroke. Without
            # one nothing confirms the stroke: failed, unless a bench demo.
            r = hal.STROKE_DONE if self.demo else hal.STROKE_FAILED
        self._finish()
        if r == hal.STROKE_DONE:
            self.done = (self.done + 1) & COUNT_MASK
        else:
            self.failed = (self.failed + 1) & COUNT_MASK
        return r

    def ms_left(self):
        if not self.running or self.result != hal.STROKE_BUSY:
            return 0
        left = self._limit_ms() - ticks_diff(self._ticks(), self.started)
        return left if left > 0 else 0

    def stop(self):
        if self.running:
            self._finish()
            self.result = hal.STROKE_FAILED
            self.failed = (self.failed + 1) & COUNT_MASK

    def _limit_ms(self):
        return self.timeout_ms if self.feedback else self.nominal_ms

    def _finish(self):
        self._halt_steps()
        self._energise(False)
        self.running = False

    def _halt_steps(self):
        if self._step is not None:
            self._step.duty_u16(0)

    def _energise(self, on):
        # Off between strokes: the battery, and the cam's detent holds it.
        if self._enable is not None:
            self._enable.value(self._energised if on else 1 - self._energised)
