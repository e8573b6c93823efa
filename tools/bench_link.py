"""Programmer-link benchmark against a virtual-time emulated pump, through its
real pty. The last line of stdout is one JSON object:

  interrogate_rtt_median_ms / _p99_ms   full report (STATUS + THERAPY + ALARMS), round trip
  request_rtt_median_ms / _p99_ms       one STATUS request, round trip
  log_records_per_s                     event-log download rate over 10,000 records
  log_records_held                      records one full read of the log returned (a full flash log
                                        wraps: the download then reads it in passes)
  overhead_pct                          frame bytes that are not CBOR payload, STATUS exchanges
  log_overhead_pct                      wire bytes that are not event records, log download
  pty_echo_rtt_median_ms / _p99_ms      anchor: one frame (a request's size) echoed back through a
                                        bare pty pair by a trivial MicroPython echo loop: the same
                                        runtime, pty set-up and host reads as the pump, no firmware
  interrogate_rtt_ratio_to_echo         interrogate median / echo median (the interrogate is 3
                                        request/reply exchanges, so 3 is the floor)
  request_rtt_ratio_to_echo             one sealed STATUS / echo median (issue #18 goal: <= 10)
  login_ms_median                       HELLO + PROOF on an open port (issue #18 goal: <= 3 ms)

The log is filled with patient diary entries sent over the link, pipelined.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host_tools"))

from pumpctl import paths, session  # noqa: E402
from pumpctl.emulator import Emulator  # noqa: E402
from pumpctl.fw import link_commands as lc  # noqa: E402
from pumpctl.fw import wire  # noqa: E402
from pumpctl.keystore import KeyStore  # noqa: E402
from pumpctl.link import Client, open_port, unpack_log  # noqa: E402

RTT_SAMPLES = 300
LOG_RECORDS = 10_000
PIPELINE = 40  # diary requests in flight while filling
CHECK = 1000  # diary entries between looks at the log's extent
ECHO_FRAME = bytes(range(1, 34)) + b"\x00"  # 34 bytes, a sealed STATUS request's size, 0x00-delimited

# The far end of the anchor: the emulator's read path (boards/unix/pty_link.py:
# the pty master passed by fd number, non-blocking, polled) with nothing behind it.
ECHO_LOOP = """
import select, sys
s = open(int(sys.argv[1]), "r+b")
p = select.poll()
p.register(s, select.POLLIN)
buf = bytearray(512)
while True:
    ev = p.poll(-1)
    if ev and ev[0][1] & (select.POLLHUP | select.POLLERR):
        break
    try:
        n = s.readinto(buf) or 0
    except OSError:
        n = 0
    if n:
        s.write(memoryview(buf)[:n])
"""


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def connect(emu, store, role):
    c = Client(open_port(emu.port))
    serial = c.identify()["serial"]
    c.login(role, store.get(serial, role))
    return c


LOGIN_SAMPLES = 30


def login_times(c):
    # A new login on the logged-in client's open port: HELLO and PROOF, both proofs checked.
    out = []
    for _ in range(LOGIN_SAMPLES):
        t = time.perf_counter()
        c.relogin()
        out.append((time.perf_counter() - t) * 1000)
    return out


def rtt(c):
    one, full = [], []
    for _ in range(RTT_SAMPLES):
        t = time.perf_counter()
        c.request(lc.STATUS)
        one.append((time.perf_counter() - t) * 1000)
    s0, r0, p0, q0 = c.sent, c.received, c.payload_sent, c.payload_received
    for _ in range(RTT_SAMPLES // 3):
        t = time.perf_counter()
        c.request(lc.STATUS)
        c.request(lc.THERAPY)
        c.request(lc.ALARMS)
        full.append((time.perf_counter() - t) * 1000)
    wire_bytes = (c.sent - s0) + (c.received - r0)
    payload = (c.payload_sent - p0) + (c.payload_received - q0)
    return one, full, 100.0 * (wire_bytes - payload) / wire_bytes


def pty_echo():
    """Round trips (ms) of ECHO_FRAME through a raw pty pair to a MicroPython
    echo loop, the pty made as pumpctl.emulator makes the pump's."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    os.set_blocking(master, False)
    proc = subprocess.Popen([paths.micropython(), "-c", ECHO_LOOP, str(master)], pass_fds=(master,))
    port = None
    try:
        port = open_port(os.ttyname(slave))
        times = []
        for i in range(RTT_SAMPLES + 10):  # the first few warm up
            t = time.perf_counter()
            port.write(ECHO_FRAME)
            port.flush()
            got = bytearray()
            deadline = time.monotonic() + 5
            while len(got) < len(ECHO_FRAME):
                if time.monotonic() > deadline:
                    raise RuntimeError("pty echo: %d of %d bytes came back" % (len(got), len(ECHO_FRAME)))
                got += port.read(max(1, port.in_waiting))
            if i >= 10:
                times.append((time.perf_counter() - t) * 1000)
            if bytes(got) != ECHO_FRAME:
                raise RuntimeError("pty echo: the bytes came back changed")
        return times
    finally:
        if port is not None:
            port.close()
        os.close(slave)
        os.close(master)
        try:
            proc.wait(5)  # the hang-up ends the loop
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fill(emu, store, target):
    # Pipelined diary entries (patient): PIPELINE frames written, then their
    # replies read; every CHECK entries a clinician looks at the log's extent.
    while True:
        c = connect(emu, store, "clinician")
        info = c.request(lc.LOG_READ, {"first": 1, "max": 1})
        c.close()
        held = info["last_seq"] - info["first_seq"] + 1
        if held >= target or info["first_seq"] > 1:  # enough, or the log is full and rolling over
            return info
        c = connect(emu, store, "patient")
        for _ in range(0, min(CHECK, target - held), PIPELINE):
            ids = []
            for i in range(PIPELINE):
                mid = c._new_id()
                ids.append(mid)
                c._write(c.session.seal(lc.DIARY, mid, {"pain": i % 11, "activity": "rest", "note": "bench"}))
            got = 0
            for f in c._frames(time.monotonic() + 10):
                r = c._open(f, c.session)
                if r and r[1] in ids and r[0] == lc.DIARY | wire.REPLY:
                    got += 1
                    if got == len(ids):
                        break
            if got != len(ids):
                raise RuntimeError("filling the log: %d of %d replies" % (got, len(ids)))
        c.close()


def download(c, total):
    done, passes, held = 0, 0, None
    s0, r0 = c.sent, c.received
    records_bytes = 0
    t = time.perf_counter()
    while done < total:
        info = c.request(lc.LOG_READ, {"first": 1, "max": 1})
        nxt, last = info["first_seq"], info["last_seq"]
        passes += 1
        start = done
        while nxt <= last and done < total:
            p = c.request(lc.LOG_READ, {"first": nxt, "max": lc.LOG_MAX_PER_READ})
            recs = unpack_log(p["recs"])
            done += len(recs)
            records_bytes += len(p["recs"])
            if p["next"] <= nxt:
                break
            nxt = p["next"]
        if held is None:
            held = done - start  # one whole pass: the records the log holds (its two rings number with gaps)
    secs = time.perf_counter() - t
    wire_bytes = (c.sent - s0) + (c.received - r0)
    return done / secs, passes, 100.0 * (wire_bytes - records_bytes) / wire_bytes, held


def main():
    echo = pty_echo()
    with tempfile.TemporaryDirectory() as tmp:
        store = KeyStore(Path(tmp) / "keys.json")
        emu = Emulator(Path(tmp) / "pump", virtual=True).start()
        try:
            c = Client(open_port(emu.port))
            session.provision_if_new(c, store)
            c.close()
            c = connect(emu, store, "clinician")
            one, full, overhead = rtt(c)
            logins = login_times(c)
            c.close()
            t = time.perf_counter()
            info = fill(emu, store, LOG_RECORDS)
            fill_s = time.perf_counter() - t
            c = connect(emu, store, "clinician")
            rate, passes, log_overhead, held = download(c, LOG_RECORDS)
            c.close()
        finally:
            emu.stop()
    result = {
        "interrogate_rtt_median_ms": round(statistics.median(full), 3),
        "interrogate_rtt_p99_ms": round(percentile(full, 99), 3),
        "request_rtt_median_ms": round(statistics.median(one), 3),
        "request_rtt_p99_ms": round(percentile(one, 99), 3),
        "log_records_per_s": round(rate),
        "log_records_held": held,
        "log_download_passes": passes,
        "log_fill_records_per_s": round((info["last_seq"]) / fill_s),
        "overhead_pct": round(overhead, 1),
        "log_overhead_pct": round(log_overhead, 1),
        "pty_echo_rtt_median_ms": round(statistics.median(echo), 3),
        "pty_echo_rtt_p99_ms": round(percentile(echo, 99), 3),
        "interrogate_rtt_ratio_to_echo": round(statistics.median(full) / statistics.median(echo), 1),
        "request_rtt_ratio_to_echo": round(statistics.median(one) / statistics.median(echo), 1),
        "login_ms_median": round(statistics.median(logins), 3),
    }
    print("programmer link over the emulator's pty (virtual time): %s" % ", ".join(
        "%s %s" % (k, v) for k, v in result.items()), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
