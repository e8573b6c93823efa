# Model-campaign harness (MicroPython, unix port): one emulated pump on a
# real littlefs image, booted through the emulator's own boot path
# (startup.start_pump, so persistence and restore are the real ones), served
# as JSON lines: one request per line on stdin, one reply per line on stdout
# prefixed with "@@ " (anything else on stdout, e.g. a finaliser's message,
# is noise the client ignores).
#
# Bench equipment only: it drives the board models (motor, battery,
# pressure, flash faults, power) and reads the pump the way a programmer
# reads it (status, prescription, ledger). The expectations live on the host,
# in tests/model/oracle.py; nothing here decides whether the pump is right.
#
# Flash: littlefs -> FlashFaultDevice (EIO while failing) -> PowerCutDevice
# (the power dies at an armed write) -> ImageBlockDevice (the image file).
# Every reset here is unclean: nothing is saved on the way down.
import json
import sys

import io

# The firmware tree: this checkout, or the one named on the command line
# (to run the campaign against another version of the firmware).
here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
root = sys.argv[1] if len(sys.argv) > 1 else here + "/../.."
sys.path[1:1] = [root + "/firmware", root + "/boards/unix", here + "/../../boards/unix"]  # bench helpers last

import os  # noqa: E402
import time  # noqa: E402

import vfs  # noqa: E402

import emulator  # noqa: E402
import hal  # noqa: E402
import implant  # noqa: E402
from flash_fault import FlashFaultDevice  # noqa: E402
from image_flash import ImageBlockDevice, filesystem, mount  # noqa: E402
from power_cut import PowerCutDevice  # noqa: E402
from unix_board import TONE_RECORD_LEN, UnixBoard  # noqa: E402

POINT = "/flash"
PROG = 32  # littlefs program size (VfsLfs2 default)
EPOCH_S = 1767225600  # the world's clock at board time 0 (2026-01-01 00:00 UTC)
CHUNK_MS = 600000  # collect strokes and tones at least this often (bounded records)
WDT_MS = 8000  # a hung or crashed loop is reset by the watchdog after this
BOOT_ATTEMPTS = 3
PREFIX = "@@ "


class WorldClock:
    # Stands in for the host clock the emulator reads at boot: the world's
    # time, derived from virtual board time, so every run is reproducible.
    def __init__(self, board):
        self.board = board

    def time(self):
        return EPOCH_S + self.board.clock.elapsed_ms // 1000

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, a, b):
        return time.ticks_add(a, b)


class BootShim:
    # The attributes Emulator.boot uses, without the emulator's pty and sockets.
    def start_fluid(self, fresh):
        pass  # the oracle here is the truth: the emulator's fluid model is not part of this harness


def text(e):
    return "%s: %s" % (type(e).__name__, e)


def trace(e):
    buf = io.StringIO()
    sys.print_exception(e, buf)
    return buf.getvalue()


def jsonable(v):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return "<%s>" % type(v).__name__


def call_tolerant(fn, args, kw):
    # Keywords the firmware may not know yet (e.g. override=True) are dropped.
    try:
        return fn(*args, **kw)
    except TypeError as e:
        if kw and "keyword" in str(e):
            return fn(*args)
        raise


def attr(obj, path, default=None):
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return default
    return obj


class World:
    def __init__(self, image, blank):
        self.image = image
        self.blank = blank
        try:
            os.remove(image)
        except OSError:
            pass
        self.board = UnixBoard(virtual=True, flash_dir=POINT)
        emulator.time = WorldClock(self.board)
        self.pump = None
        self.up = False  # booted and running
        self.down_ms = 0  # board time the running pump last went down
        self.cut = None
        self.fault = None
        self.cut_left = None  # armed power cut: writes to go, carried over resets
        self.tear = False
        self.off_ms = 0  # how long the power stays off after an armed cut
        self.flash_failing = False
        self.resets = 0
        self.stroke_seen = 0
        self.tone_seen = 0
        self.last_hz = 0
        self.begin_step()
        self.boot(hal.RESET_POWER_ON, first=True)

    # -- time and records -------------------------------------------------
    def now(self):
        return self.board.clock.elapsed_ms

    def begin_step(self):
        self.new_strokes = []
        self.new_tones = []
        self.boots = []
        self.escaped = []
        self.lost = 0

    def collect(self):
        motor, board = self.board.motor, self.board
        if motor.completed > self.stroke_seen:
            times, first = motor.times(self.stroke_seen, motor.completed - self.stroke_seen)
            self.lost += first - self.stroke_seen
            self.new_strokes.extend(times)
            self.stroke_seen = motor.completed
        n = board.tone_changes
        first = max(self.tone_seen, n - TONE_RECORD_LEN)
        self.lost += first - self.tone_seen
        for i in range(first, n):
            j = 2 * (i % TONE_RECORD_LEN)
            hz = board.tones[j + 1]
            if hz and hz != self.last_hz:
                self.new_tones.append([board.tones[j], hz])
            self.last_hz = hz
        self.tone_seen = n

    # -- power --------------------------------------------------------------
    def power_on(self, cause):
        cut = PowerCutDevice(ImageBlockDevice(self.image), self.cut_left, self.tear, PROG)
        self.cut_left = None
        fault = FlashFaultDevice(cut)
        fault.failing = self.flash_failing
        self.cut, self.fault = cut, fault
        mount(fault, POINT)  # the board's own mount: an unreadable filesystem is formatted
        self.board.cause = cause
        shim = BootShim()
        shim.board = self.board
        shim.opts = {"virtual": True, "blank": self.blank}
        emulator.Emulator.boot(shim, cause)
        self.pump, self.persist, self.logged_cause = shim.pump, shim.persist, shim.cause

    def power_off(self):
        # Unclean: the power (or the board) dies; nothing more reaches flash.
        self.collect()
        if self.up:  # a running pump goes down (not a failed boot again)
            self.down_ms = self.now()
            self.up = False
        c = self.cut
        if c is not None:
            if c.cut_at is not None and not c.cut:
                self.cut_left = c.cut_at - c.writes  # still armed after the reset
            c.close()  # from now on every flash operation fails
        try:
            vfs.umount(POINT)
        except Exception:
            pass
        self.cut = self.fault = None
        self.board.motor.stop()  # the motor is de-energised
        self.board.buzzer(0)
        self.pump = None

    def died(self):
        return self.fault is not None and self.fault.power_died

    def boot(self, cause, first=False):
        for _ in range(BOOT_ATTEMPTS):
            try:
                self.power_on(cause)
            except Exception as e:
                if not self.died():
                    self.escaped.append({"where": "boot", "error": text(e), "trace": trace(e)})
            if self.pump is not None and not self.died():
                self.up = True
                if not first:
                    self.resets += 1
                self.boots.append({"t_ms": self.now(), "down_ms": self.down_ms, "cause": cause,
                                   "logged_cause": self.logged_cause})
                return
            if self.died():  # the power died while booting
                cause = hal.RESET_POWER_ON
                self.power_off()
            else:  # the boot crashed: the watchdog resets the board
                cause = hal.RESET_WATCHDOG
                self.power_off()
                self.board.clock.advance(WDT_MS)
        self.boots.append({"t_ms": self.now(), "down_ms": self.down_ms, "cause": cause, "dead": True})

    def power_fail(self, off_ms):
        self.power_off()
        self.board.clock.advance(off_ms)
        self.boot(hal.RESET_POWER_ON)

    def watchdog_reset(self):
        self.power_off()
        self.board.clock.advance(WDT_MS)
        self.boot(hal.RESET_WATCHDOG)

    def escape(self, where, e):
        # An exception escaped the pump's main-loop work: the loop dies and
        # the watchdog resets the board (what a Pico does; the emulator dies).
        self.escaped.append({"where": where, "error": text(e), "trace": trace(e)})
        self.watchdog_reset()

    # -- the main loop's work -----------------------------------------------
    def service(self):
        if self.pump is None:
            return
        try:
            if self.pump.needs_service():
                self.pump.service()
        except Exception as e:
            if not self.died():
                self.escape("service", e)
                return
        if self.died():
            self.power_fail(self.off_ms)

    def run(self, ms):
        # unix_board.run_virtual, stopping the moment the power dies (the
        # firmware may catch the failed write and carry on: the bench may not).
        pump, clock = self.pump, self.board.clock
        end = clock.elapsed_ms + ms
        try:
            while not self.died():
                pump.tick()
                if pump.needs_service():
                    pump.service()
                if self.died():
                    break
                left = end - clock.elapsed_ms
                if left <= 0:
                    return
                step = pump.ms_to_next_event()
                clock.advance(min(max(step, 1), left))
        except Exception as e:
            if not self.died():
                self.escape("loop", e)
                return
        self.power_fail(self.off_ms)

    # -- commands -------------------------------------------------------------
    def command(self, owner, name, args, kw=None):
        if self.pump is None:
            return {"outcome": "dead"}
        try:
            value = call_tolerant(getattr(owner, name), args, kw or {})
            out = {"outcome": "ok", "value": jsonable(value)}
        except Exception as e:
            if hasattr(e, "limit"):
                out = {"outcome": "refused", "limit": e.limit, "message": getattr(e, "message", str(e))}
            else:
                out = {"outcome": "error", "error": text(e), "trace": trace(e)}
        if self.died():  # the reply never left the pump
            self.power_fail(self.off_ms)
            return {"outcome": "power_cut", "firmware_said": out}
        self.service()  # the emulator services the pump after every link command
        return out

    def pump_call(self, name, args, kw=None):
        return self.command(self.pump, name, args, kw)

    def implant_call(self, name, args):
        return self.command(implant, name, [self.pump] + args)

    def op_program(self, q):
        kw = {"override": True} if q.get("override") else None
        return self.pump_call("program", [q["rx"]], kw)

    def op_clinician_bolus(self, q):
        kw = {"override": True} if q.get("override") else None
        return self.pump_call("clinician_bolus", [q["dose_ng"], q["duration_s"]], kw)

    def op_priming_bolus(self, q):
        return self.pump_call("priming_bolus", [q["volume_nl"], q["duration_s"]])

    def op_demand(self, q):
        return self.pump_call("demand_bolus", [])

    def op_refill(self, q):
        kw = {"override": True} if q.get("override") else None
        return self.pump_call("refill", [q["withdrawn_nl"], q["added_nl"], q.get("rx")], kw)

    def op_suspend(self, q):
        return self.pump_call("suspend", [])

    def op_resume(self, q):
        return self.pump_call("resume", [])

    def op_set_clock(self, q):
        return self.pump_call("set_clock", [q["day"], q["tod_s"]])

    def op_acknowledge(self, q):
        return self.pump_call("acknowledge", [q["alarm"]])

    def op_low_threshold(self, q):
        return self.pump_call("set_low_threshold", [q["volume_nl"]])

    def op_identity(self, q):
        return self.implant_call("set_identity", [q["serial"], q["model"]])

    def op_catheter(self, q):
        return self.implant_call("set_catheter", [q["segments"]])

    def op_first_fill(self, q):
        return self.implant_call("first_fill", [q["volume_nl"]])

    def op_prime(self, q):
        return self.implant_call("prime", [q["duration_s"]])

    def op_start_therapy(self, q):
        return self.implant_call("start_therapy", [q["rx"]])

    # -- bench ------------------------------------------------------------------
    def op_advance(self, q):
        end = self.now() + q["ms"]
        while self.now() < end:
            step = min(end - self.now(), CHUNK_MS)
            if self.pump is None:  # dead: the watchdog keeps resetting the board
                self.board.clock.advance(step)
                self.boot(hal.RESET_WATCHDOG)
            else:
                self.run(step)
            self.collect()
        return {"outcome": "ok"}

    def op_motor(self, q):
        m = self.board.motor
        if "stall" in q:
            m.stalled = bool(q["stall"])
        if "intermittent" in q:
            m.intermittent = int(q["intermittent"])
        return {"outcome": "ok"}

    def op_pressure(self, q):
        self.board.pressure = int(q["mmhg"])
        return {"outcome": "ok"}

    def op_battery_glitch(self, q):
        # The battery reads `mv` for `ms`, then its true voltage again.
        true_mv = self.board.battery
        self.board.battery = int(q["mv"])
        try:
            self.op_advance({"ms": q["ms"]})
        finally:
            self.board.battery = true_mv
        return {"outcome": "ok"}

    def op_flash_fault(self, q):
        self.flash_failing = bool(q["on"])
        if self.fault is not None:
            self.fault.failing = self.flash_failing
        return {"outcome": "ok"}

    def op_arm_power_cut(self, q):
        # The power dies at the `after`-th flash write from now (1 = the next).
        self.tear = bool(q.get("tear"))
        self.off_ms = int(q.get("off_ms", 0))
        if self.cut is not None:
            self.cut.cut_at = self.cut.writes + int(q["after"])
            self.cut.tear = self.tear
        else:
            self.cut_left = int(q["after"])
        return {"outcome": "ok"}

    def op_power_cut(self, q):
        self.power_fail(int(q.get("off_ms", 0)))
        return {"outcome": "ok"}

    def op_watchdog(self, q):
        self.watchdog_reset()
        return {"outcome": "ok"}

    def op_decay_state(self, q):
        # Flash decay found at the next boot: the state record's newest slot
        # (or both) no longer passes its CRC.
        self.power_off()
        dev = ImageBlockDevice(self.image)
        try:
            vfs.mount(filesystem(dev), POINT)
            try:
                decay(POINT + "/state", q.get("slots") == "both")
            finally:
                vfs.umount(POINT)
        finally:
            dev.close()
        self.boot(hal.RESET_POWER_ON)
        return {"outcome": "ok"}

    def op_snapshot(self, q):
        return {"outcome": "ok"}

    # -- replies ------------------------------------------------------------------
    def handle(self, q):
        self.begin_step()
        handler = getattr(self, "op_" + q["op"], None)
        if handler is None:
            out = {"outcome": "harness_error", "error": "unknown op %r" % q["op"]}
        else:
            out = handler(q)
        self.collect()
        out["snap"] = self.snapshot()
        return out

    def snapshot(self):
        s = {"t_ms": self.now(), "strokes": self.new_strokes, "tones": self.new_tones, "boots": self.boots,
             "escaped": self.escaped, "resets": self.resets, "lost": self.lost,
             "flash_writes": self.cut.writes if self.cut else None}
        p = self.pump
        if p is None:
            s["dead"] = True
            return s
        try:
            s["status"] = jsonable(p.status())
        except Exception as e:
            s["status"] = None
            self.escaped.append({"where": "status", "error": text(e), "trace": trace(e)})
        r = p.reservoir
        s["observed"] = {  # what a programmer reads back from the pump
            "rx": jsonable(p.rx), "suspended": bool(p.suspended), "catheter_nl": p.catheter.volume_nl,
            "volume_in_nl": r.volume_in_nl, "withdrawn_nl": r.withdrawn_nl, "low_nl": r.low_nl,
            "remaining_nl": r.remaining_nl, "balance_nl": r.balance_nl(),
        }
        s["diag"] = {  # for people reading a counter-example; never an expectation
            "strokes_by_kind": jsonable(attr(r, "strokes", [])), "bridge_left": attr(p, "sched.bridge_left"),
            "bolus_kind": attr(p, "sched.bolus_kind"), "running": attr(p, "sched.running"),
            "basal_on": attr(p, "sched.basal_on"), "alarms_active": attr(p, "alarms.active"),
            "therapy_drug": attr(p, "therapy.drug"), "logged_cause": self.logged_cause,
        }
        return s


def decay(directory, both):
    slots = []
    try:
        names = os.listdir(directory)
    except OSError:
        return  # nothing saved yet
    for name in names:
        path = directory + "/" + name
        with open(path, "rb") as f:
            head = f.read(16)
        seq = int.from_bytes(head[8:12], "little") if len(head) == 16 else -1
        slots.append((seq, path))
    slots.sort()
    for seq, path in (slots if both else slots[-1:]):
        with open(path, "r+b") as f:
            f.seek(20)
            f.write(b"\x00\x5a\xa5\xff")


def reply(obj):
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")


def main():
    world = None
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        try:
            q = json.loads(line)
            if q["op"] == "new":
                if world is not None and world.pump is not None:
                    world.power_off()
                world = World(q["image"], q.get("mode", "implant") == "implant")
                out = {"outcome": "ok", "stroke_nl": world.board.STROKE_NL, "epoch_s": EPOCH_S,
                       "capacity_nl": world.board.RESERVOIR_NL}
                world.collect()
                out["snap"] = world.snapshot()
            elif q["op"] == "quit":
                reply({"outcome": "ok"})
                return
            else:
                out = world.handle(q)
        except Exception as e:
            out = {"outcome": "harness_error", "error": text(e), "trace": trace(e)}
        reply(out)


if __name__ == "__main__":
    main()
