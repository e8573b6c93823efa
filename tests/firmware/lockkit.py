# Drives the pump with the heap locked around its tick path, and proves the
# tick path allocated nothing.
#
# Locked: Pump.tick (the Pico's timer callback) and Pump.ms_to_next_event
# (called between ticks by a virtual-time loop). Not locked: the bench moving
# virtual time (its elapsed-ms count is a long int after 12.4 days on a
# 31-bit port) and Pump.service (the main loop's deferred work, which may
# allocate). Pump.tick catches every exception, MemoryError included, and
# turns it into its safe state, so an allocation there shows as a fault, not
# as an exception: every helper ends by asserting there was none.
import micropython

import alarms

STEP_MS = 250  # a real-time loop's tick period


def tick_fault(pump):
    # What put the pump in its safe state from inside a tick, or None.
    if pump.fault is not None:
        return pump.fault
    if pump.alarms.active & (1 << alarms.INTERNAL_FAULT):
        return "internal fault alarm without a recorded exception"
    return None


def assert_no_tick_fault(pump):
    fault = tick_fault(pump)
    assert fault is None, "the tick path faulted (an allocation raises MemoryError): %r" % (fault,)


def locked_tick(pump):
    micropython.heap_lock()
    try:
        pump.tick()
    finally:
        micropython.heap_unlock()


def _locked_next_event(pump):
    micropython.heap_lock()
    try:
        return pump.ms_to_next_event()
    finally:
        micropython.heap_unlock()


def _service(pump):
    if pump.needs_service():
        pump.service()


def locked_ticks(pump, ms, step_ms=STEP_MS):
    # A real-time loop: one tick every step_ms.
    clock = pump.board.clock
    for _ in range(ms // step_ms):
        clock.advance(step_ms)
        locked_tick(pump)
        _service(pump)
    assert_no_tick_fault(pump)


def locked_jumps(pump, ms):
    # Virtual time: from one due event to the next, exactly `ms` in all.
    clock = pump.board.clock
    left = ms
    while left > 0:
        step = _locked_next_event(pump)
        if step < 1:
            step = 1
        if step > left:
            step = left
        clock.advance(step)
        left -= step
        locked_tick(pump)
        _service(pump)
    assert_no_tick_fault(pump)


def locked_polls(link, n=100):
    # n link polls under heap_lock. poll() turns any exception, MemoryError
    # included, into a logged rejection: what it would log is kept in a slot
    # that needs no allocation and returned (None: nothing went wrong).
    seen = [None]

    def internal(e):
        seen[0] = e

    link._internal = internal
    micropython.heap_lock()
    try:
        for _ in range(n):
            link.poll()
    finally:
        micropython.heap_unlock()
    return seen[0]
