"""Programmer side of the link: a byte stream to the pump (pyserial) and the
request/reply protocol over it: wire.py frames, sessions, message ids and
retransmission. docs/protocol.md is the specification."""
import fcntl
import os
import secrets
import struct
import termios
import time
from pathlib import Path
from typing import Any

import serial
import serial.tools.list_ports

from pumpctl import paths
from pumpctl.emulator import PORT_RECORD, running  # noqa: F401  (PORT_RECORD: the record's name, for tools)
from pumpctl.fw import link_commands as lc
from pumpctl.fw import wire

PICO_VID, PICO_PID = 0x2E8A, 0x0005
BAUD = 115200  # ignored by USB CDC and ptys; set for real UARTs
ROLES = {"patient": wire.ROLE_PATIENT, "clinician": wire.ROLE_CLINICIAN}
# Errors the pump sends for a frame it could not read: the request was lost.
_LINE_ERRORS = (wire.BAD_CRC, wire.BAD_FRAME)


class LinkError(RuntimeError):
    """The link failed: no port, no reply, garbled frames. Nothing is known to
    have changed; `request_sent`: a request had gone out (it may have been
    carried out)."""

    request_sent = False


class PumpGone(LinkError):
    """The port closed under pumpctl: the emulator stopped, the Pico was
    unplugged or reset. The message says so and what to do, not the serial
    library's words ("device reports readiness to read but returned no data")."""


def gone_message(port, emulator_state=None):
    """What a user reads when the pump at `port` stops answering: for the
    emulator running with state folder `emulator_state`, that it is not
    running any more and how to start it; else, how to reconnect a Pico."""
    if emulator_state is not None:
        state = paths.shown(emulator_state)
        return ("the pump is not answering: the emulator with state folder %s is not running any more (its port %s "
                "closed; its output is in %s): start it again with `pumpctl emulate --state %s` (`--virtual` for "
                "virtual time) or `make run`, then check the pump with `pumpctl status`"
                % (state, port, paths.shown(Path(emulator_state) / "emulator.log"), state))
    if "://" in str(port):
        return ("the pump is not answering: the connection to %s closed: check that the pump (or the program "
                "serving it there) is still running, then run the command again" % port)
    return ("the pump is not answering: its port %s closed: for a Pico, check its USB cable and that it is powered "
            "(`pumpctl devices` lists the pumps pumpctl can reach); for an emulator, start it again with `pumpctl "
            "emulate` or `make run`; then check the pump with `pumpctl status`" % port)


class AuthError(RuntimeError):
    """Authentication failed: no key, wrong key, locked out, not provisioned."""


class PumpError(RuntimeError):
    """The pump refused a request with a typed error reply."""

    def __init__(self, reply, trusted=True):
        self.code = reply.get("code")
        self.name = reply.get("name") or wire.error_name(self.code)
        self.reason = str(reply.get("reason", ""))
        self.limit = reply.get("limit")
        self.reply = reply
        self.trusted = trusted  # False: an unauthenticated error frame, information only
        self.context: dict[str, Any] = {}  # what the programmer knew (drug, conc): to explain it in clinical units
        super().__init__("%s: %s" % (self.name, self.reason))


# -- finding and opening the port --------------------------------------------------
def emulator_port(state_dir=None):
    """The serial port of the emulator running with this state folder
    (default: paths.default_state()), or None."""
    rec = running(paths.default_state() if state_dir is None else state_dir)
    return rec["port"] if rec else None


def find_auto(state_dir=None):
    """A Pico on USB (2E8A:0005), else the emulator running with state_dir
    (default: $PUMPCTL_STATE, else run/ in the checkout, from any directory)."""
    state = paths.default_state() if state_dir is None else Path(state_dir)
    picos = sorted(p.device for p in serial.tools.list_ports.comports()
                   if p.vid == PICO_VID and p.pid == PICO_PID)
    if len(picos) > 1:
        raise LinkError("several pumps on USB (%s): choose one with --port" % ", ".join(picos))
    if picos:
        return picos[0]
    port = emulator_port(state)
    if port:
        return port
    raise LinkError("no pump found: no Pico on USB (2E8A:0005) and no emulator running with state folder %s "
                    "(start one with `make run` or `pumpctl emulate`, or give --state DIR or --port PATH|URL|emulator)"
                    % paths.shown(state))


BUSY_WAIT_S = 10.0  # how long to wait for a port another program holds (parallel pumpctl commands queue)
_BUSY_POLL_S = 0.1


def open_port(spec, busy_wait_s=None):
    """A pyserial port for a device path or a URL (socket://, rfc2217://, ...).
    Device paths are opened exclusively: while another program holds one,
    pumpctl waits up to `busy_wait_s`, then says the pump is busy."""
    busy_wait_s = BUSY_WAIT_S if busy_wait_s is None else busy_wait_s
    deadline = time.monotonic() + busy_wait_s
    while True:
        try:
            return _open_once(spec)
        except _PortBusy:
            if time.monotonic() >= deadline:
                raise LinkError("pump busy: %s is in use by another program (another pumpctl, mpremote or a serial "
                                "terminal), still after %g s: wait for it to finish or close it, then retry"
                                % (spec, busy_wait_s))
            time.sleep(_BUSY_POLL_S)


class _PortBusy(Exception):
    pass


class ExclusivePort(serial.Serial):
    """A serial device no other program can open while pumpctl has it: the
    kernel's TIOCEXCL (a second open fails with EBUSY, for anyone without
    CAP_SYS_ADMIN), beside pyserial's flock (advisory: only other pumpctl and
    pyserial programs honour it). Cleared at close: on the emulator's
    pseudo-terminal the launcher keeps the other side open, so the flag would
    outlive us (were pumpctl killed, the launcher clears it: pumpctl.emulator)."""

    def open(self):
        super().open()
        try:
            if self.fd is not None:
                fcntl.ioctl(self.fd, termios.TIOCEXCL)
        except OSError:
            pass  # not a terminal: flock only

    def close(self):
        if self.is_open and self.fd is not None:
            try:
                fcntl.ioctl(self.fd, termios.TIOCNXCL)
            except OSError:
                pass
        super().close()


def _open_once(spec):
    try:
        if "://" in spec:
            return serial.serial_for_url(spec, baudrate=BAUD, timeout=0.05)
        if not os.path.exists(spec):
            raise LinkError("no such port: %s" % spec)
        return ExclusivePort(spec, BAUD, timeout=0.05, exclusive=True)
    except serial.SerialException as e:
        text = str(e)
        if "lock" in text or "Resource temporarily unavailable" in text or "busy" in text.lower():
            raise _PortBusy()
        raise LinkError("cannot open %s: %s" % (spec, text))
    except (ValueError, OSError) as e:
        raise LinkError("cannot open %s: %s" % (spec, e))


# -- the protocol ------------------------------------------------------------------------
class _NoReply(Exception):
    pass


class Client:
    """One programmer connection. request() sends a command and returns the
    reply payload, retransmitting with the same message id when no reply
    comes (the pump's reply cache makes that safe: never executed twice)."""

    def __init__(self, port, timeout=2.0, retries=2, gone=None):
        self.port = port
        self.gone = gone  # the message when the port closes under us (gone_message), None: the general one
        self.timeout = timeout
        self.retries = retries
        self.session = wire.Session()
        self.next_id = secrets.randbelow(wire.MSG_ID_MAX) + 1
        self.rx = bytearray()
        self.role: str | None = None
        self.session_id = None
        self.identity: dict[str, Any] = {}  # the IDENTIFY reply, once identified
        self.context: dict[str, Any] = {}  # the therapy in use ("drug", "conc"), given to a refusal
        self.idle_s: int | None = None  # the pump ends a session after this long without a frame
        self.last_exchange = time.monotonic()
        self._credentials: tuple[str, bytes] | None = None  # (role, key) of the login, to log in again
        self.sent = self.received = 0  # bytes, for the overhead figure
        self.payload_sent = self.payload_received = 0
        self._write(b"\x00")  # ends any partial frame at the pump

    # -- bytes ---------------------------------------------------------------
    def _write(self, data):
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError):
            raise PumpGone(self._gone_text()) from None
        self.sent += len(data)

    def _frames(self, deadline):
        # Yields complete frames as they arrive until the deadline.
        while True:
            i = self.rx.find(b"\x00")
            while i >= 0:
                frame = bytes(self.rx[:i + 1])
                del self.rx[:i + 1]
                if len(frame) > 1:
                    yield frame
                i = self.rx.find(b"\x00")
            if time.monotonic() >= deadline:
                return
            try:
                data = self.port.read(max(1, self.port.in_waiting))
            except (serial.SerialException, OSError):
                raise PumpGone(self._gone_text()) from None
            self.received += len(data)
            self.rx += data
            if len(self.rx) > 4 * wire.MAX_ENCODED:  # a stream without delimiters: not our pump
                del self.rx[:-wire.MAX_ENCODED]

    def _open(self, frame, session):
        # (type, id, payload, trusted) or None for a frame to ignore.
        try:
            t, mid, _, p = session.open(frame)
            return t, mid, p, True
        except wire.NotAuthenticated:
            # Untagged while we hold a session: an error the pump could not
            # seal (e.g. our session expired). Information only.
            try:
                t, _, mid, _, p = wire.peek(frame)
            except wire.WireError:
                return None
            return (t, mid, p, False) if t == wire.MSG_ERROR and isinstance(p, dict) else None
        except wire.WireError:
            return None  # damaged or forged: wait for the retransmission

    def _exchange(self, mtype, mid, payload, send_session, recv_session):
        frame = send_session.seal(mtype, mid, payload)
        self.payload_sent += len(wire.dumps(payload))
        self._write(frame)
        deadline = time.monotonic() + self.timeout
        for f in self._frames(deadline):
            r = self._open(f, recv_session)
            if r is None:
                continue
            t, rid, p, trusted = r
            if t == wire.MSG_ERROR and rid in (mid, 0) and isinstance(p, dict):
                if p.get("code") in _LINE_ERRORS:
                    raise _NoReply()  # our frame was damaged on the way: send again
                if rid == mid:
                    raise PumpError(p, trusted)
                continue
            if rid != mid:
                continue  # a late reply to an earlier request
            if t != mtype | wire.REPLY:
                raise LinkError("pump answered request 0x%02x with message type 0x%02x" % (mtype, t))
            self.payload_received += len(wire.dumps(p))
            self.last_exchange = time.monotonic()
            return p
        raise _NoReply()

    def _new_id(self):
        mid = self.next_id
        self.next_id = mid % wire.MSG_ID_MAX + 1  # 1..65535, never the previous one
        return mid

    def request(self, mtype, payload=None):
        mid = self._new_id()
        try:
            for _ in range(self.retries + 1):
                try:
                    reply = self._exchange(mtype, mid, payload, self.session, self.session)
                except _NoReply:
                    continue
                return self._completed_status(reply) if mtype == lc.STATUS else reply
            raise LinkError("no reply from the pump after %d tries (%s)" % (self.retries + 1, self._port_name()))
        except PumpError as e:
            e.context = dict(self.context)
            raise
        except LinkError as e:
            e.request_sent = True  # it may have reached the pump
            raise

    def _completed_status(self, st):
        # A STATUS too large for one frame comes "short" (firmware/link.py
        # _STATUS_SPARE): the fields it left out, from where the pump also gives them.
        if not isinstance(st, dict) or not st.pop("short", False):
            return st
        st.setdefault("capacity_nl", self.identity.get("reservoir_nl", 0))
        st.setdefault("priming_nl", None)
        if "max_daily_nl" not in st:
            st["max_daily_nl"] = None
            if self.role == "clinician":
                st["max_daily_nl"] = self.request(lc.THERAPY).get("max_daily_nl")
        return st

    def _gone_text(self):
        return self.gone or gone_message(self._port_name())

    def _port_name(self):
        return getattr(self.port, "portstr", None) or getattr(self.port, "name", "port")

    # -- identify, provision, log in --------------------------------------------
    def identify(self):
        p = self.request(lc.IDENTIFY, {"versions": [wire.PROTOCOL_VERSION]})
        if not isinstance(p, dict) or not isinstance(p.get("serial"), str) or p.get("version") != wire.PROTOCOL_VERSION:
            raise LinkError("pump's identity reply is malformed")
        self.identity = p
        return p

    def provision(self):
        """Asks a new pump for its keys; returns {"serial", "patient", "clinician"}."""
        p = self.request(lc.PROVISION, {"entropy": secrets.token_bytes(wire.KEY_LEN)})
        keys = (p.get("patient"), p.get("clinician")) if isinstance(p, dict) else (None, None)
        if not all(isinstance(k, bytes) and len(k) == wire.KEY_LEN for k in keys) or keys[0] == keys[1]:
            raise LinkError("pump's provisioning reply is malformed")
        return p

    def login(self, role_name, key):
        """Challenge-response for `role_name` with `key`; then every frame is sealed."""
        role = ROLES[role_name]
        plain = wire.Session()
        for _ in range(self.retries + 1):
            nonce_h = secrets.token_bytes(wire.NONCE_LEN)
            try:  # each attempt a new id: a late reply to an old HELLO is ignored
                hello = self._exchange(lc.HELLO, self._new_id(), {"role": role, "nonce": nonce_h}, plain, plain)
                break
            except _NoReply:
                continue
            except PumpError as e:
                raise AuthError(_auth_reason(e))
        else:
            raise LinkError("no reply from the pump to the login (%s)" % self._port_name())
        try:
            proof_h, skey = wire.host_verify(key, role, nonce_h, hello.get("nonce"), hello.get("proof"))
        except (wire.WireError, AttributeError):
            raise AuthError("pump %s did not prove it holds the %s key: the key store's key is wrong for it"
                            % (self.identity["serial"] if self.identity else "?", role_name))
        sealed = wire.Session(skey, role=role)
        try:
            # The PROOF names its HELLO (the pump's nonce): another host's HELLO meanwhile cannot fail it.
            p = self._exchange(lc.PROOF, self._new_id(), {"proof": proof_h, "nonce": hello.get("nonce")}, plain,
                               sealed)
        except PumpError as e:
            raise AuthError(_auth_reason(e))
        except _NoReply:
            raise LinkError("no reply from the pump to the login proof (%s)" % self._port_name())
        self.session = sealed
        self.role = role_name
        self.session_id = p.get("session")
        idle = p.get("idle_s") if isinstance(p, dict) else None
        self.idle_s = idle if isinstance(idle, int) and idle > 0 else None
        self._credentials = (role_name, key)
        return p

    STALE_MARGIN_S = 15  # log in again this long before the pump would end the session

    def session_stale(self):
        """True when the pump has (or is about to have) ended this session for
        idleness, judged by this computer's clock (a review left open)."""
        return (self.role is not None and self.idle_s is not None
                and time.monotonic() - self.last_exchange > self.idle_s - self.STALE_MARGIN_S)

    def relogin(self):
        """A new session with the same role and key (after the pump ended the last one)."""
        if self._credentials is None:
            raise AuthError("not logged in")
        self.role = None
        self.session = wire.Session()
        return self.login(*self._credentials)

    def logout(self):
        if self.role is not None:
            retries, timeout = self.retries, self.timeout
            self.retries, self.timeout = 0, min(timeout, 0.5)  # best effort: never a long wait
            try:
                self.request(lc.LOGOUT)
            except (PumpError, LinkError):
                pass  # the session times out on the pump anyway
            finally:
                self.retries, self.timeout = retries, timeout
            self.role = None
            self.session = wire.Session()

    def close(self):
        try:
            self.logout()
        finally:
            self.port.close()


def _auth_reason(e):
    if e.code == wire.LOCKED_OUT:
        return "locked out: %s" % e.reason
    if e.code == wire.FORBIDDEN and "provision" in e.reason:
        return "pump not provisioned: run `pumpctl provision` first"
    if e.code == wire.AUTH_FAILED:
        return "the pump refused the login (%s): wrong key?" % e.reason
    return "login refused: %s" % e


def unpack_log(recs):
    """Records of a LOG_READ reply -> [(seq, day, tod_s, type, a, b, c, d, text bytes)]."""
    out = []
    i = 0
    size = struct.calcsize(lc.LOG_RECORD)
    while i < len(recs):
        if i + size > len(recs):
            raise LinkError("event log reply truncated")
        r = struct.unpack_from(lc.LOG_RECORD, recs, i)
        n = r[-1]
        out.append(r[:-1] + (bytes(recs[i + size:i + size + n]),))
        i += size + n
    return out
