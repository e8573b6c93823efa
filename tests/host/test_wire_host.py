"""firmware/wire.py under CPython, and against MicroPython running the same file.

The host tool imports firmware/wire.py by path, so these properties hold for
the very code the pump runs. The cross-runtime tests drive a MicroPython
unix-port process (MICROPYTHON or .venv/bin/micropython) through a tiny
line protocol on stdin/stdout.
"""
import hmac
import subprocess
import sys
from hashlib import sha256
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
sys.path.insert(0, str(FIRMWARE))

import wire  # noqa: E402

assert Path(wire.__file__).resolve().parent == FIRMWARE


# --- Strategies -----------------------------------------------------------------

keys = st.binary(min_size=wire.KEY_LEN, max_size=wire.KEY_LEN)
nonces = st.binary(min_size=wire.NONCE_LEN, max_size=wire.NONCE_LEN)
roles = st.sampled_from([wire.ROLE_PATIENT, wire.ROLE_CLINICIAN])
msg_types = st.integers(0, 0xFF)
msg_ids = st.integers(0, wire.MSG_ID_MAX)
counters = st.integers(1, wire.COUNTER_MAX)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.integers(-300, 300)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
map_keys = st.integers(-(2**64), 2**64 - 1) | st.text(max_size=8)
payloads = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(map_keys, inner, max_size=6),
    max_leaves=25,
)


def depth(x):
    if isinstance(x, list):
        return 1 + max((depth(v) for v in x), default=0)
    if isinstance(x, dict):
        return 1 + max((depth(v) for v in x.values()), default=0)
    return 0


def fits(x):
    # Payloads the codec must accept: within the nesting and size limits.
    if depth(x) > wire.MAX_DEPTH:
        return False
    try:
        wire.dumps(x)
    except wire.TooLarge:
        return False
    return True


def same(a, b):
    # Equality that also tells bool from int and bytes from str.
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def pair(key):
    return wire.Session(key), wire.Session(key, pump=True)


# --- Payload encoding -----------------------------------------------------------


@given(payloads)
def test_payload_round_trips(value):
    assume(fits(value))
    assert same(wire.loads(wire.dumps(value)), value)


def nested(levels, leaf):
    for _ in range(levels):
        leaf = [leaf]
    return leaf


@given(st.integers(wire.MAX_DEPTH + 1, 40), scalars)
def test_payload_nested_too_deeply_is_refused(levels, leaf):
    with pytest.raises(wire.PayloadError):
        wire.dumps(nested(levels, leaf))
    with pytest.raises(wire.PayloadError):
        wire.loads(b"\x81" * levels + b"\x00")


@given(st.binary(min_size=wire.MAX_PAYLOAD - 2, max_size=2000) | st.lists(st.integers(0, 23), min_size=wire.MAX_PAYLOAD + 1))
def test_oversized_payload_is_refused_not_truncated(value):
    with pytest.raises(wire.TooLarge):
        wire.dumps(value)
    with pytest.raises(wire.TooLarge):
        wire.Session().seal(0x10, 1, value)


@given(st.binary(max_size=60))
def test_every_accepted_payload_encoding_is_canonical(data):
    # The decoder accepts exactly the encoder's output: one encoding per value.
    try:
        value = wire.loads(data)
    except wire.WireError as e:
        assert e.code in (wire.BAD_PAYLOAD, wire.TOO_LARGE)
        return
    assert wire.dumps(value) == data


@given(st.dictionaries(map_keys, st.integers(-(2**64), 2**64 - 1), max_size=8))
def test_map_encoding_does_not_depend_on_insertion_order(d):
    assume(fits(d))
    reordered = dict(reversed(list(d.items())))
    assert wire.dumps(reordered) == wire.dumps(d)


# RFC 8949 Appendix A examples within the subset.
RFC8949 = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"),
    (100, "1864"), (1000, "1903e8"), (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"), (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"), (-1, "20"), (-10, "29"),
    (-100, "3863"), (-1000, "3903e7"), (False, "f4"), (True, "f5"), (None, "f6"),
    (b"", "40"), (bytes.fromhex("01020304"), "4401020304"), ("", "60"), ("a", "6161"),
    ("IETF", "6449455446"), ("\"\\", "62225c"), ("\u00fc", "62c3bc"),
    ("\u6c34", "63e6b0b4"), ("\U00010151", "64f0908591"), ([], "80"),
    ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), ({1: 2, 3: 4}, "a201020304"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
     "a56161614161626142616361436164614461656145"),
]


@pytest.mark.parametrize("value,hexed", RFC8949)
def test_payload_matches_rfc8949_examples(value, hexed):
    assert wire.dumps(value).hex() == hexed
    assert same(wire.loads(bytes.fromhex(hexed)), value)


def test_payload_refuses_lone_surrogates():
    with pytest.raises(wire.PayloadError):
        wire.dumps("\ud800")


# --- COBS -----------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_cobs_round_trips_random_bytes(data):
    enc = wire.cobs_encode(data)
    assert enc.find(b"\x00") == len(enc) - 1
    assert len(enc) <= len(data) + len(data) // 254 + 2
    assert wire.cobs_decode(enc) == data


@given(st.lists(st.sampled_from([b"\x00", b"\x01", b"\xff" * 253, b"\x02" * 254, b"a"]), max_size=12))
def test_cobs_round_trips_zero_runs_and_block_edges(chunks):
    data = b"".join(chunks)
    assert wire.cobs_decode(wire.cobs_encode(data)) == data


@given(st.binary(max_size=600))
def test_every_accepted_cobs_frame_is_canonical(body):
    frame = body + b"\x00"
    try:
        data = wire.cobs_decode(frame)
    except wire.FrameError:
        return
    assert wire.cobs_encode(data) == frame


# --- HMAC -----------------------------------------------------------------------


@given(st.binary(max_size=200), st.binary(max_size=600))
def test_hmac_sha256_equals_cpython_hmac(key, msg):
    assert wire.hmac_sha256(key, msg) == hmac.new(key, msg, sha256).digest()


@given(st.binary(min_size=65, max_size=300), st.binary(max_size=100))
def test_hmac_sha256_long_keys_equal_cpython_hmac(key, msg):
    assert wire.hmac_sha256(key, msg) == hmac.new(key, msg, sha256).digest()


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_ct_equal_agrees_with_equality(a, b):
    assert wire.ct_equal(a, b) == (a == b)
    assert wire.ct_equal(a, a)


# --- Frames ---------------------------------------------------------------------


@given(keys, msg_types, msg_ids, payloads)
def test_sealed_frame_round_trips(key, msg_type, msg_id, payload):
    assume(fits(payload))
    host, pump = pair(key)
    frame = host.seal(msg_type, msg_id, payload)
    assert len(frame) <= wire.MAX_ENCODED
    got_type, got_id, counter, got = pump.open(frame)
    assert (got_type, got_id, counter) == (msg_type, msg_id, 1)
    assert same(got, payload)


def flips(frame):
    for i in range(len(frame)):
        for bit in range(8):
            yield frame[:i] + bytes([frame[i] ^ (1 << bit)]) + frame[i + 1:]


@settings(max_examples=60, deadline=None)
@given(keys, msg_types, msg_ids, payloads)
def test_every_single_bit_flip_of_a_sealed_frame_is_rejected(key, msg_type, msg_id, payload):
    assume(fits(payload))
    host, pump = pair(key)
    frame = host.seal(msg_type, msg_id, payload)
    for bad in flips(frame):
        with pytest.raises(wire.WireError):
            pump.open(bad)
    assert pump.open(frame)[2] == 1


@settings(max_examples=30, deadline=None)
@given(msg_types, msg_ids, payloads)
def test_every_single_bit_flip_of_an_unauthenticated_frame_is_rejected(msg_type, msg_id, payload):
    # Line errors are caught by COBS and the CRC alone (no tag, no security).
    assume(fits(payload))
    frame = wire.Session().seal(msg_type, msg_id, payload)
    for bad in flips(frame):
        with pytest.raises(wire.WireError):
            wire.Session(pump=True).open(bad)


@given(keys, payloads, st.data())
def test_truncated_frames_are_rejected(key, payload, data):
    assume(fits(payload))
    host, pump = pair(key)
    raw = wire.cobs_decode(host.seal(0x10, 1, payload))
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(wire.WireError):
        pump.open(wire.cobs_encode(raw[:cut]))


@given(st.binary(max_size=600))
def test_garbage_never_opens(junk):
    _, pump = pair(bytes(32))
    for frame in (junk + b"\x00", wire.cobs_encode(junk)):
        with pytest.raises(wire.WireError):
            pump.open(frame)


@given(keys, st.lists(st.booleans(), min_size=1, max_size=20))
def test_only_fresh_counters_are_accepted(key, delivered):
    # Frames lost on the way leave gaps; any frame at or below the last
    # accepted counter is a replay.
    host, pump = pair(key)
    sent = []
    for n, arrives in enumerate(delivered, 1):
        frame = host.seal(0x10, n, n)
        sent.append(frame)
        if arrives:
            assert pump.open(frame)[2] == n
    for frame in sent[: pump.rx]:
        with pytest.raises(wire.ReplayError):
            pump.open(frame)


@given(keys, nonces, nonces, roles)
def test_handshake_derives_one_session_key(key, nonce_h, nonce_p, role):
    other = bytes(b ^ 0xFF for b in key)
    device = {role: key, 3 - role: other}
    proof_p = wire.pump_challenge(device, role, nonce_h, nonce_p)
    proof_h, host_key = wire.host_verify(key, role, nonce_h, nonce_p, proof_p)
    assert wire.pump_verify(device, role, nonce_h, nonce_p, proof_h) == host_key
    with pytest.raises(wire.AuthFailed):
        wire.pump_verify(device, 3 - role, nonce_h, nonce_p, wire.host_proof(key, nonce_h, nonce_p, 3 - role))


# --- Same bytes under MicroPython ----------------------------------------------------

MP_SCRIPT = r"""
import sys
sys.path.insert(0, %r)
from binascii import hexlify, unhexlify
import wire

def key(k):
    return None if k == "-" else unhexlify(k)

while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd, *args = line.split()
    try:
        if cmd == "impl":
            out = sys.implementation.name
        elif cmd == "seal":  # key pump tx type id cbor
            s = wire.Session(key(args[0]), pump=args[1] == "1")
            s.tx = int(args[2])
            out = hexlify(s.seal(int(args[3]), int(args[4]), wire.loads(unhexlify(args[5]))))
        elif cmd == "open":  # key pump rx frame
            s = wire.Session(key(args[0]), pump=args[1] == "1")
            s.rx = int(args[2])
            t, i, c, p = s.open(unhexlify(args[3]))
            out = "%%d %%d %%d %%s" %% (t, i, c, hexlify(wire.dumps(p)).decode())
        elif cmd == "loads":
            out = hexlify(wire.dumps(wire.loads(unhexlify(args[0]) if args else b"")))
        elif cmd == "cobs":
            out = hexlify(wire.cobs_decode(wire.cobs_encode(unhexlify(args[0]) if args else b"")))
        elif cmd == "hs":  # patient clinician role nonce_h nonce_p
            keys = {wire.ROLE_PATIENT: unhexlify(args[0]), wire.ROLE_CLINICIAN: unhexlify(args[1])}
            role, nh, np = int(args[2]), unhexlify(args[3]), unhexlify(args[4])
            proof_p = wire.pump_challenge(keys, role, nh, np)
            proof_h, sk = wire.host_verify(keys[role], role, nh, np, proof_p)
            assert wire.pump_verify(keys, role, nh, np, proof_h) == sk
            out = b" ".join(hexlify(x) for x in (proof_p, proof_h, sk))
        print("OK", out if isinstance(out, str) else out.decode())
    except wire.WireError as e:
        print("ERR", e.code)
"""


from mprun import micropython  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)


class MicroPython:
    # One long-lived MicroPython process answering one line per request.
    def __init__(self):
        self.proc = subprocess.Popen(
            [micropython(), "-c", MP_SCRIPT % str(FIRMWARE)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, *words):
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().split()
        assert reply and reply[0] in ("OK", "ERR"), "MicroPython said %r" % reply
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def mp():
    if not micropython():
        pytest.skip("no MicroPython unix port (make setup)")
    proc = MicroPython()
    yield proc
    proc.close()


def test_cross_runtime_peer_is_micropython(mp):
    assert mp.ask("impl") == ["OK", "micropython"]


def hexkey(key):
    return key.hex() if key is not None else "-"


cross = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@cross
@given(st.none() | keys, st.booleans(), counters, msg_types, msg_ids, payloads)
def test_micropython_seals_the_same_bytes_and_cpython_opens_them(mp, key, from_pump, counter, msg_type,
                                                                  msg_id, payload):
    assume(fits(payload))
    tx = counter - 1 if key is not None else 0
    status, frame_hex = mp.ask("seal", hexkey(key), int(from_pump), tx, msg_type, msg_id,
                               wire.dumps(payload).hex())
    assert status == "OK"
    frame = bytes.fromhex(frame_hex)
    ours = wire.Session(key, pump=from_pump)
    ours.tx = tx
    assert frame == ours.seal(msg_type, msg_id, payload)
    got = wire.Session(key, pump=not from_pump).open(frame)
    assert got[:3] == (msg_type, msg_id, counter if key is not None else 0)
    assert same(got[3], payload)


@cross
@given(st.none() | keys, st.booleans(), counters, msg_types, msg_ids, payloads)
def test_cpython_frames_open_under_micropython(mp, key, from_pump, counter, msg_type, msg_id, payload):
    assume(fits(payload))
    sender = wire.Session(key, pump=from_pump)
    sender.tx = counter - 1 if key is not None else 0
    frame = sender.seal(msg_type, msg_id, payload)
    status, t, i, c, body = mp.ask("open", hexkey(key), int(not from_pump), 0, frame.hex())
    assert status == "OK"
    assert (int(t), int(i), int(c)) == (msg_type, msg_id, counter if key is not None else 0)
    assert bytes.fromhex(body) == wire.dumps(payload)


@cross
@given(keys, payloads, st.data())
def test_both_runtimes_reject_a_damaged_frame_with_the_same_code(mp, key, payload, data):
    assume(fits(payload))
    frame = bytearray(wire.Session(key).seal(0x10, 1, payload))
    for bit in data.draw(st.sets(st.integers(0, 8 * len(frame) - 1), min_size=1, max_size=3)):
        frame[bit // 8] ^= 1 << bit % 8
    with pytest.raises(wire.WireError) as ours:
        wire.Session(key, pump=True).open(bytes(frame))
    assert mp.ask("open", key.hex(), 1, 0, bytes(frame).hex()) == ["ERR", str(ours.value.code)]


utf8ish = st.binary(max_size=12) | st.lists(
    st.sampled_from([0x00, 0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF,
                     0x9F, 0xA0, 0xF0, 0xF4, 0xF5, 0x8F, 0x90, 0xFF]), max_size=8).map(bytes)


@given(utf8ish | st.binary(max_size=23))
def test_text_is_accepted_exactly_when_cpython_can_decode_it(raw):
    data = bytes([0x60 | len(raw)]) + raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(wire.PayloadError):
            wire.loads(data)
    else:
        assert wire.loads(data) == text


@cross
@given(utf8ish)
def test_both_runtimes_accept_exactly_the_same_text(mp, raw):
    # MicroPython's own UTF-8 decoder is laxer than CPython's: the codec's
    # strict check must make both ends agree byte for byte.
    data = bytes([0x60 | len(raw)]) + raw
    try:
        ours = ["OK", wire.dumps(wire.loads(data)).hex()]
    except wire.WireError as e:
        ours = ["ERR", str(e.code)]
    assert mp.ask("loads", data.hex()) == ours


@cross
@given(st.binary(max_size=60))
def test_both_runtimes_decode_random_payload_bytes_alike(mp, data):
    try:
        ours = ["OK", wire.dumps(wire.loads(data)).hex()]
    except wire.WireError as e:
        ours = ["ERR", str(e.code)]
    assert mp.ask("loads", data.hex()) == ours


@cross
@given(st.binary(max_size=700))
def test_both_runtimes_cobs_round_trip(mp, data):
    expected = ["OK", data.hex()] if data else ["OK"]
    assert mp.ask("cobs", data.hex()) == expected


@cross
@given(keys, keys, roles, nonces, nonces)
def test_both_runtimes_agree_on_the_handshake(mp, patient, clinician, role, nonce_h, nonce_p):
    assume(patient != clinician)
    device = {wire.ROLE_PATIENT: patient, wire.ROLE_CLINICIAN: clinician}
    proof_p = wire.pump_challenge(device, role, nonce_h, nonce_p)
    proof_h, session = wire.host_verify(device[role], role, nonce_h, nonce_p, proof_p)
    expected = ["OK", proof_p.hex(), proof_h.hex(), session.hex()]
    assert mp.ask("hs", patient.hex(), clinician.hex(), role, nonce_h.hex(), nonce_p.hex()) == expected


def test_host_seals_session_frames_with_the_cryptography_library():
    # Issue #15: the host side of the link's encryption is a well-kept
    # library, not the firmware's own primitive.
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    assert wire._HostAead is ChaCha20Poly1305
    host = wire.Session(bytes(range(32)))
    raw = wire.cobs_decode(host.seal(0x21, 1, "pain 7/10"))
    nonce = wire.seal_nonce(False, 1)
    assert ChaCha20Poly1305(bytes(range(32))).decrypt(nonce, raw[11:-4], raw[:11]) == wire.dumps("pain 7/10")
