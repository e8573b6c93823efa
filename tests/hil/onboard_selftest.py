# Runs ON the Pico (mpremote run), with the deployed modules in /lib: the
# board's own logic on the real rp2 machine module. Prints "HIL key value"
# lines for tests/hil/test_pico_hil.py. Starts no watchdog.
import gc
import sys
import time

import machine

sys.path.append("/lib")
import config  # noqa: E402
import pico_board  # noqa: E402
from pump import Pump  # noqa: E402


RUN_MS = 4000  # 40 ticks; the first stroke of the test therapy is due at 3 s


class NoWatchdog:
    # The self-test returns to the REPL: a started WDT could not be stopped.
    def __init__(self, timeout):
        self.timeout = timeout

    def feed(self):
        pass


def report(key, value):
    print("HIL", key, value)


pico_board.WDT = NoWatchdog
board = pico_board.PicoBoard(config)
pump = Pump(board)
pump.reservoir.fill(20000000)
pump.program({"drug": "morphine", "conc_ng_ml": 1000000, "steps": [{"start_s": 0, "dose_ng_day": 20000000}]})
report("battery_mv", board.battery_mv())
report("pressure_mmhg", board.pressure_mmhg())
report("reset_cause", board.reset_cause())
report("machine", sys.implementation._machine.replace(" ", "_"))
board.start(pump)
gc.collect()
gc.disable()
free = gc.mem_free()
start = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), start) < RUN_MS:
    board.loop_begin()
    board.loop_end()
    machine.idle()
report("alloc_bytes", free - gc.mem_free())
gc.enable()
board.stop()
report("ticks", board.ticks_run)
report("fault", pump.fault is not None)
report("strokes", board.motor.done + board.motor.failed)
