# Wire codec of the programmer link: COBS framing, frame layout, CRC-32,
# HMAC-SHA256 tags, handshake key derivation, a CBOR subset for payloads and
# the error-code table. The firmware (MicroPython) and the host tool (CPython)
# both import this very file, so the two ends cannot drift.
# docs/protocol.md is the specification; keep the two in step.
#
# Only struct, binascii.crc32 and hashlib.sha256 are used (present in both
# runtimes); randomness (nonces) is the caller's, passed in as bytes.
import struct
from binascii import crc32
from hashlib import sha256

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# --- Sizes -------------------------------------------------------------------

PROTOCOL_VERSION = const(1)
DELIM = const(0)  # COBS frame delimiter: ends every frame on the wire
HEADER_LEN = const(11)  # version, type, flags, msg id, counter, payload length
TAG_LEN = const(16)  # HMAC-SHA256 truncated to 128 bits
CRC_LEN = const(4)
# Whole encoded frame, delimiter included: fits the Pico's USB CDC buffering.
MAX_ENCODED = const(512)
MAX_PAYLOAD = const(448)
# Largest decoded frame; COBS adds at most 1 byte per 254 plus 1 and the
# delimiter, so MAX_FRAME encodes to at most 482 bytes (< MAX_ENCODED).
MAX_FRAME = const(HEADER_LEN + MAX_PAYLOAD + TAG_LEN + CRC_LEN)
MSG_ID_MAX = const(0xFFFF)
COUNTER_MAX = const(0xFFFFFFFF)
MAX_DEPTH = const(8)  # nested lists/maps in a payload

_HEADER = ">BBBHIH"
_CRC = ">I"

# Flags byte. The flags only describe the layout: whether a frame is trusted
# is decided by the receiver's session state, never by the sender's flags.
FLAG_TAG = const(0x01)  # a 16-byte tag follows the payload
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
    if role != ROLE_PATIENT and role != ROLE_CLINICIAN:
        raise Forbidden("role %r has no credential" % (role,))


def _handshake_mac(key, label, first, second, role):
    _check_role(role)
    if len(key) != KEY_LEN:
        raise ValueError("device key must be %d bytes" % KEY_LEN)
    if len(first) != NONCE_LEN or len(second) != NONCE_LEN:
        raise AuthFailed("nonces must be %d bytes" % NONCE_LEN)
    return _hmac(_pads(key), (label, first, second, bytes((role,))))


def pump_proof(key, nonce_h, nonce_p, role):
    return _handshake_mac(key, b"pump", nonce_h, nonce_p, role)


def host_proof(key, nonce_h, nonce_p, role):
    return _handshake_mac(key, b"host", nonce_p, nonce_h, role)


def session_key(key, nonce_h, nonce_p, role):
    return _handshake_mac(key, b"session", nonce_h, nonce_p, role)


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
    if len(patient) != KEY_LEN or len(clinician) != KEY_LEN:
        raise ValueError("device keys must be %d bytes" % KEY_LEN)
    if ct_equal(patient, clinician):
        raise ValueError("patient and clinician keys must differ")


def pump_challenge(keys, role, nonce_h, nonce_p):
    # Pump, on HELLO: proof_p for the reply (nonce_p fresh from os.urandom).
    return pump_proof(role_key(keys, role), nonce_h, nonce_p, role)


def pump_verify(keys, role, nonce_h, nonce_p, proof_h):
    # Pump, on PROOF: the session key, or AuthFailed.
    key = role_key(keys, role)
    if not ct_equal(proof_h, host_proof(key, nonce_h, nonce_p, role)):
        raise AuthFailed("host proof did not verify")
    return session_key(key, nonce_h, nonce_p, role)


def host_verify(key, role, nonce_h, nonce_p, proof_p):
    # Host, on the HELLO reply: checks the pump first, then (proof_h, session key).
    if not ct_equal(proof_p, pump_proof(key, nonce_h, nonce_p, role)):
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


def _utf8_ok(b):
    # Strict RFC 3629 check (no overlongs, surrogates or > U+10FFFF).
    # MicroPython's decoder accepts those, CPython's does not: check here so
    # both ends accept exactly the same text.
    n = len(b)
    if not n or max(b) < 0x80:
        return True
    i = 0
    while i < n:
        c = b[i]
        i += 1
        if c < 0x80:
            continue
        lo, hi = 0x80, 0xBF  # allowed range of the second byte
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
            return False
        if i + k > n or not lo <= b[i] <= hi:
            return False
        for j in range(i + 1, i + k):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += k
    return True


def _head(out, major, n):
    if n < _AI_1:
        out.append(major | n)
        return
    ai, size = _AI_1, 1
    while n >> (8 * size):
        ai += 1
        size <<= 1
        if size > _ARG_MAX_BYTES:
            raise PayloadError("integer beyond 64 bits")
    out.append(major | ai)
    out.extend(n.to_bytes(size, "big"))


def _is_key(k):
    # bool is an int subclass on CPython only: exclude it explicitly.
    return k is not True and k is not False and isinstance(k, (int, str))


def _enc(out, x, depth):
    if x is None:
        out.append(_NULL)
    elif x is True:
        out.append(_TRUE)
    elif x is False:
        out.append(_FALSE)
    elif isinstance(x, int):
        if x >= 0:
            _head(out, _MT_UINT, x)
        else:
            _head(out, _MT_NINT, -1 - x)
    elif isinstance(x, (str, bytes, bytearray)):
        major = _MT_BYTES
        if isinstance(x, str):
            major = _MT_TEXT
            try:
                x = x.encode("utf-8")
            except UnicodeError:
                raise PayloadError("text is not valid UTF-8")
            if not _utf8_ok(x):
                raise PayloadError("text is not valid UTF-8")
        if len(x) > MAX_PAYLOAD:
            raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)
        _head(out, major, len(x))
        out.extend(x)
    elif isinstance(x, (list, tuple, dict)):
        if depth >= MAX_DEPTH:
            raise PayloadError("payload nested deeper than %d" % MAX_DEPTH)
        if len(x) > MAX_PAYLOAD:  # every item takes a byte: refuse early
            raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)
        if isinstance(x, dict):
            _head(out, _MT_MAP, len(x))
            for kb, v in _sorted_items(x, depth):
                out.extend(kb)
                _enc(out, v, depth + 1)
        else:
            _head(out, _MT_ARRAY, len(x))
            for v in x:
                _enc(out, v, depth + 1)
    else:
        raise PayloadError("cannot encode %s" % type(x).__name__)
    if len(out) > MAX_PAYLOAD:
        raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)


def _sorted_items(d, depth):
    items = []
    for k, v in d.items():
        if not _is_key(k):
            raise PayloadError("map keys must be int or str")
        kb = bytearray()
        _enc(kb, k, depth + 1)
        items.append((bytes(kb), v))
    items.sort(key=lambda item: item[0])
    return items


def dumps(obj):
    out = bytearray()
    _enc(out, obj, 0)
    return bytes(out)


def _arg(b, i, ai):
    # Returns (argument, next index); shortest form only.
    if ai < _AI_1:
        return ai, i
    if ai > _AI_8:
        raise PayloadError("indefinite or reserved length")
    size = 1 << (ai - _AI_1)
    end = i + size
    if end > len(b):
        raise PayloadError("truncated")
    n = int.from_bytes(b[i:end], "big")
    if n < (_AI_1 if size == 1 else 1 << (4 * size)):
        raise PayloadError("non-shortest integer encoding")
    return n, end


def _dec(b, i, depth):
    if i >= len(b):
        raise PayloadError("truncated")
    ib = b[i]
    major = ib & _MT_MASK
    i += 1
    if major == _MT_SIMPLE:
        if ib == _NULL:
            return None, i
        if ib == _TRUE or ib == _FALSE:
            return ib == _TRUE, i
        raise PayloadError("float or simple value 0x%02x not supported" % ib)
    if major == _MT_TAG:
        raise PayloadError("CBOR tags not supported")
    n, i = _arg(b, i, ib & _AI_MASK)
    if major == _MT_UINT:
        return n, i
    if major == _MT_NINT:
        return -1 - n, i
    if major == _MT_BYTES or major == _MT_TEXT:
        end = i + n
        if end > len(b):
            raise PayloadError("truncated")
        s = b[i:end]
        if major == _MT_TEXT:
            if not _utf8_ok(s):
                raise PayloadError("text is not valid UTF-8")
            s = s.decode("utf-8")
        return s, end
    if depth >= MAX_DEPTH:
        raise PayloadError("payload nested deeper than %d" % MAX_DEPTH)
    if n > len(b) - i:  # every item takes a byte: refuse before allocating
        raise PayloadError("truncated")
    if major == _MT_ARRAY:
        items = []
        for _ in range(n):
            v, i = _dec(b, i, depth + 1)
            items.append(v)
        return items, i
    d = {}
    prev = None
    for _ in range(n):
        start = i
        if i >= len(b) or b[i] & _MT_MASK not in (_MT_UINT, _MT_NINT, _MT_TEXT):
            raise PayloadError("map keys must be int or str")
        k, i = _dec(b, i, depth + 1)
        kb = b[start:i]
        if prev is not None and kb <= prev:
            raise PayloadError("map keys duplicated or not in canonical order")
        prev = kb
        d[k], i = _dec(b, i, depth + 1)
    return d, i


def loads(data):
    data = bytes(data)
    if len(data) > MAX_PAYLOAD:
        raise TooLarge("payload over %d bytes" % MAX_PAYLOAD)
    obj, i = _dec(data, 0, 0)
    if i != len(data):
        raise PayloadError("trailing bytes after payload")
    return obj


# --- Frames ----------------------------------------------------------------------
# Decoded frame (big-endian), before COBS:
#   0 version  1 type  2 flags  3 msg id (u16)  5 counter (u32)  9 length (u16)
#   11 payload  [tag, 16 bytes, if FLAG_TAG]  CRC-32 of everything before it.


def _build(buf, msg_type, msg_id, counter, flags, body, pads):
    if not 0 <= msg_type <= 0xFF or not 0 <= msg_id <= MSG_ID_MAX:
        raise FrameError("message type or id out of range")
    if not 0 <= counter <= COUNTER_MAX:
        raise FrameError("counter out of range")
    mv = memoryview(buf)
    end = HEADER_LEN + len(body)
    struct.pack_into(_HEADER, buf, 0, PROTOCOL_VERSION, msg_type, flags, msg_id, counter, len(body))
    buf[HEADER_LEN:end] = body
    if pads is not None:
        buf[end : end + TAG_LEN] = _hmac(pads, (mv[:end],))[:TAG_LEN]
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


class Session:
    # One side of a link. Without a key: the unauthenticated state (identify
    # and handshake only; untagged frames, counter 0). With the session key
    # from the handshake: every frame is tagged and counted, per direction.
    # seal() and open() share one preallocated frame buffer; neither returns a
    # view into it.

    def __init__(self, key=None, pump=False, role=ROLE_NONE):
        self.role = role
        self.authenticated = key is not None
        self.tx = 0  # last counter sent
        self.rx = 0  # last counter accepted
        self._pads = _pads(key) if key is not None else None
        self._flags = FLAG_FROM_PUMP if pump else 0
        self._buf = bytearray(MAX_FRAME)

    def seal(self, msg_type, msg_id, payload):
        body = dumps(payload)
        flags = self._flags
        counter = 0
        if self._pads is not None:
            if self.tx >= COUNTER_MAX:
                raise NotAuthenticated("send counter exhausted: authenticate again")
            self.tx += 1
            counter = self.tx
            flags |= FLAG_TAG
        return _build(self._buf, msg_type, msg_id, counter, flags, body, self._pads)

    def open(self, frame):
        buf = self._buf
        msg_type, flags, msg_id, counter, length = _unframe(frame, buf)
        end = HEADER_LEN + length
        if self._pads is None:
            if flags & FLAG_TAG:
                raise NotAuthenticated("tagged frame but no session")
            if counter:
                raise FrameError("counter must be 0 outside a session")
        else:
            if not flags & FLAG_TAG:
                raise NotAuthenticated("untagged frame in a session")
            mv = memoryview(buf)
            mac = _hmac(self._pads, (mv[:end],))
            if not ct_equal(mv[end : end + TAG_LEN], mac[:TAG_LEN]):
                raise TagError("authentication tag did not verify")
            if counter <= self.rx:
                raise ReplayError("counter %d not above %d" % (counter, self.rx))
        if flags & FLAG_FROM_PUMP == self._flags:
            raise ReplayError("frame came from this side (reflected)")
        if self._pads is not None:
            self.rx = counter  # authentic and fresh: consumed even if payload is bad
        return msg_type, msg_id, counter, loads(memoryview(buf)[HEADER_LEN:end])


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
