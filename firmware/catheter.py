# What the catheter holds, in strokes, first out at the tip first: saline
# (or air) left from implant or revision, then drug of an earlier
# concentration, then the reservoir's drug. Each stroke the motor completes
# pushes one stroke out of the tip, so the dose a stroke gives the patient is
# that of what leaves the tip, not of what enters from the reservoir. The
# 24-hour ceiling (firmware/guard.py) weighs every stroke by it.
#
# Weights are in ceiling units: CEILING_UNITS is one drug's hard daily
# maximum, so a stroke of drug at concentration c weighs
# stroke_nl * c / max_daily_ng of it, rounded up (never under-counted).
from micropython import const

# Priming may push PRIME_MARGIN_PCT beyond the recorded catheter volume
# (catheter volumes are known to about 10 %); what goes beyond is dose.
from limits import PRIME_MARGIN_PCT

CEILING_UNITS = const(10000000)  # the hard daily maximum of the drug at the tip
_NL_PER_ML = const(1000000)


def stroke_weight(stroke_nl, conc_ng_ml, max_daily_ng):
    # Ceiling units of one stroke (not on the tick path: may use long ints).
    return -(-stroke_nl * conc_ng_ml * CEILING_UNITS // (_NL_PER_ML * max_daily_ng))


class Catheter:
    def __init__(self, stroke_nl):
        self.stroke_nl = stroke_nl
        self.volume_nl = 0
        self.saline = 0  # strokes of non-drug still ahead of any drug
        self.old = 0  # strokes of earlier drug after the saline
        self.old_weight = 0
        self.weight = 0  # weight of the reservoir's drug
        # Strokes of drug that left the tip before a prescription named it
        # (0 weight: the priming margin, the implant's motor test): booked as
        # dose when one does (Pump.load_therapy).
        self.unnamed_out = 0

    def strokes(self):
        return -(-self.volume_nl // self.stroke_nl)

    def primed(self):
        return self.saline == 0

    def unidentified(self):
        # Drug pushed in before any drug was named (priming after a first fill).
        return self.weight == 0 and self.strokes() > self.saline

    def assume_primed(self, volume_nl):
        # A catheter of this volume, already full of the reservoir's drug
        # (restored from flash, or set up by a test).
        self.volume_nl = volume_nl
        self.saline = self.old = 0

    def revise(self, volume_nl):
        # New or revised catheter: it holds no drug until primed.
        self.volume_nl = volume_nl
        self.saline = self.strokes()
        self.old = 0

    def after_change(self, weight, changed=False):
        # (strokes, weight) of earlier drug in the catheter once the reservoir
        # holds drug of `weight`: what is in the line is pushed out first.
        # `changed`: another drug or strength, whatever its weight (morphine
        # 10 mg/mL and hydromorphone 12.5 mg/mL weigh the same, and are not
        # the same drug). Several changes before it is flushed keep the
        # heaviest earlier weight (never under-counted).
        drug_in_line = self.strokes() - self.saline
        if weight == self.weight and not changed or not self.weight or drug_in_line <= 0:
            return self.old, self.old_weight
        return drug_in_line, max(self.weight, self.old_weight) if self.old else self.weight

    def bridge_strokes(self, weight):
        # After a change to drug of `weight`: the strokes until it reaches the
        # tip (saline still ahead of the earlier drug included); 0 when the
        # line holds no earlier drug.
        n = self.after_change(weight, True)[0]
        return n + self.saline if n else 0

    def set_drug(self, weight, changed=False):
        self.old, self.old_weight = self.after_change(weight, changed)
        self.weight = weight

    def prime_limit(self):
        # Most strokes a priming bolus may run: the saline still ahead plus the margin.
        return self.saline + -(-self.strokes() * PRIME_MARGIN_PCT // 100) if self.saline else 0

    # -- tick path ---------------------------------------------------------
    def in_transition(self):
        # Saline or an earlier drug is still ahead of the reservoir's drug.
        return self.saline or self.old

    def pushes_earlier_drug(self):
        # The next stroke leaves the tip as the earlier drug (a bridge).
        return self.old and not self.saline

    def next_weight(self):
        if self.saline:
            return 0
        if self.old:
            return self.old_weight
        return self.weight

    def push(self):
        # One completed stroke: returns the weight of what left the tip.
        if self.saline:
            self.saline -= 1
            return 0
        if self.old:
            self.old -= 1
            return self.old_weight
        if not self.weight:
            self.unnamed_out += 1
        return self.weight
