# Programmer link transport on the Pico's USB CDC serial port, the one the
# REPL uses: stdin/stdout as bytes, polled so a read never waits. While the
# link runs Ctrl-C is ordinary data (a binary frame may contain 0x03);
# close() gives it back to the REPL.
# The interface the link layer uses: read_into(buf) -> int, write(data); the
# main loop sleeps in wait(ms).
import select
import sys

import micropython
from micropython import const

_CTRL_C = const(3)
_NO_INTERRUPT = const(-1)
# One USB full-speed packet. The rp2 port can drop data from very large
# single writes to stdout; small writes each wait for room.
_WRITE_CHUNK = const(64)


class UsbLink:
    def __init__(self, stdin=None, stdout=None):
        self._in = stdin if stdin is not None else sys.stdin.buffer
        self._out = stdout if stdout is not None else sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)
        self._byte = bytearray(1)
        self.interrupt_char = _CTRL_C  # what kbd_intr was last set to here

    def open(self):
        micropython.kbd_intr(_NO_INTERRUPT)
        self.interrupt_char = _NO_INTERRUPT

    def close(self):
        micropython.kbd_intr(_CTRL_C)
        self.interrupt_char = _CTRL_C

    def read_into(self, buf):
        # What is waiting now, up to len(buf); 0 when nothing. The rp2 port's
        # stdin blocks until a read is complete, so one polled byte at a time.
        n = 0
        limit = len(buf)
        while n < limit and self._ready():
            if not self._in.readinto(self._byte):
                break
            buf[n] = self._byte[0]
            n += 1
        return n

    def wait(self, ms):
        # Returns True as soon as a byte is waiting, False after `ms`. On rp2
        # the core idles (WFE) meanwhile, a USB interrupt wakes it, and soft
        # timer callbacks (the pump's ticks) run.
        for _ in self._poll.ipoll(ms):
            return True
        return False

    def _ready(self):
        for _ in self._poll.ipoll(0):
            return True
        return False

    def write(self, data):
        # Returns the bytes written: all of them, as the rp2 port's stdout
        # waits for room (and drops only when no host has the port open).
        view = memoryview(data)
        n = 0
        for i in range(0, len(view), _WRITE_CHUNK):
            n += self._out.write(view[i:i + _WRITE_CHUNK]) or 0
        return n
