"""Reading the pump: status, interrogate, alarms (and acknowledging them), log."""
import sys

from pumpctl import report
from pumpctl import units as u
from pumpctl.console import EXIT_OK, DryRun, emit, write_csv
from pumpctl.fw import alarms, events
from pumpctl.fw import link_commands as lc
from pumpctl.session import connected, earlier_drug, read_log, session_role


def cmd_status(args):
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        ident = c.identity
        earlier = None if args.json else earlier_drug(c, st)  # the text names it; --json has drug_changed_s
    emit(args, {"identity": ident, "status": report.status_json(st)}, lambda: report.status_text(ident, st, earlier))
    return EXIT_OK


def interrogate(c):
    """(identity, STATUS, THERAPY, ALARMS listing, {alarm: raised at}) of a logged-in clinician client."""
    st = c.request(lc.STATUS)
    th = c.request(lc.THERAPY)
    al = c.request(lc.ALARMS)["alarms"]
    return c.identity, st, th, al, alarms_raised_at(c, [a[0] for a in al])


def cmd_interrogate(args):
    with connected(args, session_role(args, "clinician")) as c:
        ident, st, th, al, raised = interrogate(c)
        earlier = None if args.json else earlier_drug(c, st)
    data = {"identity": ident, "status": report.status_json(st), "therapy": dict(th, rx=u.labelled_rx(th.get("rx"))),
            "alarms": report.alarm_rows(al, raised)}
    emit(args, data, lambda: "\n\n".join([report.status_text(ident, st, earlier),
                                          "therapy:\n" + report.therapy_text(th),
                                          "alarms:\n" + report.alarms_text(al, raised)]))
    return EXIT_OK


def cmd_alarms(args):
    with connected(args, session_role(args, "clinician")) as c:
        al = c.request(lc.ALARMS)["alarms"]
        acked = []
        if args.ack is not None:
            ids = [a[0] for a in al] if args.ack == "all" else [_alarm_id(args.ack)]
            if getattr(args, "dry_run", False):
                raise DryRun("ack", [{"alarm": a} for a in ids], {
                    "alarms": report.alarm_rows(al), "would_acknowledge": [report.alarm_slug(a) for a in ids]})
            acked = acknowledge(c, ids)
            al = c.request(lc.ALARMS)["alarms"]
        raised = alarms_raised_at(c, [a[0] for a in al]) if al else {}
    emit(args, {"alarms": report.alarm_rows(al, raised), "acknowledged": acked},
         lambda: "\n".join(["acknowledged %s: %s" % (a["name"], ack_text(a)) for a in acked]
                           + [report.alarms_text(al, raised)]))
    return EXIT_OK


def ack_text(a):
    if not a["acknowledged"]:
        return "was not active"
    if a.get("saved") is False:  # obeyed without flash (docs/persistence.md)
        return "yes, but not saved (flash fault): after a reset of the pump it may sound again"
    return "yes"


def acknowledge(c, ids):
    """Acknowledges the alarms `ids` on a logged-in clinician client: [{id, name, acknowledged, saved}]."""
    out = []
    for a in ids:
        r = c.request(lc.ACK_ALARM, {"alarm": a})
        out.append({"id": a, "name": report.alarm_slug(a), "acknowledged": r["acknowledged"],
                    "saved": r.get("saved", True)})
    return out


def alarm_id(text):
    return _alarm_id(text)


def _alarm_id(text):
    a = report.alarm_lookup(text)
    if a is None:
        raise u.UnitError("alarm %r: give an id 0..%d or a name (%s), or 'all'"
                          % (text, alarms.COUNT - 1, ", ".join(report.ALARM_SLUGS)))
    return a


_RAISED_SCAN = 1024  # log records read back to find when the active alarms were raised


def alarms_raised_at(c, ids):
    """{alarm id: (day, tod_s)} of the latest `alarm raised` record of each
    active alarm in the last _RAISED_SCAN log records (a clinician session;
    a patient session cannot read the log and gets {})."""
    want = set(ids)
    if not want or c.role != "clinician":
        return {}
    found = {}
    info = c.request(lc.LOG_READ, {"first": 1, "max": 1})
    last = info["last_seq"]
    end = last
    while want - set(found) and end >= info["first_seq"] and last - end < _RAISED_SCAN:
        start = max(info["first_seq"], end - 127)
        recs, _ = read_log(c, start, end)
        for r in recs:
            if r[3] == events.ALARM_RAISED and r[4] in want:
                found[r[4]] = (r[1], r[2])
        end = start - 1
    return found


def cmd_log(args):
    first = args.first
    with connected(args, session_role(args, "clinician")) as c:
        recs, info = read_log(c, first, args.last, show_progress=sys.stderr.isatty() and not args.json)
        stroke_nl = c.identity.get("stroke_nl")
        conc = (c.request(lc.THERAPY).get("rx") or {}).get("conc")  # the doses of boluses since the last therapy
    if args.csv:
        return write_csv(args.csv, report.LOG_HEADERS, report.log_rows(recs, stroke_nl, conc), "records")
    emit(args, {"first_seq": info["first_seq"], "last_seq": info["last_seq"], "dropped": info["dropped"],
                "records": report.log_records(recs, stroke_nl, conc)},
         lambda: report.log_table(recs, stroke_nl, conc) if recs else "no records")
    return EXIT_OK
