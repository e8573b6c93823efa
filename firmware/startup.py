# Boot of the portable core on any board: event log and state on the board's
# flash, the pump restored from its last saved state, the reset logged.
from eventlog import EventLog
from persist import Persist
from pump import Pump


def start_pump(board, reset_cause):
    # Returns (pump, persist, cause as logged); persist is None without flash.
    directory = board.flash_dir()
    if directory is None:
        return Pump(board), None, reset_cause
    log = EventLog(directory + "/log")  # the board made `directory`
    pump = Pump(board, log)
    persist = Persist(pump, directory)
    try:
        cause = persist.restore(reset_cause)
    except Exception as e:
        # A saved state this firmware cannot load (damaged in a way its CRC
        # missed, or outside its ranges) must not stop every boot: a fresh
        # pump, stopped with the integrity alarm sounding, the cause logged.
        pump = Pump(board, log)
        persist = Persist(pump, directory)
        cause = persist.unloadable(reset_cause, ("state not loadable: %s" % type(e).__name__).encode())
    return pump, persist, cause
