# Record store: small versioned records (settings, prescription, counters)
# kept in a directory on littlefs so that a power cut at any moment leaves
# either the old or the new record readable, never a mix and never neither.
#
# On-flash format. Each record NAME has two slot files, NAME.a and NAME.b;
# a save writes the slot that does not hold the newest valid record, so the
# newest valid record is never touched while a save is in flight. A slot is
# (little-endian):
#   offset size
#   0      4    magic b"PRS1" (revision of this layout)
#   4      2    version: the caller's payload schema version (u16)
#   6      2    length of the payload in bytes (u16, <= MAX_PAYLOAD)
#   8      4    sequence number (u32): the store's save counter for NAME,
#               1 for the first save, +1 per save (2^32 saves: never wraps)
#   12     4    CRC-32 of bytes 0..11 followed by the payload
#   16     n    payload
# A slot is valid when magic, length and CRC check out; load returns the
# valid slot with the higher sequence number.
import binascii
import errno
import os
import struct

from micropython import const

MAX_PAYLOAD = const(4096)
_MAGIC = b"PRS1"
_HEADER = "<4sHHII"
_HEADER_SIZE = const(16)
_CRC_OFFSET = const(12)
_SUFFIXES = (".a", ".b")


class RecordStore:
    def __init__(self, directory):
        self.directory = directory
        # Slots found present but invalid (torn by a power cut, or decayed):
        # input to the firmware's integrity alarm.
        self.corrupt_found = 0
        # Names whose newest record decayed: an invalid slot whose header
        # (unverified) claims a later sequence number than the record loaded.
        self.newer_lost = set()
        self._newest = {}  # name -> (sequence, slot) of its newest valid record
        self._claimed_seq = -1
        self._header = bytearray(_HEADER_SIZE)
        self._header_body = memoryview(self._header)[:_CRC_OFFSET]
        try:
            os.mkdir(directory)
        except OSError:
            pass  # already there; any other fault shows up on first use

    def load(self, name):
        # Returns (version, payload) of the newest valid record, or None.
        best = None
        claimed = -1  # sequence number an invalid slot's header claims
        for slot in (0, 1):
            found = self._read_slot(name, slot)
            if found is None:
                claimed = max(claimed, self._claimed_seq)
            elif best is None or found[1] > best[1]:
                best = found
                self._newest[name] = (found[1], slot)
        if best is None:
            return None
        if claimed > best[1]:
            self.newer_lost.add(name)
        return best[0], best[2]

    def save(self, name, version, payload):
        if len(payload) > MAX_PAYLOAD:
            raise ValueError("record too long")
        if name not in self._newest:
            self.load(name)
        # No valid record yet: slot 0, sequence 1.
        seq, slot = self._newest.get(name, (0, 1))
        seq += 1
        slot ^= 1
        header = self._header
        struct.pack_into(_HEADER, header, 0, _MAGIC, version, len(payload), seq, 0)
        crc = binascii.crc32(payload, binascii.crc32(self._header_body))
        struct.pack_into("<I", header, _CRC_OFFSET, crc)
        # littlefs commits a file's new content at close: durable on return.
        with open(self._path(name, slot), "wb") as f:
            f.write(header)
            f.write(payload)
        self._newest[name] = (seq, slot)

    def _path(self, name, slot):
        return self.directory + "/" + name + _SUFFIXES[slot]

    def _read_slot(self, name, slot):
        # Returns (version, sequence, payload) or None; for an invalid slot,
        # _claimed_seq is the sequence number its header claims (-1: none).
        self._claimed_seq = -1
        try:
            f = open(self._path(name, slot), "rb")
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None  # never written: not corruption
            self.corrupt_found += 1
            return None
        with f:
            header = self._header
            if f.readinto(header) == _HEADER_SIZE:
                magic, version, length, seq, crc = struct.unpack(_HEADER, header)
                if magic == _MAGIC:
                    self._claimed_seq = seq
                if magic == _MAGIC and length <= MAX_PAYLOAD:
                    payload = f.read(length)
                    if (len(payload) == length
                            and binascii.crc32(payload, binascii.crc32(self._header_body)) == crc):
                        return version, seq, payload
        self.corrupt_found += 1
        return None
