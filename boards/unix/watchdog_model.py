# Watchdog of the emulated board, in real time: a thread that resets the board
# when the loop stops feeding it. A reset kills the whole emulator process,
# leaving a marker with the cause for the launcher, which boots it again.
# A loop waiting for the bench in virtual time is idle, not hung.
import _thread
import os
import select
import time

import hal

_POLL_MS = 100


class WatchdogModel:
    def __init__(self, timeout_ms, marker_path):
        self.timeout_ms = timeout_ms
        self.marker_path = marker_path
        self.fed = time.ticks_ms()
        self.idle = False
        self.before_reset = None  # bench equipment that must outlive the reset (the fluid model's save)
        # Its sleep: a poll of nothing blocks in the kernel for the whole
        # period, where time.sleep_ms on the threaded unix port wakes every
        # 0.5 ms (2,000 wake-ups a second for as long as the emulator runs).
        self._nap = select.poll()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self.fed = time.ticks_ms()

    def _watch(self):
        while True:
            self._nap.poll(_POLL_MS)
            if not self.idle and time.ticks_diff(time.ticks_ms(), self.fed) > self.timeout_ms:
                if self.before_reset is not None:
                    try:
                        self.before_reset()
                    except Exception as e:  # the reset happens whatever the bench's save does
                        print("watchdog: before the reset: %s: %s" % (type(e).__name__, e))
                reset(self.marker_path, hal.RESET_WATCHDOG)


def reset(marker_path, cause):
    # The board resets now: nothing else runs, nothing is saved.
    with open(marker_path, "w") as f:
        f.write("%d\n" % cause)
    with open("/proc/self/stat") as f:
        pid = f.read().split()[0]
    os.system("kill -9 " + pid)
