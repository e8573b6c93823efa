"""Refill-visit report: what happened since the last visit, for the clinician.

Data in, data out: `summarize(VisitData) -> VisitSummary`, then
`render_text(summary) -> str` (a terminal page read in 30 seconds) or
`render_html(summary, path)` (one self-contained printable file with plots).
Nothing here talks to a pump; the CLI reads the pump and fills VisitData.

Input, VisitData (plain data as the link returns it; dates may be
`datetime.date` or the pump's day numbers, days since 1970-01-01):

    device          identity reply: {"serial", "model", "firmware", ...}
    visit_date      this visit
    previous_visit  the last refill visit: the interval starts that day
    records         event log since the previous visit, tuples
                    (seq, day, tod_s, etype, a, b, c, d, text) with the types and
                    payloads of firmware/events.py; records dated outside
                    previous_visit..visit_date are ignored (and counted)
    status          status reply read at the END of the visit (after the refill
                    and any reprogramming): remaining_nl, capacity_nl, low_nl,
                    residual_nl, max_daily_nl, low_in_s, empty_in_s (from the
                    status's day/tod_s, else visit_date 00:00; None = never),
                    drug, conc_ng_ml, alarms (ids, or the pump's listing dicts)
    refill          this visit's refill result {"expected_nl", "withdrawn_nl",
                    "discrepancy_nl", "warning"}, or None (then a REFILL record
                    dated visit_date is used if there is one)
    old_rx, new_rx  prescriptions before and after the visit, the firmware form
                    {"drug", "conc_ng_ml", "steps": [{"start_s", "dose_ng_day"}],
                     "periodic": [{"time_s", "dose_ng", "duration_s"}],
                     "demand": {"dose_ng", "duration_s", "lockout_s", "max_per_day"}}
                    (the link's compact form {"conc", "steps": [[s, d]], ...} too);
                    old_rx None = first fill, new_rx None = unchanged
    delivered       per day: (date, dose_ng, volume_nl) delivered that day
    delivery_detail per day (date or day number): DayDelivery, where the row came
                    from: "pump" (the pump's DAILY_TOTAL records, per kind of
                    stroke), "pump so far" (the visit day: the pump's own count
                    of the day in progress, from its status) or "estimated"
                    (computed on the host from the therapy and bolus records);
                    a day without one is "pump" if the row is, else unknown
                    (shown as "-")

Diary entries are events.DIARY records (layout in pumpctl.diary).
Demand refusal reasons are firmware/scheduler.py's DEMAND_* codes.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import html
import io
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from pumpctl import diary
from pumpctl.fw import alarms as fw_alarms
from pumpctl.fw import events
from pumpctl.console import table
from pumpctl.report import alarm_ids, alarm_slug
from pumpctl.units import (drug_unit, fmt_duration, fmt_mass, fmt_ml, fmt_pain, fmt_pct, fmt_tod,
                           fmt_volume)
import reservoir as fw_reservoir  # noqa: E402  (firmware/, on sys.path through pumpctl.fw)
import scheduler as fw_scheduler  # noqa: E402

S_PER_DAY = 86400
NL_PER_ML = 1_000_000
EPOCH = dt.date(1970, 1, 1)

Record = tuple[int, int, int, int, int, int, int, int, bytes]  # (seq, day, tod_s, etype, a, b, c, d, text)

REFUSAL_REASONS: dict[int, str] = {
    fw_scheduler.DEMAND_NOT_PRESCRIBED: "not prescribed",
    fw_scheduler.DEMAND_LOCKOUT: "lockout",
    fw_scheduler.DEMAND_DAILY_MAX: "daily maximum",
    fw_scheduler.DEMAND_BOLUS_ACTIVE: "bolus in progress",
    fw_scheduler.DEMAND_NOT_RUNNING: "therapy not running",
}
BOLUS_KINDS: dict[int, str] = {
    fw_scheduler.KIND_BASAL: "basal", fw_scheduler.KIND_BRIDGE: "bridge",
    fw_scheduler.KIND_CLINICIAN: "clinician", fw_scheduler.KIND_PRIMING: "priming",
    fw_scheduler.KIND_DEMAND: "demand", fw_scheduler.KIND_PERIODIC: "periodic",
}
STROKE_KINDS: dict[int, str] = {**BOLUS_KINDS, fw_scheduler.KIND_UNCOMMANDED: "uncommanded"}  # DAILY_TOTAL kinds


SO_FAR = "pump so far"  # DayDelivery.source of the visit day counted by the pump's status


class VisitError(ValueError):
    """Visit data that cannot be summarized; the message names the field."""


@dataclass(frozen=True)
class DayDelivery:
    """Where a day's delivered figures come from (pumpctl.visitrun.delivered)."""
    source: str  # "pump": DAILY_TOTAL records; "pump so far": the day in progress; "estimated": from the log
    kinds: tuple[tuple[int, int, int, int], ...] = ()  # (kind, strokes, dose_ng, volume_nl), pump only
    resets: int = 0  # unclean resets that day: each may have hidden up to 32 strokes from the count
    partial: bool = False  # the pump began counting during the day (strokes before it are missing)
    days: int = 1  # pump days the record covers (> 1: later days merged in, the log could not be written)
    # Strokes of another drug than the interval's (a drug change: the old
    # drug's part of the day, the bridge): (kind, strokes, dose_ng,
    # volume_nl, drug). Their volume is in the day's, their dose is not: two
    # drugs' milligrams do not add up.
    other: tuple[tuple[int, int, int, int, str], ...] = ()
    # The part of the day the figures cover, seconds from its midnight: the
    # pump's daily total the whole day (days x 24 h); the visit day so far
    # until the visit; an estimated day the part of the interval in it.
    from_s: int = 0
    to_s: int | None = None  # None: the end of the record's last day

    def span_s(self) -> tuple[int, int]:
        return self.from_s, self.days * S_PER_DAY if self.to_s is None else self.to_s


# -- input ---------------------------------------------------------------------------------
def as_date(value: dt.date | int, what: str = "date") -> dt.date:
    """A date from a date or a pump day number."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if type(value) is int:
        return EPOCH + dt.timedelta(days=value)
    raise VisitError("%s must be a date or a pump day number, got %r" % (what, value))


def day_number(date: dt.date) -> int:
    return (date - EPOCH).days


@dataclass
class VisitData:
    device: dict[str, Any]
    visit_date: dt.date
    previous_visit: dt.date
    records: list[Record]
    status: dict[str, Any]
    refill: dict[str, Any] | None = None
    old_rx: dict[str, Any] | None = None
    new_rx: dict[str, Any] | None = None
    delivered: list[tuple[dt.date, int, int]] = field(default_factory=list)
    delivery_detail: dict[Any, DayDelivery] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.delivery_detail = {as_date(d, "delivery_detail date"): v for d, v in self.delivery_detail.items()}
        self.visit_date = as_date(self.visit_date, "visit_date")
        self.previous_visit = as_date(self.previous_visit, "previous_visit")
        if self.previous_visit > self.visit_date:
            raise VisitError("previous_visit %s is after visit_date %s" % (self.previous_visit, self.visit_date))
        missing = [k for k in ("remaining_nl", "capacity_nl", "low_nl", "residual_nl", "max_daily_nl",
                               "low_in_s", "empty_in_s") if k not in self.status]
        if missing:
            raise VisitError("status is missing %s" % ", ".join(missing))
        if self.refill is not None:
            missing = [k for k in ("expected_nl", "withdrawn_nl", "discrepancy_nl", "warning") if k not in self.refill]
            if missing:
                raise VisitError("refill result is missing %s" % ", ".join(missing))
        rows, seen = [], set()
        for row in self.delivered:
            if len(row) != 3:
                raise VisitError("delivered rows are (date, dose_ng, volume_nl), got %r" % (row,))
            d = as_date(row[0], "delivered date")
            if d in seen:
                raise VisitError("delivered has two rows for %s" % d)
            seen.add(d)
            rows.append((d, int(row[1]), int(row[2])))
        self.delivered = sorted(rows)
        for r in self.records:
            if len(r) != 9:
                raise VisitError("event records are (seq, day, tod_s, etype, a, b, c, d, text), got %r" % (r,))


# -- prescriptions --------------------------------------------------------------------------
@dataclass(frozen=True)
class Rx:
    """A prescription in one shape, whichever form it came in."""
    drug: str
    conc_ng_ml: int
    steps: tuple[tuple[int, int], ...]  # (start_s, dose_ng_day)
    periodic: tuple[tuple[int, int, int], ...] = ()  # (time_s, dose_ng, duration_s)
    demand: tuple[int, int, int, int] | None = None  # (dose_ng, duration_s, lockout_s, max_per_day)

    @classmethod
    def of(cls, rx: dict[str, Any]) -> Rx:
        try:
            if "conc_ng_ml" in rx:
                steps = [(s["start_s"], s["dose_ng_day"]) for s in rx["steps"]]
                per = [(p["time_s"], p["dose_ng"], p["duration_s"]) for p in rx.get("periodic") or []]
                d = rx.get("demand")
                dem = (d["dose_ng"], d["duration_s"], d["lockout_s"], d["max_per_day"]) if d else None
                conc = rx["conc_ng_ml"]
            else:
                steps = [tuple(s) for s in rx["steps"]]
                per = [tuple(p) for p in rx.get("periodic") or []]
                dem = tuple(rx["demand"]) if rx.get("demand") else None
                conc = rx["conc"]
            return cls(rx["drug"], conc, tuple(sorted(steps)), tuple(sorted(per)), dem)
        except (KeyError, TypeError, ValueError) as e:
            raise VisitError("malformed prescription %r (%s)" % (rx, e)) from None

    def basal_ng_day(self) -> Fraction:
        """The flex profile integrated over a day."""
        total = Fraction(0)
        for i, (start, dose) in enumerate(self.steps):
            end = self.steps[i + 1][0] if i + 1 < len(self.steps) else S_PER_DAY
            total += Fraction(dose * (end - start), S_PER_DAY)
        return total

    def max_ng_day(self) -> Fraction:
        """Basal + periodic + every allowed demand bolus."""
        extra = sum(p[1] for p in self.periodic) + (self.demand[0] * self.demand[3] if self.demand else 0)
        return self.basal_ng_day() + extra

    def nl(self, ng: Fraction | int) -> Fraction:
        return Fraction(ng) * NL_PER_ML / self.conc_ng_ml if self.conc_ng_ml else Fraction(0)


# -- the summary ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DayRow:
    date: dt.date
    dose_ng: int | None  # None: no delivery data for the day
    volume_nl: int | None
    pain_mean: Fraction | None  # mean of the day's diary entries
    pain_entries: int
    demand_given: int
    demand_refused: int
    delivery: DayDelivery | None = None  # where dose and volume come from (None: unknown)
    interrupted: tuple[int, int, int] = (0, 0, 0)  # demand boluses a reset cut short: (boluses, strokes
    # delivered at least, strokes that may or may not have been given)


@dataclass(frozen=True)
class BolusSummary:
    requested: int  # demand requests (patient presses)
    given: int  # demand boluses started
    refused: int
    refused_by_reason: dict[str, int]
    delivered: int  # demand boluses completed
    cancelled: int  # demand boluses stopped before the end by a command
    other_given: dict[str, int]  # clinician, periodic, priming, ... boluses started
    # Demand boluses a reset (a power loss) or the flash cut short: a
    # BOLUS_DELIVERED record with strokes a reset took off its plan, or a
    # BOLUS_CANCELLED one because the flash could not save its progress.
    interrupted: int = 0
    interrupted_strokes: int = 0  # delivered, at least
    interrupted_unsure: int = 0  # strokes of theirs that may or may not have been given


@dataclass(frozen=True)
class AlarmRow:
    alarm_id: int
    name: str
    critical: bool
    raised: int
    acknowledged: int
    cleared: int
    first_raised: dt.datetime | None
    active_now: bool


@dataclass(frozen=True)
class RefillSummary:
    expected_nl: int  # the pump's computed gauge before the refill
    withdrawn_nl: int  # measured by the clinician
    discrepancy_nl: int  # withdrawn - expected
    percent: Fraction | None  # discrepancy / expected x 100
    warning: bool  # the pump's rule: > 20 % of expected and > 2 mL
    added_nl: int | None


@dataclass(frozen=True)
class ReservoirSummary:
    remaining_nl: int
    capacity_nl: int
    low_nl: int
    residual_nl: int
    max_daily_nl: int
    low_date: dt.date | None  # projected, every allowed bolus used
    empty_date: dt.date | None
    levels: tuple[tuple[dt.date, int], ...]  # computed gauge at the end of each day with data
    interim_refills: tuple[tuple[dt.date, RefillSummary], ...]  # refills between the two visits


@dataclass(frozen=True)
class TherapyRow:
    label: str
    old: str
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new


@dataclass(frozen=True)
class VisitSummary:
    device: dict[str, Any]
    visit_date: dt.date
    previous_visit: dt.date
    interval_days: int
    drug: str | None  # the drug delivered during the interval
    unit: str  # mg or µg
    diary: tuple[diary.DiaryEntry, ...]
    pain_mean: Fraction | None  # mean of the daily means
    pain_min: int | None
    pain_max: int | None
    days_with_diary: int
    days: tuple[DayRow, ...]  # previous_visit .. visit_date
    total_dose_ng: int
    total_volume_nl: int
    days_with_delivery_data: int
    # The means are over one span, exact to the second: the days with data of
    # the interval's drug alone (a day with another drug's strokes, a drug
    # change, holds only part of its dose), each for the time its figures
    # cover (a partial visit day counts its hours, not a whole day).
    mean_daily_dose_ng: Fraction | None  # ng/day over mean_span_s
    mean_days: int  # calendar days in the span
    mean_daily_volume_nl: Fraction | None  # nL/day over the same span
    mean_span_s: int  # seconds of delivery data in the span
    mean_from: dt.datetime | None  # where the span starts and ends
    mean_to: dt.datetime | None
    mean_gaps: int  # days between mean_from and mean_to left out (no data, or another drug)
    boluses: BolusSummary
    alarms: tuple[AlarmRow, ...]
    refill: RefillSummary | None
    reservoir: ReservoirSummary
    therapy: tuple[TherapyRow, ...]
    therapy_changed: bool
    attention: tuple[str, ...]  # what to read first
    problems: tuple[str, ...]  # records that could not be read or were ignored
    stroke_nl: int = 0  # the pump's stroke (identity), 0: unknown
    conc_ng_ml: int = 0  # the interval drug's concentration, 0: unknown


def _therapy_cells(rx: Rx | None) -> dict[str, str]:
    if rx is None:
        return {}
    u = drug_unit(rx.drug)
    cells = {"drug": "%s %s/mL" % (rx.drug, fmt_mass(rx.conc_ng_ml, u, 3)),
             "basal per day": "%s/day (%s/day)" % (fmt_mass(rx.basal_ng_day(), u, 3), fmt_volume(rx.nl(rx.basal_ng_day())))}
    for start, dose in rx.steps:
        cells["basal from %s" % fmt_tod(start)] = "%s/day (%s/day)" % (fmt_mass(dose, u, 3), fmt_volume(rx.nl(dose)))
    for t, dose, dur in rx.periodic:
        cells["periodic %s" % fmt_tod(t)] = "%s over %s (%s)" % (fmt_mass(dose, u, 3), fmt_duration(dur), fmt_volume(rx.nl(dose)))
    if rx.demand:
        dose, dur, lock, mx = rx.demand
        cells["demand bolus"] = "%s over %s (%s), lockout %s, max %d/24 h" % (
            fmt_mass(dose, u, 3), fmt_duration(dur), fmt_volume(rx.nl(dose)), fmt_duration(lock), mx)
    else:
        cells["demand bolus"] = "none"
    cells["24-h maximum"] = "%s/day (%s/day)" % (fmt_mass(rx.max_ng_day(), u, 3), fmt_volume(rx.nl(rx.max_ng_day())))
    return cells


def _rate_at(rx: Rx, tod: int) -> int | None:
    rate = None
    for start, dose in rx.steps:
        if start <= tod:
            rate = dose
    return rate


def therapy_rows(old: Rx | None, new: Rx | None) -> list[TherapyRow]:
    """Old and new side by side; basal rows on the union of both profiles' step
    times, each side showing the rate in effect from that time."""
    o, n = _therapy_cells(old), _therapy_cells(new)
    rows = [TherapyRow("drug", o.get("drug", "-"), n.get("drug", "-"))]
    for t in sorted({s[0] for rx in (old, new) if rx for s in rx.steps}):
        cells = []
        for rx in (old, new):
            r = _rate_at(rx, t) if rx else None
            cells.append("-" if rx is None or r is None else
                         "%s/day (%s/day)" % (fmt_mass(r, drug_unit(rx.drug), 3), fmt_volume(rx.nl(r))))
        rows.append(TherapyRow("basal from %s" % fmt_tod(t), cells[0], cells[1]))
    for key in ["basal per day"] + sorted({k for k in list(o) + list(n) if k.startswith("periodic")}) + \
            ["demand bolus", "24-h maximum"]:
        rows.append(TherapyRow(key, o.get(key, "-"), n.get(key, "-")))
    return rows


def _date_after(day: int, tod_s: int, secs: int | None) -> dt.date | None:
    if secs is None:
        return None
    return as_date(day + (tod_s + secs) // S_PER_DAY)


def _refill_from_event(r: Record) -> dict[str, Any]:
    withdrawn, added, expected = r[4], r[5], r[6]
    diff = abs(expected - withdrawn)
    warn = (diff > fw_reservoir.DISCREPANCY_MIN_NL
            and diff * 100 > fw_reservoir.DISCREPANCY_FRACTION_PCT * expected)
    return {"expected_nl": expected, "withdrawn_nl": withdrawn, "discrepancy_nl": withdrawn - expected,
            "warning": warn, "added_nl": added}


def _refill_summary(rf: dict[str, Any], added_nl: int | None = None) -> RefillSummary:
    exp = rf["expected_nl"]
    return RefillSummary(exp, rf["withdrawn_nl"], rf["discrepancy_nl"],
                         Fraction(rf["discrepancy_nl"] * 100, exp) if exp else None, bool(rf["warning"]),
                         rf.get("added_nl", added_nl))


def _moment(day, secs):
    """The moment `secs` seconds into the date `day`."""
    return dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=secs)


def summarize(data: VisitData) -> VisitSummary:
    first, last = data.previous_visit, data.visit_date
    lo, hi = day_number(first), day_number(last)
    records = sorted((r for r in data.records if lo <= r[1] <= hi), key=lambda r: r[0])
    problems = []
    if len(records) != len(data.records):
        problems.append("%d event records dated outside %s..%s ignored" % (len(data.records) - len(records), first, last))
    old = Rx.of(data.old_rx) if data.old_rx else None
    new = Rx.of(data.new_rx) if data.new_rx else old
    drug = old.drug if old else (data.status.get("drug") or (new.drug if new else None))
    unit = drug_unit(drug)

    # diary
    entries = []
    for r in records:
        if r[3] == events.DIARY:
            try:
                entries.append(diary.decode(r))
            except diary.DiaryError as e:
                problems.append(str(e))
    by_day: dict[dt.date, list[int]] = {}
    for e in entries:
        by_day.setdefault(e.date, []).append(e.pain)
    day_means = {d: Fraction(sum(v), len(v)) for d, v in by_day.items()}

    # boluses
    requested = given = refused = delivered = cancelled = interrupted = cut_strokes = cut_unsure = 0
    cut_on: dict[dt.date, list[int]] = {}  # day -> [boluses, strokes at least, strokes unsure]
    reasons: dict[str, int] = {}
    other: dict[str, int] = {}
    given_on: dict[dt.date, int] = {}
    refused_on: dict[dt.date, int] = {}
    demand = fw_scheduler.KIND_DEMAND
    for r in records:
        etype, n, fields, date = r[3], 1, r[4:8], as_date(r[1])
        if etype == events.REPEATED:  # repeats the pump counted instead of storing each (docs/persistence.md)
            etype, n, fields = r[4], r[5], events.unfold(r[4], r[6])
        kind = fields[0]
        if etype == events.BOLUS_REQUESTED and kind == demand:
            requested += n
        elif etype == events.BOLUS_REFUSED and kind == demand:
            refused += n
            refused_on[date] = refused_on.get(date, 0) + n
            why: str = REFUSAL_REASONS.get(fields[1], "reason %d" % fields[1])
            reasons[why] = reasons.get(why, 0) + n
        elif etype == events.BOLUS_STARTED and kind == demand:
            given += 1
            given_on[date] = given_on.get(date, 0) + 1
        elif etype == events.BOLUS_STARTED:
            name: str = BOLUS_KINDS.get(kind, "kind %d" % kind)
            other[name] = other.get(name, 0) + 1
        elif etype in (events.BOLUS_DELIVERED, events.BOLUS_CANCELLED) and kind == demand and (
                fields[2] if etype == events.BOLUS_DELIVERED else fields[3] == events.CANCELLED_UNSAVED):
            # cut short by a reset (b: delivered at least, c: taken off its
            # plan, of which some may have been given) or stopped because the
            # flash could not save it (c: not delivered)
            interrupted += 1
            cut_strokes += fields[1]
            unsure = fields[2] if etype == events.BOLUS_DELIVERED else 0
            cut_unsure += unsure
            c = cut_on.setdefault(date, [0, 0, 0])
            c[0], c[1], c[2] = c[0] + 1, c[1] + fields[1], c[2] + unsure
        elif etype == events.BOLUS_DELIVERED and kind == demand:
            delivered += 1
        elif etype == events.BOLUS_CANCELLED and kind == demand:
            cancelled += 1
    boluses = BolusSummary(requested, given, refused, dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                           delivered, cancelled, other, interrupted, cut_strokes, cut_unsure)

    # alarms
    active = set(alarm_ids(data.status.get("alarms")))
    counts: dict[int, list[Any]] = {}
    for r in records:
        if r[3] in (events.ALARM_RAISED, events.ALARM_ACKNOWLEDGED, events.ALARM_CLEARED):
            c = counts.setdefault(r[4], [0, 0, 0, None])
            c[(events.ALARM_RAISED, events.ALARM_ACKNOWLEDGED, events.ALARM_CLEARED).index(r[3])] += 1
            if r[3] == events.ALARM_RAISED and c[3] is None:
                c[3] = dt.datetime.combine(as_date(r[1]), dt.time()) + dt.timedelta(seconds=r[2])
    alarm_rows = []
    for a in sorted(set(counts) | active):
        c = counts.get(a, [0, 0, 0, None])
        name = alarm_slug(a)  # the one name pumpctl shows for an alarm (pumpctl.report)
        alarm_rows.append(AlarmRow(a, name, 0 <= a < fw_alarms.COUNT and fw_alarms.is_critical(a),
                                   c[0], c[1], c[2], c[3], a in active))

    # refill at this visit, refills in between
    refill_events = [r for r in records if r[3] == events.REFILL]
    at_visit = [r for r in refill_events if r[1] == hi]
    refill = None
    if data.refill is not None:
        refill = _refill_summary(data.refill, at_visit[-1][5] if at_visit else None)
    elif at_visit:
        refill = _refill_summary(_refill_from_event(at_visit[-1]))
    interim = [r for r in refill_events if lo < r[1] < hi]

    # delivery per day and the reservoir gauge, back from the visit
    dmap = {d: (ng, nl) for d, ng, nl in data.delivered if first <= d <= last}
    if len(dmap) != len(data.delivered):
        problems.append("%d delivery rows dated outside %s..%s ignored" % (len(data.delivered) - len(dmap), first, last))
    st = data.status
    level = refill.expected_nl if refill else st["remaining_nl"]
    levels = []
    interim_at = {as_date(r[1]): r for r in interim}
    for d in sorted(dmap, reverse=True):
        levels.append((d, level))  # the gauge at the end of day d
        level += dmap[d][1]
        r = interim_at.get(d)
        if r is not None:  # the gauge read the refill's expected volume at tod r[2]; back to the previous midnight
            level = r[6] + dmap[d][1] * r[2] // S_PER_DAY
    levels.reverse()
    base_day = st.get("day", hi)
    base_tod = st.get("tod_s", 0)
    res = ReservoirSummary(st["remaining_nl"], st["capacity_nl"], st["low_nl"], st["residual_nl"], st["max_daily_nl"],
                           _date_after(base_day, base_tod, st["low_in_s"]),
                           _date_after(base_day, base_tod, st["empty_in_s"]), tuple(levels),
                           tuple((as_date(r[1]), _refill_summary(_refill_from_event(r))) for r in interim))

    days = []
    d = first
    while d <= last:
        ng, nl = dmap.get(d, (None, None))
        days.append(DayRow(d, ng, nl, day_means.get(d), len(by_day.get(d, ())), given_on.get(d, 0), refused_on.get(d, 0),
                           data.delivery_detail.get(d) if d in dmap else None, _three(cut_on.get(d, [0, 0, 0]))))
        d += dt.timedelta(days=1)
    total_ng = sum(v[0] for v in dmap.values())
    total_nl = sum(v[1] for v in dmap.values())
    # The means are the interval drug's over the time it alone was given: a
    # day with another drug's strokes (a drug change) holds only part of it.
    # Each day counts for the time its figures cover (VisitSummary).
    alone = [r for r in days if r.date in dmap and not (r.delivery and r.delivery.other)]
    spans = {r.date: _covered(r, last, st) for r in alone}
    alone = [r for r in alone if spans[r.date][1] > spans[r.date][0]]
    span_s = sum(spans[r.date][1] - spans[r.date][0] for r in alone)
    mean_ng = Fraction(sum(dmap[r.date][0] for r in alone) * S_PER_DAY, span_s) if span_s else None
    mean_nl = Fraction(sum(dmap[r.date][1] for r in alone) * S_PER_DAY, span_s) if span_s else None
    mean_from = _moment(alone[0].date, spans[alone[0].date][0]) if alone else None
    mean_to = _moment(alone[-1].date, spans[alone[-1].date][1]) if alone else None
    covered_days = sum((r.delivery.days if r.delivery else 1) for r in alone)
    gaps = (alone[-1].date - alone[0].date).days + 1 - covered_days if alone else 0
    pains = [e.pain for e in entries]

    rows = therapy_rows(old, new)
    changed = any(r.changed for r in rows)
    summary = VisitSummary(
        device=dict(data.device), visit_date=last, previous_visit=first, interval_days=(last - first).days,
        drug=drug, unit=unit, diary=tuple(entries),
        pain_mean=sum(day_means.values(), Fraction(0)) / len(day_means) if day_means else None,
        pain_min=min(pains) if pains else None, pain_max=max(pains) if pains else None,
        days_with_diary=len(by_day), days=tuple(days), total_dose_ng=total_ng, total_volume_nl=total_nl,
        days_with_delivery_data=len(dmap), mean_daily_dose_ng=mean_ng, mean_days=len(alone),
        mean_daily_volume_nl=mean_nl, mean_span_s=span_s, mean_from=mean_from, mean_to=mean_to,
        mean_gaps=max(gaps, 0),
        boluses=boluses, alarms=tuple(alarm_rows), refill=refill, reservoir=res, therapy=tuple(rows),
        therapy_changed=changed, attention=(), problems=tuple(problems),
        stroke_nl=int(data.device.get("stroke_nl") or 0), conc_ng_ml=old.conc_ng_ml if old else 0)
    return dataclasses.replace(summary, attention=tuple(_attention(summary)))


def _three(v: list[int]) -> tuple[int, int, int]:
    return v[0], v[1], v[2]


def _covered(row: DayRow, visit_date: dt.date, status: dict[str, Any]) -> tuple[int, int]:
    """The seconds of its day (from, to) a day row's figures cover: its
    DayDelivery's span; without one the whole day, the visit day until the
    visit (the status's time)."""
    if row.delivery is not None:
        return row.delivery.span_s()
    if row.date == visit_date and as_date(status.get("day", day_number(visit_date))) == visit_date:
        return 0, int(status.get("tod_s", S_PER_DAY))
    return 0, S_PER_DAY


def _span_text(secs: int) -> str:
    hours = Fraction(secs, 3600)
    text = "%s h" % (int(hours) if hours == int(hours) else "%.1f" % float(hours))
    return text + (" (%.1f days)" % (secs / S_PER_DAY) if secs >= 2 * S_PER_DAY else "")


def mean_text(s: VisitSummary) -> str:
    """The mean dose and volume per day, and the one span both are over."""
    if s.mean_daily_dose_ng is None or s.mean_daily_volume_nl is None or s.mean_from is None or s.mean_to is None:
        return "no mean: no time with delivery data of %s alone" % (s.drug or "the drug")
    drug_change = any(d.delivery is not None and d.delivery.other for d in s.days)
    text = "mean %s/day (%s/day) over the %s%s from %s to %s" % (
        fmt_mass(s.mean_daily_dose_ng, s.unit, 3), fmt_volume(s.mean_daily_volume_nl), _span_text(s.mean_span_s),
        " of %s alone" % (s.drug or "the drug") if drug_change else "",
        s.mean_from.strftime("%Y-%m-%d %H:%M"), s.mean_to.strftime("%Y-%m-%d %H:%M"))
    if s.mean_gaps:
        text += " (%d day%s in it left out: no data%s)" % (s.mean_gaps, "s" * (s.mean_gaps != 1),
                                                          " or another drug" if drug_change else "")
    return text


def strokes_text(s: VisitSummary, strokes: int) -> str:
    """Strokes in the drug's unit and mL (when the stroke and concentration
    are known), with the count."""
    if not s.stroke_nl:
        return "%d strokes" % strokes
    nl = strokes * s.stroke_nl
    if not s.conc_ng_ml:
        return "%s (%d strokes)" % (fmt_volume(nl), strokes)
    return "%s (%s, %d strokes)" % (fmt_mass(Fraction(nl * s.conc_ng_ml, NL_PER_ML), s.unit, 3), fmt_volume(nl), strokes)


def interrupted_text(s: VisitSummary, boluses: int, strokes: int, unsure: int) -> str:
    """Demand boluses a reset cut short: what they gave at least and what may have been given too."""
    text = "%d interrupted by a reset or the flash (not completed): at least %s delivered" % (
        boluses, strokes_text(s, strokes))
    if unsure:
        text += ", up to %s more may have been given" % strokes_text(s, unsure)
    return text


def _attention(s: VisitSummary) -> list[str]:
    """The lines to read first, most serious first."""
    out = []
    rf = s.refill
    if rf is not None and rf.warning:
        if rf.discrepancy_nl < 0:
            why = "less came out than the pump computed: over-infusion, a leak or a pocket fill at the last refill?"
        else:
            why = "more came out than the pump computed: under-infusion (stall, occlusion)?"
        out.append("REFILL DISCREPANCY: withdrawn %s, expected %s (%s, %s): %s" % (
            fmt_ml(rf.withdrawn_nl), fmt_ml(rf.expected_nl), fmt_ml(rf.discrepancy_nl),
            fmt_pct(rf.percent), why))
    for a in s.alarms:
        if a.critical and a.raised:
            first = a.first_raised.strftime("%Y-%m-%d %H:%M") if a.first_raised else "-"
            out.append("critical alarm %s raised %d time%s (first %s)%s" % (
                a.name, a.raised, "s" * (a.raised != 1), first, ", still active" if a.active_now else ""))
    for d, r in s.reservoir.interim_refills:
        out.append("refill between visits on %s: withdrawn %s, expected %s (%s)%s" % (
            d, fmt_ml(r.withdrawn_nl), fmt_ml(r.expected_nl), fmt_ml(r.discrepancy_nl),
            ", DISCREPANCY" if r.warning else ""))
    still = [a.name for a in s.alarms if a.active_now]
    if still:
        out.append("active now: %s" % ", ".join(still))
    b = s.boluses
    for d in s.days:
        if d.interrupted[0]:
            out.append("%s: demand boluses: %s (the log's figures; the day's total counts only what the pump "
                       "saved before the reset)" % (d.date, interrupted_text(s, *d.interrupted)))
    if b.refused:
        out.append("%d of %d demand requests refused (%s)" % (
            b.refused, b.requested, ", ".join("%s %d" % kv for kv in b.refused_by_reason.items())))
    res = s.reservoir
    due = s.visit_date + dt.timedelta(days=max(s.interval_days, 1))
    if res.low_date is not None and res.low_date < due:
        out.append("low reservoir projected %s, before a %d-day return (%s)" % (res.low_date, s.interval_days, due))
    if not s.diary:
        out.append("no pain diary entries since the last visit")
    other = sorted({o[4] for d in s.days if d.delivery is not None for o in d.delivery.other})
    if other:
        dates = [d.date for d in s.days if d.delivery is not None and d.delivery.other]
        out.append("another drug in this interval: %s on %s; its doses are listed apart, not added to the %s dose "
                   "(milligrams of two drugs do not add up)" % (", ".join(other), _dates(dates), s.drug or "drug"))
    estimated = [d.date for d in s.days if d.delivery is not None and d.delivery.source == "estimated"]
    if estimated and estimated != [s.visit_date]:
        out.append("delivery on %s estimated from the therapy records (no daily total from the pump)"
                   % _dates(estimated))
    for d in s.days:
        v = d.delivery
        if v is not None and v.source == "pump":
            if v.resets:
                out.append("%s: the pump reset %d time%s without saving: up to %s delivered that day may be uncounted"
                           % (d.date, v.resets, "s" * (v.resets != 1), fmt_volume(v.resets * 32 * _stroke_nl(v))))
            if v.partial:
                out.append("%s: the pump began counting during the day: the day's total is incomplete" % d.date)
            if v.days > 1:
                out.append("%s: the pump's total also holds the next %d day%s (its log could not be written)"
                           % (d.date, v.days - 1, "s" * (v.days != 2)))
    missing = len(s.days) - s.days_with_delivery_data
    if missing > 0 and s.interval_days:  # a second visit the same day: nothing to miss
        out.append("delivery data missing for %d day%s" % (missing, "s" * (missing != 1)))
    out += s.problems
    return out


def _dates(dates: list[dt.date]) -> str:
    return ", ".join(str(d) for d in dates[:5]) + (" and %d more" % (len(dates) - 5) if len(dates) > 5 else "")


def _stroke_nl(v: DayDelivery) -> int:
    for _, n, _, nl in v.kinds:
        if n:
            return nl // n
    return 500  # the emulated mechanism's stroke


def other_drugs(s: "VisitSummary") -> dict[str, int]:
    """Dose (ng) of each other drug than the interval's over its days (a drug change)."""
    out: dict[str, int] = {}
    for d in s.days:
        for _, _, ng, _, drug in (d.delivery.other if d.delivery is not None else ()):
            out[drug] = out.get(drug, 0) + ng
    return out


def by_kind(v: DayDelivery | None, unit: str) -> str:
    """The pump's per-kind figures of a day, in the drug's unit and mL."""
    if v is None:
        return "-"
    if v.source == SO_FAR:
        return "the pump's count so far (day in progress)"
    if v.source != "pump":
        return "estimated (no daily total from the pump)"
    if not v.kinds and not v.other:
        return "nothing delivered"
    return ", ".join(["%s %s (%s)" % (STROKE_KINDS.get(k, "kind %d" % k), fmt_mass(ng, unit, 3), fmt_volume(nl))
                      for k, n, ng, nl in v.kinds]
                     + ["%s %s %s (%s, not in the day's dose)" % (STROKE_KINDS.get(k, "kind %d" % k),
                                                                 fmt_mass(ng, drug_unit(drug), 3), drug,
                                                                 fmt_volume(nl))
                        for k, n, ng, nl, drug in v.other])


# -- text ----------------------------------------------------------------------------------
def _table_lines(rows: list[list[str]], headers: list[str] | None = None) -> list[str]:
    text = table(rows, headers, indent="  ")
    return list(text.split("\n")) if text else []


def _device_line(dev: dict[str, Any]) -> str:
    parts = [str(dev.get("serial", "?"))]
    extra = ", ".join(str(dev[k]) if k != "firmware" else "firmware %s" % dev[k]
                      for k in ("model", "firmware") if dev.get(k))
    return parts[0] + (" (%s)" % extra if extra else "")


def headline(s: VisitSummary) -> dict[str, str]:
    """The one-line facts, label -> text (shared by the text and HTML views)."""
    u = s.unit
    rf = s.refill
    res = s.reservoir
    b = s.boluses
    if rf is None:
        refill = "no refill at this visit"
    else:
        refill = "expected %s, withdrawn %s, difference %s (%s): %s" % (
            fmt_ml(rf.expected_nl), fmt_ml(rf.withdrawn_nl), fmt_ml(rf.discrepancy_nl),
            fmt_pct(rf.percent),
            "WARNING" if rf.warning else "within tolerance")
        if rf.added_nl is not None:
            refill += "; filled %s" % fmt_ml(rf.added_nl)
    delivered = "- (the last visit was today)" if not s.interval_days and not s.days_with_delivery_data else "-"
    if s.days_with_delivery_data:
        delivered = "%s%s (%s) on %d calendar day%s; %s" % (
            s.drug + " " if s.drug else "", fmt_mass(s.total_dose_ng, u, 3), fmt_volume(s.total_volume_nl),
            s.days_with_delivery_data, "s" * (s.days_with_delivery_data != 1), mean_text(s))
        src = [d.delivery.source for d in s.days if d.delivery is not None]
        est = src.count("estimated")
        if src.count("pump") + src.count(SO_FAR):
            delivered += "; the pump's daily totals" + (", %d day%s estimated" % (est, "s" * (est != 1)) if est else "")
        elif est:
            delivered += "; estimated from the therapy records"
        other = other_drugs(s)
        if other:
            delivered += "; also %s, not added (another drug)" % ", ".join(
                "%s %s" % (drug, fmt_mass(ng, drug_unit(drug), 3)) for drug, ng in other.items())
    pain = "no entries"
    if s.diary:
        pain = "%d entries on %d of %d days; mean %s/10 (range %d-%d)" % (
            len(s.diary), s.days_with_diary, len(s.days), fmt_pain(s.pain_mean), s.pain_min, s.pain_max)
    demand = "%d requested, %d given, %d refused" % (b.requested, b.given, b.refused)
    if b.refused_by_reason:
        demand += " (%s)" % ", ".join("%s %d" % kv for kv in b.refused_by_reason.items())
    if b.delivered != b.given:
        demand += "; %d completed" % b.delivered
    if b.cancelled:
        demand += "; %d stopped early" % b.cancelled
    if b.interrupted:
        demand += "; %s" % interrupted_text(s, b.interrupted, b.interrupted_strokes, b.interrupted_unsure)
    if b.other_given:
        demand += "; other boluses: %s" % ", ".join("%s %d" % kv for kv in sorted(b.other_given.items()))
    alarms = "; ".join("%s: raised %d, acknowledged %d, cleared %d%s" % (
        a.name, a.raised, a.acknowledged, a.cleared, ", ACTIVE" if a.active_now else "") for a in s.alarms) or "none"
    reservoir = "%s of %s; low (%s) projected %s, empty %s (every allowed bolus used)" % (
        fmt_volume(res.remaining_nl), fmt_volume(res.capacity_nl), fmt_volume(res.low_nl), res.low_date or "never",
        res.empty_date or "never")
    return {"refill": refill, "reservoir": reservoir, "delivered": delivered, "pain diary": pain,
            "demand boluses": demand, "alarms": alarms}


def day_table(s: VisitSummary) -> tuple[list[str], list[list[str]]]:
    headers = ["date", "dose", "volume", "delivered by kind (pump's daily total)", "pain", "entries",
               "demand given", "refused"]
    rows = [[str(d.date), fmt_mass(d.dose_ng, s.unit, 3), fmt_volume(d.volume_nl),
             (by_kind(d.delivery, s.unit) if d.date != s.visit_date or d.delivery is None
              or d.delivery.source in ("pump", SO_FAR) else "estimated (day in progress)")
             + ("; demand boluses: %s" % interrupted_text(s, *d.interrupted) if d.interrupted[0] else ""),
             fmt_pain(d.pain_mean), str(d.pain_entries), str(d.demand_given), str(d.demand_refused)] for d in s.days]
    return headers, rows


def render_text(s: VisitSummary) -> str:
    out = ["Refill visit %s   pump %s   since %s (%d days)" % (
        s.visit_date, _device_line(s.device), s.previous_visit, s.interval_days), ""]
    out.append("Attention:")
    out += ["  ! " + a for a in s.attention] or ["  nothing flagged"]
    out.append("")
    for k, v in headline(s).items():
        out.append("%-15s %s" % (k.capitalize(), v))
    out += ["", "Therapy%s:" % (" (changed)" if s.therapy_changed else " (unchanged)")]
    out += _table_lines([[("* " if r.changed else "  ") + r.label, r.old, r.new] for r in s.therapy],
                  ["  (* changed)", "before", "after"])
    noted = [e for e in s.diary if e.note]
    if noted:
        out += ["", "Diary notes:"]
        out += _table_lines([[str(e.date), fmt_tod(e.tod_s), str(e.pain), e.activity, e.note] for e in noted])
    headers, rows = day_table(s)
    out += ["", "Day by day (%s):" % s.unit]
    out += _table_lines(rows, headers)
    return "\n".join(out) + "\n"


# -- HTML ----------------------------------------------------------------------------------
_CSS = """
body{font-family:Helvetica,Arial,sans-serif;color:#111;max-width:60em;margin:1.5em auto;padding:0 1em;font-size:11pt}
h1{font-size:16pt;margin:0 0 .2em} h2{font-size:12.5pt;margin:1.4em 0 .4em;border-bottom:1px solid #999}
.sub{color:#444;margin:0 0 1em}
table{border-collapse:collapse;margin:.3em 0 .8em;font-size:10pt}
th,td{border:1px solid #bbb;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#eee} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.changed td{background:#fff6d5} .attn{border:2px solid #b00;padding:.4em .8em;background:#fff3f3}
.attn li{margin:.15em 0} .ok{border:1px solid #393;padding:.4em .8em;background:#f3fff3}
img{max-width:100%;height:auto;display:block;margin:.3em 0}
.foot{color:#666;font-size:9pt;margin-top:2em}
@media print{body{margin:0;max-width:none;font-size:10pt} h2{break-after:avoid} table,img{break-inside:avoid}}
"""


def _html_table(headers: list[str] | None, rows: list[list[Any]], numeric: frozenset[int] | set[int] = frozenset(),
                row_class: list[str] | None = None) -> str:
    e = html.escape
    out = ["<table>"]
    if headers:
        out.append("<tr>" + "".join("<th>%s</th>" % e(h) for h in headers) + "</tr>")
    for i, r in enumerate(rows):
        cls = ' class="%s"' % row_class[i] if row_class and row_class[i] else ""
        out.append("<tr%s>" % cls + "".join('<td%s>%s</td>' % (' class="n"' if j in numeric else "", e(str(c)))
                                             for j, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def plots(s: VisitSummary) -> dict[str, bytes]:
    """PNG images: dose and pain by day, reservoir gauge with projections, boluses by day."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scale = 10**6 if s.unit == "mg" else 10**3
    dates = [d.date for d in s.days]

    def png(fig: Figure) -> bytes:
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
        return buf.getvalue()

    def dated(ax: Any) -> None:
        loc = AutoDateLocator(maxticks=10)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(loc))
        ax.grid(True, color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)

    out = {}
    # dose and pain
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.add_subplot()
    dd = [(d.date, d.dose_ng / scale) for d in s.days if d.dose_ng is not None]
    ax.bar(date2num([d for d, _ in dd]), [v for _, v in dd], width=0.8, color="#7fa7d6", label="dose")
    ax.set_ylabel("dose (%s/day)" % s.unit)
    dated(ax)
    ax2 = ax.twinx()
    pd = [(d.date, float(d.pain_mean)) for d in s.days if d.pain_mean is not None]
    ax2.plot(date2num([d for d, _ in pd]), [v for _, v in pd], "o-", color="#c0392b", markersize=4, label="pain")
    ax2.set_ylim(0, 10.5)
    ax2.set_ylabel("pain (0-10)")
    fig.legend(loc="outside upper right", ncols=2, frameon=False)
    ax.set_title("Delivered dose and pain score by day", loc="left", fontsize=10)
    out["dose_pain"] = png(fig)

    # reservoir
    r = s.reservoir
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.add_subplot()
    if r.levels:
        ax.plot(date2num([d for d, _ in r.levels]), [v / NL_PER_ML for _, v in r.levels], "-", color="#2c6fbb",
                label="computed gauge")
    if s.refill is not None:
        ax.plot(date2num([s.visit_date]), [s.refill.withdrawn_nl / NL_PER_ML], "x", color="#c0392b", markersize=9,
                mew=2, label="withdrawn at visit")
    proj = [(s.visit_date, r.remaining_nl)]
    if r.low_date:
        proj.append((r.low_date, r.low_nl))
    if r.empty_date:
        proj.append((r.empty_date, r.residual_nl))
    if len(proj) > 1:
        ax.plot(date2num([d for d, _ in proj]), [v / NL_PER_ML for _, v in proj], "--", color="#2c6fbb",
                label="projected")
    for d, v, name, xy, ha in ((r.low_date, r.low_nl, "low", (-6, 6), "right"),
                               (r.empty_date, r.residual_nl, "empty", (6, -3), "left")):
        if d:
            ax.plot(date2num([d]), [v / NL_PER_ML], "o", color="#2c6fbb", markersize=4)
            ax.annotate("%s %s" % (name, d.isoformat()), (float(date2num(d)), v / NL_PER_ML),
                        textcoords="offset points", xytext=xy, ha=ha, fontsize=8)
    right = max([d for d, _ in proj] + [s.visit_date])
    ax.set_xlim(right=float(date2num(right + dt.timedelta(days=12 if r.empty_date else 2))))
    ax.axhline(r.low_nl / NL_PER_ML, color="#e67e22", linestyle=":", linewidth=1, label="low alarm")
    ax.axhline(r.residual_nl / NL_PER_ML, color="#c0392b", linestyle=":", linewidth=1, label="residual (empty)")
    ax.set_ylim(0, r.capacity_nl / NL_PER_ML * 1.05)
    ax.set_ylabel("reservoir (mL)")
    dated(ax)
    ax.legend(fontsize=8, loc="upper right", frameon=False)
    ax.set_title("Reservoir: computed over the interval, projected after the visit", loc="left", fontsize=10)
    out["reservoir"] = png(fig)

    # boluses
    fig = Figure(figsize=(8, 2.6), layout="constrained")
    ax = fig.add_subplot()
    given = [d.demand_given for d in s.days]
    refused = [d.demand_refused for d in s.days]
    ax.bar(date2num(dates), given, width=0.8, color="#27ae60", label="given")
    ax.bar(date2num(dates), refused, width=0.8, bottom=given, color="#c0392b", label="refused")
    ax.set_ylabel("demand boluses")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    dated(ax)
    ax.legend(fontsize=8, loc="upper right", frameon=False)
    ax.set_title("Patient demand boluses by day", loc="left", fontsize=10)
    out["boluses"] = png(fig)
    return out


def html_document(s: VisitSummary) -> str:
    """The whole report as one self-contained HTML page (no external references)."""
    e = html.escape
    imgs = plots(s)

    def img(key: str, alt: str) -> str:
        return '<img alt="%s" src="data:image/png;base64,%s">' % (e(alt), base64.b64encode(imgs[key]).decode("ascii"))

    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             "<title>Refill visit %s - %s</title>" % (s.visit_date, e(str(s.device.get("serial", "")))),
             "<style>%s</style></head><body>" % _CSS,
             "<h1>Refill visit %s</h1>" % s.visit_date,
             '<p class="sub">Pump %s &middot; interval %s to %s (%d days)</p>' % (
                 e(_device_line(s.device)), s.previous_visit, s.visit_date, s.interval_days)]
    if s.attention:
        parts.append('<div class="attn"><strong>Attention</strong><ul>%s</ul></div>'
                     % "".join("<li>%s</li>" % e(a) for a in s.attention))
    else:
        parts.append('<div class="ok">Nothing flagged.</div>')
    parts.append("<h2>Summary</h2>")
    parts.append(_html_table(None, [[k.capitalize(), v] for k, v in headline(s).items()]))
    parts.append("<h2>Therapy: before and after%s</h2>" % (" (changed)" if s.therapy_changed else " (unchanged)"))
    parts.append(_html_table(["", "before", "after"], [[r.label, r.old, r.new] for r in s.therapy],
                             row_class=["changed" if r.changed else "" for r in s.therapy]))
    parts.append("<h2>Dose and pain</h2>" + img("dose_pain", "delivered dose and pain score by day"))
    parts.append("<h2>Reservoir</h2>" + img("reservoir", "reservoir volume and projection"))
    if s.refill is not None:
        rf = s.refill
        parts.append(_html_table(["expected", "withdrawn", "difference", "difference %", "check"],
                                 [[fmt_volume(rf.expected_nl), fmt_volume(rf.withdrawn_nl), fmt_volume(rf.discrepancy_nl),
                                   fmt_pct(rf.percent), "WARNING" if rf.warning else "within tolerance"]],
                                 numeric={0, 1, 2, 3}))
    parts.append("<h2>Demand boluses</h2>" + img("boluses", "demand boluses given and refused by day"))
    b = s.boluses
    parts.append(_html_table(["requested", "given", "refused", "completed", "stopped early", "interrupted (reset)"],
                             [[b.requested, b.given, b.refused, b.delivered, b.cancelled, b.interrupted]],
                             numeric={0, 1, 2, 3, 4, 5}))
    if b.interrupted:
        parts.append("<p>%s.</p>" % e(interrupted_text(s, b.interrupted, b.interrupted_strokes,
                                                        b.interrupted_unsure).capitalize()))
    if b.refused_by_reason:
        parts.append(_html_table(["refusal reason", "count"], [[k, v] for k, v in b.refused_by_reason.items()],
                                 numeric={1}))
    parts.append("<h2>Alarms</h2>")
    if s.alarms:
        parts.append(_html_table(["alarm", "priority", "raised", "first raised", "acknowledged", "cleared", "now"],
                                 [[a.name, "critical" if a.critical else "non-critical", a.raised,
                                   a.first_raised.strftime("%Y-%m-%d %H:%M") if a.first_raised else "-",
                                   a.acknowledged, a.cleared, "active" if a.active_now else "-"] for a in s.alarms],
                                 numeric={2, 4, 5}))
    else:
        parts.append("<p>No alarms.</p>")
    headers, rows = day_table(s)
    parts.append("<h2>Day by day</h2>" + _html_table(headers, rows, numeric={1, 2, 4, 5, 6, 7}))
    parts.append("<h2>Pain diary</h2>")
    if s.diary:
        parts.append(_html_table(["date", "time", "pain", "activity", "note"],
                                 [[str(d.date), fmt_tod(d.tod_s), d.pain, d.activity, d.note] for d in s.diary],
                                 numeric={2}))
    else:
        parts.append("<p>No entries.</p>")
    parts.append('<p class="foot">Reservoir volumes before the visit are the pump\'s computed gauge, not a '
                 "measurement; the withdrawn volume is. Projections assume every allowed bolus is used. "
                 "Generated by pumpctl for a teaching and research device, not a medical device.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_html(s: VisitSummary, path: str | os.PathLike[str]) -> Path:
    """Write the report to `path` (one file, images embedded) and return the path."""
    path = Path(path)
    path.write_text(html_document(s), encoding="utf-8")
    return path
