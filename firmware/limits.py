# Hard limits. Every prescription and bolus is checked against these before it
# is accepted; a violation raises LimitError naming the limit, and nothing of
# the request is applied. The table and its sources are in docs/limits.md.
from micropython import const

# Mechanism: the emulated peristaltic pump's rate range (SynchroMed II class).
RATE_MIN_NL_DAY = const(48000)  # 0.048 mL/day
RATE_MAX_NL_DAY = const(24000000)  # 24 mL/day
MAX_STEPS = const(10)  # flex steps per day
MAX_PERIODIC = const(8)  # periodic boluses per day
LOCKOUT_MIN_S = const(900)  # 15 min
LOCKOUT_MAX_S = const(86400)  # 24 h
DEMAND_MAX_PER_DAY = const(24)
BOLUS_DURATION_MIN_S = const(60)
BOLUS_DURATION_MAX_S = const(86400)
PRIMING_VOLUME_MAX_NL = const(1000000)  # 1 mL: longest catheters hold ~0.3 mL
CATHETER_VOLUME_MAX_NL = const(1000000)

# drug: (max concentration ng/mL, max daily dose ng/day, max single bolus ng)
# Concentration and daily maxima from DOMAIN.md; single bolus = 1/4 of the
# daily maximum (a documented design decision, see docs/limits.md).
DRUGS = {
    "morphine": (25000000, 20000000, 5000000),
    "hydromorphone": (15000000, 25000000, 6250000),
    "ziconotide": (100000, 19200, 4800),
    "baclofen": (2000000, 1000000, 250000),
    "clonidine": (2000000, 2000000, 500000),
    "bupivacaine": (40000000, 20000000, 5000000),
    "sufentanil": (100000, 100000, 25000),
}


# Hard daily maxima above the table's (soft) daily maximum, where a source
# gives two figures: ziconotide 19.2 ug/day on the US label, 21.6 ug/day on
# the EU label; baclofen about 1000 ug/day usually, up to 2003 ug/day in the
# label's clinical studies. A clinician may go above the soft maximum only
# with an explicit, logged override; the hard maximum is never exceeded, and
# the dose guard's 24-hour ceiling is the hard maximum (docs/limits.md).
HARD_DAILY = {"ziconotide": 21600, "baclofen": 2000000}
UG_BELOW_NG_DAY = const(10000000)  # daily maxima below 10 mg: a drug dosed in ug
PRIME_MARGIN_PCT = const(10)  # priming may exceed the recorded catheter volume by this


class LimitError(ValueError):
    # `limit` is a stable short name for programs; the message is for people.
    def __init__(self, limit, message):
        super().__init__(message)
        self.limit = limit
        self.message = message


def drug_limits(drug):
    try:
        return DRUGS[drug]
    except KeyError:
        raise LimitError("drug", "unknown drug %r (known: %s)" % (drug, ", ".join(sorted(DRUGS))))


def doses_in_ug(drug):
    # The potent drugs, whose daily doses are below 10 mg, are dosed in ug
    # (docs/limits.md); the programmer shows them so too (pumpctl.units).
    return DRUGS.get(drug, (0, UG_BELOW_NG_DAY, 0))[1] < UG_BELOW_NG_DAY


def hard_daily(drug):
    return HARD_DAILY.get(drug) or drug_limits(drug)[1]


def check_range(limit, what, value, low, high, unit):
    if not low <= value <= high:
        raise LimitError(limit, "%s %d %s outside %d..%d %s" % (what, value, unit, low, high, unit))


def is_plain_text(text):
    # Text a clinician reads back (a diary note, a serial): a line break or
    # another control character would break the log's tables and screens.
    for c in text:
        if ord(c) < 0x20 or ord(c) == 0x7F:
            return False
    return True
