"""Host side of the model campaign's bench: starts tests/model/pump_harness.py
under the MicroPython unix port and talks JSON lines to it.

Replies are the stdout lines prefixed "@@ "; any other stdout line (MicroPython
prints exceptions raised in finalisers there) is kept as noise for reports.
"""
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the project's MicroPython finder
from mprun import micropython  # noqa: E402

HARNESS = HERE / "pump_harness.py"
PREFIX = b"@@ "
TIMEOUT_S = 300  # one request; a long advance at the highest rate takes seconds
HEAP = "16M"


class HarnessDied(RuntimeError):
    """The MicroPython process ended or stopped answering."""


class Harness:
    def __init__(self):
        # The image on tmpfs when there is one: every flash write is flushed.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="pump-model-", dir=shm)
        self.image = os.path.join(self.dir, "flash.img")
        self.err_path = os.path.join(self.dir, "harness.err")
        self.proc = None
        self.buf = b""
        self.noise = []

    def start(self):
        self.stop()
        self.err = open(self.err_path, "wb")
        # MODEL_FIRMWARE_ROOT: run another firmware tree (firmware/, boards/unix/).
        root = os.environ.get("MODEL_FIRMWARE_ROOT")
        self.proc = subprocess.Popen([micropython(), "-X", "heapsize=" + HEAP, str(HARNESS)] + ([root] if root else []),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.buf = b""

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.err.close()

    def new(self, mode):
        """A fresh pump on a fresh image: "implant" (blank, as from the factory) or
        "demo" (the emulator's built-in filled and programmed pump)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        return self.request({"op": "new", "image": self.image, "mode": mode})

    def request(self, req):
        if self.proc is None or self.proc.poll() is not None:
            raise HarnessDied(self._death("not running"))
        try:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            raise HarnessDied(self._death("stdin closed"))
        return json.loads(self._reply())

    def _reply(self):
        fd = self.proc.stdout.fileno()
        while True:
            nl = self.buf.find(b"\n")
            while nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                if line.startswith(PREFIX):
                    return line[len(PREFIX):]
                self.noise = (self.noise + [line.decode(errors="replace")])[-20:]
                nl = self.buf.find(b"\n")
            ready, _, _ = select.select([fd], [], [], TIMEOUT_S)
            if not ready:
                self.proc.kill()
                raise HarnessDied(self._death("no reply in %d s" % TIMEOUT_S))
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self.proc.wait()
                raise HarnessDied(self._death("exit code %s" % self.proc.returncode))
            self.buf += chunk

    def _death(self, why):
        try:
            err = Path(self.err_path).read_text(errors="replace")[-2000:]
        except OSError:
            err = ""
        return "harness %s; stderr: %s; last stdout noise: %s" % (why, err, "\n".join(self.noise[-5:]))

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.request({"op": "quit"})
            except HarnessDied:
                pass
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
