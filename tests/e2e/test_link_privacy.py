"""Issue #15: patient data on the link is private. A listener on the serial
line (here: a tap on pumpctl's own port, which sees every byte both ways)
learns nothing of the diary, the therapy or the event log of a session; it
sees only what the handshake needs in the clear (IDENTIFY: the device's
identity; HELLO/PROOF: nonces and proofs)."""
from pumpctl.fw import link_commands as lc
from pumpctl.fw import wire
from pumpctl.link import Client, open_port, unpack_log

from linkkit import Pump

NOTE = "woke at 3am, left knee"  # the patient's own words


class Tap:
    """A serial port that keeps a copy of every byte written and read."""

    def __init__(self, port):
        self.port = port
        self.wire = bytearray()

    def write(self, data):
        self.wire += data
        return self.port.write(data)

    def read(self, n):
        data = self.port.read(n)
        self.wire += data
        return data

    def __getattr__(self, name):
        return getattr(self.port, name)


def frames(captured):
    # Every frame the listener saw, COBS-decoded (the framing is public).
    out = []
    for chunk in bytes(captured).split(b"\x00"):
        if chunk:
            try:
                out.append(wire.cobs_decode(chunk + b"\x00"))
            except wire.WireError:
                pass
    return out


def tapped(pump, role):
    tap = Tap(open_port(pump.port))
    c = Client(tap)
    c.identify()
    c.login(role, pump.key(role))
    return c, tap


def test_a_listener_on_the_line_reads_no_diary_therapy_or_log(tmp_path):
    pump = Pump(tmp_path)
    patient, tap_p = tapped(pump, "patient")
    try:
        patient.request(lc.DIARY, {"pain": 7, "activity": "rest", "note": NOTE})
    finally:
        patient.close()
    clinician, tap_c = tapped(pump, "clinician")
    try:
        therapy = clinician.request(lc.THERAPY)
        log = clinician.request(lc.LOG_READ, {"first": 1, "max": lc.LOG_MAX_PER_READ})
    finally:
        clinician.close()
    assert any(NOTE.encode() in r[-1] for r in unpack_log(log["recs"]))  # the pump has it
    captured = bytes(tap_p.wire + tap_c.wire)
    decoded = frames(captured)
    assert len(decoded) >= 8
    for secret in (NOTE.encode(), b"knee", wire.dumps(therapy), wire.dumps(log["recs"]), log["recs"][:40]):
        assert secret not in captured and not any(secret in f for f in decoded), secret[:20]
    sealed = [f for f in decoded if f[2] & wire.FLAG_TAG]
    assert len(sealed) >= 6  # diary, therapy and log requests and replies, logins, logouts
    assert all(f[0] == wire.PROTOCOL_VERSION for f in decoded)


def test_the_clear_part_of_the_link_is_the_device_identity_and_the_handshake(tmp_path):
    pump = Pump(tmp_path)
    c, tap = tapped(pump, "clinician")
    c.close()
    plain = [wire.peek(wire.cobs_encode(f))[0] for f in frames(tap.wire) if not f[2] & wire.FLAG_TAG]
    allowed = {lc.IDENTIFY, lc.HELLO, lc.IDENTIFY | wire.REPLY, lc.HELLO | wire.REPLY, lc.PROOF}
    assert set(plain) <= allowed, set(plain) - allowed
