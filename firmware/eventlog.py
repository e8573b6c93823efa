# Event log: append-only, bounded, on flash, numbered. docs/persistence.md
# gives the reasons; docs/storage.md the API.
#
# Two rings, so that what a patient or an unauthenticated sender can cause at
# will never pushes the clinical history out (events.clinical() sorts):
#   clinical ring, files log.*: therapy, boluses given, alarms, faults, refills,
#     implant, provisioning, clinician sessions, commands carried out and the
#     clinician's refused ones;
#   activity ring, files act.*: demand presses and their refusals, refused
#     frames and patient commands, patient sessions, failed logins, diary.
# Each ring rolls off only its own oldest segment.
#
# One sequence number counter for both: every record carries its number, and
# a number is never given to another record, even across reboots. Reads merge
# the rings by number; the numbers of rolled-off records are gaps.
#
# Folding: a record of a kind events.fold_key() names is stored the first
# _FOLD_AFTER times its key is met in a clock hour; later ones are counted, and
# when the hour ends one REPEATED record per key holds how many there were
# and the time of the first and the last. Flash writes of repeats are thus at
# most _FOLD_AFTER + 1 per key per hour, whatever the rate they come at.
#
# On-flash format (little-endian). Ring slot p is in segment s = p // K, file
# <dir>/<prefix><s as 8 hex digits>, at byte HEADER_SIZE + (p - s*K)*RECORD_SIZE.
# K (slots per segment) is fixed when a ring is created, kept in its headers.
#   segment header, 16 bytes:
#     0  4  magic b"EVL2"      4  2  K (u16)        6  2  RECORD_SIZE (u16)
#     8  4  sequence number of the segment's first record
#     12 4  CRC-32 of bytes 0..11
#   (b"EVL1", the single-ring log of earlier firmware: segment number s at 8,
#   records numbered s*K+1..; read as a clinical segment whose first is s*K+1.)
#   record, 64 bytes:
#     0  4  sequence number (u32, first record is 1)
#     4  2  day number since 1970-01-01 (u16)
#     6  1  event type (u8)    7  1  text length (u8, <= TEXT_MAX)
#     8  4  seconds of day (u32, < 86400)
#     12 16 a, b, c, d (i32 each)
#     28 32 text, zero-padded
#     60 4  CRC-32 of bytes 0..59
# A record is valid when its CRC checks out and its number lies between its
# segment's first and the log's next. Reads skip invalid records (counted in
# .corrupt).
#
# Recovery at open: per ring, the newest segment with a valid header, and its
# length, give the next slot. The next sequence number is above the highest
# valid record of either ring by the number of slots behind each ring's last
# valid record (torn, or in a newer segment whose header decayed): a number
# that may have been seen is not given again. Roll-off deletes a ring's
# oldest segment before creating its new one, so the newest (full) segment
# always survives; each ring needs >= 2 segments. dropped() is the number of
# slots rolled off, oldest segment number times K summed over the rings.
import binascii
import os
import struct
from array import array

from micropython import const

import events

RECORD_SIZE = const(64)
TEXT_MAX = const(32)
HEADER_SIZE = const(16)
_MAGIC = b"EVL2"
_MAGIC_V1 = b"EVL1"
_HEADER = "<4sHHII"
_HEADER_CRC = const(12)
_RECORD = "<IHBBIiiii32s"
_RECORD_CRC = const(60)
_CLINICAL = "log."  # the earlier single ring's names: its segments stay readable
_ACTIVITY = "act."
_NAME_LEN = const(12)  # prefix + 8 hex digits
_TOD_END = const(86400)
_ETYPE_MAX = const(0xFF)
_I32_MIN = -0x80000000  # not const: beyond the RP2040's small ints
_I32_MAX = 0x7FFFFFFF
_READ_CHUNK = const(16)  # records per flash read
_SEQ_MAX = const(0x3FFFFFFF)  # sequence numbers stay small ints on the RP2040
_FOLD_AFTER = const(2)  # repeats of a key stored one by one per window ...
_FOLD_WINDOW_S = const(3600)  # ... a clock hour; the rest are counted
_FOLD_SLOTS = const(64)  # keys counted per window; slot 0 takes any beyond


def decode(buf, offset=0):
    # One encoded record -> (seq, day, tod_s, etype, a, b, c, d, text).
    seq, day, etype, n, tod_s, a, b, c, d, text = struct.unpack_from(_RECORD, buf, offset)
    return seq, day, tod_s, etype, a, b, c, d, text[:n]


def _int32(v):
    if not _I32_MIN <= v <= _I32_MAX:
        raise ValueError("payload out of i32 range")


class _Ring:
    # One ring of segment files: slots, roll-off, recovery.
    def __init__(self, log, prefix, k, max_segments):
        if max_segments < 2:
            raise ValueError("max_segments < 2")
        self.log = log
        self.prefix = prefix
        self.k = k
        self.max_segments = max_segments
        self.oldest = 0  # oldest segment number on flash
        self.pos = 0  # next slot
        self.firsts = []  # first sequence number of segments oldest.., 0: header invalid
        self.file = None  # the newest segment, kept open for appends
        self.file_seg = -1
        # Where the last read stopped: every slot before hint_pos holds a
        # number below hint_seq, so a read from hint_seq on starts there.
        self.hint_seq = 0
        self.hint_pos = 0

    def first_seq(self):
        for f in self.firsts:
            if f:
                return f
        return 0

    def path(self, segno):
        return "%s/%s%08x" % (self.log.directory, self.prefix, segno)

    def size(self, segno):
        return os.stat(self.path(segno))[6]

    def header(self, f, segno):
        # (K, first sequence number) of a valid header, else (0, 0).
        h = self.log._header
        if f.readinto(h) != HEADER_SIZE:
            return 0, 0
        magic, k, size, v, crc = struct.unpack(_HEADER, h)
        if size != RECORD_SIZE or not k or crc != binascii.crc32(self.log._header_body):
            return 0, 0
        if magic == _MAGIC and v:
            return k, v
        if magic == _MAGIC_V1 and v == segno and self.prefix == _CLINICAL:
            return k, segno * k + 1
        return 0, 0

    def segment(self, segno):
        # (K, first) of a segment file, (0, 0) if missing or invalid.
        try:
            with open(self.path(segno), "rb") as f:
                return self.header(f, segno)
        except OSError:
            return 0, 0

    def segment_first(self, segno):
        # First number of a valid segment with this ring's K, else 0.
        k, first = self.segment(segno)
        return first if k == self.k else 0

    # Recovery at open.

    def recover(self):
        # Returns (m, u): the highest valid number at the ring's end (or the
        # newest segment's first - 1) and the slots after it whose numbers
        # are unknown.
        log = self.log
        found = []
        n = len(self.prefix)
        for name in os.listdir(log.directory):
            if len(name) == _NAME_LEN and name.startswith(self.prefix):
                try:
                    found.append(int(name[n:], 16))
                except ValueError:
                    pass
        found.sort()
        newest = -1
        decayed = []  # newer segments with an invalid header that hold data
        for segno in reversed(found):
            k = self.segment(segno)[0]
            if k:
                newest = segno
                self.k = k  # the ring's own K wins over the constructor's
                break
            log.corrupt += 1
            if self.size(segno) > HEADER_SIZE:
                decayed.append(segno)
        m = u = 0
        if newest >= 0:
            self.oldest = newest
            floor = newest - self.max_segments + 1
            for segno in found:
                if segno < floor:
                    # Beyond the configured space (max_segments was lowered):
                    # roll off now, so roll-off stays a step at a time.
                    self.remove(segno)
                elif segno < newest:
                    if self.segment(segno)[0] != self.k:
                        log.corrupt += 1
                    elif segno < self.oldest:
                        self.oldest = segno
            self.firsts = [self.segment_first(s) for s in range(self.oldest, newest + 1)]
            # A partly written final record still uses up its slot.
            slots = min((self.size(newest) - HEADER_SIZE + RECORD_SIZE - 1) // RECORD_SIZE, self.k)
            self.pos = newest * self.k + slots
            m = self.firsts[-1] - 1
            m, u = self.scan(newest, slots, m)
        for segno in decayed:
            # Its records may have been read before the header decayed: its
            # slots stay used. (A cut while creating a segment leaves it
            # empty, which costs nothing.)
            self.pos = max(self.pos, (segno + 1) * self.k)
            u += min((self.size(segno) - HEADER_SIZE + RECORD_SIZE - 1) // RECORD_SIZE, self.k)
            if newest < 0:
                self.oldest = max(self.oldest, segno + 1)
        return m, u

    def scan(self, segno, slots, m):
        # (m, u) over the slots of the newest segment.
        buf = bytearray(_READ_CHUNK * RECORD_SIZE)
        mv = memoryview(buf)
        u = 0
        i = 0
        while i < slots:
            want = min(_READ_CHUNK, slots - i)
            got = self.read_slots(segno, i, mv[:want * RECORD_SIZE])[0]
            for j in range(want):
                seq = _check(mv, j * RECORD_SIZE, m + 1, _SEQ_MAX) if j < got else -1
                if seq > 0:
                    m = seq
                    u = 0
                else:
                    u += 1
            i += want
        return m, u

    # Appends.

    def writer(self, seq):
        # The open newest segment, positioned for the next slot; starts a new
        # segment (rolling off the oldest) at a segment's first slot.
        segno = self.pos // self.k
        if self.file is not None and self.file_seg == segno:
            return self.file
        self.close()
        path = self.path(segno)
        if self.segment_first(segno):
            f = open(path, "r+b")
        else:
            self.roll_off(segno)
            f = open(path, "wb")
            h = self.log._header
            struct.pack_into(_HEADER, h, 0, _MAGIC, self.k, RECORD_SIZE, seq, 0)
            struct.pack_into("<I", h, _HEADER_CRC, binascii.crc32(self.log._header_body))
            f.write(h)
            i = segno - self.oldest
            while len(self.firsts) <= i:
                self.firsts.append(0)
            self.firsts[i] = seq
        # Past the end after a lost record: littlefs fills the gap with zeros.
        f.seek(HEADER_SIZE + (self.pos - segno * self.k) * RECORD_SIZE)
        self.file = f
        self.file_seg = segno
        return f

    def abandon(self, f):
        # After a failed write the file position is unknown: the next append
        # reopens and seeks to its slot.
        self.file = None
        try:
            f.close()
        except Exception:
            pass  # the first fault is the one to report

    def roll_off(self, segno):
        # Deletes the oldest segments until segno fits in max_segments.
        while segno - self.oldest >= self.max_segments:
            self.remove(self.oldest)
            self.oldest += 1
            if self.firsts:
                self.firsts.pop(0)

    def remove(self, segno):
        try:
            os.remove(self.path(segno))
        except OSError:
            pass  # already gone: a cut came after the remove, before the next

    def close(self):
        if self.file is not None:
            f = self.file
            self.file = None
            f.close()

    # Reads.

    def start(self, seq):
        # The first slot that may hold number seq or a later one.
        k = self.k
        pos = self.oldest * k
        i = len(self.firsts) - 1
        while i >= 0:
            f = self.firsts[i]
            if f and f <= seq:
                pos = (self.oldest + i) * k
                break
            i -= 1
        if self.hint_seq and self.hint_seq <= seq and pos <= self.hint_pos:
            pos = self.hint_pos
        return pos

    def read_slots(self, segno, i, mv):
        # Reads slots from index i of segment segno into mv: (count, first
        # number of the segment); (0, 0) if it is missing or its header invalid.
        try:
            f = open(self.path(segno), "rb")
        except OSError:
            return 0, 0
        with f:
            k, first = self.header(f, segno)
            if k != self.k:
                self.log.corrupt += 1
                return 0, 0
            f.seek(HEADER_SIZE + i * RECORD_SIZE)
            return (f.readinto(mv) or 0) // RECORD_SIZE, first


def _check(mv, at, lo, hi):
    # The number of a valid record at mv[at:], -1 if invalid.
    crc = struct.unpack_from("<I", mv, at + _RECORD_CRC)[0]
    seq = struct.unpack_from("<I", mv, at)[0]
    if lo <= seq < hi and binascii.crc32(mv[at:at + _RECORD_CRC]) == crc:
        return seq
    return -1


class _Cursor:
    # The valid records of one ring numbered seq or later, in order.
    def __init__(self, ring, seq):
        self.ring = ring
        self.mv = memoryview(bytearray(_READ_CHUNK * RECORD_SIZE))
        self.target = seq
        self.pos = ring.start(seq)  # slot of the first record in mv
        self.n = 0  # records in mv
        self.i = 0  # the current one
        self.lo = 0  # first number of their segment
        self.seq = 0  # the current record's number; 0: none left
        self.advance()

    def here(self):
        return self.pos + self.i

    def advance(self):
        # To the next valid record numbered target or later.
        ring = self.ring
        hi = ring.log._next
        while True:
            if self.i >= self.n and not self._load():
                self.seq = 0
                return
            seq = _check(self.mv, self.i * RECORD_SIZE, self.lo, hi)
            if seq >= self.target:
                self.seq = seq
                return
            if seq < 0:
                ring.log.corrupt += 1
            self.i += 1

    def _load(self):
        ring = self.ring
        k = ring.k
        pos = max(self.pos + self.n, ring.oldest * k)
        while pos < ring.pos:
            segno = pos // k
            want = min(_READ_CHUNK, (segno + 1) * k - pos, ring.pos - pos)
            got, first = ring.read_slots(segno, pos - segno * k, self.mv[:want * RECORD_SIZE])
            if got:
                self.pos = pos
                self.n = got
                self.i = 0
                self.lo = first
                return True
            pos = (segno + 1) * k  # missing, invalid or cut short: the next segment
        self.pos = ring.pos
        self.n = self.i = 0
        return False


class EventLog:
    def __init__(self, directory, segment_records=256, max_segments=16, activity_segments=8):
        # max_segments: the clinical ring's; activity_segments: the activity
        # ring's. Defaults: 4096 and 2048 records.
        self.directory = directory
        self.corrupt = 0  # invalid records and segment headers met
        self._header = bytearray(HEADER_SIZE)
        self._header_body = memoryview(self._header)[:_HEADER_CRC]
        self._record = bytearray(RECORD_SIZE)
        self._record_body = memoryview(self._record)[:_RECORD_CRC]
        self._next = 1  # sequence number of the next append
        # Fold table: per key met this window, its type (0: free), key, the
        # records stored, the count folded, and the first and last folded
        # one's time of day; slot 0 counts repeats of keys beyond the table.
        self._ftype = bytearray(_FOLD_SLOTS)
        self._fkey = array("i", [0] * _FOLD_SLOTS)
        self._fstored = bytearray(_FOLD_SLOTS)
        self._fclin = bytearray(_FOLD_SLOTS)
        self._fcount = array("i", [0] * _FOLD_SLOTS)
        self._ffirst = array("i", [0] * _FOLD_SLOTS)
        self._flast = array("i", [0] * _FOLD_SLOTS)
        self._fused = 1
        self._wday = -1  # the window: day and hour
        self._whour = -1
        try:
            os.mkdir(directory)
        except OSError:
            pass  # already there; any other fault shows up on first use
        self._clinical = _Ring(self, _CLINICAL, segment_records, max_segments)
        self._activity = _Ring(self, _ACTIVITY, segment_records, activity_segments)
        m1, u1 = self._clinical.recover()
        m2, u2 = self._activity.recover()
        self._next = max(m1, m2) + u1 + u2 + 1

    def first_seq(self):
        # Records numbered below are gone; above it, gaps are rolled-off
        # activity records or numbers lost to a cut.
        a = self._clinical.first_seq()
        b = self._activity.first_seq()
        if a and b:
            return min(a, b)
        return a or b or self._next

    def last_seq(self):
        # The newest sequence number given out (0: none yet); the next
        # append gets last_seq() + 1.
        return self._next - 1

    def dropped(self):
        r, s = self._clinical, self._activity
        return r.oldest * r.k + s.oldest * s.k

    def append(self, day, tod_s, etype, a=0, b=0, c=0, d=0, text=b""):
        # Returns the record's sequence number, or 0 when it was folded.
        if not (0 <= day <= events.DAY_MAX and 0 <= tod_s < _TOD_END and 0 <= etype <= _ETYPE_MAX):
            raise ValueError("timestamp or event type out of range")
        _int32(a)
        _int32(b)
        _int32(c)
        _int32(d)
        self.roll(day, tod_s)
        clin = events.clinical(etype, a, d)
        key = events.fold_key(etype, a, b, c, d)
        if key >= 0 and self._fold(etype, key, clin, tod_s):
            return 0
        return self._write(self._clinical if clin else self._activity, day, tod_s, etype, a, b, c, d, text)

    def roll(self, day, tod_s):
        # Ends the fold window when the clock hour changed (either way): its
        # counts become REPEATED records. Cheap when it has not.
        hour = tod_s // _FOLD_WINDOW_S
        if day == self._wday and hour == self._whour:
            return
        wday = self._wday
        self._wday = day
        self._whour = hour
        self._emit(wday, True)

    def flush(self):
        # Writes the counts so far (close, tests); the window goes on.
        self._emit(self._wday, False)

    def read(self, first_seq, max_count):
        # Up to max_count valid records from first_seq on, decoded, in order.
        out = []
        buf = bytearray(min(max_count, _READ_CHUNK * 2) * RECORD_SIZE)
        seq = first_seq
        while len(out) < max_count and seq < self._next:
            want = min(max_count - len(out), _READ_CHUNK * 2)
            n, seq = self.read_raw(seq, memoryview(buf)[:want * RECORD_SIZE])
            if not n:
                break
            for i in range(n):
                out.append(decode(buf, i * RECORD_SIZE))
        return out

    def read_raw(self, first_seq, buf):
        # Fills buf with the encoded valid records numbered first_seq or later
        # (as many as fit), both rings merged in order; returns (count,
        # sequence number to continue from).
        mv = memoryview(buf)
        room = len(buf) // RECORD_SIZE
        p = _Cursor(self._clinical, first_seq)
        q = _Cursor(self._activity, first_seq)
        n = 0
        nxt = self._next
        while n < room and (p.seq or q.seq):
            c = p if not q.seq or (p.seq and p.seq < q.seq) else q
            at = c.i * RECORD_SIZE
            mv[n * RECORD_SIZE:(n + 1) * RECORD_SIZE] = c.mv[at:at + RECORD_SIZE]
            n += 1
            c.i += 1
            c.advance()
        if p.seq or q.seq:
            nxt = min(p.seq or q.seq, q.seq or p.seq)
        for c in (p, q):
            c.ring.hint_seq = c.seq or self._next
            c.ring.hint_pos = c.here() if c.seq else c.ring.pos
        return n, nxt

    def close(self):
        try:
            self.flush()
        finally:
            self._clinical.close()
            self._activity.close()

    # Writing.

    def _write(self, ring, day, tod_s, etype, a, b, c, d, text):
        if isinstance(text, str):
            text = text.encode()
        n = len(text)
        if n > TEXT_MAX:
            text = text[:TEXT_MAX]
            n = TEXT_MAX
        seq = self._next
        rec = self._record
        struct.pack_into(_RECORD, rec, 0, seq, day, etype, n, tod_s, a, b, c, d, text)
        struct.pack_into("<I", rec, _RECORD_CRC, binascii.crc32(self._record_body))
        f = ring.writer(seq)
        # Given out from here on, with its slot, whether or not the write succeeds.
        self._next = seq + 1
        ring.pos += 1
        try:
            f.write(rec)
            f.flush()  # littlefs sync: the record is committed to flash
        except Exception as e:
            ring.abandon(f)
            raise e  # (not a bare raise: the emulator's native build cannot compile one)
        return seq

    # Folding.

    def _fold(self, etype, key, clin, tod_s):
        # True when the record is counted instead of stored.
        i = 1
        while i < self._fused:
            if self._ftype[i] == etype and self._fkey[i] == key:
                if self._fstored[i] < _FOLD_AFTER:
                    self._fstored[i] += 1
                    return False
                self._count(i, tod_s)
                return True
            i += 1
        if i < _FOLD_SLOTS:
            self._fused = i + 1
            self._ftype[i] = etype
            self._fkey[i] = key
            self._fclin[i] = clin
            self._fstored[i] = 1
            self._fcount[i] = 0
            return False
        self._count(0, tod_s)  # the table is full: one count for the rest
        return True

    def _count(self, i, tod_s):
        if not self._fcount[i]:
            self._ffirst[i] = tod_s
        self._fcount[i] += 1
        self._flast[i] = tod_s

    def _emit(self, day, end):
        # One REPEATED record per key with a count; with end, the table is
        # emptied for the next window. Counts are taken out before each
        # write: a failed write loses its count, never writes it twice.
        i = 0
        used = self._fused
        if end:
            self._fused = 1
        while i < used:
            n = self._fcount[i]
            if n:
                self._fcount[i] = 0
                t = self._ftype[i]
                self._write(self._clinical if self._fclin[i] else self._activity, day, self._flast[i],
                            events.REPEATED, t, n, self._fkey[i] if i else 0, self._flast[i] - self._ffirst[i],
                            "repeated " + events.NAMES.get(t, "records"))
            i += 1
