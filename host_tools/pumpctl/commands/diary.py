"""The patient's pain diary: an entry (patient role) and the listing (clinician)."""

from pumpctl import units as u
from pumpctl.console import EXIT_OK, emit, note, table, write_csv
from pumpctl.fw import link_commands as lc
from pumpctl.session import connected, read_log, session_role


def diary_payload(pain, activity, note_text):
    """The DIARY request of an entry, checked (UnitError names what is wrong)."""
    if not 0 <= pain <= lc.PAIN_MAX:
        raise u.UnitError("pain score %d: give 0 (none) to %d (worst)" % (pain, lc.PAIN_MAX))
    if activity not in lc.ACTIVITIES:
        raise u.UnitError("activity %r: one of %s" % (activity, ", ".join(lc.ACTIVITIES)))
    return {"pain": pain, "activity": activity, "note": u.diary_note(note_text)}


def cmd_diary(args):
    payload = diary_payload(args.pain, args.activity, args.note)
    with connected(args, session_role(args, "patient")) as c:
        r = c.request(lc.DIARY, payload)
    emit(args, r, "diary entry %d recorded" % r["seq"])
    return EXIT_OK



DIARY_HEADERS = ["seq", "date", "time", "pain", "activity", "note"]


def cmd_diary_list(args):
    with connected(args, session_role(args, "clinician")) as c:
        recs, _ = read_log(c, args.first)
    entries, unreadable = diary_entries(recs)
    rows = [[e.seq, e.date.isoformat(), u.fmt_tod(e.tod_s), e.pain, e.activity, e.note] for e in entries]
    for msg in unreadable:
        note("unreadable diary record: %s" % msg)
    if args.csv:
        return write_csv(args.csv, DIARY_HEADERS, rows, "diary entries")
    emit(args, {"entries": [dict(zip(DIARY_HEADERS, r)) for r in rows], "unreadable": unreadable},
         lambda: table(rows, DIARY_HEADERS) if rows else "no diary entries")
    return EXIT_OK


def diary_entries(recs):
    """(diary entries, reasons of unreadable ones) among event log records."""
    from pumpctl import diary
    entries, unreadable = [], []
    for r in recs:
        if r[3] != diary.events.DIARY:
            continue
        try:
            entries.append(diary.decode(r))
        except diary.DiaryError as e:
            unreadable.append(str(e))
    return entries, unreadable
