# Watchdog of the emulated board, in real time: a thread that resets the board
# (kills the whole emulator process, leaving a marker for the launcher, which
# boots it again with reset cause "watchdog") when the loop stops feeding it.
# A loop waiting for the bench in virtual time is idle, not hung.
import _thread
import os
import time

_POLL_MS = 100


class WatchdogModel:
    def __init__(self, timeout_ms, marker_path):
        self.timeout_ms = timeout_ms
        self.marker_path = marker_path
        self.fed = time.ticks_ms()
        self.idle = False
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self.fed = time.ticks_ms()

    def _watch(self):
        while True:
            time.sleep_ms(_POLL_MS)
            if not self.idle and time.ticks_diff(time.ticks_ms(), self.fed) > self.timeout_ms:
                self._bite()

    def _bite(self):
        with open(self.marker_path, "w") as f:
            f.write("watchdog reset\n")
        with open("/proc/self/stat") as f:
            pid = f.read().split()[0]
        os.system("kill -9 " + pid)
