# Shared set-up for firmware tests: an emulated pump in virtual time.
import prescription
from limits import LimitError
from pump import Pump
from unix_board import UnixBoard, run_virtual

MORPHINE_10MG_ML = 10000000  # ng/mL
HOUR_MS = 3600000
DAY_MS = 86400000


def continuous(dose_ng_day=10000000, conc=MORPHINE_10MG_ML, drug="morphine"):
    return {"drug": drug, "conc_ng_ml": conc, "steps": [{"start_s": 0, "dose_ng_day": dose_ng_day}]}


def flex(steps, conc=MORPHINE_10MG_ML, drug="morphine"):
    # steps: [(start_s, dose_ng_day)]
    return {"drug": drug, "conc_ng_ml": conc,
            "steps": [{"start_s": s, "dose_ng_day": d} for s, d in steps]}


def make_pump(p=None, start_ticks=0, fill_nl=20000000, tod_s=0, stroke_ms=40):
    board = UnixBoard(virtual=True, start_ticks=start_ticks, stroke_ms=stroke_ms)
    pump = Pump(board)
    pump.clock.set(20000, tod_s)
    pump.reservoir.fill(fill_nl)
    if p is not None:
        pump.start(prescription.validate(p, board.STROKE_NL))
    return pump


def run(pump, ms):
    run_virtual(pump, ms)


def strokes(pump):
    return pump.board.motor.completed


def raises_limit(limit, fn, *args):
    try:
        fn(*args)
    except LimitError as e:
        assert e.limit == limit, "expected limit %r, got %r: %s" % (limit, e.limit, e.message)
        return e
    raise AssertionError("expected LimitError(%r)" % limit)
