# Programmer link, pump side: frames from a byte transport, sessions and
# roles, dispatch to the Pump API, the reply cache, authentication back-off
# and the audit log. The codec is wire.py; the command table, shared with the
# host tool, is link_commands.py; docs/protocol.md is the specification.
#
# Runs in the main loop between ticks: poll() handles a bounded number of
# frames, never blocks and never raises, so nothing that arrives on the link
# can stop or delay therapy. Transport: read_into(buf) -> int (non-blocking,
# 0 when nothing) and write(data).
import os
import struct
from binascii import crc32
from hashlib import sha256

from micropython import const

import implant
import link_commands as lc
import prescription
import wire
from limits import LimitError, is_plain_text
from units import S_PER_DAY, dose_to_volume_nl, volume_to_dose_ng

_RX_CHUNK = const(128)  # bytes taken from the transport at a time
_FRAMES_PER_POLL = const(4)  # bounds the time one poll() takes: frames handled...
_READS_PER_POLL = const(2)
_HANDSHAKES = const(4)  # logins under way at once (each HELLO its own)  # ...and transport reads (bytes framed) per poll, garbage included
_INT_MAX = const(0x3FFFFFFF)  # argument integers stay small ints on the RP2040
# STATUS fields a reply too large for one frame leaves out: the capacity is
# IDENTIFY's reservoir_nl, the 24-hour maximum THERAPY's max_daily_nl, and
# the priming volume so far the log's (docs/protocol.md, STATUS).
_STATUS_SPARE = ("capacity_nl", "max_daily_nl", "priming_nl")
_LOG_BYTES = const(380)  # packed log records per reply: with the map around them <= 448
_KEYS_VERSION = const(1)
_KEYS_NAME = "keys"
# The back-off survives a reset: (failures, lockout s) per role, written only
# when a lockout begins and when a login ends one (docs/protocol.md §14).
_LOCKOUT_NAME = "lockout"
_LOCKOUT_VERSION = const(1)
_LOCKOUT_FORMAT = "<HHHH"  # patient failures, lockout s; clinician failures, lockout s
_KEYS_LEN = const(65)  # provisioned flag, patient key, clinician key
_REJECT_BURST = const(8)  # rejection records logged back to back ...
_REJECT_REFILL_S = const(300)  # ... then one per 5 min; the rest are counted
_DRUG_NAME_MAX = const(24)
_REASON_MAX = const(100)  # wire.error_reply cuts reasons here

# Refusal reasons of Pump.demand_bolus(), by scheduler.DEMAND_* code.
_DEMAND_LIMITS = ("", "demand_not_prescribed", "demand_lockout", "demand_daily_max",
                  "demand_bolus_active", "demand_not_running")
_DEMAND_REASONS = ("", "no demand bolus is prescribed", "lockout: too soon after the last demand bolus",
                   "maximum demand boluses in 24 hours reached", "another bolus is in progress",
                   "therapy is not running")


class Refusal(Exception):
    # A request refused with a wire error code; `extra` goes into the reply.
    def __init__(self, code, reason, extra=None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.extra = extra


def _bad(reason):
    return Refusal(wire.BAD_ARGS, reason)


# -- argument checking: exact types, bounded integers, no unknown keys --------
def _args(p, allowed):
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise _bad("arguments must be a map")
    for k in p:
        if k not in allowed:
            raise _bad("unknown argument %r" % (k,))
    return p


def _int(p, key, lo=0, hi=_INT_MAX):
    if key not in p:
        raise _bad("missing argument %r" % key)
    v = p[key]
    if type(v) is not int:
        raise _bad("%r must be an integer" % key)
    if not lo <= v <= hi:
        raise _bad("%r = %d outside %d..%d" % (key, v, lo, hi))
    return v


def _check(p, key="check"):
    # Dry run flag of program/refill/bolus/prime: validate and report, change
    # nothing; or the override of a soft limit (program/refill/bolus).
    v = p.get(key, False)
    if v is not True and v is not False:
        raise _bad("'%s' must be true or false" % key)
    return v


def _row(v, n, what):
    if not isinstance(v, list) or len(v) != n:
        raise _bad("%s must be a list of %d integers" % (what, n))
    for x in v:
        if type(x) is not int or not 0 <= x <= _INT_MAX:
            raise _bad("%s must be a list of %d integers 0..%d" % (what, n, _INT_MAX))
    return v


def _rows(p, key, n):
    v = p.get(key, [])
    if not isinstance(v, list):
        raise _bad("%r must be a list" % key)
    return [_row(r, n, key) for r in v]


def rx_from_wire(p):
    # Compact prescription of the link -> Pump.program()'s dict. Shape only:
    # every limit is checked by prescription.validate().
    p = _args(p, ("drug", "conc", "steps", "periodic", "demand"))
    drug = p.get("drug")
    if not isinstance(drug, str) or not 0 < len(drug) <= _DRUG_NAME_MAX:
        raise _bad("'drug' must name a drug")
    rx = {"drug": drug, "conc_ng_ml": _int(p, "conc", 1),
          "steps": [{"start_s": s, "dose_ng_day": d} for s, d in _rows(p, "steps", 2)]}
    per = _rows(p, "periodic", 3)
    if per:
        rx["periodic"] = [{"time_s": t, "dose_ng": d, "duration_s": s} for t, d, s in per]
    dem = p.get("demand")
    if dem is not None:
        d, s, lock, n = _row(dem, 4, "demand")
        rx["demand"] = {"dose_ng": d, "duration_s": s, "lockout_s": lock, "max_per_day": n}
    return rx


rx_to_wire = prescription.compact


def _flash_dir(board):
    try:
        return board.flash_dir()
    except NotImplementedError:
        return None


class KeyStore:
    # The pump's link credentials: one random 32-byte key per role, created
    # once at provisioning, kept in a record on flash (in RAM without flash).
    # Record: provisioned flag (1), patient key (32), clinician key (32),
    # serial (UTF-8). An unreadable record locks the link rather than letting
    # anyone provision the pump again.
    def __init__(self, directory):
        self.keys = None
        self.serial = ""
        self.broken = False
        self.store = None
        if directory:
            try:
                from records import RecordStore

                self.store = RecordStore(directory)
                rec = self.store.load(_KEYS_NAME)
                if rec is not None:
                    self._decode(rec)
                elif self.store.corrupt_found:
                    self.broken = True
            except Exception:  # the pump boots whatever the flash holds
                self.broken = True

    def _decode(self, rec):
        version, p = rec
        if version != _KEYS_VERSION or len(p) < _KEYS_LEN or p[0] > 1:
            self.broken = True
            return
        self.serial = bytes(p[_KEYS_LEN:]).decode()  # invalid UTF-8 raises: broken
        if p[0]:
            self.keys = {wire.ROLE_PATIENT: bytes(p[1:33]), wire.ROLE_CLINICIAN: bytes(p[33:65])}

    def save(self, keys, serial):
        if keys is None:
            body = b"\x00" + bytes(64)
        else:
            body = b"\x01" + keys[wire.ROLE_PATIENT] + keys[wire.ROLE_CLINICIAN]
        if self.store is not None:
            self.store.save(_KEYS_NAME, _KEYS_VERSION, body + serial.encode())
        self.keys = keys
        self.serial = serial


class Link:
    def __init__(self, pump, transport, serial="", rng=None):
        # `serial`: the board's identity for a pump that has none yet (first
        # boot); once stored, the stored one wins.
        self.pump = pump
        self.io = transport
        self.rng = rng or os.urandom
        flash = _flash_dir(pump.board)
        self.keys = KeyStore(flash + "/link" if flash else None)
        dev = pump.device
        if self.keys.serial and (self.provisioned() or not dev["serial"]):
            dev["serial"] = self.keys.serial  # the identity the keys were issued to
        elif not dev["serial"]:
            dev["serial"] = serial
        if not self.keys.serial and dev["serial"] and not self.keys.broken:
            try:
                self.keys.save(self.keys.keys, dev["serial"])
            except OSError:
                pass  # saved again with the keys at provisioning
        self.plain = wire.Session(pump=True)  # identify and handshake
        self.session = None  # wire.Session once authenticated
        self.sid = 0  # session id: sequence number of its AUTH_OK record
        self.last_rx_s = 0
        # Handshakes under way, one per HELLO: [role, nonce_h, nonce_p, expiry, number]
        # or None. A PROOF names its own (by the pump's nonce), so a HELLO
        # from another host cannot make it fail; the oldest gives way.
        self.pending = [None] * _HANDSHAKES
        self.attempts = 0  # HELLOs so far: the latest attempt is the highest
        self.failures = [0, 0, 0]  # consecutive failed proofs, per role
        self.locked_until = [0, 0, 0]
        self._restore_lockout()
        self.cache = None  # (id, type, payload digest, reply type, reply)
        # The last request of each role's last session, its reply and when:
        # a host that lost the reply, logs in again and retransmits the same
        # request (same id) within REPLY_KEEP_S gets that reply, never a
        # second execution.
        self.last_by_role = [None, None, None]
        self.prov_reply = None  # (id, entropy, reply, expiry)
        self.tokens = _REJECT_BURST
        self.token_s = 0
        self.suppressed = 0  # rejections not logged since the last record
        self.dirty = False  # a write failed: flush the receiver before the next frame
        self.deframer = wire.Deframer()
        self.rxbuf = bytearray(_RX_CHUNK)
        self.rn = 0
        self.ri = 0
        self.handlers = {
            lc.IDENTIFY: self._identify, lc.LOGOUT: self._logout, lc.STATUS: self._status, lc.THERAPY: self._therapy,
            lc.ALARMS: self._alarms, lc.LOG_READ: self._log_read, lc.PROGRAM: self._program,
            lc.BOLUS: self._bolus, lc.PRIME: self._prime, lc.DEMAND: self._demand,
            lc.SUSPEND: self._suspend, lc.RESUME: self._resume, lc.REFILL: self._refill,
            lc.ACK_ALARM: self._ack, lc.SET_CLOCK: self._set_clock, lc.SET_LOW: self._set_low,
            lc.SET_ALARM_DATE: self._set_alarm_date, lc.DIARY: self._diary, lc.IMPLANT: self._implant,
            lc.MAINTENANCE: self._maintenance, lc.ROTATE_KEYS: self._rotate_keys,
        }
        self.after_reply = None  # board action run once the reply is on its way

    # Methods, not properties: a class with a property makes every attribute
    # store look for a setter first (MicroPython), and poll() stores many.
    def backlog(self):
        # Bytes read from the transport and not yet framed: poll() again.
        return self.ri < self.rn

    def provisioned(self):
        return self.keys.keys is not None

    # -- the main loop's entry point ------------------------------------------
    def poll(self):
        # Handles up to _FRAMES_PER_POLL frames; returns how many. Cheap when
        # nothing has arrived: call it every loop iteration.
        done = reads = 0
        try:
            self.expire()
            while done < _FRAMES_PER_POLL:
                if self.ri >= self.rn:
                    if reads == _READS_PER_POLL:
                        break  # the rest waits for the next pass: the tick comes first
                    reads += 1
                    self.rn = self.io.read_into(self.rxbuf) or 0
                    self.ri = 0
                    if not self.rn:
                        break
                frame = self._next_frame()
                if frame is not None:
                    done += 1
                    self._frame(frame)
        except Exception as e:  # the link must never stop the pump
            self._internal(e)
        return done

    def _next_frame(self):
        buf, push = self.rxbuf, self.deframer.push
        while self.ri < self.rn:
            b = buf[self.ri]
            self.ri += 1
            try:
                frame = push(b)
            except wire.WireError as e:  # an oversize frame was dropped
                self._refuse(self._reply_session(), 0, -1, e.code, str(e))
                return None
            if frame is not None:
                return frame
        return None

    def expire(self):
        now = self.pump.now_s()
        c = self.pump.clock
        self.pump.log.roll(c.day, c.tod_s)  # an hour's folded counts are written when it ends
        if self.session is not None and now - self.last_rx_s >= lc.IDLE_TIMEOUT_S:
            self._end(lc.END_IDLE)
        pend = self.pending
        for i in range(_HANDSHAKES):
            if pend[i] is not None and now > pend[i][3]:
                pend[i] = None
        if self.prov_reply is not None and now > self.prov_reply[3]:
            self.prov_reply = None

    # -- one frame ---------------------------------------------------------
    def _frame(self, frame):
        sess = self.session
        try:
            if sess is not None:
                try:
                    mtype, mid, _, payload = sess.open(frame)
                except wire.NotAuthenticated:
                    # Untagged in a session: identify or a new handshake. The
                    # session stays until a new one is established.
                    sess = self.plain
                    mtype, mid, _, payload = sess.open(frame)
            else:
                sess = self.plain
                mtype, mid, _, payload = sess.open(frame)
        except wire.WireError as e:
            self._refuse(self._reply_session(), _frame_id(frame), -1, e.code, str(e))
            return
        if mid == 0:  # id 0 names no request: errors with it answer frames that could not be read
            self._refuse(sess, 0, mtype, wire.BAD_FRAME, "message id 0 is reserved: use 1..65535")
            return
        if sess is self.session:
            self.last_rx_s = self.pump.now_s()
        entry = lc.COMMANDS.get(mtype)
        if sess is self.plain:
            if entry is None or not entry[1] & lc.R_NONE:
                self._refuse(sess, mid, mtype, wire.NOT_AUTHENTICATED, "log in first: command needs a session")
                return
            self._plain_command(mtype, mid, payload)
            return
        if entry is None:
            self._refuse(sess, mid, mtype, wire.UNKNOWN_COMMAND, "unknown command 0x%02x" % mtype)
            return
        if not entry[1] & (1 << sess.role):
            if entry[2]:  # an attempt on therapy by the wrong role: audited, dry run or not
                self._audit(sess, mtype, wire.FORBIDDEN, entry[0])
            self._refuse(sess, mid, mtype, wire.FORBIDDEN, "%s not allowed for the %s role"
                         % (entry[0], lc.ROLE_NAMES[sess.role]))
            return
        self._session_command(sess, mtype, mid, payload, entry)

    def _session_command(self, sess, mtype, mid, payload, entry):
        name, _, audited = entry
        if audited and isinstance(payload, dict) and (
                payload.get("check") is True or (mtype == lc.IMPLANT and payload.get("step") in lc.IMPLANT_POLLS)):
            audited = False  # a dry run or a test poll changes nothing (a test's result has its own record)
        # Reply cache: a retransmitted request gets its first reply again and
        # is never executed twice; a reused id with another request is refused.
        digest = sha256(wire.dumps(payload)).digest()
        c = self.cache
        if c is None and sess is self.session:
            c = self._earlier_reply(sess.role, mid, mtype, digest)
        if c is not None and c[0] == mid:
            if c[1] == mtype and c[2] == digest:
                self._send(sess, c[3], mid, c[4])
            else:
                if audited:
                    self._audit(sess, mtype, wire.BAD_ARGS, name)
                self._refuse(sess, mid, mtype, wire.BAD_ARGS, "message id %d reused for another request" % mid)
            return
        rtype = mtype | wire.REPLY
        code = 0
        try:
            reply = self.handlers[mtype](payload)
        except Exception as e:
            code, reply = self._error_payload(e)
            rtype = wire.MSG_ERROR
        if audited:
            self._audit(sess, mtype, code, name)
        elif code:
            self._log_rejection(code, mtype)
        if sess is self.session:  # still the session (logout ends it)
            self.cache = (mid, mtype, digest, rtype, reply)
            self.last_by_role[sess.role] = (mid, mtype, digest, rtype, reply, self.pump.now_s())
        self._send(sess, rtype, mid, reply)
        action, self.after_reply = self.after_reply, None
        if action is not None:
            action()

    def _plain_command(self, mtype, mid, payload):
        sess = self.plain
        try:
            if mtype == lc.IDENTIFY:
                reply = self._identify(payload)
            elif mtype == lc.HELLO:
                reply = self._hello(payload)
            elif mtype == lc.PROVISION:
                reply = self._provision(payload, mid)
            else:  # PROOF: the acceptance is sealed under the new session
                reply = self._proof(payload)
                sess = self.session
        except Exception as e:
            code, reply = self._error_payload(e)
            if code != wire.AUTH_FAILED or mtype != lc.PROOF:  # failed proofs have their own record
                self._log_rejection(code, mtype)
            self._send(sess, wire.MSG_ERROR, mid, reply)
            return
        self._send(sess, mtype | wire.REPLY, mid, reply)

    def _error_payload(self, e):
        if isinstance(e, LimitError):
            return wire.LIMIT, wire.error_reply(wire.LIMIT, _short(e.message), e.limit)
        if isinstance(e, Refusal):
            reply = wire.error_reply(e.code, e.reason)
            if e.extra:
                reply.update(e.extra)
            return e.code, reply
        if isinstance(e, wire.WireError):
            return e.code, e.reply()
        self._internal(e)
        return wire.INTERNAL, wire.error_reply(wire.INTERNAL, "internal error: %s" % type(e).__name__)

    # -- replies -----------------------------------------------------------
    def _reply_session(self):
        return self.session if self.session is not None else self.plain

    def _refuse(self, sess, mid, mtype, code, reason):
        self._log_rejection(code, mtype)
        self._send(sess, wire.MSG_ERROR, mid, wire.error_reply(code, reason))

    def _send(self, sess, mtype, mid, payload):
        try:
            frame = sess.seal(mtype, mid, payload)
        except wire.WireError as e:
            frame = sess.seal(wire.MSG_ERROR, mid, wire.error_reply(wire.INTERNAL, "reply not sent: %s" % e))
        try:
            if self.dirty:  # a frame was cut short: end it at the receiver
                self.io.write(b"\x00")
            n = self.io.write(frame)
            self.dirty = n is not None and n != len(frame)
        except OSError:
            self.dirty = True  # the host retransmits; a reply is never queued

    # -- logging -------------------------------------------------------------
    def _audit(self, sess, mtype, code, name):
        # One record per audited command, carried out (code 0) or refused:
        # role, session, command, error code. The flash log folds repeated
        # refusals of the same (role, command, code) past the first two in a
        # clock hour into one count (eventlog.py); carried-out ones never.
        self.pump.record(lc.EV_COMMAND, sess.role, self.sid, mtype, code, name.encode())

    def _log_rejection(self, code, mtype, text=None):
        # Every refused frame is logged, but at most _REJECT_BURST records
        # back to back and then one per _REJECT_REFILL_S, so a flood of
        # garbage costs the flash little (and it goes to the log's activity
        # ring, never into the clinical history). The next record carries the
        # number not logged in between. Audited commands are audited apart
        # from this (_audit), whatever the garbage before them.
        now = self.pump.now_s()
        if self.tokens >= _REJECT_BURST:
            self.token_s = now
        elif now - self.token_s >= _REJECT_REFILL_S:
            n = (now - self.token_s) // _REJECT_REFILL_S
            self.tokens = min(_REJECT_BURST, self.tokens + n)
            self.token_s += n * _REJECT_REFILL_S
        if self.tokens <= 0:
            self.suppressed += 1
            return
        self.tokens -= 1
        self.pump.record(lc.EV_REJECTED, code, self.suppressed, mtype, self.sid if self.session else 0,
                         (text or "link " + wire.error_name(code))[:32].encode())
        self.suppressed = 0

    def _internal(self, e):
        try:
            self._log_rejection(wire.INTERNAL, -1, "link %s" % type(e).__name__)
        except Exception:
            pass  # the log itself failed: nothing more to do here

    def _earlier_reply(self, role, mid, mtype, digest):
        # The same request as the last of this role's previous session, soon
        # after: its cached reply (else None: a new request).
        last = self.last_by_role[role]
        if (last is None or last[0] != mid or last[1] != mtype or last[2] != digest
                or self.pump.now_s() - last[5] > lc.REPLY_KEEP_S):
            return None
        return last[:5]

    def _end(self, reason):
        self.pump.record(lc.EV_SESSION_END, self.session.role, self.sid, reason, 0, b"session end")
        self.session = None
        self.cache = None

    # -- outside a session -------------------------------------------------
    def _identify(self, p):
        p = _args(p, ("versions",))
        versions = p.get("versions", [wire.PROTOCOL_VERSION])
        # Whole numbers only: true is not version 1 (it equals 1 in Python).
        if (not isinstance(versions, list) or any(type(v) is not int for v in versions)
                or wire.PROTOCOL_VERSION not in versions):
            raise Refusal(wire.VERSION, "pump speaks protocol version %d only" % wire.PROTOCOL_VERSION)
        d = self.pump.device
        return {"version": wire.PROTOCOL_VERSION, "versions": [wire.PROTOCOL_VERSION],
                "serial": d["serial"], "model": d["model"], "firmware": d["firmware"],
                "reservoir_nl": d["reservoir_nl"], "stroke_nl": d["stroke_nl"],
                "provisioned": self.provisioned()}

    def _provision(self, p, mid):
        # Keys are set once, while the pump is new: the pump's random seed and
        # the host's entropy both go into them, so either source suffices.
        p = _args(p, ("entropy",))
        ent = p.get("entropy")
        if not isinstance(ent, (bytes, bytearray)) or len(ent) != wire.KEY_LEN:
            raise _bad("'entropy' must be %d bytes" % wire.KEY_LEN)
        c = self.prov_reply
        if c is not None and c[0] == mid and c[1] == ent:
            return c[2]  # the reply was lost: the same host asks again
        if self.keys.broken:
            raise Refusal(wire.INTERNAL, "key record unreadable: the pump needs service")
        if self.provisioned():
            raise Refusal(wire.FORBIDDEN, "already provisioned: keys are set once")
        seed = self.rng(wire.KEY_LEN)
        keys = {wire.ROLE_PATIENT: wire.hmac_sha256(seed, b"patient" + ent),
                wire.ROLE_CLINICIAN: wire.hmac_sha256(seed, b"clinician" + ent)}
        wire.check_device_keys(keys)
        serial = self.pump.device["serial"]
        self._save_keys(keys, serial, "keys not provisioned")  # durable before anyone learns the keys
        self.pump.record(lc.EV_PROVISIONED, 0, 0, 0, 0, b"link keys provisioned")
        reply = {"serial": serial, "patient": keys[wire.ROLE_PATIENT], "clinician": keys[wire.ROLE_CLINICIAN]}
        self.prov_reply = (mid, bytes(ent), reply, self.pump.now_s() + lc.PROVISION_REPLY_S)
        return reply

    def _rotate_keys(self, p):
        # Both roles' keys replaced by keys derived from them and the host's
        # entropy; durable before the reply. This session goes on (its key
        # came from the old one); the next login needs the new keys.
        p = _args(p, ("entropy",))
        ent = p.get("entropy")
        if not isinstance(ent, (bytes, bytearray)) or len(ent) != wire.KEY_LEN:
            raise _bad("'entropy' must be %d bytes" % wire.KEY_LEN)
        old = self.keys.keys
        keys = {r: wire.rotated_key(old[r], r, ent) for r in (wire.ROLE_PATIENT, wire.ROLE_CLINICIAN)}
        wire.check_device_keys(keys)
        self._save_keys(keys, self.keys.serial or self.pump.device["serial"], "keys not changed")
        self.pump.record(lc.EV_PROVISIONED, 1, 0, 0, 0, b"link keys rotated")
        return {"rotated": True}

    def _save_keys(self, keys, serial, what):
        # The key record first, the keys in use after (KeyStore.save): a
        # flash that refuses the write changes nothing, and says so.
        try:
            self.keys.save(keys, serial)
        except OSError as e:
            self.pump._flash_failed(e)
            raise LimitError("flash_fault", "%s: they could not be saved to flash (%s); the keys in use still log"
                             " in: try again, and replace the pump if the flash fault persists" % (what, e))

    def _hello(self, p):
        p = _args(p, ("role", "nonce"))
        if self.keys.broken:
            raise Refusal(wire.FORBIDDEN, "key record unreadable: the pump needs service")
        if self.keys.keys is None:
            raise Refusal(wire.FORBIDDEN, "pump not provisioned: no credentials yet")
        role = p.get("role")
        wire.role_key(self.keys.keys, role)  # Forbidden for anything but patient/clinician
        self._check_lockout(role)
        nonce_p = self.rng(wire.NONCE_LEN)
        proof = wire.pump_challenge(self.keys.keys, role, p.get("nonce"), nonce_p)
        pend = self.pending
        free = 0
        for i in range(_HANDSHAKES):  # a free slot, else the oldest gives way
            if pend[i] is None:
                free = i
                break
            if pend[i][4] < pend[free][4]:
                free = i
        self.attempts += 1
        pend[free] = [role, bytes(p["nonce"]), nonce_p, self.pump.now_s() + lc.HANDSHAKE_S, self.attempts]
        return {"nonce": nonce_p, "proof": proof}

    def _attempt(self, nonce_p):
        # The handshake a PROOF answers, taken out: the one with the pump's
        # nonce it names; without a nonce (protocol 1 hosts), the latest.
        pend, found = self.pending, -1
        for i in range(_HANDSHAKES):
            e = pend[i]
            if e is not None and (e[2] == nonce_p if nonce_p is not None else found < 0 or e[4] > pend[found][4]):
                found = i
        if found < 0:
            return None
        e, pend[found] = pend[found], None
        return e

    def _check_lockout(self, role):
        wait = self.locked_until[role] - self.pump.now_s()
        if wait > 0:
            raise Refusal(wire.LOCKED_OUT, "%s login locked after %d failures: retry in %d s"
                          % (lc.ROLE_NAMES[role], self.failures[role], wait), {"retry_s": wait})

    def _proof(self, p):
        p = _args(p, ("proof", "nonce"))
        pend = self._attempt(p.get("nonce"))  # a challenge answers once
        now = self.pump.now_s()
        if pend is None or now > pend[3]:
            # Not an attempt under way: nobody's key was tried, nothing counts.
            raise Refusal(wire.AUTH_FAILED, "no such login in progress: send HELLO first")
        role = pend[0]
        self._check_lockout(role)
        try:
            key = wire.pump_verify(self.keys.keys, role, pend[1], pend[2], p.get("proof"))
        except wire.AuthFailed as e:
            self._failed(role)
            raise e  # (not a bare raise: the emulator's native build cannot compile one)
        if self.failures[role] > lc.FREE_FAILURES:
            self.failures[role] = self.lock_s[role] = 0
            self.locked_until[role] = 0
            self._save_lockout()  # the back-off this login ends is over on flash too
        self.failures[role] = 0
        self.locked_until[role] = 0
        if self.session is not None:
            self._end(lc.END_REPLACED)
        self.sid = self.pump.record(lc.EV_AUTH_OK, role, 0, 0, 0, lc.ROLE_NAMES[role].encode())
        self.session = wire.Session(key, pump=True, role=role)
        self.last_rx_s = now
        self.prov_reply = None  # the host has its keys
        return {"role": role, "session": self.sid, "idle_s": lc.IDLE_TIMEOUT_S}

    def _failed(self, role):
        # Back-off: free failures, then 30 s doubling to an hour. Therapy is
        # never touched; only new logins for this role wait.
        f = self.failures[role] + 1
        self.failures[role] = f
        lock = 0
        if f > lc.FREE_FAILURES:
            lock = min(lc.BACKOFF_S << min(f - lc.FREE_FAILURES - 1, 7), lc.LOCKOUT_MAX_S)
            self.locked_until[role] = self.pump.now_s() + lock
            self.lock_s[role] = lock
            self._save_lockout()  # once per lockout: at most ~30 writes a day per role under attack
        self.pump.record(lc.EV_AUTH_FAILED, role, f, lock, 0, lc.ROLE_NAMES[role].encode())

    def _save_lockout(self):
        store = self.keys.store
        if store is None:
            return
        body = struct.pack(_LOCKOUT_FORMAT, self.failures[1], self.lock_s[1], self.failures[2], self.lock_s[2])
        try:
            store.save(_LOCKOUT_NAME, _LOCKOUT_VERSION, body)
        except OSError:
            pass  # the back-off still holds in RAM

    def _restore_lockout(self):
        # A lockout under way at a reset starts again in full: the pump's
        # clock after a reset cannot say how much of it had passed.
        self.lock_s = [0, 0, 0]
        store = self.keys.store
        try:
            rec = store.load(_LOCKOUT_NAME) if store is not None else None
            if rec is None or rec[0] != _LOCKOUT_VERSION:
                return
            f1, l1, f2, l2 = struct.unpack(_LOCKOUT_FORMAT, rec[1])
        except Exception:
            return  # unreadable: no back-off carried over (the keys still guard the link)
        now = self.pump.now_s()
        for role, f, lock in ((1, f1, l1), (2, f2, l2)):
            self.failures[role], self.lock_s[role] = f, lock
            if lock:
                self.locked_until[role] = now + lock

    # -- session commands: each takes the decoded payload, returns the reply --
    def _logout(self, p):
        _args(p, ())
        self._end(lc.END_LOGOUT)
        return {}

    def _status(self, p):
        _args(p, ())
        s = self.pump.status()
        s["alarms"] = [a["id"] for a in s["alarms"]]
        s["alarm_day"] = self.pump.alarm_day
        if s["fault"] is not None or s["bolus"] is not None or len(s["alarms"]) > 2 or "drug_changed_s" in s:
            # Only these grow a reply past one frame (a long-lived pump's
            # totals, a fault, many alarms): measured, and shortened by what
            # the programmer has from IDENTIFY and THERAPY, marked "short".
            try:
                wire.dumps(s)
            except wire.TooLarge:
                for k in _STATUS_SPARE:
                    s.pop(k, None)
                s["short"] = True
        return s

    def _therapy(self, p):
        _args(p, ())
        pump = self.pump
        t = pump.therapy
        reply = {"rx": rx_to_wire(pump.rx), "catheter_nl": pump.catheter.volume_nl, "bridging": pump.bridging}
        if t is not None:
            reply["daily_ng"] = t.daily_ng
            reply["max_daily_nl"] = dose_to_volume_nl(t.daily_ng, t.conc_ng_ml)
        return reply

    def _alarms(self, p):
        _args(p, ())
        return {"alarms": [[a["id"], a["name"], a["critical"], a["silenced_s"]]
                           for a in self.pump.alarms.listing(self.pump.now_s())]}

    def _log_read(self, p):
        p = _args(p, ("first", "max"))
        first = _int(p, "first")
        want = _int(p, "max", 1, lc.LOG_MAX_PER_READ)
        log = self.pump.log
        first = max(first, log.first_seq())
        last = log.last_seq()
        out = bytearray(_LOG_BYTES)
        n = 0
        nxt = first
        while nxt <= last and want > 0:
            # The records numbered nxt or later: numbers rolled off or lost
            # on flash are skipped, however many.
            recs = log.read(nxt, min(want, 16))
            if not recs:
                nxt = last + 1
                break
            for r in recs:
                text = r[8].encode() if isinstance(r[8], str) else bytes(r[8])
                end = n + lc.LOG_RECORD_LEN + len(text)
                if end > _LOG_BYTES:
                    want = 0
                    break
                struct.pack_into(lc.LOG_RECORD, out, n, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], len(text))
                out[n + lc.LOG_RECORD_LEN:end] = text
                n = end
                nxt = r[0] + 1
                want -= 1
                if not want:
                    break
        return {"first_seq": log.first_seq(), "last_seq": last, "dropped": log.dropped(), "next": nxt,
                "recs": bytes(memoryview(out)[:n])}

    def _summary(self, t, volume_nl):
        # What the review screen shows, in the pump's own rounding.
        stroke = self.pump.stroke_nl
        daily = prescription.max_daily_nl(t, stroke)
        r = self.pump.reservoir
        # The 24-hour maximum is the limit bound (highest step all day, see
        # docs/limits.md); the empty date uses the day's expected volume.
        return {"daily_ng": t.daily_ng, "max_daily_nl": dose_to_volume_nl(t.daily_ng, t.conc_ng_ml),
                "basal_nl_day": t.basal_nl_per_day(),
                "step_nl_day": list(t.step_rate_nl_day), "periodic_nl": [q[1] * stroke for q in t.periodic],
                "demand_nl": t.demand[0] * stroke if t.demand else 0,
                "empty_in_s": max(0, volume_nl - r.residual_nl) * S_PER_DAY // daily if daily else None}

    def _program(self, p):
        p = _args(p, ("rx", "check", "override"))
        rx = rx_from_wire(p.get("rx"))
        pump = self.pump
        t = pump.program(rx, _check(p, "override"), _check(p))
        return self._summary(t, pump.reservoir.remaining_nl)

    def _bolus(self, p):
        p = _args(p, ("dose_ng", "duration_s", "check", "override"))
        pump = self.pump
        strokes = pump.clinician_bolus(_int(p, "dose_ng"), _int(p, "duration_s"), _check(p, "override"), _check(p))
        return {"strokes": strokes, "volume_nl": strokes * pump.stroke_nl,
                "dose_ng": prescription.stroke_dose_ng(strokes, pump.stroke_nl, pump.therapy.conc_ng_ml)}

    def _prime(self, p):
        p = _args(p, ("volume_nl", "duration_s", "check"))
        strokes = self.pump.priming_bolus(_int(p, "volume_nl"), _int(p, "duration_s"), _check(p))
        return {"strokes": strokes, "volume_nl": strokes * self.pump.stroke_nl}

    def _demand(self, p):
        _args(p, ())
        code, wait = self.pump.demand_bolus()
        if code:
            limit = _DEMAND_LIMITS[code] if code < len(_DEMAND_LIMITS) else "demand"
            reason = _DEMAND_REASONS[code] if code < len(_DEMAND_REASONS) else "refused"
            if wait:
                reason += "; allowed again in %d min" % ((wait + 59) // 60)
            raise Refusal(wire.LIMIT, reason, {"limit": limit, "wait_s": wait})
        pump = self.pump
        s, t = pump.sched, pump.therapy
        volume = s.demand_strokes * pump.stroke_nl
        # The dose too, so the handset can say it in the drug's unit.
        return {"strokes": s.demand_strokes, "volume_nl": volume, "duration_s": s.demand_duration,
                "drug": t.drug, "dose_ng": volume_to_dose_ng(volume, t.conc_ng_ml)}

    def _maintenance(self, p):
        # The clinician's way back to the REPL (mpremote, deploy): the board
        # stops the pump cleanly after this reply; boards without a REPL to
        # give back (the emulator) refuse.
        enter = getattr(self.pump.board, "enter_maintenance", None)
        if enter is None:
            raise _bad("maintenance: this board has no REPL to return to")
        self.after_reply = enter
        return {"maintenance": True}

    def _suspend(self, p):
        _args(p, ())
        saved = self.pump.suspend()
        return {"state": self.pump.status()["state"], "saved": saved}

    def _resume(self, p):
        _args(p, ())
        self.pump.resume()
        return {"state": self.pump.status()["state"]}

    def _refill(self, p):
        p = _args(p, ("withdrawn_nl", "added_nl", "rx", "check", "override"))
        rx = rx_from_wire(p["rx"]) if p.get("rx") is not None else None
        pump = self.pump
        check = _check(p)
        result = pump.refill(_int(p, "withdrawn_nl"), _int(p, "added_nl"), rx, _check(p, "override"), check)
        # The therapy after the refill: the new prescription's, in the pump's own rounding.
        t = prescription.validate(rx, pump.stroke_nl, True) if check and rx is not None else pump.therapy
        if t is not None:
            result.update(self._summary(t, _int(p, "added_nl")))
        return result

    def _ack(self, p):
        p = _args(p, ("alarm",))
        acknowledged, saved = self.pump.acknowledge(_int(p, "alarm"))
        return {"acknowledged": acknowledged, "saved": saved}

    def _set_clock(self, p):
        p = _args(p, ("day", "tod_s"))
        self.pump.set_clock(_int(p, "day"), _int(p, "tod_s"))
        return {"day": self.pump.clock.day, "tod_s": self.pump.clock.tod_s}

    def _set_low(self, p):
        p = _args(p, ("low_nl",))
        self.pump.set_low_threshold(_int(p, "low_nl"))
        return {"low_nl": self.pump.reservoir.low_nl}

    def _set_alarm_date(self, p):
        p = _args(p, ("day",))
        self.pump.set_alarm_date(_int(p, "day"))
        return {"day": self.pump.alarm_day}

    def _implant(self, p):
        # One implant-test step (firmware/implant.py does the work and logs
        # it); a LimitError is the LIMIT reply and the pump stays as it was.
        if not isinstance(p, dict) or p.get("step") not in lc.IMPLANT_STEPS:
            raise _bad("'step' must be one of: %s" % ", ".join(lc.IMPLANT_STEPS))
        step = p["step"]
        pump = self.pump
        if step == "identity":
            p = _args(p, ("step", "serial", "model"))
            serial, model = p.get("serial"), p.get("model")
            if not isinstance(serial, str) or not isinstance(model, str):
                raise _bad("'serial' and 'model' must be text")
            implant.set_identity(pump, serial, model)
            if self.provisioned() and serial != self.keys.serial:
                self.keys.save(self.keys.keys, serial)  # the keys follow the pump's identity
            return {"step": step, "done": True, "passed": True, "serial": serial, "model": model}
        if step == "catheter":
            p = _args(p, ("step", "segments"))
            segs = p.get("segments")
            if not isinstance(segs, list) or not segs:
                raise _bad("'segments' must be a list of [length_mm, volume_nl]")
            segs = [_row(s, 2, "segments") for s in segs]
            total = implant.set_catheter(pump, segs)
            return {"step": step, "done": True, "passed": True, "catheter_nl": total}
        if step == "fill":
            p = _args(p, ("step", "volume_nl"))
            implant.first_fill(pump, _int(p, "volume_nl"))
            return {"step": step, "done": True, "passed": True, "remaining_nl": pump.reservoir.remaining_nl}
        if step == "prime":
            p = _args(p, ("step", "duration_s"))
            strokes = implant.prime(pump, _int(p, "duration_s"))
            return {"step": step, "done": True, "passed": True, "strokes": strokes,
                    "volume_nl": strokes * pump.stroke_nl}
        if step == "start":
            p = _args(p, ("step", "rx"))
            t = implant.start_therapy(pump, rx_from_wire(p.get("rx")))
            reply = self._summary(t, pump.reservoir.remaining_nl)
            reply.update({"step": step, "done": True, "passed": True})
            return reply
        _args(p, ("step",))
        if step == "motor_test":
            strokes = implant.start_motor_test(pump)
            return {"step": step, "done": False, "passed": False, "strokes": strokes}
        if step == "alarm_test":
            implant.start_alarm_test(pump)
            return {"step": step, "done": False, "passed": False}
        r = implant.motor_test_result(pump) if step == "motor_result" else implant.alarm_test_result(pump)
        if r is None:
            return {"step": step, "done": False, "passed": False}
        return {"step": step, "done": True, "passed": bool(r[0]), "reason": r[1]}

    def _diary(self, p):
        p = _args(p, ("pain", "activity", "note"))
        pain = _int(p, "pain", 0, lc.PAIN_MAX)
        act = p.get("activity")
        if act not in lc.ACTIVITIES:
            raise _bad("activity must be one of: %s" % ", ".join(lc.ACTIVITIES))
        note = p.get("note", "")
        if not isinstance(note, str) or len(note.encode()) > lc.NOTE_MAX:
            raise _bad("note must be text of at most %d bytes" % lc.NOTE_MAX)
        if not is_plain_text(note):
            raise _bad("note must be one line of text: no line break, tab or other control character")
        seq = self.pump.record(lc.EV_DIARY, pain, lc.ACTIVITIES.index(act), self.sid, 0, note.encode())
        if not seq:  # a diary entry is never folded: 0 is a log the flash refused (the flash-fault alarm)
            raise LimitError("flash_fault", "diary entry not recorded: the pump's flash could not be written;"
                             " try again later")
        return {"seq": seq}


def _short(msg):
    # Reasons are cut at 100 characters on the wire: drop parenthesised
    # asides first so the numbers that matter survive.
    while len(msg) > _REASON_MAX and "(" in msg:
        i = msg.find(" (")
        j = msg.find(")", i)
        if i < 0 or j < 0:
            break
        msg = msg[:i] + msg[j + 1:]
    return msg


def _frame_id(frame):
    # The message id of a frame that failed its checks, when its CRC shows
    # the header arrived intact; otherwise 0 (docs/protocol.md section 10).
    try:
        raw = wire.cobs_decode(frame)
        n = len(raw) - wire.CRC_LEN
        if n >= wire.HEADER_LEN and crc32(raw[:n]) == struct.unpack_from(">I", raw, n)[0]:
            return struct.unpack_from(">H", raw, 3)[0]
    except Exception:
        pass  # not even a frame
    return 0
