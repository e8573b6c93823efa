# Boot of the pump on a Raspberry Pi Pico (the rp2 port runs main.py after
# boot). Builds the board from config.py and the pump, gives the USB serial
# port to the programmer link, starts the tick timer and the watchdog, then
# runs the main loop: link, deferred pump work, idle.
#
# Ways back to the REPL (for mpremote and `pumpctl deploy`):
#   - within BOOT_GRACE_MS of boot: Ctrl-C (mpremote sends one) or the
#     maintenance button (config.MAINTENANCE_BUTTON);
#   - a GPIO maintenance button held while powering up;
#   - the link's clinician maintenance command (board.enter_maintenance()).
import config
from pico_board import PicoBoard
from pump import Pump
from usb_link import UsbLink


def make_link(board, pump, transport):
    # LINK CALL SITE: replace with the programmer link (firmware/link.py) once
    # it lands; it gets `transport` (read_into/write) and calls
    # board.enter_maintenance() for the clinician's maintenance command.
    from identify_link import IdentifyLink

    return IdentifyLink(board, pump, transport)


def run(cfg=config, ticks=None, stdin=None, stdout=None):
    # Arguments other than cfg exist for the tests (virtual clock, fake USB).
    board = PicoBoard(cfg, ticks)
    print("pump: %s; Ctrl-C or the maintenance button within %d ms for the REPL"
          % (board.MODEL, cfg.BOOT_GRACE_MS))
    if board.maintenance_at_boot():
        print("pump: maintenance: REPL open, pump not running (machine.reset() starts it)")
        return board
    # PERSISTENCE CALL SITE: replace the next line with the restore from flash,
    #   pump, persist, cause = startup.start_pump(board, board.reset_cause())
    # (and save on the way out, in the finally below).
    pump = Pump(board)
    transport = UsbLink(stdin, stdout)
    link = make_link(board, pump, transport)
    board.start(pump)
    transport.open()  # from here Ctrl-C is link data, not an interrupt
    try:
        while board.running:
            board.loop_begin()
            link.poll()
            if pump.needs_service():
                pump.service()
            board.loop_end()
            board.idle()
    finally:
        transport.close()
        board.shutdown()
    return board


if __name__ == "__main__":
    run()
