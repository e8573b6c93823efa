"""Stroke timing under link traffic (issue #15, finding 4): a real-time
emulated pump at a fast rate, its strokes' board times read from the bench,
first with the link idle, then while a keyless host floods the link with
fuzz frames (tools/fuzz.py's mutator). The last line of stdout is one JSON
object:

  tick_late_idle_ms         the latest a tick ran after it fell due, link idle (the bench's
                            tick_lateness: what strokes wait for)
  tick_late_flood_ms        the same under the flood (goal <= 10 ms)
  stroke_phase_idle_ms      spread of the strokes' phase on the 100 ms tick grid, link idle
  stroke_phase_flood_ms     the same under the flood
  flood_frames_per_s        frames the flood wrote meanwhile
  strokes_idle / strokes_flood
"""
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host_tools"))
sys.path.insert(0, str(ROOT / "tools"))

import fuzz  # noqa: E402
from pumpctl.emulator import Emulator  # noqa: E402
from pumpctl.fw import link_commands as lc, wire  # noqa: E402
from pumpctl.link import open_port  # noqa: E402

# Baclofen 50 µg/mL at 1000 µg/day: about 20 mL/day, a 0.5 µL stroke every 2 s or so.
RX = {"drug": "baclofen", "conc_ng_ml": 50_000, "steps": [{"start_s": 0, "dose_ng_day": 1_000_000}]}
SPAN_S = 24.0


def stroke_times(emu):
    with emu.bench() as b:
        n = b.call("status")["strokes"]
        return b.call("strokes", first=max(0, n - 64), limit=64)["times"]


TICK_MS = 100  # firmware/hal.py: strokes start on ticks


def phase_spread(times):
    # Strokes start on the tick grid: how far their phase on it wanders.
    if len(times) < 2:
        return None
    dev = [((t - times[0]) + TICK_MS // 2) % TICK_MS - TICK_MS // 2 for t in times]
    return max(dev) - min(dev)


def tick_lateness(emu):
    with emu.bench() as b:
        return b.call("tick_lateness")["late_max_ms"]


def window(emu, secs):
    # (stroke times, latest tick lateness) over `secs` of real time.
    before = stroke_times(emu)
    start = before[-1] if before else 0
    tick_lateness(emu)
    time.sleep(secs)
    return [t for t in stroke_times(emu) if t > start], tick_lateness(emu)


def flood(port, stop, counter):
    seeds = [wire.Session().seal(lc.IDENTIFY, n, {"versions": [wire.PROTOCOL_VERSION]}) for n in range(1, 4)]
    seeds += [wire.Session().seal(lc.HELLO, 9, {"role": wire.ROLE_CLINICIAN, "nonce": bytes(wire.NONCE_LEN)})]
    mut = fuzz.Mutator(random.Random(1), seeds)
    while not stop.is_set():
        port.write(b"".join(mut.frame() for _ in range(16)))
        counter[0] += 16
        if port.in_waiting:
            port.read(port.in_waiting)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        emu = Emulator(Path(tmp) / "pump", prescription=RX).start()
        try:
            time.sleep(3)  # the first strokes
            idle = window(emu, SPAN_S)
            port = open_port(emu.port)
            stop, counter = threading.Event(), [0]
            t = threading.Thread(target=flood, args=(port, stop, counter), daemon=True)
            t0 = time.monotonic()
            t.start()
            flooded = window(emu, SPAN_S)
            stop.set()
            t.join()
            rate = counter[0] / (time.monotonic() - t0)
            port.close()
        finally:
            emu.stop()
    result = {"tick_late_idle_ms": idle[1], "tick_late_flood_ms": flooded[1],
              "stroke_phase_idle_ms": phase_spread(idle[0]), "stroke_phase_flood_ms": phase_spread(flooded[0]),
              "flood_frames_per_s": round(rate), "strokes_idle": len(idle[0]), "strokes_flood": len(flooded[0])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
