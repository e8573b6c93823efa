# The emulated pump process: board models, flash image, programmer link and
# bench port around the portable core, in real or virtual time.
import json
import os
import select
import time

import alarms
import hal
from flash_fault import FlashFaultDevice
from image_flash import ImageBlockDevice, mount, unmount
from startup import start_pump
from link import Link
from pty_link import PtyLink
from bench_server import BenchServer
from unix_board import UnixBoard, run_virtual
from watchdog_model import WatchdogModel, reset

RESET_MARKER = "reset"  # host_tools/pumpctl/emulator.py boots the board again on it


# Built-in therapy until a programmer sets one: morphine 10 mg/mL, 10 mg/day
# (1 mL/day, one 500 nL stroke every 43.2 s).
DEFAULT_PRESCRIPTION = {"drug": "morphine", "conc_ng_ml": 10000000,
                        "steps": [{"start_s": 0, "dose_ng_day": 10000000}]}
DEFAULT_FILL_NL = 20000000


class PowerLoss(Exception):
    pass


class Emulator:
    def __init__(self, opts):
        self.opts = opts
        self.poller = select.poll()
        self.flash = None
        self.flash_chip = None
        if opts.get("image"):
            # The bench can make the flash refuse writes (a worn chip).
            self.flash_chip = FlashFaultDevice(ImageBlockDevice(opts["image"]))
            self.flash = mount(self.flash_chip)
        self.board = UnixBoard(virtual=opts.get("virtual", False), flash_dir=self.flash,
                               start_ticks=opts.get("start_ticks", 0))
        self.marker = opts["image"].rsplit("/", 1)[0] + "/" + RESET_MARKER if opts.get("image") else None
        if opts.get("wdt_ms") and self.marker:
            self.board.watchdog = WatchdogModel(opts["wdt_ms"], self.marker)
        self.boot(opts.get("reset_cause", hal.RESET_POWER_ON))
        self.pty = PtyLink(opts["link_fd"], self.poller) if "link_fd" in opts else None
        self.link = Link(self.pump, self.pty) if self.pty else None
        self.bench = BenchServer(opts["bench"], self.poller) if opts.get("bench") else None
        self.alive = True

    # -- state ---------------------------------------------------------------
    def boot(self, cause):
        self.pump, self.persist, self.cause = start_pump(self.board, cause)
        pump = self.pump
        if not self.board.clock.virtual or pump.rx is None:
            now = int(time.time())  # the host clock stands in for the pump's RTC
            pump.clock.set(now // 86400, now % 86400)
            pump.alarms.set(alarms.CLOCK_UNCERTAIN, False, pump.now_s)  # it has a clock to trust
        fresh = self.persist is None or self.persist.fresh
        if fresh and not pump.device["serial"]:
            pump.device["serial"] = "EMU-" + "".join("%02X" % b for b in os.urandom(4))
        if fresh and not self.opts.get("blank"):
            # Only a brand-new emulated pump comes filled and running a
            # demonstration therapy, so `make run` shows delivery at once;
            # with --blank it stays empty and unprogrammed, as from the
            # factory, for the implant test (pumpctl implant). A pump whose
            # state cannot be read never gets it (docs/safety.md).
            pump.reservoir.fill(DEFAULT_FILL_NL)
            pump.program(self.opts.get("prescription") or DEFAULT_PRESCRIPTION)

    def save(self):
        if self.persist:
            self.persist.save(clean=True)

    # -- loop ----------------------------------------------------------------
    def run(self):
        virtual = self.board.clock.virtual
        period = self.board.TICK_MS
        next_tick = time.ticks_ms()
        try:
            while self.alive:
                if virtual:
                    timeout = -1
                else:
                    wait = time.ticks_diff(next_tick, time.ticks_ms())
                    if wait <= 0:
                        self.pump.tick()
                        if self.pump.needs_service():
                            self.pump.service()
                        next_tick = time.ticks_add(next_tick, period)
                        if time.ticks_diff(next_tick, time.ticks_ms()) < 0:
                            next_tick = time.ticks_add(time.ticks_ms(), period)  # overrun: no burst
                        continue
                    timeout = wait
                self.set_idle(virtual)
                events = self.poller.poll(timeout)
                self.set_idle(False)
                for obj, event in events:
                    self.dispatch(obj, event)
        except PowerLoss:
            return  # nothing is saved: the power is gone
        self.shutdown()

    def set_idle(self, idle):
        # Waiting for the bench in virtual time is not a hung loop.
        if self.board.watchdog is not None:
            self.board.watchdog.idle = idle
            self.board.watchdog.feed()

    def shutdown(self):
        self.save()
        if self.bench:
            self.bench.close()
        if self.flash:
            unmount(self.flash)

    def dispatch(self, obj, event):
        if self.bench and self.bench.owns(obj):
            for client, req in self.bench.requests(obj, event):
                try:
                    reply = self.bench_command(req)
                except PowerLoss:
                    raise
                except Exception as e:  # a bench mistake must not stop the pump
                    reply = {"ok": False, "error": "bench: %s: %s" % (type(e).__name__, e)}
                self.bench.reply(client, reply)
        elif self.link and obj is self.pty.stream:
            if event & (select.POLLHUP | select.POLLERR):
                self.alive = False  # the launcher is gone: shut down cleanly
                return
            self.link.poll()
            while self.link.backlog:  # frames already read from the pty
                self.link.poll()
            if self.pump.needs_service():
                self.pump.service()

    # -- bench commands ---------------------------------------------------
    def bench_command(self, req):
        cmd = req.get("cmd")
        handler = getattr(self, "bench_" + str(cmd), None)
        if handler is None:
            return {"ok": False, "error": "bench: unknown command %r" % cmd}
        reply = handler(req)
        reply["ok"] = True
        return reply

    def bench_status(self, req):
        pump, motor = self.pump, self.board.motor
        return {"reset_cause": self.cause, "alarms": [a["name"] for a in pump.alarms.listing(pump.now_s)],
                "strokes_by_kind": list(pump.reservoir.strokes),
                "tone_hz": self.board.tone_hz, "state": pump.status()["state"],"board_ms": self.board.clock.elapsed_ms, "virtual": self.board.clock.virtual,
                "day": pump.clock.day, "tod_s": pump.clock.tod_s, "running": pump.sched.running,
                "strokes": motor.completed, "failed": motor.failed,
                "remaining_nl": pump.reservoir.remaining_nl, "stroke_nl": pump.stroke_nl}

    def bench_advance(self, req):
        if not self.board.clock.virtual:
            raise ValueError("advance needs virtual time (start the emulator with --virtual)")
        ms = req["ms"]
        if not isinstance(ms, int) or ms < 0:
            raise ValueError("advance: 'ms' must be a non-negative integer")
        run_virtual(self.pump, ms)
        return self.bench_status(req)

    def bench_strokes(self, req):
        times, first = self.board.motor.times(req.get("first", 0), min(req.get("limit", 1000), 4096))
        return {"count": self.board.motor.completed, "first": first, "times": times}

    def bench_motor(self, req):
        motor = self.board.motor
        if "stall" in req:
            motor.stalled = bool(req["stall"])
        if "intermittent" in req:
            motor.intermittent = int(req["intermittent"])
        return {"stalled": motor.stalled, "intermittent": motor.intermittent}

    def bench_battery(self, req):
        self.board.battery = int(req["mv"])
        return {"mv": self.board.battery}

    def bench_pressure(self, req):
        self.board.pressure = int(req["mmhg"])
        return {"mmhg": self.board.pressure}

    def bench_power_cut(self, req):
        raise PowerLoss()

    def bench_hang(self, req):
        # A hung loop: nothing feeds the watchdog any more.
        while True:
            pass

    def bench_soft_reset(self, req):
        # machine.soft_reset(): the board restarts without saving anything.
        if not self.marker:
            raise ValueError("soft_reset needs a flash image")
        reset(self.marker, hal.RESET_SOFT)

    def bench_fault(self, req):
        # An internal fault in the loop: the battery reading starts raising.
        def broken():
            raise RuntimeError("bench-injected fault: battery ADC read failed")

        self.board.battery_mv = broken
        return {}

    def bench_corrupt(self, req):
        # A bit flips in the prescription held in RAM.
        self.pump.sched.step_rate[0] ^= 1 << int(req.get("bit", 12))
        return {}

    def bench_flash_fault(self, req):
        # The flash chip refuses programs and erases while `on` (reads work).
        if self.flash_chip is None:
            raise ValueError("flash_fault needs a flash image")
        self.flash_chip.failing = bool(req.get("on", True))
        return {"failing": self.flash_chip.failing}

    def bench_spin(self, req):
        # A motor driver fault: the motor turns `strokes` with no stroke commanded.
        self.board.motor.uncommanded += int(req.get("strokes", 1))
        return {}

    def bench_runaway(self, req):
        # A scheduler fault: it suddenly asks for a burst of strokes.
        self.pump.sched.owed_basal += int(req.get("strokes", 1000))
        return {}

    def bench_shutdown(self, req):
        self.alive = False
        return {}


def parse_args(argv):
    opts = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--virtual":
            opts["virtual"] = True
        elif a == "--blank":
            opts["blank"] = True
        elif a == "--prescription":
            i += 1
            opts["prescription"] = json.loads(argv[i])
        elif a in ("--link-fd", "--start-ticks", "--reset-cause", "--wdt-ms"):
            i += 1
            opts[a[2:].replace("-", "_")] = int(argv[i])
        elif a in ("--image", "--bench"):
            i += 1
            opts[a[2:]] = argv[i]
        else:
            raise SystemExit("emulator: unknown argument %r" % a)
        i += 1
    return opts


def main(argv):
    emu = Emulator(parse_args(argv))
    print("emulator: ready")
    emu.run()
