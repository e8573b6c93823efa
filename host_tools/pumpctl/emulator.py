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
import threading
import time
import tty
from pathlib import Path

from pumpctl import paths
from pumpctl.bench import BenchClient

IMAGE_NAME = "flash.img"
BENCH_NAME = "bench.sock"
RESET_MARKER = "reset"  # left by the emulator when its board resets itself
RESET_POWER_ON, RESET_WATCHDOG, RESET_SOFT = 0, 1, 2  # firmware/hal.py reset causes


class EmulatorError(RuntimeError):
    pass


class Emulator:
    def __init__(self, state_dir, virtual=False, prescription=None, start_ticks=None, wdt_ms=8000, blank=False):
        self.state_dir = Path(state_dir)
        self.virtual = virtual
        self.blank = blank  # a new pump stays empty and unprogrammed (for the implant test)
        self.prescription = prescription
        self.start_ticks = start_ticks
        self.wdt_ms = wdt_ms
        self.proc = None
        self.port = None
        self._slave = self._master = None
        self.resets = []  # causes of the resets the board did by itself

    @property
    def image(self) -> Path:
        return self.state_dir / IMAGE_NAME

    @property
    def bench_path(self) -> Path:
        return self.state_dir / BENCH_NAME

    def start(self, timeout=10.0):
        """Power on: a new pseudo-terminal and a pump booting from its flash image."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        # Non-blocking: the unix port's readinto() otherwise waits for a full buffer.
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._spawn(RESET_POWER_ON, timeout)
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        return self

    def _spawn(self, cause, timeout=10.0):
        cmd = [paths.micropython(), str(paths.EMULATOR_MAIN), "--link-fd", str(self._master),
               "--image", str(self.image), "--bench", str(self.bench_path),
               "--reset-cause", str(cause), "--wdt-ms", str(self.wdt_ms)]
        if self.virtual:
            cmd.append("--virtual")
        if self.blank:
            cmd.append("--blank")
        if self.prescription:
            cmd += ["--prescription", json.dumps(self.prescription)]
        if self.start_ticks is not None:
            cmd += ["--start-ticks", str(self.start_ticks)]
        if self.bench_path.exists():
            self.bench_path.unlink()
        # Own session: a Ctrl-C at the terminal reaches pumpctl, which then
        # shuts the pump down cleanly, never the pump process directly.
        proc = subprocess.Popen(cmd, pass_fds=(self._master,), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        line = proc.stdout.readline()
        if "ready" not in line:
            rest = proc.stdout.read() if proc.poll() is not None else ""
            proc.kill()
            self.proc = proc
            self._close()
            raise EmulatorError("emulator failed to start:\n" + line + rest)
        deadline = time.monotonic() + timeout
        while not self.bench_path.exists():
            if time.monotonic() > deadline:
                proc.kill()
                raise EmulatorError("emulator bench port did not appear")
            time.sleep(0.01)
        self.proc = proc

    def _watch(self):
        # The board resetting itself (watchdog, soft reset): the emulator
        # writes the cause in a marker and dies; the board boots again.
        while self._master is not None:
            proc = self.proc
            proc.wait()
            marker = self.state_dir / RESET_MARKER
            if self._master is None or not marker.exists():
                return
            cause = int(marker.read_text().split()[0])
            marker.unlink()
            proc.stdout.close()
            self.resets.append(cause)
            try:
                self._spawn(cause)
            except EmulatorError:
                return

    @property
    def watchdog_resets(self):
        return self.resets.count(RESET_WATCHDOG)

    def bench(self) -> BenchClient:
        return BenchClient(self.bench_path)

    def stop(self, timeout=10.0):
        """Clean shutdown: the pump saves its state to flash."""
        master, self._master = self._master, None  # no watchdog restart
        if self.proc and self.proc.poll() is None:
            try:
                with self.bench() as b:
                    b.call("shutdown")
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._master = master
        self._close()

    def kill(self):
        """Power cut from outside: SIGKILL, nothing saved."""
        master, self._master = self._master, None  # no watchdog restart
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._master = master
        self._close()

    def _close(self):
        for fd in (self._slave, self._master):
            if fd is not None:
                os.close(fd)
        self._slave = self._master = None
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
