"""Runs the firmware's portable modules under CPython for property-based tests:
stand-ins for the two MicroPython-only names they use (`micropython.const`
and `time.ticks_*`), with the ticks wrapping as on the unix port."""
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TICKS_PERIOD = 1 << 62  # the 64-bit unix port's ticks range


def install():
    if "micropython" not in sys.modules:
        mp = types.ModuleType("micropython")
        mp.const = lambda x: x
        mp.heap_lock = mp.heap_unlock = lambda: None
        sys.modules["micropython"] = mp
    time.ticks_add = lambda t, d: (t + d) % TICKS_PERIOD
    time.ticks_diff = lambda a, b: ((a - b + TICKS_PERIOD // 2) % TICKS_PERIOD) - TICKS_PERIOD // 2
    time.ticks_ms = lambda: int(time.monotonic() * 1000) % TICKS_PERIOD
    for d in ("firmware", "boards/unix"):
        p = str(ROOT / d)
        if p not in sys.path:
            sys.path.insert(0, p)


install()
