"""Human-readable views of what the pump reports: plain-text tables, drug and
volume units side by side. Pure functions of reply payloads (no I/O)."""
import re
from decimal import Decimal

from pumpctl import units as u
from pumpctl.fw import alarms, events, fw_units, limits
from pumpctl.fw import link_commands as lc

BOLUS_KINDS = {0: "none", 1: "basal", 2: "bridge", 3: "clinician", 4: "priming", 5: "demand", 6: "periodic"}


def table(rows, headers=None):
    rows = [[str(c) for c in r] for r in rows]
    if headers:
        rows = [list(headers)] + rows
    if not rows:
        return ""
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(len(r) for r in rows))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        if headers and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- prescriptions ----------------------------------------------------------------
def _rate(ng_day, conc, unit):
    return "%s/day (%s/day)" % (u.fmt_mass(ng_day, unit), u.fmt_volume(fw_units.dose_to_volume_nl(ng_day, conc)))


def _bolus(dose_ng, dur_s, conc, unit):
    return "%s over %s (%s)" % (u.fmt_mass(dose_ng, unit), u.fmt_duration(dur_s),
                                u.fmt_volume(fw_units.dose_to_volume_nl(dose_ng, conc)))


def _rate_at(rx, tod):
    if rx is None:
        return None
    rate = None
    for start, dose in rx["steps"]:
        if start <= tod:
            rate = dose
    return rate


def therapy_rows(rx, unit):
    """One column of the therapy: {row label: text}."""
    if rx is None:
        return {}
    conc = rx["conc"]
    col = {"drug": "%s %s" % (rx["drug"], u.fmt_conc(conc, unit))}
    for start, dose in rx["steps"]:
        col["basal from %s" % u.fmt_tod(start)] = _rate(dose, conc, unit)
    for t, dose, dur in rx.get("periodic", []):
        col["periodic %s" % u.fmt_tod(t)] = _bolus(dose, dur, conc, unit)
    d = rx.get("demand")
    col["demand"] = ("%s, lockout %s, max %d/24 h" % (_bolus(d[0], d[1], conc, unit), u.fmt_duration(d[2]), d[3])
                     if d else "-")
    return col


def compare(cur, new, cur_extra, new_extra, unit):
    """Rows for the review screen: current and new side by side. The basal
    rows are the union of both profiles' step times, each side showing the
    rate in effect from that time."""
    times = sorted({s[0] for rx in (cur, new) if rx for s in rx["steps"]})
    rows = []
    c, n = therapy_rows(cur, unit), therapy_rows(new, unit)
    rows.append(["drug", c.get("drug", "-"), n.get("drug", "-")])
    for t in times:
        cells = []
        for rx in (cur, new):
            r = _rate_at(rx, t)
            cells.append(_rate(r, rx["conc"], unit) if r is not None else "-")
        rows.append(["basal from %s" % u.fmt_tod(t)] + cells)
    per = sorted({k for k in list(c) + list(n) if k.startswith("periodic")})
    for k in per:
        rows.append([k, c.get(k, "-"), n.get(k, "-")])
    rows.append(["demand", c.get("demand", "-"), n.get("demand", "-")])
    for label, key in (("24-h maximum", "total"), ("projected empty", "empty")):
        rows.append([label, cur_extra.get(key, "-"), new_extra.get(key, "-")])
    return table(rows, ["", "current", "new"])


def total_text(daily_ng, daily_nl, unit):
    if daily_ng is None:
        return "-"
    return "%s/day (%s/day)" % (u.fmt_mass(daily_ng, unit), u.fmt_volume(daily_nl))


# -- status and the full report ------------------------------------------------
def status_text(ident, st):
    unit = u.drug_unit(st.get("drug"))
    day, tod = st["day"], st["tod_s"]
    low = u.date_after(day, tod, st.get("low_in_s"))
    empty = u.date_after(day, tod, st.get("empty_in_s"))
    rows = [
        ["pump", "%s (%s, firmware %s)" % (ident["serial"], ident["model"], ident["firmware"])],
        ["clock", u.fmt_datetime(day, tod)],
        ["state", st["state"]],
        ["drug", "%s %s" % (st["drug"], u.fmt_conc(st["conc_ng_ml"], unit)) if st.get("drug") else "-"],
        ["reservoir", "%s of %s" % (u.fmt_volume(st["remaining_nl"]), u.fmt_volume(st["capacity_nl"]))],
        ["low reservoir", "at %s, projected %s" % (u.fmt_volume(st["low_nl"]), u.fmt_date(low))],
        ["projected empty", u.fmt_date(empty) + " (every allowed bolus used)"],
        ["alarm date", u.fmt_date(st.get("alarm_day"))],
        ["battery", "%d mV" % st["battery_mv"]],
        ["bolus", _bolus_state(st.get("bolus"), ident)],
        ["alarms", ", ".join(alarms.NAMES[a] for a in st["alarms"]) or "none"],
    ]
    if st.get("drug"):
        conc = st["conc_ng_ml"]
        rows += [
            ["delivered today", _dose_and_volume(st["today_dose_nl"], conc, unit, st["today_nl"])],
            ["last 24 h", _dose_and_volume(st["last_24h_dose_nl"], conc, unit, st["last_24h_nl"])],
            ["delivered total", "%s, %s drug" % (u.fmt_volume(st["delivered_nl"]),
                                                 u.fmt_mass(st["drug_delivered_ng"], unit))],
        ]
    return table(rows)


def _dose_and_volume(dose_nl, conc, unit, volume_nl):
    return "%s (%s)" % (u.fmt_mass(fw_units.volume_to_dose_ng(dose_nl, conc), unit), u.fmt_volume(volume_nl))


def _bolus_state(b, ident):
    if not b:
        return "none"
    return "%s, %s left" % (BOLUS_KINDS.get(b["kind"], b["kind"]),
                            u.fmt_volume(b["strokes_left"] * ident.get("stroke_nl", 0)))


def therapy_text(th):
    rx = th.get("rx")
    if rx is None:
        return "no therapy programmed"
    unit = u.drug_unit(rx["drug"])
    col = therapy_rows(rx, unit)
    rows = [[k, v] for k, v in col.items()]
    rows.append(["24-h maximum", total_text(th.get("daily_ng"), th.get("max_daily_nl"), unit)])
    rows.append(["catheter volume", u.fmt_volume(th.get("catheter_nl", 0))])
    if th.get("bridging"):
        rows.append(["bridge bolus", "in progress (old drug still in the catheter)"])
    return table(rows)


def alarms_text(rows):
    if not rows:
        return "no active alarms"
    return table([[a[0], a[1], "critical" if a[2] else "", "silenced %s" % u.fmt_duration(a[3]) if a[3] else ""]
                  for a in rows], ["id", "alarm", "priority", "tone"])


# -- event log ----------------------------------------------------------------------
def event_name(etype, text=b""):
    # The link's records share a type with an older one until events.py has
    # their own (link_commands.EV_*): their text says what they are.
    t = text.decode("utf-8", "replace")
    if etype in (lc.EV_SESSION_END, lc.EV_REJECTED, lc.EV_PROVISIONED) and t.startswith(("link ", "session ")):
        return t
    if etype == lc.EV_COMMAND and (lc.EV_COMMAND != events.AUTH_OK or t not in lc.ROLE_NAMES):
        return "command " + t
    return events.NAMES.get(etype, "type %d" % etype)


def log_rows(recs):
    rows = []
    for seq, day, tod, etype, a, b, c, d, text in recs:
        rows.append([seq, u.fmt_datetime(day, tod), event_name(etype, text), a, b, c, d,
                     text.decode("utf-8", "replace")])
    return rows


LOG_HEADERS = ["seq", "time", "event", "a", "b", "c", "d", "text"]


# -- limits, in clinical units ---------------------------------------------------
# The pump explains a refusal in its own integer units (nL, ng, ng/mL, s);
# these turn its reason into clinical units, say the allowed range and what to
# do next. The limit names are firmware/limits.py's (docs/limits.md).
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+) (nL/day|nL|ng/mL|ng/day|ng|s)\b")
_VALUE = re.compile(r"(?<![\d.])(\d+) (nL/day|nL|ng/mL|ng/day|ng|s)\b")
_BASAL = re.compile(r"\bbasal (\d+) exceeds")

NEXT_STEP = {
    "rate": "choose a dose that stays within the pump's rate range at this concentration, or a bolus over a "
            "longer time",
    "daily_max": "lower a step, a periodic bolus or the demand bolus (dose or number a day) so the 24-hour "
                 "maximum stays within the drug's limit",
    "bolus_max": "give a smaller bolus dose",
    "bolus_min": "give a larger dose: at least one 0.5 µL stroke",
    "bolus_duration": "give a duration between 1 min and 24 h (a demand bolus no longer than its lockout)",
    "concentration": "check the concentration against the drug's label and docs/limits.md",
    "concentration_change": "a drug or concentration change goes with a refill: pumpctl refill --withdrawn ... "
                            "--added ... --drug ... --conc ...",
    "overfill": "add no more than the reservoir holds (see `pumpctl status`)",
    "added": "add a volume within the range shown",
    "withdrawn": "give the volume you actually drew out, at most the reservoir's capacity",
    "low_threshold": "choose a threshold within the range shown",
    "priming_volume": "prime at most 1 mL (the catheter's volume)",
    "lockout": "give a lockout between 15 min and 24 h",
    "demand_per_day": "allow between 1 and 24 demand boluses a day",
    "bolus_active": "wait until the running bolus ends (`pumpctl status` shows it)",
    "not_running": "start or resume therapy first (`pumpctl status`, `pumpctl resume`)",
    "not_programmed": "program a therapy first (`pumpctl program`, or a refill with its prescription)",
    "alarm": "resolve the alarm's cause, acknowledge it (`pumpctl alarms --ack`), then resume",
    "first_fill": "the pump has been filled before: use `pumpctl refill`",
    "drug": "use one of the known drugs",
    "steps": "give 1 to 10 flex steps",
    "periodic": "give at most 8 periodic boluses",
}


def clinical_reason(reason, drug=None):
    """The pump's reason with every number in nL, ng, ng/mL or s in clinical units."""
    unit = u.drug_unit(drug) if drug in limits.DRUGS else None
    text = _BASAL.sub(r"basal \1 nL/day exceeds", reason or "")
    text = _RANGE.sub(lambda m: _range_text(int(m.group(1)), int(m.group(2)), m.group(3), unit), text)
    return _VALUE.sub(lambda m: u.fmt_pump_value(int(m.group(1)), m.group(2), unit), text)


def _range_text(lo, hi, what, unit=None):
    if lo <= 1 and what != "s":  # 0 or 1 ng / nL: "at most"
        return "the allowed range (at most %s)" % u.fmt_pump_value(hi, what, unit)
    return "%s to %s" % (u.fmt_pump_value(lo, what, unit), u.fmt_pump_value(hi, what, unit))


def clinical_hint(limit, reason, drug=None, conc_ng_ml=None):
    """A line that says the allowed range in clinician units, or None."""
    unit = u.drug_unit(drug) if drug else "mg"
    if limit == "rate" and conc_ng_ml and drug in limits.DRUGS and "on top of" not in (reason or ""):
        # From the limits themselves, whatever the wording of the pump's reason.
        lo = fw_units.volume_to_dose_ng(limits.RATE_MIN_NL_DAY, conc_ng_ml)
        hi = fw_units.volume_to_dose_ng(limits.RATE_MAX_NL_DAY, conc_ng_ml)
        daily = limits.DRUGS[drug][1]
        return "allowed daily dose at %s: %s/day to %s/day (the pump moves %s/day to %s/day%s)" % (
            u.fmt_conc(conc_ng_ml, unit), u.fmt_mass(lo, unit), u.fmt_mass(min(hi, daily), unit),
            u.fmt_volume(limits.RATE_MIN_NL_DAY), u.fmt_volume(limits.RATE_MAX_NL_DAY),
            "; %s's 24-hour maximum is %s/day" % (drug, u.fmt_mass(daily, unit)) if daily < hi else "")
    m = _RANGE.search(reason or "")
    if m:
        lo, hi, what = int(m.group(1)), int(m.group(2)), m.group(3)
        fmt = {"nL/day": lambda v: u.fmt_volume(v, 3) + "/day", "nL": lambda v: u.fmt_volume(v, 4),
               "ng/mL": lambda v: u.fmt_conc(v, unit), "ng": lambda v: u.fmt_mass(v, unit),
               "ng/day": lambda v: u.fmt_mass(v, unit) + "/day", "s": u.fmt_duration}[what]
        if lo > 1 or what == "s":
            hint = "allowed range: %s to %s" % (fmt(lo), fmt(hi))
        else:
            hint = "allowed: at most %s" % fmt(hi)
        if what == "nL/day" and conc_ng_ml:
            dose_lo = fw_units.volume_to_dose_ng(lo, conc_ng_ml)
            dose_hi = fw_units.volume_to_dose_ng(hi, conc_ng_ml)
            capped = ""
            if drug in limits.DRUGS and limits.DRUGS[drug][1] < dose_hi:
                dose_hi = limits.DRUGS[drug][1]  # the drug's 24-hour maximum is the lower bound
                capped = ", the %s 24-hour maximum" % drug
            hint += " (%s/day to %s/day at %s%s)" % (u.fmt_mass(dose_lo, unit), u.fmt_mass(dose_hi, unit),
                                                      u.fmt_conc(conc_ng_ml, unit), capped)
        return hint
    if drug in limits.DRUGS and limit in ("daily_max", "concentration", "bolus_max", "concentration_change"):
        conc, daily, bolus = limits.DRUGS[drug]
        return ("limits for %s: concentration up to %s, 24-hour maximum %s/day (highest step all day + "
                "periodic + every demand bolus), single bolus up to %s"
                % (drug, u.fmt_conc(conc, unit), u.fmt_mass(daily, unit), u.fmt_mass(bolus, unit)))
    if limit == "drug":
        return "known drugs: %s" % ", ".join(sorted(limits.DRUGS))
    return None


def refusal_lines(name, limit, reason, drug=None, conc_ng_ml=None):
    """What a clinician reads for a refusal: the reason in clinical units
    naming the limit, the allowed range, and what to do next."""
    lines = ["pump refused: %s%s: %s" % (name, " (%s)" % limit if limit else "", clinical_reason(reason, drug))]
    hint = clinical_hint(limit, reason, drug, conc_ng_ml)
    if hint:
        lines.append("  " + hint)
    if limit in NEXT_STEP:
        lines.append("  what to do: " + NEXT_STEP[limit])
    return lines


def decimal_ml(nl):
    return format((Decimal(nl) / 10**6).normalize(), "f")
