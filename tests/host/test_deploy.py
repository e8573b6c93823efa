"""pumpctl deploy against a MicroPython REPL on a pseudo-terminal.

The MicroPython unix port's interactive REPL answers mpremote's raw REPL as a
Pico's does. It runs on the master side of a pty (raw mode), in a temporary
directory that stands for the board's filesystem; the deploy function gets
the slave's path, /dev/pts/N, exactly as it would get /dev/ttyACM0.
"""
import os
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

from pumpctl import deploy as d
from pumpctl import paths

ROOT = Path(__file__).resolve().parents[2]


class ReplBoard:
    def __init__(self, fs: Path, program=None):
        self.fs = fs
        fs.mkdir(parents=True, exist_ok=True)
        master, self._slave = os.openpty()
        tty.setraw(master)
        tty.setraw(self._slave)
        cmd = [paths.micropython()] + (["-c", program] if program else [])
        self.proc = subprocess.Popen(cmd, stdin=master, stdout=master, stderr=master, cwd=str(fs),
                                     start_new_session=True)
        os.close(master)
        self.port = os.ttyname(self._slave)
        time.sleep(0.2)  # the banner; mpremote flushes it anyway

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self._slave)


@pytest.fixture
def board(tmp_path):
    b = ReplBoard(tmp_path / "board")
    yield b
    b.close()


def quiet(*_):
    pass


def test_deploy_copies_verifies_and_resets(board, tmp_path):
    report = d.deploy(board.port, reset="soft", build_dir=tmp_path / "build", log=quiet)
    expected = d.sources("pico") + [(None, "lib/aead_viper.mpy")]  # the cipher, compiled ahead of time
    assert len(report.files) == len(expected)
    for staged in report.files:
        on_board = board.fs / staged.remote
        assert on_board.read_bytes() == staged.local.read_bytes(), staged.remote
    assert (board.fs / "main.py").read_bytes() == (ROOT / "boards" / "pico" / "main.py").read_bytes()
    mpys = sorted(p.name for p in (board.fs / "lib").iterdir())
    assert "pump.mpy" in mpys and "pico_board.mpy" in mpys and "main.mpy" not in mpys
    assert len(mpys) == len(expected) - 1
    # The unix port's REPL exits on the soft reset: the "board" restarted.
    assert board.proc.wait(timeout=10) == 0
    assert report.reset == "soft reset"


def test_deployed_modules_load_on_the_board(board, tmp_path):
    report = d.deploy(board.port, reset="none", build_dir=tmp_path / "build", log=quiet)
    assert report.arch == "x64"  # the board's own architecture (armv6m on a Pico)
    out = d.mpremote(board.port, "exec", "import sys\nsys.path.insert(0, 'lib')\nimport pump, wire\n"
                     "print('LOADED', pump.__file__, pump.FIRMWARE_VERSION)").stdout
    assert "LOADED lib/pump.mpy" in out, out


def test_the_link_cipher_is_deployed_compiled_ahead_of_time(board, tmp_path):
    # Its viper code as native code for the board: nothing to compile at boot.
    d.deploy(board.port, reset="none", build_dir=tmp_path / "build", log=quiet)
    out = d.mpremote(board.port, "exec", "import sys\nsys.path.insert(0, 'lib')\nimport aead\n"
                     "print('CIPHER', aead.IMPL, aead.VIPER_ERROR, 'aead_viper' in sys.modules)").stdout
    assert "CIPHER viper None True" in out, out


def test_armv6m_code_for_a_pico_also_verifies(board, tmp_path):
    report = d.deploy(board.port, arch="armv6m", reset="none", build_dir=tmp_path / "build", log=quiet)
    assert report.arch == "armv6m"
    assert (board.fs / "lib" / "pump.mpy").read_bytes() == (tmp_path / "build" / "lib" / "pump.mpy").read_bytes()


def test_stale_copies_that_would_shadow_the_new_modules_are_removed(board, tmp_path):
    (board.fs / "lib").mkdir()
    (board.fs / "lib" / "pump.py").write_text("raise ImportError('stale')\n")
    (board.fs / "config.py").write_text("STALE = 1\n")
    (board.fs / "notes.txt").write_text("kept\n")
    d.deploy(board.port, reset="none", build_dir=tmp_path / "build", log=quiet)
    assert not (board.fs / "lib" / "pump.py").exists()
    assert not (board.fs / "config.py").exists()
    assert (board.fs / "notes.txt").exists()  # not ours: left alone


def test_verification_names_a_file_that_differs(board, tmp_path):
    staged = d.stage("pico", "armv6m", tmp_path / "build")
    d.upload(board.port, staged)
    d.verify(board.port, staged)
    (board.fs / "lib" / "pump.mpy").write_bytes(b"corrupt")
    (board.fs / "lib" / "wire.mpy").unlink()
    with pytest.raises(d.DeployError) as e:
        d.verify(board.port, staged)
    assert "2 file(s)" in str(e.value) and "lib/pump.mpy" in str(e.value)
    assert "lib/wire.mpy: board missing" in str(e.value)


def test_a_board_running_the_pump_is_explained(tmp_path, monkeypatch):
    # The pump owns the link: Ctrl-C is data, no REPL answers.
    monkeypatch.setattr(d, "PROBE_TIMEOUT_S", 3)
    program = "import micropython, sys\nmicropython.kbd_intr(-1)\nwhile True:\n sys.stdin.buffer.read(1)\n"
    b = ReplBoard(tmp_path / "busy", program)
    try:
        with pytest.raises(d.DeployError) as e:
            d.deploy(b.port, reset="none", build_dir=tmp_path / "build", log=quiet)
        assert "maintenance" in str(e.value) and "BOOTSEL" in str(e.value)
    finally:
        b.close()


def test_mpy_version_and_architecture_are_checked():
    pico = (4 << 10) | (3 << 8) | 6  # RP2040 running MicroPython 1.29
    pico2 = (7 << 10) | (3 << 8) | 6
    assert d.choose_arch(pico) == "armv6m" and d.choose_arch(pico2) == "armv7emsp"
    d.check_compatible(pico, "armv6m", (6, 3))
    d.check_compatible(pico2, "armv6m", (6, 3))  # Cortex-M33 runs M0+ code
    with pytest.raises(d.DeployError, match="armv6m"):
        d.check_compatible(pico, "armv7emsp", (6, 3))
    with pytest.raises(d.DeployError, match="MicroPython 1.29"):
        d.check_compatible((4 << 10) | (2 << 8) | 6, "armv6m", (6, 3))
    assert d.mpy_cross_version() == (6, 3)


def test_reboot_marker_matches_the_board():
    flash, marker = d.reboot_marker("pico")
    assert flash == "pump-data" and marker == "pump-data/reboot"  # boards/pico/config.py FLASH_DIR


def test_pumpctl_has_a_deploy_command():
    out = subprocess.run([sys.executable, "-m", "pumpctl", "deploy", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sha256" not in out.stderr
    assert "--arch" in out.stdout and "port" in out.stdout


def test_make_deploy_runs_the_same_path(board):
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "deploy", "PORT=" + board.port, "RESET=soft"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified" in proc.stdout and "soft reset" in proc.stdout
    assert (board.fs / "lib" / "pico_board.mpy").exists()
    assert board.proc.wait(timeout=10) == 0
