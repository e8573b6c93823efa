# The pump controller. `tick` is the timing-critical path: it advances the
# wall clock and the scheduler by the monotonic time that passed, runs the
# motor one stroke at a time behind the safety interlocks, sounds alarms and
# feeds the watchdog, allocating nothing. `service` runs after it in the main
# loop and does the deferred work the tick only flags (event log records).
# Programming methods validate first and change nothing when they refuse.
from time import ticks_diff

from micropython import const

import alarms
import events
import hal
import prescription
from alarms import Alarms
from guard import DoseGuard
from limits import LimitError, check_range
from reservoir import Reservoir
from scheduler import DEMAND_OK, KIND_CLINICIAN, KIND_DEMAND, KIND_NONE, KIND_PRIMING, Scheduler, is_exclusive
from units import S_PER_DAY
from walltime import WallClock

_FAR_MS = const(1 << 29)
_FAR_S = const(1 << 19)
FIRMWARE_VERSION = "0.1.0"
HOUSEKEEPING_S = const(300)  # battery, integrity and alarm-date checks
# Delivery progress is saved every CHECKPOINT_STROKES strokes or CHECKPOINT_S
# of delivery, whichever first; a saved state counts RESERVE_STROKES more
# strokes as delivered than it has seen, so a reset never over-delivers
# (docs/persistence.md).
CHECKPOINT_STROKES = const(24)
RESERVE_STROKES = const(32)
CHECKPOINT_S = const(3600)

# Why the last stroke failed.
_FAIL_MOTOR = const(1)
_FAIL_PRESSURE = const(2)

# Alarms that stop therapy while they last; a clinician resume clears the
# latched ones (the cause was looked at), never a persisting reading.
_STOPPING = alarms.CRITICAL_MASK  # every critical alarm stops therapy
_CLEARED_BY_RESUME = ((1 << alarms.MOTOR_STALL) | (1 << alarms.OCCLUSION) | (1 << alarms.INTERNAL_FAULT)
                      | (1 << alarms.DOSE_GUARD))
_CLEARED_BY_ACK = (1 << alarms.REFILL_DISCREPANCY) | (1 << alarms.ALARM_DATE)
_LEVEL_ALARMS = (1 << alarms.RESERVOIR_LOW) | (1 << alarms.RESERVOIR_EMPTY)


class Pump:
    def __init__(self, board, log=None):
        self.board = board
        self.stroke_nl = board.STROKE_NL
        self.sched = Scheduler(self.stroke_nl)
        self.clock = WallClock()
        self.reservoir = Reservoir(board.RESERVOIR_NL, self.stroke_nl)
        self.alarms = Alarms()
        self.guard = DoseGuard()
        self.log = log if log is not None else events.MemoryLog()
        self.stroking = KIND_NONE  # kind of the stroke the motor is running
        self.failed_strokes = 0  # consecutive unconfirmed strokes
        self.failed_total = 0  # strokes not confirmed since boot (occluded ones too)
        self.motor_test_from = 0
        self.fail_cause = 0
        self.failed_logged = 0
        self.suspended = False  # by the clinician
        self.stopped_only_for_empty = False  # a refill restarts therapy
        self.therapy = None
        self.rx = None  # the prescription as programmed, in drug units
        self.catheter_nl = 0
        # Identity, set at implant and kept on flash by the persistence layer.
        self.device = {"serial": "", "model": board.MODEL, "firmware": FIRMWARE_VERSION,
                       "reservoir_nl": board.RESERVOIR_NL, "stroke_nl": board.STROKE_NL}
        self.alarm_day = 0  # clinician's alarm date (day number), 0 = none
        self.active_bolus = KIND_NONE  # bolus the event log knows is running
        self.active_bolus_strokes = 0
        self.bridging = False
        self.fault = None  # exception that put the pump in its safe state
        self.next_housekeeping = 0
        self.old_rx = None  # prescription being bridged from
        self.saver = None  # persistence hook (firmware/persist.py)
        self.since_checkpoint = 0  # strokes since delivery state was last saved
        self.next_checkpoint = CHECKPOINT_S
        self.last_ticks = board.ticks_ms()

    def commit(self):
        # Makes the pump's state durable: a command is acknowledged only after this.
        if self.saver is not None:
            self.saver()
        self.since_checkpoint = 0
        self.next_checkpoint = self.now_s + CHECKPOINT_S

    @property
    def now_s(self):
        return self.sched.mono_s

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
        self.commit()
        return therapy

    def _apply(self, rx, therapy, bridge_strokes):
        self.load_therapy(rx, therapy, bridge_strokes if not self.suspended else 0)
        self.record(events.THERAPY_PROGRAMMED, len(therapy.step_start_s), therapy.basal_nl_per_day(),
                    therapy.daily_ng, bridge_strokes, therapy.drug.encode())

    def load_therapy(self, rx, therapy, bridge_strokes, old=None):
        # Makes `therapy` the active one (a bridge keeps the current profile
        # for `bridge_strokes` first). Used by programming and by restore.
        old = old or self.therapy
        if bridge_strokes and old is not None and not self.sched.n_steps:
            self.sched.load(old)
        self.old_rx = self.rx if bridge_strokes else None
        self.therapy = therapy
        self.rx = rx
        self.sched.load(therapy, bridge_strokes)
        self.bridging = self.sched.bridge_left > 0
        hour, day = prescription.guard_limits(therapy, self.stroke_nl)
        if self.bridging and old is not None:
            oh, od = prescription.guard_limits(old, self.stroke_nl)
            hour, day = max(hour, oh), max(day, od)
        self.guard.set_limits(hour, day, self.now_s)
        self.alarms.set(alarms.INTEGRITY, False, self.now_s)
        self.reservoir.set_drug(therapy.conc_ng_ml)
        if self.suspended or self.alarms.active & _STOPPING:
            self.sched.stop()

    def refill(self, withdrawn_nl, added_nl, rx=None):
        # Empty-and-fill. A new drug or concentration comes only here, with its
        # prescription, and is bridged: the catheter still holds the old drug.
        cap = self.reservoir.capacity_nl
        check_range("withdrawn", "withdrawn volume", withdrawn_nl, 0, cap, "nL")
        if added_nl > cap:
            raise LimitError("overfill", "refill: %d nL added exceeds the reservoir's %d nL" % (added_nl, cap))
        check_range("added", "added volume", added_nl, self.reservoir.residual_nl + self.stroke_nl, cap, "nL")
        therapy = None
        if rx is not None:
            therapy = prescription.validate(rx, self.stroke_nl)
        elif self.therapy is None:
            raise LimitError("not_programmed", "refill: a first fill needs its prescription")
        expected = self.reservoir.refill(withdrawn_nl, added_nl)
        warn = self.reservoir.discrepancy_alarm(expected, withdrawn_nl)
        self.record(events.REFILL, withdrawn_nl, added_nl, expected, withdrawn_nl - expected)
        if warn:
            self.alarms.set(alarms.REFILL_DISCREPANCY, True, self.now_s)
        if therapy is not None:
            old = self.therapy
            changed = old is not None and (old.drug, old.conc_ng_ml) != (therapy.drug, therapy.conc_ng_ml)
            bridge = 0
            if changed and self.sched.basal_on:
                bridge = (self.catheter_nl + self.stroke_nl - 1) // self.stroke_nl
            self._apply(rx, therapy, bridge)
        self._check_level()
        if self.alarms.active & (1 << alarms.RESERVOIR_EMPTY) == 0 and self.stopped_only_for_empty:
            self.stopped_only_for_empty = False
            self._restart()
        self.commit()
        return {"expected_nl": expected, "withdrawn_nl": withdrawn_nl, "discrepancy_nl": withdrawn_nl - expected,
                "warning": warn}

    def clinician_bolus(self, dose_ng, duration_s):
        self._require_idle_channel("clinician bolus")
        strokes = prescription.clinician_bolus_strokes(dose_ng, duration_s, self.therapy, self.stroke_nl)
        self._start_bolus(KIND_CLINICIAN, strokes, duration_s, dose_ng)
        self.commit()
        return strokes

    def priming_bolus(self, volume_nl, duration_s):
        # Fills a new or revised catheter: volume, never dose to the patient.
        self._require_idle_channel("priming bolus", need_therapy=False)
        strokes = prescription.priming_strokes(volume_nl, duration_s, self.stroke_nl)
        self._start_bolus(KIND_PRIMING, strokes, duration_s, 0)
        self.commit()
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
        self.commit()
        return DEMAND_OK, 0

    def _require_idle_channel(self, what, need_therapy=True):
        stopping = self.alarms.active & _STOPPING
        if stopping:
            raise LimitError("alarm", "%s: therapy stopped by alarm: %s" % (what, self._alarm_names(stopping)))
        if need_therapy and (self.therapy is None or not self.sched.basal_on):
            raise LimitError("not_running", "%s: no therapy running" % what)
        if self.sched.bolus_busy():
            raise LimitError("bolus_active", "%s: another bolus is in progress" % what)

    @staticmethod
    def _alarm_names(mask):
        return ", ".join(alarms.NAMES[a] for a in range(alarms.COUNT) if mask & (1 << a))

    def _start_bolus(self, kind, strokes, duration_s, dose_ng):
        self.sched.running = True  # a priming bolus may run with no therapy running
        self.sched.start_bolus(kind, strokes, duration_s)
        self.guard.allow_bolus(strokes)
        self._note_bolus(kind, strokes, duration_s, dose_ng)

    def _note_bolus(self, kind, strokes, duration_s, dose_ng=0):
        self.active_bolus = kind
        self.active_bolus_strokes = strokes
        self.record(events.BOLUS_STARTED, kind, strokes, duration_s, dose_ng)

    def suspend(self):
        self.suspended = True
        self._halt()
        self.record(events.THERAPY_SUSPENDED)
        self.commit()

    def resume(self):
        if self.therapy is None:
            raise LimitError("not_programmed", "resume: no therapy programmed")
        persisting = self.alarms.active & _STOPPING & ~_CLEARED_BY_RESUME
        if persisting:
            raise LimitError("alarm", "resume: %s must be resolved first" % self._alarm_names(persisting))
        for a in range(alarms.COUNT):
            if _CLEARED_BY_RESUME & (1 << a):
                self.alarms.set(a, False, self.now_s)
        self.guard.tripped = False
        self.fault = None
        self.failed_strokes = 0
        self.suspended = False
        self._restart()
        self.commit()

    def _restart(self):
        if self.suspended or self.alarms.active & _STOPPING:
            return
        self.sched.resume()
        self.record(events.THERAPY_RESUMED)

    def _halt(self):
        # Safe state for delivery: motor stopped, nothing owed, bolus cancelled.
        if self.stroking:
            self.board.motor_stop()  # the stroke in progress is not counted
            self.stroking = KIND_NONE
        s = self.sched
        if s.bolus_busy():
            left = s.bolus_left + s.owed_bolus
            self.record(events.BOLUS_CANCELLED, s.bolus_kind, s.bolus_inc - left, left)
        self.active_bolus = KIND_NONE
        self.guard.budget = 0
        s.stop()

    def set_clock(self, day, tod_s):
        # Schedules follow the new time of day from now on; volume follows
        # elapsed time, so a clock change never delivers or skips a catch-up.
        if not 0 <= tod_s < S_PER_DAY or not 0 <= day < 1 << 20:
            raise LimitError("clock", "clock: day %d / time %d s out of range" % (day, tod_s))
        old_day, old_tod = self.clock.day, self.clock.tod_s
        self.clock.set(day, tod_s)
        self.record(events.CLOCK_SET, old_day, old_tod, day, tod_s)
        self.next_housekeeping = self.now_s
        self.commit()

    def set_low_threshold(self, volume_nl):
        r = self.reservoir
        check_range("low_threshold", "low-reservoir threshold", volume_nl, r.residual_nl + self.stroke_nl,
                    r.capacity_nl, "nL")
        r.low_nl = volume_nl
        self._check_level()
        self.commit()

    def set_alarm_date(self, day):
        check_range("alarm_date", "alarm date", day, 0, 1 << 20, "day")
        self.alarm_day = day
        self.alarms.set(alarms.ALARM_DATE, False, self.now_s)
        self.next_housekeeping = self.now_s
        self.commit()

    def acknowledge(self, alarm):
        check_range("alarm", "alarm id", alarm, 0, alarms.COUNT - 1, "")
        if not self.alarms.acknowledge(alarm, self.now_s):
            return False
        self.record(events.ALARM_ACKNOWLEDGED, alarm)
        if _CLEARED_BY_ACK & (1 << alarm):
            if alarm == alarms.ALARM_DATE:
                self.alarm_day = 0
            self.alarms.set(alarm, False, self.now_s)
        self.board.buzzer(0)
        self.commit()
        return True

    # -- the tick path -----------------------------------------------------
    def tick(self):
        board = self.board
        try:
            now = board.ticks_ms()
            dt = ticks_diff(now, self.last_ticks)
            self.last_ticks = now
            if dt > 0:
                tod = self.clock.tod_s
                secs = self.clock.elapse(dt)
                if secs:
                    self.sched.advance(secs, tod)
            self._run_motor()
            if self.now_s >= self.next_housekeeping:
                self._housekeeping()
            self._sound(now)
        except Exception as e:  # any internal fault: safe state, cause kept for the log
            self.fail_safe(e)
        board.wdt_feed()

    def fail_safe(self, exc):
        self.board.motor_stop()
        self.stroking = KIND_NONE
        self.sched.stop()
        self.alarms.set(alarms.INTERNAL_FAULT, True, self.now_s)
        if self.fault is None:
            self.fault = exc

    def _run_motor(self):
        board = self.board
        if self.stroking:
            r = board.motor_poll()
            if r == hal.STROKE_BUSY:
                return
            kind = self.stroking
            self.stroking = KIND_NONE
            if r == hal.STROKE_DONE and board.pressure_mmhg() < board.OCCLUSION_MMHG:
                self.failed_strokes = 0
                self.sched.stroke_delivered(kind)
                self.reservoir.debit_stroke(kind, self.now_s, self.clock.day)
                self.guard.count_stroke(self.now_s, is_exclusive(kind))
                self.since_checkpoint += 1
                self._check_level()
            else:
                self.failed_strokes += 1
                self.failed_total += 1
                self.fail_cause = _FAIL_MOTOR if r != hal.STROKE_DONE else _FAIL_PRESSURE
                if self.failed_strokes >= board.STALL_STROKES:
                    # Stall or occlusion: stop, never retry blindly.
                    self._stop_for(alarms.MOTOR_STALL if self.fail_cause == _FAIL_MOTOR else alarms.OCCLUSION)
                    return
        s = self.sched
        kind = s.next_stroke_kind()
        if s.running and kind:
            if not self.guard.allows_stroke(self.now_s, is_exclusive(kind)):
                self._stop_for(alarms.DOSE_GUARD)
                return
            board.motor_begin()
            self.stroking = kind

    def _stop_for(self, alarm):
        self.alarms.set(alarm, True, self.now_s)
        if self.stroking:
            self.board.motor_stop()
            self.stroking = KIND_NONE
        self.sched.stop()

    def _check_level(self):
        level = self.reservoir.level()
        if level == 0 and not self.alarms.active & _LEVEL_ALARMS:
            return  # the common case, once per stroke: nothing to do
        now = self.now_s
        self.alarms.set(alarms.RESERVOIR_LOW, level == 1, now)
        if level == 2:
            if not self.alarms.active & (1 << alarms.RESERVOIR_EMPTY):
                self.stopped_only_for_empty = not (self.suspended or self.alarms.active & _STOPPING)
                self._stop_for(alarms.RESERVOIR_EMPTY)
        else:
            self.alarms.set(alarms.RESERVOIR_EMPTY, False, now)

    def _housekeeping(self):
        board, now = self.board, self.now_s
        self.next_housekeeping = now + HOUSEKEEPING_S
        mv = board.battery_mv()
        self.alarms.set(alarms.BATTERY_ERI, mv <= board.BATTERY_ERI_MV, now)
        if mv <= board.BATTERY_EOS_MV:
            self._stop_for(alarms.BATTERY_EOS)
        else:
            self.alarms.set(alarms.BATTERY_EOS, False, now)
        if self.therapy is not None and (not self.sched.intact() or not self.reservoir.intact()):
            self._stop_for(alarms.INTEGRITY)
        if self.alarm_day and self.clock.day >= self.alarm_day:
            self.alarms.set(alarms.ALARM_DATE, True, now)

    def _sound(self, now):
        a = self.alarms
        self.board.buzzer(a.tone(self.now_s, now, ticks_diff(now, a.sound_ms)))

    def ms_to_next_event(self):
        # For virtual time: how far the clock may jump before the next thing
        # the pump must do. Never skips a stroke, boundary, check or tone.
        if self.stroking:
            return self.board.motor_ms_left()
        if self.sched.running and self.sched.next_stroke_kind():
            return 0
        a = self.alarms
        if a.testing >= 0 and a.sounding < 0:
            return 0
        if a.sounding >= 0:
            return alarms.SEGMENT_MS - ticks_diff(self.last_ticks, a.sound_ms) % alarms.SEGMENT_MS
        s = self.sched.secs_to_event(self.clock.tod_s)
        h = self.next_housekeeping - self.now_s
        if h < s:
            s = h
        t = a.secs_to_next_sound(self.now_s)
        if t < s:
            s = t
        if s >= _FAR_S:
            return _FAR_MS
        ms = s * 1000 - self.clock.sub_ms
        return ms if ms > 0 else 0

    # -- deferred work, after the tick ------------------------------------
    def needs_service(self):
        s, a = self.sched, self.alarms
        return (self.active_bolus != s.bolus_kind or (self.bridging and not s.bridge_left)
                or self.failed_strokes != self.failed_logged or a.raised or a.cleared
                or self.since_checkpoint >= CHECKPOINT_STROKES
                or (self.since_checkpoint and self.now_s >= self.next_checkpoint))

    def service(self):
        s, a = self.sched, self.alarms
        if self.active_bolus != KIND_NONE and s.bolus_kind != self.active_bolus:
            if self.sched.running:
                self.record(events.BOLUS_DELIVERED, self.active_bolus, self.active_bolus_strokes)
            self.active_bolus = KIND_NONE
        if self.active_bolus == KIND_NONE and s.bolus_kind != KIND_NONE:
            self._note_bolus(s.bolus_kind, s.bolus_inc, s.bolus_period)  # a periodic bolus
        if self.bridging and not s.bridge_left:
            self.bridging = False
            self.record(events.BRIDGE_DONE)
        if self.failed_strokes != self.failed_logged:
            if self.failed_strokes:
                self.record(events.STROKE_FAILED, self.failed_strokes, self.fail_cause)
            self.failed_logged = self.failed_strokes
        raised, cleared = a.raised, a.cleared
        a.raised = a.cleared = 0
        for i in range(alarms.COUNT):
            if raised & (1 << i):
                if i == alarms.INTERNAL_FAULT and self.fault is not None:
                    self.record(events.FAULT, 0, 0, 0, 0, ("%s: %s" % (type(self.fault).__name__, self.fault))[:60].encode())
                self.record(events.ALARM_RAISED, i)
            if cleared & (1 << i):
                self.record(events.ALARM_CLEARED, i)
        if raised or cleared or self.since_checkpoint >= CHECKPOINT_STROKES or self.now_s >= self.next_checkpoint:
            self.commit()

    # -- reports ---------------------------------------------------------
    def status(self):
        r, s, t = self.reservoir, self.sched, self.therapy
        vol24, dose24 = r.last_24h(self.now_s, self.clock.day)
        daily_nl = 0
        if t is not None:
            daily_nl = t.basal_nl_per_day() + sum(q[1] for q in t.periodic) * self.stroke_nl
            if t.demand is not None:
                daily_nl += t.demand[0] * t.demand[3] * self.stroke_nl
        return {
            "day": self.clock.day, "tod_s": self.clock.tod_s,
            "state": self._state_name(),
            "drug": t.drug if t else None, "conc_ng_ml": t.conc_ng_ml if t else 0,
            "remaining_nl": r.remaining_nl, "capacity_nl": r.capacity_nl,
            "low_nl": r.low_nl, "residual_nl": r.residual_nl,
            "delivered_nl": r.delivered_nl(), "drug_delivered_ng": r.drug_delivered_ng(),
            "today_nl": r.today_strokes * self.stroke_nl, "today_dose_nl": r.today_dose * self.stroke_nl,
            "last_24h_nl": vol24 * self.stroke_nl, "last_24h_dose_nl": dose24 * self.stroke_nl,
            "priming_nl": r.strokes[KIND_PRIMING] * self.stroke_nl,
            "max_daily_nl": daily_nl,
            "low_in_s": r.seconds_until(r.low_nl, daily_nl),
            "empty_in_s": r.seconds_until(r.residual_nl, daily_nl),
            "bolus": {"kind": s.bolus_kind, "strokes_left": s.bolus_left + s.owed_bolus} if s.bolus_busy() else None,
            "alarms": self.alarms.listing(self.now_s),
            "battery_mv": self._battery_report(),
            "fault": None if self.fault is None else "%s: %s" % (type(self.fault).__name__, self.fault),
        }

    def _battery_report(self):
        try:
            return self.board.battery_mv()
        except Exception:  # the report must work even when the sensor faults
            return None

    def _state_name(self):
        if self.alarms.active & _STOPPING:
            return "stopped"
        if self.suspended:
            return "suspended"
        if self.sched.basal_on:
            return "delivering"
        return "priming" if self.sched.running else "idle"
