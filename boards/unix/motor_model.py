# Model of the pump mechanism: a stroke takes `stroke_ms`; the stroke
# confirmation fails while the motor is stalled (worn gear shaft) or the
# catheter is occluded. Completed strokes are recorded with their board time.
# Stroke timing uses ticks (small ints), never the bench's elapsed_ms.
import array
from time import ticks_diff

from micropython import const

import hal

RECORD_LEN = const(8192)  # most recent stroke times kept for the bench


class MotorModel:
    def __init__(self, clock, stroke_ms=40):
        self.clock = clock
        self.stroke_ms = stroke_ms
        self.stalled = False
        self.intermittent = 0  # fail every Nth stroke (0: never)
        self.uncommanded = 0  # strokes of motion with no stroke commanded (a driver fault), not yet seen
        self.running = False
        self.started = 0  # clock ticks when the running stroke began
        self.completed = 0
        self.failed = 0
        self.attempts = 0
        self.record = array.array("q", [0] * RECORD_LEN)

    def begin(self):
        self.running = True
        self.attempts += 1
        self.started = self.clock.ticks_ms()

    def ms_left(self):
        if not self.running:
            return 0
        left = self.stroke_ms - ticks_diff(self.clock.ticks_ms(), self.started)
        return left if left > 0 else 0

    def poll(self):
        if not self.running:
            return hal.STROKE_FAILED
        if ticks_diff(self.clock.ticks_ms(), self.started) < self.stroke_ms:
            return hal.STROKE_BUSY
        self.running = False
        if self.stalled or (self.intermittent and self.attempts % self.intermittent == 0):
            self.failed += 1
            return hal.STROKE_FAILED
        self._record_stroke()
        return hal.STROKE_DONE

    def _record_stroke(self):
        self.record[self.completed % RECORD_LEN] = self.clock.elapsed_ms
        self.completed += 1

    def take_uncommanded(self):
        # The index sensor's pulses outside a stroke: the fluid moved.
        n = self.uncommanded
        if n:
            self.uncommanded = 0
            for _ in range(n):
                self._record_stroke()
        return n

    def stop(self):
        if self.running:
            self.running = False
            self.failed += 1

    def times(self, first, limit):
        # Board times of completed strokes first.. (only the last RECORD_LEN are kept).
        lo = max(first, self.completed - RECORD_LEN)
        hi = min(self.completed, lo + limit)
        return [self.record[i % RECORD_LEN] for i in range(lo, hi)], lo
