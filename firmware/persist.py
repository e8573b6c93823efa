# Persistent pump state: one versioned, CRC-protected record saved atomically
# (firmware/records.py) after every command and at delivery checkpoints, and
# restored at boot. A saved state counts RESERVE_STROKES more strokes than it
# has seen as delivered (ledger, bolus progress, today's totals), so
# whatever is lost between a checkpoint and a reset can only under-deliver.
# See docs/persistence.md.
import json

import alarms
import events
import hal
import prescription
from limits import LimitError
from pump import RESERVE_STROKES
from records import RecordStore

STATE = "pump"
VERSION = 1
# Alarms whose state is kept across a reset: the latched ones. Conditions
# read from sensors (battery, reservoir level) are re-evaluated at boot.
_KEPT = ((1 << alarms.MOTOR_STALL) | (1 << alarms.OCCLUSION) | (1 << alarms.INTERNAL_FAULT)
         | (1 << alarms.DOSE_GUARD) | (1 << alarms.INTEGRITY) | (1 << alarms.REFILL_DISCREPANCY)
         | (1 << alarms.ALARM_DATE))


class Persist:
    def __init__(self, pump, directory):
        self.pump = pump
        self.store = RecordStore(directory + "/state")  # makes its own folder
        self.saves = 0
        pump.saver = self.save

    # -- save ----------------------------------------------------------------
    def save(self, clean=False):
        self.store.save(STATE, VERSION, json.dumps(self.snapshot(clean)).encode())
        self.saves += 1

    def snapshot(self, clean=False):
        p = self.pump
        r, s, g, a = p.reservoir, p.sched, p.guard, p.alarms
        reserve = 0 if clean else RESERVE_STROKES
        bolus_left = max(0, s.bolus_left + s.owed_bolus - reserve) if s.bolus_busy() else 0
        return {
            "clean": clean,
            "device": p.device, "catheter_nl": p.catheter_nl, "alarm_day": p.alarm_day,
            "clock": [p.clock.day, p.clock.tod_s], "mono_s": s.mono_s,
            "rx": p.rx, "old_rx": p.old_rx, "bridge_left": s.bridge_left, "suspended": p.suspended,
            "empty_stop": p.stopped_only_for_empty,
            "ledger": {
                "remaining_nl": r.remaining_nl - reserve * r.stroke_nl, "strokes": list(r.strokes),
                "reserved_nl": r.reserved_nl + reserve * r.stroke_nl,
                "volume_in_nl": r.volume_in_nl, "withdrawn_nl": r.withdrawn_nl,
                "unaccounted_nl": r.unaccounted_nl, "low_nl": r.low_nl,
                "conc": [r.conc_ng_ml, r.bridge_conc_ng_ml, r.dose_ng_before, r.epoch_dose, r.epoch_bridge],
                "today": [r.day, r.today_strokes + reserve, r.today_dose + reserve],
                "hours": [r.hour, list(r.hour_strokes), list(r.hour_dose)],
            },
            "sched": {
                "basal_phase": s.basal_phase,
                "bolus": [s.bolus_kind if bolus_left else 0, bolus_left, s.bolus_inc, s.bolus_period, s.bolus_phase],
                "demand": [list(s.demand_times), s.demand_count],
                "per_last": list(s.per_last), "per_pending": s.per_pending,
            },
            # The guard counts only strokes it saw: a reset may hide up to
            # RESERVE_STROKES from it (it is the second line of defence).
            "guard": [_window(g.hour), _window(g.day), max(0, g.budget - reserve)],
            "alarms": [a.active & _KEPT, list(a.silenced_until)],
        }

    # -- restore -------------------------------------------------------------
    def restore(self, cause):
        # Returns the reset cause as logged (a state not closed cleanly after a
        # power-on is a power loss).
        p = self.pump
        rec = self.store.load(STATE)
        if rec is None:
            if self.store.corrupt_found:
                p.alarms.set(alarms.INTEGRITY, True, p.now_s)  # state existed but cannot be read
                p.record(events.FAULT, 1, self.store.corrupt_found, 0, 0, b"state record unreadable")
            p.record(events.BOOT, cause)
            return cause
        d = json.loads(rec[1])
        if cause == hal.RESET_POWER_ON and not d["clean"]:
            cause = hal.RESET_POWER_LOSS
        self._load(d)
        p.record(events.BOOT, cause)
        if not d["clean"]:
            p.record(events.FAULT, 2, RESERVE_STROKES, 0, 0, b"resumed from checkpoint")
        return cause

    def _load(self, d):
        p = self.pump
        p.device = d["device"]
        p.catheter_nl = d["catheter_nl"]
        p.alarm_day = d["alarm_day"]
        p.clock.set(d["clock"][0], d["clock"][1])
        p.suspended = d["suspended"]
        p.stopped_only_for_empty = d["empty_stop"]
        s = p.sched
        s.mono_s = d["mono_s"]
        _load_ledger(p.reservoir, d["ledger"])
        a = d["alarms"]
        for i in range(alarms.COUNT):
            if a[0] & (1 << i):
                p.alarms.set(i, True, s.mono_s)
            p.alarms.silenced_until[i] = a[1][i]
        p.alarms.raised = 0  # raised before the reset: already in the log
        if d["rx"] is not None:
            self._load_therapy(d)
        _load_sched(s, d["sched"])
        _load_window(p.guard.hour, d["guard"][0])
        _load_window(p.guard.day, d["guard"][1])
        p.guard.budget = d["guard"][2]
        p.active_bolus = s.bolus_kind
        p.active_bolus_strokes = s.bolus_inc
        p.next_housekeeping = s.mono_s
        p._check_level()

    def _load_therapy(self, d):
        p = self.pump
        try:
            therapy = prescription.validate(d["rx"], p.stroke_nl)
            old = prescription.validate(d["old_rx"], p.stroke_nl) if d["old_rx"] else None
        except LimitError as e:
            # Saved under other limits (a firmware update): never run it unchecked.
            p.alarms.set(alarms.INTEGRITY, True, p.now_s)
            p.record(events.FAULT, 3, 0, 0, 0, e.message[:60].encode())
            return
        bridge = d["bridge_left"] if old is not None else 0
        if old is not None:
            p.therapy = old
            p.rx = d["old_rx"]
        p.load_therapy(d["rx"], therapy, bridge, old)
        if bridge:
            p.sched.bridge_left = bridge


def _window(w):
    # Sparse: most buckets are empty, and a smaller record wears flash less.
    return [w.index, [[i, w.used[i], w.extra[i]] for i in range(w.n) if w.used[i] or w.extra[i]]]


def _load_window(w, saved):
    w.index = saved[0]
    for i, used, extra in saved[1]:
        w.used[i] = used
        w.extra[i] = extra
    w.used_sum = sum(w.used)
    w.extra_sum = sum(w.extra)


def _load_ledger(r, L):
    r.remaining_nl = L["remaining_nl"]
    for i, n in enumerate(L["strokes"]):
        r.strokes[i] = n
    r.reserved_nl = L["reserved_nl"]
    r.volume_in_nl = L["volume_in_nl"]
    r.withdrawn_nl = L["withdrawn_nl"]
    r.unaccounted_nl = L["unaccounted_nl"]
    r.low_nl = L["low_nl"]
    r.conc_ng_ml, r.bridge_conc_ng_ml, r.dose_ng_before, r.epoch_dose, r.epoch_bridge = L["conc"]
    r.day, r.today_strokes, r.today_dose = L["today"]
    r.hour = L["hours"][0]
    for i in range(len(r.hour_strokes)):
        r.hour_strokes[i] = L["hours"][1][i]
        r.hour_dose[i] = L["hours"][2][i]
    r.reseal()


def _load_sched(s, S):
    s.basal_phase = S["basal_phase"]
    kind, left, inc, period, phase = S["bolus"]
    if kind and left and s.running:
        s.bolus_kind, s.bolus_left, s.bolus_inc, s.bolus_period, s.bolus_phase = kind, left, inc, period, phase
        s.owed_bolus = 0
    times, count = S["demand"]
    for i, t in enumerate(times):
        s.demand_times[i] = t
    s.demand_count = count
    for i, t in enumerate(S["per_last"]):
        s.per_last[i] = t
    s.per_pending = S["per_pending"]
