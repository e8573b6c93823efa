# Analogue sensing: battery voltage through a divider and catheter pressure
# from a ratiometric gauge sensor, both on the RP2040's 12-bit ADC, in
# integer arithmetic (floats are boxed, so they allocate, on the RP2040).
from micropython import const

from machine import ADC, Pin

SAMPLES = const(8)  # averaged per reading: the RP2040 ADC has a few LSB of noise
_RAW_SHIFT = const(4)  # read_u16() scales the 12-bit result up to 16 bits
RAW_MAX = const(4095)


class AdcInput:
    # One ADC pin read in millivolts at the pin.
    def __init__(self, gpio, vref_mv):
        self._adc = ADC(Pin(gpio))
        self._vref = vref_mv

    def mv(self):
        total = 0
        for _ in range(SAMPLES):
            total += self._adc.read_u16() >> _RAW_SHIFT
        return total * self._vref // (RAW_MAX * SAMPLES)


class Battery:
    # Battery (or VSYS) voltage: the pin sees it through a num:den divider.
    def __init__(self, gpio, vref_mv, num, den):
        self._in = AdcInput(gpio, vref_mv)
        self._num = num
        self._den = den

    def mv(self):
        return self._in.mv() * self._num // self._den


class PressureSensor:
    # Gauge pressure above the catheter's resting baseline, in mmHg; a
    # reading below the sensor's zero (noise, a vacuum) counts as 0.
    def __init__(self, gpio, vref_mv, zero_mv, span_mv, span_mmhg):
        self._in = AdcInput(gpio, vref_mv)
        self._zero = zero_mv
        self._span_mv = span_mv
        self._span_mmhg = span_mmhg

    def mmhg(self):
        above = self._in.mv() - self._zero
        if above <= 0:
            return 0
        return above * self._span_mmhg // self._span_mv
