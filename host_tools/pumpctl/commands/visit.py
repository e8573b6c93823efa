"""The refill visit: the guided refill, then the report of the interval
since the last visit from the event log."""
import dataclasses
import os
import traceback

from pumpctl import units as u
from pumpctl.commands.therapy import refill_done_text, refill_workflow, rx_option
from pumpctl.console import DEBUG_ENV, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK, emit, fail, note
from pumpctl.fw import link_commands as lc
from pumpctl.session import connected, read_log, session_role


def cmd_visit(args):
    """Refill visit: the guided refill (and new prescription), then the report
    of the interval since the last visit (pumpctl.visit) from the event log."""
    from pathlib import Path

    from pumpctl import visit, visitrun
    withdrawn = u.volume_nl(args.withdrawn, "withdrawn volume")
    added = u.volume_nl(args.added, "added volume")
    rx = rx_option(args)
    report_dir = Path(args.report_dir)
    visits = visitrun.load_visits(report_dir)
    with connected(args, session_role(args, "clinician")) as c:
        ident = dict(c.identity)
        serial = ident["serial"]
        prev = visits.get(serial)
        before = c.request(lc.THERAPY)
        done = refill_workflow(args, c, withdrawn, added, rx)
        st = c.request(lc.STATUS)
        after = c.request(lc.THERAPY)
        first = int(prev["seq"]) + 1 if prev else 1
        recs, info = read_log(c, first)
    try:
        return _visit_report(args, report_dir, visits, ident, prev, first, before, done, st, after, recs, info, added)
    except (visit.VisitError, OSError) as e:
        return fail(args, EXIT_INPUT, "REPORT", "the refill was recorded, but the report failed: %s" % e,
                     extra={"changed": True, "refill": done})
    except Exception as e:  # a bug in the report: still say what happened on the pump
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        return fail(args, EXIT_INTERNAL, "INTERNAL", "the refill was recorded, but the report failed (internal error "
                     "%s: %s); rerun with %s=1 for the details" % (type(e).__name__, e, DEBUG_ENV),
                     extra={"changed": True, "refill": done})


def _visit_report(args, report_dir, visits, ident, prev, first, before, done, st, after, recs, info, added):
    from pumpctl import visit, visitrun
    serial = ident["serial"]
    problems = []
    if info["first_seq"] > first:
        problems.append("event log records %d..%d were overwritten before this visit" % (first, info["first_seq"] - 1))
    lost = info.get("dropped", 0) - int(prev.get("dropped", 0) if prev else 0)
    if prev is not None and lost > 0 and info["first_seq"] <= first:
        # The activity ring (diary, demand presses) rolls off on its own: its
        # losses show only in the count of records dropped.
        problems.append("%d event log record(s) since the last visit were overwritten (diary entries or demand "
                        "presses: the pump keeps its clinical records apart)" % lost)
    end = (st["day"], st["tod_s"])
    if prev is None:  # the first visit: the log from the first fill on
        recs = visitrun.first_interval(recs)
    start = (int(prev["day"]), int(prev["tod_s"])) if prev else ((recs[0][1], recs[0][2]) if recs else (st["day"], 0))
    old_rx = before.get("rx")
    conc = old_rx["conc"] if old_rx else st.get("conc_ng_ml", 0)
    drug = old_rx["drug"] if old_rx else st.get("drug")
    rows, detail, state = visitrun.delivered(recs, start, end, visitrun.DeliveryState.of(prev and prev.get("delivery")),
                                             ident["stroke_nl"], conc, drug)
    rows = visitrun.with_today(rows, detail, st, start[0])
    new_rx = after.get("rx")
    data = visit.VisitData(
        device=ident, visit_date=visit.as_date(st["day"]), previous_visit=visit.as_date(start[0]),
        records=[r for r in recs if start[0] <= r[1] <= st["day"]], status=st, refill=done,
        old_rx=old_rx, new_rx=new_rx if new_rx != old_rx else None,
        delivered=[(visit.as_date(day), ng, nl) for day, ng, nl in rows], delivery_detail=detail)
    summary = visit.summarize(data)
    date = visit.as_date(st["day"])
    report_dir.mkdir(parents=True, exist_ok=True)
    path = visitrun.write_report(visit.html_document(summary), report_dir, serial, date)
    visits[serial] = {"seq": max([first - 1] + [r[0] for r in recs]), "dropped": info.get("dropped", 0),
                      "date": date.isoformat(), "day": st["day"], "report": path.name,
                      "tod_s": st["tod_s"], "delivery": state.to_dict()}
    visitrun.save_visits(report_dir, visits)
    for p in problems:
        note("pumpctl: %s" % p)
    emit(args, {"refill": done, "report": str(path), "serial": serial, "visit_date": date.isoformat(),
                "previous_visit": summary.previous_visit.isoformat(),
                "delivered": [_delivered_json(d, ng, nl, data.delivery_detail.get(d)) for d, ng, nl in data.delivered],
                "total_dose_ng": summary.total_dose_ng, "total_volume_nl": summary.total_volume_nl,
                "diary_entries": len(summary.diary), "demand": dataclasses_dict(summary.boluses),
                "attention": list(summary.attention)},
         lambda: "%s\n%s\n%s\nreport: %s" % (
             refill_done_text(done, added), visit.render_text(summary).rstrip("\n"),
             "(delivered: the pump's daily totals of the strokes its motor completed, per kind; the visit day, "
             "not over yet, the pump's own count so far; a day without either is estimated from the therapy "
             "and bolus records; not measured)",
             path))
    return EXIT_OK


def _delivered_json(date, ng, nl, detail):
    row = {"date": date.isoformat(), "dose_ng": ng, "volume_nl": nl,
           "source": detail.source if detail is not None else None}
    if detail is not None and detail.source == "pump":
        from pumpctl import visit
        row["by_kind"] = [{"kind": visit.STROKE_KINDS.get(k, "kind %d" % k), "strokes": n, "dose_ng": d, "volume_nl": v}
                          for k, n, d, v in detail.kinds]
        if detail.other:
            row["other_drugs"] = [{"kind": visit.STROKE_KINDS.get(k, "kind %d" % k), "strokes": n, "dose_ng": d,
                                   "volume_nl": v, "drug": drug} for k, n, d, v, drug in detail.other]
        row["unclean_resets"] = detail.resets
    return row


def dataclasses_dict(obj):
    return dataclasses.asdict(obj)
