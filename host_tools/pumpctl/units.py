"""Clinical units <-> the firmware's integers (ng, ng/mL, nL, seconds).

Every conversion is exact decimal arithmetic: input that does not come to a
whole number of firmware units is refused with a message, never rounded, and
a unit pumpctl does not know, a missing unit or an ambiguous form (a bolus
duration without a number) is refused too. Nothing here talks to a pump.

    mass      0.5mg  200ug  200µg  200mcg  50ng
    volume    18.5mL  500uL
    duration  90s  10min  1.5h  1day
    conc      10mg/mL  100ug/mL
    rate      4mg/day  0.5mg/h  100ug/24h
    bolus     0.5mg/10min          (dose over a duration: the number is required)
    step      08:00=5mg/day
    periodic  12:00=0.5mg/10min
    demand    0.2mg/5min,lockout=30min,max=4
"""
import datetime
import math
import re
import unicodedata
from decimal import Decimal
from fractions import Fraction
from typing import Any

from pumpctl import paths
from pumpctl.fw import events, limits
from pumpctl.fw import implant as fw_implant
from pumpctl.fw import link_commands as lc

S_PER_DAY = 86400
NL_PER_ML = 1_000_000
# The largest integer a link argument may carry (firmware/link.py _INT_MAX:
# small ints on the RP2040). Every hard limit is far below it; a value above
# it is refused here, in clinical units, before anything is sent.
ARG_MAX = 0x3FFFFFFF

MASS_NG = {"g": 10**9, "mg": 10**6, "ug": 10**3, "µg": 10**3, "μg": 10**3, "mcg": 10**3, "ng": 1}
VOLUME_NL = {"l": 10**9, "ml": 10**6, "ul": 10**3, "µl": 10**3, "μl": 10**3, "nl": 1}
TIME_S = {"s": 1, "sec": 1, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400}

_QTY = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)?\s*([^\W\d_]+)\s*")
_TOD = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?\s*")


class UnitError(ValueError):
    """Input pumpctl cannot convert exactly; the message says why and how."""


# -- parsing ---------------------------------------------------------------------
def ascii_digits(text, what):
    """Refuses a digit of another script (fullwidth ５, Arabic-Indic ٥, whose
    zero ٠ looks like a decimal point): a number is typed with 0-9 only."""
    if isinstance(text, str):
        odd = [ch for ch in text if ch.isdigit() and ch not in "0123456789"]
        if odd:
            raise UnitError("%s: %r has %s, not a digit 0-9: type the number with the digits 0-9 (e.g. on a "
                            "keyboard set to English)" % (what, text, ", ".join(
                                "%r (%s)" % (ch, unicodedata.name(ch, "a digit of another script")) for ch in odd)))
    return text


def _quantity(text, table, what, example, need_number=True):
    if not isinstance(text, str):
        raise UnitError("%s: expected text like %s, got %r" % (what, example, text))
    ascii_digits(text, what)
    if text.strip().startswith("-"):
        raise UnitError("%s: %r is negative: give a positive value, e.g. %s" % (what, text, example))
    if "," in text:
        raise UnitError("%s: %r: use a decimal point, e.g. %s" % (what, text, example))
    m = _QTY.fullmatch(text)
    if not m:
        raise UnitError("%s: %r is not a number with a unit, e.g. %s" % (what, text, example))
    number, unit = m.group(1), m.group(2)
    if number is None and need_number:
        raise UnitError("%s: %r has no number, e.g. %s" % (what, text, example))
    factor = table.get(unit.lower())
    if factor is None:
        raise UnitError("%s: unknown unit %r in %r (use one of: %s)"
                        % (what, unit, text, ", ".join(sorted(set(table)))))
    return Decimal(number if number is not None else 1), factor


def _whole(value, what, text, unit):
    if value != value.to_integral_value():
        raise UnitError("%s: %r is not a whole number of %s (the pump counts whole %s)" % (what, text, unit, unit))
    _bounded(int(value), what, unit, text)
    return int(value)


def fmt_pump_value(n, unit, drug_unit=None):
    """An integer in one of the pump's units (ng, ng/day, ng/mL, nL, nL/day,
    s) in clinical units; masses in the drug's unit (mg or µg) when given."""
    if unit in ("ng", "ng/day"):
        return fmt_mass(n, _mass_unit(n, drug_unit)) + unit[2:]
    if unit == "ng/mL":
        return fmt_conc(n, drug_unit or ("mg" if n >= 10**6 else "µg"))
    if unit == "nL/day":
        return fmt_volume(n) + "/day"
    if unit == "nL":  # µL only where mL would read 0.000: a zero is "0 mL" beside its range
        return "0 mL" if n == 0 else fmt_volume(n) if n >= 10**5 else "%s µL" % _dec(n, 1000)
    if unit in ("s", "seconds"):
        return fmt_duration(n)
    return "%d %s" % (n, unit)


def _mass_unit(ng, unit=None):
    # The drug's unit (mg or µg), else the one that reads best; below 1 µg, ng.
    if ng < 1000:
        return "ng" if ng else (unit or "mg")
    return unit or ("mg" if ng >= 10**6 else "µg")


def _bounded(n, what, unit, text=None):
    if n > ARG_MAX:
        drug = "; the drug's own hard limits in docs/limits.md are far lower" if unit.startswith(("ng", "nL")) else ""
        raise UnitError("%s: %s is more than the pump accepts (the largest value it takes is %s%s)"
                        % (what, repr(text) if text is not None else fmt_pump_value(n, unit),
                           fmt_pump_value(ARG_MAX, unit), drug))
    return n


def mass_ng(text, what="dose"):
    n, f = _quantity(text, MASS_NG, what, "0.5mg")
    return _whole(n * f, what, text, "ng")


def volume_nl(text, what="volume"):
    n, f = _quantity(text, VOLUME_NL, what, "18.5mL")
    return _whole(n * f, what, text, "nL")


def duration_s(text, what="duration"):
    n, f = _quantity(text, TIME_S, what, "10min")
    return _whole(n * f, what, text, "seconds")


def _fraction(text, what, example):
    parts = text.split("/") if isinstance(text, str) else []
    if isinstance(text, str) and text.strip().startswith("-"):
        raise UnitError("%s: %r is negative: give a positive value, e.g. %s" % (what, text, example))
    if len(parts) != 2:
        raise UnitError("%s: %r must be of the form %s" % (what, text, example))
    return parts


def conc_ng_ml(text):
    num, den = _fraction(text, "concentration", "10mg/mL")
    mass, mf = _quantity(num, MASS_NG, "concentration", "10mg/mL")
    vol, vf = _quantity(den, VOLUME_NL, "concentration", "10mg/mL", need_number=False)
    if mass == 0:
        raise UnitError("concentration: %r is zero: give the concentration on the vial's label, e.g. 10mg/mL"
                        % text)
    if vol == 0:
        raise UnitError("concentration: %r: zero volume" % text)
    return _whole(mass * mf * NL_PER_ML / (vol * vf), "concentration", text, "ng/mL")


def _per_day(text, what, units, example, unit):
    # 'quantity/duration' -> the quantity per day, in the smallest unit.
    num, den = _fraction(text, what, example)
    q, qf = _quantity(num, units, what, example)
    t, tf = _quantity(den, TIME_S, what, example, need_number=False)
    if t == 0:
        raise UnitError("%s: %r: zero duration" % (what, text))
    return _whole(q * qf * S_PER_DAY / (t * tf), what, text, unit)


def rate_ng_day(text, what="dose"):
    return _per_day(text, what, MASS_NG, "4mg/day", "ng/day")


def volume_rate_nl_day(text, what="flow rate"):
    """'1mL/day', '0.048mL/day', '40uL/h' -> nL/day (a flow rate by volume:
    the mechanism's own figure, whatever the drug)."""
    return _per_day(text, what, VOLUME_NL, "1mL/day", "nL/day")


_PERCENT = re.compile(r"\s*([+-])?\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*%\s*")


def percent_ppm(text, what="percentage", signed=False):
    """'-10%', '+2.5%', '0%' -> parts per million (-100000, 25000, 0), exact:
    finer than 0.0001 % is refused. A sign only where `signed`."""
    example = "-10%" if signed else "2%"
    ascii_digits(text, what)
    m = _PERCENT.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise UnitError("%s: %r is not a percentage, e.g. %s" % (what, text, example))
    if m.group(1) == "-" and not signed:
        raise UnitError("%s: %r is negative: give a positive value, e.g. %s" % (what, text, example))
    value = Decimal(m.group(2)) * 10_000
    if value != value.to_integral_value():
        raise UnitError("%s: %r is finer than 0.0001 %% (1 ppm)" % (what, text))
    return -int(value) if m.group(1) == "-" else int(value)


def bolus(text, what="bolus"):
    """'0.5mg/10min' -> (dose ng, duration s). The duration needs its number:
    '0.5mg/h' would read as a rate, so it is refused as ambiguous."""
    num, den = _fraction(text, what, "0.5mg/10min")
    if not re.match(r"\s*[\d.]", den):
        raise UnitError("%s: %r is ambiguous: give the duration with a number, e.g. %s/1%s"
                        % (what, text, num.strip(), den.strip()))
    return mass_ng(num, what), duration_s(den, what + " duration")


def time_of_day(text, what="time"):
    ascii_digits(text, what)
    m = _TOD.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise UnitError("%s: %r is not a time of day HH:MM or HH:MM:SS, e.g. 08:00" % (what, text))
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if h > 23 or mi > 59 or s > 59:
        # what is accepted: 00:00 up to 23:59:59 (midnight is the next day's 00:00)
        raise UnitError("%s: %r is not a time of day between 00:00 and 23:59:59 (midnight is 00:00)" % (what, text))
    return h * 3600 + mi * 60 + s


def _assignment(text, what, example):
    if not isinstance(text, str) or text.count("=") != 1:
        raise UnitError("%s: %r must be of the form %s" % (what, text, example))
    return text.split("=")


def step(text):
    t, rate = _assignment(text, "step", "08:00=5mg/day")
    return [time_of_day(t, "step time"), rate_ng_day(rate, "step dose")]


def periodic(text):
    t, b = _assignment(text, "periodic bolus", "12:00=0.5mg/10min")
    dose, dur = bolus(b, "periodic bolus")
    return [time_of_day(t, "periodic bolus time"), dose, dur]


def demand(text):
    """'0.2mg/5min,lockout=30min,max=4' -> [dose ng, duration s, lockout s, max/day].
    Lockout and maximum have no defaults: both must be given."""
    if not isinstance(text, str):
        raise UnitError("demand: expected text like 0.2mg/5min,lockout=30min,max=4")
    parts = [p.strip() for p in text.split(",")]
    dose, dur = bolus(parts[0], "demand bolus")
    opts = {}
    for p in parts[1:]:
        k, v = _assignment(p, "demand", "lockout=30min")
        k = k.strip()
        if k not in ("lockout", "max") or k in opts:
            raise UnitError("demand: %r: expected lockout=DURATION and max=COUNT once each" % p)
        opts[k] = v.strip()
    if set(opts) != {"lockout", "max"}:
        raise UnitError("demand: give both lockout and max, e.g. 0.2mg/5min,lockout=30min,max=4")
    if not (ascii_digits(opts["max"], "demand max") and opts["max"].isdigit()):
        raise UnitError("demand: max=%r must be a whole number of boluses per 24 h" % opts["max"])
    return [dose, dur, duration_s(opts["lockout"], "demand lockout"), _bounded(int(opts["max"]), "demand max", "per day")]


def drug_name(text):
    if text is None or not str(text).strip():
        raise UnitError("the drug is missing: name one of %s" % ", ".join(sorted(limits.DRUGS)))
    name = str(text).strip().lower()
    if name not in limits.DRUGS:
        raise UnitError("unknown drug %r (known: %s)" % (text, ", ".join(sorted(limits.DRUGS))))
    return name


def prescription(drug, conc, dose=None, steps=(), periodic_=(), demand_=None):
    """The link's compact prescription from clinician-unit text. Structure is
    checked here (nothing is sent otherwise); the hard limits by the pump."""
    rx = {"drug": drug_name(drug), "conc": conc_ng_ml(conc)}
    if (dose is None) == (not steps):
        raise UnitError("give either --dose (continuous) or --step (flex), not both or neither")
    rows = [[0, rate_ng_day(dose)]] if dose is not None else sorted(step(s) for s in steps)
    times = [r[0] for r in rows]
    if times[0] != 0:
        raise UnitError("flex steps cover the whole day: the first step starts at 00:00")
    if len(set(times)) != len(times):
        raise UnitError("two flex steps start at the same time")
    rx["steps"] = rows
    per = sorted(periodic(p) for p in periodic_)
    if len({p[0] for p in per}) != len(per):
        raise UnitError("two periodic boluses at the same time")
    if per:
        rx["periodic"] = per
    if demand_ is not None:
        rx["demand"] = demand(demand_)
    return rx


_FILE_KEYS = {"drug", "conc", "dose", "steps", "periodic", "demand"}
_FW_KEYS = {"drug", "conc_ng_ml", "steps", "periodic", "demand"}


def prescription_file(path):
    """A prescription from JSON: clinician units with the command-line syntax
    {"drug": "morphine", "conc": "10mg/mL", "steps": ["00:00=3mg/day", ...],
     "periodic": ["12:00=0.5mg/10min"], "demand": "0.2mg/5min,lockout=30min,max=4"}
    ("dose": "4mg/day" instead of steps for continuous), or the firmware's
    integer form {"drug", "conc_ng_ml", "steps": [{"start_s", "dose_ng_day"}], ...}."""
    try:
        data = paths.loads_json(paths.read_text(path, "prescription file"))
    except paths.InputFileError as e:
        raise UnitError(str(e))
    except paths.DuplicateKeyError as e:
        raise UnitError("prescription file %s: %s" % (path, e))
    except ValueError as e:
        raise UnitError("prescription file %s is not JSON: %s" % (path, e))
    return prescription_data(data, "prescription file %s" % path)


def prescription_data(data: Any, where: str) -> dict[str, Any]:
    """The link's compact prescription from parsed JSON in either form (see
    prescription_file); `where` starts every message."""
    if not isinstance(data, dict):
        raise UnitError("%s: expected a JSON object" % where)
    try:
        if "conc_ng_ml" in data:
            return _firmware_form(data, where)
        unknown = set(data) - _FILE_KEYS
        if unknown:
            raise UnitError("unknown keys %s (allowed: %s)" % (", ".join(sorted(unknown)), ", ".join(sorted(_FILE_KEYS))))
        for k in ("steps", "periodic"):
            if not isinstance(data.get(k, []), list):
                raise UnitError("%r must be a list of strings" % k)
        return prescription(data.get("drug"), data.get("conc"), data.get("dose"), data.get("steps", []),
                            data.get("periodic", []), data.get("demand"))
    except UnitError as e:
        raise UnitError("%s: %s" % (where, e)) from None


def firmware_prescription(rx: dict[str, Any]) -> dict[str, Any]:
    """The compact prescription in the firmware's own form (the emulator's --prescription)."""
    out: dict[str, Any] = {"drug": rx["drug"], "conc_ng_ml": rx["conc"],
                           "steps": [{"start_s": t, "dose_ng_day": d} for t, d in rx["steps"]]}
    if rx.get("periodic"):
        out["periodic"] = [{"time_s": t, "dose_ng": d, "duration_s": s} for t, d, s in rx["periodic"]]
    if rx.get("demand"):
        out["demand"] = dict(zip(("dose_ng", "duration_s", "lockout_s", "max_per_day"), rx["demand"]))
    return out


def labelled_rx(rx: "dict[str, Any] | None") -> "dict[str, Any] | None":
    """A prescription as --json gives it: the labelled firmware form (None: none)."""
    return firmware_prescription(rx) if rx else None


def labelled_segments(segments):
    """Catheter segments [[length_mm, volume_nl], ...] as --json gives them."""
    return [{"length_mm": mm, "volume_nl": nl} for mm, nl in segments]


def labelled_payload(payload: Any) -> Any:
    """A request's payload (or a list of them) as --json shows it: its
    prescription and catheter segments labelled; the link's stays compact."""
    if isinstance(payload, list):
        return [labelled_payload(p) for p in payload]
    if not isinstance(payload, dict):
        return payload
    out = dict(payload)
    if "rx" in out:
        out["rx"] = labelled_rx(out["rx"])
    if "segments" in out:
        out["segments"] = labelled_segments(out["segments"])
    return out


_FW_UNITS = {"conc_ng_ml": "ng/mL", "start_s": "s", "dose_ng_day": "ng/day", "time_s": "s", "dose_ng": "ng",
             "duration_s": "s", "lockout_s": "s", "max_per_day": "per day"}


def _int(v, what):
    if type(v) is not int or v < 0:
        raise UnitError("%s must be a non-negative integer, got %r" % (what, v))
    return _bounded(v, what, _FW_UNITS.get(what, ""))


def _firmware_form(d, where):
    unknown = set(d) - _FW_KEYS
    if unknown:
        raise UnitError("unknown keys %s (allowed: %s)" % (", ".join(sorted(unknown)), ", ".join(sorted(_FW_KEYS))))
    try:
        rx = {"drug": drug_name(d["drug"]), "conc": _int(d["conc_ng_ml"], "conc_ng_ml"),
              "steps": [[_int(s["start_s"], "start_s"), _int(s["dose_ng_day"], "dose_ng_day")] for s in d["steps"]]}
        per = [[_int(b["time_s"], "time_s"), _int(b["dose_ng"], "dose_ng"), _int(b["duration_s"], "duration_s")]
               for b in d.get("periodic", [])]
        if per:
            rx["periodic"] = per
        dem = d.get("demand")
        if dem is not None:
            rx["demand"] = [_int(dem[k], k) for k in ("dose_ng", "duration_s", "lockout_s", "max_per_day")]
    except (KeyError, TypeError) as e:
        raise UnitError("malformed firmware prescription (%s missing or of the wrong type)" % e)
    return rx


def pump_identity(serial, model):
    """Checks an implant's --serial and --model as the pump does (None: not given)."""
    if serial is not None and not (0 < len(serial) <= fw_implant.SERIAL_MAX and fw_implant.is_serial(serial)):
        raise UnitError("serial %r: 1 to %d letters, digits, '-', '_' or '.' (it names the pump's keys and "
                        "reports)" % (serial, fw_implant.SERIAL_MAX))
    if model is not None and not (0 < len(model) <= fw_implant.SERIAL_MAX and limits.is_plain_text(model)):
        raise UnitError("model %r: 1 to %d characters on one line" % (model, fw_implant.SERIAL_MAX))


def diary_note(text):
    """Checks a diary note as the pump does."""
    if len(text.encode()) > lc.NOTE_MAX:
        raise UnitError("note is too long for the pump: %d bytes, at most %d (a plain letter is one, an accented "
                        "letter two, a symbol up to four): shorten it" % (len(text.encode()), lc.NOTE_MAX))
    if not limits.is_plain_text(text):
        raise UnitError("note %r: one line of text, without a line break, tab or other control character" % text)
    return text


def catheter_segments(text):
    """'500mm:120uL,300mm:80uL' (pump end first) -> [[500, 120000], [300, 80000]]."""
    segs = []
    for part in (text or "").split(","):
        length, sep, vol = part.strip().partition(":")
        if not sep:
            raise UnitError("catheter segment %r: LENGTH:VOLUME, e.g. 500mm:120uL" % part.strip())
        typed = length.strip()  # echoed as typed
        ascii_digits(typed, "catheter length")
        length = typed.lower()
        scale = 10 if length.endswith("cm") else 1
        num = length[:-2] if length.endswith(("mm", "cm")) else None
        if num is None or not num.strip().isdigit():
            raise UnitError("catheter length %r: whole mm or cm, e.g. 500mm" % typed)
        mm = _bounded(int(num) * scale, "catheter segment length", "mm", typed)
        nl = volume_nl(vol.strip(), "catheter segment volume")
        if not mm or not nl:
            raise UnitError("catheter segment %r: a segment has a length and holds a volume (from the catheter's "
                            "label), neither zero" % part.strip())
        if mm > fw_implant.SEGMENT_LENGTH_MAX_MM:
            raise UnitError("catheter segment %r: at most %d mm long" % (part.strip(), fw_implant.SEGMENT_LENGTH_MAX_MM))
        segs.append([mm, nl])
    # The pump's own limits (firmware/implant.py), checked here too: the
    # implant test would otherwise stop at its catheter step half done.
    if len(segs) > fw_implant.MAX_SEGMENTS:
        raise UnitError("catheter: at most %d segments" % fw_implant.MAX_SEGMENTS)
    total = sum(nl for _, nl in segs)
    if total > limits.CATHETER_VOLUME_MAX_NL:
        raise UnitError("catheter: %s in all, more than the %s a catheter may hold: check the volumes on its label"
                        % (fmt_volume(total, 4), fmt_volume(limits.CATHETER_VOLUME_MAX_NL)))
    return segs


EPOCH = datetime.date(1970, 1, 1)
LAST_DATE = EPOCH + datetime.timedelta(days=events.DAY_MAX)  # the last date the pump's records can carry


def _pump_day(d, text):
    if not EPOCH <= d <= LAST_DATE:
        raise UnitError("date %r is outside the dates the pump keeps (%s to %s)" % (text, EPOCH, LAST_DATE))
    return (d - EPOCH).days


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def parse_date(text):
    """'2025-06-01' -> day number since 1970-01-01; no other form (the compact
    20250601 or the week date 2025-W22-7 could be misread)."""
    try:
        if not _DATE.fullmatch(text.strip()):
            raise ValueError(text)
        d = datetime.date.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise UnitError("date %r is not YYYY-MM-DD: give it as e.g. 2025-06-01" % (text,))
    return _pump_day(d, text)


# The pump's clock is local time with no zone: a date and a time of day,
# exactly these forms (docs/pumpctl.md, section 8). Anything else that
# datetime.fromisoformat also takes could be read two ways and is refused: a
# zone offset or Z (the pump cannot keep one: which local time was meant?), a
# date alone (midnight?), a week date, the compact form, the hour alone,
# fractions of a second (cut off?).
DATETIME_FORMAT = "YYYY-MM-DDTHH:MM[:SS]"
DATETIME_EXAMPLE = "2025-06-01T08:00"
_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?", re.ASCII)
_ZONE = re.compile(r"(.*\d)(Z|[+-]\d{2}(?::?\d{2})?)", re.ASCII | re.IGNORECASE)


def parse_datetime(text):
    """'2025-06-01T08:30', '2025-06-01T08:30:00' or 'now' (this computer's
    local time) -> (day, tod_s). Every other form is refused."""
    if text == "now":
        t = datetime.datetime.now()
        return _pump_day(t.date(), text), t.hour * 3600 + t.minute * 60 + t.second
    given = text.strip() if isinstance(text, str) else text
    m = _DATETIME.fullmatch(given) if isinstance(given, str) else None
    if m is None:
        zone = _ZONE.fullmatch(given) if isinstance(given, str) else None
        if zone and _DATETIME.fullmatch(zone.group(1)):
            raise UnitError("time %r has a time zone (%s): the pump clock is local time without a zone; give the "
                            "date and time as a clock where the patient lives reads them, %s with no offset or Z "
                            "(e.g. %s if that is the local time), or 'now' for this computer's local time"
                            % (text, zone.group(2), DATETIME_FORMAT, zone.group(1)))
        raise UnitError("time %r is not %s or 'now': give the pump's local date and time, e.g. %s or %s:30"
                        % (text, DATETIME_FORMAT, DATETIME_EXAMPLE, DATETIME_EXAMPLE))
    year, month, day, hour, minute, second = (int(g or 0) for g in m.groups())
    try:
        t = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError as e:
        raise UnitError("time %r is not a date and time that exists (%s): give it as %s, e.g. %s"
                        % (text, e, DATETIME_FORMAT, DATETIME_EXAMPLE)) from None
    return _pump_day(t.date(), text), t.hour * 3600 + t.minute * 60 + t.second


# -- formatting: the one home of every figure pumpctl shows ----------------------
def drug_unit(drug):
    """mg for drugs dosed in milligrams a day, µg for the potent ones."""
    daily = limits.DRUGS.get(drug or "", (0, 10**7, 0))[1]
    return "mg" if daily >= 10**7 else "µg"


def decimal_text(value, places=None, strip=True):
    """`value` (int, Fraction or Decimal) as a decimal number. Without
    `places`: exact when it has at most 6 decimals (every figure the pump
    counts in ng or nL does), else rounded to 6. With `places`: rounded half
    away from zero to that many decimals (averages, projections); trailing
    zeros stripped unless strip=False."""
    q = Fraction(value)
    if places is None:
        places = 6
        strip = True
    n = math.floor(abs(q) * 10**places + Fraction(1, 2))
    whole, frac = divmod(n, 10**places)
    s = "%d.%0*d" % (whole, places, frac) if places else "%d" % whole
    if strip and places:
        s = s.rstrip("0").rstrip(".")
    return ("-" if q < 0 and n else "") + s


def _dec(value, scale):
    return decimal_text(Fraction(value) / scale)


def fmt_mass(ng, unit, places=None):
    """A mass in the drug's unit: exact (the pump's own figure) unless
    `places` rounds it."""
    if ng is None:
        return "-"
    return "%s %s" % (decimal_text(Fraction(ng) / MASS_NG[unit], places), unit)


def mass_value(ng, unit):
    """A mass in ng as a number of `unit` (mg, µg, ...), for charts."""
    return ng / MASS_NG[unit]


def fmt_conc(ng_ml, unit):
    return "%s %s/mL" % (_dec(ng_ml, MASS_NG[unit]), unit)


def fmt_volume(nl, decimals=3):
    """A volume rounded to `decimals` of mL (half away from zero), every
    decimal shown: 0.563 mL."""
    if nl is None:
        return "-"
    return "%s mL" % decimal_text(Fraction(nl) / NL_PER_ML, decimals, strip=False)


def fmt_ml(nl, signed=False):
    """A volume exactly as the pump counts it (0.5 µL strokes): at least 3
    decimals of mL, more when needed, so that figures shown side by side add
    up (expected - withdrawn = discrepancy)."""
    if nl is None:
        return "-"
    text = decimal_text(Fraction(nl) / NL_PER_ML)
    whole, _, frac = text.partition(".")
    text = "%s.%s" % (whole, frac.ljust(3, "0"))
    return ("+" if signed and nl > 0 else "") + text + " mL"


def ml_number(nl):
    """A volume in mL as a bare number for a command line: 0.2 (for `--volume 0.2mL`)."""
    return decimal_text(Fraction(nl) / NL_PER_ML)


def fmt_tod(s):
    s = int(s)
    return "%02d:%02d" % (s // 3600, s // 60 % 60) + (":%02d" % (s % 60) if s % 60 else "")


def fmt_duration(s):
    if s is None:
        return "-"
    s = int(s)
    if s < 120:
        return "%d s" % s
    if s % S_PER_DAY == 0 and s >= 2 * S_PER_DAY:
        return "%d days" % (s // S_PER_DAY)
    if s % 3600 == 0:
        return "%d h" % (s // 3600)
    if s < 7200:
        return "%d min" % (s // 60) + (" %d s" % (s % 60) if s % 60 else "")
    return "%d h %02d min" % (s // 3600, s // 60 % 60)


def fmt_pain(p):
    """A pain score (0-10) or its mean, to one decimal."""
    return "-" if p is None else decimal_text(p, 1)


def fmt_score(x):
    """A mean score to two decimals (a trial's pain scores)."""
    return "-" if x is None else decimal_text(x, 2)


def fmt_pct(p, places=1):
    """A signed percentage, rounded to `places` decimals (half away from zero): +8.0 %, -10.00 %."""
    if p is None:
        return "-"
    return ("+" if p > 0 else "") + decimal_text(p, places, strip=False) + " %"


def fmt_rate_volume(nl_day):
    """A flow rate by volume: 1.000 mL/day, 0.048 mL/day (exact when it needs more decimals)."""
    return "-" if nl_day is None else fmt_ml(nl_day) + "/day"


def fmt_date(day):
    if not day:
        return "-"
    return (EPOCH + datetime.timedelta(days=int(day))).isoformat()


def fmt_datetime(day, tod_s):
    return "%s %s" % (fmt_date(day), fmt_tod(tod_s))


def date_after(day, tod_s, secs):
    """The calendar date `secs` after (day, tod_s); None stays None."""
    if secs is None:
        return None
    return day + (tod_s + secs) // S_PER_DAY
