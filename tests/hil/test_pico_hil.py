"""Hardware in the loop: the firmware on a real Raspberry Pi Pico.

Run with a Pico on USB, at its REPL (a fresh MicroPython 1.29 board is; one
running the pump: re-plug it and start within the boot window, or press
BOOTSEL in it):

    make hil PORT=/dev/ttyACM0

Without PICO_PORT (which `make hil` sets) every test here is skipped. The
tests run in order: deploy, on-board self-test, a watchdog reset, then the
pump booting and answering on USB. The last one leaves the pump running.
"""
import json
import os
import time
from pathlib import Path

import pytest

PORT = os.environ.get("PICO_PORT")
if not PORT:
    pytest.skip("no Pico: connect one at its REPL and run `make hil PORT=/dev/ttyACM0`", allow_module_level=True)

import serial  # noqa: E402

from pumpctl import deploy as d  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GRACE_MS = 5000  # longer boot window for the tests: time for USB to come back
# Root config.py shadows lib/config.mpy: the shipped config, bench demo on.
HIL_CONFIG = (ROOT / "boards" / "pico" / "config.py").read_text() + (
    "\n# tests/hil\nBOOT_GRACE_MS = %d\nBENCH_DEMO_NO_FEEDBACK = MOTOR_FEEDBACK is None\n" % GRACE_MS)


def lines(text, key):
    return [line.split(None, 2)[2] for line in text.splitlines() if line.startswith("HIL %s " % key)]


def reopen(timeout=15.0):
    # The board re-enumerates after a reset: wait for its port.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return serial.Serial(PORT, 115200, timeout=0.1)
        except (OSError, serial.SerialException):
            time.sleep(0.1)
    raise AssertionError("%s did not come back within %d s" % (PORT, timeout))


def read_for(port, seconds):
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out += port.read(256)
    return out


def interrupt_boot(port):
    # Ctrl-C in the boot window: the REPL.
    out = b""
    deadline = time.monotonic() + GRACE_MS / 1000 + 2
    while time.monotonic() < deadline and b">>> " not in out:
        port.write(b"\x03")
        out += port.read(256)
    assert b">>> " in out, out
    return out


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    report = d.deploy(PORT, reset="none", build_dir=tmp_path_factory.mktemp("build"), log=print)
    cfg = tmp_path_factory.mktemp("cfg") / "config.py"
    cfg.write_text(HIL_CONFIG)
    d.mpremote(PORT, "fs", "cp", str(cfg), ":config.py")
    return report


def test_deploy_verifies_every_file(deployed):
    assert deployed.arch in ("armv6m", "armv7emsp")
    assert len(deployed.files) == len(d.sources("pico"))


def test_board_logic_on_the_real_rp2_port(deployed):
    out = d.mpremote(PORT, "run", str(HERE / "onboard_selftest.py"), timeout=60).stdout
    assert 38 <= int(lines(out, "ticks")[0]) <= 41, out  # 4 s of a 100 ms machine.Timer
    assert lines(out, "alloc_bytes") == ["0"], out  # the tick allocated nothing, on the RP2040
    assert lines(out, "fault") == ["False"], out
    assert 4000 <= int(lines(out, "battery_mv")[0]) <= 5600, out  # VSYS/3 on GP29, USB powered
    assert int(lines(out, "strokes")[0]) >= 1, out


def test_watchdog_resets_a_hung_loop(deployed):
    hang = ("import sys\nsys.path.append('/lib')\nimport config, pico_board\nfrom pump import Pump\n"
            "b = pico_board.PicoBoard(config)\nb.start(Pump(b))\nb.loop_begin()\nwhile True:\n pass\n")
    d.mpremote(PORT, "exec", "--no-follow", hang)
    time.sleep(8.4 + 1)  # WDT_MS 8000: the board resets
    with reopen() as port:
        interrupt_boot(port)
    out = d.mpremote(PORT, "exec", "import sys\nsys.path.append('/lib')\nimport config, pico_board, hal\n"
                     "print('HIL cause', pico_board.PicoBoard(config).reset_cause() == hal.RESET_WATCHDOG)").stdout
    assert lines(out, "cause") == ["True"], out


def test_pump_boots_and_owns_the_usb_link(deployed):
    d.reset_board(PORT, "hard", "pico")
    with reopen() as port:
        banner = read_for(port, GRACE_MS / 1000 + 1.5)
        assert b"BENCH DEMO" in banner or b"pump:" in banner, banner
        port.write(b"\r")
        reply = read_for(port, 1.0)
        report = json.loads(reply.decode().strip().splitlines()[-1])
        assert report["state"] in ("idle", "delivering", "stopped")
        assert report["tick_ms"] == 100 and report["wdt_ms"] == 8000
        port.write(b"\x03")  # Ctrl-C is link data now: no REPL
        assert b">>>" not in read_for(port, 1.0)
