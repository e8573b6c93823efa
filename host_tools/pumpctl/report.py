"""Human-readable views of what the pump reports: plain-text tables, drug and
volume units side by side. Pure functions of reply payloads (no I/O)."""
import re
from decimal import Decimal
from fractions import Fraction

from pumpctl import units as u
from pumpctl.console import table
from pumpctl.fw import alarms, events, fw_units, limits
from pumpctl.fw import link_commands as lc
from pumpctl.fw import wire

BOLUS_KINDS = {0: "none", 1: "basal", 2: "bridge", 3: "clinician", 4: "priming", 5: "demand", 6: "periodic",
               7: "uncommanded"}


# -- prescriptions ----------------------------------------------------------------
def _rate(ng_day, conc, unit):
    return "%s/day (%s/day)" % (u.fmt_mass(ng_day, unit), u.fmt_volume(fw_units.dose_to_volume_nl(ng_day, conc)))


def _bolus(dose_ng, dur_s, conc, unit):
    return "%s over %s (%s)" % (u.fmt_mass(dose_ng, unit), u.fmt_duration(dur_s),
                                u.fmt_volume(fw_units.dose_to_volume_nl(dose_ng, conc)))


def _unit_of(rx, unit=None):
    # A drug's figures in its own unit, whatever another drug beside it uses.
    return u.drug_unit(rx["drug"]) if rx and rx.get("drug") in limits.DRUGS else (unit or "mg")


def _rate_at(rx, tod):
    if rx is None:
        return None
    rate = None
    for start, dose in rx["steps"]:
        if start <= tod:
            rate = dose
    return rate


def therapy_rows(rx, unit=None):
    """One column of the therapy: {row label: text}, in the drug's own unit
    (mg or µg: `unit` only for a drug pumpctl does not know)."""
    if rx is None:
        return {}
    unit = _unit_of(rx, unit)
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


COMPARE_HEADERS = ("", "current", "new", "")


def compare(cur, new, cur_extra, new_extra, unit):
    """The review screen: current and new side by side (compare_rows) as a table."""
    return table(compare_rows(cur, new, cur_extra, new_extra, unit), list(COMPARE_HEADERS))


def compare_rows(cur, new, cur_extra, new_extra, unit):
    """Rows for the review screen: current and new side by side, and what
    changes marked in the fourth cell. The basal rows are the union of both
    profiles' step times, each side showing the rate in effect from that time."""
    times = sorted({s[0] for rx in (cur, new) if rx for s in rx["steps"]})
    rows = []
    c, n = therapy_rows(cur, unit), therapy_rows(new, unit)
    rows.append(["drug", c.get("drug", "-"), n.get("drug", "-")])
    for t in times:
        cells = []
        for rx in (cur, new):
            r = _rate_at(rx, t)
            cells.append(_rate(r, rx["conc"], _unit_of(rx, unit)) if r is not None else "-")
        rows.append(["basal from %s" % u.fmt_tod(t)] + cells)
    per = sorted({k for k in list(c) + list(n) if k.startswith("periodic")})
    for k in per:
        rows.append([k, c.get(k, "-"), n.get(k, "-")])
    rows.append(["demand", c.get("demand", "-"), n.get("demand", "-")])
    for label, key in (("24-h maximum", "total"), ("projected empty", "empty")):
        rows.append([label, cur_extra.get(key, "-"), new_extra.get(key, "-")])
    for r in rows:  # mark what changes
        r.append(_change_mark(r, cur, new) if r[1] != r[2] else "")
    return rows


def _change_mark(row, cur, new):
    if row[0] == "drug" and cur and new:
        if cur["drug"] != new["drug"]:
            return "<< DRUG CHANGE"
        if cur["conc"] != new["conc"]:
            return "<< CONCENTRATION CHANGE"
    return "<< changed"


def total_text(daily_ng, daily_nl, unit):
    if daily_ng is None:
        return "-"
    return "%s/day (%s/day)" % (u.fmt_mass(daily_ng, unit), u.fmt_volume(daily_nl))


# -- status and the full report ------------------------------------------------
def _below(st, level):
    # The reservoir is at or below one of its levels (low_nl, residual_nl).
    return st.get(level) is not None and st["remaining_nl"] <= st[level]


def status_text(ident, st, earlier=None):
    return table(status_rows(ident, st, earlier))


def status_rows(ident, st, earlier=None):
    """The status screen's rows [label, text]; `earlier`: the drug before a
    drug change in the last 24 h, when the log names it."""
    unit = u.drug_unit(st.get("drug"))
    day, tod = st["day"], st["tod_s"]
    low = u.date_after(day, tod, st.get("low_in_s"))
    empty = u.date_after(day, tod, st.get("empty_in_s"))
    clock = u.fmt_datetime(day, tod)
    if st.get("clock_uncertain"):
        clock += "  UNCERTAIN (after an unclean reset, or stopped at the last date it keeps): set it " \
                 "(`pumpctl clock --set now`)"
    rows = [
        ["pump", "%s (%s, firmware %s)" % (ident["serial"], ident["model"], ident["firmware"])],
        ["clock", clock],
        ["state", st["state"]],
    ]
    if st.get("fault"):
        rows.append(["fault", "%s (`pumpctl log` has the record; `pumpctl alarms` says what to do)" % st["fault"]])
    rows += [
        ["drug", "%s %s" % (st["drug"], u.fmt_conc(st["conc_ng_ml"], unit)) if st.get("drug") else "-"],
        ["reservoir", "%s of %s" % (u.fmt_volume(st["remaining_nl"]), u.fmt_volume(st["capacity_nl"]))],
        ["low reservoir", "at %s, %s" % (u.fmt_volume(st["low_nl"]), "reached: plan a refill (`pumpctl refill`)"
                                         if _below(st, "low_nl") else "projected " + u.fmt_date(low))],
        ["projected empty", "reached: refill now (`pumpctl refill`)" if _below(st, "residual_nl")
         else u.fmt_date(empty) + " (every allowed bolus used)"],
        ["alarm date", u.fmt_date(st.get("alarm_day"))],
        ["battery", "%d mV" % st["battery_mv"] if isinstance(st.get("battery_mv"), int)
         else "not readable (the pump could not read its battery)"],
    ]
    if "catheter_primed" in st:
        rows.append(["catheter primed", "yes" if st["catheter_primed"] else
                     "NO: drug has not reached the catheter's tip yet; prime it (`pumpctl prime`)"])
    rows += [
        ["bolus", bolus_state(st.get("bolus"), ident, st.get("conc_ng_ml"), unit)],
        ["alarms", ", ".join(alarm_slug(a) for a in alarm_ids(st["alarms"])) or "none"],
    ]
    if st.get("drug"):
        conc = st["conc_ng_ml"]
        today, last = _dose_and_volume(st, "today", conc, unit), _dose_and_volume(st, "last_24h", conc, unit)
        since = st.get("drug_changed_s")
        if since is not None:  # two drugs' doses do not add up: the pump counts this one's since the change
            tod = st["tod_s"] - since
            when = "at %s" % u.fmt_tod(tod) if tod >= 0 else "on %s at %s" % (
                u.fmt_date(st["day"] + tod // fw_units.S_PER_DAY), u.fmt_tod(tod % fw_units.S_PER_DAY))
            both = "the volume: every stroke, the catheter's earlier drug included"
            today = ("%s of %s since the drug change %s" % (today, st["drug"], when) if tod >= 0
                     else "%s of %s (%s)" % (today, st["drug"], both))
            last = "%s of %s since the drug change %s (%s)" % (last, st["drug"], when, both)
        rows += [["delivered today", today], ["last 24 h", last]]
        if st.get("ceiling_24h_ng") is not None:
            rows.append([CEILING_LABEL, ceiling_text(st["drug"], st["ceiling_24h_ng"], ceiling_other(st, earlier))])
        # The volume only: the pump's lifetime drug_delivered_ng adds every
        # drug's mass since the first fill, which means nothing once a refill
        # changed the drug (and the status cannot say whether one did).
        rows.append(["delivered total", "%s since the first fill (each drug's dose: its daily totals, "
                                        "`pumpctl log`)" % u.fmt_volume(st["delivered_nl"])])
    return rows


def daily_maxima(drug):
    """(usual, hard) 24-hour maximum of a drug in ng/day; equal where the
    drug has one figure (docs/limits.md)."""
    soft = limits.DRUGS[drug][1]
    return soft, limits.HARD_DAILY.get(drug, soft)


def maxima_text(drug):
    """'20 mg/day', or '19.2 µg/day (usual; up to 21.6 µg/day with --override)'."""
    if drug not in limits.DRUGS:
        return "-"
    unit = u.drug_unit(drug)
    soft, hard = daily_maxima(drug)
    text = "%s/day" % u.fmt_mass(soft, unit)
    if hard > soft:
        text += " (usual maximum; up to %s/day with --override, never more)" % u.fmt_mass(hard, unit)
    return text


# The status row of the drug's rolling 24-hour ceiling: named apart from a
# therapy's own "24-h maximum" (its basal and boluses), which is lower.
CEILING_LABEL = "drug 24-h max"


def ceiling_text(drug, given_ng, other=None):
    """What the rolling 24-hour ceiling holds: 'given in the last 24 h: 12.5
    mg of 20 mg/day' when it holds this drug only. After a drug change
    (`other`: the earlier drug's name, "" if not known; None: no change in
    the last 24 h) it holds the earlier drug too, each stroke as its share of
    its own drug's maximum, so the figure is a share of the limit, not a dose
    given: '24-hour limit used: 50 % of 25 mg/day (12.494 mg-equivalent of
    hydromorphone, counting the morphine given before the drug change at its
    share of its own maximum)' (docs/pumpctl.md, section 4)."""
    # To 3 decimals: the ceiling counts each stroke in units of the drug's
    # maximum, rounded up, so its figure in mg or µg has no exact meaning beyond.
    if drug not in limits.DRUGS:
        return "given in the last 24 h: %s" % u.fmt_mass(given_ng, "mg", 3)
    if other is None:
        return "given in the last 24 h: %s of %s" % (u.fmt_mass(given_ng, u.drug_unit(drug), 3), maxima_text(drug))
    unit = u.drug_unit(drug)
    soft, hard = daily_maxima(drug)
    of = ("the hard maximum %s/day (usual maximum %s/day)" % (u.fmt_mass(hard, unit), u.fmt_mass(soft, unit))
          if hard > soft else "%s/day" % u.fmt_mass(hard, unit))
    return "%s of %s (%s)" % (_limit_used(given_ng, hard), of, _equivalent(drug, given_ng, other))


def _limit_used(given_ng, hard_ng):
    # Rounded up: the share of the limit is never shown below what it is.
    return "24-hour limit used: %d %%" % -(-max(0, given_ng) * 100 // hard_ng)


def _equivalent(drug, given_ng, other):
    earlier = other or "earlier drug"
    return ("%s-equivalent of %s, counting the %s given before the drug change, and its bridge, at its share of its "
            "own maximum" % (u.fmt_mass(given_ng, u.drug_unit(drug), 3), drug, earlier))


def ceiling_for(drug, given_ng, given_drug, other=None):
    """(given_ng, other) of the ceiling for `drug` from a STATUS figure in
    `given_drug`'s mass (its `ceiling_24h_ng`): at a refill to another drug,
    the same share of the limit in the new drug's mass, the pump's drug
    then being the earlier one."""
    if given_ng is None or not given_drug or given_drug == drug or drug not in limits.DRUGS \
            or given_drug not in limits.DRUGS:
        return given_ng, other
    both = given_drug if not other or other == given_drug else "%s and %s" % (other, given_drug)
    return given_ng * daily_maxima(drug)[1] // daily_maxima(given_drug)[1], both


def ceiling_other(st, earlier=None):
    """`other` for ceiling_text from a STATUS: None while the last 24 h hold
    this drug only, else the earlier drug's name (`earlier`, "" unknown).
    The pump's `drug_changed_s` is there while the change or the bridge's
    strokes of the earlier drug are in the last 24 h."""
    return None if st.get("drug_changed_s") is None else (earlier or "")


def alarm_ids(listing):
    # STATUS lists ids (the link) or the pump's dicts (Pump.status()).
    return [a["id"] if isinstance(a, dict) else a for a in listing or []]


def status_json(st):
    """The pump's STATUS as --json gives it: alarms and the bolus kind by name."""
    b = st.get("bolus")
    return dict(st, alarms=[alarm_slug(a) for a in alarm_ids(st.get("alarms"))],
                bolus=dict(b, kind=BOLUS_KINDS.get(b["kind"], b["kind"])) if b else None)


def _dose_and_volume(st, period, conc, unit):
    # The pump's dose in ng, each stroke at the concentration it was given
    # at; earlier firmware gave the dose's volume only (at the current one).
    dose_ng = st.get(period + "_dose_ng")
    if dose_ng is None:
        dose_ng = fw_units.volume_to_dose_ng(st[period + "_dose_nl"], conc)
    return "%s (%s)" % (u.fmt_mass(dose_ng, unit), u.fmt_volume(st[period + "_nl"]))


def bolus_state(b, ident, conc, unit):
    # What is left to give, as the dose (at the current concentration) and
    # its volume; a priming bolus fills the catheter, so only its volume.
    if not b:
        return "none"
    kind = BOLUS_KINDS.get(b["kind"], b["kind"])
    left_nl = b["strokes_left"] * ident.get("stroke_nl", 0)
    if kind == "priming" or not conc:
        return "%s, %s left" % (kind, u.fmt_volume(left_nl))
    return "%s, %s (%s) left" % (kind, u.fmt_mass(fw_units.volume_to_dose_ng(left_nl, conc), unit),
                                 u.fmt_volume(left_nl))


def therapy_text(th):
    rows = therapy_table_rows(th)
    return table(rows) if rows else "no therapy programmed"


def therapy_table_rows(th):
    """The therapy screen's rows [label, text]; [] with no therapy programmed."""
    rx = th.get("rx")
    if rx is None:
        return []
    unit = u.drug_unit(rx["drug"])
    col = therapy_rows(rx, unit)
    rows = [[k, v] for k, v in col.items()]
    rows.append(["24-h maximum", total_text(th.get("daily_ng"), th.get("max_daily_nl"), unit)])
    rows.append(["catheter volume", u.fmt_volume(th.get("catheter_nl", 0))])
    if th.get("bridging"):
        rows.append(["bridge bolus", "in progress (old drug still in the catheter)"])
    return rows


# -- alarms: one name for each, everywhere ------------------------------------------
ALARM_TODO = {
    alarms.RESERVOIR_EMPTY: "refill the pump (`pumpctl refill`); therapy restarts if it stopped only for this",
    alarms.MOTOR_STALL: "check the pump and the patient; then acknowledge (`pumpctl alarms --ack motor-stall`) and "
                        "resume (`pumpctl resume`); replace the pump if it recurs",
    alarms.OCCLUSION: "check the catheter for a kink or blockage; then acknowledge (`pumpctl alarms --ack occlusion`) "
                      "and resume (`pumpctl resume`)",
    alarms.BATTERY_EOS: "the battery is exhausted: replace the pump now (therapy restarts by itself if the battery "
                        "reads above 2800 mV again)",
    alarms.INTERNAL_FAULT: "read the fault (`pumpctl status`, `pumpctl log`) and report it; then acknowledge and "
                           "resume (`pumpctl resume`)",
    alarms.INTEGRITY: "reprogram the therapy (`pumpctl program`); if the pump lost its state, refill it with the "
                      "prescription (`pumpctl refill ... --drug ... --conc ...`)",
    alarms.DOSE_GUARD: "check the patient and what was delivered (`pumpctl log`); then acknowledge and resume "
                       "(`pumpctl resume`)",
    alarms.RESERVOIR_LOW: "plan a refill (`pumpctl refill`), or change the threshold (`pumpctl low-threshold`)",
    alarms.BATTERY_ERI: "schedule the pump replacement (elective replacement indicator)",
    alarms.ALARM_DATE: "acknowledge it (`pumpctl alarms --ack alarm-date-reached`) or set a new date "
                       "(`pumpctl alarm-date`)",
    alarms.REFILL_DISCREPANCY: "check the patient for over- or under-infusion and the pump, then acknowledge "
                               "(`pumpctl alarms --ack refill-discrepancy`)",
    alarms.FLASH_FAULT: "basal therapy continues, but changes cannot be saved and a running bolus stops (24 strokes "
                        "after its last save): try again later and give the bolus again once it clears (at the next "
                        "successful save); replace the pump if it persists",
    alarms.UNCOMMANDED_MOTION: "the motor moved without a command (counted as delivered): check the patient, then "
                               "acknowledge and resume (`pumpctl resume`); replace the pump if it recurs",
    alarms.CLOCK_UNCERTAIN: "set the pump clock (`pumpctl clock --set now`): until then flex steps and periodic "
                            "boluses follow the clock restored after an unclean reset (or stopped at 2149-06-06, the "
                            "last date it keeps)",
    alarms.STROKE_FAILURES: "the motor failed some strokes (retried: therapy continues); gear wear comes before a "
                            "stall: check the pump (`pumpctl log`), plan its replacement if it recurs, then "
                            "acknowledge (`pumpctl alarms --ack stroke-failures`)",
}
# Critical alarms stop therapy, except these.
ALARM_KEEPS_THERAPY = {alarms.FLASH_FAULT}


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


ALARM_SLUGS = tuple(_slug(n) for n in alarms.NAMES)  # motor-stall, battery-replacement-eri, ...


def alarm_slug(a):
    """The one name pumpctl shows for an alarm (no shell quoting needed)."""
    return ALARM_SLUGS[a] if isinstance(a, int) and 0 <= a < len(ALARM_SLUGS) else "alarm-%s" % a


def alarm_lookup(text):
    """An alarm id from an id, its name (motor-stall) or the pump's own name
    (`motor stall`, any case); None if none matches."""
    t = str(text).strip()
    if t.isdigit():
        return int(t) if int(t) < alarms.COUNT else None
    key = _slug(t)
    return ALARM_SLUGS.index(key) if key in ALARM_SLUGS else None


def alarm_priority(a):
    if not alarms.is_critical(a):
        return "non-critical"
    return "critical, therapy continues" if a in ALARM_KEEPS_THERAPY else "critical, therapy stopped"


def alarm_tone(a, silenced_s=0):
    hz = "%d/%d Hz" % (alarms.TONE_A[a], alarms.TONE_B[a]) if alarms.TONE_A[a] != alarms.TONE_B[a] \
        else "%d Hz" % alarms.TONE_A[a]
    text = "%s %d s, every %s" % (hz, alarms.DURATION_MS[a] // 1000, u.fmt_duration(alarms.REPEAT_S[a]))
    return text + ("; silenced for %s" % u.fmt_duration(silenced_s) if silenced_s else "; sounding")


def alarm_rows(listing, raised_at=None):
    """Labelled alarms from the ALARMS reply ([id, name, critical, silenced_s])
    and, where known, when each was raised {id: (day, tod_s)}."""
    out = []
    for row in listing:
        a, silenced = row[0], row[3]
        when = (raised_at or {}).get(a)
        out.append({"id": a, "name": alarm_slug(a), "text": row[1], "priority": alarm_priority(a),
                    "critical": bool(row[2]), "silenced_s": silenced,
                    "raised_at": u.fmt_datetime(*when) if when else None,
                    "tone": alarm_tone(a, silenced) if 0 <= a < alarms.COUNT else "-",
                    "what_to_do": ALARM_TODO.get(a, "see docs/safety.md")})
    return out


def alarms_text(rows, raised_at=None):
    if not rows:
        return "no active alarms"
    blocks = []
    for r in alarm_rows(rows, raised_at):
        blocks.append(table([
            ["alarm", "%s (id %d)" % (r["name"], r["id"])],
            ["priority", r["priority"]],
            ["raised", r["raised_at"] or "earlier than the log read (see `pumpctl log`)"],
            ["tone", r["tone"]],
            ["what to do", r["what_to_do"]],
        ]))
    return "\n\n".join(blocks)


# -- event log ----------------------------------------------------------------------
def event_name(etype, text=b""):
    # The link's records share a type with an older one until events.py has
    # their own (link_commands.EV_*): their text says what they are.
    t = text.decode("utf-8", "replace")
    shared = {events.AUTH_OK, events.FAULT}  # the types that carried link records before they had their own
    if etype in shared and etype in (lc.EV_SESSION_END, lc.EV_REJECTED, lc.EV_PROVISIONED) \
            and t.startswith(("link ", "session ")):
        return t
    if etype == lc.EV_COMMAND and (lc.EV_COMMAND != events.AUTH_OK or t not in lc.ROLE_NAMES):
        return "command " + t
    return events.NAMES.get(etype, "type %d" % etype)


# Names for the numbers in event records (firmware/hal.py RESET_*, implant.py
# STEP_NAMES, persist.py FAULT_* and docs/persistence.md, link.py END_*);
# tests/host/test_pumpctl_screens.py checks them against the firmware.
RESET_CAUSES = ("power on", "watchdog reset", "soft reset", "power loss")
IMPLANT_STEP_NAMES = ("", "identity", "catheter", "first fill", "priming", "motor test", "alarm test",
                      "start therapy")
FAULT_CODES = ("safe state after an exception", "state record unreadable", "resumed from a checkpoint after an "
               "unclean reset", "saved prescription outside the limits", "clock uncertain", "change not saved, undone",
               "flash write failed", "stale state: the newest record was unreadable, an older one restored")
RESERVE_STROKES = 32  # firmware/pump.py: what an unclean reset may hide from the day's counts
SESSION_END_REASONS = ("logout", "idle timeout", "replaced by a new login")
DEMAND_REFUSALS = ("", "no demand bolus prescribed", "lockout", "daily maximum of demand boluses",
                   "another bolus in progress", "therapy not running")


def _named(table, i):
    return table[i] if isinstance(i, int) and 0 <= i < len(table) and table[i] else "code %s" % i


def _kind(k):
    return BOLUS_KINDS.get(k, "kind %s" % k)


def _strokes_amount(kind, strokes, unit, stroke_nl, conc, dose_ng=None):
    """', 0.1 mg (0.010 mL)' for a bolus record's strokes: the dose from the
    record (`dose_ng`) or strokes x stroke volume x concentration; a priming
    fills the catheter (its volume only); '' when the stroke is unknown."""
    if not stroke_nl:
        return ", %s" % u.fmt_mass(dose_ng, unit) if dose_ng else ""
    nl = strokes * stroke_nl
    if kind == KIND_PRIMING_BOLUS:
        return ", %s (filling the catheter)" % u.fmt_volume(nl, 4)
    if dose_ng is None and conc:
        dose_ng = fw_units.volume_to_dose_ng(nl, conc)
    return ", %s (%s)" % (u.fmt_mass(dose_ng, unit), u.fmt_volume(nl)) if dose_ng is not None else \
        ", %s" % u.fmt_volume(nl)


KIND_PRIMING_BOLUS = 4  # firmware/scheduler.py KIND_PRIMING


def event_details(rec, unit="mg", stroke_nl=None, conc_ng_ml=None):
    """The numbers of one event record in words and clinical units (volumes
    of strokes need the pump's stroke volume, `stroke_nl`; the dose of a
    bolus's strokes the concentration they were given at, `conc_ng_ml`)."""
    _seq, _day, _tod, t, a, b, c, d, text = rec
    vol = u.fmt_volume
    if t == events.BOOT:
        return "reset cause: %s" % _named(RESET_CAUSES, a)
    if t == events.THERAPY_PROGRAMMED:
        return "%d step(s), basal %s/day, 24-h maximum %s%s" % (a, vol(b), u.fmt_mass(c, unit),
                                                                ", bridge %d strokes" % d if d else "")
    if t == events.BOLUS_REQUESTED:
        return "%s: %d strokes over %s%s" % (_kind(a), b, u.fmt_duration(c),
                                             _strokes_amount(a, b, unit, stroke_nl, conc_ng_ml))
    if t == events.BOLUS_REFUSED:
        return "%s: %s%s" % (_kind(a), _named(DEMAND_REFUSALS, b), ", allowed again in %s" % u.fmt_duration(c)
                             if c else "")
    if t == events.BOLUS_STARTED:
        return "%s: %d strokes over %s%s" % (_kind(a), b, u.fmt_duration(c),
                                             _strokes_amount(a, b, unit, stroke_nl, conc_ng_ml, d or None))
    if t == events.BOLUS_DELIVERED:
        amount = _strokes_amount(a, b, unit, stroke_nl, conc_ng_ml)
        if c:  # a reset took strokes off the plan; some of them may have been given
            return "%s: at least %d strokes delivered%s (a reset interrupted it: up to %d more%s)" % (
                _kind(a), b, amount, c, _strokes_amount(a, c, unit, stroke_nl, conc_ng_ml))
        return "%s: %d strokes delivered%s" % (_kind(a), b, amount)
    if t == events.BOLUS_CANCELLED:
        why = "; stopped: the flash could not save its progress" if d == events.CANCELLED_UNSAVED else ""
        return "%s: %d strokes delivered%s, %d not delivered%s" % (
            _kind(a), b, _strokes_amount(a, b, unit, stroke_nl, conc_ng_ml), c, why)
    if t == events.CLOCK_SET:
        return "%s -> %s" % (u.fmt_datetime(a, b), u.fmt_datetime(c, d))
    if t == events.REFILL:
        return "withdrawn %s, added %s, expected %s, discrepancy %s" % (
            u.fmt_ml(a), u.fmt_ml(b), u.fmt_ml(c), u.fmt_ml(d, signed=True))
    if t in (events.ALARM_RAISED, events.ALARM_CLEARED, events.ALARM_ACKNOWLEDGED):
        return alarm_slug(a)
    if t == events.STROKE_FAILED:
        return "%d failed in a row%s" % (a, {1: " (motor)", 2: " (catheter pressure)"}.get(b, ""))
    if t == events.FAULT and not text.startswith(b"link "):
        return _named(FAULT_CODES, a)
    if t == events.BRIDGE_DONE:  # its strokes are in the day's bridge totals
        return "the catheter's earlier drug is out: the new therapy's profile runs"
    if t == events.RESERVOIR_SET:
        return "reservoir %s" % u.fmt_ml(a)
    if t == events.IMPLANT_STEP:
        if a == 4 and b:  # the priming step is logged when its bolus starts: its end is that bolus's record
            return "%s: started, %d strokes over %s (done at its `bolus delivered` record)" % (
                _named(IMPLANT_STEP_NAMES, a), c, u.fmt_duration(d))
        return "%s: %s" % (_named(IMPLANT_STEP_NAMES, a), "passed" if b else "FAILED")
    if t == getattr(events, "OVERRIDE", -1):
        return "%s confirmed above the usual 24-hour maximum" % u.fmt_mass(a, unit)
    if t == lc.EV_COMMAND and t != lc.EV_AUTH_OK:
        return "%s, session %d: %s" % (_named(lc.ROLE_NAMES, a), b, "done" if not d else wire.error_name(d))
    if t == lc.EV_SESSION_END and text.startswith(b"session"):
        return "%s, session %d: %s" % (_named(lc.ROLE_NAMES, a), b, _named(SESSION_END_REASONS, c))
    if t == lc.EV_REJECTED and text.startswith(b"link "):
        what = lc.COMMANDS[c][0] if c in lc.COMMANDS else "frame"
        return "%s refused: %s%s" % (what, wire.error_name(a), ", %d more not logged" % b if b else "")
    if t == lc.EV_AUTH_OK:
        return _named(lc.ROLE_NAMES, a)
    if t == lc.EV_AUTH_FAILED:
        return "%s, %d failure(s) in a row%s" % (_named(lc.ROLE_NAMES, a), b,
                                                 ", locked out %s" % u.fmt_duration(c) if c else "")
    if t == events.DIARY:
        return "pain %d, %s" % (a, _named(lc.ACTIVITIES, b))
    if t == events.DAILY_TOTAL:
        return _daily_total(a, b, c, d, unit, stroke_nl, text.decode("utf-8", "replace"))
    if t == getattr(events, "REPEATED", -1):
        return _repeated(rec, unit)
    return ""


DAY_END_REASONS = ("midnight", "clock set to another day", "drug changed at a refill")


def daily_total_fields(b):
    """DAILY_TOTAL b (firmware/daytotals.py, docs/protocol.md section 15):
    (kind, days covered - 1, why the part ended, unclean resets, partial)."""
    return b & 0xFF, b >> 8 & 0xFF, b >> 16 & 0xF, b >> 20 & 0xFF, bool(b & 1 << 28)


def _daily_total(day, b, strokes, dose_ng, unit, stroke_nl, text=""):
    # The text names the drug of the strokes (earlier firmware: the kind).
    kind, span, reason, resets, partial = daily_total_fields(b)
    when = u.fmt_date(day) + (" to %s" % u.fmt_date(day + span) if span else "")
    if not kind:
        notes = ["%s: nothing delivered" % when]
    else:
        volume = ", %s" % u.fmt_volume(strokes * stroke_nl) if stroke_nl else ""
        drug = text if text in limits.DRUGS else ""
        dose = u.fmt_mass(dose_ng, u.drug_unit(drug) if drug else unit) + (" " + drug if drug else "")
        notes = ["%s, %s: %d strokes%s, %s" % (when, BOLUS_KINDS.get(kind, "kind %d" % kind), strokes, volume, dose)]
    if reason:
        notes.append("ended early: %s" % _named(DAY_END_REASONS, reason))
    if resets:
        notes.append("%d unclean reset(s): up to %d strokes may be missing for each" % (resets, RESERVE_STROKES))
    if partial:
        notes.append("counted from part-way through the day")
    return "; ".join(notes)


def _repeated(rec, unit):
    # Repeats the pump counted instead of storing (docs/persistence.md): b of
    # type a with key c, the last at the record's time, the first d s before.
    _seq, day, tod, _t, a, b, c, d, _text = rec
    if a == lc.EV_COMMAND:
        role, _, cmd, code = events.unfold(a, c)
        what = "%s from the %s refused: %s" % (lc.COMMANDS[cmd][0] if cmd in lc.COMMANDS else "command %d" % cmd,
                                              _named(lc.ROLE_NAMES, role), wire.error_name(code))
    elif a in (events.BOLUS_REFUSED, events.STROKE_FAILED):
        what = "%s (%s)" % (events.NAMES[a], event_details((0, day, tod, a) + tuple(events.unfold(a, c)) + (b"",),
                                                          unit))
    elif a:
        what = "%s (%s)" % (events.NAMES.get(a, "type %d" % a), _kind(events.unfold(a, c)[0]))
    else:
        what = "records of kinds beyond the pump's count table"
    return "%d more: %s, from %s" % (b, what, u.fmt_datetime(day, max(0, tod - d)))


def _concentrations(recs, stroke_nl, conc_now):
    """The concentration in force at each record (None: not known). The log
    does not record it: a therapy programmed may change it, so each stretch
    between THERAPY_PROGRAMMED records takes it from a record that tells it
    (a clinician bolus's dose per stroke, a daily total of that drug), the
    last stretch from the pump's therapy now (`conc_now`)."""
    seg, found = [], {}
    n, drug = 0, None
    for rec in recs:
        _seq, _day, _tod, etype, a, b, c, d, text = rec
        if etype == events.THERAPY_PROGRAMMED:
            n, drug = n + 1, text.decode("utf-8", "replace")
        seg.append(n)
        if n in found or not stroke_nl:
            continue
        if etype == events.BOLUS_STARTED and a == 3 and b and d:  # a clinician bolus: its dose
            found[n] = d * 1_000_000 // (b * stroke_nl)
        elif etype == events.DAILY_TOTAL and c and d and drug and text.decode("utf-8", "replace") == drug:
            found[n] = d * 1_000_000 // (c * stroke_nl)
    if conc_now:
        found[n] = conc_now
    return [found.get(i) for i in seg]


def log_records(recs, stroke_nl=None, conc_ng_ml=None):
    """Labelled records with their event name and details in words; the drug
    unit follows the therapy programmed in the log (volumes of strokes with
    the pump's `stroke_nl`; doses of a bolus's strokes at the concentration
    in force, the pump's current one `conc_ng_ml` after its last therapy
    programmed)."""
    out = []
    unit = "mg"
    concs = _concentrations(recs, stroke_nl, conc_ng_ml)
    for rec, conc in zip(recs, concs):
        seq, day, tod, etype, a, b, c, d, text = rec
        if etype == events.THERAPY_PROGRAMMED and text:
            unit = u.drug_unit(text.decode("utf-8", "replace"))
        out.append({"seq": seq, "day": day, "tod_s": tod, "time": u.fmt_datetime(day, tod), "type": etype,
                    "event": event_name(etype, text), "details": event_details(rec, unit, stroke_nl, conc),
                    "a": a, "b": b, "c": c, "d": d, "text": text.decode("utf-8", "replace")})
    return out


def log_rows(recs, stroke_nl=None, conc_ng_ml=None):
    """Rows for the table and CSV: LOG_HEADERS."""
    return [[r["seq"], r["time"], r["event"], r["details"], r["a"], r["b"], r["c"], r["d"], r["text"]]
            for r in log_records(recs, stroke_nl, conc_ng_ml)]


LOG_HEADERS = ["seq", "time", "event", "details", "a", "b", "c", "d", "text"]
LOG_TABLE_HEADERS = ["seq", "time", "event", "details", "text"]


def log_table(recs, stroke_nl=None, conc_ng_ml=None):
    return table([[r["seq"], r["time"], r["event"], r["details"],
                   "" if r["text"] in r["event"] + r["details"] or r["text"].startswith(("link ", "session end"))
                   else r["text"]]
                  for r in log_records(recs, stroke_nl, conc_ng_ml)], LOG_TABLE_HEADERS)


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
    "priming_volume": "prime at most what the catheter still needs plus 10 % (the figure above)",
    "catheter": "give each segment's length and volume from the catheter's label: 1 to 4 segments, each 1 to "
                "1500 mm, the whole catheter at most 1 mL",
    "catheter_unset": "record the catheter first (a revision: `pumpctl catheter --segments 500mm:120uL,300mm:80uL`), "
                      "then prime it",
    "catheter_primed": "the catheter is already primed, so priming would be a hidden dose: for a new or revised "
                       "catheter record it first (`pumpctl catheter --segments ...`); for drug, give a clinician "
                       "bolus (`pumpctl bolus`)",
    "bolus_rounding": "choose one of the two deliverable doses named above (a bolus is whole 0.5 µL strokes)",
    # below two strokes the pump names one dose: the stroke (or more strokes, a larger dose)
    "bolus_rounding_one": "give the deliverable dose named above, one 0.5 µL stroke (a bolus is whole strokes), or a "
                          "larger one of whole strokes",
    "bolus_rounding_cut": "give a dose of whole 0.5 µL strokes: a whole multiple of the dose per stroke named above",
    "flash_fault": "nothing was changed and therapy continues as before: try again; if it fails again the pump's "
                   "flash is failing (the flash-fault alarm): plan to replace the pump",
    "clock": "give the current date and time (the pump keeps dates from 1970-01-01 to 2149-06-06)",
    "alarm_date": "give the date of the next refill: after the pump's date (`pumpctl clock`), or 'off'",
    "lockout": "give a lockout between 15 min and 24 h",
    "demand_per_day": "allow between 1 and 24 demand boluses a day",
    "bolus_active": "wait until the running bolus ends (`pumpctl status` shows it)",
    "not_running": "start or resume therapy first (`pumpctl status`, `pumpctl resume`)",
    "not_programmed": "program a therapy first (`pumpctl program`, or a refill with its prescription)",
    "alarm": "resolve the alarm's cause, acknowledge it (`pumpctl alarms --ack`), then resume",
    "first_fill": "the pump has been filled before: use `pumpctl refill`",
    "drug": "use one of the known drugs",
    "demand_not_prescribed": "no demand bolus is prescribed: if the pain is not controlled, call your clinician",
    "demand_lockout": "wait the time shown above, then press again; if the pain is not controlled, call your "
                      "clinician",
    "demand_daily_max": "no more demand boluses for the time shown above; if the pain is not controlled, call your "
                        "clinician",
    "demand_bolus_active": "a bolus is being given now: press again when it has ended (`pumpctl status` shows "
                           "it)",
    "demand_not_running": "therapy is stopped: call your clinician (an alarm may say why: `pumpctl status`)",
    "steps": "give 1 to 10 flex steps",
    "periodic": "give at most 8 periodic boluses",
    "step_start": "start the first step at 00:00 and each later step at a later time of day, up to 23:59:59, "
                  "e.g. --step 00:00=5mg/day --step 08:00=6mg/day",
    "periodic_time": "give each periodic bolus its own time of day, between 00:00 and 23:59:59",
    "bridge_running": "refill with the drug and concentration now in the pump (leave out --drug and --conc, or give "
                      "the same ones); change the drug at a refill after the bridge ends: until then `pumpctl "
                      "interrogate` lists `bridge bolus: in progress`, and the log then shows `bridge bolus done`",
}


REASON_MAX = 100  # the pump cuts a reason here (firmware/wire.py error_reply)


def complete_clauses(reason):
    """A reason the pump cut at its 100 characters, back to its last whole
    clause (a half figure such as '21.1 u' would mislead), marked '…'."""
    if len(reason or "") != REASON_MAX:
        return reason or ""
    cut = max(reason.rfind(", "), reason.rfind(": "), reason.rfind("; "))
    return (reason[:cut] if cut > 0 else reason.rsplit(" ", 1)[0]) + " …"


def clinical_reason(reason, drug=None, other=None, limit=None):
    """The pump's reason with every number in nL, ng, ng/mL or s in clinical
    units: every mass in the drug's own unit (mg or µg, never both), a time
    of day as a clock time, a wait in hours and minutes; `other` (as for
    ceiling_text): the 24-hour figure holds an earlier drug too."""
    unit = u.drug_unit(drug) if drug in limits.DRUGS else None
    text = _BASAL.sub(r"basal \1 nL/day exceeds", complete_clauses(reason))
    if limit in TIME_OF_DAY_LIMITS:
        text = _RANGE.sub(lambda m: "%s to %s" % (_clock(int(m.group(1))), _clock(int(m.group(2))))
                          if m.group(3) == "s" else m.group(0), text)
        text = _VALUE.sub(lambda m: _clock(int(m.group(1))) if m.group(2) == "s" else m.group(0), text)
    text = _RANGE.sub(lambda m: _range_text(int(m.group(1)), int(m.group(2)), m.group(3), unit), text)
    text = _VALUE.sub(lambda m: u.fmt_pump_value(int(m.group(1)), m.group(2), unit), text)
    text = re.sub(r"(?<=\d) u(g|L)\b", r" µ\1", text)  # the pump writes ASCII micro
    if unit:  # the pump writes a mg drug's doses below 1 mg in ug (firmware/units.py fmt_mass)
        text = _MASS.sub(lambda m: _in_unit(m, unit), text)
    text = _SAME_DOSE_TWICE.sub(r"choose \1", text)
    text = _WAIT_MIN.sub(lambda m: "allowed again in %s" % u.fmt_duration(int(m.group(1)) * 60), text)
    if other is not None:  # the ceiling's figure is not a dose of this drug alone
        text = _GIVEN.sub(lambda m: "(%s-equivalent counted, the %s before the drug change included)"
                          % (m.group(1), other or "earlier drug"), text)
    return re.sub(r"\bconfirm with override\b", "confirm with --override", text)


# The limits whose seconds are a time of day (firmware/prescription.py).
TIME_OF_DAY_LIMITS = ("step_start", "periodic_time")
_MASS = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?) (mg|µg)(?![\w])")
_WAIT_MIN = re.compile(r"\ballowed again in (\d+) min\b")
_GIVEN = re.compile(r"\((\d[\d.]* [µm]g) given\)")


def _in_unit(m, unit):
    ng = Fraction(Decimal(m.group(1))) * u.MASS_NG[m.group(2)]
    return u.fmt_mass(ng, unit)


def _clock(s):
    """A time of day in seconds as a clock time; past midnight as the hours it names (25:00)."""
    return u.fmt_tod(s) if 0 <= s < fw_units.S_PER_DAY else "%02d:%02d" % (s // 3600, s // 60 % 60) + (
        ":%02d" % (s % 60) if s % 60 else "")


# A pump whose firmware names the one deliverable dose twice below two strokes
# ("choose 0.25 ug or 0.25 ug": firmware/prescription.py _bolus_strokes up to
# commit fb6dab9, still on a Pico not updated): one choice, said once.
_SAME_DOSE_TWICE = re.compile(r"\bchoose (\d[\d.]* [µm]g) or \1(?![\d.])")


def _rounding_choices(reason):
    """How many deliverable doses a bolus_rounding refusal names: 2, 1, or 0
    (the pump's 100 characters ended before them)."""
    text = clinical_reason(reason)
    if "choose " not in text:
        return 0
    return 2 if " or " in text.rpartition("choose ")[2] else 1


def daily_max_lines(limit, drug, given_ng=None, override_sent=False, other=None):
    """(figures, what to do) for a refusal at a drug's 24-hour maximum
    (`other`: as for ceiling_text)."""
    if drug not in limits.DRUGS:
        return None, "lower the dose, or wait until earlier doses leave the 24-hour window"
    unit = u.drug_unit(drug)
    soft, hard = daily_maxima(drug)
    figures = "24-hour maximum for %s: %s/day" % (drug, u.fmt_mass(soft, unit))
    if hard > soft:
        figures += " usual, %s/day hard (never exceeded)" % u.fmt_mass(hard, unit)
    if given_ng is not None and other is None:
        figures += "; given in the last 24 h: %s" % u.fmt_mass(given_ng, unit, 3)
    elif given_ng is not None:
        figures += "; %s (%s)" % (_limit_used(given_ng, hard), _equivalent(drug, given_ng, other))
    lower = ("lower the dose (the bolus, a step, a periodic or demand bolus), or wait until earlier doses leave "
             "the 24-hour window")
    if limit == "daily_hard_max" or (hard > soft and override_sent):
        todo = "%s: the hard maximum %s/day is never exceeded, not even with --override" % (
            lower, u.fmt_mass(hard, unit))
    elif hard > soft:
        todo = ("%s; only if the clinical need is confirmed, repeat with --override (above the usual %s/day, up "
                "to %s/day, never more; the pump logs it)" % (lower, u.fmt_mass(soft, unit), u.fmt_mass(hard, unit)))
    else:
        todo = "%s: %s has one maximum, %s/day, and no override above it" % (lower, drug, u.fmt_mass(soft, unit))
    return figures, todo


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
               "ng/day": lambda v: u.fmt_mass(v, unit) + "/day",
               "s": _clock if limit in TIME_OF_DAY_LIMITS else u.fmt_duration}[what]
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


def refusal_lines(name, limit, reason, drug=None, conc_ng_ml=None, given_ng=None, override_sent=False, other=None,
                  request=None):
    """What a clinician reads for a refusal: the reason in clinical units
    naming the limit, the allowed range, and what to do next. `other`: as
    for ceiling_text; `request`: what was sent, when known ({"rx": ...},
    {"bolus": [dose_ng, duration_s]}, {"priming": volume_nl}, with
    "stroke_nl"), for figures the pump's reason has no room for."""
    return ["pump refused: %s%s: %s" % (name, " (%s)" % limit if limit else "",
                                        clinical_reason(reason, drug, other, limit))] + [
        "  %s: %s" % (k, v) if k == "what to do" else "  " + v
        for k, v in refusal_parts(limit, reason, drug, conc_ng_ml, given_ng, override_sent, name, other, request)]


def _next_step_for_code(name, reason):
    # A refusal that names no limit: what to do follows from its code.
    if name == "FORBIDDEN" and "patient role" in reason:
        return "this is for the clinician's programmer: give it again with --role clinician"
    if name == "FORBIDDEN" and "clinician role" in reason:
        return "this is for the patient's handset: give it again with --role patient"
    if name == "INTERNAL":
        return ("check the pump with `pumpctl status` (state and alarms), then try again; if it is refused "
                "again, the pump needs service")
    return None


def refusal_parts(limit, reason, drug=None, conc_ng_ml=None, given_ng=None, override_sent=False, name=None,
                  other=None, request=None):
    """[("hint", text), ("what to do", text)] for a refusal, those that apply."""
    out = []
    if limit in ("daily_max", "daily_hard_max"):
        figures, todo = daily_max_lines(limit, drug, given_ng, override_sent, other)
        if figures:
            out.append(("hint", figures))
        out.append(("what to do", todo))
        return out
    hint = clinical_hint(limit, reason, drug, conc_ng_ml)
    if hint:
        out.append(("hint", hint))
    if limit == "bolus_rounding":
        limit = {2: limit, 1: "bolus_rounding_one", 0: "bolus_rounding_cut"}[_rounding_choices(reason or "")]
    todo = NEXT_STEP.get(limit) if limit else _next_step_for_code(name, reason or "")
    sent = request or {}
    if limit == "rate" and "on top of" in (reason or ""):
        todo = added_rate_todo(reason, conc_ng_ml, sent) or todo
    elif limit == "steps" and sent.get("rx"):
        todo = "%d steps were given: give 1 to %d flex steps" % (len(sent["rx"]["steps"]), limits.MAX_STEPS)
    if todo:
        out.append(("what to do", todo))
    return out


def shortest_bolus_s(strokes, stroke_nl, basal_nl_day):
    """The shortest whole-minute duration at which `strokes` fit the
    mechanism beside a basal of `basal_nl_day` (firmware/prescription.py
    _check_added_rate: basal + the bolus's rate <= 24 mL/day); None if none does."""
    room = limits.RATE_MAX_NL_DAY - basal_nl_day
    if room <= 0:
        return None
    shortest = strokes * stroke_nl * fw_units.S_PER_DAY // (room + 1) + 1
    return max(limits.BOLUS_DURATION_MIN_S, -(-shortest // 60) * 60)


def _sent_bolus(what, request, conc):
    # (strokes, basal nL/day, what it is) of the bolus a rate refusal names, from what was sent.
    stroke_nl = request.get("stroke_nl") or 500
    rx = request.get("rx")
    basal = max(fw_units.dose_to_volume_nl(d, rx["conc"]) for _, d in rx["steps"]) if rx else 0
    conc = rx["conc"] if rx else conc
    if what == "priming bolus" and request.get("priming"):
        return -(-request["priming"] // stroke_nl), 0, None
    dose = None
    if what == "clinician bolus" and request.get("bolus"):
        dose, basal = request["bolus"][0], 0  # a clinician bolus replaces the basal
    elif rx and what == "demand bolus" and rx.get("demand"):
        dose = rx["demand"][0]
    elif rx and what.startswith("periodic bolus "):
        i = what[len("periodic bolus "):]
        per = rx.get("periodic") or []
        if i.isdigit() and 1 <= int(i) <= len(per):
            dose = per[int(i) - 1][1]
    if dose is None or not conc:
        return None
    strokes = (fw_units.dose_to_volume_nl(dose, conc) + stroke_nl // 2) // stroke_nl
    return strokes, basal, dose


def added_rate_todo(reason, conc, request):
    """What to do when a bolus is too fast beside the basal: the shortest
    duration the mechanism allows for that dose (None: not known)."""
    what = (reason or "").split(":", 1)[0]
    found = _sent_bolus(what, request, conc)
    if not found or found[0] < 1:
        return None
    strokes, basal, _dose = found
    shortest = shortest_bolus_s(strokes, request.get("stroke_nl") or 500, basal)
    beside = ", with the basal's %s/day" % u.fmt_volume(basal) if basal else ""
    most = "%s mL/day" % u.ml_number(limits.RATE_MAX_NL_DAY)
    if shortest is None or shortest > limits.BOLUS_DURATION_MAX_S:
        return ("the mechanism moves at most %s%s: no duration up to 24 h fits this %s; lower its dose or the "
                "basal" % (most, beside, what))
    limit_note = " (and no longer than its lockout)" if what == "demand bolus" else ""
    return "give the %s over at least %s%s: the shortest the mechanism allows for its %s (at most %s%s)" % (
        what, u.fmt_duration(shortest), limit_note, u.fmt_volume(strokes * (request.get("stroke_nl") or 500), 4),
        most, beside)
