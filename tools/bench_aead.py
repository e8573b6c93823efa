"""ChaCha20-Poly1305 (firmware/aead.py, docs/crypto.md) on the MicroPython unix
ports: the 64-bit one and the 31-bit one (small ints as on an RP2040). For each,
the import (the viper code is compiled then), seal and open of a 64-byte and a
256-byte frame (16 bytes of AAD; median of ROUNDS, host microseconds), and
seal+open throughput on 1 KiB; the pure-Python fallback beside it. Prints a
report and, last, one JSON line (tools/bench.py's convention, so `make bench`
can list it beside bench_link). tools/rp2emu/bench_aead_rp2.py runs the same
measurement on the emulated RP2040.

    .venv/bin/python tools/bench_aead.py"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME31 = ROOT.parent / "shared" / "runtimes" / "micropython-1.28.0-unix-i386"

# Runs on the board (unix port or Pico), aead importable; prints AEADBENCH {json}.
ONBOARD = r'''
import gc, json, time
ROUNDS = %(rounds)d
PY_ROUNDS = %(py_rounds)d
gc.collect()
gc.disable()
f0 = gc.mem_free()
t0 = time.ticks_us()
import aead
t_import = time.ticks_diff(time.ticks_us(), t0)
allocated = f0 - gc.mem_free()
gc.enable()
gc.collect()
resident = f0 - gc.mem_free()
KEY = bytes(range(32))
NONCE = bytes(range(12))
AAD = bytes(16)


def med(v):
    v = sorted(v)
    return v[len(v) // 2]


def frame(n, rounds):
    pt = bytes(range(256)) * (n // 256) + bytes(n %% 256)
    out = bytearray(n + 16)
    back = bytearray(n)
    seal, opn = [], []
    for _ in range(rounds):
        t = time.ticks_us()
        aead.seal_into(out, KEY, NONCE, AAD, pt)
        t1 = time.ticks_us()
        aead.open_into(back, KEY, NONCE, AAD, out)
        t2 = time.ticks_us()
        seal.append(time.ticks_diff(t1, t))
        opn.append(time.ticks_diff(t2, t1))
    assert back == pt
    return med(seal), med(opn)


r = {"impl": aead.IMPL, "viper_error": aead.VIPER_ERROR, "import_us": t_import,
     "import_allocated_bytes": allocated, "import_resident_bytes": resident}
for impl, rounds in (("viper", ROUNDS), ("python", PY_ROUNDS)):
    if impl == "viper" and aead._VIPER is None:
        continue
    aead.use(impl)
    for n in (64, 256):
        s, o = frame(n, rounds)
        r["%%s_seal_%%dB_us" %% (impl, n)] = s
        r["%%s_open_%%dB_us" %% (impl, n)] = o
    s, o = frame(1024, max(1, rounds // 4))
    r["%%s_seal_open_bytes_per_s" %% impl] = int(1024 * 1000000 / (s + o))
    r["%%s_seal_bytes_per_s" %% impl] = int(1024 * 1000000 / s)
print("AEADBENCH " + json.dumps(r))
'''


def onboard_source(rounds, py_rounds):
    return ONBOARD % {"rounds": rounds, "py_rounds": py_rounds}


def parse(out):
    for line in out.splitlines():
        if line.startswith("AEADBENCH "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError("no figures:\n" + out[-2000:])


def run_unix(exe):
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "aead_bench.py"
        script.write_text("import sys\nsys.path.insert(0, %r)\n" % str(ROOT / "firmware") + onboard_source(200, 20))
        out = subprocess.run([exe, str(script)], capture_output=True, text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(out.stdout + out.stderr)
        return parse(out.stdout)


def main():
    results = {}
    mp64 = os.environ.get("MICROPYTHON") or str(ROOT / ".venv" / "bin" / "micropython")
    mp31 = os.environ.get("MICROPYTHON31") or str(RUNTIME31)
    for label, exe in (("unix64", mp64), ("unix31", mp31)):
        if os.access(exe, os.X_OK):
            results[label] = run_unix(exe)
    print("ChaCha20-Poly1305 (firmware/aead.py) on the MicroPython unix ports (host us, median):")
    for label, fig in results.items():
        print("  %s (back end %s):" % (label, fig["impl"]))
        for k, v in fig.items():
            if k not in ("impl", "viper_error"):
                print("    %-34s %12s" % (k, v))
    flat = {"%s_%s" % (label, k): v for label, fig in results.items() for k, v in fig.items()}
    print(json.dumps(flat))


if __name__ == "__main__":
    sys.exit(main())
