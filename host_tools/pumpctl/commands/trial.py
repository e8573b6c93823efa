"""The screening trial record (a JSON file on the host; no pump)."""
import json
import os

from pumpctl import units as u
from pumpctl.console import EXIT_OK, Parser

MAX_PLANNED_DAYS = 60  # pumpctl.trial.MAX_PLANNED_DAYS (imported lazily there)


def _side_effect(text):
    from pumpctl import trial
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise trial.TrialError("side effect %r: KIND:SEVERITY[:TEXT], e.g. nausea:mild or other:moderate:dizziness"
                               % text)
    return trial.SideEffect(parts[0].strip(), parts[1].strip(), parts[2].strip() if len(parts) > 2 else "")


def _trial_date(text):
    import datetime as dt
    return dt.date.today() if text in (None, "today") else text


def _rate(text, option):
    # A trial file, no pump: the unit's refusal without "(nothing sent)".
    from pumpctl import trial
    try:
        return u.rate_ng_day(text, option)
    except u.UnitError as e:
        raise trial.TrialError(str(e)) from None


def _mass(text, option):
    from pumpctl import trial
    try:
        return u.mass_ng(text, option)
    except u.UnitError as e:
        raise trial.TrialError(str(e)) from None


def cmd_trial(args):
    from pumpctl import trial
    if args.action == "new":
        if os.path.exists(args.file) and not args.force:
            raise trial.TrialError("%s exists: give --force to replace it" % args.file)
        rate = _rate(args.rate, "starting rate (--rate)") if args.rate else None
        t = trial.Trial(patient_id=args.patient, drug=args.drug, mode=args.mode, start_date=_trial_date(args.start),
                        planned_days=args.days, baseline_pain=args.baseline, rate_ng_day=rate, notes=args.note)
    else:
        t = trial.load(args.file)
        if args.action == "screen":
            t.record_screening(args.item, args.answer, args.note)
        elif args.action == "baseline":
            t.baseline_pain = trial._pain(args.pain, "baseline pain score")
        elif args.action == "day":
            t.add_entry(trial.DailyEntry(date=_trial_date(args.date), pain=args.pain,
                                         side_effects=[_side_effect(x) for x in args.side_effect or []],
                                         note=args.note), replace=args.replace)
        elif args.action == "titrate":
            t.add_titration(trial.Titration(date=_trial_date(args.date),
                                            rate_ng_day=_rate(args.rate, "titration rate (--rate)"), note=args.note))
        elif args.action == "inject":
            t.add_injection(trial.Injection(time=args.time, dose_ng=_mass(args.dose, "injection dose (--dose)"),
                                            route=args.route, note=args.note))
        elif args.action == "decide":
            trial.decide(t, args.name, args.decision, args.note,
                         date=None if args.date is None else trial._date(args.date, "decision date (--date)"),
                         replace=args.replace)
        elif args.action == "extend":
            t.extend(args.days)
    if args.action != "evaluate":
        trial.save(t, args.file)
    ev = trial.evaluate(t)
    if args.json:
        print(json.dumps({"trial": t.to_dict(), "outcome": ev.outcome.value, "recommendation": ev.recommendation,
                          "reduction_percent": None if ev.reduction_percent is None else float(ev.reduction_percent),
                          "meets_50_percent": ev.meets_50_percent}, indent=2, sort_keys=True, default=str))
    elif args.action in ("evaluate", "decide"):
        print(trial.render_text(t, ev))
    else:
        print("%s: %s saved (%d day(s) recorded); %s" % (args.action, args.file, ev.days_recorded, ev.recommendation))
    return EXIT_OK


def add_parser(sub):
    t = sub.add_parser("trial", help="screening trial record (a JSON file; no pump needed)",
                       description="screening trial record: docs/clinical-path.md section 1")
    ts = t.add_subparsers(dest="action", required=True, parser_class=Parser)

    def act(name, help):
        s = ts.add_parser(name, help=help, description=help.replace("%%", "%"))
        s.add_argument("--file", required=True, help="the trial record (JSON)")
        s.add_argument("--json", action="store_true", help="machine-readable output")
        s.set_defaults(func=cmd_trial)
        return s

    s = act("new", "start a trial record")
    s.add_argument("--patient", required=True, help="patient pseudonym (never real patient data)")
    s.add_argument("--drug", required=True)
    s.add_argument("--mode", choices=("continuous", "injection"), required=True)
    s.add_argument("--start", help="day 1, YYYY-MM-DD (default today)")
    s.add_argument("--days", type=int, required=True, help="planned days, 1 to %d (continuous: from 2)"
                   % MAX_PLANNED_DAYS)
    s.add_argument("--baseline", type=int, required=True, help="pain score 0-10 before the trial")
    s.add_argument("--rate", help="continuous: starting rate, e.g. 0.5mg/day")
    s.add_argument("--note", default="")
    s.add_argument("--force", action="store_true", help="replace an existing file")
    s = act("screen", "record a screening answer")
    s.add_argument("item", help="failed_conservative_care, surgery_not_indicated, no_substance_abuse, "
                                "psychological_evaluation")
    s.add_argument("answer", choices=("yes", "no", "unknown"))
    s.add_argument("--note", default="")
    s = act("baseline", "set the baseline pain score")
    s.add_argument("pain", type=int)
    s = act("day", "record a day's pain score and side effects")
    s.add_argument("--date", help="YYYY-MM-DD (default today)")
    s.add_argument("--pain", type=int, required=True)
    s.add_argument("--side-effect", action="append", help="KIND:SEVERITY[:TEXT], e.g. nausea:mild (repeat)")
    s.add_argument("--note", default="")
    s.add_argument("--replace", action="store_true", help="correct an existing entry for the date")
    s = act("titrate", "change the continuous rate")
    s.add_argument("--date", help="YYYY-MM-DD (default today)")
    s.add_argument("--rate", required=True, help="e.g. 1mg/day")
    s.add_argument("--note", default="")
    s = act("inject", "record a test injection")
    s.add_argument("--time", required=True, help="YYYY-MM-DDTHH:MM")
    s.add_argument("--dose", required=True, help="e.g. 0.1mg")
    s.add_argument("--route", choices=("intrathecal", "epidural"), default="intrathecal")
    s.add_argument("--note", default="")
    act("evaluate", "evaluate against the 50 %% criterion (the physician decides)")
    s = act("decide", "record the physician's decision beside the tool's recommendation")
    s.add_argument("--name", required=True)
    s.add_argument("--decision", required=True, choices=("implant", "no implant", "extend or repeat trial"))
    s.add_argument("--date", help="YYYY-MM-DD, not before the trial's first day (default today)")
    s.add_argument("--note", default="")
    s.add_argument("--replace", action="store_true", help="correct the decision already recorded")
    s = act("extend", "change the planned days (e.g. to record days after the planned end)")
    s.add_argument("--days", type=int, required=True, help="planned days, 1 to %d (continuous: from 2)"
                   % MAX_PLANNED_DAYS)
