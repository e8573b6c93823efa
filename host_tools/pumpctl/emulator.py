"""Starts the emulated pump: a pseudo-terminal for the programmer link, the
MicroPython unix port running boards/unix/main.py, and its bench port.

The unix port cannot open a pseudo-terminal itself, so this launcher makes
one, keeps the slave side open (so the pump never sees a hang-up while no
programmer is connected) and hands the master to the firmware by fd number.
"""
import json
import os
import signal
import subprocess
import time
import tty
from pathlib import Path

from pumpctl import paths
from pumpctl.bench import BenchClient

IMAGE_NAME = "flash.img"
BENCH_NAME = "bench.sock"


class EmulatorError(RuntimeError):
    pass


class Emulator:
    def __init__(self, state_dir, virtual=False, prescription=None, start_ticks=None):
        self.state_dir = Path(state_dir)
        self.virtual = virtual
        self.prescription = prescription
        self.start_ticks = start_ticks
        self.proc = None
        self.port = None
        self._slave = None

    @property
    def image(self) -> Path:
        return self.state_dir / IMAGE_NAME

    @property
    def bench_path(self) -> Path:
        return self.state_dir / BENCH_NAME

    def start(self, timeout=10.0):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(master)
        # Non-blocking: the unix port's readinto() otherwise waits for a full buffer.
        os.set_blocking(master, False)
        self.port = os.ttyname(self._slave)
        cmd = [paths.micropython(), str(paths.EMULATOR_MAIN), "--link-fd", str(master),
               "--image", str(self.image), "--bench", str(self.bench_path)]
        if self.virtual:
            cmd.append("--virtual")
        if self.prescription:
            cmd += ["--prescription", json.dumps(self.prescription)]
        if self.start_ticks is not None:
            cmd += ["--start-ticks", str(self.start_ticks)]
        if self.bench_path.exists():
            self.bench_path.unlink()
        # Own session: a Ctrl-C at the terminal reaches pumpctl, which then
        # shuts the pump down cleanly, never the pump process directly.
        self.proc = subprocess.Popen(cmd, pass_fds=(master,), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        os.close(master)
        line = self.proc.stdout.readline()
        if "ready" not in line:
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            self.kill()
            raise EmulatorError("emulator failed to start:\n" + line + rest)
        deadline = time.monotonic() + timeout
        while not self.bench_path.exists():
            if time.monotonic() > deadline:
                self.kill()
                raise EmulatorError("emulator bench port did not appear")
            time.sleep(0.01)
        return self

    def bench(self) -> BenchClient:
        return BenchClient(self.bench_path)

    def stop(self, timeout=10.0):
        """Clean shutdown: the pump saves its state to flash."""
        if self.proc and self.proc.poll() is None:
            try:
                with self.bench() as b:
                    b.call("shutdown")
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        self._close()

    def kill(self):
        """Power cut from outside: SIGKILL, nothing saved."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close()

    def _close(self):
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
