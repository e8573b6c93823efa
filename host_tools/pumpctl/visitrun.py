"""`pumpctl visit`: the refill visit on a pump, and the data for its report.

The report itself is pumpctl.visit (pure). This module reads the pump, keeps
`visits.json` in the report folder (serial -> the last visit's log sequence
number, date and the delivery state at its end), and takes the per-day
delivered dose from the pump's DAILY_TOTAL records (docs/clinical-path.md,
"Delivered per day"); a day without one (the day of the visit, not over yet,
or days logged by firmware without daily totals) is estimated from the
therapy and bolus records, and marked so.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from pumpctl import paths, report, visit
from pumpctl.fw import alarms as fw_alarms
from pumpctl.fw import events, limits

VISITS_FILE = "visits.json"
S_PER_DAY = 86400
KIND_PRIMING = visit.fw_scheduler.KIND_PRIMING
_EXCLUSIVE = (visit.fw_scheduler.KIND_CLINICIAN, KIND_PRIMING)  # basal pauses while these run


# -- visits.json ------------------------------------------------------------------------
def load_visits(report_dir: str | os.PathLike[str]) -> dict[str, Any]:
    f = Path(report_dir) / VISITS_FILE
    if not f.exists():
        return {}
    try:
        data = json.loads(paths.read_text(f, "visits file"))
    except paths.InputFileError as e:
        raise visit.VisitError(str(e)) from None
    except ValueError as e:
        raise visit.VisitError("%s is not valid JSON (%s)" % (f, e)) from None
    if not isinstance(data, dict):
        raise visit.VisitError("%s: expected an object serial -> last visit" % f)
    return data


def save_visits(report_dir: str | os.PathLike[str], data: dict[str, Any]) -> None:
    f = Path(report_dir) / VISITS_FILE
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, f)


def _stops_therapy(alarm: int) -> bool:
    # Every critical alarm stops therapy but the flash fault (docs/safety.md).
    return 0 <= alarm < fw_alarms.COUNT and fw_alarms.is_critical(alarm) and \
        alarm != getattr(fw_alarms, "FLASH_FAULT", -1)


# -- delivered per day ----------------------------------------------------------------------
class DeliveryState:
    """What the pump was doing at a point of the log, as the log tells it."""

    def __init__(self, basal_nl_day: int = 0, running: bool = False, stopped: bool = False,
                 exclusive: int = 0) -> None:
        self.basal_nl_day = basal_nl_day  # THERAPY_PROGRAMMED b: the profile integrated over a day
        self.running = running  # therapy programmed and not suspended
        self.stopped = stopped  # a critical alarm stopped it (until resumed)
        self.exclusive = exclusive  # a clinician or priming bolus runs: basal paused

    def rate(self) -> int:
        return self.basal_nl_day if self.running and not self.stopped and not self.exclusive else 0

    def to_dict(self) -> dict[str, Any]:
        return {"basal_nl_day": self.basal_nl_day, "running": self.running, "stopped": self.stopped}

    @classmethod
    def of(cls, d: dict[str, Any] | None) -> DeliveryState:
        d = d or {}
        return cls(int(d.get("basal_nl_day", 0)), bool(d.get("running")), bool(d.get("stopped")))


def delivered_by_day(records: list[tuple], start: tuple[int, int], end: tuple[int, int], state: DeliveryState,
                     stroke_nl: int, conc_ng_ml: int) -> tuple[list[tuple[int, int, int]], DeliveryState]:
    """Programmed/computed delivery per day between start and end, (day, tod_s)
    pump times: [(day, dose_ng, volume_nl)], and the state at the end.

    Basal: the rate of the last THERAPY_PROGRAMMED record (nL/day, the profile
    integrated over a day, spread evenly over the day), accrued while the
    therapy runs: not after THERAPY_SUSPENDED or a critical alarm (every
    critical alarm but the flash fault stops therapy) until THERAPY_RESUMED or a new
    THERAPY_PROGRAMMED, nor while a clinician or priming bolus runs. Boluses:
    the strokes of each BOLUS_DELIVERED / BOLUS_CANCELLED record (delivered
    strokes) on the day it ended, priming excluded (volume, not dose).
    Dose = volume x the interval's concentration (a concentration changes only
    at a refill, i.e. at a visit)."""
    vol: dict[int, Fraction] = {}

    def accrue(t0: int, t1: int, rate: int) -> None:
        # t0, t1: seconds since the epoch (pump time)
        while rate and t0 < t1:
            day = t0 // S_PER_DAY
            stop = min(t1, (day + 1) * S_PER_DAY)
            vol[day] = vol.get(day, Fraction(0)) + Fraction(rate * (stop - t0), S_PER_DAY)
            t0 = stop

    def add(day: int, nl: int) -> None:
        vol[day] = vol.get(day, Fraction(0)) + nl

    t_start = start[0] * S_PER_DAY + start[1]
    t_end = end[0] * S_PER_DAY + end[1]
    t = t_start
    for r in sorted(records, key=lambda r: r[0]):
        seq, day, tod, etype = r[:4]
        when = min(max(day * S_PER_DAY + tod, t_start), t_end)
        accrue(t, when, state.rate())
        t = max(t, when)
        if etype == events.THERAPY_PROGRAMMED:
            state.basal_nl_day, state.running, state.stopped = r[5], True, False
        elif etype == events.THERAPY_SUSPENDED:
            state.running = False
        elif etype == events.THERAPY_RESUMED:
            state.running, state.stopped = True, False
        elif etype == events.ALARM_RAISED and _stops_therapy(r[4]):
            state.stopped = True
            state.exclusive = 0  # stopping clears the bolus
        elif etype == events.BOLUS_STARTED and r[4] in _EXCLUSIVE:
            state.exclusive = r[4]
        elif etype in (events.BOLUS_DELIVERED, events.BOLUS_CANCELLED):
            if r[4] == state.exclusive:
                state.exclusive = 0
            if r[4] != KIND_PRIMING and t_start <= day * S_PER_DAY + tod <= t_end:
                add(day, r[5] * stroke_nl)
    accrue(t, t_end, state.rate())
    rows = []
    for day in sorted(vol):
        nl = vol[day]
        rows.append((day, round(nl * conc_ng_ml / 1_000_000), round(nl)))
    return rows, state


# -- the pump's daily totals ----------------------------------------------------------------
def daily_totals(records: list[tuple], stroke_nl: int, drug: str | None = None) -> dict[int, visit.DayDelivery]:
    """The pump's DAILY_TOTAL records by pump day: per kind (kind, strokes,
    dose_ng, volume_nl), records of the same day and kind added up (the clock
    set back into a day gives it two). Records that name another drug than
    `drug` (a drug change) go apart, into `other`, with their drug's name;
    records of earlier firmware name no drug (their text is the kind).
    docs/protocol.md section 15 has the layout."""
    acc: dict[int, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: r[0]):
        if r[3] != events.DAILY_TOTAL:
            continue
        day, b, strokes, dose = r[4], r[5], r[6], r[7]
        d = acc.setdefault(day, {"kinds": {}, "other": {}, "resets": 0, "partial": False, "days": 1})
        kind, span, _, resets, partial = report.daily_total_fields(b)
        named = r[8].decode("utf-8", "replace") if isinstance(r[8], bytes) else str(r[8] or "")
        if kind and drug and named in limits.DRUGS and named != drug:
            k = d["other"].setdefault((kind, named), [0, 0])
            k[0] += strokes
            k[1] += dose
        elif kind:
            k = d["kinds"].setdefault(kind, [0, 0])
            k[0] += strokes
            k[1] += dose
        d["days"] = max(d["days"], span + 1)
        d["resets"] = max(d["resets"], resets)  # repeated in each kind's record of a part
        d["partial"] = d["partial"] or partial
    out = {}
    for day, d in acc.items():
        kinds = tuple((k, n, ng, n * stroke_nl) for k, (n, ng) in sorted(d["kinds"].items()))
        other = tuple((k, n, ng, n * stroke_nl, name) for (k, name), (n, ng) in sorted(d["other"].items()))
        out[day] = visit.DayDelivery("pump", kinds, d["resets"], d["partial"], d["days"], other)
    return out


def delivered(records: list[tuple], start: tuple[int, int], end: tuple[int, int], state: DeliveryState,
              stroke_nl: int, conc_ng_ml: int, drug: str | None = None
              ) -> tuple[list[tuple[int, int, int]], dict[int, visit.DayDelivery], DeliveryState]:
    """Delivered per day of start..end (pump times): [(day, dose_ng, volume_nl)],
    where each came from {day: DayDelivery}, and the delivery state at the end.
    A day with DAILY_TOTAL records is the pump's count of completed strokes
    (the whole pump day, also the first day of the interval); a day without
    one is estimated by delivered_by_day (priming excluded there). The dose
    is `drug`'s; another drug's strokes count in the volume only."""
    totals = daily_totals(records, stroke_nl, drug)
    estimate, state = delivered_by_day(records, start, end, state, stroke_nl, conc_ng_ml)
    rows, detail = [], {}
    for day, d in totals.items():
        if start[0] <= day <= end[0]:
            rows.append((day, sum(k[2] for k in d.kinds), sum(k[3] for k in d.kinds + d.other)))
            detail[day] = d
    covered = {day + i for day, d in totals.items() for i in range(1, d.days)}  # merged into an earlier day's
    for day, ng, nl in estimate:
        if day not in detail and day not in covered:
            rows.append((day, ng, nl))
            # the part of the interval in the day: from the start, to the end
            detail[day] = visit.DayDelivery("estimated", from_s=start[1] if day == start[0] else 0,
                                            to_s=end[1] if day == end[0] else S_PER_DAY)
    return sorted(rows), detail, state


def with_today(rows: list[tuple[int, int, int]], detail: dict[int, visit.DayDelivery], st: dict[str, Any],
               start_day: int) -> list[tuple[int, int, int]]:
    """The visit day from the pump's own count of the day in progress (its
    status: today_nl, today_dose_ng), when the interval holds the whole day
    and no daily total covers it; else the rows as they were (firmware
    without today_dose_ng: estimated)."""
    day = st["day"]
    d = detail.get(day)
    if "today_dose_ng" not in st or start_day >= day or (d is not None and d.source != "estimated"):
        return rows
    detail[day] = visit.DayDelivery(visit.SO_FAR, to_s=st["tod_s"])  # midnight until the status's time
    return sorted([r for r in rows if r[0] != day] + [(day, st["today_dose_ng"], st["today_nl"])])


# -- the visit ----------------------------------------------------------------------------
FIRST_FILL = (events.RESERVOIR_SET, events.THERAPY_PROGRAMMED, events.REFILL)


def first_interval(records: list[tuple]) -> list[tuple]:
    """A pump's first interval starts at its first fill or first therapy (the
    implant), else at its first dated record: the records from there on, by
    sequence number. Those before (factory boot, provisioning, a clock set
    before the implant) are not the patient's."""
    recs = sorted(records, key=lambda r: r[0])
    for i, r in enumerate(recs):
        if r[3] in FIRST_FILL and r[1] > 0:
            return recs[i:]
    return [r for r in recs if r[1] > 0]


def report_path(report_dir: str | os.PathLike[str], serial: str, date: dt.date, n: int = 1) -> Path:
    """The report file of a pump's visit on `date`: visit-<serial>-<date>.html,
    the n-th visit of that day visit-<serial>-<date>-<n>.html."""
    return Path(report_dir) / ("visit-%s-%s%s.html" % (paths.file_part(serial), date.isoformat(),
                                                       "-%d" % n if n > 1 else ""))


def write_report(document: str, report_dir: str | os.PathLike[str], serial: str, date: dt.date) -> Path:
    """Write a visit report under a name no earlier report has: a second
    visit the same day gets -2, a third -3, ... (a report is a record: never
    overwritten). The file appears whole or not at all. Returns its path."""
    first = report_path(report_dir, serial, date)
    tmp = first.with_name(".%s.%d.tmp" % (first.name, os.getpid()))
    tmp.write_text(document, encoding="utf-8")
    try:
        n = 1
        while True:
            path = report_path(report_dir, serial, date, n)
            try:
                os.link(tmp, path)  # fails if the name is taken: never replaces a file
                return path
            except FileExistsError:
                n += 1
    finally:
        tmp.unlink()
