"""Fuzz campaign against the emulated pump's programmer link (issue #15).

Mutated and random frames through the real pseudo-terminal of a
virtual-time emulator (its clock stands still: no stroke moves the ledger
meanwhile), from a host that holds no key. Checked:
  - liveness: every LIVENESS_EVERY frames the pump answers IDENTIFY;
  - the emulator never crashed or reset;
  - afterwards the therapy, the state, the reservoir and the alarms are as
    before, the clinician can still log in, no record of a change (therapy,
    bolus, refill, clock, keys, diary, implant) was written, and every
    record of the log from before is still readable.

  python tools/fuzz.py --frames 1000000 --seed 7     (make fuzz FRAMES=... SEED=...)

The last line of stdout is one JSON object: frames, seconds, frames_per_s,
seed, failures (a list of strings; empty when the campaign passed).
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host_tools"))

from pumpctl import session  # noqa: E402
from pumpctl.emulator import Emulator  # noqa: E402
from pumpctl.fw import events, link_commands as lc, wire  # noqa: E402
from pumpctl.keystore import KeyStore  # noqa: E402
from pumpctl.link import Client, open_port, unpack_log  # noqa: E402

LIVENESS_EVERY = 5000  # frames between IDENTIFY checks
BATCH = 64  # frames written before the replies are drained
PROBE_TIMEOUT_S = 30.0  # the pump works through the frames queued in the pty before it answers
# Records that only a key holder's command may write.
CHANGES = frozenset((events.THERAPY_PROGRAMMED, events.THERAPY_SUSPENDED, events.THERAPY_RESUMED,
                     events.BOLUS_REQUESTED, events.BOLUS_STARTED, events.CLOCK_SET, events.REFILL,
                     events.DIARY, events.RESERVOIR_SET, events.PROVISIONED, events.IMPLANT_STEP,
                     events.OVERRIDE, events.AUTH_OK))
RX = {"drug": "morphine", "conc_ng_ml": 10_000_000, "steps": [{"start_s": 0, "dose_ng_day": 4_000_000}]}


class Mutator:
    """Frames a host without the keys could send: valid frames of a real
    session and of the handshake, mutated, replayed, spliced, or random."""

    def __init__(self, rng, seeds):
        self.rng = rng
        self.seeds = seeds  # encoded frames, delimiter included

    def frame(self):
        r = self.rng
        kind = r.randrange(8)
        if kind == 0:  # random bytes, delimited
            return bytes(r.getrandbits(8) for _ in range(r.randrange(1, 80))) + b"\x00"
        if kind == 1:  # a random body, validly COBS-encoded (reaches the CRC check)
            body = bytes(r.getrandbits(8) for _ in range(r.randrange(1, 120)))
            return wire.cobs_encode(body)
        seed = bytearray(r.choice(self.seeds))
        if kind == 2:  # exact replay
            return bytes(seed)
        if kind == 3:  # bit flips in the encoded frame
            for _ in range(r.randrange(1, 9)):
                i = r.randrange(len(seed) - 1)
                seed[i] ^= 1 << r.randrange(8)
            return bytes(b or 1 for b in seed[:-1]) + b"\x00"
        if kind == 4:  # truncated
            return bytes(seed[:r.randrange(1, len(seed))]) + b"\x00"
        if kind == 5:  # a valid body with flips, re-encoded (CRC recomputed: reaches the tag and payload checks)
            body = bytearray(wire.cobs_decode(bytes(seed)))
            for _ in range(r.randrange(1, 5)):
                body[r.randrange(len(body))] ^= 1 << r.randrange(8)
            body[-4:] = zlib.crc32(bytes(body[:-4])).to_bytes(4, "big")
            return wire.cobs_encode(bytes(body))
        if kind == 6:  # two frames spliced
            other = r.choice(self.seeds)
            return bytes(seed[:r.randrange(1, len(seed))]) + other[r.randrange(len(other)):]
        return bytes(seed[:-1]) + bytes(r.getrandbits(8) or 1 for _ in range(r.randrange(1, 40))) + b"\x00"


def _seed_frames(client):
    # Frames of a real clinician session (sealed) and of the handshake: what
    # an eavesdropper on the line could have recorded.
    s = client.session
    frames = [s.seal(lc.STATUS, 7, None), s.seal(lc.THERAPY, 8, None),
              s.seal(lc.PROGRAM, 9, {"rx": {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 20_000_000]]}}),
              s.seal(lc.BOLUS, 10, {"dose_ng": 5_000_000, "duration_s": 600}), s.seal(lc.SUSPEND, 11, None),
              s.seal(lc.SET_CLOCK, 12, {"day": 1, "tod_s": 0}), s.seal(lc.LOG_READ, 13, {"first": 1, "max": 8})]
    plain = wire.Session()
    frames += [plain.seal(lc.IDENTIFY, 1, {"versions": [wire.PROTOCOL_VERSION]}),
               plain.seal(lc.HELLO, 2, {"role": wire.ROLE_CLINICIAN, "nonce": bytes(wire.NONCE_LEN)}),
               plain.seal(lc.PROOF, 3, {"proof": bytes(32)}), plain.seal(lc.DEMAND, 4, None)]
    return frames


class Probe:
    """IDENTIFY with an id of its own, its reply picked out of the pump's
    refusals of the fuzz frames (which may carry any id, or 0)."""

    def __init__(self, port):
        self.port, self.rx, self.mid = port, bytearray(), 0

    def answers(self):
        self.mid = self.mid % 60000 + 1
        self.port.write(b"\x00" + wire.Session().seal(lc.IDENTIFY, self.mid, {"versions": [wire.PROTOCOL_VERSION]}))
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            self.rx += self.port.read(max(1, self.port.in_waiting))
            while b"\x00" in self.rx:
                frame, _, rest = bytes(self.rx).partition(b"\x00")
                self.rx = bytearray(rest)
                try:
                    t, _, mid, _, _ = wire.peek(frame + b"\x00")
                except wire.WireError:
                    continue
                if t == lc.IDENTIFY | wire.REPLY and mid == self.mid:
                    return True
        return False


def _bench_state(emu):
    # The pump as the bench sees it (no login: a campaign may have locked the role out).
    with emu.bench() as b:
        s = b.call("status")
    return {k: s[k] for k in ("state", "remaining_nl", "alarms", "strokes", "day", "tod_s")}


def _log_bounds(client):
    info = client.request(lc.LOG_READ, {"first": 1, "max": 1})
    return info["first_seq"], info["last_seq"]


def _records(client, first, last):
    out, nxt = [], first
    while nxt <= last:
        p = client.request(lc.LOG_READ, {"first": nxt, "max": lc.LOG_MAX_PER_READ})
        out += [r for r in unpack_log(p["recs"]) if r[0] <= last]
        if p["next"] <= nxt:
            break
        nxt = p["next"]
    return out


def _login(emu, keystore, serial):
    c = Client(open_port(emu.port), timeout=2.0)
    c.identify()
    c.login("clinician", KeyStore(keystore).get(serial, "clinician"))
    return c


def campaign(frames, seed, state_dir, say=lambda line: None, during=None):
    """Runs the campaign; returns the result dict. `during(emulator, frames)`,
    if given, is called at each liveness check (tests use it to prove that
    the checks can fail)."""
    failures = []
    emu = Emulator(Path(state_dir) / "pump", virtual=True, prescription=RX).start()
    keystore = Path(state_dir) / "keys.json"
    try:
        c = Client(open_port(emu.port))
        serial = c.identify()["serial"]
        session.provision_if_new(c, KeyStore(keystore))
        c.close()
        c = _login(emu, keystore, serial)
        first, last = _log_bounds(c)
        before = {"rx": c.request(lc.THERAPY).get("rx"), "first_seq": first, "last_seq": last}
        old = _records(c, first, last)
        seeds = _seed_frames(c)
        c.request(lc.LOGOUT)
        c.close()
        before["bench"] = _bench_state(emu)
        rng = random.Random(seed)
        mut = Mutator(rng, seeds)
        port = open_port(emu.port)
        probe = Probe(port)
        t0 = time.monotonic()
        sent = 0
        while sent < frames:
            n = min(BATCH, frames - sent)
            port.write(b"".join(mut.frame() for _ in range(n)))
            sent += n
            if port.in_waiting:
                probe.rx += port.read(port.in_waiting)  # the pump's refusals: never left to fill the pty
                del probe.rx[:-4096]
            if sent % LIVENESS_EVERY < BATCH or sent == frames:
                if not probe.answers():
                    failures.append("no answer to IDENTIFY within %d s after %d frames" % (PROBE_TIMEOUT_S, sent))
                    break
                if during is not None:
                    during(emu, sent)
                say("%d frames, %.0f/s" % (sent, sent / max(time.monotonic() - t0, 1e-9)))
        secs = time.monotonic() - t0
        port.close()
        if emu.proc is None or emu.proc.poll() is not None or emu.resets:
            failures.append("the emulator stopped or reset (resets %s): %s" % (emu.resets, emu.exit_reason()))
        else:
            failures += _check_after(emu, keystore, serial, before, old)
    finally:
        emu.stop()
    return {"frames": sent, "seconds": round(secs, 1), "frames_per_s": round(sent / max(secs, 1e-9)),
            "seed": seed, "failures": failures}


def _check_after(emu, keystore, serial, before, old):
    failures = []
    now = _bench_state(emu)
    for key in ("state", "remaining_nl", "alarms", "strokes", "day", "tod_s"):
        if now[key] != before["bench"][key]:
            failures.append("%s changed: %r -> %r" % (key, before["bench"][key], now[key]))
    # Wrong proofs in the campaign may have locked the clinician out, as
    # wrong keys should: wait it out in pump time, then log in.
    with emu.bench() as b:
        b.call("advance", ms=(lc.LOCKOUT_MAX_S + 1) * 1000)
    try:
        c = _login(emu, keystore, serial)
    except Exception as e:  # reported, never a crash of this tool
        return failures + ["the clinician cannot log in after the campaign (and the longest lockout): %s" % e]
    try:
        if c.request(lc.THERAPY).get("rx") != before["rx"]:
            failures.append("the prescription changed")
        first, last = _log_bounds(c)
        kept = _records(c, before["first_seq"], before["last_seq"])
        if kept != old:
            failures.append("the log from before lost or changed records (%d of %d still readable)"
                            % (len(kept), len(old)))
        new = _records(c, before["last_seq"] + 1, last)
        changes = [events.NAMES.get(r[3], r[3]) for r in new if r[3] in CHANGES]
        if changes[1:] or changes[:1] not in ([], ["authenticated"]):  # only this check's own login
            failures.append("records of changes written during the campaign: %s" % changes)
    finally:
        c.close()
    return failures


def main(argv=None):
    p = argparse.ArgumentParser(description="fuzz campaign against the emulated pump's link")
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=None, help="the same seed replays the same frames")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print("fuzz: %d frames, seed %d" % (args.frames, seed), flush=True)
    with tempfile.TemporaryDirectory(prefix="pump-fuzz-") as tmp:
        res = campaign(args.frames, seed, tmp, say=lambda line: print("  " + line, flush=True))
    for f in res["failures"]:
        print("FAILED: %s" % f)
    print("%d frames in %.1f s (%d/s), %s" % (res["frames"], res["seconds"], res["frames_per_s"],
                                             "no failure" if not res["failures"] else
                                             "%d failure(s); replay with --seed %d" % (len(res["failures"]), seed)))
    print(json.dumps(res))
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
