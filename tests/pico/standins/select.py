# Stand-in for the rp2 port's `select`, on the stand-in machine's virtual
# clock: a poll with a timeout is the core idling until a registered stream
# is ready or the time is up, with the clock moving meanwhile (timers fire,
# the watchdog watches), as rp2's poll runs soft timer callbacks while it
# waits. Streams answer ioctl(MP_STREAM_POLL, mask) (tests' FakeSerial).
import machine

POLLIN = 1
POLLOUT = 4
POLLERR = 8
POLLHUP = 16
_STREAM_POLL = 3

waits = []  # the timeout of every wait (ms), for the tests


class _Poll:
    def __init__(self):
        self._streams = []

    def register(self, stream, mask=POLLIN | POLLOUT):
        self.unregister(stream)
        self._streams.append((stream, mask))

    def unregister(self, stream):
        self._streams = [e for e in self._streams if e[0] is not stream]

    def modify(self, stream, mask):
        self.register(stream, mask)

    def _ready(self):
        out = []
        for stream, mask in self._streams:
            r = stream.ioctl(_STREAM_POLL, mask)
            if r:
                out.append((stream, r))
        return out

    def poll(self, timeout=-1):
        if timeout:
            waits.append(timeout)
        end = None if timeout < 0 else machine.clock.now + timeout
        while True:
            ready = self._ready()
            if ready or (end is not None and machine.clock.now >= end):
                return ready
            # Asleep until the next timer (a wake-up) or the timeout.
            nxt = machine._next_due(False)
            stop = end if nxt is None or (end is not None and end < nxt) else nxt
            if stop is None:
                raise AssertionError("a wait with nothing to end it")
            machine.advance(max(1, stop - machine.clock.now))

    def ipoll(self, timeout=-1, flags=0):
        return iter(self.poll(timeout))


def poll():
    return _Poll()
