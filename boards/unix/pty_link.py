# Programmer link of the emulated board: the master side of a pseudo-terminal
# created by the host launcher (the unix port cannot open one itself) and
# passed in as an inherited file descriptor. It is the byte transport under
# firmware/link.py: read_into() and write(), both non-blocking.
import select

from micropython import const

_WRITE_TRIES = const(4)


class PtyLink:
    def __init__(self, fd, poller):
        self.stream = open(fd, "r+b")
        poller.register(self.stream, select.POLLIN)

    def read_into(self, buf):
        # What is there now, 0 when nothing (the fd is non-blocking).
        try:
            return self.stream.readinto(buf) or 0
        except OSError:  # EAGAIN
            return 0

    def write(self, data):
        # Returns the bytes written. A full pty buffer (no programmer reading)
        # takes part of a frame or none; the link never waits for it.
        mv = memoryview(data)
        n = 0
        for _ in range(_WRITE_TRIES):
            try:
                n += self.stream.write(mv[n:]) or 0
            except OSError:
                break
            if n >= len(data):
                break
        return n
