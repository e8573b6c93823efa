"""Attacks on the programmer link, through the real pty of the emulated pump:
every attempt is refused, the therapy is unchanged and the attempt is logged."""
import os
import struct
import time
from binascii import crc32

import pytest
import serial

from linkkit import Raw, of_type, rejections
from pumpctl.fw import events, link_commands as lc, wire
from pumpctl.link import Client, open_port

RX_A = {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 4_000_000]]}
RX_B = {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 6_000_000]]}


def reframe(frame, mutate, fix_crc=True):
    raw = bytearray(wire.cobs_decode(frame))
    mutate(raw)
    if fix_crc:
        n = len(raw) - wire.CRC_LEN
        struct.pack_into(">I", raw, n, crc32(bytes(raw[:n])))
    return wire.cobs_encode(raw)


def test_replayed_frame_is_refused_in_the_session_a_new_session_and_without_one(pump):
    c = pump.client("clinician")
    raw = Raw(c)
    captured = c.session.seal(lc.PROGRAM, 4242, {"rx": RX_A})  # recorded by an eavesdropper
    raw.send(captured)
    assert raw.replies()[0][0] == lc.PROGRAM | wire.REPLY
    c.request(lc.PROGRAM, {"rx": RX_B})
    raw.send(captured)  # same session: counter already used
    assert raw.error(captured)["code"] == wire.REPLAY
    c.close()
    assert pump.therapy()["rx"] == RX_B
    c = pump.client("clinician")  # another session: other key
    Raw(c).send(captured)
    assert Raw(c).error(captured)["code"] == wire.BAD_TAG
    c.logout()  # no session at all
    Raw(c).send(captured)
    assert Raw(c).error(captured)["code"] == wire.NOT_AUTHENTICATED
    c.close()
    assert pump.therapy()["rx"] == RX_B
    log = pump.log()
    assert rejections(log, wire.REPLAY) and rejections(log, wire.BAD_TAG) and rejections(log, wire.NOT_AUTHENTICATED)
    assert len(of_type(log, lc.EV_COMMAND, b"program")) == 2  # A once, B once


def test_reflected_pump_frame_is_refused(pump):
    c = pump.client("clinician")
    c._write(c.session.seal(lc.STATUS, 77, None))
    frames = list(c._frames(time.monotonic() + 1.0))
    assert frames
    c._write(frames[0])  # the pump's own sealed reply sent back to it
    assert Raw(c).error(frames[0])["code"] in (wire.REPLAY, wire.BAD_TAG)
    c.close()
    assert rejections(pump.log(), wire.REPLAY) or rejections(pump.log(), wire.BAD_TAG)


def test_flipped_bits_are_caught_by_tag_or_crc(pump):
    before = pump.therapy()
    c = pump.client("clinician")
    raw = Raw(c)
    frame = c.session.seal(lc.PROGRAM, 900, {"rx": RX_B})

    def flip(b):
        b[20] ^= 0x01  # inside the payload: the dose

    raw.send(reframe(frame, flip))  # CRC recomputed: only the tag can tell
    assert raw.error(frame)["code"] == wire.BAD_TAG
    raw.send(reframe(frame, flip, fix_crc=False))  # a line error
    assert raw.error(frame)["code"] == wire.BAD_CRC
    raw.send(reframe(frame, lambda b: b.__setitem__(2, b[2] & ~wire.FLAG_TAG)))  # strip the tag flag
    assert raw.error(frame)["code"] in (wire.NOT_AUTHENTICATED, wire.BAD_FRAME)
    # The session survives: forged frames did not consume its counter.
    assert c.request(lc.STATUS)["state"] == "delivering"
    c.close()
    assert pump.therapy() == before
    log = pump.log()
    assert rejections(log, wire.BAD_TAG) and rejections(log, wire.BAD_CRC)
    assert not of_type(log, lc.EV_COMMAND, b"program")


def test_patient_session_cannot_change_therapy(pump):
    before = pump.therapy()
    c = pump.client("patient")
    for mtype, args in ((lc.PROGRAM, {"rx": RX_B}), (lc.BOLUS, {"dose_ng": 1_000_000, "duration_s": 600}),
                        (lc.PRIME, {"volume_nl": 100_000, "duration_s": 600}), (lc.SUSPEND, None),
                        (lc.RESUME, None), (lc.REFILL, {"withdrawn_nl": 0, "added_nl": 20_000_000}),
                        (lc.ACK_ALARM, {"alarm": 7}), (lc.SET_CLOCK, {"day": 1, "tod_s": 0}),
                        (lc.SET_LOW, {"low_nl": 3_000_000}), (lc.SET_ALARM_DATE, {"day": 1}),
                        (lc.THERAPY, None), (lc.LOG_READ, {"first": 1, "max": 1})):
        with pytest.raises(Exception) as e:
            c.request(mtype, args)
        assert getattr(e.value, "code", None) == wire.FORBIDDEN, (mtype, e.value)
    assert c.request(lc.STATUS)["state"] == "delivering"
    c.close()
    assert pump.therapy() == before
    assert len(rejections(pump.log(), wire.FORBIDDEN)) >= 8  # logged (rate limit: 8 back to back)


def test_auth_lockout_never_interrupts_therapy(pump, capsys):
    c = Client(open_port(pump.port))
    wrong = os.urandom(32)
    for i in range(3):
        with pytest.raises(Exception) as e:
            c.login("clinician", wrong)
        assert "did not prove" in str(e.value)  # the host sees the pump does not share this key
    # A host that goes on anyway with a forged proof fails on the pump.
    for i in range(3):
        plain = wire.Session()
        c._write(plain.seal(lc.HELLO, 10 + i, {"role": wire.ROLE_CLINICIAN, "nonce": bytes(16)}))
        hello = Raw(c).replies()[0][2]
        c._write(plain.seal(lc.PROOF, 20 + i, {"proof": wire.host_proof(wrong, bytes(16), hello["nonce"], 2)}))
        assert Raw(c).replies()[0][2]["code"] == wire.AUTH_FAILED
    with pytest.raises(Exception) as e:
        c.login("clinician", pump.key("clinician"))  # the right key waits too
    assert "locked out" in str(e.value)
    c.close()
    rc, out, err = pump.pumpctl(capsys, "status")
    assert rc == 4 and "locked out" in err
    # Delivery goes on through the lockout; the patient can still log in.
    strokes = pump.bench("status")["strokes"]
    assert pump.bench("advance", ms=25_000)["running"]
    assert pump.call(lc.STATUS, role="patient")["state"] == "delivering"
    pump.bench("advance", ms=3_600_000)
    assert pump.bench("status")["strokes"] > strokes
    log = pump.log()  # the lockout is over: the clinician logs in
    fails = of_type(log, events.AUTH_FAILED)
    assert [r[5] for r in fails] == [1, 2, 3] and fails[-1][6] == lc.BACKOFF_S
    assert rejections(log, wire.LOCKED_OUT)


def test_wrong_key_in_the_key_store_is_an_auth_failure(pump, capsys, tmp_path):
    from pumpctl.keystore import KeyStore
    other = tmp_path / "other.json"
    KeyStore(other).put(pump.serial, os.urandom(32), os.urandom(32))
    rc, out, err = pump.pumpctl(capsys, "status", keystore=other)
    assert rc == 4 and "did not prove" in err
    rc, out, err = pump.pumpctl(capsys, "status", keystore=tmp_path / "empty.json")
    assert rc == 4 and "no keys for pump %s" % pump.serial in err


def test_garbage_truncated_and_oversize_frames(pump):
    before = pump.therapy()
    seq = pump.last_seq()
    with serial.Serial(pump.port, timeout=0.2) as s:
        good = wire.Session().seal(lc.IDENTIFY, 5, None)
        s.write(b"\x07" * 700 + b"\x00")  # oversize
        s.write(good[:9] + b"\x00")  # truncated
        s.write(os.urandom(3000) + b"\x00")  # noise (logging is rate-limited past 8 records)
        s.write(b"\x00" * 10)  # idle delimiters
        s.write(good)  # and a good frame still works afterwards
        data = b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(_kind(f) == lc.IDENTIFY | wire.REPLY
                                                      for f in data.split(b"\x00")):
            data += s.read(4096)
    frames = [f + b"\x00" for f in data.split(b"\x00") if f]
    kinds = [wire.peek(f)[0] for f in frames]
    assert kinds[-1] == lc.IDENTIFY | wire.REPLY and all(k == wire.MSG_ERROR for k in kinds[:-1]), kinds
    codes = {wire.peek(f)[4]["code"] for f in frames[:-1]}
    assert wire.TOO_LARGE in codes and codes <= {wire.BAD_FRAME, wire.BAD_CRC, wire.TOO_LARGE}, codes
    assert pump.therapy() == before
    assert pump.bench("advance", ms=3_600_000)["running"]
    log = pump.log(seq + 1)
    assert rejections(log, wire.TOO_LARGE) and (rejections(log, wire.BAD_FRAME) or rejections(log, wire.BAD_CRC))


def _kind(f):
    try:
        return wire.peek(f + b"\x00")[0] if f else None
    except wire.WireError:
        return None


def test_commands_without_a_session_and_second_provisioning_are_refused(pump):
    before = pump.therapy()
    c = Client(open_port(pump.port))
    for mtype in (lc.PROGRAM, lc.SUSPEND, lc.STATUS, lc.LOG_READ):
        with pytest.raises(Exception) as e:
            c.request(mtype, {"rx": RX_B} if mtype == lc.PROGRAM else None)
        assert e.value.code == wire.NOT_AUTHENTICATED
    with pytest.raises(Exception) as e:
        c.provision()
    assert e.value.code == wire.FORBIDDEN
    c.close()
    assert pump.therapy() == before  # and the stored keys still work
    assert len(rejections(pump.log(), wire.NOT_AUTHENTICATED)) == 4


def test_retransmitted_request_is_executed_once(pump):
    c = pump.client("clinician")
    frame = c.session.seal(lc.BOLUS, 31337, {"dose_ng": 500_000, "duration_s": 600})
    c._write(frame)
    first = Raw(c).replies()[0]
    again = c.session.seal(lc.BOLUS, 31337, {"dose_ng": 500_000, "duration_s": 600})  # same id, new counter
    c._write(again)
    second = Raw(c).replies()[0]
    assert first[:3] == second[:3] and first[0] == lc.BOLUS | wire.REPLY
    c.close()
    assert len(of_type(pump.log(), events.BOLUS_STARTED)) == 1


def test_idle_session_times_out(pump):
    c = pump.client("clinician")
    assert c.request(lc.STATUS)
    pump.bench("advance", ms=(lc.IDLE_TIMEOUT_S + 1) * 1000)
    with pytest.raises(Exception) as e:
        c.request(lc.SUSPEND)
    assert e.value.code == wire.NOT_AUTHENTICATED and not e.value.trusted
    c.close()
    ends = of_type(pump.log(), lc.EV_SESSION_END, b"session end")
    assert any(r[6] == lc.END_IDLE for r in ends)
    assert pump.call(lc.STATUS)["state"] == "delivering"
