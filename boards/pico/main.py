# Boot of the pump on a Raspberry Pi Pico (the rp2 port runs main.py after
# boot). Builds the board from config.py and the pump, gives the USB serial
# port to the programmer link, starts the tick timer and the watchdog, then
# runs the main loop: link, deferred pump work, sleep until the next event.
#
# Ways back to the REPL (for mpremote and `pumpctl deploy`):
#   - within BOOT_GRACE_MS of boot: Ctrl-C (mpremote sends one) or the
#     maintenance button (config.MAINTENANCE_BUTTON);
#   - a GPIO maintenance button held while powering up;
#   - the link's clinician maintenance command (board.enter_maintenance()).
import gc

import config
import startup
from pico_board import PicoBoard
from usb_link import UsbLink


def make_link(board, pump, transport):
    # The link is imported once the pump's buffers are placed: its cipher
    # (aead) compiles viper code at import, which leaves 28 KB resident and
    # needs kilobyte blocks while it runs; before the pump, the pump's own
    # arrays then found no room (docs/crypto.md).
    gc.collect()
    from link import Link

    return Link(pump, transport, serial=board.serial())


def loop_once(board, pump, link, wait):
    # One main-loop pass: the link and the pump's deferred work, with any tick
    # that falls due meanwhile held until loop_end (board.loop_begin); then
    # the core sleeps until the pump's next event or a link byte (board.idle,
    # `wait` is the transport's).
    board.loop_begin()
    link.poll()
    if pump.needs_service():
        pump.service()
    board.loop_end()
    if not link.backlog():  # bytes already read wait for no sleep
        board.idle(pump, wait)


def run(cfg=config, ticks=None, stdin=None, stdout=None):
    # Arguments other than cfg exist for the tests (virtual clock, fake USB).
    board = PicoBoard(cfg, ticks)
    print("pump: %s; Ctrl-C or the maintenance button within %d ms for the REPL"
          % (board.MODEL, cfg.BOOT_GRACE_MS))
    if board.maintenance_at_boot():
        print("pump: maintenance: REPL open, pump not running (machine.reset() starts it)")
        return board
    pump, persist, _ = startup.start_pump(board, board.reset_cause())
    transport = UsbLink(stdin, stdout)
    link = make_link(board, pump, transport)
    board.start(pump)
    transport.open()  # from here Ctrl-C is link data, not an interrupt
    wait = transport.wait  # bound once
    try:
        while board.running:
            loop_once(board, pump, link, wait)
    finally:
        transport.close()
        if persist is not None and not board.running:
            persist.save(clean=True)  # a deliberate stop (maintenance): closed cleanly
        board.shutdown()
    return board


if __name__ == "__main__":
    run()
