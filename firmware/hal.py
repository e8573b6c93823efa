# The board interface: everything physical the core uses, and nothing else.
# Each board (boards/unix, boards/pico) provides a `Board` with these methods;
# the core never imports `machine`. All methods used on the tick path must not
# allocate.
from micropython import const

# Motor: one stroke at a time. The board reports whether it completed.
STROKE_BUSY = const(0)
STROKE_DONE = const(1)
STROKE_FAILED = const(2)  # not confirmed by the motor feedback: not delivered

# Reset causes, as far as the board can tell them apart.
RESET_POWER_ON = const(0)
RESET_WATCHDOG = const(1)
RESET_SOFT = const(2)
RESET_POWER_LOSS = const(3)  # power died with state not closed cleanly


class Board:
    MODEL = "generic"
    STROKE_NL = 500  # calibration: volume of one motor stroke
    RESERVOIR_NL = 20000000  # model: 20 mL reservoir
    TICK_MS = 100
    WDT_MS = 8000
    STALL_STROKES = 3  # consecutive unconfirmed strokes that mean a stall
    OCCLUSION_MMHG = 1 << 20  # catheter pressure meaning occlusion (no sensor: never)
    BATTERY_ERI_MV = 2900  # elective replacement indicator
    BATTERY_EOS_MV = 2700  # end of service: therapy stops

    def ticks_ms(self):  # monotonic clock, wraps as time.ticks_ms does
        raise NotImplementedError

    def motor_begin(self):  # start one stroke
        raise NotImplementedError

    def motor_poll(self):  # STROKE_BUSY, STROKE_DONE or STROKE_FAILED
        raise NotImplementedError

    def motor_ms_left(self):  # ms until the running stroke resolves
        raise NotImplementedError

    def motor_stop(self):  # de-energise now; the stroke in progress fails
        raise NotImplementedError

    def motor_uncommanded(self):  # strokes of motion seen since last asked, with no stroke commanded
        return 0

    def pressure_mmhg(self):  # catheter pressure, or -1 without a sensor
        return -1

    def battery_mv(self):
        raise NotImplementedError

    def buzzer(self, tone_hz):  # 0 silences
        pass

    def led(self, on):
        pass

    def wdt_feed(self):
        pass

    def reset_cause(self):
        return RESET_POWER_ON

    def flash_dir(self):  # directory on the board's littlefs for state files
        raise NotImplementedError
