# Event log: append-only, bounded, on flash. Every record gets a sequence
# number that is never given to another record, even across reboots; when the
# space is used up the oldest segment rolls off.
#
# On-flash format (little-endian). Segment number s, file <dir>/log.<s as 8
# hex digits>, holds the records with sequence numbers s*K+1 .. s*K+K, record
# i at byte HEADER_SIZE + i*RECORD_SIZE, so a sequence number locates its
# record by arithmetic alone. K (records per segment) is fixed when the log
# is created and kept in every segment header.
#   segment header, 16 bytes:
#     0  4  magic b"EVL1"      4  2  K (u16)        6  2  RECORD_SIZE (u16)
#     8  4  segment number s   12 4  CRC-32 of bytes 0..11
#   record, 64 bytes:
#     0  4  sequence number (u32, first record is 1)
#     4  2  day number since 1970-01-01 (u16)
#     6  1  event type (u8)    7  1  text length (u8, <= TEXT_MAX)
#     8  4  seconds of day (u32, < 86400)
#     12 16 a, b, c, d (i32 each)
#     28 32 text, zero-padded
#     60 4  CRC-32 of bytes 0..59
# A record is valid when its CRC checks out and its sequence number is the
# one its position implies. Reads skip invalid records (counted in .corrupt).
#
# Recovery at open: the newest segment with a valid header, and its length,
# give the next sequence number. littlefs makes an append visible only when
# it is synced, so a cut loses at most the record in flight. Should a torn
# record be visible anyway, the next append goes to the next slot: the torn
# record's number is skipped, not reused; likewise the numbers of a newer
# segment whose header decayed. Roll-off deletes the oldest segment before
# creating the new one, so the newest (full) segment always survives and the
# next sequence number is always recoverable; max_segments must be >= 2.
# dropped() is the number of records rolled off: the oldest segment number
# times K, so it is exactly as persistent as the segments themselves. The
# log holds between (max_segments - 1) * K and max_segments * K records.
import binascii
import os
import struct

from micropython import const

RECORD_SIZE = const(64)
TEXT_MAX = const(32)
HEADER_SIZE = const(16)
_MAGIC = b"EVL1"
_HEADER = "<4sHHII"
_HEADER_CRC = const(12)
_RECORD = "<IHBBIiiii32s"
_RECORD_CRC = const(60)
_PREFIX = "log."
_NAME_LEN = const(12)  # "log." + 8 hex digits
_DAY_MAX = const(0xFFFF)
_TOD_END = const(86400)
_ETYPE_MAX = const(0xFF)
_I32_MIN = -0x80000000  # not const: beyond the RP2040's small ints
_I32_MAX = 0x7FFFFFFF
_READ_CHUNK = const(32)  # records per flash read in read()


def decode(buf, offset=0):
    # One encoded record -> (seq, day, tod_s, etype, a, b, c, d, text).
    seq, day, etype, n, tod_s, a, b, c, d, text = struct.unpack_from(_RECORD, buf, offset)
    return seq, day, tod_s, etype, a, b, c, d, text[:n]


def _int32(v):
    if not _I32_MIN <= v <= _I32_MAX:
        raise ValueError("payload out of i32 range")


class EventLog:
    def __init__(self, directory, segment_records=256, max_segments=16):
        if max_segments < 2:
            raise ValueError("max_segments < 2")
        self.directory = directory
        self.max_segments = max_segments
        self.corrupt = 0  # invalid records and segment headers met
        self._k = segment_records
        self._oldest = 0  # oldest segment number on flash
        self._next = 1  # sequence number of the next append
        self._file = None  # the newest segment, kept open for appends
        self._file_seg = -1
        self._header = bytearray(HEADER_SIZE)
        self._header_body = memoryview(self._header)[:_HEADER_CRC]
        self._record = bytearray(RECORD_SIZE)
        self._record_body = memoryview(self._record)[:_RECORD_CRC]
        try:
            os.mkdir(directory)
        except OSError:
            pass  # already there; any other fault shows up on first use
        self._recover()

    def first_seq(self):
        return self._oldest * self._k + 1

    def last_seq(self):
        # The newest sequence number given out (0: none yet); the next
        # append gets last_seq() + 1.
        return self._next - 1

    def dropped(self):
        return self._oldest * self._k

    def append(self, day, tod_s, etype, a=0, b=0, c=0, d=0, text=b""):
        if not (0 <= day <= _DAY_MAX and 0 <= tod_s < _TOD_END and 0 <= etype <= _ETYPE_MAX):
            raise ValueError("timestamp or event type out of range")
        _int32(a)
        _int32(b)
        _int32(c)
        _int32(d)
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
        f = self._writer(seq)
        # Given out from here on, whether or not the write succeeds.
        self._next = seq + 1
        try:
            f.write(rec)
            f.flush()  # littlefs sync: the record is committed to flash
        except Exception:
            # The file position is now unknown: the next append reopens and
            # seeks to its slot.
            self._file = None
            try:
                f.close()
            except Exception:
                pass  # the first fault is the one to report
            raise
        return seq

    def read(self, first_seq, max_count):
        # Up to max_count valid records from first_seq on, decoded, oldest first.
        out = []
        buf = bytearray(min(max_count, _READ_CHUNK) * RECORD_SIZE)
        seq = first_seq
        while len(out) < max_count and seq < self._next:
            want = min(max_count - len(out), _READ_CHUNK)
            n, seq = self.read_raw(seq, memoryview(buf)[:want * RECORD_SIZE])
            for i in range(n):
                out.append(decode(buf, i * RECORD_SIZE))
        return out

    def read_raw(self, first_seq, buf):
        # Fills buf with the encoded valid records from first_seq on (as many
        # as fit); returns (count, sequence number to continue from).
        mv = memoryview(buf)
        room = len(buf) // RECORD_SIZE
        k = self._k
        seq = max(first_seq, self.first_seq())
        n = 0
        while n < room and seq < self._next:
            segno = (seq - 1) // k
            want = min(room - n, (segno + 1) * k + 1 - seq, self._next - seq)
            got = self._read_segment(segno, seq, mv[n * RECORD_SIZE:(n + want) * RECORD_SIZE])
            kept = n
            for i in range(got):
                at = (n + i) * RECORD_SIZE
                if self._valid(mv, at, seq + i):
                    if kept != n + i:
                        mv[kept * RECORD_SIZE:(kept + 1) * RECORD_SIZE] = mv[at:at + RECORD_SIZE]
                    kept += 1
                else:
                    self.corrupt += 1
            n = kept
            seq += want  # records missing from flash are skipped
        return n, seq

    def close(self):
        if self._file is not None:
            f = self._file
            self._file = None
            f.close()

    # Recovery at open.

    def _recover(self):
        found = []
        for name in os.listdir(self.directory):
            if len(name) == _NAME_LEN and name.startswith(_PREFIX):
                try:
                    found.append(int(name[len(_PREFIX):], 16))
                except ValueError:
                    pass
        found.sort()
        newest = -1
        used = -1  # newest invalid segment that held records
        for segno in reversed(found):
            k = self._segment_k(segno)
            if k:
                newest = segno
                self._k = k  # the log's own K wins over the constructor's
                break
            self.corrupt += 1
            if used < 0 and self._size(segno) > HEADER_SIZE:
                used = segno
        if newest >= 0:
            self._recover_range(found, newest)
        if used >= 0:
            # Its records may have been read before it decayed: their
            # numbers stay used. (A cut while creating a segment leaves it
            # empty, which costs no numbers.)
            self._next = max(self._next, (used + 1) * self._k + 1)
            if newest < 0:
                self._oldest = used + 1

    def _recover_range(self, found, newest):
        self._oldest = newest
        floor = newest - self.max_segments + 1
        for segno in found:
            if segno < floor:
                # Beyond the configured space (max_segments was lowered):
                # roll off now, so roll-off stays a step at a time.
                self._remove(segno)
            elif segno < newest:
                if self._segment_k(segno) != self._k:
                    self.corrupt += 1
                elif segno < self._oldest:
                    self._oldest = segno
        # A partly written final record still uses up its slot.
        slots = (self._size(newest) - HEADER_SIZE + RECORD_SIZE - 1) // RECORD_SIZE
        self._next = newest * self._k + min(slots, self._k) + 1

    # Segment files.

    def _path(self, segno):
        return "%s/%s%08x" % (self.directory, _PREFIX, segno)

    def _size(self, segno):
        return os.stat(self._path(segno))[6]

    def _segment_k(self, segno):
        # K from a valid segment header, 0 if the file is missing or invalid.
        try:
            with open(self._path(segno), "rb") as f:
                return self._read_header(f, segno)
        except OSError:
            return 0

    def _read_header(self, f, segno):
        h = self._header
        if f.readinto(h) != HEADER_SIZE:
            return 0
        magic, k, size, s, crc = struct.unpack(_HEADER, h)
        if (magic != _MAGIC or size != RECORD_SIZE or s != segno
                or crc != binascii.crc32(self._header_body)):
            return 0
        return k

    def _writer(self, seq):
        # The open newest segment, positioned for record seq; starts a new
        # segment (rolling off the oldest) when seq is the first of one.
        segno = (seq - 1) // self._k
        if self._file is not None and self._file_seg == segno:
            return self._file
        self.close()
        path = self._path(segno)
        if self._segment_k(segno) == self._k:
            f = open(path, "r+b")
        else:
            self._roll_off(segno)
            f = open(path, "wb")
            h = self._header
            struct.pack_into(_HEADER, h, 0, _MAGIC, self._k, RECORD_SIZE, segno, 0)
            struct.pack_into("<I", h, _HEADER_CRC, binascii.crc32(self._header_body))
            f.write(h)
        # Past the end after a lost record: littlefs fills the gap with zeros.
        f.seek(HEADER_SIZE + (seq - 1 - segno * self._k) * RECORD_SIZE)
        self._file = f
        self._file_seg = segno
        return f

    def _roll_off(self, segno):
        # Deletes the oldest segments until segno fits in max_segments.
        while segno - self._oldest >= self.max_segments:
            self._remove(self._oldest)
            self._oldest += 1

    def _remove(self, segno):
        try:
            os.remove(self._path(segno))
        except OSError:
            pass  # already gone: a cut came after the remove, before the next

    def _read_segment(self, segno, seq, mv):
        # Reads the records from seq on into mv; returns how many were read.
        try:
            f = open(self._path(segno), "rb")
        except OSError:
            return 0
        with f:
            if self._read_header(f, segno) != self._k:
                self.corrupt += 1
                return 0
            f.seek(HEADER_SIZE + (seq - 1 - segno * self._k) * RECORD_SIZE)
            return (f.readinto(mv) or 0) // RECORD_SIZE

    def _valid(self, mv, at, seq):
        crc = struct.unpack_from("<I", mv, at + _RECORD_CRC)[0]
        return (struct.unpack_from("<I", mv, at)[0] == seq
                and binascii.crc32(mv[at:at + _RECORD_CRC]) == crc)
