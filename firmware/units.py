# Fixed-point units of the firmware: volume in nanolitres (nL), drug mass in
# nanograms (ng), concentration in ng/mL (= ug/L), time in ms or s.
# Every quantity on the tick path stays inside the RP2040's small-int range.
from micropython import const

MS_PER_S = const(1000)
S_PER_MIN = const(60)
S_PER_HOUR = const(3600)
S_PER_DAY = const(86400)
MS_PER_DAY = const(86400000)
NL_PER_ML = const(1000000)
NL_PER_UL = const(1000)


def dose_to_volume_nl(dose_ng, conc_ng_ml):
    # Rounded to the nearest nanolitre; not on the tick path (may use long ints).
    return (dose_ng * NL_PER_ML + conc_ng_ml // 2) // conc_ng_ml


def volume_to_dose_ng(volume_nl, conc_ng_ml):
    return (volume_nl * conc_ng_ml + NL_PER_ML // 2) // NL_PER_ML


def _decimal(value, scale):
    # "12.5" for 12500 / 1000, exact and without floats (scale: a power of ten).
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    return ("%d.%0*d" % (whole, len(str(scale)) - 1, frac)).rstrip("0")


def fmt_mass(ng, ug=False):
    # Drug mass as a clinician reads it: in ug for a drug dosed in ug (`ug`:
    # limits.doses_in_ug), else mg from 1 mg up and ug below. One drug's
    # figures never mix the two (a 1000-fold misreading).
    if ng < 0:
        return "-" + fmt_mass(-ng, ug)
    return _decimal(ng, 1000000) + " mg" if ng >= 1000000 and not ug else _decimal(ng, 1000) + " ug"


def fmt_volume(nl):
    if nl < 0:
        return "-" + fmt_volume(-nl)
    return _decimal(nl, NL_PER_ML) + " mL" if nl >= 100000 else _decimal(nl, NL_PER_UL) + " uL"
