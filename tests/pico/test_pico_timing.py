# The tick timer, the main-loop bracket that defers ticks, and the watchdog:
# fed only while both the timer and the main loop run. Between passes the
# main loop sleeps until the pump's next event or a link byte.
import array

import hal
import machine
import select
from picokit import BENCH, FakeSerial, expect, make_board, run_loop
from identify_link import IdentifyLink
from pico_board import IDLE_MAX_MS
from pump import Pump
from usb_link import UsbLink

FAST = {"drug": "morphine", "conc_ng_ml": 1000000, "steps": [{"start_s": 0, "dose_ng_day": 20000000}]}
# 1 mL/day: a stroke every 43.2 s.
SLOW = {"drug": "morphine", "conc_ng_ml": 10000000, "steps": [{"start_s": 0, "dose_ng_day": 10000000}]}


class TimedHost(FakeSerial):
    # Notes when the board last wrote.
    def write(self, data):
        self.when = machine.clock.now
        return super().write(data)


def started(base=None, rx=FAST, timer_lag_ms=0, **kw):
    # `timer_lag_ms`: the tick timer starts that long after the pump's clock,
    # so its ticks fall that long after each of the pump's seconds.
    board = make_board(base, **kw)
    pump = Pump(board)
    pump.reservoir.fill(20000000)
    pump.program(rx)
    machine.advance(timer_lag_ms)
    board.start(pump)
    host = TimedHost()
    link = IdentifyLink(board, pump, UsbLink(host, host))
    link.host = host
    return board, pump, link


def test_timer_ticks_the_pump_every_tick_ms_without_allocating():
    board, pump, _ = started(BENCH_DEMO_NO_FEEDBACK=True)
    assert machine.strict_callbacks  # every callback below ran under heap_lock
    machine.advance(10000)
    assert board.ticks_run == 10000 // board.TICK_MS
    assert pump.fault is None  # an allocation would have been a MemoryError fault
    assert board.motor.done == 4  # strokes at 2.16, 4.32, 6.48, 8.64 s
    assert pump.clock.tod_s == 10


def test_healthy_loop_feeds_the_watchdog():
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True)
    wdt = machine.wdt()
    assert wdt.timeout == board.WDT_MS <= 8388
    run_loop(board, pump, link, 30000)
    assert machine.bites == 0
    assert wdt.feeds >= 30000 // board.TICK_MS - 1
    assert pump.fault is None


def test_ticks_due_while_the_main_loop_works_run_at_its_end():
    board, pump, _ = started(BENCH_DEMO_NO_FEEDBACK=True)
    board.loop_begin()
    machine.advance(350)  # e.g. a slow link command
    assert board.ticks_run == 0 and board.ticks_deferred == 3
    board.loop_end()
    assert board.ticks_run == 1  # once: the pump catches up on elapsed time
    assert pump.last_ticks == machine.clock.ticks_ms()
    machine.advance(board.TICK_MS)
    assert board.ticks_run == 2


def test_hung_main_loop_gets_a_watchdog_reset():
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True)
    run_loop(board, pump, link, 2000)
    fed = machine.wdt().fed
    board.loop_begin()  # ... and the loop never comes back: ticks keep being held
    e = expect(machine.WatchdogReset, machine.advance, 20000)
    assert isinstance(e, machine.WatchdogReset)
    assert machine.bites == 1
    assert machine.clock.now - fed == board.WDT_MS, (machine.clock.now, fed)
    assert board.ticks_deferred >= board.WDT_MS // board.TICK_MS - 1
    assert make_board().reset_cause() == hal.RESET_WATCHDOG  # as the next boot sees it


def test_a_dead_tick_timer_gets_a_watchdog_reset():
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True)
    run_loop(board, pump, link, 1000)
    board._timer.deinit()  # the tick timer dies: nothing feeds the watchdog
    expect(machine.WatchdogReset, run_loop, board, pump, link, 20000)
    assert machine.bites == 1


def test_a_stopped_board_is_reset_by_the_watchdog_it_cannot_stop():
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True)
    run_loop(board, pump, link, 1000)
    board.stop()
    assert machine.wdt() is not None
    expect(machine.WatchdogReset, machine.advance, board.WDT_MS + 1)


def test_watchdog_timeout_is_limited_as_on_the_rp2040():
    expect(ValueError, machine.WDT, 0, 8389)
    board = make_board()

    # A board class asking for more than the RP2040 allows is refused.
    class Board(type(board)):
        WDT_MS = 9000

    e = expect(ValueError, Board, board.cfg, machine.clock.ticks_ms)
    assert "8388" in str(e)


def test_reset_cause_maps_to_hal():
    board = make_board()
    assert board.reset_cause() == hal.RESET_POWER_ON
    machine.set_reset_cause(machine.WDT_RESET)  # read once, at boot
    assert board.reset_cause() == hal.RESET_POWER_ON
    assert make_board().reset_cause() == hal.RESET_WATCHDOG
    # A deliberate reboot is a watchdog reboot on rp2; its marker tells.
    board = make_board()
    expect(machine.HardReset, board.reboot)
    assert machine.reset_cause() == machine.WDT_RESET
    assert make_board().reset_cause() == hal.RESET_SOFT
    assert make_board().reset_cause() == hal.RESET_WATCHDOG  # the marker is used once


def test_ticks_keep_pace_across_a_long_run():
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True)
    run_loop(board, pump, link, 120000)
    assert pump.clock.tod_s == 120
    assert board.motor.done == 120000 // 2160
    assert board.ticks_run >= 1199


def test_counters_wrap_before_they_would_allocate_on_the_rp2040():
    import stepper

    board, pump, _ = started(BENCH)
    board.ticks_run = stepper.COUNT_MASK
    board.motor.stray = stepper.COUNT_MASK
    machine.pulse(5, 0)  # the index interrupt, under heap_lock (before the tick would take the pulses)
    machine.advance(board.TICK_MS)  # the tick, under heap_lock
    assert pump.fault is None  # an allocation would have been a MemoryError fault
    assert board.ticks_run == 0 and board.motor.stray == 0
    assert stepper.COUNT_MASK < 1 << 30


def test_the_main_loop_sleeps_between_events_and_ticks_run_through_its_sleeps():
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True, rx=SLOW)
    del select.waits[:]
    run_loop(board, pump, link, 120000)
    assert machine.bites == 0 and pump.fault is None
    assert board.motor.done == 2  # strokes due at 44 and 87 s
    assert board.ticks_run >= 120000 // board.TICK_MS - 1  # the timer's, during the sleeps
    assert max(select.waits) == IDLE_MAX_MS  # never longer
    # About a pass a second, a few more around each stroke: not a poll every millisecond.
    assert len(select.waits) <= 120000 // IDLE_MAX_MS + 20, len(select.waits)


def test_a_link_byte_ends_the_sleep_at_once():
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True, rx=SLOW)
    run_loop(board, pump, link, 5000)
    machine.strict_callbacks = False  # the host's own callback allocates
    machine.Timer(-1, mode=machine.Timer.ONE_SHOT, period=437, callback=lambda t: link.host.send(b"\n"))
    sent = machine.clock.now + 437
    run_loop(board, pump, link, 2000)
    assert link.host.tx and link.host.when == sent  # answered when the byte came, mid-sleep


def test_a_stroke_starts_when_due_not_at_the_timers_next_tick():
    # The timer ticks 50 ms after each of the pump's seconds, where strokes
    # fall due: the main loop wakes for the stroke and ticks at once.
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True, timer_lag_ms=50)
    begun = array.array("i", [0] * 16)
    count = array.array("i", [0])
    begin = board.motor_begin

    def noted():  # on the tick path: no allocation
        if count[0] < 16:
            begun[count[0]] = machine.clock.now
            count[0] += 1
        begin()

    board.motor_begin = noted
    run_loop(board, pump, link, 30000)
    assert count[0] == 13  # one every 2.16 s
    for i in range(count[0]):
        assert begun[i] % 1000 == 0, list(begun)  # on the pump's second, not 50 ms after it
    assert machine.bites == 0 and pump.fault is None


def test_ticks_the_main_loop_runs_do_not_feed_the_watchdog():
    # Only the timer's ticks do: with the timer dead the main loop's own
    # ticks (at each stroke) would otherwise keep the board alive.
    board, pump, link = started(BENCH_DEMO_NO_FEEDBACK=True)
    run_loop(board, pump, link, 3000)
    board._timer.deinit()
    done = board.motor.done
    e = expect(machine.WatchdogReset, run_loop, board, pump, link, 20000)
    assert isinstance(e, machine.WatchdogReset)
    assert board.motor.done > done  # the main loop's ticks ran strokes meanwhile
