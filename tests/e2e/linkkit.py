"""Shared set-up for the programmer-link end-to-end tests: a provisioned
virtual-time emulator, pumpctl run in-process, and raw frames on the pty."""
import time

from pumpctl import cli
from pumpctl import session
from pumpctl.emulator import Emulator
from pumpctl.fw import link_commands as lc
from pumpctl.fw import wire
from pumpctl.keystore import KeyStore
from pumpctl.link import Client, open_port, unpack_log

DAY_MS = 86_400_000


class Pump:
    """A provisioned emulated pump and the key store that holds its keys."""

    def __init__(self, tmp_path, **emulator_options):
        # emulator_options: Emulator's own (blank=True, prescription=...).
        self.emu = Emulator(tmp_path / "pump", virtual=True, **emulator_options).start()
        self.keystore = tmp_path / "keys.json"
        c = self.client()
        try:
            session.provision_if_new(c, KeyStore(self.keystore))
            self.serial = c.identify()["serial"]
        finally:
            c.close()

    @property
    def port(self):
        return self.emu.port

    def client(self, role=None, timeout=2.0):
        c = Client(open_port(self.port), timeout=timeout)
        c.identify()
        if role:
            c.login(role, self.key(role))
        return c

    def key(self, role):
        return KeyStore(self.keystore).get(self.serial, role)

    def call(self, mtype, payload=None, role="clinician"):
        c = self.client(role)
        try:
            return c.request(mtype, payload)
        finally:
            c.close()

    def therapy(self):
        return self.call(lc.THERAPY)

    def identify(self):
        c = self.client()
        try:
            return c.identify()
        finally:
            c.close()

    def log(self, first=1):
        c = self.client("clinician")
        try:
            out, nxt = [], first
            while True:
                p = c.request(lc.LOG_READ, {"first": nxt, "max": lc.LOG_MAX_PER_READ})
                out += unpack_log(p["recs"])
                if p["next"] > p["last_seq"] or p["next"] <= nxt:
                    return out
                nxt = p["next"]
        finally:
            c.close()

    def last_seq(self):
        c = self.client("clinician")
        try:
            return c.request(lc.LOG_READ, {"first": 1, "max": 1})["last_seq"]
        finally:
            c.close()

    def bench(self, cmd, **kw):
        with self.emu.bench() as b:
            return b.call(cmd, **kw)

    def pumpctl(self, capsys, *argv, keystore=None):
        """Runs pumpctl in this process: (exit code, stdout, stderr)."""
        capsys.readouterr()
        rc = cli.main(list(argv) + ["--port", self.port, "--keystore", str(keystore or self.keystore)])
        out, err = capsys.readouterr()
        return rc, out, err

    def stop(self):
        self.emu.stop()


def rejections(records, code):
    return [r for r in records if r[3] == lc.EV_REJECTED and r[4] == code]


def of_type(records, etype, text=None):
    return [r for r in records if r[3] == etype and (text is None or r[8].startswith(text))]


class Raw:
    """Raw frames on the pump's port, next to (or without) a Client session."""

    def __init__(self, client):
        self.c = client

    def send(self, frame):
        self.c._write(frame)

    def replies(self, timeout=1.0, want=1):
        # Decoded reply frames (type, id, payload, sealed) that arrive in time.
        out = []
        for f in self.c._frames(time.monotonic() + timeout):
            r = self.c._open(f, self.c.session)
            if r is None:
                try:
                    t, _, mid, _, p = wire.peek(f)
                    r = (t, mid, p, False)
                except wire.WireError:
                    continue
            out.append(r)
            if len(out) >= want:
                break
        return out

    def error(self, frame, timeout=1.0):
        rs = self.replies(timeout)
        assert rs and rs[0][0] == wire.MSG_ERROR, rs
        return rs[0][2]


def wait_for(predicate, timeout=15.0):
    # Polls predicate until it holds (True) or the timeout passes (False).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
