# The pump controller. `tick` is the timing-critical path: it advances the
# wall clock and the scheduler by the monotonic time that passed, runs the
# motor one stroke at a time behind the safety interlocks, sounds alarms and
# feeds the watchdog, allocating nothing. `service` runs after it in the main
# loop and does the deferred work the tick only flags (event log records,
# checkpoints); it never raises.
#
# Commands that change therapy validate everything first (a `check=True`
# call stops there and is the review screen's dry run), then apply and make
# the change durable; a change that cannot be saved is undone and refused,
# so nothing is acknowledged that a reset could lose (docs/safety.md).
from time import ticks_diff

from micropython import const

import alarms
import events
import hal
import limits
import prescription
from alarms import Alarms
from catheter import CEILING_UNITS, Catheter, stroke_weight
from daytotals import END_CLOCK, END_DRUG, END_MIDNIGHT, DayTotals
from guard import CEILING_BUCKET_S, DoseGuard
from limits import LimitError, check_range
from reservoir import Reservoir
from scheduler import (DEMAND_OK, KIND_BASAL, KIND_BRIDGE, KIND_CLINICIAN, KIND_DEMAND, KIND_NONE, KIND_PRIMING,
                       KIND_UNCOMMANDED, Scheduler, is_exclusive)
from units import S_PER_DAY, fmt_mass, fmt_volume
from walltime import WallClock

_FAR_MS = const(1 << 28)  # below ticks_add's 2^29 limit, with room
_FAR_S = const(1 << 19)
_I32_MAX = 0x7FFFFFFF  # not const: beyond the RP2040's small ints (used off the tick)
FIRMWARE_VERSION = "0.2.0"
HOUSEKEEPING_S = const(300)  # battery, integrity and alarm-date checks
# Delivery progress is saved every CHECKPOINT_STROKES strokes or CHECKPOINT_S
# of delivery, whichever first; a saved state counts RESERVE_STROKES more
# strokes as delivered than it has seen, so a reset never over-delivers
# (docs/persistence.md).
CHECKPOINT_STROKES = const(24)
RESERVE_STROKES = const(32)
CHECKPOINT_S = const(3600)
# The fault as the status gives it: as much as its log record keeps
# (events.FAULT text); a longer one alone could push a STATUS reply past
# one frame (firmware/link.py shortens one that still would not fit).
FAULT_TEXT = const(32)
FLASH_RETRY_S = const(60)  # a failed checkpoint is tried again after this
# Battery readings are debounced: BATTERY_SAMPLES readings in a row, taken
# BATTERY_RECHECK_S apart once one is off, change a battery alarm; recovery
# needs BATTERY_HYSTERESIS_MV above the threshold.
BATTERY_SAMPLES = const(3)
BATTERY_RECHECK_S = const(10)
BATTERY_HYSTERESIS_MV = const(100)
# Most strokes of uncommanded motion counted per tick: more than the motor
# can turn in one (a glitching sensor reports more; it stops the pump anyway).
UNCOMMANDED_MAX = const(8)
# Strokes the motor fails now and then are retried, and a stall is only
# STALL_STROKES failures in a row: a gear train failing one attempt in five
# would never stop therapy, nor be reported. FAILURE_WARN motor failures
# among the last FAILURE_WINDOW attempts raise the `stroke failures` warning
# (docs/safety.md). The window is a bit per attempt in one small int.
FAILURE_WINDOW = const(29)
FAILURE_WARN = const(3)
_FAILURE_MASK = const((1 << FAILURE_WINDOW) - 1)

# Why the last stroke failed.
_FAIL_MOTOR = const(1)
_FAIL_PRESSURE = const(2)

# Alarms that stop therapy while they last: every critical alarm but a flash
# fault (the pump cannot save, but it can still deliver what it was told).
_STOPPING = alarms.CRITICAL_MASK & ~(1 << alarms.FLASH_FAULT)
# Latched stops: a clinician resume clears them (the cause was looked at).
_CLEARED_BY_RESUME = ((1 << alarms.MOTOR_STALL) | (1 << alarms.OCCLUSION) | (1 << alarms.INTERNAL_FAULT)
                      | (1 << alarms.DOSE_GUARD) | (1 << alarms.UNCOMMANDED_MOTION))
# Stops that end by themselves when their condition does (a refill, a
# battery reading back in range): therapy then restarts, logged.
_SELF_CLEARING = (1 << alarms.RESERVOIR_EMPTY) | (1 << alarms.BATTERY_EOS)
_CLEARED_BY_ACK = (1 << alarms.REFILL_DISCREPANCY) | (1 << alarms.ALARM_DATE) | (1 << alarms.STROKE_FAILURES)
_LEVEL_ALARMS = (1 << alarms.RESERVOIR_LOW) | (1 << alarms.RESERVOIR_EMPTY)


class Pump:
    def __init__(self, board, log=None):
        self.board = board
        self.stroke_nl = board.STROKE_NL
        self.sched = Scheduler(self.stroke_nl)
        self.clock = WallClock()
        self.reservoir = Reservoir(board.RESERVOIR_NL, self.stroke_nl)
        self.catheter = Catheter(self.stroke_nl)
        self.alarms = Alarms()
        self.guard = DoseGuard()
        self.totals = DayTotals()  # strokes per pump day and kind (DAILY_TOTAL records)
        self.log = log if log is not None else events.MemoryLog()
        self.stroking = KIND_NONE  # kind of the stroke the motor is running
        self.stroke_weight = 0  # ceiling weight of that stroke
        self.failed_strokes = 0  # consecutive unconfirmed strokes
        self.failed_total = 0  # strokes not confirmed since boot (occluded ones too)
        self.attempts_failed = 0  # bit i: the attempt i before the last one failed in the motor
        self.window_failures = 0  # motor failures among the last FAILURE_WINDOW attempts
        self.motor_test_from = 0
        self.fail_cause = 0
        self.failed_logged = 0
        self.suspended = False  # by the clinician
        self.restart_when_clear = False  # stopped while delivering by a self-clearing alarm
        self.battery_low = 0  # readings in a row at or below end of service
        self.battery_eri = 0  # readings in a row at or below the replacement indicator
        self.battery_good = 0  # readings in a row clear of end of service, with hysteresis
        self.battery_fine = 0  # readings in a row clear of the replacement indicator, with hysteresis
        self.therapy = None
        self.rx = None  # the prescription as programmed, in drug units
        self.bridge_from = None  # therapy being bridged from (its profile runs first)
        # Identity, set at implant and kept on flash by the persistence layer.
        self.device = {"serial": "", "model": board.MODEL, "firmware": FIRMWARE_VERSION,
                       "reservoir_nl": board.RESERVOIR_NL, "stroke_nl": board.STROKE_NL}
        self.alarm_day = 0  # clinician's alarm date (day number), 0 = none
        self.active_bolus = KIND_NONE  # bolus the event log knows is running
        self.active_bolus_strokes = 0
        self.active_bolus_taken = 0  # of those, strokes resets took off (firmware/persist.py)
        self.bridging = False
        self.fault = None  # exception that put the pump in its safe state
        self.flash_error = None  # why the last save failed
        self.flash_retry_s = 0  # no checkpoint before this after a failed save
        self.next_housekeeping = 0
        self.old_rx = None  # prescription being bridged from
        self.saver = None  # persistence hook (firmware/persist.py): save()
        self.memento = None  # and (snapshot, revert) to undo an unsaved change
        self.since_checkpoint = 0  # strokes since delivery state was last saved
        self.unsaved_change = False  # a stop or a silence obeyed without flash: saved at the next try
        self.next_checkpoint = CHECKPOINT_S
        self.bolus_saved = 0  # sched.boluses_started when the state was last saved (a restored bolus: 0)
        self.bolus_cut = KIND_NONE  # a bolus stopped by the tick for the flash, for service() to log
        self.bolus_cut_done = 0
        self.bolus_cut_left = 0
        self.last_ticks = board.ticks_ms()

    # No properties on Pump: a class with one makes every attribute store
    # look for a setter first (MicroPython), 280 ns instead of 11 a store.
    def now_s(self):
        return self.sched.mono_s

    def record(self, etype, a=0, b=0, c=0, d=0, text=b""):
        try:
            return self.log.append(self.clock.day, self.clock.tod_s, etype, a, b, c, d, text)
        except OSError as e:  # the log's flash failed: therapy goes on, the alarm says so
            self._flash_failed(e)
            return 0

    # -- durability --------------------------------------------------------
    def commit(self):
        # Makes the pump's state durable. Raises OSError when it cannot.
        if self.saver is not None:
            try:
                self.saver()
            except OSError as e:
                self._flash_failed(e)
                raise e  # (not a bare raise: the emulator's native build cannot compile one)
            if self.alarms.active & (1 << alarms.FLASH_FAULT):
                self.alarms.set(alarms.FLASH_FAULT, False, self.now_s())
                self.flash_error = None
        self.since_checkpoint = 0
        self.next_checkpoint = self.now_s() + CHECKPOINT_S
        self.bolus_saved = self.sched.boluses_started
        self.unsaved_change = False

    def _flash_failed(self, exc):
        self.flash_error = exc
        self.alarms.set(alarms.FLASH_FAULT, True, self.now_s())
        self.flash_retry_s = self.now_s() + FLASH_RETRY_S  # not a write attempt per stroke meanwhile

    def _durably(self, what, apply):
        # Applies a validated change and saves it; if the save fails the
        # change is undone (the pump runs on as before) and refused.
        before = self.memento[0]() if self.memento is not None else None
        sub_ms = self.clock.sub_ms  # the snapshot keeps whole seconds only
        try:
            result = apply()
        except Exception as e:  # a change that fails part-way is not left half applied
            if before is not None:
                self.memento[1](before)
                self.clock.sub_ms = sub_ms
            raise e
        try:
            self.commit()
        except OSError as e:
            if before is not None:
                self.memento[1](before)
                self.clock.sub_ms = sub_ms
            self.record(events.FAULT, 5, 0, 0, 0, ("not saved: " + what)[:32].encode())
            raise LimitError("flash_fault", "%s not done: it could not be saved to flash (%s); therapy continues as"
                             " before: try again, and replace the pump if the flash fault persists" % (what, e))
        return result

    def _obeyed(self, what, apply):
        # A stop or a silence is obeyed even when the flash cannot save it (a
        # clinician must always be able to stop the pump): returns (result,
        # saved). Unsaved, it is saved at the next try (FLASH_RETRY_S); a
        # reset before then brings back the state as last saved.
        try:
            return self._durably(what, apply), True
        except LimitError as e:
            if e.limit != "flash_fault":
                raise e
        result = apply()  # the undo restored the state before: applied once
        self.unsaved_change = True
        return result, False

    # -- the 24-hour ceiling (one home for the rule) --------------------------
    def _weight(self, therapy):
        return stroke_weight(self.stroke_nl, therapy.conc_ng_ml, limits.hard_daily(therapy.drug))

    def _bridge_now(self):
        # (profile, weight, strokes) of the earlier drug still in the catheter, or None.
        c = self.catheter
        return (self.bridge_from, c.old_weight, c.old) if c.old else None

    def _future(self, therapy, extra_strokes=0, keep_bolus=True, bridge=None):
        # Most ceiling units the pump can deliver in the next `b` ceiling
        # buckets (minutes) from now with `therapy` running, `extra_strokes`
        # more (a new bolus) and the running bolus if kept; never less for a
        # larger b (guard.worst_window relies on it). A bridge (profile,
        # weight, strokes) runs the earlier profile with the earlier drug
        # first; any stroke meanwhile pushes earlier drug, counted at the
        # heavier weight. Everything but b is worked out once, here.
        w = self._weight(therapy) if therapy is not None else self.catheter.weight
        old_t, old_w, old_n = bridge or (None, 0, 0)
        heavy = max(w, old_w)
        s = self.sched
        running = s.bolus_left + s.owed_bolus if keep_bolus and s.bolus_busy() else 0
        fixed = (extra_strokes + running) * heavy + old_n * (heavy - w)
        if therapy is None:
            return lambda b: fixed
        new = prescription.reach(therapy, self.stroke_nl, CEILING_BUCKET_S)
        if old_t is None:
            return lambda b, f=fixed, new=new, w=w: f + new(b) * w  # defaults: see prescription.reach
        old = prescription.reach(old_t, self.stroke_nl, CEILING_BUCKET_S)

        def units(b, f=fixed, new=new, w=w, old=old, old_w=old_w):
            a, o = new(b) * w, old(b) * old_w
            return f + (a if a > o else o)

        return units

    def _check_ceiling(self, what, future, therapy, override=False):
        # Refuses a command after which some 24-hour window, counting what
        # was delivered and the most that can follow, would pass the drug's
        # maximum (soft without override, hard always). Returns True when the
        # override was needed. The window of whole minutes is up to a minute
        # longer than 24 h: the limit allows a minute of the rate and a stroke.
        therapy = therapy or self.therapy
        if therapy is None:
            return False
        drug = therapy.drug
        hard, soft, ug = limits.hard_daily(drug), limits.drug_limits(drug)[1], limits.doses_in_ug(drug)
        slack = future(1) - future(0) + self._heaviest(therapy)  # a minute of the rate, a stroke
        worst = self.guard.worst_window(self.now_s(), future)
        soft_units = CEILING_UNITS * soft // hard
        over_soft = worst > soft_units + slack
        if worst > CEILING_UNITS + slack or (over_soft and not override):
            hard_hit = worst > CEILING_UNITS + slack
            past = self.guard.ceiling_24h(self.now_s()) * hard // CEILING_UNITS
            name = "hard" if hard_hit and hard > soft else "usual" if hard > soft else "daily"
            # Short enough for the wire's 100-character reasons, figures first.
            raise LimitError("daily_hard_max" if name == "hard" else "daily_max",
                             "%s: 24 h would reach %s (%s given), over the %s max %s/day: lower it or wait%s"
                             % (what, fmt_mass(worst * hard // CEILING_UNITS, ug), fmt_mass(past, ug), name,
                                fmt_mass(hard if name != "usual" else soft, ug),
                                " or override" if name == "usual" else ""))
        return over_soft

    def _heaviest(self, therapy):
        w = self._weight(therapy) if therapy is not None else self.catheter.weight
        return max(w, self.catheter.old_weight) if self.catheter.old else w

    def _set_ceiling_limit(self, therapy):
        # The guard allows what the command check allowed, and a bolus's
        # worth more for strokes at the edge of its minute buckets.
        w = self._heaviest(therapy)
        day = prescription.strokes_within(therapy, self.stroke_nl, S_PER_DAY)
        edge = max([q[1] for q in therapy.periodic] + [therapy.demand[0] if therapy.demand else 0, 2])
        self.guard.ceiling_limit = min(CEILING_UNITS + (day // 1440 + 2 + edge) * w, 1 << 29)  # a small int

    # -- programming (validated, logged; never on the tick path) -----------
    def program(self, rx, override=False, check=False):
        therapy = prescription.validate(rx, self.stroke_nl, override)
        old = self.therapy
        if old is not None and (old.drug != therapy.drug or old.conc_ng_ml != therapy.conc_ng_ml):
            raise LimitError("concentration_change",
                             "drug or concentration change (%s %s/mL to %s %s/mL) only with a refill: the reservoir"
                             " still holds %s" % (old.drug, fmt_mass(old.conc_ng_ml, limits.doses_in_ug(old.drug)),
                                                  therapy.drug,
                                                  fmt_mass(therapy.conc_ng_ml, limits.doses_in_ug(therapy.drug)),
                                                  old.drug))
        overridden = self._check_ceiling("program", self._future(therapy, bridge=self._bridge_now()),
                                         therapy, override)
        if check:
            return therapy

        def apply():
            self._note_override(overridden, therapy.daily_ng)
            self._apply(rx, therapy, self.sched.bridge_left)  # a bridge under way goes on
            return therapy

        return self._durably("program", apply)

    def _note_override(self, overridden, dose_ng):
        if overridden:
            self.record(events.OVERRIDE, dose_ng, 0, 0, 0, b"soft daily maximum")

    def _apply(self, rx, therapy, bridge_strokes):
        self.load_therapy(rx, therapy, bridge_strokes)
        self.record(events.THERAPY_PROGRAMMED, len(therapy.step_start_s), therapy.basal_nl_per_day(),
                    therapy.daily_ng, bridge_strokes, therapy.drug.encode())

    def load_therapy(self, rx, therapy, bridge_strokes, old=None, restoring=False):
        # Makes `therapy` the active one (a bridge keeps the current profile
        # for `bridge_strokes` first, in any pump state). Used by programming
        # and by restore and revert (`restoring`; `old`: the therapy being
        # bridged from, as saved).
        old = old or self.therapy
        if bridge_strokes and old is not None and not self.sched.n_steps:
            self.sched.load(old)
        bridging = bridge_strokes > 0 and old is not None
        self.old_rx = (self.old_rx if self.bridging and self.old_rx else self.rx) if bridging else None
        self.bridge_from = (self.bridge_from if self.bridging and self.bridge_from else old) if bridging else None
        self.therapy = therapy
        self.rx = rx
        self.sched.load(therapy, bridge_strokes)
        self.bridging = self.sched.bridge_left > 0
        hour, day = prescription.guard_limits(therapy, self.stroke_nl)
        if self.bridging and old is not None:
            oh, od = prescription.guard_limits(old, self.stroke_nl)
            hour, day = max(hour, oh), max(day, od)
        self.guard.set_limits(hour, day, self.now_s())
        self.catheter.set_drug(self._weight(therapy))
        self._set_ceiling_limit(therapy)
        self.alarms.set(alarms.INTEGRITY, False, self.now_s())
        r = self.reservoir
        # Another drug at the same strength is a change too: the bridge then
        # pushes the old drug at the old concentration. (A restore finds the
        # ledger's concentrations already saved.)
        new_drug = not restoring and old is not None and old.drug != therapy.drug
        if therapy.conc_ng_ml != r.conc_ng_ml or new_drug:
            # The old drug's count ends here. At a strength change the day an
            # earlier drug's bridge ended, that drug's bridge strokes end
            # here (a record never names two drugs) and this drug's go on.
            if new_drug:
                self._end_part(self.clock.day, END_DRUG, old)
            elif r.bridge_drug and self.totals.strokes[KIND_BRIDGE]:
                self._end_bridge_part(old)
            self.totals.fold(r.conc_ng_ml, r.bridge_conc_ng_ml)  # today's dose so far at the old concentration
            r.set_drug(therapy.conc_ng_ml, old.drug if new_drug else "", self.now_s())
        if not restoring and self.catheter.unnamed_out:
            self._book_unnamed(self.catheter.weight)
        if self.suspended or self.alarms.active & _STOPPING:
            self.sched.stop()
            if not self.suspended and self.alarms.active & _STOPPING & _SELF_CLEARING:
                self.restart_when_clear = True  # programmed to run once the stop clears

    def _book_unnamed(self, weight):
        # The first prescription names the drug the implant's priming margin
        # and motor test pushed out of the tip: those strokes are dose, in
        # the ledger, the day's count and the 24-hour ceiling (now: late,
        # never under-counted).
        n = self.catheter.unnamed_out
        self.catheter.unnamed_out = 0
        now = self.now_s()
        self.reservoir.dose_named(n, now)
        t = self.totals
        t.dosed[KIND_PRIMING] += min(n, t.strokes[KIND_PRIMING] - t.dosed[KIND_PRIMING])  # today's part
        self.guard.ceiling.add(now, n * weight, 0)

    def refill(self, withdrawn_nl, added_nl, rx=None, override=False, check=False):
        # Empty-and-fill. A new drug or concentration comes only here, with its
        # prescription, and is bridged: the catheter still holds the old drug.
        # It cancels a running bolus (its strokes were for the old drug).
        r = self.reservoir
        cap = r.capacity_nl
        if not 0 <= withdrawn_nl <= cap:
            raise LimitError("withdrawn", "refill: withdrawn %s is outside 0 to %s (the reservoir): check the"
                             " syringe" % (fmt_volume(withdrawn_nl), fmt_volume(cap)))
        if added_nl > cap:
            raise LimitError("overfill", "refill: %s added exceeds the reservoir's %s: add at most %s"
                             % (fmt_volume(added_nl), fmt_volume(cap), fmt_volume(cap)))
        low = r.residual_nl + self.stroke_nl
        if added_nl < low:
            raise LimitError("added", "refill: %s added is below the %s the pump needs to deliver: add at least %s"
                             % (fmt_volume(added_nl), fmt_volume(low), fmt_volume(low)))
        therapy, changed = None, False
        if rx is not None:
            therapy = prescription.validate(rx, self.stroke_nl, override)
            old = self.therapy
            changed = old is not None and (old.drug, old.conc_ng_ml) != (therapy.drug, therapy.conc_ng_ml)
            if changed and self.bridging:
                # The catheter still holds an earlier drug: a second change
                # would run one drug at another's profile. Refill as it is.
                # Under the wire's 100 characters (pumpctl says when the bridge ends).
                raise LimitError("bridge_running", "refill: bridge running (%s of the earlier drug left): refill"
                                 " with the current drug" % fmt_volume(self.sched.bridge_left * self.stroke_nl))
        elif self.therapy is None:
            raise LimitError("not_programmed", "refill: a first fill needs its prescription")
        if self.therapy is None and self.catheter.unidentified():
            # Primed from a first fill that named no drug: the catheter's
            # drug is unknown, so a refill could not bridge or count it.
            raise LimitError("catheter_unknown_drug", "refill: the catheter holds the first fill's drug, which no"
                             " prescription has named: start the therapy first (program)")
        overridden = False
        if therapy is not None:
            future = self._refill_future(therapy, changed)
            overridden = self._check_ceiling("refill", future, therapy, override)
        expected = r.remaining_nl
        # The bridge's length (none when no catheter is recorded: the programmer says so).
        bridge_n = self.catheter.bridge_strokes(self._weight(therapy)) if changed else 0
        result = {"expected_nl": expected, "withdrawn_nl": withdrawn_nl, "discrepancy_nl": withdrawn_nl - expected,
                  "warning": r.discrepancy_alarm(expected, withdrawn_nl), "drug_changed": changed,
                  "bolus_cancelled": changed and self.sched.bolus_busy(), "bridge_strokes": bridge_n}
        if check:
            return result
        if therapy is not None and self.therapy is not None and therapy.drug != self.therapy.drug \
                and self.totals.pending:
            try:
                self._log_day()  # a day still waiting goes to the log first: the old drug's count can then end
            except OSError:
                pass  # the flash is failing: the refill's own save fails too, and is refused changing nothing

        def apply():
            if changed and self.sched.bolus_busy():
                self._cancel_bolus()
            r.refill(withdrawn_nl, added_nl)
            self.record(events.REFILL, withdrawn_nl, added_nl, expected, withdrawn_nl - expected)
            if result["warning"]:
                self.alarms.set(alarms.REFILL_DISCREPANCY, True, self.now_s())
            if therapy is not None:
                self._note_override(overridden, therapy.daily_ng)
                bridge = self.sched.bridge_left  # a bridge under way goes on (the same drug refilled)
                if changed:  # the old profile runs until the new drug reaches the tip
                    bridge = bridge_n
                    self.catheter.set_drug(self._weight(therapy), True)
                self._apply(rx, therapy, bridge)
            self._check_level()
            self._restart_if_clear()
            return result

        return self._durably("refill", apply)

    def _refill_future(self, therapy, changed):
        if not changed:
            return self._future(therapy, bridge=self._bridge_now())
        # The catheter's drug (the current one) runs first, at the profile now running.
        old_n, old_w = self.catheter.after_change(self._weight(therapy), True)
        profile = self.bridge_from if self.bridging and self.bridge_from else self.therapy
        return self._future(therapy, keep_bolus=False, bridge=(profile, old_w, old_n))

    def clinician_bolus(self, dose_ng, duration_s, override=False, check=False):
        self._require_idle_channel("clinician bolus")
        strokes = prescription.clinician_bolus_strokes(dose_ng, duration_s, self.therapy, self.stroke_nl)
        overridden = self._check_ceiling("bolus", self._future(self.therapy, strokes,
                                                                         bridge=self._bridge_now()),
                                         self.therapy, override)
        if check:
            return strokes

        given = prescription.stroke_dose_ng(strokes, self.stroke_nl, self.therapy.conc_ng_ml)

        def apply():  # the log keeps what the strokes deliver
            self._note_override(overridden, given)
            self._start_bolus(KIND_CLINICIAN, strokes, duration_s, given)
            return strokes

        return self._durably("clinician bolus", apply)

    def priming_bolus(self, volume_nl, duration_s, check=False):
        # Fills a new or revised catheter: what pushes saline out of the tip
        # is volume, not dose; beyond the catheter it is dose, and counted.
        self._require_idle_channel("priming bolus", need_therapy=False)
        cath = self.catheter
        if not cath.volume_nl:
            raise LimitError("catheter_unset", "priming bolus: no catheter is recorded: enter the catheter first")
        if cath.primed():
            raise LimitError("catheter_primed", "priming bolus: the catheter is already primed, so priming would"
                             " be a hidden dose: use a clinician bolus, or record a catheter revision first")
        strokes = prescription.priming_strokes(volume_nl, duration_s, self.stroke_nl)
        most = cath.prime_limit()
        if strokes > most:
            raise LimitError("priming_volume", "priming bolus: %s is more than the catheter still needs (%s and"
                             " %d %% margin): prime at most %s" % (fmt_volume(volume_nl),
                                                                  fmt_volume(cath.saline * self.stroke_nl),
                                                                  limits.PRIME_MARGIN_PCT,
                                                                  fmt_volume(most * self.stroke_nl)))
        self._check_priming_dose("priming bolus", strokes - cath.saline)
        if check:
            return strokes
        return self._durably("priming bolus", lambda: self._start_priming(strokes, duration_s))

    def _check_priming_dose(self, what, dose_strokes):
        if dose_strokes > 0 and self.therapy is not None:
            self._check_ceiling(what, self._future(self.therapy, dose_strokes, bridge=self._bridge_now()),
                                self.therapy)

    def _start_priming(self, strokes, duration_s):
        self._start_bolus(KIND_PRIMING, strokes, duration_s, 0)
        return strokes

    def motor_test_bolus(self, strokes, duration_s):
        # Implant test: a few strokes into the primed catheter, each
        # confirmed; they reach the patient, so the ceiling counts them.
        self._require_idle_channel("motor test", need_therapy=False)
        self._check_priming_dose("motor test", strokes)
        return self._durably("motor test", lambda: self._start_priming(strokes, duration_s))

    def revise_catheter(self, volume_nl):
        # New or revised catheter: it holds no drug until primed, and none of
        # an earlier drug: a bridge under way ends (service() logs its end),
        # or the old profile would run on with the new drug.
        self.catheter.revise(volume_nl)
        self.sched.end_bridge()

    def demand_bolus(self):
        # Patient request. Returns (refusal code, seconds until allowed); 0 = started.
        d = self.sched
        self.record(events.BOLUS_REQUESTED, KIND_DEMAND, d.demand_strokes, d.demand_duration)
        code, wait = d.demand_check()
        if code != DEMAND_OK:
            self.record(events.BOLUS_REFUSED, KIND_DEMAND, code, wait)
            return code, wait

        def apply():
            d.demand_start()
            self._note_bolus(KIND_DEMAND, d.demand_strokes, d.demand_duration)
            return DEMAND_OK, 0

        return self._durably("demand bolus", apply)

    def _require_idle_channel(self, what, need_therapy=True):
        stopping = self.alarms.active & _STOPPING
        if stopping:
            raise LimitError("alarm", "%s: therapy stopped by alarm: %s: resolve it first"
                             % (what, self._alarm_names(stopping)))
        if need_therapy and (self.therapy is None or not self.sched.basal_on):
            raise LimitError("not_running", "%s: no therapy running: program or resume it first" % what)
        if self.sched.bolus_busy():
            raise LimitError("bolus_active", "%s: another bolus is in progress: wait for it to end" % what)

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
        self.active_bolus_taken = 0
        self.record(events.BOLUS_STARTED, kind, strokes, duration_s, dose_ng)

    def _cancel_bolus(self):
        s = self.sched
        if self.stroking and s.bolus_kind == self.stroking:
            self.board.motor_stop()  # the stroke in progress is not counted
            self.stroking = KIND_NONE
        left = self._bolus_not_given()
        self.record(events.BOLUS_CANCELLED, s.bolus_kind, s.bolus_inc - left, left)
        s.clear_bolus()
        self.active_bolus = KIND_NONE
        self.guard.budget = 0
        if not s.basal_on:
            s.running = False

    def suspend(self):
        # Returns whether it is saved (see _obeyed).
        def apply():
            self.suspended = True
            self.restart_when_clear = False
            self._halt()
            self.record(events.THERAPY_SUSPENDED)

        return self._obeyed("suspend", apply)[1]

    def resume(self):
        # Before any therapy (an implant test a stall or an occlusion stopped
        # at priming) it clears those alarms, once resolved, and starts nothing.
        clearing = self.alarms.active & _CLEARED_BY_RESUME
        if self.therapy is None and not clearing:
            raise LimitError("not_programmed", "resume: no therapy programmed: program one first")
        persisting = self.alarms.active & _STOPPING & ~_CLEARED_BY_RESUME
        if persisting:
            raise LimitError("alarm", "resume: %s must be resolved first" % self._alarm_names(persisting))

        def apply():
            for a in range(alarms.COUNT):
                if _CLEARED_BY_RESUME & (1 << a):
                    self.alarms.set(a, False, self.now_s())
            if self.therapy is None:
                self.failed_strokes = 0
                self.suspended = False  # the clinician's resume ends a suspend; there is nothing to start
                return
            self.guard.tripped = False
            self.fault = None
            self.failed_strokes = 0
            self.suspended = False
            self._restart()

        self._durably("resume", apply)

    def _restart(self):
        if self.suspended or self.alarms.active & _STOPPING:
            return
        self.restart_when_clear = False
        self.sched.resume()
        self.record(events.THERAPY_RESUMED)

    def _restart_if_clear(self):
        # A stop by a self-clearing alarm ends with its condition.
        if self.restart_when_clear and not self.alarms.active & _STOPPING and self.therapy is not None:
            self._restart()

    def _halt(self):
        # Safe state for delivery: motor stopped, nothing owed, bolus cancelled.
        if self.stroking:
            self.board.motor_stop()  # the stroke in progress is not counted
            self.stroking = KIND_NONE
        s = self.sched
        if s.bolus_busy():
            left = self._bolus_not_given()
            self.record(events.BOLUS_CANCELLED, s.bolus_kind, s.bolus_inc - left, left)
        self.active_bolus = KIND_NONE
        self.guard.budget = 0
        s.stop()

    def set_clock(self, day, tod_s):
        # Schedules follow the new time of day from now on; volume follows
        # elapsed time, so a clock change never delivers or skips a catch-up.
        if not 0 <= tod_s < S_PER_DAY or not 0 <= day <= events.DAY_MAX:
            raise LimitError("clock", "clock: a date from 1970-01-01 to 2149-06-06")
        old_day, old_tod = self.clock.day, self.clock.tod_s

        def apply():
            if day != self.totals.day:
                self._end_part(day, END_CLOCK)  # the day's strokes so far are that day's
            self.clock.set(day, tod_s)
            self.record(events.CLOCK_SET, old_day, old_tod, day, tod_s)
            self.alarms.set(alarms.CLOCK_UNCERTAIN, False, self.now_s())
            self.next_housekeeping = self.now_s()

        self._durably("set clock", apply)

    def clock_uncertain(self):
        # After an unclean reset the restored clock misses the time the pump
        # was off: flex steps and periodic boluses follow it until it is set.
        self.alarms.set(alarms.CLOCK_UNCERTAIN, True, self.now_s())

    def set_low_threshold(self, volume_nl):
        r = self.reservoir
        low = r.residual_nl + self.stroke_nl
        if not low <= volume_nl <= r.capacity_nl:
            raise LimitError("low_threshold", "low-reservoir threshold %s is outside %s to %s"
                             % (fmt_volume(volume_nl), fmt_volume(low), fmt_volume(r.capacity_nl)))

        def apply():
            r.low_nl = volume_nl
            self._check_level()

        self._durably("low-reservoir threshold", apply)

    def set_alarm_date(self, day):
        # 0: none. Else a day after today's (a date already reached would only
        # sound at once: a mistyped year, most likely) and one the log can carry.
        if day and not self.clock.day < day <= events.DAY_MAX:
            raise LimitError("alarm_date", "alarm date: after today, up to 2149-06-06")

        def apply():
            self.alarm_day = day
            self.alarms.set(alarms.ALARM_DATE, False, self.now_s())
            self.next_housekeeping = self.now_s()

        self._durably("alarm date", apply)

    def acknowledge(self, alarm):
        # Returns (acknowledged, saved): see _obeyed.
        check_range("alarm", "alarm id", alarm, 0, alarms.COUNT - 1, "")
        if not self.alarms.active & (1 << alarm):
            return False, True

        def apply():
            self.alarms.acknowledge(alarm, self.now_s())
            self.record(events.ALARM_ACKNOWLEDGED, alarm)
            if _CLEARED_BY_ACK & (1 << alarm):
                if alarm == alarms.ALARM_DATE:
                    self.alarm_day = 0
                if alarm == alarms.STROKE_FAILURES:
                    self.attempts_failed = self.window_failures = 0  # only failures after this raise it again
                self.alarms.set(alarm, False, self.now_s())
            self.board.buzzer(0)
            return True

        return self._obeyed("acknowledge", apply)

    # -- the tick path -----------------------------------------------------
    # It reads the time as self.sched.mono_s, not through now_s(): a call
    # costs more than two loads, and the tick path reads it often.
    def tick(self):
        board = self.board
        try:
            now = board.ticks_ms()
            dt = ticks_diff(now, self.last_ticks)
            self.last_ticks = now
            clock = self.clock
            if dt > 0:
                tod = clock.tod_s
                secs = clock.elapse(dt)
                if secs:
                    self.sched.advance(secs, tod)
            day, done = clock.day, self.totals.day
            if day != done:
                # Midnight of the pump's clock (or a clock moved without set_clock: a restore, a test).
                self._end_part(day, END_MIDNIGHT if day == done + 1 else END_CLOCK)
            self._run_motor()
            if self.sched.mono_s >= self.next_housekeeping:
                self._housekeeping()
            self._sound(now)
        except Exception as e:  # any internal fault: safe state, cause kept for the log
            self.fail_safe(e)
        board.wdt_feed()

    def fail_safe(self, exc):
        self.board.motor_stop()
        self.stroking = KIND_NONE
        self.sched.stop()
        self.alarms.set(alarms.INTERNAL_FAULT, True, self.now_s())
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
            motor_failed = r != hal.STROKE_DONE
            self._count_attempt(motor_failed)
            if not motor_failed and board.pressure_mmhg() < board.OCCLUSION_MMHG:
                self.failed_strokes = 0
                self.sched.stroke_delivered(kind)
                self._debit(kind)
                self._check_level()
            else:
                self.failed_strokes += 1
                self.failed_total += 1
                self.fail_cause = _FAIL_MOTOR if motor_failed else _FAIL_PRESSURE
                if self.failed_strokes >= board.STALL_STROKES:
                    # Stall or occlusion: stop, never retry blindly.
                    self._stop_for(alarms.MOTOR_STALL if self.fail_cause == _FAIL_MOTOR else alarms.OCCLUSION)
                    return
                if motor_failed and self.window_failures >= FAILURE_WARN:
                    self.alarms.set(alarms.STROKE_FAILURES, True, self.sched.mono_s)  # retried: therapy goes on
        else:
            moved = board.motor_uncommanded()
            if moved:
                if moved > UNCOMMANDED_MAX:
                    moved = UNCOMMANDED_MAX
                # Index pulses with no stroke commanded: a driver fault. The
                # fluid moved: it is counted, and the motor is de-energised.
                for _ in range(moved):
                    self._debit(KIND_UNCOMMANDED)
                self._stop_for(alarms.UNCOMMANDED_MOTION)
                return
        s = self.sched
        kind = s.next_stroke_kind()
        if s.owed_bolus and self.flash_error is not None and (
                s.boluses_started != self.bolus_saved or self.since_checkpoint >= CHECKPOINT_STROKES):
            # The flash refuses writes: a reset would bring this bolus back as
            # last saved and give again what it gave since. It stops where the
            # reserve still covers that (docs/persistence.md).
            self._cut_bolus()
            kind = s.next_stroke_kind()
        if s.running and kind:
            weight = self.catheter.next_weight()
            if not self.guard.allows_stroke(s.mono_s, is_exclusive(kind), weight):
                self._stop_for(alarms.DOSE_GUARD)
                return
            board.motor_begin()
            self.stroking = kind

    def _bolus_not_given(self):
        # Strokes of the running bolus not given for sure: those still to come
        # and those resets took off its plan (tick path too: small ints).
        s = self.sched
        return s.bolus_left + s.owed_bolus + self.active_bolus_taken

    def _cut_bolus(self):
        # Tick path: small ints only; service() logs it.
        s = self.sched
        left = self._bolus_not_given()
        self.bolus_cut = s.bolus_kind
        self.bolus_cut_done = s.bolus_inc - left
        self.bolus_cut_left = left
        s.clear_bolus()
        self.guard.budget = 0
        if not s.basal_on:
            s.running = False  # a priming bolus with no therapy yet

    def _count_attempt(self, failed):
        # Slides the window of attempts on by one (tick path: small ints only).
        h = self.attempts_failed
        self.window_failures += failed - (h >> (FAILURE_WINDOW - 1))
        self.attempts_failed = (h << 1 | failed) & _FAILURE_MASK

    def _end_part(self, day, reason, t=None):
        # Tick path too: the counts move to the closed part for service() to
        # log, with the drug of `t` (default: the therapy's).
        r = self.reservoir
        t = t or self.therapy
        drug = t.drug if t is not None else ""
        self.totals.close(day, reason, r.conc_ng_ml, r.bridge_conc_ng_ml, self.log.last_seq(), drug,
                          r.bridge_drug or drug)

    def _end_bridge_part(self, t):
        # Only the other drug's bridge strokes end here, as their own record;
        # the count of `t`'s drug goes on. (Merged into a part still waiting
        # to be logged, the part ends as a whole.)
        fresh = not self.totals.pending
        self._end_part(self.clock.day, END_DRUG, t)
        if fresh:
            self.totals.reopen_all_but(KIND_BRIDGE)

    def _debit(self, kind):
        now = self.sched.mono_s
        c = self.catheter
        # A stroke that pushes the catheter's earlier drug gives that drug:
        # booked as the bridge, whatever it was for (a bolus during the
        # bridge, the stroke under way at the change). The scheduler and the
        # guard's bolus budget count it as what it was for.
        booked = kind
        if kind != KIND_UNCOMMANDED and c.pushes_earlier_drug():
            booked = KIND_BRIDGE
        elif kind == KIND_BRIDGE:
            booked = KIND_BASAL  # the bridge's stroke pushed saline ahead of the earlier drug: not that drug
        weight = c.push()
        self.reservoir.debit_stroke(booked, now, weight != 0)
        self.totals.count(booked, weight != 0)
        self.guard.count_stroke(now, is_exclusive(kind), weight)
        self.since_checkpoint += 1

    def _stop_for(self, alarm):
        self.alarms.set(alarm, True, self.now_s())
        if self.stroking:
            self.board.motor_stop()
            self.stroking = KIND_NONE
        if (1 << alarm) & _SELF_CLEARING and self.sched.basal_on and not self.suspended:
            self.restart_when_clear = True
        self.sched.stop()

    def _check_level(self):
        level = self.reservoir.level()
        if level == 0 and not self.alarms.active & _LEVEL_ALARMS:
            return  # the common case, once per stroke: nothing to do
        now = self.sched.mono_s
        self.alarms.set(alarms.RESERVOIR_LOW, level == 1, now)
        if level == 2:
            if not self.alarms.active & (1 << alarms.RESERVOIR_EMPTY):
                self._stop_for(alarms.RESERVOIR_EMPTY)
        else:
            self.alarms.set(alarms.RESERVOIR_EMPTY, False, now)

    def _housekeeping(self):
        board, now = self.board, self.sched.mono_s
        self.next_housekeeping = now + HOUSEKEEPING_S
        self._check_battery(board.battery_mv(), now)
        if self.therapy is not None and (not self.sched.intact() or not self.reservoir.intact()):
            self._stop_for(alarms.INTEGRITY)
        if self.alarm_day and self.clock.day >= self.alarm_day:
            self.alarms.set(alarms.ALARM_DATE, True, now)
        if self.clock.at_end:  # the clock stopped at 2149-06-06 23:59:59: therapy goes on, the clock needs setting
            self.alarms.set(alarms.CLOCK_UNCERTAIN, True, now)

    def _check_battery(self, mv, now):
        # One reading changes nothing: BATTERY_SAMPLES in a row do, and a
        # reading that disagrees with the alarms is confirmed within seconds.
        # Clearing needs readings BATTERY_HYSTERESIS_MV above the threshold.
        eos, eri, hyst = self.board.BATTERY_EOS_MV, self.board.BATTERY_ERI_MV, BATTERY_HYSTERESIS_MV
        self.battery_low = self.battery_low + 1 if mv <= eos else 0
        self.battery_eri = self.battery_eri + 1 if mv <= eri else 0
        self.battery_good = self.battery_good + 1 if mv > eos + hyst else 0
        self.battery_fine = self.battery_fine + 1 if mv > eri + hyst else 0
        a = self.alarms
        eos_on = a.active & (1 << alarms.BATTERY_EOS)
        eri_on = a.active & (1 << alarms.BATTERY_ERI)
        if self.battery_low >= BATTERY_SAMPLES and not eos_on:
            self._stop_for(alarms.BATTERY_EOS)
        elif self.battery_good >= BATTERY_SAMPLES and eos_on:
            a.set(alarms.BATTERY_EOS, False, now)
            self._restart_if_clear()
        if self.battery_eri >= BATTERY_SAMPLES:
            a.set(alarms.BATTERY_ERI, True, now)
        elif self.battery_fine >= BATTERY_SAMPLES:
            a.set(alarms.BATTERY_ERI, False, now)
        if (mv <= eos) != bool(eos_on) or (mv <= eri) != bool(eri_on):
            self.next_housekeeping = now + BATTERY_RECHECK_S

    def _sound(self, now):
        a = self.alarms
        self.board.buzzer(a.tone(self.sched.mono_s, now, ticks_diff(now, a.sound_ms)))

    def ms_to_next_event(self):
        # For virtual time: how far the clock may jump before the next thing
        # the pump must do. Never skips a stroke, boundary, check or tone.
        if self.stroking:
            return self.board.motor_ms_left()
        sched = self.sched
        if sched.running and sched.next_stroke_kind():
            return 0
        a = self.alarms
        if a.testing >= 0 and a.sounding < 0:
            return 0
        if a.sounding >= 0:
            return alarms.SEGMENT_MS - ticks_diff(self.last_ticks, a.sound_ms) % alarms.SEGMENT_MS
        clock, now = self.clock, sched.mono_s
        tod = clock.tod_s
        s = sched.secs_to_event(tod)
        h = self.next_housekeeping - now
        if h < s:
            s = h
        t = a.secs_to_next_sound(now)
        if t < s:
            s = t
        t = S_PER_DAY - tod  # midnight: the day's totals close then
        if t < s:
            s = t
        if s >= _FAR_S:
            return _FAR_MS
        ms = s * 1000 - clock.sub_ms
        return ms if ms > 0 else 0

    # -- deferred work, after the tick ------------------------------------
    def needs_service(self):
        s, a = self.sched, self.alarms
        return (self.active_bolus != s.bolus_kind or (self.bridging and not s.bridge_left)
                or self.failed_strokes != self.failed_logged or a.raised or a.cleared
                or self._checkpoint_due()
                or ((self.totals.pending or self.bolus_cut) and s.mono_s >= self.flash_retry_s))

    def _checkpoint_due(self):
        now = self.sched.mono_s
        if now < self.flash_retry_s:
            return False
        n = self.since_checkpoint
        # Every stroke while the line holds saline or an earlier drug: a reset
        # must bring back what it truly holds, or a bridge would run on (or
        # stop) with the wrong drug at the tip (docs/persistence.md).
        return (n >= CHECKPOINT_STROKES or n and (now >= self.next_checkpoint or self.catheter.in_transition())
                or self.unsaved_change)

    def service(self):
        # Never raises: a fault here (the log or the flash) must not stop the loop.
        try:
            self._service()
        except OSError as e:
            self._flash_failed(e)
        except Exception as e:
            self.fail_safe(e)

    def _service(self):
        s, a = self.sched, self.alarms
        if self.bolus_cut and s.mono_s >= self.flash_retry_s:
            if self.active_bolus == self.bolus_cut:
                self.active_bolus = KIND_NONE
            # Kept until logged: the flash that stopped it may refuse this too.
            if self.record(events.BOLUS_CANCELLED, self.bolus_cut, self.bolus_cut_done, self.bolus_cut_left,
                           events.CANCELLED_UNSAVED):
                self.bolus_cut = KIND_NONE
        if self.active_bolus != KIND_NONE and s.bolus_kind != self.active_bolus:
            if self.sched.running:
                self.record(events.BOLUS_DELIVERED, self.active_bolus,
                            self.active_bolus_strokes - self.active_bolus_taken, self.active_bolus_taken)
            self.active_bolus = KIND_NONE
        if self.active_bolus == KIND_NONE and s.bolus_kind != KIND_NONE:
            self._note_bolus(s.bolus_kind, s.bolus_inc, s.bolus_period)  # a periodic bolus
        if self.bridging and not s.bridge_left:
            self.bridging = False
            self.bridge_from = None
            # The earlier profile's limits end with it: from now the guard
            # holds the therapy to its own (a reset would, from the saved state).
            hour, day = prescription.guard_limits(self.therapy, self.stroke_nl)
            self.guard.set_limits(hour, day, self.now_s())
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
                if i == alarms.FLASH_FAULT and self.flash_error is not None:
                    self.record(events.FAULT, 6, 0, 0, 0, ("flash: %s" % self.flash_error)[:60].encode())
                self.record(events.ALARM_RAISED, i)
            if cleared & (1 << i):
                self.record(events.ALARM_CLEARED, i)
        if (raised or cleared or self._checkpoint_due()) and self.now_s() >= self.flash_retry_s:
            self.commit()
        if self.totals.pending and self.now_s() >= self.flash_retry_s:
            self._log_day()

    def _log_day(self):
        # One DAILY_TOTAL record per kind of stroke of the closed part, each
        # exactly once: the state on flash holds the part before any of its
        # records is written, and a restore that finds some of them on the log
        # writes only the others (Persist.restore).
        t = self.totals
        if t.empty() and not (t.c_reason == END_MIDNIGHT and t.c_last == t.c_day and self.therapy is not None):
            t.pending = False  # no stroke: logged only for a whole day of a programmed pump
            return
        if not t.c_saved:
            self.commit()
            t.c_saved = True
        for k in t.closed_kinds():
            if t.c_written & (1 << k):
                continue
            dose = min(t.closed_dose_ng(k, self.stroke_nl), _I32_MAX)
            # The text names the drug of the record's strokes (the kind is in b).
            if not self.record(events.DAILY_TOTAL, t.c_day, t.closed_b(k), t.c_strokes[k], dose,
                               t.closed_drug(k).encode()):
                return  # the log's flash failed: the alarm sounds, tried again after FLASH_RETRY_S
            t.c_written |= 1 << k
        t.pending = False
        self.commit()

    # -- reports ---------------------------------------------------------
    def status(self):
        r, s, t = self.reservoir, self.sched, self.therapy
        vol24, dose24 = r.last_24h(self.now_s())
        vol_today, dose_today = self.totals.open_totals(self.stroke_nl, r.conc_ng_ml, r.bridge_conc_ng_ml,
                                                        r.bridge_drug)
        daily_nl = prescription.max_daily_nl(t, self.stroke_nl) if t is not None else 0
        hard = limits.hard_daily(t.drug) if t is not None else 0
        st = {
            "day": self.clock.day, "tod_s": self.clock.tod_s,
            "state": self._state_name(),
            "drug": t.drug if t else None, "conc_ng_ml": t.conc_ng_ml if t else 0,
            "remaining_nl": r.remaining_nl, "capacity_nl": r.capacity_nl,
            "low_nl": r.low_nl, "residual_nl": r.residual_nl,
            "delivered_nl": r.delivered_nl(), "drug_delivered_ng": r.drug_delivered_ng(),
            "today_nl": vol_today * self.stroke_nl, "today_dose_ng": dose_today,
            "last_24h_nl": vol24 * self.stroke_nl, "last_24h_dose_ng": dose24,
            "ceiling_24h_ng": self.guard.ceiling_24h(self.now_s()) * hard // CEILING_UNITS,
            "priming_nl": r.strokes[KIND_PRIMING] * self.stroke_nl,
            "catheter_primed": self.catheter.primed(),
            "max_daily_nl": daily_nl,
            "low_in_s": r.seconds_until(r.low_nl, daily_nl),
            "empty_in_s": r.seconds_until(r.residual_nl, daily_nl),
            "bolus": {"kind": s.bolus_kind, "strokes_left": s.bolus_left + s.owed_bolus} if s.bolus_busy() else None,
            "alarms": self.alarms.listing(self.now_s()),
            "clock_uncertain": bool(self.alarms.active & (1 << alarms.CLOCK_UNCERTAIN)),
            "battery_mv": self._battery_report(),
            "fault": None if self.fault is None else ("%s: %s" % (type(self.fault).__name__, self.fault))[:FAULT_TEXT],
        }
        since = self.now_s() - r.drug_changed_s
        if r.drug_changed_s >= 0 and (since < S_PER_DAY or r.bridge_counted()):
            # Today and the last 24 h count this drug's dose since then (their
            # volumes: every stroke, the catheter's earlier drug's too).
            st["drug_changed_s"] = since
        return st

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
