# Clocks of the emulated board. Both present ticks the way time.ticks_ms does
# (wrapping), and can start anywhere in the ticks range so wrap-around is
# exercised. VirtualClock moves only when told; RealClock follows the host.
#
# The ticks value is kept wrapped and moved by small deltas: on a 31-bit
# port (the RP2040) ticks wrap at 2^30 and ticks_add takes |delta| < 2^29
# only, so adding the whole time since power-up would fail after 6.2 days.
# `elapsed_ms` is bench time since power-up: it grows past 2^30 (a heap long
# int on a 31-bit port), so the board's tick path only stores it, never
# computes with it (docs/integers.md).
import time

from micropython import const

_CHUNK_MS = const(1 << 28)  # a ticks_add delta every port accepts


class VirtualClock:
    virtual = True

    def __init__(self, start_ticks=0):
        self.ticks = time.ticks_add(start_ticks, 0)
        self.elapsed_ms = 0  # since the board powered up

    def ticks_ms(self):
        return self.ticks

    def advance(self, ms):
        # Bench side: the only place virtual time moves.
        self.elapsed_ms += ms
        while ms > _CHUNK_MS:
            self.ticks = time.ticks_add(self.ticks, _CHUNK_MS)
            ms -= _CHUNK_MS
        self.ticks = time.ticks_add(self.ticks, ms)


class RealClock:
    virtual = False

    def __init__(self, start_ticks=0):
        self.ticks = time.ticks_add(start_ticks, 0)
        self.host = time.ticks_ms()
        self.elapsed_ms = 0

    def ticks_ms(self):
        # Called every loop tick, so the host delta is always small. Only in
        # the real-time emulator does elapsed_ms move here (a long int after
        # 12.4 days of real time on a 31-bit port; a Pico has no such clock).
        now = time.ticks_ms()
        d = time.ticks_diff(now, self.host)
        self.host = now
        self.ticks = time.ticks_add(self.ticks, d)
        self.elapsed_ms += d
        return self.ticks
