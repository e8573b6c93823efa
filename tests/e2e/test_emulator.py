"""The emulated pump as a separate process: pty link, bench port, flash image."""
import os
import signal
import subprocess
import sys
import time

from pumpctl.emulator import Emulator

DAY_MS = 86_400_000


def test_virtual_day_delivers_default_rate(virtual_pump):
    with virtual_pump.bench() as bench:
        status = bench.call("advance", ms=DAY_MS + 1000)
    # 10 mg/day at 10 mg/mL = 1 mL/day = 2000 strokes of 500 nL
    assert status["strokes"] == 2000
    assert status["remaining_nl"] == 20_000_000 - 2000 * 500


def test_virtual_time_stands_still_between_bench_commands(virtual_pump):
    with virtual_pump.bench() as bench:
        before = bench.call("status")["board_ms"]
        time.sleep(0.3)
        assert bench.call("status")["board_ms"] == before


def test_stroke_record_matches_rate_in_real_time(tmp_path):
    # Morphine 1 mg/mL at 20 mg/day = 20 mL/day: a 500 nL stroke every 2.16 s.
    rx = {"drug": "morphine", "conc_ng_ml": 1_000_000, "steps": [{"start_s": 0, "dose_ng_day": 20_000_000}]}
    with Emulator(tmp_path, prescription=rx) as emu, emu.bench() as bench:
        time.sleep(7)
        status = bench.call("status")
    expected = status["board_ms"] * 40_000 // DAY_MS
    assert expected >= 3
    assert abs(status["strokes"] - expected) <= 1, (status, expected)


def test_state_survives_a_clean_restart(tmp_path):
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        left = bench.call("advance", ms=DAY_MS + 1000)["remaining_nl"]
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        assert bench.call("status")["remaining_nl"] == left


def test_bench_rejects_unknown_command_and_pump_keeps_running(virtual_pump):
    with virtual_pump.bench() as bench:
        try:
            bench.call("explode")
        except RuntimeError as e:
            assert "unknown command" in str(e)
        else:
            raise AssertionError("unknown bench command accepted")
        assert bench.call("status")["running"]


def test_pumpctl_emulate_prints_port_and_stops_cleanly_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "pumpctl", "emulate", "--state", str(tmp_path)],
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PUMPCTL_KEYSTORE=str(tmp_path / "keys.json")))
    try:
        lines = []
        while not lines or "Ctrl-C" not in lines[-1]:
            lines.append(proc.stdout.readline())
            assert lines[-1], "pumpctl emulate ended early: %r" % lines
        port = next(l.split(": ", 1)[1].strip() for l in lines if "serial port" in l)
        assert os.path.exists(port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "flash.img").exists()


CORRUPT_STATE = """
import sys
sys.path[1:1] = [{boards!r}]
from image_flash import ImageBlockDevice, mount, unmount
import os
point = mount(ImageBlockDevice({image!r}))
for name in os.listdir(point + "/state"):
    if name.startswith("pump."):
        with open(point + "/state/" + name, "r+b") as f:
            f.seek(20)
            f.write(b"\\x00garbage\\x00")
unmount(point)
"""


def test_an_unreadable_state_is_not_replaced_by_the_demonstration_therapy(tmp_path):
    # Hazard 6 of issue #12: the emulator took an unreadable state record for
    # a new pump and started its demonstration therapy under a new serial.
    from mprun import micropython, ROOT
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        assert bench.call("advance", ms=3_600_000)["state"] == "delivering"
    script = CORRUPT_STATE.format(boards=str(ROOT / "boards" / "unix"), image=str(tmp_path / "flash.img"))
    subprocess.run([micropython(), "-c", script], check=True)
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        status = bench.call("advance", ms=DAY_MS)
    assert status["state"] == "stopped" and "integrity error" in status["alarms"], status
    assert status["strokes"] == 0 and status["tone_hz"] is not None
