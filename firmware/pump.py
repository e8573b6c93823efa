# The pump controller. `tick` is the timing-critical path: it advances the
# wall clock and the scheduler by the monotonic time that passed, runs the
# motor one stroke at a time and feeds the watchdog, allocating nothing.
# `service` runs after it in the main loop and does the deferred work the
# tick only flags (event log records). Programming methods validate first
# and change nothing when they refuse.
from time import ticks_diff

from micropython import const

import events
import hal
import prescription
from limits import LimitError
from reservoir import Reservoir
from scheduler import DEMAND_OK, KIND_CLINICIAN, KIND_DEMAND, KIND_NONE, KIND_PRIMING, Scheduler
from units import S_PER_DAY
from walltime import WallClock

_FAR_MS = const(1 << 29)
_FAR_S = const(1 << 19)


class Pump:
    def __init__(self, board, log=None):
        self.board = board
        self.stroke_nl = board.STROKE_NL
        self.sched = Scheduler(self.stroke_nl)
        self.clock = WallClock()
        self.reservoir = Reservoir(board.RESERVOIR_NL, self.stroke_nl)
        self.log = log if log is not None else events.MemoryLog()
        self.stroking = KIND_NONE  # kind of the stroke the motor is running
        self.failed_strokes = 0  # consecutive unconfirmed strokes
        self.failed_logged = 0
        self.therapy = None
        self.rx = None  # the prescription as programmed, in drug units
        self.catheter_nl = 0
        self.active_bolus = KIND_NONE  # bolus the event log knows is running
        self.active_bolus_strokes = 0
        self.bridging = False
        self.last_ticks = board.ticks_ms()

    def record(self, etype, a=0, b=0, c=0, d=0, text=b""):
        return self.log.append(self.clock.day, self.clock.tod_s, etype, a, b, c, d, text)

    # -- programming (validated, logged; never on the tick path) -----------
    def program(self, rx):
        therapy = prescription.validate(rx, self.stroke_nl)
        old = self.therapy
        if old is not None and (old.drug != therapy.drug or old.conc_ng_ml != therapy.conc_ng_ml):
            raise LimitError("concentration_change",
                             "drug or concentration change (%s %d ng/mL -> %s %d ng/mL) only with a refill"
                             % (old.drug, old.conc_ng_ml, therapy.drug, therapy.conc_ng_ml))
        self._apply(rx, therapy, 0)
        return therapy

    def _apply(self, rx, therapy, bridge_strokes):
        self.therapy = therapy
        self.rx = rx
        self.sched.load(therapy, bridge_strokes)
        self.bridging = bridge_strokes > 0 and self.sched.bridge_left > 0
        self.record(events.THERAPY_PROGRAMMED, len(therapy.step_start_s), therapy.basal_nl_per_day(),
                    therapy.daily_ng, bridge_strokes, therapy.drug.encode())

    def change_drug(self, rx, bridge=True):
        # A new drug or concentration, at a refill: the catheter still holds
        # the old drug, so by default a bridge bolus delivers the catheter
        # volume at the old rate profile before the new therapy starts.
        therapy = prescription.validate(rx, self.stroke_nl)
        strokes = 0
        if bridge and self.therapy is not None and self.sched.running:
            strokes = (self.catheter_nl + self.stroke_nl - 1) // self.stroke_nl
        self._apply(rx, therapy, strokes)
        return strokes

    def clinician_bolus(self, dose_ng, duration_s):
        self._require_idle_channel("clinician bolus")
        strokes = prescription.clinician_bolus_strokes(dose_ng, duration_s, self.therapy, self.stroke_nl)
        self._start_bolus(KIND_CLINICIAN, strokes, duration_s, dose_ng)
        return strokes

    def priming_bolus(self, volume_nl, duration_s):
        # Fills a new or revised catheter: volume, never dose to the patient.
        self._require_idle_channel("priming bolus", need_therapy=False)
        strokes = prescription.priming_strokes(volume_nl, duration_s, self.stroke_nl)
        self._start_bolus(KIND_PRIMING, strokes, duration_s, 0)
        return strokes

    def demand_bolus(self):
        # Patient request. Returns (refusal code, seconds until allowed); 0 = started.
        d = self.sched
        self.record(events.BOLUS_REQUESTED, KIND_DEMAND, d.demand_strokes, d.demand_duration)
        code, wait = d.demand_check()
        if code != DEMAND_OK:
            self.record(events.BOLUS_REFUSED, KIND_DEMAND, code, wait)
            return code, wait
        d.demand_start()
        self._note_bolus(KIND_DEMAND, d.demand_strokes, d.demand_duration)
        return DEMAND_OK, 0

    def _require_idle_channel(self, what, need_therapy=True):
        if need_therapy and (self.therapy is None or not self.sched.running):
            raise LimitError("not_running", "%s: no therapy running" % what)
        if self.sched.bolus_busy():
            raise LimitError("bolus_active", "%s: another bolus is in progress" % what)

    def _start_bolus(self, kind, strokes, duration_s, dose_ng):
        self.sched.running = True  # a priming bolus may run before any therapy
        self.sched.start_bolus(kind, strokes, duration_s)
        self._note_bolus(kind, strokes, duration_s, dose_ng)

    def _note_bolus(self, kind, strokes, duration_s, dose_ng=0):
        self.active_bolus = kind
        self.active_bolus_strokes = strokes
        self.record(events.BOLUS_STARTED, kind, strokes, duration_s, dose_ng)

    def suspend(self):
        self._cancel_bolus()
        self.sched.stop()
        if self.stroking:
            self.board.motor_stop()  # the stroke in progress is not counted
            self.stroking = KIND_NONE
        self.record(events.THERAPY_SUSPENDED)

    def resume(self):
        if self.therapy is None:
            raise LimitError("not_programmed", "resume: no therapy programmed")
        self.sched.resume()
        self.record(events.THERAPY_RESUMED)

    def _cancel_bolus(self):
        s = self.sched
        if s.bolus_busy():
            left = s.bolus_left + s.owed_bolus
            self.record(events.BOLUS_CANCELLED, s.bolus_kind, s.bolus_inc - left, left)
            s.clear_bolus()
        self.active_bolus = KIND_NONE

    def set_clock(self, day, tod_s):
        # Schedules follow the new time of day from now on; volume follows
        # elapsed time, so a clock change never delivers or skips a catch-up.
        if not 0 <= tod_s < S_PER_DAY or not 0 <= day < 1 << 20:
            raise LimitError("clock", "clock: day %d / time %d s out of range" % (day, tod_s))
        old_day, old_tod = self.clock.day, self.clock.tod_s
        self.clock.set(day, tod_s)
        self.record(events.CLOCK_SET, old_day, old_tod, day, tod_s)

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
                if self.failed_strokes >= board.STALL_STROKES:
                    self.sched.stop()  # motor stall or occlusion: stop, never retry blindly
                    return
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
        if s >= _FAR_S:
            return _FAR_MS
        return s * 1000 - self.clock.sub_ms

    # -- deferred work, after the tick ------------------------------------
    def service(self):
        s = self.sched
        if self.active_bolus != KIND_NONE and s.bolus_kind != self.active_bolus:
            self.record(events.BOLUS_DELIVERED, self.active_bolus, self.active_bolus_strokes)
            self.active_bolus = KIND_NONE
        if self.active_bolus == KIND_NONE and s.bolus_kind != KIND_NONE:
            # Started inside the scheduler: a periodic bolus.
            self._note_bolus(s.bolus_kind, s.bolus_inc, s.bolus_period)
        if self.bridging and not s.bridge_left:
            self.bridging = False
            self.record(events.BRIDGE_DONE)
        if self.failed_strokes != self.failed_logged:
            if self.failed_strokes:
                self.record(events.STROKE_FAILED, self.failed_strokes)
            self.failed_logged = self.failed_strokes

    def needs_service(self):
        s = self.sched
        return (self.active_bolus != s.bolus_kind or (self.bridging and not s.bridge_left)
                or self.failed_strokes != self.failed_logged)
