# Programmer link (firmware/link.py) on MicroPython: the pump and a host in one
# process over a loopback transport, the unix board in virtual time.
import os
import struct
from binascii import crc32


import events
import link_commands as lc
import wire
from lockkit import locked_polls
from fixtures import DAY_MS, HOUR_MS, continuous, make_pump, run, strokes
from link import Link
from unix_board import UnixBoard
from pump import Pump

ENTROPY = bytes(range(32))
FLEX = {"drug": "morphine", "conc": 10000000, "steps": [[0, 3000000], [28800, 5000000]],
        "periodic": [[43200, 500000, 600]], "demand": [200000, 300, 1800, 4]}


class Loop:
    # Loopback transport: what the host writes the pump reads, and back.
    def __init__(self):
        self.to_pump = bytearray()
        self.from_pump = bytearray()
        self.fail_writes = 0

    def read_into(self, buf):
        # Like a real port, nothing to read allocates nothing.
        n = min(len(buf), len(self.to_pump))
        if n:
            buf[:n] = self.to_pump[:n]
            self.to_pump = self.to_pump[n:]
        return n

    def write(self, data):
        if self.fail_writes:
            self.fail_writes -= 1
            raise OSError(11)
        self.from_pump += data
        return len(data)


class Host:
    def __init__(self, link, io):
        self.link = link
        self.io = io
        self.s = wire.Session()
        self.next_id = 1

    def push(self, data):
        # As the main loop does: poll after poll (each handles a bounded
        # share) until everything sent has been read and handled.
        self.io.to_pump += data
        while self.link.poll() or self.link.backlog() or self.io.to_pump:
            pass

    def frames(self):
        out = []
        buf = self.io.from_pump
        while True:
            i = buf.find(b"\x00")
            if i < 0:
                break
            if i:
                out.append(bytes(buf[:i + 1]))
            buf = buf[i + 1:]
        self.io.from_pump = bytearray(buf)
        return out

    def receive(self):
        # One reply: (type, id, payload, sealed)
        frames = self.frames()
        assert len(frames) == 1, frames
        f = frames[0]
        try:
            t, mid, _, p = self.s.open(f)
            return t, mid, p, self.s.authenticated
        except wire.NotAuthenticated:
            t, _, mid, _, p = wire.peek(f)
            return t, mid, p, False

    def send(self, mtype, payload=None, mid=None):
        if mid is None:
            mid = self.next_id
            self.next_id += 1
        frame = self.s.seal(mtype, mid, payload)
        self.push(frame)
        return frame

    def call(self, mtype, payload=None, mid=None):
        self.send(mtype, payload, mid)
        return self.receive()

    def ok(self, mtype, payload=None):
        t, _, p, _ = self.call(mtype, payload)
        assert t == mtype | wire.REPLY, p
        return p

    def err(self, mtype, payload=None, code=None):
        t, _, p, _ = self.call(mtype, payload)
        assert t == wire.MSG_ERROR, (t, p)
        if code is not None:
            assert p["code"] == code, p
        return p

    def provision(self):
        return self.ok(lc.PROVISION, {"entropy": ENTROPY})

    def login(self, role, key):
        self.s = wire.Session()
        nonce_h = os.urandom(16)
        r = self.ok(lc.HELLO, {"role": role, "nonce": nonce_h})
        proof_h, skey = wire.host_verify(key, role, nonce_h, r["nonce"], r["proof"])
        return self._proof(proof_h, skey, role)

    def _proof(self, proof_h, skey, role):
        self.send(lc.PROOF, {"proof": proof_h})
        self.s = wire.Session(skey, role=role)
        return self.receive()


def setup(rx=None, fill_nl=20000000):
    pump = make_pump(continuous() if rx is None else rx, fill_nl=fill_nl)
    pump.device["serial"] = "TEST-0001"
    io = Loop()
    link = Link(pump, io)
    return pump, link, Host(link, io)


def clinician(rx=None):
    pump, link, host = setup(rx)
    keys = host.provision()
    t, _, p, sealed = host.login(wire.ROLE_CLINICIAN, keys["clinician"])
    assert t == lc.PROOF | wire.REPLY and sealed and p["role"] == wire.ROLE_CLINICIAN, p
    return pump, link, host, keys


def records(pump, etype, text=None):
    return [r for r in pump.log.records if r[3] == etype and (text is None or r[8].startswith(text))]


def rejections(pump, code):
    return [r for r in records(pump, lc.EV_REJECTED) if r[4] == code]


def test_identify_and_version_without_a_session():
    pump, link, host = setup()
    p = host.ok(lc.IDENTIFY, {"versions": [2]})
    assert p["serial"] == "TEST-0001" and p["version"] == 2 and p["provisioned"] is False
    assert p["stroke_nl"] == 500
    assert host.err(lc.IDENTIFY, {"versions": [7]}, wire.VERSION)["name"] == "VERSION"


def test_provision_once_and_lost_reply_is_answered_again():
    pump, link, host = setup()
    assert host.err(lc.HELLO, {"role": 2, "nonce": bytes(16)}, wire.FORBIDDEN)
    t, _, keys, _ = host.call(lc.PROVISION, {"entropy": ENTROPY}, mid=40)
    assert len(keys["patient"]) == 32 and len(keys["clinician"]) == 32 and keys["patient"] != keys["clinician"]
    assert keys["serial"] == "TEST-0001"
    # The same request again (reply lost): the same keys, not new ones.
    t, _, again, _ = host.call(lc.PROVISION, {"entropy": ENTROPY}, mid=40)
    assert again == keys
    # Anyone else later: refused, keys unchanged.
    host.err(lc.PROVISION, {"entropy": bytes(32)}, wire.FORBIDDEN)
    assert link.keys.keys[wire.ROLE_CLINICIAN] == keys["clinician"]
    assert host.ok(lc.IDENTIFY)["provisioned"] is True
    assert records(pump, lc.EV_PROVISIONED, b"link keys")


def test_keys_persist_on_flash_and_a_broken_record_locks_the_link():
    d = "/tmp/test_link_%d" % int.from_bytes(os.urandom(4), "big")
    os.mkdir(d)
    board = UnixBoard(virtual=True, flash_dir=d)
    pump = Pump(board)
    io = Loop()
    link = Link(pump, io, serial="EMU-12345678")
    assert pump.device["serial"] == "EMU-12345678"
    keys = Host(link, io).provision()
    # Reboot: same serial and keys, whatever serial the board offers now.
    pump2 = Pump(UnixBoard(virtual=True, flash_dir=d))
    link2 = Link(pump2, Loop(), serial="EMU-99999999")
    assert pump2.device["serial"] == "EMU-12345678"
    assert link2.keys.keys[wire.ROLE_PATIENT] == keys["patient"]
    # Both slots damaged: no session and no re-provisioning.
    for name in os.listdir(d + "/link"):
        with open(d + "/link/" + name, "r+b") as f:
            f.seek(20)
            f.write(b"XX")
    pump3 = Pump(UnixBoard(virtual=True, flash_dir=d))
    io3 = Loop()
    link3 = Link(pump3, io3)
    assert link3.keys.broken and not link3.provisioned()
    host3 = Host(link3, io3)
    host3.err(lc.PROVISION, {"entropy": ENTROPY}, wire.INTERNAL)
    host3.err(lc.HELLO, {"role": wire.ROLE_CLINICIAN, "nonce": bytes(16)}, wire.FORBIDDEN)
    for name in os.listdir(d + "/link"):
        os.remove(d + "/link/" + name)
    os.rmdir(d + "/link")
    os.rmdir(d)


def test_clinician_session_programs_flex_and_audits_it():
    pump, link, host, keys = clinician()
    sid = link.sid
    assert records(pump, lc.EV_AUTH_OK)[-1][0] == sid
    check = host.ok(lc.PROGRAM, {"rx": FLEX, "check": True})
    assert pump.rx["steps"] == [{"start_s": 0, "dose_ng_day": 10000000}]  # dry run: unchanged
    assert check["step_nl_day"] == [300000, 500000] and check["demand_nl"] == 20000
    done = host.ok(lc.PROGRAM, {"rx": FLEX})
    assert done["daily_ng"] == check["daily_ng"]
    assert pump.rx["steps"][1] == {"start_s": 28800, "dose_ng_day": 5000000}
    assert pump.rx["demand"]["lockout_s"] == 1800
    audit = records(pump, lc.EV_COMMAND, b"program")
    assert len(audit) == 1 and audit[0][4:8] == (wire.ROLE_CLINICIAN, sid, lc.PROGRAM, 0), audit
    assert host.ok(lc.THERAPY)["rx"] == FLEX


def test_limit_error_is_typed_and_changes_nothing():
    pump, link, host, _ = clinician()
    before = pump.rx
    rx = dict(FLEX, steps=[[0, 30000000]])
    p = host.err(lc.PROGRAM, {"rx": rx}, wire.LIMIT)
    assert p["limit"] == "daily_max" and "maximum 20 mg/day" in p["reason"], p
    assert pump.rx is before
    assert records(pump, lc.EV_COMMAND, b"program")[-1][7] == wire.LIMIT
    # Malformed shapes are BAD_ARGS, unknown keys too.
    host.err(lc.PROGRAM, {"rx": dict(FLEX, steps=[[0, "3mg"]])}, wire.BAD_ARGS)
    host.err(lc.PROGRAM, {"rx": FLEX, "force": True}, wire.BAD_ARGS)
    host.err(lc.BOLUS, {"dose_ng": True, "duration_s": 600}, wire.BAD_ARGS)
    host.err(lc.BOLUS, {"dose_ng": -5, "duration_s": 600}, wire.BAD_ARGS)
    assert pump.rx is before


def test_patient_role_is_limited_to_status_demand_and_diary():
    pump, link, host = setup(None)
    keys = host.provision()
    before = pump.rx
    # Program with a clinician first so a demand bolus is prescribed.
    t, _, _, _ = host.login(wire.ROLE_CLINICIAN, keys["clinician"])
    host.ok(lc.PROGRAM, {"rx": FLEX})
    t, _, p, _ = host.login(wire.ROLE_PATIENT, keys["patient"])
    assert p["role"] == wire.ROLE_PATIENT
    rx = pump.rx
    for mtype, args in ((lc.PROGRAM, {"rx": FLEX}), (lc.BOLUS, {"dose_ng": 1000000, "duration_s": 600}),
                        (lc.SUSPEND, None), (lc.REFILL, {"withdrawn_nl": 0, "added_nl": 20000000}),
                        (lc.LOG_READ, {"first": 1, "max": 4}), (lc.THERAPY, None), (lc.SET_CLOCK, {"day": 1, "tod_s": 0})):
        host.err(mtype, args, wire.FORBIDDEN)
    assert pump.rx is rx and not pump.suspended
    assert len(rejections(pump, wire.FORBIDDEN)) == 7
    assert host.ok(lc.STATUS)["state"] == "delivering"
    started = host.ok(lc.DEMAND)
    # 0.2 mg at 10 mg/mL: 20 uL, 40 strokes of 0.5 uL; the dose comes back as prescribed.
    assert (started["strokes"], started["volume_nl"], started["dose_ng"], started["drug"]) == (
        40, 20000, 200000, "morphine")
    p = host.err(lc.DEMAND, None, wire.LIMIT)
    assert p["limit"] == "demand_bolus_active", p
    run(pump, 200000)
    host.ok(lc.STATUS)  # keeps the session from going idle
    run(pump, 200000)
    p = host.err(lc.DEMAND, None, wire.LIMIT)
    assert p["limit"] == "demand_lockout" and p["wait_s"] == 1400, p
    assert records(pump, lc.EV_COMMAND, b"demand")[0][4] == wire.ROLE_PATIENT
    d = host.ok(lc.DIARY, {"pain": 6, "activity": "walking", "note": "after lunch"})
    r = records(pump, events.DIARY)[-1]
    assert r[0] == d["seq"] and r[4:7] == (6, lc.ACTIVITIES.index("walking"), link.sid) and r[8] == b"after lunch"
    host.err(lc.DIARY, {"pain": 11, "activity": "walking"}, wire.BAD_ARGS)
    host.err(lc.DIARY, {"pain": 3, "activity": "flying"}, wire.BAD_ARGS)
    host.err(lc.DIARY, {"pain": 3, "activity": "rest", "note": "x" * 33}, wire.BAD_ARGS)


def test_commands_outside_a_session_are_refused_and_logged():
    pump, link, host = setup()
    host.provision()
    rx = pump.rx
    host.err(lc.PROGRAM, {"rx": FLEX}, wire.NOT_AUTHENTICATED)
    host.err(lc.SUSPEND, None, wire.NOT_AUTHENTICATED)
    host.err(0x7E, None, wire.NOT_AUTHENTICATED)
    assert pump.rx is rx and not pump.suspended
    assert len(rejections(pump, wire.NOT_AUTHENTICATED)) == 3


def test_replay_and_retransmission():
    pump, link, host, _ = clinician()
    frame = host.send(lc.SUSPEND, None, mid=500)
    t, mid, p, _ = host.receive()
    assert t == lc.SUSPEND | wire.REPLY and mid == 500 and pump.suspended
    host.ok(lc.RESUME)
    # The captured frame again: a replay, not executed.
    host.push(frame)
    t, _, p, sealed = host.receive()
    assert t == wire.MSG_ERROR and p["code"] == wire.REPLAY and sealed, p
    assert not pump.suspended
    assert rejections(pump, wire.REPLAY)
    # A retransmission (same id, new counter) gets the cached reply only.
    host.send(lc.BOLUS, {"dose_ng": 1000000, "duration_s": 3600}, mid=600)
    first = host.receive()
    t, mid, p, _ = host.call(lc.BOLUS, {"dose_ng": 1000000, "duration_s": 3600}, mid=600)
    assert (t, mid, p) == first[:3]
    assert len(records(pump, events.BOLUS_STARTED)) == 1
    # The same id with another request: refused, nothing executed.
    t, _, p, _ = host.call(lc.SUSPEND, None, mid=600)
    assert t == wire.MSG_ERROR and p["code"] == wire.BAD_ARGS and not pump.suspended


def test_tampered_frames_are_rejected_and_logged():
    pump, link, host, _ = clinician()
    frame = bytearray(host.s.seal(lc.SUSPEND, 77, None))
    raw = bytearray(wire.cobs_decode(frame))
    raw[1] = lc.RESUME  # change the command, fix the CRC: the tag catches it
    n = len(raw) - 4
    raw[n:] = crc32(bytes(raw[:n])).to_bytes(4, "big")
    host.push(wire.cobs_encode(raw))
    t, mid, p, _ = host.receive()
    assert p["code"] == wire.BAD_TAG and mid == 77, p
    frame[5] ^= 0x10  # a bit flip without fixing the CRC: a line error
    host.push(bytes(frame))
    assert host.receive()[2]["code"] == wire.BAD_CRC
    assert rejections(pump, wire.BAD_TAG) and rejections(pump, wire.BAD_CRC)
    assert not pump.suspended
    # The session still works (forged frames did not move the counter).
    assert host.ok(lc.STATUS)["state"] == "delivering"


def test_garbage_truncated_and_oversize_frames():
    pump, link, host = setup()
    rx = pump.rx
    host.push(b"\x00\x00")  # idle delimiters: nothing
    assert host.frames() == []
    host.push(b"\x05hello\x00")
    assert host.receive()[2]["code"] in (wire.BAD_FRAME, wire.BAD_CRC)
    good = host.s.seal(lc.IDENTIFY, 9, None)
    host.push(good[:8] + b"\x00")  # truncated
    assert host.receive()[2]["code"] in (wire.BAD_FRAME, wire.BAD_CRC)
    host.push(b"\x01" * 600 + b"\x00")
    assert host.receive()[2]["code"] == wire.TOO_LARGE
    # Random junk: every reply is an error, the pump keeps running.
    seed = 7
    junk = bytearray(2000)
    for i in range(len(junk)):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        junk[i] = seed >> 16 & 0xFF
    host.push(junk + b"\x00")
    for f in host.frames():
        assert wire.peek(f)[0] == wire.MSG_ERROR
    assert pump.rx is rx
    n = strokes(pump)
    run(pump, HOUR_MS)
    assert strokes(pump) > n
    assert host.ok(lc.IDENTIFY)["serial"] == "TEST-0001"
    assert len(records(pump, lc.EV_REJECTED)) >= 3


def test_rejection_logging_is_rate_limited():
    pump, link, host = setup()
    for _ in range(50):
        host.push(b"\x05hello\x00")
    host.frames()
    logged = records(pump, lc.EV_REJECTED)
    assert len(logged) == 8, len(logged)
    run(pump, 600000)
    host.push(b"\x05hello\x00")
    host.frames()
    last = records(pump, lc.EV_REJECTED)[-1]
    assert last[5] == 42, last  # the suppressed ones are counted


def audits(pump, role, mtype):
    return [r for r in records(pump, lc.EV_COMMAND) if r[4] == role and r[6] == mtype]


def test_refused_clinical_commands_are_audited_one_by_one_after_a_flood_of_garbage():
    # Issue 15, finding 3: garbage used up the refusal records' budget, and a
    # patient's attempts at therapy went unrecorded.
    pump, link, host = setup()
    keys = host.provision()
    host.login(wire.ROLE_PATIENT, keys["patient"])
    for _ in range(8):
        host.push(b"\x05hello\x00")
    host.frames()
    assert link.tokens == 0  # the refusal records' burst is used up
    attempts = ((lc.PROGRAM, {"rx": FLEX}), (lc.BOLUS, {"dose_ng": 1000000, "duration_s": 600}),
                (lc.SUSPEND, None), (lc.SET_CLOCK, {"day": 1, "tod_s": 0}))
    for mtype, args in attempts:
        host.err(mtype, args, wire.FORBIDDEN)
    for mtype, _ in attempts:
        a = audits(pump, wire.ROLE_PATIENT, mtype)
        assert len(a) == 1, (mtype, a)
        assert a[0][4:8] == (wire.ROLE_PATIENT, link.sid, mtype, wire.FORBIDDEN)
        assert a[0][8] == lc.COMMANDS[mtype][0].encode()
    # Reading is not audited: its refusal is a plain rejection.
    host.err(lc.LOG_READ, {"first": 1, "max": 1}, wire.FORBIDDEN)
    assert not audits(pump, wire.ROLE_PATIENT, lc.LOG_READ)
    # A dry run by the wrong role is an attempt too.
    host.err(lc.PROGRAM, {"rx": FLEX, "check": True}, wire.FORBIDDEN)
    assert len(audits(pump, wire.ROLE_PATIENT, lc.PROGRAM)) == 2
    assert not pump.suspended and pump.clock.day == 20000


def test_a_reused_message_id_on_a_clinical_command_is_audited():
    pump, link, host, _ = clinician()
    host.call(lc.SUSPEND, None, mid=70)
    t, _, p, _ = host.call(lc.BOLUS, {"dose_ng": 500000, "duration_s": 600}, mid=70)
    assert t == wire.MSG_ERROR and p["code"] == wire.BAD_ARGS
    assert [r[7] for r in audits(pump, wire.ROLE_CLINICIAN, lc.BOLUS)] == [wire.BAD_ARGS]
    assert not records(pump, events.BOLUS_STARTED)


def test_failed_logins_back_off_and_lock_out_without_touching_therapy():
    pump, link, host = setup()
    keys = host.provision()
    wrong = bytes(32)
    for i in range(3):
        host.s = wire.Session()
        r = host.ok(lc.HELLO, {"role": wire.ROLE_CLINICIAN, "nonce": bytes(16)})
        p = host.err(lc.PROOF, {"proof": wire.host_proof(wrong, bytes(16), r["nonce"], 2)}, wire.AUTH_FAILED)
    fails = records(pump, events.AUTH_FAILED)
    assert [r[5] for r in fails] == [1, 2, 3] and fails[-1][6] == lc.BACKOFF_S
    # Locked: even the right key waits; the patient role is not affected.
    p = host.err(lc.HELLO, {"role": wire.ROLE_CLINICIAN, "nonce": bytes(16)}, wire.LOCKED_OUT)
    assert p["retry_s"] == lc.BACKOFF_S
    t, _, p, _ = host.login(wire.ROLE_PATIENT, keys["patient"])
    assert t == lc.PROOF | wire.REPLY
    n = strokes(pump)
    run(pump, 31000)
    assert pump.status()["state"] == "delivering"
    t, _, p, _ = host.login(wire.ROLE_CLINICIAN, keys["clinician"])
    assert t == lc.PROOF | wire.REPLY and p["role"] == wire.ROLE_CLINICIAN
    # Doubling back-off, capped.
    link.failures[2] = 20
    link._failed(2)
    assert link.locked_until[2] - pump.now_s() == lc.LOCKOUT_MAX_S
    # A PROOF without a HELLO is refused and not counted.
    host.s = wire.Session()
    host.err(lc.PROOF, {"proof": bytes(32)}, wire.AUTH_FAILED)
    assert link.failures[2] == 21


def test_session_times_out_when_idle_and_new_hello_keeps_it_until_done():
    pump, link, host, keys = clinician()
    # An unfinished handshake from someone else does not end the session.
    s = host.s
    host.s = wire.Session()
    host.ok(lc.HELLO, {"role": wire.ROLE_CLINICIAN, "nonce": bytes(16)})
    host.s = s
    assert host.ok(lc.STATUS)
    run(pump, (lc.IDLE_TIMEOUT_S + 1) * 1000)
    p = host.err(lc.STATUS, None, wire.NOT_AUTHENTICATED)
    ends = records(pump, lc.EV_SESSION_END, b"session end")
    assert ends and ends[-1][6] == lc.END_IDLE
    t, _, p, _ = host.login(wire.ROLE_CLINICIAN, keys["clinician"])
    assert host.ok(lc.LOGOUT) == {}
    host.err(lc.STATUS, None, wire.NOT_AUTHENTICATED)
    assert records(pump, lc.EV_SESSION_END)[-1][6] == lc.END_LOGOUT


def test_every_clinician_command():
    pump, link, host, keys = clinician()
    st = host.ok(lc.STATUS)
    assert st["remaining_nl"] == 20000000 and st["alarms"] == []
    assert host.ok(lc.SET_CLOCK, {"day": 20100, "tod_s": 3600}) == {"day": 20100, "tod_s": 3600}
    assert host.err(lc.SET_CLOCK, {"day": 20100, "tod_s": 86400}, wire.LIMIT)["limit"] == "clock"
    assert host.ok(lc.SET_LOW, {"low_nl": 3000000}) == {"low_nl": 3000000}
    assert host.err(lc.SET_LOW, {"low_nl": 10}, wire.LIMIT)["limit"] == "low_threshold"
    assert host.ok(lc.SET_ALARM_DATE, {"day": 20101}) == {"day": 20101}
    run(pump, DAY_MS)
    host.login(wire.ROLE_CLINICIAN, keys["clinician"])  # the old session went idle
    al = host.ok(lc.ALARMS)["alarms"]
    assert [a[0] for a in al] == [9] and al[0][1] == "alarm date reached", al
    assert host.ok(lc.ACK_ALARM, {"alarm": 9}) == {"acknowledged": True, "saved": True}
    assert host.ok(lc.ALARMS)["alarms"] == []
    assert host.ok(lc.ACK_ALARM, {"alarm": 9}) == {"acknowledged": False, "saved": True}
    assert host.ok(lc.SUSPEND) == {"state": "suspended", "saved": True}
    assert host.err(lc.BOLUS, {"dose_ng": 500000, "duration_s": 600}, wire.LIMIT)["limit"] == "not_running"
    assert host.ok(lc.RESUME) == {"state": "delivering"}
    b = host.ok(lc.BOLUS, {"dose_ng": 500000, "duration_s": 600})
    assert b == {"strokes": 100, "volume_nl": 50000, "dose_ng": 500000}
    assert host.ok(lc.STATUS)["bolus"]["kind"] == 3
    run(pump, 700000)
    host.login(wire.ROLE_CLINICIAN, keys["clinician"])
    pump.revise_catheter(100100)  # a revised catheter, not yet primed
    pr = host.ok(lc.PRIME, {"volume_nl": 100100, "duration_s": 600})
    assert pr["strokes"] == 201
    for name in (b"clock", b"low", b"alarm_date", b"ack", b"suspend", b"resume", b"bolus", b"prime"):
        assert records(pump, lc.EV_COMMAND, name), name


def test_refill_check_then_refill_with_new_concentration_bridges():
    pump, link, host, keys = clinician()
    pump.catheter.assume_primed(200000)
    run(pump, DAY_MS)
    host.login(wire.ROLE_CLINICIAN, keys["clinician"])
    remaining = pump.reservoir.remaining_nl
    new = dict(FLEX, conc=5000000)
    host.err(lc.PROGRAM, {"rx": new, "check": True}, wire.LIMIT)  # concentration only with a refill
    chk = host.ok(lc.REFILL, {"withdrawn_nl": 10000000, "added_nl": 20000000, "rx": new, "check": True})
    assert chk["expected_nl"] == remaining and chk["warning"] is True and pump.reservoir.remaining_nl == remaining
    assert not records(pump, events.REFILL)
    p = host.err(lc.REFILL, {"withdrawn_nl": 0, "added_nl": 30000000, "check": True}, wire.LIMIT)
    assert p["limit"] == "overfill"
    assert chk["bridge_strokes"] == 400  # the catheter's 0.2 mL of the old strength
    done = host.ok(lc.REFILL, {"withdrawn_nl": remaining - 100000, "added_nl": 20000000, "rx": new})
    assert done["warning"] is False and done["discrepancy_nl"] == -100000 and done["bridge_strokes"] == 400
    assert pump.rx["conc_ng_ml"] == 5000000 and pump.bridging
    assert host.ok(lc.THERAPY)["bridging"] is True
    assert records(pump, lc.EV_COMMAND, b"refill")[0][7] == 0


def test_a_refill_check_says_there_is_no_bridge_without_a_catheter_volume():
    pump, link, host, keys = clinician()  # no catheter recorded
    host.login(wire.ROLE_CLINICIAN, keys["clinician"])
    chk = host.ok(lc.REFILL, {"withdrawn_nl": pump.reservoir.remaining_nl, "added_nl": 20000000,
                              "rx": dict(FLEX, conc=5000000), "check": True})
    assert chk["drug_changed"] is True and chk["bridge_strokes"] == 0
    same = host.ok(lc.REFILL, {"withdrawn_nl": pump.reservoir.remaining_nl, "added_nl": 20000000, "check": True})
    assert same["drug_changed"] is False and same["bridge_strokes"] == 0


def test_log_download_pages_through_every_record():
    pump, link, host, _ = clinician()
    for i in range(100):
        pump.record(events.DIARY, i, 0, 0, 0, b"note %d" % i if i % 2 else b"")
    last = pump.log.last_seq()
    got = []
    first = 1
    while first <= last:
        p = host.ok(lc.LOG_READ, {"first": first, "max": lc.LOG_MAX_PER_READ})
        recs = p["recs"]
        i = 0
        while i < len(recs):
            r = struct.unpack_from(lc.LOG_RECORD, recs, i)
            n = r[-1]
            got.append(r[:-1] + (bytes(recs[i + lc.LOG_RECORD_LEN:i + lc.LOG_RECORD_LEN + n]),))
            i += lc.LOG_RECORD_LEN + n
        assert p["next"] > first
        first = p["next"]
    assert [r[0] for r in got] == list(range(1, last + 1))
    assert got[5] == tuple(pump.log.records[5])
    host.err(lc.LOG_READ, {"first": 1, "max": 1000}, wire.BAD_ARGS)


def test_unknown_and_untagged_commands_in_a_session():
    pump, link, host, _ = clinician()
    host.err(0x6F, None, wire.UNKNOWN_COMMAND)
    plain = wire.Session()
    host.push(plain.seal(lc.SUSPEND, 3, None))
    p = host.receive()[2]
    assert p["code"] == wire.NOT_AUTHENTICATED and not pump.suspended
    assert host.ok(lc.IDENTIFY)["provisioned"]


def test_failed_write_flushes_the_receiver_and_poll_never_raises():
    pump, link, host, _ = clinician()
    host.io.fail_writes = 1
    host.send(lc.STATUS, None, mid=900)
    assert host.frames() == []
    t, mid, p, _ = host.call(lc.STATUS, None, mid=900)  # retransmitted: cached reply
    assert t == lc.STATUS | wire.REPLY and mid == 900
    assert link.dirty is False

    class Broken:
        def read_into(self, buf):
            raise OSError(5)

    link.io = Broken()
    assert link.poll() == 0  # logged, not raised


def test_idle_poll_allocates_nothing():
    pump, link, host, _ = clinician()
    link.poll()
    fault = locked_polls(link)
    assert fault is None, fault


def test_maintenance_command_stops_the_board_after_replying_and_only_for_the_clinician():
    pump, link, host, keys = clinician()
    calls = []
    pump.board.enter_maintenance = lambda: calls.append(len(host.io.from_pump))
    assert host.ok(lc.MAINTENANCE)["maintenance"] is True
    assert calls and calls[0] > 0  # called once the reply was written
    host.login(wire.ROLE_PATIENT, keys["patient"])
    assert host.err(lc.MAINTENANCE, None, wire.FORBIDDEN)
    assert len(calls) == 1


def test_maintenance_is_refused_on_a_board_without_a_repl():
    pump, link, host, keys = clinician()
    assert host.err(lc.MAINTENANCE, None, wire.BAD_ARGS)


class Flood:
    # A transport that always has more: `frame` over and over (or garbage).
    def __init__(self, frame):
        self.frame = frame
        self.reads = 0

    def read_into(self, buf):
        self.reads += 1
        n = 0
        while n + len(self.frame) <= len(buf):
            buf[n:n + len(self.frame)] = self.frame
            n += len(self.frame)
        return n

    def write(self, data):
        return len(data)


def test_one_poll_handles_a_bounded_share_of_a_flood_of_frames():
    # Issue #15 finding 4: under a flood the main loop must get back to the
    # tick: a poll stops after a few frames, whatever is waiting.
    pump, link, host, _ = clinician()
    flood = Flood(wire.Session().seal(lc.IDENTIFY, 7, {"versions": [2]}))
    link.io = flood
    done = link.poll()
    assert 1 <= done <= 4, done
    assert flood.reads <= 2, flood.reads  # the rest waits in the transport for the next pass


def test_one_poll_reads_a_bounded_amount_of_garbage():
    # Bytes that never make a frame (no delimiter) must not keep poll reading.
    pump, link, host, _ = clinician()
    flood = Flood(b"\x55" * 64)
    link.io = flood
    assert link.poll() == 0 and flood.reads <= 2


def test_a_hello_from_another_host_between_hello_and_proof_does_not_fail_the_login():
    # Issue #15 finding 2: each HELLO is its own attempt; the PROOF names it.
    pump, link, host = setup()
    keys = host.provision()
    nonce_h = os.urandom(16)
    r = host.ok(lc.HELLO, {"role": wire.ROLE_CLINICIAN, "nonce": nonce_h})
    stranger = Host(link, host.io)
    for _ in range(3):
        stranger.ok(lc.HELLO, {"role": wire.ROLE_CLINICIAN, "nonce": os.urandom(16)})
    proof_h, skey = wire.host_verify(keys["clinician"], wire.ROLE_CLINICIAN, nonce_h, r["nonce"], r["proof"])
    host.send(lc.PROOF, {"proof": proof_h, "nonce": r["nonce"]})
    host.s = wire.Session(skey, role=wire.ROLE_CLINICIAN)
    t, _, p, sealed = host.receive()
    assert t == lc.PROOF | wire.REPLY and sealed, p
    assert not records(pump, lc.EV_AUTH_FAILED)


def test_a_proof_for_no_login_under_way_counts_against_nobody():
    pump, link, host = setup()
    host.provision()
    for _ in range(10):
        host.err(lc.PROOF, {"proof": bytes(32), "nonce": bytes(16)}, wire.AUTH_FAILED)
    assert not records(pump, lc.EV_AUTH_FAILED) and link.failures[wire.ROLE_CLINICIAN] == 0


def test_a_wrong_key_still_counts_and_locks_out():
    pump, link, host = setup()
    host.provision()
    for _ in range(8):
        nonce_h = os.urandom(16)
        t, _, r, _ = host.call(lc.HELLO, {"role": wire.ROLE_CLINICIAN, "nonce": nonce_h})
        if t == wire.MSG_ERROR:
            assert r["code"] == wire.LOCKED_OUT
            break
        host.err(lc.PROOF, {"proof": bytes(32), "nonce": r["nonce"]}, wire.AUTH_FAILED)
    else:
        raise AssertionError("never locked out")
    assert records(pump, lc.EV_AUTH_FAILED)


def _relogin(host, keys):
    t, _, p, sealed = host.login(wire.ROLE_CLINICIAN, keys["clinician"])
    assert t == lc.PROOF | wire.REPLY and sealed, p


def test_a_request_retransmitted_after_a_new_login_is_not_carried_out_twice():
    # Issue #15 finding 7: the host lost the reply with the connection, logs
    # in again and sends the same request (same id): the first reply again.
    pump, link, host, keys = clinician()
    first = host.call(lc.BOLUS, {"dose_ng": 500000, "duration_s": 600}, mid=4242)
    _relogin(host, keys)
    again = host.call(lc.BOLUS, {"dose_ng": 500000, "duration_s": 600}, mid=4242)
    assert first[0] == again[0] == lc.BOLUS | wire.REPLY and first[2] == again[2]
    assert len(records(pump, events.BOLUS_STARTED)) == 1


def test_after_a_new_login_a_new_request_or_a_late_one_is_carried_out():
    pump, link, host, keys = clinician()
    host.call(lc.SUSPEND, None, mid=77)
    host.ok(lc.RESUME)
    _relogin(host, keys)
    t, _, p, _ = host.call(lc.SUSPEND, None, mid=78)  # another id: a new request
    assert t == lc.SUSPEND | wire.REPLY, p
    assert len(records(pump, events.THERAPY_SUSPENDED)) == 2
    host.ok(lc.RESUME)
    _relogin(host, keys)
    run(pump, (lc.REPLY_KEEP_S + 1) * 1000)
    _relogin(host, keys)
    host.call(lc.RESUME, None, mid=9)
    assert len(records(pump, events.THERAPY_RESUMED)) == 3


def test_identify_takes_whole_version_numbers_only():
    # Issue #15 finding 8: true equals 1 in Python; it is not protocol version 1.
    pump, link, host = setup()
    host.err(lc.IDENTIFY, {"versions": [True]}, wire.VERSION)
    host.err(lc.IDENTIFY, {"versions": [2, "3"]}, wire.VERSION)
    assert host.ok(lc.IDENTIFY, {"versions": [1, 2]})["version"] == 2


def test_identify_refuses_a_programmer_without_sealed_sessions():
    # Version 1 sent session payloads in the clear: the pump no longer speaks it.
    pump, link, host = setup()
    p = host.err(lc.IDENTIFY, {"versions": [1]}, wire.VERSION)
    assert "version 2" in p["reason"]


def test_message_id_0_is_reserved_for_errors_about_unreadable_frames():
    # An error with id 0 can then always be told from the answer to a request.
    pump, link, host, _ = clinician()
    t, mid, p, _ = host.call(lc.SUSPEND, None, mid=0)
    assert t == wire.MSG_ERROR and mid == 0 and p["code"] == wire.BAD_FRAME
    assert not records(pump, events.THERAPY_SUSPENDED)
    t, mid, p, _ = host.call(lc.IDENTIFY, None, mid=0)
    assert t == wire.MSG_ERROR and p["code"] == wire.BAD_FRAME


def test_rotated_keys_are_derived_on_both_sides_and_the_old_ones_stop_working():
    # Issue #15 finding 5: a clinician can rotate the keys; nothing secret on the wire.
    pump, link, host, keys = clinician()
    ent = bytes(range(32))
    t, _, p, _ = host.call(lc.ROTATE_KEYS, {"entropy": ent})
    assert t == lc.ROTATE_KEYS | wire.REPLY and p == {"rotated": True}
    frames_text = bytes(host.io.from_pump)
    new = {r: wire.rotated_key(keys[n], r, ent) for r, n in ((wire.ROLE_PATIENT, "patient"),
                                                               (wire.ROLE_CLINICIAN, "clinician"))}
    assert new[wire.ROLE_CLINICIAN] not in frames_text
    assert host.ok(lc.STATUS)["state"]  # this session goes on
    try:
        host.login(wire.ROLE_CLINICIAN, keys["clinician"])
        raise AssertionError("the old key still logs in")
    except wire.AuthFailed:
        pass  # the pump proves a key the host no longer holds
    t, _, p, sealed = host.login(wire.ROLE_CLINICIAN, new[wire.ROLE_CLINICIAN])
    assert t == lc.PROOF | wire.REPLY and sealed
    t, _, p, sealed = host.login(wire.ROLE_PATIENT, new[wire.ROLE_PATIENT])
    assert t == lc.PROOF | wire.REPLY and sealed
    assert records(pump, lc.EV_PROVISIONED, b"link keys rotated")


def test_keys_that_cannot_be_saved_are_not_changed_and_the_refusal_says_so():
    # A flash that refuses the key record: the keys in use stay, the
    # programmer is told why in the words of every other flash refusal.
    import alarms
    pump, link, host, keys = clinician()

    class RefusingFlash:
        def save(self, name, version, payload):
            raise OSError(5)
    link.keys.store = RefusingFlash()
    p = host.err(lc.ROTATE_KEYS, {"entropy": bytes(range(32))}, wire.LIMIT)
    assert p["limit"] == "flash_fault" and "could not be saved to flash" in p["reason"], p
    assert link.keys.keys[wire.ROLE_CLINICIAN] == keys["clinician"]
    assert pump.alarms.active & (1 << alarms.FLASH_FAULT)
    t, _, p, sealed = host.login(wire.ROLE_CLINICIAN, keys["clinician"])  # the keys in use still log in
    assert t == lc.PROOF | wire.REPLY and sealed
    assert not records(pump, lc.EV_PROVISIONED, b"link keys rotated")


def test_a_diary_note_is_one_line_of_text():
    pump, link, host, keys = clinician()
    host.login(wire.ROLE_PATIENT, keys["patient"])
    before = len(records(pump, events.DIARY))
    for note in ("a\nb", "tab\there", "\x1b[2J"):
        p = host.err(lc.DIARY, {"pain": 6, "activity": "walking", "note": note}, wire.BAD_ARGS)
        assert "one line" in p["reason"], p
    assert len(records(pump, events.DIARY)) == before
    assert host.ok(lc.DIARY, {"pain": 6, "activity": "walking", "note": "ça brûle"})["seq"]


def test_a_diary_entry_the_flash_refuses_is_not_reported_as_recorded():
    import alarms
    pump, link, host, keys = clinician()
    host.login(wire.ROLE_PATIENT, keys["patient"])

    class RefusingLog:  # the log on a flash that refuses writes (reads and the rest as they are)
        def __init__(self, log):
            self.log = log

        def append(self, *args):
            raise OSError(5)

        def __getattr__(self, name):
            return getattr(self.log, name)
    log = pump.log
    pump.log = RefusingLog(log)
    p = host.err(lc.DIARY, {"pain": 6, "activity": "walking"}, wire.LIMIT)
    assert p["limit"] == "flash_fault" and "not recorded" in p["reason"], p
    assert pump.alarms.active & (1 << alarms.FLASH_FAULT)
    pump.log = log
    d = host.ok(lc.DIARY, {"pain": 6, "activity": "walking"})  # once the flash writes again
    assert d["seq"] and records(pump, events.DIARY)[-1][0] == d["seq"]


def test_a_status_too_large_for_one_frame_is_sent_short_not_refused():
    # A long-lived pump in trouble: ten years of totals, a fault, seven
    # alarms, a bolus. Its STATUS does not fit 448 bytes whole: it comes
    # without what IDENTIFY and THERAPY also give, marked "short".
    import alarms
    pump, link, host, keys = clinician({"drug": "hydromorphone", "conc_ng_ml": 15000000,
                                        "steps": [{"start_s": 0, "dose_ng_day": 9000000}]})
    full = host.ok(lc.STATUS)
    assert "short" not in full and full["capacity_nl"] == 20000000
    run(pump, 3 * 86400000 + 1234567)
    pump.clinician_bolus(1000000, 86400)
    r = pump.reservoir
    r.volume_in_nl, r.withdrawn_nl = 2400000000, 100000000
    r.drug_changed_s, r.bridge_drug = pump.now_s() - 86399, "morphine"  # a drug change too: one more figure
    for k in range(len(r.strokes)):
        r.strokes[k] = 600000
    r.reseal()
    for a in (alarms.FLASH_FAULT, alarms.BATTERY_ERI, alarms.RESERVOIR_LOW, alarms.CLOCK_UNCERTAIN,
              alarms.ALARM_DATE, alarms.REFILL_DISCREPANCY, alarms.INTERNAL_FAULT):
        pump.alarms.set(a, True, pump.now_s())
    pump.fault = MemoryError("memory allocation failed, allocating 5764 bytes")
    whole = link._status({})
    whole.pop("short", None)
    try:
        wire.dumps(dict(whole, capacity_nl=20000000, max_daily_nl=600000, priming_nl=0))
        raise AssertionError("this status fits one frame whole: the test shows nothing")
    except wire.TooLarge:
        pass
    host.login(wire.ROLE_CLINICIAN, keys["clinician"])  # the session ended while the pump ran
    st = host.ok(lc.STATUS)
    assert st["short"] is True and "capacity_nl" not in st and "max_daily_nl" not in st, st
    assert st["fault"] == "MemoryError: memory allocation f" and len(st["alarms"]) == 7
    assert st["drug_delivered_ng"] == pump.reservoir.drug_delivered_ng() and st["bolus"] is not None
    assert st["drug_changed_s"] == 86399


def test_the_patient_cannot_rotate_the_keys():
    pump, link, host, keys = clinician()
    host.login(wire.ROLE_PATIENT, keys["patient"])
    host.err(lc.ROTATE_KEYS, {"entropy": bytes(32)}, wire.FORBIDDEN)
    assert link.keys.keys[wire.ROLE_CLINICIAN] == keys["clinician"]


def _flash_pump(d):
    return Pump(UnixBoard(virtual=True, flash_dir=d))


def _wrong_proofs(host, role, n):
    codes = []
    for _ in range(n):
        t, _, r, _ = host.call(lc.HELLO, {"role": role, "nonce": os.urandom(16)})
        if t == wire.MSG_ERROR:
            codes.append(r["code"])
            continue
        codes.append(host.err(lc.PROOF, {"proof": bytes(32), "nonce": r["nonce"]})["code"])
    return codes


def test_a_lockout_survives_a_reset_and_costs_one_write_per_lockout():
    # Issue #15 finding 5: a reset does not clear the back-off.
    d = "/tmp/test_lockout_%d" % int.from_bytes(os.urandom(4), "big")
    os.mkdir(d)
    pump = _flash_pump(d)
    io = Loop()
    link = Link(pump, io, serial="EMU-LOCK0001")
    host = Host(link, io)
    keys = host.provision()
    saves = [0]
    real_save = link.keys.store.save

    def counted(name, version, body):
        if name == "lockout":
            saves[0] += 1
        return real_save(name, version, body)

    link.keys.store.save = counted
    codes = _wrong_proofs(host, wire.ROLE_CLINICIAN, 40)
    assert wire.LOCKED_OUT in codes
    assert saves[0] == 1  # one lockout began (and the attempts during it were refused, unwritten)
    # Reset: a new pump and link on the same flash.
    io2 = Loop()
    link2 = Link(_flash_pump(d), io2)
    host2 = Host(link2, io2)
    host2.err(lc.HELLO, {"role": wire.ROLE_CLINICIAN, "nonce": os.urandom(16)}, wire.LOCKED_OUT)
    t, _, p, sealed = host2.login(wire.ROLE_PATIENT, keys["patient"])  # the other role is not locked
    assert sealed
    run(link2.pump, (lc.BACKOFF_S + 1) * 1000)
    t, _, p, sealed = host2.login(wire.ROLE_CLINICIAN, keys["clinician"])
    assert sealed and link2.failures[wire.ROLE_CLINICIAN] == 0
    # ...and the login that ended it is on flash too: the next reset has no lockout.
    io3 = Loop()
    link3 = Link(_flash_pump(d), io3)
    assert Host(link3, io3).login(wire.ROLE_CLINICIAN, keys["clinician"])[3]
