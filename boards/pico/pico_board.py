# The Raspberry Pi Pico (RP2040; Pico 2 / RP2350 alike) behind the firmware's
# board interface: stepper mechanism with stroke confirmation, buzzer, LED,
# battery and pressure on the ADC, littlefs on the rp2 port's root.
#
# Timing. A machine.Timer calls the pump's tick every TICK_MS. On rp2 timer
# callbacks are soft (run by the scheduler between bytecodes of the main
# loop), so the main loop brackets its own work with loop_begin()/loop_end():
# a tick due meanwhile waits for loop_end() instead of running in the middle
# of a link command or of service(). The watchdog is fed at the end of each
# tick; a hung main loop holds every tick back, so it is never fed and the
# board resets. Nothing on the tick path allocates: the timer callback and
# the pump's tick are bound once, in start().
import os
import sys
import time

import micropython
from micropython import const

import machine
import rp2
from machine import WDT, Pin, Timer

import hal
import pinmap
from analog import Battery, PressureSensor
from buzzer import Buzzer
from stepper import COUNT_MASK, StrokeDrive

WDT_MAX_MS = const(8388)  # RP2040 limit (the RP2350's is 16777): fits both
# Longest sleep of the main loop (idle): how late deferred work follows what
# the pump cannot foresee (a stray index pulse's alarm record) and the link's
# session expiry; a link byte ends a sleep at once, ticks run through it.
IDLE_MAX_MS = const(1000)
_CTRL_C = const(3)
_MAINTENANCE_FLAG = "/maintenance"  # in flash_dir(): boot once into the REPL
# In flash_dir(): the last reset was deliberate. rp2's machine.reset() is a
# watchdog reboot and reads back as WDT_RESET; this tells the two apart.
REBOOT_MARKER = "/reboot"
_UNMEASURED_MV = const(3600)  # battery_mv() without a battery input (bench supply)
BENCH_MODEL = "Pico bench prototype"
DEMO_MODEL = "Pico BENCH DEMO, NO MOTOR FEEDBACK"


class PicoBoard(hal.Board):
    MODEL = BENCH_MODEL

    def __init__(self, cfg, ticks=None):
        pinmap.check(cfg)
        if self.WDT_MS > WDT_MAX_MS:
            raise ValueError("WDT_MS %d exceeds the RP2040's %d ms" % (self.WDT_MS, WDT_MAX_MS))
        self.cfg = cfg
        self._ticks = ticks if ticks is not None else time.ticks_ms
        self.motor = StrokeDrive(cfg, self._ticks)
        if self.motor.demo:
            self.MODEL = DEMO_MODEL  # Pump copies it into the identity it reports
        self._buzzer = Buzzer(cfg.BUZZER_PIN) if cfg.BUZZER_PIN is not None else None
        self._led = Pin(cfg.LED_PIN, Pin.OUT, value=0) if cfg.LED_PIN is not None else None
        self._battery = None
        if cfg.BATTERY_ADC is not None:
            self._battery = Battery(cfg.BATTERY_ADC, cfg.ADC_VREF_MV, cfg.BATTERY_RATIO_NUM, cfg.BATTERY_RATIO_DEN)
        self._pressure = None
        if cfg.PRESSURE_ADC is not None:
            self._pressure = PressureSensor(cfg.PRESSURE_ADC, cfg.ADC_VREF_MV, cfg.PRESSURE_ZERO_MV,
                                            cfg.PRESSURE_SPAN_MV, cfg.PRESSURE_SPAN_MMHG)
            self.OCCLUSION_MMHG = cfg.OCCLUSION_MMHG  # without a sensor: hal's "never"
        self._flash = cfg.FLASH_DIR
        _mkdir(self._flash)
        self._cause = self._read_cause()
        self._wdt = None
        self._timer = None
        self._tick = _not_started
        self._on_timer_cb = self._on_timer  # bound once: a tick never creates one
        self._held = False
        self._pending = False
        self._loop_tick = False  # a tick run by the main loop (idle), not the timer
        self.running = False
        self.maintenance = False
        self.ticks_run = 0
        self.ticks_deferred = 0

    # -- hal.Board ------------------------------------------------------------
    def ticks_ms(self):
        return self._ticks()

    def motor_begin(self):
        self.motor.begin()
        self.led(True)  # lit while a stroke runs: visible on the bench

    def motor_poll(self):
        r = self.motor.poll()
        if r != hal.STROKE_BUSY:
            self.led(False)
        return r

    def motor_ms_left(self):
        return self.motor.ms_left()

    def motor_stop(self):
        self.motor.stop()
        self.led(False)

    def motor_uncommanded(self):
        return self.motor.take_stray()

    def pressure_mmhg(self):
        return self._pressure.mmhg() if self._pressure is not None else -1

    def battery_mv(self):
        return self._battery.mv() if self._battery is not None else _UNMEASURED_MV

    def buzzer(self, tone_hz):
        if self._buzzer is not None:
            self._buzzer.tone(tone_hz)

    def led(self, on):
        if self._led is not None:
            self._led.value(1 if on else 0)

    def wdt_feed(self):
        if self._wdt is not None and not self._loop_tick:  # the timer's ticks only (see idle)
            self._wdt.feed()

    def reset_cause(self):
        return self._cause

    def _read_cause(self):
        # rp2 tells power-on from watchdog only, and machine.reset() is a
        # watchdog reboot too: the marker of a deliberate one (reboot(),
        # `pumpctl deploy`) makes that a soft reset. A lost-power shutdown is
        # for the persistence layer to detect (state not closed cleanly).
        deliberate = _consume(self._flash + REBOOT_MARKER)
        if machine.reset_cause() != machine.WDT_RESET:
            return hal.RESET_POWER_ON
        return hal.RESET_SOFT if deliberate else hal.RESET_WATCHDOG

    def flash_dir(self):
        return self._flash

    # -- the loop -------------------------------------------------------------
    def start(self, pump):
        # Watchdog first: from here on only ticks keep the board alive.
        self._tick = pump.tick
        self.running = True
        self._wdt = WDT(timeout=self.WDT_MS)
        self._timer = Timer(-1, mode=Timer.PERIODIC, period=self.TICK_MS, callback=self._on_timer_cb)

    def _on_timer(self, _timer):
        if self._held:
            self._pending = True
            self.ticks_deferred = (self.ticks_deferred + 1) & COUNT_MASK
            return
        self._run_tick()

    def _run_tick(self):
        self.ticks_run = (self.ticks_run + 1) & COUNT_MASK  # 2**29 ticks: 1.7 years
        self._tick()  # Pump.tick: feeds the watchdog at its end

    def loop_begin(self):
        self._held = True

    def loop_end(self):
        # Still held while a deferred tick runs, so a timer callback arriving
        # meanwhile cannot start a second tick inside it.
        while self._pending:
            self._pending = False
            self._run_tick()
        self._held = False

    def idle(self, pump, wait):
        # The main loop's rest. The core sleeps until the pump's next event,
        # a link byte or IDLE_MAX_MS: `wait(ms)` (UsbLink.wait) idles it with
        # WFE, clocks running, and returns True early on a byte; the timer's
        # ticks run meanwhile, so the watchdog is fed as ever. Not
        # lightsleep: it stops the step and buzzer PWM, the index sensor's
        # edge detection and (with no host) USB (docs/energy.md).
        # The event slept for gets its tick at once, not at the timer's next
        # tick up to TICK_MS later; an event found due with no sleep before
        # it is left to the timer, so no loop can spin on one. Such a tick
        # does not feed the watchdog: a dead timer still resets the board.
        if pump.needs_service():
            return  # deferred work first
        ms = self._ms_to_event(pump)
        if ms <= 0:
            wait(self.TICK_MS)  # the timer's next tick handles it
            return
        if wait(ms if ms < IDLE_MAX_MS else IDLE_MAX_MS) or self._ms_to_event(pump) > 0:
            return
        self._held = True  # as in loop_begin: a timer tick arriving meanwhile waits
        self._loop_tick = True
        self._run_tick()
        self._loop_tick = False
        self.loop_end()

    def _ms_to_event(self, pump):
        # ms_to_next_event counts from the pump's last tick.
        return pump.ms_to_next_event() - time.ticks_diff(self._ticks(), pump.last_ticks)

    def stop(self):
        # Ticks stop; the watchdog, if started, cannot be stopped.
        if self._timer is not None:
            self._timer.deinit()
            self._timer = None
        self.running = False
        self.motor_stop()
        self.buzzer(0)

    # -- maintenance ----------------------------------------------------------
    def enter_maintenance(self):
        # For the link's clinician command, called from the main loop after
        # its reply is written. Safe state now (motor off, buzzer off, no more
        # ticks), Ctrl-C back to the REPL, and the main loop ends at its next
        # check of `running`. The watchdog cannot be stopped once started, so
        # shutdown() then resets the board into a one-time maintenance boot:
        # REPL, no pump, no watchdog. Idempotent.
        self.stop()
        self.maintenance = True
        micropython.kbd_intr(_CTRL_C)
        if self._wdt is not None:
            try:
                _touch(self._flash + _MAINTENANCE_FLAG)
            except OSError:
                pass  # flash failing: the reboot then restarts the pump instead

    def shutdown(self):
        # After the main loop ends. A maintenance request with the watchdog
        # running reboots (into the REPL, see enter_maintenance); after a
        # crash the watchdog resets the board within WDT_MS.
        self.stop()
        if self.maintenance and self._wdt is not None:
            self.reboot()

    def reboot(self):
        # A deliberate hardware reset, recorded as such (see REBOOT_MARKER).
        _touch(self._flash + REBOOT_MARKER)
        machine.reset()

    def maintenance_at_boot(self):
        # True if this boot is for maintenance: a pending one-time request,
        # or the button held now, or the button or a Ctrl-C in the
        # BOOT_GRACE_MS window.
        if _consume(self._flash + _MAINTENANCE_FLAG) or self._button_in_grace():
            # No watchdog runs in maintenance, so the reset that ends it is
            # deliberate (machine.reset(), `pumpctl deploy`): mark it so.
            _touch(self._flash + REBOOT_MARKER)
            return True
        return False

    def _button_in_grace(self):
        # The button, or a Ctrl-C on USB (mpremote sends one), in the window.
        start = self._ticks()
        try:
            while True:
                if self._button_pressed():
                    return True
                if time.ticks_diff(self._ticks(), start) >= self.cfg.BOOT_GRACE_MS:
                    return False
                machine.idle()
        except KeyboardInterrupt:
            return True

    def _button_pressed(self):
        button = self.cfg.MAINTENANCE_BUTTON
        if button is None:
            return False
        if button == "BOOTSEL":
            return rp2.bootsel_button() == 1
        return Pin(button, Pin.IN, Pin.PULL_UP).value() == 0  # to GND when pressed

    # -- reports --------------------------------------------------------------
    def serial(self):
        # The RP2040's flash unique id: a serial number until one is set.
        return "".join("%02x" % b for b in machine.unique_id())

    def info(self):
        # For the identify/status report: what is fitted and how it is judged.
        cfg, motor = self.cfg, self.motor
        if motor.feedback:
            feedback = "GP%d, %d pulse(s) per stroke" % (cfg.MOTOR_FEEDBACK, cfg.FEEDBACK_PULSES_PER_STROKE)
        elif motor.demo:
            feedback = "none: BENCH DEMO, timed strokes counted as delivered"
        else:
            feedback = "none: every stroke fails confirmation"
        return {
            "model": self.MODEL,
            "board": sys.implementation._machine,
            "id": self.serial(),
            "motor": _fitted("stepper STEP", cfg.STEP_PIN),
            "motor_feedback": feedback,
            "bench_demo_no_feedback": motor.demo,
            "battery_sense": _fitted("ADC", cfg.BATTERY_ADC),
            "pressure_sense": _fitted("ADC", cfg.PRESSURE_ADC),
            "buzzer": _fitted("PWM", cfg.BUZZER_PIN),
            "strokes_confirmed": motor.done, "strokes_failed": motor.failed,
            "stray_index_pulses": motor.stray,
            "tick_ms": self.TICK_MS, "wdt_ms": self.WDT_MS,
        }


def _not_started():
    pass


def _fitted(what, pin):
    return "%s GP%d" % (what, pin) if pin is not None else "not fitted"


def _touch(path):
    with open(path, "w") as f:
        f.write("1")


def _consume(path):
    # True if the file was there (and now is not).
    try:
        os.remove(path)
        return True
    except OSError:
        return False


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists
