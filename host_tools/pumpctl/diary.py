"""Pain diary entries as the pump stores them: one events.DIARY record each.

Payload of an events.DIARY record (seq, day, tod_s, etype, a, b, c, d, text):

    day, tod_s  when the patient made the entry (the pump's clock)
    a           pain score, whole number 0..10 (NRS: 0 no pain, 10 worst imaginable)
    b           activity code: index into ACTIVITIES
    c           link session id the entry came in on (set by the pump; ignored here)
    d           0 (reserved)
    text        note, UTF-8, at most NOTE_MAX (32) bytes

The vocabulary and limits are the firmware's own (firmware/link_commands.py:
ACTIVITIES, PAIN_MAX, NOTE_MAX), imported here, so a code means the same on
both sides and cannot drift. Adding an activity means appending to that tuple,
never reordering it: stored codes are indexes.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pumpctl.fw import events
from pumpctl.fw import link_commands as lc

ACTIVITIES: tuple[str, ...] = tuple(lc.ACTIVITIES)
PAIN_MAX: int = lc.PAIN_MAX
NOTE_MAX: int = lc.NOTE_MAX
EPOCH = dt.date(1970, 1, 1)  # the pump's day 0

Record = tuple[int, int, int, int, int, int, int, int, bytes]  # (seq, day, tod_s, etype, a, b, c, d, text)


class DiaryError(ValueError):
    """A diary entry or record that is not valid; the message says what."""


@dataclass(frozen=True)
class DiaryEntry:
    seq: int  # event-log sequence number (0 before it is stored)
    date: dt.date
    tod_s: int
    pain: int
    activity: str
    note: str


def check(pain: int, activity: str, note: str = "") -> None:
    """Refuse what the pump would refuse, with the reason."""
    if type(pain) is not int or not 0 <= pain <= PAIN_MAX:
        raise DiaryError("pain score must be a whole number 0-%d, got %r" % (PAIN_MAX, pain))
    if activity not in ACTIVITIES:
        raise DiaryError("activity must be one of: %s (got %r)" % (", ".join(ACTIVITIES), activity))
    if not isinstance(note, str):
        raise DiaryError("note must be text, got %r" % (note,))
    n = len(note.encode("utf-8"))
    if n > NOTE_MAX:
        raise DiaryError("note is %d bytes of UTF-8; at most %d fit" % (n, NOTE_MAX))


def encode(pain: int, activity: str, note: str = "") -> tuple[int, int, bytes]:
    """(a, b, text) of the DIARY record for an entry."""
    check(pain, activity, note)
    return pain, ACTIVITIES.index(activity), note.encode("utf-8")


def link_args(pain: int, activity: str, note: str = "") -> dict[str, int | str]:
    """Arguments of the link's DIARY command (the pump encodes them itself)."""
    check(pain, activity, note)
    return {"pain": pain, "activity": activity, "note": note}


def decode(record: Record) -> DiaryEntry:
    """A DIARY record back to an entry. Raises DiaryError for another record
    type or a payload the pump would never have stored."""
    seq, day, tod_s, etype, a, b, _c, _d, text = record
    if etype != events.DIARY:
        raise DiaryError("record %d is %s, not a diary entry" % (seq, events.NAMES.get(etype, etype)))
    if not 0 <= a <= PAIN_MAX:
        raise DiaryError("diary record %d: pain score %d outside 0-%d" % (seq, a, PAIN_MAX))
    if not 0 <= b < len(ACTIVITIES):
        raise DiaryError("diary record %d: unknown activity code %d" % (seq, b))
    note = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    return DiaryEntry(seq, EPOCH + dt.timedelta(days=day), tod_s, a, ACTIVITIES[b], note)
