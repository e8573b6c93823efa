# Wire codec of the programmer link: COBS framing, frame layout, CRC-32,
# HMAC-SHA256 tags, handshake key derivation, a CBOR subset for payloads and
# the error-code table. The firmware (MicroPython) and the host tool (CPython)
# both import this very file, so the two ends cannot drift.
# docs/protocol.md is the specification; keep the two in step.
#
# Only struct, binascii.crc32 and hashlib.sha256 are used (present in both
# runtimes), plus ChaCha20-Poly1305 for sealed session frames: `cryptography`
# on the host, firmware/aead.py on the pump (byte for byte the same; see
# docs/crypto.md). Randomness (nonces) is the caller's, passed in as bytes.
import struct
from binascii import crc32
from hashlib import sha256

try:  # CPython host: a well-kept library
    from cryptography.exceptions import InvalidTag as _InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as _HostAead
except ImportError:  # MicroPython: the firmware's own (viper on every port we run)
    import aead as _aead

    _HostAead = None
    _InvalidTag = _aead.InvalidTag

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# --- Sizes -------------------------------------------------------------------

# Version 2: session frames are sealed (encrypted and authenticated) with
# ChaCha20-Poly1305; version 1 tagged them with HMAC-SHA256 in the clear.
PROTOCOL_VERSION = const(2)
DELIM = const(0)  # COBS frame delimiter: ends every frame on the wire
HEADER_LEN = const(11)  # version, type, flags, msg id, counter, payload length
TAG_LEN = const(16)  # Poly1305 tag of a sealed frame
CRC_LEN = const(4)
# Whole encoded frame, delimiter included: fits the Pico's USB CDC buffering.
MAX_ENCODED = const(512)
MAX_PAYLOAD = const(448)
# Largest decoded frame; COBS adds at most 1 byte per 254 plus 1 and the
# delimiter, so MAX_FRAME encodes to at most 482 bytes (< MAX_ENCODED).
MAX_FRAME = const(HEADER_LEN + MAX_PAYLOAD + TAG_LEN + CRC_LEN)
MSG_ID_MAX = const(0xFFFF)
COUNTER_MAX = const(0xFFFFFFFF)
MAX_DEPTH = const(5)  # nested lists/maps: bounds recursion on the small C stack

_HEADER = ">BBBHIH"
_CRC = ">I"

# Flags byte. The flags only describe the layout: whether a frame is trusted
# is decided by the receiver's session state, never by the sender's flags.
FLAG_TAG = const(0x01)  # sealed: the payload is ciphertext and a 16-byte tag follows
FLAG_FROM_PUMP = const(0x02)  # direction; authenticated, stops reflection
_FLAGS_KNOWN = const(FLAG_TAG | FLAG_FROM_PUMP)

# --- Message types (commands are specified with the link issue) -------------

MSG_IDENTIFY = const(0x01)  # allowed without a session: who is there
MSG_HELLO = const(0x02)  # handshake 1: role, nonce_h -> nonce_p, proof_p
MSG_PROOF = const(0x03)  # handshake 2: proof_h -> sealed acceptance
REPLY = const(0x80)  # a reply's type is the request's type | REPLY
MSG_ERROR = const(0xFF)  # error reply; payload from error_reply()

# --- Roles and handshake -----------------------------------------------------

ROLE_NONE = const(0)  # unauthenticated link: identify and handshake only
ROLE_PATIENT = const(1)
ROLE_CLINICIAN = const(2)
KEY_LEN = const(32)
NONCE_LEN = const(16)
PROOF_LEN = const(32)

# --- Error codes -------------------------------------------------------------

BAD_FRAME = const(1)  # malformed COBS or layout, truncated
BAD_CRC = const(2)  # line error
BAD_TAG = const(3)  # authentication tag did not verify
REPLAY = const(4)  # counter not above the last accepted one, or reflected
NOT_AUTHENTICATED = const(5)  # needs a session / tag missing / no session
FORBIDDEN = const(6)  # the session's role may not do this
LOCKED_OUT = const(7)  # authentication back-off in force
LIMIT = const(8)  # therapy hard limit; carries limit name and reason
BAD_ARGS = const(9)  # well-formed request with invalid arguments
BUSY = const(10)
UNKNOWN_COMMAND = const(11)
INTERNAL = const(12)
VERSION = const(13)  # unsupported protocol version
TOO_LARGE = const(14)  # frame or payload over the size limits
BAD_PAYLOAD = const(15)  # payload is not valid encoding (CBOR subset)
AUTH_FAILED = const(16)  # handshake proof did not verify

ERROR_NAMES = {
    BAD_FRAME: "BAD_FRAME",
    BAD_CRC: "BAD_CRC",
    BAD_TAG: "BAD_TAG",
    REPLAY: "REPLAY",
    NOT_AUTHENTICATED: "NOT_AUTHENTICATED",
    FORBIDDEN: "FORBIDDEN",
    LOCKED_OUT: "LOCKED_OUT",
    LIMIT: "LIMIT",
    BAD_ARGS: "BAD_ARGS",
    BUSY: "BUSY",
    UNKNOWN_COMMAND: "UNKNOWN_COMMAND",
    INTERNAL: "INTERNAL",
    VERSION: "VERSION",
    TOO_LARGE: "TOO_LARGE",
    BAD_PAYLOAD: "BAD_PAYLOAD",
    AUTH_FAILED: "AUTH_FAILED",
}

_MAX_REASON = const(100)  # characters of human reason in an error reply


def error_name(code):
    return ERROR_NAMES.get(code, "UNKNOWN")


def error_reply(code, reason="", limit=None):
    # Payload of a MSG_ERROR reply; `limit` names the hard limit for LIMIT.
    reply = {"code": code, "name": error_name(code), "reason": reason[:_MAX_REASON]}
    if limit is not None:
        reply["limit"] = limit
    return reply


class WireError(ValueError):
    # Every codec failure carries the error code to answer it with.
    code = INTERNAL

    def reply(self):
        return error_reply(self.code, str(self))


class FrameError(WireError):
    code = BAD_FRAME


class CrcError(WireError):
    code = BAD_CRC


class TagError(WireError):
    code = BAD_TAG


class ReplayError(WireError):
    code = REPLAY


class NotAuthenticated(WireError):
    code = NOT_AUTHENTICATED


class Forbidden(WireError):
    code = FORBIDDEN


class VersionError(WireError):
    code = VERSION


class TooLarge(WireError):
    code = TOO_LARGE


class PayloadError(WireError):
    code = BAD_PAYLOAD


class AuthFailed(WireError):
    code = AUTH_FAILED


# --- COBS ----------------------------------------------------------------------
# Consistent Overhead Byte Stuffing: the frame body contains no zero byte, so
# 0x00 marks the end of a frame and a receiver resynchronises on it.

_COBS_MAX_CODE = const(0xFF)
_COBS_BLOCK = const(254)  # data bytes in a full block
_ZERO = b"\x00"


def cobs_encode(data):
    # Canonical encoding (no empty block after a final full block), ending in
    # the delimiter. Copies whole runs between zeros: linear, few allocations.
    data = bytes(data)
    n = len(data)
    src = memoryview(data)
    out = bytearray(n + n // _COBS_BLOCK + 2)
    i = o = 0
    while True:
        z = data.find(_ZERO, i)
        end = n if z < 0 else z
        full = False
        while end - i >= _COBS_BLOCK:
            out[o] = _COBS_MAX_CODE
            out[o + 1 : o + 1 + _COBS_BLOCK] = src[i : i + _COBS_BLOCK]
            o += _COBS_BLOCK + 1
            i += _COBS_BLOCK
            full = True
        if z >= 0 or i < end or not full:
            k = end - i
            out[o] = k + 1
            out[o + 1 : o + 1 + k] = src[i:end]
            o += k + 1
        if z < 0:
            break
        i = z + 1
    out[o] = DELIM
    return bytes(memoryview(out)[: o + 1])


def cobs_decode_into(frame, out):
    # Decodes one delimited frame into the preallocated bytearray `out` and
    # returns the decoded length. Rejects a missing delimiter, a zero inside
    # the frame, a block running past the end and non-canonical encodings.
    if isinstance(frame, memoryview):
        frame = bytes(frame)
    n = len(frame) - 1
    if n < 1 or frame.find(_ZERO) != n:
        raise FrameError("COBS: frame must be non-empty and end at its only 0x00")
    src = memoryview(frame)
    cap = len(out)
    i = o = 0
    code = 0
    while i < n:
        prev = code
        code = frame[i]
        end = i + code
        if end > n:
            raise FrameError("COBS: block runs past the end of the frame")
        k = code - 1
        if o + k > cap:
            raise TooLarge("COBS: decoded frame over %d bytes" % cap)
        out[o : o + k] = src[i + 1 : end]
        o += k
        i = end
        if i < n and code != _COBS_MAX_CODE:
            if o >= cap:
                raise TooLarge("COBS: decoded frame over %d bytes" % cap)
            out[o] = 0
            o += 1
    if code == 1 and prev == _COBS_MAX_CODE:
        raise FrameError("COBS: non-canonical empty final block")
    return o


def cobs_decode(frame):
    out = bytearray(len(frame))
    n = cobs_decode_into(frame, out)
    return bytes(memoryview(out)[:n])


# --- HMAC-SHA256 (RFC 2104; MicroPython has no hmac module) ---------------------

_SHA_BLOCK = const(64)
_IPAD = const(0x36)
_OPAD = const(0x5C)


def _pads(key):
    # hashlib on MicroPython cannot copy a hash state, so a session keeps the
    # padded keys instead of recomputing them per frame.
    if len(key) > _SHA_BLOCK:
        key = sha256(key).digest()
    key = bytes(key) + bytes(_SHA_BLOCK - len(key))
    return bytes(b ^ _IPAD for b in key), bytes(b ^ _OPAD for b in key)


def _hmac(pads, parts):
    inner = sha256(pads[0])
    for part in parts:
        inner.update(part)
    outer = sha256(pads[1])
    outer.update(inner.digest())
    return outer.digest()


def hmac_sha256(key, msg):
    return _hmac(_pads(key), (msg,))


def ct_equal(a, b):
    # No early exit: the time taken does not reveal where a forged tag first
    # differs. Lengths are public (fixed by the protocol).
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


# --- Handshake -----------------------------------------------------------------
# host -> pump  HELLO  role, nonce_h
# pump -> host         nonce_p, proof_p = HMAC(K_role, "pump" nonce_h nonce_p role)
# host -> pump  PROOF  proof_h = HMAC(K_role, "host" nonce_p nonce_h role)
# both: session_key = HMAC(K_role, "session" nonce_h nonce_p role)
# K_role is the pump's key for the requested role: patient and clinician
# credentials are distinct keys, and the role byte is inside every MAC.


def _check_role(role):
    # Handshake fields arrive straight from a payload: exact type and value
    # (a bool is not a role, though True == 1).
    if type(role) is not int or (role != ROLE_PATIENT and role != ROLE_CLINICIAN):
        raise Forbidden("role %r has no credential" % (role,))


def _is_bytes(x, n):
    return isinstance(x, (bytes, bytearray)) and len(x) == n


def _handshake_mac(key, label, first, second, role):
    _check_role(role)
    if not _is_bytes(key, KEY_LEN):
        raise ValueError("device key must be %d bytes" % KEY_LEN)
    if not _is_bytes(first, NONCE_LEN) or not _is_bytes(second, NONCE_LEN):
        raise AuthFailed("nonces must be %d bytes" % NONCE_LEN)
    return _hmac(_pads(key), (label, first, second, bytes((role,))))


def pump_proof(key, nonce_h, nonce_p, role):
    return _handshake_mac(key, b"pump", nonce_h, nonce_p, role)


def host_proof(key, nonce_h, nonce_p, role):
    return _handshake_mac(key, b"host", nonce_p, nonce_h, role)


def session_key(key, nonce_h, nonce_p, role):
    return _handshake_mac(key, b"session", nonce_h, nonce_p, role)


def rotated_key(key, role, entropy):
    # A role's next key after ROTATE_KEYS: derived by pump and host alike
    # from the key they share and the host's fresh entropy, so no key
    # crosses the link.
    return hmac_sha256(key, b"rotate" + bytes(entropy) + bytes((role,)))


def role_key(keys, role):
    # keys: {ROLE_PATIENT: key, ROLE_CLINICIAN: key}. Deny by default.
    _check_role(role)
    key = keys.get(role)
    if key is None:
        raise Forbidden("no key for role %d" % role)
    return key


def check_device_keys(keys):
    # Provisioning check: one 32-byte key per role, and the keys distinct.
    patient = role_key(keys, ROLE_PATIENT)
    clinician = role_key(keys, ROLE_CLINICIAN)
    if not _is_bytes(patient, KEY_LEN) or not _is_bytes(clinician, KEY_LEN):
        raise ValueError("device keys must be %d bytes" % KEY_LEN)
    if ct_equal(patient, clinician):
        raise ValueError("patient and clinician keys must differ")


def pump_challenge(keys, role, nonce_h, nonce_p):
    # Pump, on HELLO: proof_p for the reply (nonce_p fresh from os.urandom).
    return pump_proof(role_key(keys, role), nonce_h, nonce_p, role)


def pump_verify(keys, role, nonce_h, nonce_p, proof_h):
    # Pump, on PROOF: the session key, or AuthFailed.
    key = role_key(keys, role)
    expected = host_proof(key, nonce_h, nonce_p, role)
    if not _is_bytes(proof_h, PROOF_LEN) or not ct_equal(proof_h, expected):
        raise AuthFailed("host proof did not verify")
    return session_key(key, nonce_h, nonce_p, role)


def host_verify(key, role, nonce_h, nonce_p, proof_p):
    # Host, on the HELLO reply: checks the pump first, then (proof_h, session key).
    expected = pump_proof(key, nonce_h, nonce_p, role)
    if not _is_bytes(proof_p, PROOF_LEN) or not ct_equal(proof_p, expected):
        raise AuthFailed("pump proof did not verify")
    return host_proof(key, nonce_h, nonce_p, role), session_key(key, nonce_h, nonce_p, role)


# --- Payloads: a deterministic CBOR subset (RFC 8949) -----------------------------
# None, bool, int (-2**64 .. 2**64-1), str (UTF-8), bytes, list, dict with int
# or str keys. Shortest-form heads, definite lengths, map keys sorted by their
# encoding (RFC 8949 4.2.1); the decoder rejects anything else, so every value
# has exactly one encoding. No floats, tags or indefinite lengths.

_MT_UINT = const(0x00)
_MT_NINT = const(0x20)
_MT_BYTES = const(0x40)
_MT_TEXT = const(0x60)
_MT_ARRAY = const(0x80)
_MT_MAP = const(0xA0)
_MT_TAG = const(0xC0)
_MT_SIMPLE = const(0xE0)
_MT_MASK = const(0xE0)
_AI_MASK = const(0x1F)
_AI_1 = const(24)  # argument in the next 1 byte; 25, 26, 27: 2, 4, 8 bytes
_AI_8 = const(27)
_ARG_MAX_BYTES = const(8)
_FALSE = const(0xF4)
_TRUE = const(0xF5)
_NULL = const(0xF6)


_ASCII_END = const(0x80)
_CONT_LO = const(0x80)  # continuation bytes are 10xxxxxx
_CONT_HI = const(0xBF)


def _utf8_ok(b):
    # Strict RFC 3629 check (no overlongs, surrogates or > U+10FFFF).
    # MicroPython's decoder accepts those, CPython's does not: check here so
    # both ends accept exactly the same text. Table 3-7 of Unicode.
    n = len(b)
    if not n or max(b) < _ASCII_END:
        return True
    i = 0
    while i < n:
        c = b[i]
        i += 1
        if c < _ASCII_END:
            continue
        lo, hi = _CONT_LO, _CONT_HI  # allowed range of the second byte
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif 0xE0 <= c <= 0xEF:
            k = 2
            if c == 0xE0:
                lo = 0xA0  # overlong
            elif c == 0xED:
                hi = 0x9F  # surrogates
        elif 0xF0 <= c <= 0xF4:
            k = 3
            if c == 0xF0:
                lo = 0x90  # overlong
            elif c == 0xF4:
                hi = 0x8F  # > U+10FFFF
        else:
            return False  # continuation byte, C0/C1 or F5..FF as a lead
        if i + k > n or not lo <= b[i] <= hi:
            return False
        for j in range(i + 1, i + k):
            if not _CONT_LO <= b[j] <= _CONT_HI:
                return False
        i += k
    return True


def _is_key(k):
    # bool is an int subclass on CPython only: exclude it explicitly.
    return k is not True and k is not False and isinstance(k, (int, str))


_KEYS = {}  # text map key -> its CBOR encoding, for the frames this side seals
_KEYS_KEPT = const(128)  # bounds: about 4 KB at most
_KEY_KEPT_LEN = const(24)  # characters: a key with a one-byte head


class _Encoder:
    # Writes into a preallocated buffer from `start`; running past
    # MAX_PAYLOAD bytes raises TooLarge at once, so oversized or cyclic input
    # costs no more than the buffer.

    def __init__(self, buf, start, keep_keys=False):
        self.buf = buf
        self.pos = start
        self.end = start + MAX_PAYLOAD
        self.keep_keys = keep_keys  # only for this side's own frames: a peer's keys are never kept

    def put(self, byte):
        if self.pos >= self.end:
            raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)
        self.buf[self.pos] = byte
        self.pos += 1

    def write(self, data):
        end = self.pos + len(data)
        if end > self.end:
            raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)
        self.buf[self.pos : end] = data
        self.pos = end

    def head(self, major, n):
        if n < _AI_1:
            self.put(major | n)
            return
        ai, size = _AI_1, 1
        while n >> (8 * size):
            ai += 1
            size <<= 1
            if size > _ARG_MAX_BYTES:
                raise PayloadError("integer beyond 64 bits")
        self.put(major | ai)
        while size:  # big-endian, without allocating a bytes object
            size -= 1
            self.put(n >> (8 * size) & 0xFF)

    def value(self, x, depth):
        if x is None:
            self.put(_NULL)
        elif x is True:
            self.put(_TRUE)
        elif x is False:
            self.put(_FALSE)
        elif isinstance(x, int):
            if x >= 0:
                self.head(_MT_UINT, x)
            else:
                self.head(_MT_NINT, -1 - x)
        elif isinstance(x, str):
            try:
                b = x.encode("utf-8")
            except UnicodeError:  # CPython: lone surrogates
                b = None
            if b is None or not _utf8_ok(b):  # MicroPython encodes them
                raise PayloadError("text is not valid UTF-8")
            self.head(_MT_TEXT, len(b))
            self.write(b)
        elif isinstance(x, (bytes, bytearray)):
            self.head(_MT_BYTES, len(x))
            self.write(x)
        elif isinstance(x, (list, tuple, dict)):
            if depth >= MAX_DEPTH:
                raise PayloadError("payload nested deeper than %d" % MAX_DEPTH)
            if isinstance(x, dict):
                self.map(x, depth)
            else:
                self.head(_MT_ARRAY, len(x))
                for v in x:
                    self.value(v, depth + 1)
        else:
            raise PayloadError("cannot encode %s" % type(x).__name__)

    def map(self, d, depth):
        # Keys are encoded in place, copied out, then written back sorted
        # bytewise (RFC 8949 deterministic order).
        if 2 * len(d) > MAX_PAYLOAD:  # refuse before sorting a huge map
            raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)
        self.head(_MT_MAP, len(d))
        items = [(self.key(k), v) for k, v in d.items()]
        items.sort(key=_first)
        for kb, v in items:
            self.write(kb)
            self.value(v, depth + 1)

    def key(self, k):
        # A key's encoding: the same few keys recur in every reply, so each is
        # encoded once (in place, then copied out) and kept, up to the bounds.
        kb = _KEYS.get(k) if self.keep_keys and type(k) is str else None
        if kb is None:
            if not _is_key(k):
                raise PayloadError("map keys must be int or str")
            start = self.pos
            self.value(k, MAX_DEPTH - 1)
            kb = bytes(memoryview(self.buf)[start : self.pos])
            self.pos = start
            if self.keep_keys and type(k) is str and len(k) <= _KEY_KEPT_LEN and len(_KEYS) < _KEYS_KEPT:
                _KEYS[k] = kb
        return kb



def _first(item):
    return item[0]


def dumps(obj):
    buf = bytearray(MAX_PAYLOAD)
    enc = _Encoder(buf, 0)
    enc.value(obj, 0)
    return bytes(memoryview(buf)[: enc.pos])


class _Decoder:
    # Walks the payload with a cursor instead of returning (value, index)
    # pairs: no tuple per item, and no slice per integer.

    def __init__(self, b):
        self.b = b
        self.i = 0

    def byte(self):
        i = self.i
        if i >= len(self.b):
            raise PayloadError("truncated")
        self.i = i + 1
        return self.b[i]

    def arg(self, ai):
        # Shortest form only: every value has exactly one encoding.
        if ai < _AI_1:
            return ai
        if ai > _AI_8:
            raise PayloadError("indefinite or reserved length")
        size = 1 << (ai - _AI_1)
        n = 0
        for _ in range(size):
            n = n << 8 | self.byte()
        if n < (_AI_1 if size == 1 else 1 << (4 * size)):
            raise PayloadError("non-shortest integer encoding")
        return n

    def take(self, n):
        i = self.i
        if n > len(self.b) - i:
            raise PayloadError("truncated")
        self.i = i + n
        return self.b[i : i + n]

    def item(self, depth):
        ib = self.byte()
        major = ib & _MT_MASK
        if major == _MT_SIMPLE:
            if ib == _NULL:
                return None
            if ib == _TRUE or ib == _FALSE:
                return ib == _TRUE
            raise PayloadError("float or simple value 0x%02x not supported" % ib)
        if major == _MT_TAG:
            raise PayloadError("CBOR tags not supported")
        n = self.arg(ib & _AI_MASK)
        if major == _MT_UINT:
            return n
        if major == _MT_NINT:
            return -1 - n
        if major == _MT_BYTES:
            return self.take(n)
        if major == _MT_TEXT:
            s = self.take(n)
            if not _utf8_ok(s):
                raise PayloadError("text is not valid UTF-8")
            return s.decode("utf-8")
        if depth >= MAX_DEPTH:
            raise PayloadError("payload nested deeper than %d" % MAX_DEPTH)
        if n > len(self.b) - self.i:  # every item takes a byte: refuse early
            raise PayloadError("truncated")
        if major == _MT_ARRAY:
            items = [None] * n  # sized once: no regrowth
            for j in range(n):
                items[j] = self.item(depth + 1)
            return items
        return self.map(n, depth)

    def map(self, n, depth):
        b = self.b
        d = {}
        prev = None
        for _ in range(n):
            start = self.i
            if start >= len(b) or b[start] & _MT_MASK not in (_MT_UINT, _MT_NINT, _MT_TEXT):
                raise PayloadError("map keys must be int or str")
            k = self.item(depth + 1)
            kb = b[start : self.i]
            if prev is not None and kb <= prev:
                raise PayloadError("map keys duplicated or not in canonical order")
            prev = kb
            d[k] = self.item(depth + 1)
        return d


def loads(data):
    data = bytes(data)
    if len(data) > MAX_PAYLOAD:
        raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)
    dec = _Decoder(data)
    obj = dec.item(0)
    if dec.i != len(data):
        raise PayloadError("trailing bytes after payload")
    return obj


# --- Frames ----------------------------------------------------------------------
# Decoded frame (big-endian), before COBS:
#   0 version  1 type  2 flags  3 msg id (u16)  5 counter (u32)  9 length (u16)
#   11 payload  [tag, 16 bytes, if FLAG_TAG]  CRC-32 of everything before it.
# In a session (FLAG_TAG) the payload is ChaCha20-Poly1305 ciphertext of the
# CBOR payload, the header its associated data, and the tag its Poly1305 tag.


def _check_header(msg_type, msg_id, counter):
    if not 0 <= msg_type <= 0xFF or not 0 <= msg_id <= MSG_ID_MAX:
        raise FrameError("message type or id out of range")
    if not 0 <= counter <= COUNTER_MAX:
        raise FrameError("counter out of range")


def _finish(buf, msg_type, msg_id, counter, flags, length, sealer):
    # The payload is already at HEADER_LEN: add header, seal, CRC, encode.
    mv = memoryview(buf)
    end = HEADER_LEN + length
    struct.pack_into(_HEADER, buf, 0, PROTOCOL_VERSION, msg_type, flags, msg_id, counter, length)
    if sealer is not None:
        sealer.seal(buf, end, counter)
        end += TAG_LEN
    struct.pack_into(_CRC, buf, end, crc32(mv[:end]))
    return cobs_encode(mv[: end + CRC_LEN])


def _unframe(frame, buf):
    # COBS, CRC and layout checks. Returns (type, flags, id, counter, length).
    if len(frame) > MAX_ENCODED:
        raise TooLarge("frame over %d bytes" % MAX_ENCODED)
    n = cobs_decode_into(frame, buf)
    if n < HEADER_LEN + CRC_LEN:
        raise FrameError("truncated frame")
    n -= CRC_LEN
    if crc32(memoryview(buf)[:n]) != struct.unpack_from(_CRC, buf, n)[0]:
        raise CrcError("CRC mismatch (line error)")
    version, msg_type, flags, msg_id, counter, length = struct.unpack_from(_HEADER, buf, 0)
    if version != PROTOCOL_VERSION:
        raise VersionError("protocol version %d not supported" % version)
    if flags & ~_FLAGS_KNOWN:
        raise FrameError("unknown flags 0x%02x" % flags)
    if length > MAX_PAYLOAD:
        raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)
    if HEADER_LEN + length + (TAG_LEN if flags & FLAG_TAG else 0) != n:
        raise FrameError("length field does not match the frame")
    return msg_type, flags, msg_id, counter, length


def peek(frame):
    # UNTRUSTED view (framing and CRC only, no tag or counter check): for
    # reading a frame the session cannot open, e.g. an unauthenticated error
    # reply. Never act on it. Returns (type, flags, id, counter, payload).
    buf = bytearray(MAX_FRAME)
    msg_type, flags, msg_id, counter, length = _unframe(frame, buf)
    return msg_type, flags, msg_id, counter, loads(memoryview(buf)[HEADER_LEN : HEADER_LEN + length])


# --- Sealing: ChaCha20-Poly1305 (RFC 8439 2.8) ------------------------------------
# Key: the session key from the handshake (fresh per login, used for nothing
# else). Nonce (12 bytes): the sender, b"pump" or b"host", 4 zero bytes and
# the frame's counter (u32, big-endian). Each side's counter rises strictly
# within a session and the sender is in the nonce, so no nonce repeats under
# a key. Associated data: the 11-byte header, so type, flags, id, counter and
# length are authenticated though not secret.

AEAD_NONCE_LEN = const(12)
_SENDER_PUMP = b"pump"
_SENDER_HOST = b"host"
_NONCE_COUNTER_AT = const(8)


def seal_nonce(from_pump, counter):
    # The nonce of a sealed frame (docs/protocol.md 4), for a second
    # programmer and the tests.
    nonce = bytearray(AEAD_NONCE_LEN)
    nonce[0:4] = _SENDER_PUMP if from_pump else _SENDER_HOST
    struct.pack_into(">I", nonce, _NONCE_COUNTER_AT, counter)
    return bytes(nonce)


class _Sealer:
    # Seals and opens frames in place in the session's frame buffer. On the
    # pump the nonces are preallocated and aead works in place: a frame costs
    # no allocation here.

    def __init__(self, key, pump):
        if not _is_bytes(key, KEY_LEN):
            raise ValueError("session key must be %d bytes" % KEY_LEN)
        self._key = bytes(key)
        self._tx = bytearray(seal_nonce(pump, 0))
        self._rx = bytearray(seal_nonce(not pump, 0))
        self._host = _HostAead(self._key) if _HostAead is not None else None

    def seal(self, buf, end, counter):
        # buf[HEADER_LEN:end] plaintext -> ciphertext, tag at buf[end:end + TAG_LEN].
        struct.pack_into(">I", self._tx, _NONCE_COUNTER_AT, counter)
        mv = memoryview(buf)
        if self._host is not None:
            buf[HEADER_LEN : end + TAG_LEN] = self._host.encrypt(
                bytes(self._tx), bytes(mv[HEADER_LEN:end]), bytes(mv[:HEADER_LEN]))
        else:
            _aead.seal_into(mv[HEADER_LEN:], self._key, self._tx, mv[:HEADER_LEN], mv[HEADER_LEN:end])

    def open(self, buf, end, counter):
        # Tag checked first; on success buf[HEADER_LEN:end] holds the plaintext.
        struct.pack_into(">I", self._rx, _NONCE_COUNTER_AT, counter)
        mv = memoryview(buf)
        try:
            if self._host is not None:
                buf[HEADER_LEN:end] = self._host.decrypt(
                    bytes(self._rx), bytes(mv[HEADER_LEN : end + TAG_LEN]), bytes(mv[:HEADER_LEN]))
            else:
                _aead.open_into(mv[HEADER_LEN:], self._key, self._rx, mv[:HEADER_LEN], mv[HEADER_LEN : end + TAG_LEN])
        except _InvalidTag:
            raise TagError("authentication tag did not verify")


class Session:
    # One side of a link. Without a key: the unauthenticated state (identify
    # and handshake only; plain frames, counter 0). With the session key from
    # the handshake: every frame is sealed and counted, per direction.
    # seal() and open() share one preallocated frame buffer; neither returns a
    # view into it.

    def __init__(self, key=None, pump=False, role=ROLE_NONE):
        self.role = role
        self.authenticated = key is not None
        self.tx = 0  # last counter sent
        self.rx = 0  # last counter accepted
        self._sealer = _Sealer(key, pump) if key is not None else None
        self._flags = FLAG_FROM_PUMP if pump else 0
        self._buf = bytearray(MAX_FRAME)

    def seal(self, msg_type, msg_id, payload):
        # Returns the encoded frame, delimiter included. A refused frame
        # (oversize, bad payload, bad header) consumes no counter.
        counter = 0
        if self._sealer is not None:
            if self.tx >= COUNTER_MAX:
                raise NotAuthenticated("send counter exhausted: authenticate again")
            counter = self.tx + 1
        _check_header(msg_type, msg_id, counter)
        enc = _Encoder(self._buf, HEADER_LEN, True)  # payload straight into the frame
        enc.value(payload, 0)
        flags = self._flags
        if self._sealer is not None:
            flags |= FLAG_TAG
            self.tx = counter
        length = enc.pos - HEADER_LEN
        return _finish(self._buf, msg_type, msg_id, counter, flags, length, self._sealer)

    def open(self, frame):
        buf = self._buf
        msg_type, flags, msg_id, counter, length = _unframe(frame, buf)
        end = HEADER_LEN + length
        if self._sealer is None:
            if flags & FLAG_TAG:
                raise NotAuthenticated("sealed frame but no session")
            if counter:
                raise FrameError("counter must be 0 outside a session")
            self._check_sender(flags)
        else:
            if not flags & FLAG_TAG:
                raise NotAuthenticated("unsealed frame in a session")
            self._check_sender(flags)
            self._sealer.open(buf, end, counter)
            if counter <= self.rx:
                raise ReplayError("counter %d not above %d" % (counter, self.rx))
            self.rx = counter  # authentic and fresh: consumed even if payload is bad
        return msg_type, msg_id, counter, loads(memoryview(buf)[HEADER_LEN:end])

    def _check_sender(self, flags):
        if (flags & FLAG_FROM_PUMP) == self._flags:
            raise ReplayError("frame came from this side (reflected)")


class Deframer:
    # Splits a byte stream into frames at the delimiter, in a buffer allocated
    # once. push() returns a complete frame (delimiter included) or None; a
    # frame over MAX_ENCODED is dropped up to its delimiter and reported.

    def __init__(self):
        self._buf = bytearray(MAX_ENCODED)
        self._n = 0
        self._overflow = False

    def push(self, byte):
        n = self._n
        if byte != DELIM:
            if n < MAX_ENCODED - 1:
                self._buf[n] = byte
                self._n = n + 1
            else:
                self._overflow = True
            return None
        self._n = 0
        if self._overflow:
            self._overflow = False
            raise TooLarge("frame over %d bytes dropped" % MAX_ENCODED)
        if not n:
            return None  # idle delimiters between frames
        self._buf[n] = DELIM
        return bytes(memoryview(self._buf)[: n + 1])
