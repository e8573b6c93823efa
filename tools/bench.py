"""make bench: measures the firmware on the MicroPython unix port and prints a
report; writes build/bench.json. Targets are shown beside the figures; no
assertion fails the run."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {
    "sim_180_days_s": ("<", 10.0),
    "sim_speedup": (">", 1.5e6),
    # Issue #18: the core in-process, and the whole emulator as users run it.
    "core_180_days_s": ("<=", 3.0),
    "emulator_180_days_1ml_s": ("<=", 30.0),
    "emulator_24ml_days_per_s": (">=", 5.0),
    "request_rtt_ratio_to_echo": ("<=", 10.0),
    "login_ms_median": ("<=", 3.0),
    "bytes_allocated_per_tick": ("<=", 0),
    "worst_error_strokes": ("<=", 1),
    # On the emulated RP2040 (issue #14).
    "free_heap_pump_running": (">=", 100000),
    "ticks_allocating_of_100": ("<=", 0),
    "duty_cycle_pct": ("<=", 5),
}


def micropython():
    return os.environ.get("MICROPYTHON") or str(ROOT / ".venv" / "bin" / "micropython")


def run_on_micropython(script):
    out = subprocess.run([micropython(), str(ROOT / "tools" / script)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def verdict(key, value):
    if key not in TARGETS:
        return ""
    op, target = TARGETS[key]
    ok = {"<": value < target, ">": value > target, "<=": value <= target, ">=": value >= target}[op]
    return "%s target %s %g" % ("meets" if ok else "MISSES", op, target)


def main():
    results = {"firmware": run_on_micropython("bench_firmware.py"),
               "link_stages": run_on_micropython("bench_link_stages.py")}  # where a sealed request's time goes
    # rp2emu/bench_rp2: the pump on the emulated RP2040 (docs/rp2emu.md).
    for extra in ("bench_link", "bench_jitter", "bench_emulator", "rp2emu/bench_rp2", "bench_aead",
                  "rp2emu/bench_aead_rp2"):
        path = ROOT / "tools" / (extra + ".py")
        if path.exists():
            out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, check=True)
            results[extra.rsplit("/", 1)[-1]] = json.loads(out.stdout.strip().splitlines()[-1])
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print("firmware on the MicroPython unix port:")
    for section, figures in results.items():
        if not isinstance(figures, dict):
            continue
        if section == "bench_link":
            print("programmer link over the emulator's pty, virtual time (pty_echo_*: the same pty path to a bare "
                  "MicroPython echo loop, the floor the link's times are measured against):")
        if section == "bench_rp2":
            print("on the emulated RP2040 (stock MicroPython rp2 firmware; times emulated, [median, p99, worst]):")
        for key, value in figures.items():
            shown = "%.4g" % value if isinstance(value, float) else str(value)
            print("  %-36s %14s   %s" % (key, shown, verdict(key, value)))
    print("written: build/bench.json")


if __name__ == "__main__":
    main()
