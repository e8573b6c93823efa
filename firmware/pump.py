# The pump controller: one tick advances the wall clock and the scheduler by
# the monotonic time that passed, runs the motor one stroke at a time, and
# feeds the watchdog. The tick path allocates nothing.
from time import ticks_diff

from micropython import const

import hal
from reservoir import Reservoir
from scheduler import KIND_NONE, Scheduler
from walltime import WallClock

_FAR_MS = const(1 << 29)


class Pump:
    def __init__(self, board):
        self.board = board
        self.stroke_nl = board.STROKE_NL
        self.sched = Scheduler(self.stroke_nl)
        self.clock = WallClock()
        self.reservoir = Reservoir(board.RESERVOIR_NL, self.stroke_nl)
        self.stroking = KIND_NONE  # kind of the stroke the motor is running
        self.failed_strokes = 0  # consecutive unconfirmed strokes
        self.therapy = None
        self.last_ticks = board.ticks_ms()

    def start(self, therapy, bridge_strokes=0):
        self.therapy = therapy
        self.sched.load(therapy, bridge_strokes)

    # -- the tick path -----------------------------------------------------
    def tick(self):
        board = self.board
        now = board.ticks_ms()
        dt = ticks_diff(now, self.last_ticks)
        self.last_ticks = now
        if dt > 0:
            tod = self.clock.tod_s
            secs = self.clock.elapse(dt)
            if secs:
                self.sched.advance(secs, tod)
        self._run_motor()
        board.wdt_feed()

    def _run_motor(self):
        board = self.board
        if self.stroking:
            r = board.motor_poll()
            if r == hal.STROKE_BUSY:
                return
            kind = self.stroking
            self.stroking = KIND_NONE
            if r == hal.STROKE_DONE:
                self.failed_strokes = 0
                self.sched.stroke_delivered(kind)
                self.reservoir.debit_stroke(kind)
            else:
                self.failed_strokes += 1
        kind = self.sched.next_stroke_kind()
        if kind and self.sched.running:
            board.motor_begin()
            self.stroking = kind

    def ms_to_next_event(self):
        # For virtual time: how far the clock may jump before the next thing
        # the pump must do. Never skips a stroke, boundary or motor result.
        if self.stroking:
            return self.board.motor_ms_left()
        if self.sched.next_stroke_kind():
            return 0
        s = self.sched.secs_to_event(self.clock.tod_s)
        if s >= _FAR_MS // 1000:
            return _FAR_MS
        return s * 1000 - self.clock.sub_ms
