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
    pump = Pump(board, EventLog(directory + "/log"))  # the board made `directory`
    persist = Persist(pump, directory)
    cause = persist.restore(reset_cause)
    return pump, persist, cause
