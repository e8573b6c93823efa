# Persistent pump state: one versioned, CRC-protected record saved atomically
# (firmware/records.py) after every command and at delivery checkpoints, and
# restored at boot. A saved state counts RESERVE_STROKES more strokes than it
# has seen as delivered (ledger, bolus progress, 24-hour ceiling), so
# whatever is lost between a checkpoint and a reset can only under-deliver.
# See docs/persistence.md.
import json

import alarms
import events
import hal
import prescription
from eventlog import TEXT_MAX
from guard import CEILING_GROUP  # the 24-hour ceiling is saved in these quarter hours (aging out late: conservative)
from limits import LimitError
from pump import RESERVE_STROKES
from records import RecordStore
from scheduler import KIND_PRIMING
from units import S_PER_DAY

STATE = "pump"
_COMPACT = (",", ":")
VERSION = 1
# The pump's identity and catheter, saved apart from the state (and only
# when they change): an unreadable state record does not lose who the pump
# is or what catheter it feeds.
IDENTITY = "identity"
# Alarms whose state is kept across a reset: the latched ones. Conditions
# read from sensors (battery, reservoir level) are re-evaluated at boot.
_KEPT = ((1 << alarms.MOTOR_STALL) | (1 << alarms.OCCLUSION) | (1 << alarms.INTERNAL_FAULT)
         | (1 << alarms.DOSE_GUARD) | (1 << alarms.INTEGRITY) | (1 << alarms.REFILL_DISCREPANCY)
         | (1 << alarms.ALARM_DATE) | (1 << alarms.UNCOMMANDED_MOTION) | (1 << alarms.CLOCK_UNCERTAIN)
         | (1 << alarms.STROKE_FAILURES))
# Fault record codes (events.FAULT a).
FAULT_STATE_UNREADABLE = 1
FAULT_RESUMED = 2
FAULT_LIMITS = 3
FAULT_CLOCK = 4
FAULT_STALE = 7


class Persist:
    def __init__(self, pump, directory):
        self.pump = pump
        self.store = RecordStore(directory + "/state")  # makes its own folder
        self.saves = 0
        self.identity_saved = None  # identity as last saved
        self.fresh = False  # the image held no state at all (never used)
        self.ended_by_reserve = None  # (kind, strokes planned) of a bolus the reserve ended at a reset
        pump.saver = self.save
        pump.memento = (lambda: self.snapshot(True), self.revert)

    # -- save ----------------------------------------------------------------
    def save(self, clean=False):
        identity = json.dumps(self._identity())
        if identity != self.identity_saved:
            self.store.save(IDENTITY, VERSION, identity.encode())
            self.identity_saved = identity
        self.store.save(STATE, VERSION, self.record(clean))
        self.saves += 1

    def record(self, clean=False):
        # The state record as saved: JSON without spaces (a fifth smaller: less
        # flash written and checked every checkpoint; any JSON reads back).
        return json.dumps(self.snapshot(clean), separators=_COMPACT).encode()

    def _identity(self):
        p = self.pump
        return {"device": p.device, "catheter_nl": p.catheter.volume_nl}

    def snapshot(self, clean=False):
        p = self.pump
        r, s, g, a = p.reservoir, p.sched, p.guard, p.alarms
        reserve = 0 if clean else RESERVE_STROKES
        bolus_left = max(0, s.bolus_left + s.owed_bolus - reserve) if s.bolus_busy() else 0
        # Strokes of the running bolus the resets took off (this save's reserve
        # included): its log record says what it gave at least.
        taken = p.active_bolus_taken + s.bolus_left + s.owed_bolus - bolus_left if s.bolus_busy() else 0
        c = p.catheter
        return {
            "clean": clean,
            "device": dict(p.device), "catheter_nl": p.catheter.volume_nl, "alarm_day": p.alarm_day,
            "clock": [p.clock.day, p.clock.tod_s], "mono_s": s.mono_s,
            "rx": prescription.compact(p.rx), "old_rx": prescription.compact(p.old_rx), "bridge_left": s.bridge_left, "suspended": p.suspended,
            "empty_stop": p.restart_when_clear,
            "catheter": [c.saline, c.old, c.old_weight, c.weight, c.unnamed_out],
            "ledger": {
                "remaining_nl": r.remaining_nl - reserve * r.stroke_nl, "strokes": list(r.strokes),
                "reserved_nl": r.reserved_nl + reserve * r.stroke_nl,
                "volume_in_nl": r.volume_in_nl, "withdrawn_nl": r.withdrawn_nl,
                "unaccounted_nl": r.unaccounted_nl, "low_nl": r.low_nl,
                "conc": [r.conc_ng_ml, r.bridge_conc_ng_ml, r.dose_ng_before, r.epoch_dose, r.epoch_bridge,
                         r.bridge_drug, r.drug_changed_s],
                "undosed": r.undosed,
                "hours": [r.hour, list(r.hour_strokes), list(r.hour_dose), list(r.hour_bridge), list(r.hour_num)],
            },
            "sched": {
                "basal_phase": s.basal_phase,
                "bolus": [s.bolus_kind if bolus_left or s.bolus_busy() and reserve == 0 else 0, bolus_left,
                          s.bolus_inc, s.bolus_period, s.bolus_phase, s.bolus_elapsed, taken, s.bolus_kind],
                "demand": [list(s.demand_times), s.demand_count],
                "per_last": list(s.per_last), "per_pending": s.per_pending,
            },
            # The guard counts only strokes it saw: a reset may hide up to
            # RESERVE_STROKES from it (it is the second line of defence).
            "guard": [_window(g.hour), _window(g.day), max(0, g.budget - reserve),
                      _ceiling(g.ceiling, reserve * p._heaviest(p.therapy))],
            "alarms": [a.active & _KEPT, list(a.silenced_until)],
            # Counted exactly, no reserve: an unclean reset marks the part instead.
            "days": p.totals.snapshot(),
        }

    # -- restore -------------------------------------------------------------
    def restore(self, cause):
        # Returns the reset cause as logged (a state not closed cleanly after a
        # power-on is a power loss).
        p = self.pump
        self._load_identity()
        rec = self.store.load(STATE)
        d = None
        if rec is not None:
            try:
                d = json.loads(rec[1])
            except ValueError:
                self.store.corrupt_found += 1
        if d is None:
            if self.store.corrupt_found or self.identity_saved is not None:
                return self.unloadable(cause, b"state record unreadable")
            self.fresh = True
            p.record(events.BOOT, cause)
            return cause
        if cause == hal.RESET_POWER_ON and not d["clean"]:
            cause = hal.RESET_POWER_LOSS
        self._load(d)
        p.record(events.BOOT, cause)
        if STATE in self.store.newer_lost:
            # The newest record decayed: this older one may miss acknowledged
            # changes. Stopped, sounding, until the clinician confirms the
            # therapy by programming it (docs/safety.md, invariant 5).
            p._stop_for(alarms.INTEGRITY)
            p.record(events.FAULT, FAULT_STALE, self.store.corrupt_found, 0, 0, b"newest state unreadable: older")
        t = p.totals
        if t.pending:
            t.found_in_log(p.log, events.DAILY_TOTAL)  # written before the cut: not again
        if self.ended_by_reserve is not None:
            # The reserve took the rest of the bolus under way: it ended at the reset.
            kind, planned = self.ended_by_reserve
            p.record(events.BOLUS_DELIVERED, kind, planned - p.active_bolus_taken, p.active_bolus_taken)
            p.active_bolus_taken = 0
        if not d["clean"]:
            t.resets = min(t.resets + 1, 255)  # up to RESERVE_STROKES of the part's strokes were not counted
            p.record(events.FAULT, FAULT_RESUMED, RESERVE_STROKES, 0, 0, b"resumed from checkpoint")
            p.record(events.FAULT, FAULT_CLOCK, 0, 0, 0, b"clock uncertain: set it")
            p.clock_uncertain()
        return cause

    def unloadable(self, cause, why):
        # State existed but cannot be read or loaded: no therapy is invented;
        # the pump stays stopped with the integrity alarm sounding until a
        # clinician refills and programs it (docs/safety.md). Also the boot
        # of a fresh pump when restore() failed part-way (firmware/startup.py).
        p = self.pump
        if self.identity_saved is None:
            try:
                self._load_identity()
            except Exception:  # the pump keeps its blank identity: the implant sets it again
                pass
        p.alarms.set(alarms.INTEGRITY, True, p.now_s())
        p.record(events.FAULT, FAULT_STATE_UNREADABLE, self.store.corrupt_found, 0, 0, why[:TEXT_MAX])
        p.record(events.BOOT, cause)
        return cause

    def _load_identity(self):
        rec = self.store.load(IDENTITY)
        if rec is None:
            return
        try:
            ident = json.loads(rec[1])
        except ValueError:
            return
        self.pump.device = ident["device"]
        self.pump.catheter.assume_primed(ident["catheter_nl"])
        self.identity_saved = json.dumps(ident)

    def revert(self, d):
        # Undo a change that could not be saved: back to the clean snapshot
        # taken before it, in RAM (the last state on flash may be older).
        p = self.pump
        if p.stroking:
            p.board.motor_stop()  # a stroke under way is not counted
            p.stroking = 0
        raised, cleared = p.alarms.raised, p.alarms.cleared
        for i in range(alarms.COUNT):
            if _KEPT & (1 << i) and not d["alarms"][0] & (1 << i):
                p.alarms.set(i, False, p.now_s())
        p.bridging = False
        if d["rx"] is None:
            p.therapy = p.rx = p.old_rx = p.bridge_from = None
            p.sched.stop()
            p.sched.n_steps = 0
        self._load(d)
        p.alarms.raised, p.alarms.cleared = raised, cleared

    def _load(self, d):
        p = self.pump
        day, tod = d["clock"]
        if not (0 <= day <= events.DAY_MAX and 0 <= tod < S_PER_DAY):
            raise ValueError("saved clock out of range")
        p.device = d["device"]
        p.catheter.assume_primed(d["catheter_nl"])
        p.alarm_day = d["alarm_day"]
        p.clock.set(day, tod)
        p.suspended = d["suspended"]
        p.restart_when_clear = d["empty_stop"]
        c = p.catheter
        c.volume_nl = d["catheter_nl"]
        cath = d.get("catheter", [0, 0, 0, 0])
        c.saline, c.old, c.old_weight, c.weight = cath[:4]
        c.unnamed_out = cath[4] if len(cath) > 4 else 0  # earlier firmware: not kept
        s = p.sched
        s.mono_s = d["mono_s"]
        _load_ledger(p.reservoir, d["ledger"])
        a = d["alarms"]
        for i in range(alarms.COUNT):
            if a[0] & (1 << i):
                p.alarms.set(i, True, s.mono_s)
            p.alarms.silenced_until[i] = a[1][i]
        p.alarms.raised = 0  # raised before the reset: already in the log
        d["rx"], d["old_rx"] = prescription.expand(d["rx"]), prescription.expand(d["old_rx"])
        if d["rx"] is not None:
            self._load_therapy(d)
        _load_sched(s, d["sched"])
        _load_window(p.guard.hour, d["guard"][0])
        _load_window(p.guard.day, d["guard"][1])
        p.guard.budget = d["guard"][2]
        if len(d["guard"]) > 3:
            _load_ceiling(p.guard.ceiling, d["guard"][3])
        p.active_bolus = s.bolus_kind
        p.active_bolus_strokes = s.bolus_inc
        bolus = d["sched"]["bolus"]
        p.active_bolus_taken = bolus[6] if len(bolus) > 6 else 0  # earlier firmware: not kept
        self.ended_by_reserve = (bolus[7], bolus[2]) if len(bolus) > 7 and bolus[7] and not s.bolus_kind else None
        p.next_housekeeping = s.mono_s
        p._check_level()
        if d.get("days") is not None:
            p.totals.load(d["days"])
        else:
            p.totals.start(p.clock.day)  # saved by firmware without daily totals

    def _load_therapy(self, d):
        p = self.pump
        try:
            # Saved therapies were accepted, overrides included: the hard limits still hold.
            therapy = prescription.validate(d["rx"], p.stroke_nl, True)
            old = prescription.validate(d["old_rx"], p.stroke_nl, True) if d["old_rx"] else None
        except LimitError as e:
            # Saved under other limits (a firmware update): never run it unchecked.
            p.alarms.set(alarms.INTEGRITY, True, p.now_s())
            p.record(events.FAULT, FAULT_LIMITS, 0, 0, 0, e.message[:60].encode())
            return
        bridge = d["bridge_left"] if old is not None else 0
        if old is not None:
            p.therapy = old
            p.rx = d["old_rx"]
        p.load_therapy(d["rx"], therapy, bridge, old, True)
        if bridge:
            p.sched.bridge_left = bridge


def _window(w):
    # Flat lists, oldest bucket first: a smaller record wears flash less.
    oldest = (w.index + 1) % w.n
    extra = _oldest_first(w.extra, oldest) if w.extra_sum else []  # usually none
    return [w.index, _oldest_first(w.used, oldest), extra]


def _oldest_first(ring, oldest):
    return list(ring[oldest:]) + list(ring[:oldest])


def _load_window(w, saved):
    for i in range(w.n):
        w.used[i] = w.extra[i] = 0
    w.index = saved[0]
    if len(saved) == 2:  # the sparse form of firmware 0.1: [[bucket, used, extra], ...]
        for j, used, extra in saved[1]:
            w.used[j], w.extra[j] = used, extra
        saved = [w.index, [w.used[(w.index + 1 + i) % w.n] for i in range(w.n)],
                 [w.extra[(w.index + 1 + i) % w.n] for i in range(w.n)]]
    for i in range(w.n):
        j = (w.index + 1 + i) % w.n
        w.used[j] = saved[1][i]
        w.extra[j] = saved[2][i] if saved[2] else 0
    w.used_sum = sum(w.used)
    w.extra_sum = sum(w.extra)


def _ceiling(w, reserve_units):
    # The 24-hour ceiling in quarter hours, oldest first (the last one holds
    # the current minute; the first only its minutes still in the window);
    # strokes a reset may hide count as reserve. The window keeps these sums
    # as minutes fill and age out (firmware/guard.py): a checkpoint runs this
    # every hour at least, and summing 1441 minutes was most of its cost.
    g, slots = w.group, w.groups
    first = (w.index - w.n + 1) // g
    groups = _oldest_first(slots, first % len(slots))[:w.index // g - first + 1]
    groups[-1] += reserve_units
    return [w.index, groups]


def _load_ceiling(w, saved):
    # Each quarter hour is spread evenly over its minutes (its remainder on
    # the newest): exact totals, aging out within a quarter hour of the strokes.
    for i in range(w.n):
        w.used[i] = 0
    w.index, groups = saved
    first = w.index - (w.n - 1)
    starts = [first]
    m = first - first % CEILING_GROUP + CEILING_GROUP
    while m <= w.index:
        starts.append(m)
        m += CEILING_GROUP
    for g in range(min(len(groups), len(starts))):
        lo = starts[g]
        hi = starts[g + 1] if g + 1 < len(starts) else w.index + 1
        n = hi - lo
        each = groups[g] // n
        for minute in range(lo, hi):
            w.used[minute % w.n] = each
        w.used[(hi - 1) % w.n] += groups[g] - each * n
    w.used_sum = sum(w.used)
    w.regroup()


def _load_ledger(r, L):
    r.remaining_nl = L["remaining_nl"]
    for i, n in enumerate(L["strokes"]):
        r.strokes[i] = n
    r.reserved_nl = L["reserved_nl"]
    r.volume_in_nl = L["volume_in_nl"]
    r.withdrawn_nl = L["withdrawn_nl"]
    r.unaccounted_nl = L["unaccounted_nl"]
    r.low_nl = L["low_nl"]
    conc = L["conc"]
    r.conc_ng_ml, r.bridge_conc_ng_ml, r.dose_ng_before, r.epoch_dose, r.epoch_bridge = conc[:5]
    r.bridge_drug, r.drug_changed_s = conc[5:7] if len(conc) > 5 else ("", -1)  # earlier firmware: not kept
    r.undosed = L.get("undosed", 0)
    _load_hours(r, L["hours"])
    r.reseal()


def _load_hours(r, saved):
    # The hourly rings hold hour h at h % their length, which a record may
    # not share: records saved with 24 hours read with the oldest one empty.
    # Records from before the bridge and folded doses were kept have neither.
    hour, rings = saved[0], saved[1:]
    n, m = len(rings[0]), len(r.hour_strokes)
    mine = (r.hour_strokes, r.hour_dose, r.hour_bridge, r.hour_num)
    for ring in mine:
        for i in range(m):
            ring[i] = 0
    for k in range(min(n, m)):
        h = hour - k
        for ring, old in zip(mine, rings):
            ring[h % m] = old[h % n]
    r.hour = hour


def _load_sched(s, S):
    s.basal_phase = S["basal_phase"]
    kind, left, inc, period, phase = S["bolus"][:5]
    elapsed = S["bolus"][5] if len(S["bolus"]) > 5 else 0
    s.clear_bolus()
    if kind == KIND_PRIMING and (left or elapsed < period):
        s.running = True  # a priming bolus runs whatever the therapy's state
    if kind and (left or elapsed < period) and s.running:
        s.bolus_kind, s.bolus_left, s.bolus_inc, s.bolus_period, s.bolus_phase = kind, left, inc, period, phase
        s.bolus_elapsed = elapsed
    times, count = S["demand"]
    for i, t in enumerate(times):
        s.demand_times[i] = t
    s.demand_count = count
    for i, t in enumerate(S["per_last"]):
        s.per_last[i] = t
    s.per_pending = S["per_pending"]
