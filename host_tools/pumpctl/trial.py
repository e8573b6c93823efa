"""Intrathecal therapy trial: the physician's record and its evaluation.

Data in, data out. `Trial` holds what was recorded (screening answers,
baseline pain, test injections or a titrated continuous infusion, one pain
entry a day with side effects); `evaluate()` turns it into numbers and a
recommendation line; the physician confirms or overrides it with `decide()`.
The tool never decides, and the screening checklist is recorded, not a gate.
Only `load()` and `save()` touch the filesystem (JSON, written atomically).

Evaluation rules (docs/clinical-path.md says why):
- continuous infusion: mean of the last EVAL_DAYS (3) *recorded* days,
  never day 1 (catheter placement, infusion just started);
- test injections: the pain score of the day of the latest injection (the
  dose tested last); earlier injection days are shown per day;
- reduction = (baseline - mean) / baseline x 100, exact (fractions); the
  criterion is reduction >= 50 %, inclusive; baseline 0 cannot be evaluated;
- side effects from every trial day; any severe one and respiratory
  depression of any severity are flagged as possibly unacceptable.

Pain scores are whole numbers 0-10 (NRS). Doses are integers in the
firmware's units (ng, ng/day); pumpctl.units converts clinician text.
`patient_id` is a pseudonym: never store real patient data here.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any

from pumpctl import paths
from pumpctl import units as u
from pumpctl.fw import limits

FORMAT = "pumpctl-trial"
VERSION = 1

PAIN_MIN, PAIN_MAX = 0, 10
CRITERION_PERCENT = 50  # reduction needed for a successful trial (inclusive)
EVAL_DAYS = 3  # continuous trial: the last 3 recorded days from day 2 on

MODES = ("continuous", "injection")
ROUTES = ("intrathecal", "epidural")
ANSWERS = ("yes", "no", "unknown")
SCREENING_ITEMS = {  # key: the question the physician answers
    "failed_conservative_care": "Conservative (non-operative) treatment has failed",
    "surgery_not_indicated": "Surgery is not an option or not expected to help",
    "no_substance_abuse": "No substance abuse",
    "psychological_evaluation": "Psychological evaluation done",
}
SIDE_EFFECTS = ("nausea", "vomiting", "pruritus", "urinary retention", "sedation",
                "respiratory depression", "headache", "constipation", "other")
SEVERITIES = ("mild", "moderate", "severe")
ALWAYS_FLAGGED = ("respiratory depression",)  # flagged at any severity
DECISIONS = ("implant", "no implant", "extend or repeat trial")
# Bounds of what a screening trial records (docs/clinical-path.md section 1):
# a trial lasts days, a few weeks at most; longer is a typing slip.
MAX_PLANNED_DAYS = 60


class TrialError(ValueError):
    """A trial record or entry that is not valid; the message says which field and why."""


# -- validation helpers -----------------------------------------------------------------
def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise TrialError("%s must be one of: %s (got %r)" % (what, ", ".join(allowed), value))
    return value


def _pain(value: Any, what: str) -> int:
    if type(value) is not int or not PAIN_MIN <= value <= PAIN_MAX:
        raise TrialError("%s must be a whole number %d-%d, got %r" % (what, PAIN_MIN, PAIN_MAX, value))
    return value


def _count(value: Any, what: str, low: int = 0) -> int:
    if type(value) is not int or value < low:
        raise TrialError("%s must be a whole number >= %d, got %r" % (what, low, value))
    return value


def _text(value: Any, what: str, required: bool = False, max_len: int = 500) -> str:
    if not isinstance(value, str):
        raise TrialError("%s must be text, got %r" % (what, value))
    value = value.strip()
    if required and not value:
        raise TrialError("%s must not be empty" % what)
    if len(value) > max_len:
        raise TrialError("%s is longer than %d characters" % (what, max_len))
    return value


def _date(value: Any, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise TrialError("%s must be a date, not a date and time (%r)" % (what, value))
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise TrialError("%s must be a date YYYY-MM-DD, got %r" % (what, value)) from None


def _datetime(value: Any, what: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise TrialError("%s must be a date and time YYYY-MM-DDTHH:MM, got %r" % (what, value)) from None


# -- the record -------------------------------------------------------------------------
@dataclass
class ScreeningAnswer:
    """The physician's answer to one selection question (recorded, not enforced)."""
    answer: str = "unknown"  # yes / no / unknown
    note: str = ""

    def __post_init__(self) -> None:
        self.answer = _choice(self.answer, ANSWERS, "screening answer")
        self.note = _text(self.note, "screening note")


@dataclass
class Injection:
    """One test injection: when, how much (ng) and where."""
    time: dt.datetime
    dose_ng: int
    route: str  # intrathecal / epidural
    note: str = ""

    def __post_init__(self) -> None:
        self.time = _datetime(self.time, "injection time")
        self.dose_ng = _count(self.dose_ng, "injection dose (ng)", 1)
        self.route = _choice(self.route, ROUTES, "injection route")
        self.note = _text(self.note, "injection note")


@dataclass
class SideEffect:
    kind: str  # one of SIDE_EFFECTS
    severity: str  # mild / moderate / severe
    text: str = ""  # required for "other"

    def __post_init__(self) -> None:
        self.kind = _choice(self.kind, SIDE_EFFECTS, "side effect")
        self.severity = _choice(self.severity, SEVERITIES, "severity of %s" % self.kind)
        self.text = _text(self.text, "side effect text", required=self.kind == "other", max_len=100)

    @property
    def label(self) -> str:
        return "other: %s" % self.text if self.kind == "other" else self.kind


@dataclass
class DailyEntry:
    """The day's pain score (0-10) and side effects."""
    date: dt.date
    pain: int
    side_effects: list[SideEffect] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        self.date = _date(self.date, "entry date")
        self.pain = _pain(self.pain, "pain score for %s" % self.date)
        self.side_effects = [s if isinstance(s, SideEffect) else SideEffect(**s) for s in self.side_effects]
        labels = [s.label for s in self.side_effects]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise TrialError("side effect listed twice on %s: %s (give it once, at its worst severity)"
                             % (self.date, ", ".join(dupes)))
        self.note = _text(self.note, "entry note")


@dataclass
class Titration:
    """A change of the continuous infusion rate (ng/day) on a date."""
    date: dt.date
    rate_ng_day: int
    note: str = ""

    def __post_init__(self) -> None:
        self.date = _date(self.date, "titration date")
        self.rate_ng_day = _count(self.rate_ng_day, "titration rate (ng/day)")
        self.note = _text(self.note, "titration note")


@dataclass
class PhysicianDecision:
    """What the physician decided, beside what the tool recommended."""
    name: str
    decision: str  # one of DECISIONS
    date: dt.date
    note: str = ""
    tool_recommendation: str = ""  # the evaluation's line when the decision was taken

    def __post_init__(self) -> None:
        self.name = _text(self.name, "physician name", required=True, max_len=100)
        self.decision = _choice(self.decision, DECISIONS, "decision")
        self.date = _date(self.date, "decision date")
        self.note = _text(self.note, "decision note", max_len=2000)
        self.tool_recommendation = _text(self.tool_recommendation, "tool recommendation", max_len=2000)


def _planned_days(value: Any, mode: str) -> int:
    low = 2 if mode == "continuous" else 1  # day 1 of an infusion is not evaluated
    if type(value) is not int or not low <= value <= MAX_PLANNED_DAYS:
        raise TrialError("planned days (--days) must be a whole number from %d to %d%s, got %r" % (
            low, MAX_PLANNED_DAYS, " for a continuous trial (day 1 is not evaluated)" if low > 1 else "", value))
    return value


def _default_screening() -> dict[str, ScreeningAnswer]:
    return {k: ScreeningAnswer() for k in SCREENING_ITEMS}


@dataclass
class Trial:
    patient_id: str  # a pseudonym, never real patient data
    drug: str
    mode: str  # continuous / injection
    start_date: dt.date  # day 1
    planned_days: int
    baseline_pain: int  # 0-10, before the trial
    rate_ng_day: int | None = None  # continuous: the starting rate
    screening: dict[str, ScreeningAnswer] = field(default_factory=_default_screening)
    injections: list[Injection] = field(default_factory=list)
    titrations: list[Titration] = field(default_factory=list)
    entries: list[DailyEntry] = field(default_factory=list)
    physician_decision: PhysicianDecision | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        self.patient_id = _text(self.patient_id, "patient id", required=True, max_len=64)
        self.drug = _text(self.drug, "drug", required=True, max_len=40).lower()
        self.mode = _choice(self.mode, MODES, "trial mode")
        self.start_date = _date(self.start_date, "start date")
        self.planned_days = _planned_days(self.planned_days, self.mode)
        self.baseline_pain = _pain(self.baseline_pain, "baseline pain score")
        if self.mode == "continuous":
            if self.rate_ng_day is None:
                raise TrialError("a continuous trial needs its starting rate: give --rate, e.g. --rate 0.5mg/day")
            self.rate_ng_day = _count(self.rate_ng_day, "starting rate (--rate, in ng/day)")
            if not self.rate_ng_day:
                raise TrialError("starting rate (--rate) 0/day: a continuous trial infuses the drug; give the "
                                 "rate it starts at, e.g. --rate 0.5mg/day")
            self._within_daily_max(self.rate_ng_day, "starting rate")
        elif self.rate_ng_day is not None:
            raise TrialError("an injection trial has no infusion rate (--rate): record each injection's dose "
                             "instead (`pumpctl trial inject`)")
        screening = _default_screening()
        for key, ans in dict(self.screening).items():
            self._screening_key(key)
            screening[key] = ans if isinstance(ans, ScreeningAnswer) else ScreeningAnswer(**ans)
        self.screening = screening
        self.notes = _text(self.notes, "trial notes", max_len=5000)
        items, self.injections, self.titrations, self.entries = (
            (self.injections, self.titrations, self.entries), [], [], [])
        for i in items[0]:
            self.add_injection(i if isinstance(i, Injection) else Injection(**i))
        for t in items[1]:
            self.add_titration(t if isinstance(t, Titration) else Titration(**t))
        for e in items[2]:
            self.add_entry(e if isinstance(e, DailyEntry) else DailyEntry(**e))
        d = self.physician_decision
        if d is not None and not isinstance(d, PhysicianDecision):
            self.physician_decision = PhysicianDecision(**d)

    # -- days ------------------------------------------------------------------
    @property
    def end_date(self) -> dt.date:
        return self.start_date + dt.timedelta(days=self.planned_days - 1)

    def dates(self) -> list[dt.date]:
        return [self.start_date + dt.timedelta(days=i) for i in range(self.planned_days)]

    def day_number(self, date: dt.date) -> int:
        """1 on the start date."""
        return (date - self.start_date).days + 1

    def _in_window(self, date: dt.date, what: str) -> None:
        if not self.start_date <= date <= self.end_date:
            raise TrialError("%s %s is outside the trial (%s to %s, day 1 to %d): check the date; to record later "
                             "days, extend the trial (`pumpctl trial extend --days N`)"
                             % (what, date, self.start_date, self.end_date, self.planned_days))

    def extend(self, planned_days: int) -> None:
        """Change the planned days (longer, or shorter down to the last day recorded)."""
        days = _planned_days(planned_days, self.mode)
        recorded = [e.date for e in self.entries] + [t.date for t in self.titrations] + \
            [i.time.date() for i in self.injections]
        last = max(recorded, default=None)
        if last is not None and self.day_number(last) > days:
            raise TrialError("planned days (--days) %d would leave out what is recorded up to %s (day %d): give at "
                             "least %d" % (days, last, self.day_number(last), self.day_number(last)))
        self.planned_days = days

    # -- recording ---------------------------------------------------------------
    @staticmethod
    def _screening_key(item: str) -> str:
        if item not in SCREENING_ITEMS:
            raise TrialError("unknown screening item %r (known: %s)" % (item, ", ".join(SCREENING_ITEMS)))
        return item

    def record_screening(self, item: str, answer: str, note: str = "") -> None:
        self.screening[self._screening_key(item)] = ScreeningAnswer(answer, note)

    def add_entry(self, entry: DailyEntry, replace: bool = False) -> None:
        """One entry per date. A second one for the same date is refused unless
        `replace` is given (a deliberate correction), which replaces it."""
        self._in_window(entry.date, "entry date")
        for i, old in enumerate(self.entries):
            if old.date == entry.date:
                if not replace:
                    raise TrialError("there is already an entry for %s (day %d): to correct it, give --replace"
                                     % (entry.date, self.day_number(entry.date)))
                self.entries[i] = entry
                return
        self.entries.append(entry)
        self.entries.sort(key=lambda e: e.date)

    def _within_daily_max(self, rate_ng_day: int, what: str) -> None:
        # The limits the pump itself keeps (docs/limits.md): a trial rate
        # above the drug's 24-hour maximum is a typing slip, not a trial.
        if self.drug in limits.DRUGS:
            most = limits.hard_daily(self.drug)
            if rate_ng_day > most:
                unit = u.drug_unit(self.drug)
                raise TrialError("%s %s/day is above the %s 24-hour maximum, %s/day: check the rate" % (
                    what, u.fmt_mass(rate_ng_day, unit), self.drug, u.fmt_mass(most, unit)))

    def add_injection(self, injection: Injection) -> None:
        if self.mode != "injection":
            raise TrialError("test injections belong to an injection trial; this one is %s" % self.mode)
        self._in_window(injection.time.date(), "injection date")
        if self.drug in limits.DRUGS and injection.dose_ng > limits.DRUGS[self.drug][2]:
            unit = u.drug_unit(self.drug)
            raise TrialError("injection dose %s is above the %s single-bolus maximum, %s: check the dose" % (
                u.fmt_mass(injection.dose_ng, unit), self.drug, u.fmt_mass(limits.DRUGS[self.drug][2], unit)))
        self.injections.append(injection)
        self.injections.sort(key=lambda i: i.time)

    def add_titration(self, titration: Titration) -> None:
        if self.mode != "continuous":
            raise TrialError("rate changes belong to a continuous trial; this one is %s" % self.mode)
        self._in_window(titration.date, "titration date")
        self._within_daily_max(titration.rate_ng_day, "titration rate")
        self.titrations.append(titration)
        self.titrations.sort(key=lambda t: t.date)  # stable: same-day changes keep their order

    def entry_on(self, date: dt.date) -> DailyEntry | None:
        return next((e for e in self.entries if e.date == date), None)

    def rate_on(self, date: dt.date) -> int | None:
        """The infusion rate at the end of `date` (continuous trials)."""
        if self.mode != "continuous":
            return None
        rate = self.rate_ng_day
        for t in self.titrations:
            if t.date <= date:
                rate = t.rate_ng_day
        return rate

    # -- JSON ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def iso(x: Any) -> Any:
            return x.isoformat() if isinstance(x, (dt.date, dt.datetime)) else x
        dec = self.physician_decision
        return {
            "format": FORMAT, "version": VERSION,
            "patient_id": self.patient_id, "drug": self.drug, "mode": self.mode,
            "start_date": iso(self.start_date), "planned_days": self.planned_days,
            "baseline_pain": self.baseline_pain, "rate_ng_day": self.rate_ng_day,
            "screening": {k: {"answer": a.answer, "note": a.note} for k, a in self.screening.items()},
            "injections": [{"time": iso(i.time), "dose_ng": i.dose_ng, "route": i.route, "note": i.note}
                           for i in self.injections],
            "titrations": [{"date": iso(t.date), "rate_ng_day": t.rate_ng_day, "note": t.note}
                           for t in self.titrations],
            "entries": [{"date": iso(e.date), "pain": e.pain, "note": e.note,
                         "side_effects": [{"kind": s.kind, "severity": s.severity, "text": s.text}
                                          for s in e.side_effects]} for e in self.entries],
            "physician_decision": None if dec is None else {
                "name": dec.name, "decision": dec.decision, "date": iso(dec.date), "note": dec.note,
                "tool_recommendation": dec.tool_recommendation},
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        if not isinstance(data, dict):
            raise TrialError("a trial must be a JSON object")
        if data.get("format") != FORMAT:
            raise TrialError("not a trial file (format %r, expected %r)" % (data.get("format"), FORMAT))
        if data.get("version") != VERSION:
            raise TrialError("trial file version %r is not supported (this pumpctl reads %d)"
                             % (data.get("version"), VERSION))
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        try:
            return cls(**fields)
        except TypeError as e:  # a missing or unknown key
            raise TrialError("malformed trial: %s" % e) from None


def load(path: str | os.PathLike[str]) -> Trial:
    try:
        data = json.loads(paths.read_text(path, "trial file"))
    except paths.InputFileError as e:
        raise TrialError(str(e)) from None
    except ValueError as e:
        raise TrialError("trial file %s is not JSON: %s" % (path, e)) from None
    try:
        return Trial.from_dict(data)
    except TrialError as e:
        raise TrialError("trial file %s: %s" % (path, e)) from None


def save(trial: Trial, path: str | os.PathLike[str]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half."""
    path = Path(path)
    text = json.dumps(trial.to_dict(), indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# -- evaluation -------------------------------------------------------------------------
class Outcome(str, Enum):
    MEETS = "meets"
    MEETS_WITH_SIDE_EFFECTS = "meets with side effects"
    DOES_NOT_MEET = "does not meet"
    INSUFFICIENT_DATA = "insufficient data"
    CANNOT_EVALUATE = "cannot evaluate"


@dataclass(frozen=True)
class SideEffectTally:
    label: str  # kind, or "other: text"
    days: int  # days it was recorded
    worst: str  # worst severity
    day_numbers: tuple[int, ...]


@dataclass(frozen=True)
class DayRow:
    day: int
    date: dt.date
    pain: int | None
    reduction_percent: Fraction | None  # against baseline, that day alone
    rate_ng_day: int | None  # continuous: the rate at the end of the day
    injections: tuple[Injection, ...]
    side_effects: tuple[SideEffect, ...]
    evaluated: bool  # part of the evaluation window


@dataclass(frozen=True)
class Evaluation:
    outcome: Outcome
    recommendation: str  # for the physician to confirm or override
    rule: str  # which days were evaluated, in words
    baseline_pain: int
    evaluated_days: tuple[dt.date, ...]  # dates whose scores make the mean
    mean_pain: Fraction | None
    mean_pain_all: Fraction | None  # every recorded day, for reference
    reduction_percent: Fraction | None  # exact; None when undefined
    meets_50_percent: bool
    days_planned: int
    days_recorded: int
    missing_days: tuple[dt.date, ...]  # planned days without an entry
    side_effects: tuple[SideEffectTally, ...]
    unacceptable: tuple[str, ...]  # possibly unacceptable side effects, described
    screening_open: tuple[str, ...]  # questions answered no or unknown
    days: tuple[DayRow, ...]


def reduction_percent(baseline: int, mean: Fraction) -> Fraction | None:
    """(baseline - mean) / baseline x 100, exact; None for baseline 0 (undefined).
    Negative when pain increased."""
    if baseline == 0:
        return None
    return (Fraction(baseline) - Fraction(mean)) * 100 / baseline


def meets_criterion(reduction: Fraction | None) -> bool:
    """The >= 50 % criterion, inclusive: exactly 50 % meets."""
    return reduction is not None and reduction >= CRITERION_PERCENT


def criterion_percent(p: Fraction | None) -> str:
    """One decimal, rounded *down*: a value shown as 50.0 % always meets."""
    if p is None:
        return "undefined"
    tenths = math.floor(p * 10)
    return "%s%d.%d %%" % ("-" if tenths < 0 else "", abs(tenths) // 10, abs(tenths) % 10)


def _window(trial: Trial) -> tuple[list[DailyEntry], str]:
    if trial.mode == "continuous":
        after_day1 = [e for e in trial.entries if e.date > trial.start_date]
        return after_day1[-EVAL_DAYS:], ("mean of the last %d recorded days from day 2 on (day 1, catheter "
                                         "placement and start of infusion, is not evaluated)" % EVAL_DAYS)
    rule = "pain score on the day of the latest test injection"
    if not trial.injections:
        return [], rule
    last = trial.injections[-1].time.date()
    e = trial.entry_on(last)
    return ([e] if e else []), rule


def _days_text(trial: Trial, dates: list[dt.date]) -> str:
    """'day 3' or 'days 3, 4, 5'."""
    return ("day " if len(dates) == 1 else "days ") + ", ".join(str(trial.day_number(d)) for d in dates)


def evaluate(trial: Trial) -> Evaluation:
    used, rule = _window(trial)
    scores = [e.pain for e in used]
    mean = Fraction(sum(scores), len(scores)) if scores else None
    all_scores = [e.pain for e in trial.entries]
    mean_all = Fraction(sum(all_scores), len(all_scores)) if all_scores else None
    red = reduction_percent(trial.baseline_pain, mean) if mean is not None else None
    meets = meets_criterion(red)
    recorded = {e.date for e in trial.entries}
    missing = [d for d in trial.dates() if d not in recorded]

    # side effects, every trial day
    tallies: dict[str, list[tuple[int, str]]] = {}
    unacceptable = []
    for e in trial.entries:
        for s in e.side_effects:
            tallies.setdefault(s.label, []).append((trial.day_number(e.date), s.severity))
            if s.severity == "severe" or s.kind in ALWAYS_FLAGGED:
                unacceptable.append("%s (%s) on day %d" % (s.label, s.severity, trial.day_number(e.date)))
    side = tuple(SideEffectTally(label, len(v), max((sev for _, sev in v), key=SEVERITIES.index),
                                 tuple(n for n, _ in v))
                 for label, v in sorted(tallies.items(), key=lambda kv: (-len(kv[1]), kv[0])))
    screening_open = tuple("%s: %s" % (SCREENING_ITEMS[k], a.answer)
                           for k, a in trial.screening.items() if a.answer != "yes")

    # the recommendation line
    flagged = ", ".join(unacceptable)
    flags = "; possibly unacceptable side effects: %s" % flagged if unacceptable else ""
    if trial.baseline_pain == 0:
        outcome = Outcome.CANNOT_EVALUATE
        text = ("Cannot evaluate: baseline pain 0 (a reduction from 0 is undefined); "
                "record the pain score before the trial" + flags)
    elif mean is None:
        outcome = Outcome.INSUFFICIENT_DATA
        if trial.mode == "injection" and not trial.injections:
            why = "no test injection recorded"
        elif trial.mode == "injection":
            why = "no pain score on the day of the latest injection (%s)" % trial.injections[-1].time.date()
        else:
            why = "no pain score recorded after day 1"
        text = "Insufficient data: %s%s" % (why, flags)
    else:
        based = " on %s" % _days_text(trial, [e.date for e in used])
        if meets and not unacceptable:
            outcome = Outcome.MEETS
            text = ("Trial meets the ≥50 %% criterion (%s reduction%s) with no severe side effects: "
                    "consider implant" % (criterion_percent(red), based))
        elif meets:
            outcome = Outcome.MEETS_WITH_SIDE_EFFECTS
            text = ("Trial meets the ≥50 %% criterion (%s reduction%s) but with possibly unacceptable side "
                    "effects (%s): weigh them before implant" % (criterion_percent(red), based, flagged))
        else:
            assert red is not None  # baseline > 0 and a mean
            outcome = Outcome.DOES_NOT_MEET
            change = ("pain increased by %s" % criterion_percent(-red) if red < 0
                      else "%s reduction" % criterion_percent(red))
            text = ("Trial does not meet the ≥50 %% criterion (%s%s): implant not supported by this trial%s"
                    % (change, based, flags))
    text += ". Physician to confirm or override."

    used_dates = {e.date for e in used}
    rows = []
    for d in trial.dates():
        e = trial.entry_on(d)
        rows.append(DayRow(
            day=trial.day_number(d), date=d, pain=e.pain if e else None,
            reduction_percent=reduction_percent(trial.baseline_pain, Fraction(e.pain)) if e else None,
            rate_ng_day=trial.rate_on(d),
            injections=tuple(i for i in trial.injections if i.time.date() == d),
            side_effects=tuple(e.side_effects) if e else (), evaluated=d in used_dates))
    return Evaluation(
        outcome=outcome, recommendation=text, rule=rule, baseline_pain=trial.baseline_pain,
        evaluated_days=tuple(e.date for e in used), mean_pain=mean, mean_pain_all=mean_all,
        reduction_percent=red, meets_50_percent=meets, days_planned=trial.planned_days,
        days_recorded=len(recorded), missing_days=tuple(missing), side_effects=side,
        unacceptable=tuple(unacceptable), screening_open=screening_open, days=tuple(rows))


def decide(trial: Trial, name: str, decision: str, note: str = "",
           date: dt.date | None = None, replace: bool = False) -> PhysicianDecision:
    """Record the physician's decision with the tool's recommendation beside
    it. A decision already recorded is kept unless `replace` is given (a
    deliberate correction, as for a day's entry); a decision dated before
    the trial's first day is refused."""
    d = PhysicianDecision(name=name, decision=decision, date=date or dt.date.today(), note=note,
                          tool_recommendation=evaluate(trial).recommendation)
    old = trial.physician_decision
    if old is not None and not replace:
        raise TrialError("a decision is already recorded (%s, %s: %s): to correct it, give --replace"
                         % (old.name, old.date, old.decision))
    if d.date < trial.start_date:
        raise TrialError("decision date (--date) %s is before the trial's first day, %s: give the date of the "
                         "decision" % (d.date, trial.start_date))
    trial.physician_decision = d
    return d


# -- text -------------------------------------------------------------------------------
def _mass(ng: int, drug: str) -> str:
    """In the drug's clinical unit (mg or µg, as pumpctl.units); autoscaled for other drugs."""
    if drug in limits.DRUGS:
        scale, unit = (10**6, "mg") if limits.DRUGS[drug][1] >= 10**7 else (10**3, "µg")
    else:
        scale, unit = (10**6, "mg") if ng >= 10**6 else (10**3, "µg")
    return "%s %s" % (("%.3f" % (ng / scale)).rstrip("0").rstrip("."), unit)


_ROUTE_ABBR = {"intrathecal": "IT", "epidural": "EP"}


def render_text(trial: Trial, ev: Evaluation | None = None) -> str:
    """The trial on a terminal: header, screening, day table, evaluation, decision."""
    ev = ev or evaluate(trial)
    out = ["Trial %s: %s, %s, %s to %s (%d days planned)" % (
        trial.patient_id, trial.drug, "continuous infusion" if trial.mode == "continuous" else "test injection",
        trial.start_date, trial.end_date, trial.planned_days), "Baseline pain %d/10" % trial.baseline_pain, ""]
    out.append("Screening (recorded, not a gate):")
    for k, a in trial.screening.items():
        out.append(("  %-52s %-7s %s" % (SCREENING_ITEMS[k], a.answer, a.note)).rstrip())
    out += ["", "  day  date        pain  change     %s  side effects" % ("rate/day  " if trial.mode == "continuous"
                                                                         else "injection            ")]
    for r in ev.days:
        if trial.mode == "continuous":
            given = "%-9s " % _mass(r.rate_ng_day or 0, trial.drug)
        else:
            given = "%-20s " % ", ".join("%s %s %s" % (i.time.strftime("%H:%M"), _mass(i.dose_ng, trial.drug),
                                                        _ROUTE_ABBR[i.route]) for i in r.injections)
        out.append(("%s %3d  %s  %4s  %-9s  %s %s" % (
            "*" if r.evaluated else " ", r.day, r.date, "-" if r.pain is None else r.pain,
            criterion_percent(r.reduction_percent) if r.pain is not None else "", given,
            ", ".join("%s (%s)" % (s.label, s.severity) for s in r.side_effects))).rstrip())
    out.append("  * evaluated: %s" % ev.rule)
    out.append("")
    out.append("Mean pain %s (all recorded days %s), reduction %s; criterion ≥ %d %%: %s" % (
        u.fmt_score(ev.mean_pain), u.fmt_score(ev.mean_pain_all), criterion_percent(ev.reduction_percent),
        CRITERION_PERCENT, "met" if ev.meets_50_percent else "not met"))
    out.append("Days recorded %d of %d%s" % (ev.days_recorded, ev.days_planned, "; missing: %s" % _days_text(
        trial, list(ev.missing_days)) if ev.missing_days else ""))
    if ev.side_effects:
        out.append("Side effects: " + ", ".join("%s %d day%s (worst %s)" % (s.label, s.days, "s" * (s.days != 1), s.worst)
                                                for s in ev.side_effects))
    if ev.screening_open:
        out.append("Screening to review: " + "; ".join(ev.screening_open))
    out += ["", "Recommendation: " + ev.recommendation]
    d = trial.physician_decision
    if d is not None:
        out.append("Physician decision (%s, %s): %s%s" % (d.name, d.date, d.decision, " - " + d.note if d.note else ""))
    else:
        out.append("Physician decision: not yet recorded")
    return "\n".join(out)
