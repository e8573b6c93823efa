# The emulated pump process: board models, flash image, programmer link and
# bench port around the portable core, in real or virtual time.
import json
import os
import select
import time

from micropython import const

import alarms
import events
import hal
from flash_fault import FlashFaultDevice
from fluid_model import DEAD_VOLUME_NL, FluidModel
from image_flash import ImageBlockDevice, mount, unmount
from motor_model import DAY_RECORD_LEN
from startup import start_pump
from link import Link
from pty_link import PtyLink
from bench_server import BenchServer
from unix_board import UnixBoard, run_virtual
from watchdog_model import WatchdogModel, reset

RESET_MARKER = "reset"  # host_tools/pumpctl/emulator.py boots the board again on it
FLUID_STATE = "fluid.json"  # the fluid model's truth, beside the flash image: it outlives resets
RTC_SLACK_S = const(60)  # a clock the RTC stand-in moves further than this at boot is logged as set
FLUID_SAVE_TICKS = const(600)  # real time: the truth is also saved every minute (a SIGKILL loses less)


# Built-in therapy until a programmer sets one: morphine 10 mg/mL, 10 mg/day
# (1 mL/day, one 500 nL stroke every 43.2 s).
DEFAULT_PRESCRIPTION = {"drug": "morphine", "conc_ng_ml": 10000000,
                        "steps": [{"start_s": 0, "dose_ng_day": 10000000}]}
DEFAULT_FILL_NL = 20000000
# Its catheter, recorded as the implant test records one: the fluid model's
# (DEAD_VOLUME_NL, ~90 cm), full of the fill's drug, so that a change of drug
# or strength is bridged on it as on an implanted pump.
DEMO_CATHETER_MM = const(900)


POWER_CUT_LINE = "emulator: power cut (bench power_cut): nothing saved since the last checkpoint"


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
        self.board.motor.keep(DAY_RECORD_LEN)  # the bench reads a day at the maximum rate
        state_dir = opts["image"].rsplit("/", 1)[0] + "/" if opts.get("image") else None
        self.marker = state_dir + RESET_MARKER if state_dir else None
        self.fluid_path = state_dir + FLUID_STATE if state_dir else None
        if opts.get("wdt_ms") and self.marker:
            self.board.watchdog = WatchdogModel(opts["wdt_ms"], self.marker)
            self.board.watchdog.before_reset = self.save_fluid
        self.boot(opts.get("reset_cause", hal.RESET_POWER_ON))
        self.pty = PtyLink(opts["link_fd"], self.poller) if "link_fd" in opts else None
        self.link = Link(self.pump, self.pty) if self.pty else None
        self.bench = BenchServer(opts["bench"], self.poller) if opts.get("bench") else None
        self.alive = True
        self.tick_late_ms = 0  # the latest a real-time tick ran after it was due, since asked

    # -- state ---------------------------------------------------------------
    def boot(self, cause):
        self.pump, self.persist, self.cause = start_pump(self.board, cause)
        pump = self.pump
        fresh = self.persist is None or self.persist.fresh
        if not self.board.clock.virtual or pump.rx is None:
            # The host clock stands in for the pump's RTC. A clock it moves
            # (set by the clinician to another time before a reset) is logged
            # as set, so the log's timeline says why it jumped.
            now = int(time.time())
            before = pump.clock.day, pump.clock.tod_s
            pump.clock.set(now // 86400, now % 86400)
            if not fresh and abs(before[0] * 86400 + before[1] - now) > RTC_SLACK_S:
                pump.record(events.CLOCK_SET, before[0], before[1], pump.clock.day, pump.clock.tod_s)
            pump.alarms.set(alarms.CLOCK_UNCERTAIN, False, pump.now_s())  # it has a clock to trust
        self.start_fluid(fresh)
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
            pump.catheter.assume_primed(DEAD_VOLUME_NL)
            pump.device["catheter"] = [[DEMO_CATHETER_MM, DEAD_VOLUME_NL]]
            if self.persist is not None:
                self.persist.save()

    def save(self):
        if self.persist:
            self.persist.save(clean=True)
        self.save_fluid()

    # -- the fluid model: physics beside the pump (docs/fluid-model.md) -------
    def start_fluid(self, fresh):
        # The truth as it was before this boot; a new pump gets a new one.
        pump, board = self.pump, self.board
        fluid = None if fresh or not self.fluid_path else FluidModel.load(self.fluid_path)
        if fluid is None and fresh:
            fluid = FluidModel(pump.reservoir.capacity_nl, pump.stroke_nl, primed=not self.opts.get("blank"))
        elif fluid is None:
            t = pump.therapy
            fluid = FluidModel.adopt(pump.reservoir.capacity_nl, pump.stroke_nl, pump.reservoir.remaining_nl,
                                     t.drug if t else None, t.conc_ng_ml if t else 0)
        self.fluid = board.fluid = fluid
        fluid.sync(board)
        self.watch_refills()

    def watch_refills(self):
        # The syringe injects what the clinician injects: the model learns of
        # fills and refills from the ones the pump carries out (bench
        # equipment around the pump object; firmware/ knows nothing of it).
        pump, fluid = self.pump, self.fluid
        refill, fill, program = pump.refill, pump.reservoir.fill, pump.program

        def drug():
            t = pump.therapy
            return (t.drug, t.conc_ng_ml) if t else (None, 0)

        def refill_seen(withdrawn_nl, added_nl, rx=None, override=False, check=False):
            fluid.learn(*drug())
            result = refill(withdrawn_nl, added_nl, rx, override, check)
            if not check:
                fluid.refill(withdrawn_nl, added_nl, *drug())
            return result

        def fill_seen(volume_nl):
            fill(volume_nl)
            fluid.fill(volume_nl, *drug())

        def program_seen(rx, override=False, check=False):
            result = program(rx, override, check)
            fluid.learn(*drug())  # a first fill's drug is named by its first prescription
            return result

        pump.refill = refill_seen
        pump.reservoir.fill = fill_seen
        pump.program = program_seen

    def save_fluid(self):
        if self.fluid_path:
            self.fluid.settle(self.board, True)  # the time since the last stroke too
            self.fluid.save(self.fluid_path)

    # -- loop ----------------------------------------------------------------
    def run(self):
        virtual = self.board.clock.virtual
        period = self.board.TICK_MS
        next_tick = time.ticks_ms()
        ticks = 0
        try:
            while self.alive:
                if virtual:
                    timeout = -1
                else:
                    wait = time.ticks_diff(next_tick, time.ticks_ms())
                    if wait <= 0:
                        if -wait > self.tick_late_ms:
                            self.tick_late_ms = -wait  # what held the tick (the link, the bench, the host)
                        self.pump.tick()
                        self.fluid.settle(self.board)
                        ticks += 1
                        if ticks % FLUID_SAVE_TICKS == 0:
                            self.save_fluid()
                        if self.pump.needs_service():
                            self.pump.service()
                        next_tick = time.ticks_add(next_tick, period)
                        if time.ticks_diff(next_tick, time.ticks_ms()) < 0:
                            next_tick = time.ticks_add(time.ticks_ms(), period)  # overrun: no burst
                        continue
                    timeout = wait
                if self.link and self.link.backlog():
                    self.link.poll()  # a bounded share of what was read, then the tick again
                    continue
                self.set_idle(virtual)
                events = self.poller.poll(timeout)
                self.set_idle(False)
                for obj, event in events:
                    self.dispatch(obj, event)
        except PowerLoss:
            self.save_fluid()  # the pump saves nothing, but the fluid went where it went
            print(POWER_CUT_LINE)  # the launcher's reason for the stop
            return
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
                self.fluid.settle(self.board, True)  # a reading, or new rates, from now on
                try:
                    reply = self.bench_command(req)
                except PowerLoss as e:
                    raise e  # (not a bare raise: the native build cannot compile one)
                except Exception as e:  # an emulator bug must not stop the pump
                    reply = _refused("%s failed: %s: %s" % (_shown(req.get("cmd")), type(e).__name__, e))
                self.bench.reply(client, reply)
                self.save_fluid()  # the truth survives even a SIGKILL from outside, as of now
        elif self.link and obj is self.pty.stream:
            if event & (select.POLLHUP | select.POLLERR):
                self.alive = False  # the launcher is gone: shut down cleanly
                return
            self.link.poll()  # bounded (firmware/link.py): the loop comes back for the rest
            if self.pump.needs_service():
                self.pump.service()

    # -- bench commands (docs/bench-port.md) -------------------------------
    def bench_command(self, req):
        cmd = req.get("cmd")
        entry = BENCH_COMMANDS.get(cmd) if isinstance(cmd, str) else None
        if entry is None:
            what = "unknown command " + _shown(cmd) if "cmd" in req else "no \"cmd\" in the request"
            return _refused("%s (commands: %s)" % (what, ", ".join(sorted(BENCH_COMMANDS))))
        handler, spec = entry
        try:
            args = _arguments(spec, req)
            reply = handler(self, args)
        except BenchError as e:
            return _refused("%s: %s" % (cmd, e))
        reply["ok"] = True
        return reply

    def bench_status(self, args):
        pump, board, motor = self.pump, self.board, self.board.motor
        return {"reset_cause": self.cause, "alarms": [a["name"] for a in pump.alarms.listing(pump.now_s())],
                "strokes_by_kind": list(pump.reservoir.strokes),
                "tone_hz": board.tone_hz, "state": pump.status()["state"], "board_ms": board.clock.elapsed_ms,
                "virtual": board.clock.virtual, "day": pump.clock.day, "tod_s": pump.clock.tod_s,
                "running": pump.sched.running, "strokes": motor.completed, "failed": motor.failed,
                "remaining_nl": pump.reservoir.remaining_nl, "stroke_nl": pump.stroke_nl,
                "battery_mv": board.battery, "pressure_mmhg": board.pressure, "stalled": motor.stalled,
                "intermittent": motor.intermittent,
                "flash_failing": self.flash_chip.failing if self.flash_chip else False,
                "code": self.opts.get("code", "source")}

    def bench_tick_lateness(self, args):
        late, self.tick_late_ms = self.tick_late_ms, 0
        return {"late_max_ms": late}

    def bench_advance(self, args):
        if not self.board.clock.virtual:
            raise BenchError("needs virtual time (start the emulator with --virtual)")
        run_virtual(self.pump, args["ms"])
        return self.bench_status(args)

    def bench_strokes(self, args):
        motor = self.board.motor
        times, first = motor.times(args["first"], args["limit"])
        return {"count": motor.completed, "first": first, "times": times}

    def bench_motor(self, args):
        motor = self.board.motor
        if "stall" in args:
            motor.stalled = args["stall"]
        if "intermittent" in args:
            motor.intermittent = args["intermittent"]
        return {"stalled": motor.stalled, "intermittent": motor.intermittent}

    def bench_battery(self, args):
        self.board.battery = args["mv"]
        return {"mv": self.board.battery}

    def bench_pressure(self, args):
        self.board.pressure = args["mmhg"]
        return {"mmhg": self.board.pressure}

    def bench_power_cut(self, args):
        raise PowerLoss()

    def bench_hang(self, args):
        # A hung loop: nothing feeds the watchdog any more.
        if self.board.watchdog is None:
            raise BenchError("needs the watchdog (an emulator started with --wdt-ms and --image): "
                             "without it the emulator would hang for good")
        while True:
            pass

    def bench_soft_reset(self, args):
        # machine.soft_reset(): the board restarts without saving anything.
        if not self.marker:
            raise BenchError("needs a flash image (start the emulator with --image)")
        self.save_fluid()
        reset(self.marker, hal.RESET_SOFT)

    def bench_fault(self, args):
        # An internal fault in the loop: the battery reading starts raising.
        def broken():
            raise RuntimeError("bench-injected fault: battery ADC read failed")

        self.board.battery_mv = broken
        return {}

    def bench_corrupt(self, args):
        # A bit flips in the prescription held in RAM.
        self.pump.sched.step_rate[0] ^= 1 << args["bit"]
        return {}

    def bench_flash_fault(self, args):
        # The flash chip refuses programs and erases while `on` (reads work).
        if self.flash_chip is None:
            raise BenchError("needs a flash image (start the emulator with --image)")
        self.flash_chip.failing = args["on"]
        return {"failing": self.flash_chip.failing}

    def bench_spin(self, args):
        # A motor driver fault: the motor turns `strokes` with no stroke commanded.
        self.board.motor.uncommanded += args["strokes"]
        return {}

    def bench_runaway(self, args):
        # A scheduler fault: it suddenly asks for a burst of strokes.
        self.pump.sched.owed_basal += args["strokes"]
        return {}

    def bench_shutdown(self, args):
        self.alive = False
        return {}

    # -- the physical path (boards/unix/fluid_model.py, docs/fluid-model.md) --
    def bench_fluid(self, args):
        return self.fluid.reading()

    def bench_stroke_error(self, args):
        fluid = self.fluid
        for name in ("bias_ppm", "noise_ppm", "drift_ppm_per_day", "temp_dc"):
            if name in args:
                setattr(fluid, name, args[name])
        if "seed" in args:
            fluid.reseed(args["seed"])
        return fluid.params()

    def bench_occlusion(self, args):
        fluid = self.fluid
        fluid.set_occluded(args["on"])
        fluid.sync(self.board)  # the sensor reads the new pressure from the next tick
        return {"occluded": fluid.occluded, "pressure_mmhg": fluid.pressure_mmhg(), "held_nl": fluid.held_nl,
                "release_last_nl": fluid.release_last_nl}

    def bench_disconnect(self, args):
        self.fluid.leak_pct = args["leak_pct"] if args["on"] else 0
        return {"leak_pct": self.fluid.leak_pct}

    def bench_pocket_fill(self, args):
        self.fluid.pocket_fill_pct = args["pct"]
        return {"pocket_fill_pct": self.fluid.pocket_fill_pct}

    def bench_septum_leak(self, args):
        self.fluid.septum_nl_per_day = args["nl_per_day"]
        return {"septum_nl_per_day": self.fluid.septum_nl_per_day}

    def bench_wear(self, args):
        self.fluid.wear_ppm_per_day = args["ppm_per_day"]
        return {"wear_ppm_per_day": self.fluid.wear_ppm_per_day, "wear_ppm": self.fluid.wear_ppm()}


class BenchError(Exception):
    # A bench request refused before it changed anything: the reply says why.
    pass


# Bench command arguments: (type, lowest, highest, default). REQUIRED: the
# request must give it; KEEP: left as it is when not given.
REQUIRED = "required"
KEEP = "unchanged"
ADVANCE_MAX_MS = 366 * 86400000  # one request stays a bounded wait (a long int on a 31-bit port)
STROKES_PAGE_MAX = const(4096)  # times in one reply (about 50 KB of JSON)
SEPTUM_LEAK_MAX_NL_DAY = const(20000000)  # a whole reservoir a day


def _int(lo, hi, default=REQUIRED):
    return (int, lo, hi, default)


def _bool(default=REQUIRED):
    return (bool, False, True, default)


# The dispatch table: command -> (handler, {argument: spec}). Only these are
# answered; docs/bench-port.md documents each (tests/e2e/test_bench_port.py
# checks that the two agree).
BENCH_COMMANDS = {
    "status": (Emulator.bench_status, {}),
    "tick_lateness": (Emulator.bench_tick_lateness, {}),
    "advance": (Emulator.bench_advance, {"ms": _int(0, ADVANCE_MAX_MS)}),
    "strokes": (Emulator.bench_strokes, {"first": _int(0, None, 0), "limit": _int(1, STROKES_PAGE_MAX, 1000)}),
    "motor": (Emulator.bench_motor, {"stall": _bool(KEEP), "intermittent": _int(0, 1000, KEEP)}),
    "battery": (Emulator.bench_battery, {"mv": _int(0, 5000)}),
    "pressure": (Emulator.bench_pressure, {"mmhg": _int(0, 1000)}),
    "fault": (Emulator.bench_fault, {}),
    "corrupt": (Emulator.bench_corrupt, {"bit": _int(0, 31, 12)}),
    "flash_fault": (Emulator.bench_flash_fault, {"on": _bool(True)}),
    "spin": (Emulator.bench_spin, {"strokes": _int(1, 1000, 1)}),
    "runaway": (Emulator.bench_runaway, {"strokes": _int(1, 100000, 1000)}),
    "power_cut": (Emulator.bench_power_cut, {}),
    "hang": (Emulator.bench_hang, {}),
    "soft_reset": (Emulator.bench_soft_reset, {}),
    "shutdown": (Emulator.bench_shutdown, {}),
    "fluid": (Emulator.bench_fluid, {}),
    "stroke_error": (Emulator.bench_stroke_error, {
        "bias_ppm": _int(-500000, 500000, KEEP), "noise_ppm": _int(0, 200000, KEEP),
        "drift_ppm_per_day": _int(-20000, 20000, KEEP), "seed": _int(0, None, KEEP), "temp_dc": _int(340, 420, KEEP)}),
    "occlusion": (Emulator.bench_occlusion, {"on": _bool(True)}),
    "disconnect": (Emulator.bench_disconnect, {"on": _bool(True), "leak_pct": _int(0, 100, 100)}),
    "pocket_fill": (Emulator.bench_pocket_fill, {"pct": _int(0, 100)}),
    "septum_leak": (Emulator.bench_septum_leak, {"nl_per_day": _int(0, SEPTUM_LEAK_MAX_NL_DAY)}),
    "wear": (Emulator.bench_wear, {"ppm_per_day": _int(0, 20000)}),
}


def _arguments(spec, req):
    # The request's arguments, checked against the command's spec, defaults
    # filled in; BenchError (nothing done yet) for anything else.
    for name in req:
        if name != "cmd" and name not in spec:
            raise BenchError("unknown argument %s (arguments: %s)" % (_shown(name), ", ".join(sorted(spec)) or "none"))
    args = {}
    for name, (typ, lo, hi, default) in spec.items():
        if name not in req:
            if default is REQUIRED:
                raise BenchError("'%s' is required: %s" % (name, _wanted(typ, lo, hi)))
            if default is not KEEP:
                args[name] = default
            continue
        v = req[name]
        # JSON true is no integer here, nor 1 a boolean
        if type(v) is not typ or (typ is int and (v < lo or (hi is not None and v > hi))):
            raise BenchError("'%s' must be %s, got %s" % (name, _wanted(typ, lo, hi), _shown(v)))
        args[name] = v
    return args


def _wanted(typ, lo, hi):
    if typ is bool:
        return "true or false"
    if hi is None:
        return "an integer >= %d" % lo
    return "an integer from %d to %d" % (lo, hi)


def _shown(v):
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _refused(why):
    return {"ok": False, "error": "bench: " + why}


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


def main(argv, code="source"):
    opts = parse_args(argv)
    opts["code"] = code
    emu = Emulator(opts)
    print("emulator: ready (%s code)" % code)
    emu.run()
