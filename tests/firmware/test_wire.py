# Wire codec of the programmer link, on MicroPython (docs/protocol.md).
import struct
from binascii import crc32, unhexlify

import aead
import wire

KEY = bytes(range(32))
PATIENT_KEY = bytes(range(100, 132))
CLINICIAN_KEY = bytes(range(200, 232))
KEYS = {wire.ROLE_PATIENT: PATIENT_KEY, wire.ROLE_CLINICIAN: CLINICIAN_KEY}
NONCE_H = bytes(range(16))
NONCE_P = bytes(range(16, 32))


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("expected %s" % exc.__name__)


def pair(key=KEY):
    return wire.Session(key), wire.Session(key, pump=True)


def reframe(frame, mutate, fix_crc=True):
    # Decode, change the decoded bytes, optionally recompute the CRC, re-encode.
    raw = bytearray(wire.cobs_decode(frame))
    mutate(raw)
    if fix_crc:
        n = len(raw) - wire.CRC_LEN
        struct.pack_into(">I", raw, n, crc32(bytes(raw[:n])))
    return wire.cobs_encode(raw)


def prng(seed, n):
    # Deterministic pseudo-random bytes (LCG) for garbage inputs.
    out = bytearray(n)
    for i in range(n):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = seed >> 16 & 0xFF
    return bytes(out)


# --- COBS ---------------------------------------------------------------------


def test_cobs_known_vectors():
    # Examples from the COBS paper / Wikipedia, plus the delimiter.
    vectors = [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
        (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
        (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
        (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
    ]
    for data, body in vectors:
        assert wire.cobs_encode(data) == body + b"\x00", data
        assert wire.cobs_decode(body + b"\x00") == data, data


def test_cobs_round_trips_zero_runs():
    for data in (bytes(1), bytes(2), bytes(300), b"a" + bytes(600) + b"b", b"\x00a\x00\x00b\x00"):
        enc = wire.cobs_encode(data)
        assert enc.find(b"\x00") == len(enc) - 1
        assert wire.cobs_decode(enc) == data


def test_cobs_round_trips_block_boundaries():
    for n in (253, 254, 255, 256, 507, 508, 509):
        run = b"\x01" * n
        for data in (run, run + b"\x00", b"\x00" + run, run + b"\x00" + run, run + b"\x00\x00"):
            enc = wire.cobs_encode(data)
            assert enc.find(b"\x00") == len(enc) - 1
            assert len(enc) <= len(data) + len(data) // 254 + 2
            assert wire.cobs_decode(enc) == data, (n, len(data))


def test_cobs_round_trips_pseudo_random_bytes():
    for seed in range(50):
        data = prng(seed, seed * 7)
        assert wire.cobs_decode(wire.cobs_encode(data)) == data


def test_cobs_rejects_missing_delimiter():
    raises(wire.FrameError, wire.cobs_decode, b"\x03ab")


def test_cobs_rejects_zero_inside_frame():
    raises(wire.FrameError, wire.cobs_decode, b"\x03a\x00b\x00")


def test_cobs_rejects_block_past_end():
    raises(wire.FrameError, wire.cobs_decode, b"\x05ab\x00")


def test_cobs_rejects_empty_frame():
    raises(wire.FrameError, wire.cobs_decode, b"\x00")
    raises(wire.FrameError, wire.cobs_decode, b"")


def test_cobs_rejects_non_canonical_final_block():
    # 254 bytes encode as FF + data; FF + data + 01 means the same: refused.
    raises(wire.FrameError, wire.cobs_decode, b"\xff" + b"\x01" * 254 + b"\x01\x00")


def test_cobs_decode_into_refuses_to_overrun_buffer():
    raises(wire.TooLarge, wire.cobs_decode_into, wire.cobs_encode(b"x" * 20), bytearray(10))


# --- HMAC ---------------------------------------------------------------------

RFC4231 = [
    # (key, data, HMAC-SHA256) test cases 1-4, 6, 7
    ("0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    ("4a656665", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    ("0102030405060708090a0b0c0d0e0f10111213141516171819", b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("aa" * 131, b"This is a test using a larger than block-size key and a larger "
     b"than block-size data. The key needs to be hashed before being used by the "
     b"HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def test_hmac_sha256_matches_rfc4231_vectors():
    for key, data, mac in RFC4231:
        assert wire.hmac_sha256(unhexlify(key), data) == unhexlify(mac), key


def test_hmac_sha256_rfc4231_truncated_vector():
    # Test case 5: output truncated to 128 bits, as the frame tag is.
    mac = wire.hmac_sha256(b"\x0c" * 20, b"Test With Truncation")
    assert mac[: wire.TAG_LEN] == unhexlify("a3b6167473100ee06e0c796c2955552b")


def test_ct_equal():
    assert wire.ct_equal(b"abcd", b"abcd")
    assert not wire.ct_equal(b"abcd", b"abce")
    assert not wire.ct_equal(b"abcd", b"abc")
    assert wire.ct_equal(memoryview(b"xabcd")[1:], b"abcd")


# --- Frames -------------------------------------------------------------------


def test_sealed_frame_round_trips():
    host, pump = pair()
    payload = {"rate": 1000, "drug": "morphine", "ok": True, "raw": b"\x00\x01", "none": None}
    assert pump.open(host.seal(0x10, 42, payload)) == (0x10, 42, 1, payload)
    assert host.open(pump.seal(0x10 | wire.REPLY, 42, [1, -2])) == (0x90, 42, 1, [1, -2])


def test_counters_increase_per_direction():
    host, pump = pair()
    for n in (1, 2, 3):
        assert pump.open(host.seal(0x10, n, None))[2] == n
    assert host.open(pump.seal(0x90, 3, None))[2] == 1


def test_frame_ends_with_its_only_delimiter():
    host, _ = pair()
    frame = host.seal(0x10, 1, bytes(100))
    assert frame[-1] == 0 and frame.find(b"\x00") == len(frame) - 1


def test_frame_layout_offsets():
    host, _ = pair()
    raw = wire.cobs_decode(host.seal(0x21, 0x1234, 7))
    assert raw[0] == wire.PROTOCOL_VERSION and raw[1] == 0x21
    assert raw[2] == wire.FLAG_TAG
    assert raw[3:5] == b"\x12\x34" and raw[5:9] == b"\x00\x00\x00\x01"
    assert raw[9:11] == b"\x00\x01"
    assert len(raw) == wire.HEADER_LEN + 1 + wire.TAG_LEN + wire.CRC_LEN
    assert struct.unpack(">I", raw[-4:])[0] == crc32(raw[:-4])
    # The payload is sealed: ChaCha20-Poly1305 under the session key, nonce
    # "host" 0^4 counter, the header as associated data (docs/protocol.md 4).
    nonce = b"host" + bytes(4) + raw[5:9]
    assert wire.seal_nonce(False, 1) == nonce
    assert aead.open(KEY, nonce, raw[:11], raw[11:-4]) == b"\x07"


def test_sealed_payload_does_not_show_its_plaintext():
    host, _ = pair()
    secret = "patient diary: pain 7/10 after the bolus"
    raw = wire.cobs_decode(host.seal(0x21, 1, secret))
    assert secret.encode() not in raw and b"pain" not in raw
    assert wire.cobs_decode(wire.Session().seal(0x21, 1, secret)).find(secret.encode()) > 0  # the plain state shows it


def test_crc_flip_is_detected():
    host, pump = pair()

    def flip(raw):
        raw[-1] ^= 0x01

    e = raises(wire.CrcError, pump.open, reframe(host.seal(0x10, 1, "x"), flip, fix_crc=False))
    assert e.code == wire.BAD_CRC


def test_payload_bit_flip_with_fixed_crc_is_detected_by_tag():
    # An attacker can always recompute the CRC: only the tag protects.
    host, pump = pair()

    def flip(raw):
        raw[wire.HEADER_LEN] ^= 0x04

    e = raises(wire.TagError, pump.open, reframe(host.seal(0x10, 1, 5), flip))
    assert e.code == wire.BAD_TAG


def test_header_changes_with_fixed_crc_are_detected_by_tag():
    host, pump = pair()
    frame = host.seal(0x10, 1, 5)
    for offset in (1, 3, 4, 5, 8):  # type, msg id, counter

        def flip(raw):
            raw[offset] ^= 0x80

        raises(wire.TagError, pump.open, reframe(frame, flip))
    assert pump.open(frame)[3] == 5


def test_replayed_counter_is_rejected():
    host, pump = pair()
    frame = host.seal(0x10, 1, "dose")
    pump.open(frame)
    e = raises(wire.ReplayError, pump.open, frame)
    assert e.code == wire.REPLAY


def test_older_counter_is_rejected():
    host, pump = pair()
    first = host.seal(0x10, 1, None)
    second = host.seal(0x10, 2, None)
    pump.open(second)
    raises(wire.ReplayError, pump.open, first)


def test_lost_frames_leave_a_gap_that_is_accepted():
    host, pump = pair()
    host.seal(0x10, 1, None)  # lost on the line
    assert pump.open(host.seal(0x10, 1, None))[2] == 2


def test_retransmission_reuses_the_message_id_with_a_fresh_counter():
    host, pump = pair()
    pump.open(host.seal(0x10, 9, "x"))
    assert pump.open(host.seal(0x10, 9, "x"))[1:3] == (9, 2)


def test_rejected_frame_does_not_advance_the_counter():
    host, pump = pair()
    frame = host.seal(0x10, 1, None)

    def flip(raw):
        raw[wire.HEADER_LEN] ^= 1

    raises(wire.TagError, pump.open, reframe(frame, flip))
    assert pump.rx == 0
    assert pump.open(frame)[2] == 1


def test_reflected_frame_is_rejected():
    # A frame the pump sent, played back to the pump.
    host, pump = pair()
    raises(wire.ReplayError, pump.open, pump.seal(0x90, 1, None))


def test_frame_under_another_key_is_rejected():
    host = wire.Session(KEY)
    pump = wire.Session(bytes(32), pump=True)
    raises(wire.TagError, pump.open, host.seal(0x10, 1, None))


def test_untagged_frame_in_session_is_not_authenticated():
    pump = wire.Session(KEY, pump=True)
    e = raises(wire.NotAuthenticated, pump.open, wire.Session().seal(0x10, 1, None))
    assert e.code == wire.NOT_AUTHENTICATED


def test_tagged_frame_without_session_is_not_authenticated():
    host, _ = pair()
    raises(wire.NotAuthenticated, wire.Session(pump=True).open, host.seal(0x10, 1, None))


def test_unauthenticated_frames_use_counter_zero():
    host, pump = wire.Session(), wire.Session(pump=True)
    hello = {"role": wire.ROLE_CLINICIAN, "nonce": NONCE_H}
    assert pump.open(host.seal(wire.MSG_HELLO, 1, hello)) == (wire.MSG_HELLO, 1, 0, hello)
    assert pump.open(host.seal(wire.MSG_HELLO, 1, hello))[2] == 0


def test_unauthenticated_frame_with_nonzero_counter_is_rejected():
    def count(raw):
        raw[8] = 1

    frame = reframe(wire.Session().seal(wire.MSG_IDENTIFY, 1, None), count)
    raises(wire.FrameError, wire.Session(pump=True).open, frame)


def test_largest_payload_fits_in_512_bytes():
    host, pump = pair()
    payload = b"\xff" * (wire.MAX_PAYLOAD - 3)  # 3-byte CBOR head
    frame = host.seal(0x10, 1, payload)
    assert len(frame) <= wire.MAX_ENCODED
    assert pump.open(frame)[3] == payload


def test_oversize_payload_is_rejected_on_seal():
    host, _ = pair()
    e = raises(wire.TooLarge, host.seal, 0x10, 1, bytes(wire.MAX_PAYLOAD))
    assert e.code == wire.TOO_LARGE
    assert host.tx == 0


def test_oversize_frame_is_rejected_on_open():
    _, pump = pair()
    raises(wire.TooLarge, pump.open, b"\x01" * wire.MAX_ENCODED + b"\x00")


def test_oversize_length_field_is_rejected_on_open():
    host, pump = pair()

    def grow(raw):
        struct.pack_into(">H", raw, 9, wire.MAX_PAYLOAD + 1)

    raises(wire.TooLarge, pump.open, reframe(host.seal(0x10, 1, None), grow))


def test_oversize_decoded_frame_is_rejected_on_open():
    # Within 512 encoded bytes but longer than any valid decoded frame.
    _, pump = pair()
    raises(wire.TooLarge, pump.open, wire.cobs_encode(b"\x01" * 500))


def test_truncated_frames_are_rejected():
    host, pump = pair()
    raw = wire.cobs_decode(host.seal(0x10, 1, {"a": "bc"}))
    for n in range(len(raw)):
        e = raises(wire.WireError, pump.open, wire.cobs_encode(raw[:n]))
        assert e.code in (wire.BAD_FRAME, wire.BAD_CRC), (n, e.code)


def test_length_field_mismatch_is_rejected():
    host, pump = pair()

    def shrink(raw):
        raw[10] -= 1

    raises(wire.FrameError, pump.open, reframe(host.seal(0x10, 1, "ab"), shrink))


def test_garbage_is_rejected():
    host, pump = pair()
    for seed in range(200):
        junk = prng(seed, 1 + seed % 120)
        for frame in (junk + b"\x00", wire.cobs_encode(junk)):
            raises(wire.WireError, pump.open, frame)
    assert pump.open(host.seal(0x10, 1, None))[2] == 1


def test_other_protocol_version_is_reported():
    host, pump = pair()

    for version in (1, wire.PROTOCOL_VERSION + 1):  # 1: a programmer from before sealed sessions

        def bump(raw):
            raw[0] = version

        e = raises(wire.VersionError, pump.open, reframe(host.seal(0x10, 1, None), bump))
        assert e.code == wire.VERSION


def test_unknown_flags_are_rejected():
    host, pump = pair()

    def flag(raw):
        raw[2] |= 0x80

    raises(wire.FrameError, pump.open, reframe(host.seal(0x10, 1, None), flag))


def test_out_of_range_header_fields_are_refused_on_seal():
    host, _ = pair()
    raises(wire.FrameError, host.seal, 0x100, 1, None)
    raises(wire.FrameError, host.seal, 0x10, wire.MSG_ID_MAX + 1, None)


def test_send_counter_runs_out_at_2_32():
    host, pump = pair()
    host.tx = wire.COUNTER_MAX - 1
    assert pump.open(host.seal(0x10, 1, None))[2] == wire.COUNTER_MAX
    raises(wire.NotAuthenticated, host.seal, 0x10, 2, None)


def test_peek_reads_without_trusting():
    frame = wire.Session(pump=True).seal(wire.MSG_ERROR, 3, wire.error_reply(wire.NOT_AUTHENTICATED))
    msg_type, flags, msg_id, counter, payload = wire.peek(frame)
    assert (msg_type, msg_id, counter) == (wire.MSG_ERROR, 3, 0)
    assert flags == wire.FLAG_FROM_PUMP and payload["name"] == "NOT_AUTHENTICATED"


# --- Stream -------------------------------------------------------------------


def feed(deframer, data):
    frames = []
    for b in data:
        f = deframer.push(b)
        if f is not None:
            frames.append(f)
    return frames


def test_deframer_splits_a_stream_into_frames():
    host, pump = pair()
    a, b = host.seal(0x10, 1, "a"), host.seal(0x10, 2, "b")
    assert feed(wire.Deframer(), b"\x00\x00" + a + b"\x00" + b) == [a, b]


def test_deframer_drops_an_overlong_frame_and_recovers():
    d = wire.Deframer()
    assert feed(d, b"\x01" * wire.MAX_ENCODED) == []
    raises(wire.TooLarge, d.push, 0)
    frame = wire.Session().seal(wire.MSG_IDENTIFY, 1, None)
    assert feed(d, frame) == [frame]


# --- Handshake ----------------------------------------------------------------


def test_handshake_both_sides_derive_the_same_session_key():
    role = wire.ROLE_CLINICIAN
    proof_p = wire.pump_challenge(KEYS, role, NONCE_H, NONCE_P)
    proof_h, host_key = wire.host_verify(CLINICIAN_KEY, role, NONCE_H, NONCE_P, proof_p)
    pump_key = wire.pump_verify(KEYS, role, NONCE_H, NONCE_P, proof_h)
    assert host_key == pump_key and len(host_key) == 32
    assert host_key not in (proof_p, proof_h)
    host = wire.Session(host_key, role=role)
    pump = wire.Session(pump_key, pump=True, role=role)
    assert pump.open(host.seal(0x10, 1, "go"))[3] == "go"


def test_handshake_over_frames():
    role = wire.ROLE_PATIENT
    host0, pump0 = wire.Session(), wire.Session(pump=True)
    _, _, _, hello = pump0.open(host0.seal(wire.MSG_HELLO, 1, {"role": role, "nonce": NONCE_H}))
    proof_p = wire.pump_challenge(KEYS, hello["role"], hello["nonce"], NONCE_P)
    reply = pump0.seal(wire.MSG_HELLO | wire.REPLY, 1, {"nonce": NONCE_P, "proof": proof_p})
    _, _, _, challenge = host0.open(reply)
    proof_h, host_key = wire.host_verify(PATIENT_KEY, role, NONCE_H, challenge["nonce"], challenge["proof"])
    _, _, _, proof = pump0.open(host0.seal(wire.MSG_PROOF, 2, {"proof": proof_h}))
    pump_key = wire.pump_verify(KEYS, role, hello["nonce"], NONCE_P, proof["proof"])
    host, pump = wire.Session(host_key, role=role), wire.Session(pump_key, pump=True, role=role)
    assert host.open(pump.seal(wire.MSG_PROOF | wire.REPLY, 2, {"role": role}))[2:] == (1, {"role": role})


def test_different_nonces_give_different_session_keys():
    a = wire.session_key(KEY, NONCE_H, NONCE_P, wire.ROLE_PATIENT)
    b = wire.session_key(KEY, NONCE_H, NONCE_H, wire.ROLE_PATIENT)
    c = wire.session_key(KEY, NONCE_H, NONCE_P, wire.ROLE_CLINICIAN)
    assert a != b and a != c and b != c


def test_patient_key_cannot_produce_a_clinician_proof():
    role = wire.ROLE_CLINICIAN
    forged = wire.host_proof(PATIENT_KEY, NONCE_H, NONCE_P, role)
    e = raises(wire.AuthFailed, wire.pump_verify, KEYS, role, NONCE_H, NONCE_P, forged)
    assert e.code == wire.AUTH_FAILED


def test_patient_proof_is_not_a_clinician_proof():
    # Same key material, other role byte: the role is bound into every MAC.
    keys = {wire.ROLE_PATIENT: PATIENT_KEY, wire.ROLE_CLINICIAN: PATIENT_KEY}
    proof = wire.host_proof(PATIENT_KEY, NONCE_H, NONCE_P, wire.ROLE_PATIENT)
    raises(wire.AuthFailed, wire.pump_verify, keys, wire.ROLE_CLINICIAN, NONCE_H, NONCE_P, proof)


def test_host_with_patient_key_rejects_a_clinician_challenge():
    role = wire.ROLE_CLINICIAN
    proof_p = wire.pump_challenge(KEYS, role, NONCE_H, NONCE_P)
    raises(wire.AuthFailed, wire.host_verify, PATIENT_KEY, role, NONCE_H, NONCE_P, proof_p)


def test_pump_proof_is_not_a_host_proof():
    # Labels and nonce order differ, so a reflected pump proof fails.
    role = wire.ROLE_PATIENT
    proof_p = wire.pump_challenge(KEYS, role, NONCE_H, NONCE_P)
    raises(wire.AuthFailed, wire.pump_verify, KEYS, role, NONCE_H, NONCE_P, proof_p)


def test_role_none_has_no_credential():
    e = raises(wire.Forbidden, wire.pump_challenge, KEYS, wire.ROLE_NONE, NONCE_H, NONCE_P)
    assert e.code == wire.FORBIDDEN
    raises(wire.Forbidden, wire.pump_challenge, KEYS, 3, NONCE_H, NONCE_P)


def test_pump_without_a_role_key_denies_it():
    keys = {wire.ROLE_PATIENT: PATIENT_KEY}
    raises(wire.Forbidden, wire.pump_challenge, keys, wire.ROLE_CLINICIAN, NONCE_H, NONCE_P)


def test_short_nonce_is_refused():
    raises(wire.AuthFailed, wire.pump_challenge, KEYS, wire.ROLE_PATIENT, NONCE_H[:8], NONCE_P)


def test_handshake_fields_of_the_wrong_type_are_refused():
    # They come straight from a decoded payload.
    raises(wire.AuthFailed, wire.pump_challenge, KEYS, wire.ROLE_PATIENT, "x" * 16, NONCE_P)
    raises(wire.AuthFailed, wire.pump_challenge, KEYS, wire.ROLE_PATIENT, None, NONCE_P)
    raises(wire.AuthFailed, wire.pump_verify, KEYS, wire.ROLE_PATIENT, NONCE_H, NONCE_P, None)
    raises(wire.AuthFailed, wire.pump_verify, KEYS, wire.ROLE_PATIENT, NONCE_H, NONCE_P, b"\x00" * 31)
    raises(wire.Forbidden, wire.pump_challenge, KEYS, True, NONCE_H, NONCE_P)
    raises(wire.Forbidden, wire.pump_challenge, KEYS, "2", NONCE_H, NONCE_P)


def test_device_keys_must_be_distinct():
    wire.check_device_keys(KEYS)
    same = {wire.ROLE_PATIENT: KEY, wire.ROLE_CLINICIAN: KEY}
    raises(ValueError, wire.check_device_keys, same)


# --- Payloads -----------------------------------------------------------------


def test_payload_round_trips_every_type():
    value = {
        "ints": [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
                 -1, -24, -25, -256, -257, -2**64],
        "text": ["", "morphine", "µg/día", "\U0001f489"],
        "bytes": [b"", b"\x00\xff"],
        "flags": [True, False, None],
        7: {-1: []},
    }
    assert wire.loads(wire.dumps(value)) == value


def test_payload_bools_stay_bools():
    assert wire.loads(wire.dumps([True, 1, False, 0])) == [True, 1, False, 0]
    assert wire.loads(wire.dumps(True)) is True
    assert wire.loads(b"\x01") == 1 and wire.loads(b"\x01") is not True


def test_payload_encoding_is_canonical():
    assert wire.dumps({"b": 1, "a": 2, 10: 3, -1: 4, "aa": 5}) == unhexlify("a50a03200461610261620162616105")
    assert wire.dumps(500) == b"\x19\x01\xf4"
    assert wire.dumps((1, 2)) == wire.dumps([1, 2]) == b"\x82\x01\x02"


def test_payload_rejects_non_canonical_input():
    for bad in ("1817", "190017", "1a00000017", "1b0000000000000017",  # non-shortest
                "a2616201616101",  # keys out of order
                "a2616101616102",  # duplicate key
                "0101",  # trailing byte
                "f97e00", "fb3ff0000000000000",  # floats
                "c11a514b67b0",  # tag
                "9fff", "5f41ff",  # indefinite lengths
                "f7", "e0",  # undefined, other simple values
                "a18001", "a1f401", "a14100f6",  # array, bool, bytes as keys
                "", "82", "6261", "1a0000"):  # truncated
        raises(wire.PayloadError, wire.loads, unhexlify(bad))


def test_payload_rejects_invalid_utf8():
    for bad in ("62c080", "63eda080", "64f4908080", "63e08080", "61ff", "62e282"):
        e = raises(wire.PayloadError, wire.loads, unhexlify(bad))
        assert e.code == wire.BAD_PAYLOAD


def test_payload_nesting_is_limited():
    ok = 0
    for _ in range(wire.MAX_DEPTH):
        ok = [ok]
    assert wire.loads(wire.dumps(ok)) == ok
    raises(wire.PayloadError, wire.dumps, [ok])
    raises(wire.PayloadError, wire.loads, b"\x81" * (wire.MAX_DEPTH + 1) + b"\x00")


def test_payload_with_a_cycle_is_refused():
    loop = []
    loop.append(loop)
    raises(wire.PayloadError, wire.dumps, loop)


def test_payload_size_is_limited():
    raises(wire.TooLarge, wire.dumps, b"x" * wire.MAX_PAYLOAD)
    raises(wire.TooLarge, wire.dumps, list(range(1000)))
    raises(wire.TooLarge, wire.dumps, list(range(100000)))
    raises(wire.TooLarge, wire.dumps, {i: 0 for i in range(1000)})
    raises(wire.TooLarge, wire.loads, bytes(wire.MAX_PAYLOAD + 1))


def test_huge_declared_length_is_refused_before_allocating():
    raises(wire.PayloadError, wire.loads, b"\x9a\x7f\xff\xff\xff")
    raises(wire.PayloadError, wire.loads, b"\x5a\x7f\xff\xff\xff")


def test_payload_refuses_unsupported_types():
    for bad in (1.5, {(1, 2): 3}, {None: 1}, {True: 1}, object()):
        raises(wire.PayloadError, wire.dumps, bad)
    raises(wire.PayloadError, wire.dumps, 2**64)
    raises(wire.PayloadError, wire.dumps, -2**64 - 1)


def test_malformed_payload_in_an_authentic_frame_is_bad_payload():
    # Built by hand from the documented layout: header, sealed payload, CRC.
    _, pump = pair()
    raw = struct.pack(">BBBHIH", wire.PROTOCOL_VERSION, 0x10, wire.FLAG_TAG, 1, 1, 1)
    raw += aead.seal(KEY, b"host" + bytes(7) + b"\x01", raw, b"\xff")
    raw += struct.pack(">I", crc32(raw))
    e = raises(wire.PayloadError, pump.open, wire.cobs_encode(raw))
    assert e.code == wire.BAD_PAYLOAD
    assert pump.rx == 1  # authentic and fresh: a replay of it is still refused


# --- Errors -------------------------------------------------------------------


def test_error_codes_are_distinct_and_named():
    codes = list(wire.ERROR_NAMES)
    assert len(set(codes)) == len(codes)
    assert len(set(wire.ERROR_NAMES.values())) == len(codes)
    for name in ("BAD_FRAME", "BAD_CRC", "BAD_TAG", "REPLAY", "NOT_AUTHENTICATED", "FORBIDDEN",
                 "LOCKED_OUT", "LIMIT", "BAD_ARGS", "BUSY", "UNKNOWN_COMMAND", "INTERNAL", "VERSION"):
        assert wire.error_name(getattr(wire, name)) == name
    assert wire.error_name(200) == "UNKNOWN"


def test_limit_error_reply_carries_limit_and_reason():
    reply = wire.error_reply(wire.LIMIT, "daily dose 30 mg over 20 mg", "daily_dose")
    assert reply == {"code": wire.LIMIT, "name": "LIMIT", "reason": "daily dose 30 mg over 20 mg",
                     "limit": "daily_dose"}
    host, pump = pair()
    assert host.open(pump.seal(wire.MSG_ERROR, 5, reply))[3] == reply


def test_wire_errors_reply_with_their_code():
    e = raises(wire.WireError, wire.cobs_decode, b"\x05\x00")
    assert e.reply()["code"] == wire.BAD_FRAME and e.reply()["name"] == "BAD_FRAME"
    assert isinstance(e, ValueError)


def test_map_keys_kept_for_sealing_come_only_from_this_sides_frames_and_are_bounded():
    # Issue #18: each map key of a sealed frame is encoded once and kept; a
    # peer's keys (encoded for the reply cache's digest) never are, and the
    # table has a bound whatever is sealed.
    before = dict(wire._KEYS)
    wire.dumps({"peer-key-%d" % i: i for i in range(20)})
    assert wire._KEYS == before
    host, pump = pair()
    for i in range(300):
        assert pump.open(host.seal(0x10, i + 1, {"key-%d" % i: i, "x" * 30: 1}))[3] == {"key-%d" % i: i, "x" * 30: 1}
    assert len(wire._KEYS) <= 128 and "x" * 30 not in wire._KEYS
    # Kept or not, a map encodes to the same canonical bytes.
    p = {"b": 1, "a": [1, {"c": None}], "aa": "x", 10: 2}
    assert wire.cobs_decode(pair()[0].seal(0x10, 1, p)) == wire.cobs_decode(pair()[0].seal(0x10, 1, p))
    h2, p2 = pair()
    assert p2.open(h2.seal(0x10, 1, p))[3] == p
