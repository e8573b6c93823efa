# Delivered strokes per pump day and per kind of stroke, for the DAILY_TOTAL
# records of the event log (docs/dosing.md, "Daily totals").
#
# The open part counts the strokes the motor confirmed (Pump._debit) since
# the pump day began: per kind, and how many of them put drug into the
# patient (not saline pushed out of a catheter being primed). A part ends at
# midnight of the pump's wall clock (the tick sees the day change) or when
# the clinician sets the clock to another day; it then becomes the closed
# part, which Pump.service() logs (one record per kind) and forgets. A reset
# does not end a part: its counts are in every checkpoint.
#
# Tick path (count, close): small ints only, no allocation. Per kind and day
# the motor can complete at most 86400 s / 40 ms = 2,160,000 strokes, so
# counts stay below 2^30 for 497 days even when the closed part cannot be
# logged and later days are merged into it; concentrations are < 2^26 ng/mL.
#
# Dose: strokes x stroke_nl x concentration reaches 10^15 (long ints), so it
# is never computed on the tick. The tick counts dose strokes; at a change of
# concentration (a refill, a command: long ints allowed) the dose strokes so
# far are folded into `num` (dose strokes x concentration, exact), so one
# day's record holds the exact dose of strokes of both concentrations. Bridge
# strokes count at the bridge (earlier) concentration, as the ledger does.
import array

from micropython import const

from scheduler import KIND_BRIDGE, KIND_UNCOMMANDED

KINDS = KIND_UNCOMMANDED + 1  # index 0 (KIND_NONE) counts nothing

# Why a part ended (DAILY_TOTAL b, bits 16..19).
END_MIDNIGHT = const(0)
END_CLOCK = const(1)  # the clock was set to another day (or moved there by a restore)
END_DRUG = const(2)  # a refill with another drug: a part never adds two drugs' doses
# DAILY_TOTAL b, bit 28: counting began during the part (the state held no
# counts: a firmware update, or an unreadable state): strokes before it are missing.
PARTIAL = const(1 << 28)
_RESETS_MAX = const(255)
_SPAN_MAX = const(255)


class DayTotals:
    def __init__(self):
        # The open part.
        self.day = 0  # pump day being counted (the clock's day)
        self.strokes = array.array("i", [0] * KINDS)
        self.dosed = array.array("i", [0] * KINDS)
        self.num = [0] * KINDS  # folded dose: dose strokes x ng/mL (off the tick: may be long)
        self.resets = 0  # unclean resets during the part (each may hide up to RESERVE_STROKES)
        self.partial = 0  # PARTIAL when counting began after the part did
        # The closed part, waiting for service() to log it.
        self.pending = False
        self.c_day = 0  # first pump day it covers
        self.c_last = 0  # last pump day it covers (> c_day only when later parts were merged)
        self.c_reason = END_MIDNIGHT
        self.c_strokes = array.array("i", [0] * KINDS)
        self.c_dosed = array.array("i", [0] * KINDS)
        self.c_num = [0] * KINDS
        self.c_conc = 0  # concentrations of its unfolded dose strokes (ng/mL): reservoir, bridge
        self.c_bconc = 0
        self.c_resets = 0
        self.c_partial = 0
        self.c_seq = 0  # the log's last sequence number when it closed: its records come after
        self.c_written = 0  # bit mask of kinds whose record is on the log
        self.c_saved = False  # the state on flash holds it (its records may be written)
        # The drugs its strokes gave: its bridge's (the catheter's earlier
        # drug) and every other kind's. Named in its records (their text).
        self.c_drug = ""
        self.c_bridge_drug = ""

    # -- tick path ---------------------------------------------------------
    def count(self, kind, dose):
        self.strokes[kind] += 1
        if dose:
            self.dosed[kind] += 1

    def close(self, new_day, reason, conc, bconc, log_seq, drug, bridge_drug):
        # Ends the open part; the next one counts pump day new_day. Returns
        # False (nothing changed) when it cannot be merged into a closed part
        # still waiting: the open part then goes on until that one is logged.
        o, od, on = self.strokes, self.dosed, self.num
        last = self.day
        if reason == END_MIDNIGHT and new_day > self.day:
            last = new_day - 1  # virtual time may jump: the days with no stroke between
        if self.pending:
            if self.c_written:
                return False  # some of its records are on the log: they cannot grow
            for k in range(KINDS):
                if on[k]:
                    return False  # folded doses cannot be added here without long ints
            if drug != self.c_drug or bridge_drug != self.c_bridge_drug:
                # Another drug's: its strokes cannot join that part's record
                # (a record never names two drugs); with none, it just ends.
                for k in range(KINDS):
                    if o[k]:
                        return False
                self.day = new_day
                return True
            c, cd = self.c_strokes, self.c_dosed
            for k in range(KINDS):
                c[k] += o[k]
                cd[k] += od[k]
            if last > self.c_last:
                self.c_last = last
            self.c_reason = reason
            self.c_resets += self.resets
            if self.c_resets > _RESETS_MAX:
                self.c_resets = _RESETS_MAX
            self.c_partial |= self.partial
        else:
            # Swap the arrays (and the folded lists): nothing is copied or allocated.
            self.strokes, self.c_strokes = self.c_strokes, o
            self.dosed, self.c_dosed = self.c_dosed, od
            self.num, self.c_num = self.c_num, on
            o, od, on = self.strokes, self.dosed, self.num
            self.c_day = self.day
            self.c_last = last
            self.c_reason = reason
            self.c_resets = self.resets
            self.c_partial = self.partial
            self.c_seq = log_seq
            self.c_written = 0
            self.pending = True
        self.c_conc = conc
        self.c_bconc = bconc
        self.c_drug = drug
        self.c_bridge_drug = bridge_drug
        self.c_saved = False
        for k in range(KINDS):
            o[k] = 0
            od[k] = 0
            on[k] = 0
        self.resets = 0
        self.partial = 0
        self.day = new_day
        return True

    # -- commands and service (may allocate) ---------------------------------
    def reopen_all_but(self, kept):
        # Right after close() of the same day: every kind but `kept` goes
        # back to the open part, which goes on (the closed part is then that
        # kind's record alone). Not when close() merged into a waiting part.
        for a, c in ((self.strokes, self.c_strokes), (self.dosed, self.c_dosed), (self.num, self.c_num)):
            for k in range(KINDS):
                if k != kept:
                    a[k] += c[k]
                    c[k] = 0
        self.resets, self.partial = self.c_resets, self.c_partial
        self.c_saved = False

    def fold(self, conc, bconc):
        # Before the concentration changes (a refill): the dose strokes so far,
        # of both parts, are booked at the concentration they were given at.
        for nums, dosed, c, b in ((self.num, self.dosed, conc, bconc),
                                  (self.c_num, self.c_dosed, self.c_conc, self.c_bconc)):
            for k in range(KINDS):
                if dosed[k]:
                    nums[k] += dosed[k] * (b if k == KIND_BRIDGE else c)
                    dosed[k] = 0
        self.c_saved = False

    def closed_dose_ng(self, kind, stroke_nl):
        n = self.c_num[kind] + self.c_dosed[kind] * (self.c_bconc if kind == KIND_BRIDGE else self.c_conc)
        return n * stroke_nl // 1000000

    def open_totals(self, stroke_nl, conc, bconc, bridge_drug):
        # (strokes, dose in ng) of the part being counted: the status's
        # "delivered today", each dose stroke at the concentration it was
        # given at; the bridge's not when it is another drug (bridge_drug:
        # its name, Reservoir.bridge_drug; "" for the same drug).
        num = 0
        for k in range(KINDS):
            if k == KIND_BRIDGE and bridge_drug:
                continue
            num += self.num[k] + self.dosed[k] * (bconc if k == KIND_BRIDGE else conc)
        return sum(self.strokes), num * stroke_nl // 1000000

    def closed_b(self, kind):
        # DAILY_TOTAL b: kind, days covered - 1, end reason, resets, partial.
        span = min(self.c_last - self.c_day, _SPAN_MAX)
        return kind | span << 8 | self.c_reason << 16 | self.c_resets << 20 | self.c_partial

    def closed_drug(self, kind):
        return self.c_bridge_drug if kind == KIND_BRIDGE else self.c_drug

    def closed_kinds(self):
        # Kinds with a record: those with strokes, else 0 (nothing delivered).
        out = [k for k in range(1, KINDS) if self.c_strokes[k]]
        return out or [0]

    def empty(self):
        return not any(self.c_strokes)

    def snapshot(self):
        d = {"day": self.day, "strokes": list(self.strokes), "dosed": list(self.dosed), "num": list(self.num),
             "resets": self.resets, "partial": self.partial}
        if self.pending:
            d["closed"] = [self.c_day, self.c_last, self.c_reason, list(self.c_strokes), list(self.c_dosed),
                           list(self.c_num), self.c_conc, self.c_bconc, self.c_resets, self.c_partial, self.c_seq,
                           self.c_written, self.c_drug, self.c_bridge_drug]
        return d

    def load(self, d):
        self.day = d["day"]
        for k in range(KINDS):
            self.strokes[k] = d["strokes"][k]
            self.dosed[k] = d["dosed"][k]
            self.num[k] = d["num"][k]
        self.resets = d["resets"]
        self.partial = d["partial"]
        c = d.get("closed")
        self.pending = c is not None
        if c is not None:
            self.c_day, self.c_last, self.c_reason = c[0], c[1], c[2]
            for k in range(KINDS):
                self.c_strokes[k] = c[3][k]
                self.c_dosed[k] = c[4][k]
                self.c_num[k] = c[5][k]
            self.c_conc, self.c_bconc, self.c_resets, self.c_partial, self.c_seq, self.c_written = c[6:12]
            self.c_drug, self.c_bridge_drug = c[12:14] if len(c) > 12 else ("", "")  # earlier firmware: unnamed
        self.c_saved = False  # saved again before its records: a revert loads a state never saved

    def start(self, day):
        # No saved counts (a state from earlier firmware): count from now, marked partial.
        self.__init__()
        self.day = day
        self.partial = PARTIAL

    def found_in_log(self, log, etype):
        # After a reset with a closed part pending: the kinds whose record
        # reached the log after it closed are not written again.
        seq = self.c_seq + 1
        while True:
            recs = log.read(seq, 16)
            if not recs:
                return
            for r in recs:
                if r[3] == etype and r[4] == self.c_day:
                    self.c_written |= 1 << (r[5] & 0xFF)
            seq = recs[-1][0] + 1
