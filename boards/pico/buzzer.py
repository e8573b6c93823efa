# Alarm buzzer: a piezo on a PWM pin, driven at the tone's frequency with a
# square wave. Called on every tick: it touches the PWM only when the tone
# changes, and allocates nothing.
from micropython import const

from machine import PWM, Pin

_SQUARE = const(32768)  # 50 % duty: the loudest a piezo gets from one pin
_SILENT = const(0)
_IDLE_HZ = const(1000)  # any valid PWM frequency while silent


class Buzzer:
    def __init__(self, gpio):
        self._pwm = PWM(Pin(gpio), freq=_IDLE_HZ, duty_u16=_SILENT)
        self.hz = 0

    def tone(self, hz):
        if hz == self.hz:
            return
        self.hz = hz
        if hz:
            self._pwm.freq(hz)
            self._pwm.duty_u16(_SQUARE)
        else:
            self._pwm.duty_u16(_SILENT)
