# Clocks of the emulated board. Both present ticks the way time.ticks_ms does
# (wrapping), and can start anywhere in the ticks range so wrap-around is
# exercised. VirtualClock moves only when told; RealClock follows the host.
import time


class VirtualClock:
    virtual = True

    def __init__(self, start_ticks=0):
        self.start = start_ticks
        self.elapsed_ms = 0  # since the board powered up

    def ticks_ms(self):
        return time.ticks_add(self.start, self.elapsed_ms)

    def advance(self, ms):
        self.elapsed_ms += ms


class RealClock:
    virtual = False

    def __init__(self, start_ticks=0):
        self.offset = start_ticks
        self.t0 = time.ticks_ms()
        self.elapsed_ms = 0

    def ticks_ms(self):
        self.elapsed_ms = time.ticks_diff(time.ticks_ms(), self.t0)
        return time.ticks_add(self.offset, self.elapsed_ms)
