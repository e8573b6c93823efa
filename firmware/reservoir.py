# Reservoir ledger: what is in the pump and where it went. Counted in strokes
# (exact) and reported in nL and ng. Every completed stroke debits it once; a
# priming stroke is volume but not dose. Its tick-path fields (remaining
# volume, strokes by kind) are also kept bit-inverted, and the loop compares
# the two copies (docs/integers.md).
import array

from micropython import const

from scheduler import KIND_BRIDGE, KIND_UNCOMMANDED
from units import NL_PER_ML, S_PER_DAY

_KINDS = KIND_UNCOMMANDED + 1
# Last-24-hours totals in hourly buckets: the current hour and the 24 before
# it, so that the hour the 24-hour window's start falls in is still there
# (last_24h counts its share).
_BUCKET_S = const(3600)
_BUCKETS = const(25)

RESIDUAL_NL = 1000000  # below this delivery is unreliable: treated as empty
LOW_DEFAULT_NL = 2000000
DISCREPANCY_FRACTION_PCT = 20  # refill warning: more than 20 % of expected ...
DISCREPANCY_MIN_NL = 2000000  # ... or more than 2 mL (either: ../shared/DOMAIN.md)


class Reservoir:
    def __init__(self, capacity_nl, stroke_nl):
        self.capacity_nl = capacity_nl
        self.stroke_nl = stroke_nl
        self.residual_nl = RESIDUAL_NL
        self.low_nl = LOW_DEFAULT_NL
        self.remaining_nl = 0
        self.strokes = array.array("i", [0] * _KINDS)  # lifetime strokes by kind
        # Inverse copies (~x) of remaining_nl and strokes: see intact().
        self.remaining_inv = ~0
        self.strokes_inv = array.array("i", [~0] * _KINDS)
        self.hour_strokes = array.array("i", [0] * _BUCKETS)  # all strokes per hour (volume)
        # The hour's dose, exact across a change of concentration: dose
        # strokes of the reservoir's drug and of the bridge (the catheter's
        # earlier drug) since the last change, and those before it folded
        # into dose strokes x ng/mL (off the tick path: may be long ints).
        self.hour_dose = array.array("i", [0] * _BUCKETS)
        self.hour_bridge = array.array("i", [0] * _BUCKETS)
        self.hour_num = [0] * _BUCKETS
        self.hour = 0  # monotonic hour of the current bucket
        self.undosed = 0  # strokes that pushed saline out of a catheter being primed
        # Off the tick path (may be long ints): the balance of volumes.
        self.volume_in_nl = 0
        self.withdrawn_nl = 0
        self.unaccounted_nl = 0  # expected minus withdrawn at refills
        self.reserved_nl = 0  # counted ahead by checkpoints and lost in resets (never over-delivery)
        self.conc_ng_ml = 0
        self.bridge_conc_ng_ml = 0
        self.dose_ng_before = 0  # drug delivered under earlier concentrations
        self.epoch_dose = 0  # dose strokes counted when the concentration last changed
        self.epoch_bridge = 0
        # The drug before the last change when it was another drug ("": the
        # same one at another strength, or no change): the bridge's strokes
        # are that drug, and the hours' dose counts this one only, since
        # drug_changed_s (-1: never).
        self.bridge_drug = ""
        self.drug_changed_s = -1
        self.reseal()

    # -- integrity -------------------------------------------------------
    # Redundant inverse storage (IEC 60730 class B): every ledger value on
    # the tick path is also held bit-inverted, both copies change together
    # in O(1) per stroke, and any damage to one copy, whatever bits and
    # however many, shows as x != ~x_inv. ~x is a small int for every small
    # int x, and x - s pairs with ~x + s, so no arithmetic leaves the range.
    def reseal(self):
        # The values as they are now are the legitimate ones (fill, refill, restore).
        self.remaining_inv = ~self.remaining_nl
        inv = self.strokes_inv
        for k in range(_KINDS):
            inv[k] = ~self.strokes[k]

    def intact(self):
        if self.remaining_nl != ~self.remaining_inv:
            return False
        inv = self.strokes_inv
        for k in range(_KINDS):
            if self.strokes[k] != ~inv[k]:
                return False
        return True

    # -- the tick path ---------------------------------------------------
    def debit_stroke(self, kind, mono_s, dose=True):
        # `dose`: the stroke put drug into the patient (not saline pushed
        # out of a catheter being primed).
        s = self.stroke_nl
        self.remaining_nl -= s
        self.remaining_inv += s  # ~(x - s) == ~x + s
        self.strokes[kind] += 1
        self.strokes_inv[kind] -= 1
        self.roll(mono_s)
        b = self.hour % _BUCKETS
        self.hour_strokes[b] += 1
        if not dose:
            self.undosed += 1
        elif kind == KIND_BRIDGE:
            self.hour_bridge[b] += 1
        else:
            self.hour_dose[b] += 1

    def dose_named(self, strokes, mono_s):
        # Strokes of drug that left the catheter before any prescription named
        # it, booked as dose once one does (after set_drug: at its strength),
        # in the current hour (counted late: never under-counted).
        self.undosed -= strokes
        self.roll(mono_s)
        self.hour_dose[self.hour % _BUCKETS] += strokes

    def roll(self, mono_s):
        h = mono_s // _BUCKET_S
        n = h - self.hour
        if n > 0:
            if n > _BUCKETS:
                n = _BUCKETS
            for i in range(1, n + 1):
                b = (self.hour + i) % _BUCKETS
                self.hour_strokes[b] = 0
                self.hour_dose[b] = 0
                self.hour_bridge[b] = 0
                self.hour_num[b] = 0
            self.hour = h

    def level(self):
        # 2: at or below residual (empty), 1: at or below the low threshold, 0: fine.
        r = self.remaining_nl
        return 2 if r <= self.residual_nl else (1 if r <= self.low_nl else 0)

    # -- refill and reports (not on the tick path) ------------------------
    def total_strokes(self):
        return sum(self.strokes)

    def dose_strokes(self):
        return self.total_strokes() - self.undosed

    def delivered_nl(self):
        return self.total_strokes() * self.stroke_nl

    def drug_delivered_ng(self):
        # Bridge strokes push the catheter's old drug: counted at the old concentration.
        bridge = self.strokes[KIND_BRIDGE] - self.epoch_bridge
        other = self.dose_strokes() - self.epoch_dose - bridge
        vol = self.stroke_nl
        return (self.dose_ng_before + (other * vol * self.conc_ng_ml
                                       + bridge * vol * self.bridge_conc_ng_ml) // NL_PER_ML)

    def set_drug(self, conc_ng_ml, other_drug, mono_s):
        # other_drug: the drug before the change, when it is another ("": the same).
        # A new drug or strength: what was delivered so far is booked at the
        # old one, and the bridge's strokes will be (the catheter's old drug).
        # Another drug starts the hours' dose afresh: two drugs' milligrams
        # do not add up.
        self.dose_ng_before = self.drug_delivered_ng()
        self.epoch_dose = self.dose_strokes()
        self.epoch_bridge = self.strokes[KIND_BRIDGE]
        for b in range(_BUCKETS):
            self.hour_num[b] = 0 if other_drug else self._hour_num(b)
            self.hour_dose[b] = self.hour_bridge[b] = 0
        self.bridge_drug = other_drug
        if other_drug:
            self.drug_changed_s = mono_s
        self.bridge_conc_ng_ml = self.conc_ng_ml
        self.conc_ng_ml = conc_ng_ml

    def bridge_counted(self):
        # Strokes of the other drug are in the last 24 h's hours.
        if not self.bridge_drug:
            return False
        for b in range(_BUCKETS):
            if self.hour_bridge[b]:
                return True
        return False

    def discrepancy_alarm(self, expected_nl, withdrawn_nl):
        diff = abs(expected_nl - withdrawn_nl)
        return diff > DISCREPANCY_MIN_NL or diff * 100 > DISCREPANCY_FRACTION_PCT * expected_nl

    def refill(self, withdrawn_nl, added_nl):
        # Empty-and-fill: after aspiration the reservoir holds only what is added.
        expected = self.remaining_nl
        self.withdrawn_nl += withdrawn_nl
        self.unaccounted_nl += expected - withdrawn_nl
        self.volume_in_nl += added_nl
        self.remaining_nl = added_nl
        self.reseal()
        return expected

    def fill(self, volume_nl):
        # First fill of a new pump (nothing to withdraw).
        self.volume_in_nl += volume_nl - self.remaining_nl
        self.remaining_nl = volume_nl
        self.reseal()

    def balance_nl(self):
        # volume in - (delivered + withdrawn + unaccounted + reserved + remaining): 0 when the books balance.
        return self.volume_in_nl - (self.delivered_nl() + self.withdrawn_nl + self.unaccounted_nl
                                    + self.reserved_nl + self.remaining_nl)

    def _hour_num(self, b):
        # Bucket b's dose strokes x ng/mL, each at the concentration it was
        # given at; the bridge's only when it is the same drug.
        bridge = 0 if self.bridge_drug else self.hour_bridge[b] * self.bridge_conc_ng_ml
        return self.hour_num[b] + self.hour_dose[b] * self.conc_ng_ml + bridge

    def last_24h(self, mono_s):
        # (strokes, dose in ng of this drug) in the 24 h before mono_s: the current hour
        # and the 23 whole hours before it, plus the share of the oldest hour
        # still inside the window, its strokes taken as evenly spread (exact
        # for a basal rate; a bolus there counts in proportion).
        self.roll(mono_s)
        oldest = (self.hour + 1) % _BUCKETS
        inside = _BUCKET_S - mono_s % _BUCKET_S  # seconds of the oldest hour in the window
        strokes = num = 0
        for b in range(_BUCKETS):
            n, k = self.hour_strokes[b], self._hour_num(b)
            if b == oldest and n:
                share = (n * inside + _BUCKET_S // 2) // _BUCKET_S  # to the nearest stroke
                k = k * share // n  # the dose of as many of its strokes
                n = share
            strokes += n
            num += k
        return strokes, num * self.stroke_nl // NL_PER_ML

    def seconds_until(self, threshold_nl, nl_per_day):
        if nl_per_day <= 0:
            return None
        return max(0, self.remaining_nl - threshold_nl) * S_PER_DAY // nl_per_day
