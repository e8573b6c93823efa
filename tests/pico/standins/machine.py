# Stand-in for the rp2 port's `machine`, for running boards/pico on the unix
# port. It behaves like the hardware where the board depends on it, on a
# virtual clock the test drives:
#   - Timer: fires at its period as advance()/idle() move the clock; the
#     callback runs from the main thread between the test's statements, as
#     micropython.schedule runs a soft callback, and under heap_lock (the pump
#     requires its tick to allocate nothing; a hard IRQ cannot allocate).
#   - WDT: timeout limited as on the RP2040; not fed within its timeout, the
#     board resets: WatchdogReset is raised out of advance()/idle() and
#     `bites` counts it. Once started it cannot be stopped.
#   - reset(): HardReset; like rp2's watchdog reboot it reads back as WDT_RESET.
#   - Pin: levels driven by the test (drive()), edges call irq handlers
#     (hard ones under heap_lock); outputs record their level.
#   - ADC: read_u16 returns what the test set, quantised to 12 bits.
#   - PWM: one frequency per slice (GPn -> slice n/2 mod 8), duty per channel;
#     pulses() counts the output's rising edges.
# Test helpers are the lower-case module functions below the classes.
import time

import micropython

CHIP = "RP2040"
_WDT_MAX = {"RP2040": 8388, "RP2350": 16777}
_GPIO_COUNT = 30
_ADC_BASE = 26
_TEMP_CHANNEL = 4
_VREF_MV = 3300
_PWM_MIN_HZ = 8  # 125 MHz / (255.9 * 65536): below this rp2 raises ValueError
_PWM_MAX_HZ = 62500000

PWRON_RESET = 1
WDT_RESET = 3


class WatchdogReset(BaseException):
    # The chip reset: nothing in the firmware may catch it.
    pass


class HardReset(BaseException):
    pass


class Clock:
    def __init__(self):
        self.start = 0
        self.now = 0  # ms since power-up

    def ticks_ms(self):
        return time.ticks_add(self.start, self.now)  # wraps as the board's ticks_diff expects


clock = Clock()
_timers = []
_pwms = []
_lines = {}
_adc_raw = [0] * 5
_slice_hz = [0] * 8
_wdt = None
_reset_cause = PWRON_RESET
resets = 0  # chip resets of any kind
bites = 0  # of them, by the watchdog timing out
strict_callbacks = True  # timer and hard-IRQ callbacks under heap_lock


def _call_locked(cb, arg):
    if not strict_callbacks:
        cb(arg)
        return
    micropython.heap_lock()
    try:
        cb(arg)
    finally:
        micropython.heap_unlock()


# -- pins -----------------------------------------------------------------
class _Line:
    def __init__(self, gpio):
        self.gpio = gpio
        self.mode = -1
        self.pull = -1
        self.out = 0  # output latch
        self.driven = None  # level the test drives, None = undriven
        self.handler = None
        self.trigger = 0
        self.hard = False
        self.pwm = None
        self.irq_calls = 0

    def level(self):
        if self.mode == Pin.OUT:
            return self.out
        if self.driven is not None:
            return self.driven
        return 1 if self.pull == Pin.PULL_UP else 0


def _gpio(id):
    if isinstance(id, Pin):
        return id._line.gpio
    if id == "LED":
        return 25  # Pico and Pico 2
    if isinstance(id, str) and id.startswith("GP"):
        id = int(id[2:])
    if not isinstance(id, int) or not 0 <= id < _GPIO_COUNT:
        raise ValueError("invalid pin")
    return id


def _line(gpio):
    line = _lines.get(gpio)
    if line is None:
        line = _lines[gpio] = _Line(gpio)
    return line


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        self._line = _line(_gpio(id))
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None):
        line = self._line
        if mode != -1:
            line.mode = mode
        if pull != -1:
            line.pull = pull
        if value is not None:
            line.out = 1 if value else 0

    def value(self, x=None):
        if x is None:
            return self._line.level()
        self._line.out = 1 if x else 0
        return None

    def on(self):
        self._line.out = 1

    def off(self):
        self._line.out = 0

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, *, hard=False):
        line = self._line
        line.handler, line.trigger, line.hard = handler, trigger, hard
        return None


# -- ADC ------------------------------------------------------------------
class ADC:
    def __init__(self, id):
        if isinstance(id, Pin):
            gpio = id._line.gpio
            if not _ADC_BASE <= gpio < _ADC_BASE + 4:
                raise ValueError("Pin doesn't have ADC capabilities")
            self._channel = gpio - _ADC_BASE
        elif isinstance(id, int) and 0 <= id <= _TEMP_CHANNEL:
            self._channel = id
        else:
            raise ValueError("invalid ADC channel")

    def read_u16(self):
        raw = _adc_raw[self._channel]
        return (raw << 4) | (raw >> 8)  # as rp2 scales its 12-bit result


# -- PWM ------------------------------------------------------------------
def _check_hz(hz):
    if not _PWM_MIN_HZ <= hz <= _PWM_MAX_HZ:
        raise ValueError("freq out of range")


class PWM:
    def __init__(self, dest, *, freq=None, duty_u16=None):
        line = _line(_gpio(dest))
        line.mode = Pin.ALT
        line.pwm = self
        _pwms.append(self)
        self.gpio = line.gpio
        self.slice = (line.gpio >> 1) % 8
        self.duty = 0
        self.high_since = -1  # clock.now when the output started toggling
        self.edges = 0  # rising edges before high_since
        self.edge_ms_hz = 0  # sub-edge remainder, in ms*Hz
        self.changes = 0
        if freq is not None:
            self.freq(freq)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)

    def _bank(self):
        # Count the edges of the run so far before anything changes.
        if self.high_since >= 0:
            acc = self.edge_ms_hz + (clock.now - self.high_since) * _slice_hz[self.slice]
            self.edges += acc // 1000
            self.edge_ms_hz = acc % 1000
            self.high_since = clock.now

    def freq(self, hz=None):
        if hz is None:
            return _slice_hz[self.slice]
        _check_hz(hz)
        for p in _pwms:  # the other channel of the slice changes too
            if p.slice == self.slice:
                p._bank()
        _slice_hz[self.slice] = hz
        self.changes += 1
        return None

    def duty_u16(self, duty=None):
        if duty is None:
            return self.duty
        if not 0 <= duty <= 65535:
            raise ValueError("duty out of range")
        self._bank()
        if duty and self.high_since < 0:
            self.high_since = clock.now
        elif not duty:
            self.high_since = -1
        self.duty = duty
        self.changes += 1
        return None

    def deinit(self):
        self.duty_u16(0)

    def pulses(self):
        self._bank()
        return self.edges


# -- Timer ----------------------------------------------------------------
class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, *, mode=PERIODIC, period=-1, callback=None, freq=None, hard=False):
        if id != -1:
            raise ValueError("only virtual timers (id -1) on rp2")
        self.active = False
        self.fired = 0
        _timers.append(self)
        if period != -1 or freq is not None:
            self.init(mode=mode, period=period, callback=callback, freq=freq, hard=hard)

    def init(self, *, mode=PERIODIC, period=-1, callback=None, freq=None, hard=False):
        if freq is not None:
            period = 1000 // freq
        if period < 1:
            raise ValueError("period")
        self.mode, self.period, self.callback, self.hard = mode, period, callback, hard
        self.due = clock.now + period
        self.active = True

    def deinit(self):
        self.active = False


# -- watchdog -------------------------------------------------------------
class WDT:
    def __init__(self, id=0, timeout=5000):
        global _wdt
        if timeout > _WDT_MAX[CHIP]:
            raise ValueError("timeout exceeds %d" % _WDT_MAX[CHIP])
        self.timeout = timeout
        self.fed = clock.now
        self.feeds = 0
        _wdt = self

    def feed(self):
        self.fed = clock.now
        self.feeds += 1


# -- machine functions ----------------------------------------------------
def reset_cause():
    return _reset_cause


def _chip_reset():
    # Everything stops; rp2 reads any watchdog-driven reboot as WDT_RESET.
    global _wdt, _reset_cause, resets
    _wdt = None
    resets += 1
    _reset_cause = WDT_RESET
    for t in _timers:
        t.active = False


def reset():
    # rp2: watchdog_reboot(), so reset_cause() says WDT_RESET afterwards.
    _chip_reset()
    raise HardReset()


def unique_id():
    return b"\xe6\x60\x58\x38\x83\x2b\x1c\x2d"


def freq():
    return 125000000


def disable_irq():
    return 0


def enable_irq(state):
    pass


def idle():
    # Wait for the next interrupt: the next timer, or within 1 ms (USB
    # start-of-frame interrupts wake a connected Pico every millisecond).
    step = 1
    nxt = _next_due(False)
    if nxt is not None and nxt - clock.now > step:
        step = nxt - clock.now
    advance(step)


# -- test helpers ---------------------------------------------------------
def _next_due(watchdog=True):
    nxt = None
    for t in _timers:
        if t.active and (nxt is None or t.due < nxt):
            nxt = t.due
    if watchdog and _wdt is not None and (nxt is None or _wdt.fed + _wdt.timeout < nxt):
        nxt = _wdt.fed + _wdt.timeout
    return nxt


def advance(ms):
    # Move the clock by ms, firing timers and the watchdog in time order.
    global bites
    end = clock.now + ms
    while True:
        nxt = _next_due()
        clock.now = end if nxt is None or nxt > end else nxt
        if _wdt is not None and clock.now - _wdt.fed >= _wdt.timeout:
            bites += 1
            _chip_reset()
            raise WatchdogReset()
        for t in _timers:
            if t.active and t.due <= clock.now:
                if t.mode == Timer.PERIODIC:
                    t.due += t.period
                else:
                    t.active = False
                t.fired += 1
                _call_locked(t.callback, t)
        if clock.now >= end:
            return


def drive(gpio, level):
    # The outside world sets an input; a matching edge calls its irq handler.
    line = _line(gpio)
    old = line.level()
    line.driven = level
    new = line.level()
    if line.handler is None or old == new:
        return
    edge = Pin.IRQ_RISING if new else Pin.IRQ_FALLING
    if line.trigger & edge:
        line.irq_calls += 1
        if line.hard:
            _call_locked(line.handler, Pin(gpio))
        else:
            line.handler(Pin(gpio))


def pulse(gpio, active=0):
    # One pulse to the active level and back (an index passing the sensor).
    drive(gpio, active)
    drive(gpio, 1 - active)


def level(gpio):
    return _line(gpio).level()


def line(gpio):
    return _line(gpio)


def set_adc_mv(gpio, mv):
    raw = mv * 4095 // _VREF_MV
    _adc_raw[gpio - _ADC_BASE] = max(0, min(4095, raw))


def pwm(gpio):
    return _line(gpio).pwm


def wdt():
    return _wdt


def set_reset_cause(cause):
    global _reset_cause
    _reset_cause = cause
