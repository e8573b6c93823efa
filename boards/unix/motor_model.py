# Model of the pump mechanism: a stroke takes `stroke_ms`; the stroke
# confirmation fails while the motor is stalled (worn gear shaft) or the
# catheter is occluded. Completed strokes are recorded with their board time.
# Stroke timing uses ticks (small ints), never the bench's elapsed_ms.
#
# The stroke record (bench equipment, docs/bench-port.md) keeps the last
# RECORD_LEN strokes: enough for firmware tests, which read it within hours
# and may hold several boards in the 31-bit test port's 1 MB heap. The
# emulator keeps DAY_RECORD_LEN: a day at the mechanism's maximum rate
# (24 mL/day of 500 nL strokes: 48,000) with a third to spare for faults.
# 8-byte times would take 512 KB of heap for that, so a stroke keeps the low
# 32 bits of its board time (256 KB), and every ANCHOR_EVERY-th stroke its
# whole time. A time is read back by counting back from the next anchor:
# exact unless the pump made no stroke for 2^32 ms (49.7 days) between that
# stroke and the anchor. Recording only stores elapsed_ms (a long int after
# 12.4 days on a 31-bit port): an array store truncates it without
# allocating, where `& 0xFFFFFFFF` would allocate.
import array
from time import ticks_diff

from micropython import const

import hal

RECORD_LEN = const(8192)  # most recent stroke times kept for the bench
DAY_RECORD_LEN = const(65536)  # the emulator's: a day at the maximum rate, and a third
ANCHOR_EVERY = const(1024)  # strokes between two whole board times
_LOW_MASK = const(0xFFFFFFFF)


class MotorModel:
    def __init__(self, clock, stroke_ms=40):
        self.clock = clock
        self.stroke_ms = stroke_ms
        self.stalled = False
        self.intermittent = 0  # fail every Nth stroke (0: never)
        self.uncommanded = 0  # strokes of motion with no stroke commanded (a driver fault), not yet seen
        # Set by the fluid model between ticks (boards/unix/fluid_model.py):
        self.blocked = False  # the occluded line's pressure is more than the rollers can push
        self.worn = False  # a worn gear train does not complete this attempt
        self.running = False
        self.started = 0  # clock ticks when the running stroke began
        self.completed = 0
        self.failed = 0
        self.attempts = 0
        self.keep(RECORD_LEN)

    def keep(self, n):
        # Size of the stroke record, a multiple of ANCHOR_EVERY; set before
        # the first stroke. Built from ranges: one allocation each, where a
        # list or bytes of zeros would first take as much again (entries are
        # read only once written).
        self.record_len = n
        self.record = array.array("I", range(n))  # low 32 bits of board ms
        self.anchors = array.array("q", range(n // ANCHOR_EVERY))  # whole ms of strokes 0, 1024, 2048...
        self.last_ms = 0  # whole board ms of the newest stroke

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
        if self.stalled or self.blocked or self.worn or (self.intermittent and self.attempts % self.intermittent == 0):
            self.failed += 1
            return hal.STROKE_FAILED
        self._record_stroke()
        return hal.STROKE_DONE

    def _record_stroke(self):
        # Tick path: stores only (see the top of the file).
        n = self.completed
        t = self.clock.elapsed_ms
        i = n % self.record_len
        try:
            self.record[i] = t
        except OverflowError:  # CPython (the host tests) range-checks the store
            self.record[i] = t & _LOW_MASK
        if n % ANCHOR_EVERY == 0:
            self.anchors[i // ANCHOR_EVERY] = t
        self.last_ms = t
        self.completed = n + 1

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
        # Board times of completed strokes first..first+limit-1, oldest first,
        # and the index of the first one returned: the oldest kept when
        # `first` is gone, `completed` when it is past the end. Bench side.
        n, size = self.completed, self.record_len
        lo = min(max(first, n - size), n)
        hi = min(n, lo + max(limit, 0))
        if lo >= hi:
            return [], lo
        out = [0] * (hi - lo)
        rec = self.record
        k = min(n - 1, (hi - 1 + ANCHOR_EVERY - 1) // ANCHOR_EVERY * ANCHOR_EVERY)
        t = self.last_ms
        while True:
            if k % ANCHOR_EVERY == 0:
                t = self.anchors[k % size // ANCHOR_EVERY]  # count from the nearest anchor
            if k < hi:
                out[k - lo] = t
            if k == lo:
                return out, lo
            t -= (rec[k % size] - rec[(k - 1) % size]) & _LOW_MASK
            k -= 1
