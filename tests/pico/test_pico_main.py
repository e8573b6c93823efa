# boards/pico/main.py end to end on the stand-ins: boot, the grace window and
# the maintenance button, the main loop with a host on the USB port, and the
# maintenance command's path back to the REPL.
import hal
import link_commands as lc
import wire
import machine
import main
import rp2
from pico_board import PicoBoard
from picokit import BENCH, FakeSerial, expect, make_config


class Host(FakeSerial):
    # A programmer on the USB port; `at` schedules an action at a board time.
    def __init__(self):
        super().__init__()
        self.actions = []

    def at(self, ms, fn):
        self.actions.append((ms, fn))

    def ioctl(self, req, arg):
        while self.actions and machine.clock.now >= self.actions[0][0]:
            self.actions.pop(0)[1]()
        return super().ioctl(req, arg)


def capture_board():
    # main.run builds its own board: catch it where the link gets it.
    seen = []
    original = main.make_link

    def make_link(board, pump, transport):
        seen.append((board, pump, transport))
        return original(board, pump, transport)

    main.make_link = make_link
    return seen


def test_boot_waits_the_grace_window_then_runs_the_pump():
    cfg = make_config(BENCH_DEMO_NO_FEEDBACK=True)
    host = Host()
    seen = capture_board()
    host.at(cfg.BOOT_GRACE_MS + 3000, lambda: host.send(wire.Session().seal(lc.IDENTIFY, 1, None)))
    host.at(cfg.BOOT_GRACE_MS + 5000, lambda: seen[0][0].enter_maintenance())
    # The maintenance command with the watchdog running reboots the board.
    expect(machine.HardReset, main.run, cfg, machine.clock.ticks_ms, host, host)
    board, pump, transport = seen[0]
    frame = bytes(host.tx)
    frame = frame[frame.find(b"\x00") + 1:] if frame.startswith(b"\x00") else frame  # resync byte
    _, _, _, report = wire.Session().open(frame[:frame.find(b"\x00") + 1])
    assert report["serial"] == board.serial() or report["serial"]
    assert machine.bites == 0, (machine.bites, machine.resets, machine.clock.now)  # a clean reboot, not a watchdog reset
    assert board.ticks_run >= 5000 // board.TICK_MS - 1
    assert transport.interrupt_char == 3  # Ctrl-C is the REPL's again
    assert not board.running and board._timer is None
    assert not board.motor.running
    # The reboot is a one-time maintenance boot: REPL, no pump, no watchdog.
    again = main.run(cfg, machine.clock.ticks_ms, host, host)
    assert not again.running and machine.wdt() is None
    assert again.reset_cause() == hal.RESET_SOFT  # deliberate, not a watchdog bite
    third = capture_board()
    host.at(machine.clock.now + cfg.BOOT_GRACE_MS + 500, lambda: third[0][0].enter_maintenance())
    expect(machine.HardReset, main.run, cfg, machine.clock.ticks_ms, host, host)
    assert third  # the flag was used once: this boot ran the pump


def test_maintenance_button_held_at_boot_opens_the_repl():
    cfg = make_config(BENCH)
    machine.drive(15, 0)  # held to GND
    board = main.run(cfg, machine.clock.ticks_ms, FakeSerial(), FakeSerial())
    assert not board.running
    assert machine.wdt() is None  # no watchdog: the REPL stays
    assert machine.clock.now == 0  # no wait
    # Leaving maintenance with machine.reset() (rp2: a watchdog reboot) is
    # known as deliberate at the next boot.
    expect(machine.HardReset, machine.reset)
    machine.drive(15, 1)
    host = Host()
    seen = capture_board()
    host.at(machine.clock.now + cfg.BOOT_GRACE_MS + 500, lambda: seen[0][0].enter_maintenance())
    expect(machine.HardReset, main.run, cfg, machine.clock.ticks_ms, host, host)
    assert seen[0][0].reset_cause() == hal.RESET_SOFT


def test_bootsel_pressed_in_the_grace_window_opens_the_repl():
    cfg = make_config()
    machine.Timer(-1, mode=machine.Timer.ONE_SHOT, period=700, callback=lambda t: rp2.press_bootsel())
    machine.strict_callbacks = False  # the test's own callback allocates
    board = main.run(cfg, machine.clock.ticks_ms, FakeSerial(), FakeSerial())
    assert not board.running and machine.wdt() is None
    assert 700 <= machine.clock.now < cfg.BOOT_GRACE_MS


def test_no_button_press_starts_the_pump_after_the_grace_window():
    cfg = make_config()
    host = Host()
    seen = capture_board()
    host.at(cfg.BOOT_GRACE_MS + 1000, lambda: seen[0][0].enter_maintenance())
    expect(machine.HardReset, main.run, cfg, machine.clock.ticks_ms, host, host)
    board = seen[0][0]
    assert board.ticks_run > 0
    assert board._wdt.timeout == board.WDT_MS


class Crash(BaseException):
    # A failure nothing in the loop contains (the link contains Exceptions).
    pass


def test_a_crash_in_the_main_loop_ends_in_a_watchdog_reset():
    cfg = make_config(BENCH_DEMO_NO_FEEDBACK=True)
    host = Host()

    def boom():
        raise Crash("main loop crash")

    host.at(cfg.BOOT_GRACE_MS + 1000, boom)
    expect(Crash, main.run, cfg, machine.clock.ticks_ms, host, host)
    # Back at the REPL with the watchdog running and nothing feeding it.
    expect(machine.WatchdogReset, machine.advance, 10000)


def test_ctrl_c_in_the_grace_window_opens_the_repl():
    # mpremote's Ctrl-C arrives as KeyboardInterrupt while the board waits.
    cfg = make_config()

    def ctrl_c(t):
        raise KeyboardInterrupt

    machine.strict_callbacks = False
    machine.Timer(-1, mode=machine.Timer.ONE_SHOT, period=300, callback=ctrl_c)
    board = main.run(cfg, machine.clock.ticks_ms, FakeSerial(), FakeSerial())
    assert not board.running and machine.wdt() is None
    expect(machine.HardReset, machine.reset)
    assert PicoBoard(cfg, machine.clock.ticks_ms).reset_cause() == hal.RESET_SOFT  # next boot
