"""Starts the emulated pump: a pseudo-terminal for the programmer link, the
MicroPython unix port running boards/unix/main.py, and its bench port.

The unix port cannot open a pseudo-terminal itself, so this launcher makes
one, keeps the slave side open (so the pump never sees a hang-up while no
programmer is connected) and hands the master to the firmware by fd number.

The state folder (default: run/ in the checkout, paths.default_state()):
    flash.img      the pump's flash (littlefs2), kept between runs
    bench.sock     the bench port, while it runs
    port.json      {"port", "pid", "bench"} of the running emulator, for `--port auto`
    emulator.lock  held (flock) by the one launcher running this state
    emulator.log   everything the emulator printed after it started (a
                   traceback included), appended across restarts
One emulator per state folder: a second start is refused with the first's
pid and port, and touches nothing of it.
"""
import collections
import errno
import fcntl
import json
import os
import signal
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Callable

from pumpctl import nativecode, paths
from pumpctl.bench import BenchClient

IMAGE_NAME = "flash.img"
BENCH_NAME = "bench.sock"
PORT_RECORD = "port.json"
LOCK_NAME = "emulator.lock"
LOG_NAME = "emulator.log"
_TAIL_LINES = 200  # the emulator's last lines kept in memory
_ORPHAN_CHECK_S = 1.0  # how often a pty left exclusive by a killed programmer is released
RESET_MARKER = "reset"  # left by the emulator when its board resets itself
RESET_POWER_ON, RESET_WATCHDOG, RESET_SOFT = 0, 1, 2  # firmware/hal.py reset causes


class EmulatorError(RuntimeError):
    pass


class StateBusy(EmulatorError):
    """Another emulator runs with this state folder."""

    def __init__(self, state_dir, pid=None, port=None):
        self.state_dir, self.pid, self.port = Path(state_dir), pid, port
        super().__init__("an emulator is already running with state folder %s (pid %s, serial port %s): use it "
                         "(`pumpctl status --state %s`), stop it first (Ctrl-C in its terminal, or kill %s), "
                         "or give another --state" % (paths.shown(state_dir), pid or "?", port or "not yet open",
                                                      paths.shown(state_dir), pid or "its pid"))


def running(state_dir):
    """{"port", "pid", ...} of the emulator running with this state folder, or None."""
    try:
        rec = json.loads((Path(state_dir) / PORT_RECORD).read_text())
        os.kill(int(rec["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    port = rec.get("port")
    return rec if isinstance(port, str) and os.path.exists(port) else None


class Emulator:
    def __init__(self, state_dir, virtual=False, prescription=None, start_ticks=None, wdt_ms=8000, blank=False,
                 code=None):
        self.state_dir = Path(state_dir)
        self.code = code  # "native" or "source"; None: $PUMPCTL_EMULATOR_CODE, else native (nativecode.py)
        self.virtual = virtual
        self.blank = blank  # a new pump stays empty and unprogrammed (for the implant test)
        self.prescription = prescription
        self.start_ticks = start_ticks
        self.wdt_ms = wdt_ms
        self.proc = None
        self.code_dir: Path | None = None  # the native build the board runs (None: the sources)
        self.code_why: str | None = None  # why it runs the sources
        self._drainer: threading.Thread | None = None  # reads the board's output
        self.port = None
        self._slave = self._master = None
        self._lock_fd = None
        self._watcher = None
        self._pty_lock = threading.Lock()
        self.resets = []  # causes of the resets the board did by itself (each once it runs again)
        self.output = collections.deque(maxlen=_TAIL_LINES)  # the emulator's latest lines
        self.on_output: "Callable[[str], None] | None" = None  # called with each line printed after the start

    def code_shown(self) -> str:
        """What the board runs, for people: native code, or the sources and why."""
        if self.code_dir is not None:
            return "native (%s)" % paths.shown(self.code_dir)
        return "source (%s)" % (self.code_why or "asked for")

    @property
    def image(self) -> Path:
        return self.state_dir / IMAGE_NAME

    @property
    def bench_path(self) -> Path:
        return self.state_dir / BENCH_NAME

    @property
    def record_path(self) -> Path:
        return self.state_dir / PORT_RECORD

    def start(self, timeout=10.0):
        """Power on: a new pseudo-terminal and a pump booting from its flash image.
        StateBusy if another emulator runs with this state folder."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock()
        try:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            tty.setraw(self._master)
            # Non-blocking: the unix port's readinto() otherwise waits for a full buffer.
            os.set_blocking(self._master, False)
            self.port = os.ttyname(self._slave)
            self._spawn(RESET_POWER_ON, timeout)
            self._write_record()
        except BaseException:  # a failed start (or Ctrl-C during it) leaves nothing running
            self._kill_proc()
            self._close()
            self._unlock()
            raise
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        threading.Thread(target=self._release_orphaned_port, daemon=True).start()
        return self

    # -- one emulator per state folder ---------------------------------------------------
    def _lock(self):
        if self._lock_fd is not None:
            return
        path = self.state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise EmulatorError("cannot lock %s: %s" % (path, e.strerror))
            rec = running(self.state_dir) or {}
            pid = rec.get("pid")
            if pid is None:
                try:
                    pid = int(path.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pid = None
            raise StateBusy(self.state_dir, pid, rec.get("port"))
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._lock_fd = fd

    def _unlock(self):
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock; the file stays (removing it would race a new locker)

    def _write_record(self):
        tmp = self.record_path.with_name(PORT_RECORD + ".tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(json.dumps({"port": self.port, "pid": os.getpid(), "bench": str(self.bench_path.absolute()),
                                "virtual": self.virtual}) + "\n")
        os.replace(tmp, self.record_path)

    def _remove_record(self):
        # Only the lock holder gets here: never another emulator's record.
        if self._lock_fd is not None:
            try:
                self.record_path.unlink()
            except FileNotFoundError:
                pass

    def _spawn(self, cause, timeout=10.0):
        exe = paths.micropython()
        code = nativecode.code_dir(exe, self.code)  # the same modules as native code: faster in virtual time
        self.code_dir, self.code_why = code, None if code else nativecode.why_source(exe)
        cmd = [exe, str(paths.EMULATOR_MAIN)] + (["--code", str(code)] if code else []) + [
               "--link-fd", str(self._master),
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
        if self._master is None or self._lock_fd is None:
            raise EmulatorError("the emulator was stopped")  # while its board was resetting
        # Own session: a Ctrl-C at the terminal reaches pumpctl, which then
        # shuts the pump down cleanly, never the pump process directly. The
        # board inherits the state lock: were pumpctl killed, the folder stays
        # locked for as long as its pump runs.
        if self.image.exists():
            os.chmod(self.image, 0o600)  # an image made before images were private
        # umask 077: the flash image (it holds the pump's link keys, as a
        # board's flash does) and everything else the board writes is the
        # owner's only.
        proc = subprocess.Popen(cmd, pass_fds=(self._master, self._lock_fd), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True, umask=0o077)
        self.proc = proc
        out = proc.stdout
        assert out is not None
        line = out.readline()
        if "ready" not in line:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            rest = out.read()  # (the same reader as readline: it may hold the rest already)
            raise EmulatorError("emulator failed to start: %s" % failure_line(line + rest))
        # From now on its output is read as it comes: kept in emulator.log and
        # in memory, and never left to fill the pipe (that would stop the pump).
        self._drainer = threading.Thread(target=self._drain, args=(out,), daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + timeout
        while not self.bench_path.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                self._kill_proc()
                raise EmulatorError("emulator bench port did not appear")
            time.sleep(0.01)

    def _drain(self, out):
        try:
            fd = os.open(self.state_dir / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with open(fd, "a") as log:
                for line in out:
                    log.write(line)
                    log.flush()
                    self.output.append(line.rstrip("\n"))
                    if self.on_output is not None:
                        self.on_output(line.rstrip("\n"))
        except (OSError, ValueError):
            pass  # the pipe was closed at shutdown

    def wait_output(self, timeout):
        """Until all a stopped board printed is read and shown (its pipe closed), at most `timeout` s."""
        if self._drainer is not None:
            self._drainer.join(timeout)

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_NAME

    def exit_reason(self):
        """Why the emulator process stopped, from its last output (None while it runs)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc = self.proc.returncode
        if rc < 0:  # subprocess's way of saying a signal ended it
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = "signal %d" % -rc
            return "killed by %s: an unclean stop, as a power cut" % name
        return "exit status %d: %s" % (rc, failure_line("\n".join(self.output)))

    def _release_orphaned_port(self):
        # A programmer makes the pty exclusive (TIOCEXCL) and clears that at
        # close; one that was killed cannot, and the pty stays open on this
        # side, so the flag would shut every later programmer out. Its flock
        # went with it: a pty nobody has locked is made open to all again.
        while True:
            with self._pty_lock:  # the pty is not closed (and its fd reused) meanwhile
                fd = self._slave
                if fd is None:
                    return
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    pass  # a programmer holds it
                else:
                    try:
                        fcntl.ioctl(fd, termios.TIOCNXCL)
                    finally:
                        fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(_ORPHAN_CHECK_S)

    def _watch(self):
        # The board resetting itself (watchdog, soft reset): the emulator
        # writes the cause in a marker and dies; the board boots again.
        while self._master is not None:
            proc = self.proc
            if proc is None:
                return
            proc.wait()
            marker = self.state_dir / RESET_MARKER
            if self._master is None or not marker.exists():
                return
            cause = int(marker.read_text().split()[0])
            marker.unlink()
            try:
                self._spawn(cause)
            except EmulatorError:
                self.resets.append(cause)
                return
            # Counted once the board runs again: whoever waits for the reset
            # then finds its new bench port, not the dead board's socket file.
            self.resets.append(cause)

    @property
    def watchdog_resets(self):
        return self.resets.count(RESET_WATCHDOG)

    def bench(self) -> BenchClient:
        return BenchClient(str(self.bench_path))

    def stop(self, timeout=10.0):
        """Clean shutdown: the pump saves its state to flash."""
        master, self._master = self._master, None  # no watchdog restart
        try:
            if self.proc and self.proc.poll() is None:
                try:
                    with self.bench() as b:
                        b.call("shutdown")
                    self.proc.wait(timeout)
                except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired):
                    self._kill_proc()
        finally:
            self._release(master)

    def kill(self):
        """Power cut from outside: SIGKILL, nothing saved."""
        master, self._master = self._master, None  # no watchdog restart
        try:
            self._kill_proc()
        finally:
            self._release(master)

    def _release(self, master):
        # The emulator is gone: its pty, port record and lock go with it.
        self._master = master
        self._close()
        self._remove_record()
        self._unlock()

    def _kill_proc(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def _close(self):
        with self._pty_lock:
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


def failure_line(output: str) -> str:
    """The line that says why the unix port stopped (its exception's last
    line), not its traceback."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "  File "))]
    return useful[-1] if useful else "no output (exit without a message)"
