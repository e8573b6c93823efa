# Shared set-up for firmware tests: an emulated pump in virtual time.
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
        pump.program(p)
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


def basal_units(starts, rates, tod, secs):
    # Exact basal volume x 86400 (nL*s/day) from time of day `tod` for `secs`:
    # the reference the scheduler must match, computed independently.
    total = 0
    while secs > 0:
        i = len(starts) - 1
        while starts[i] > tod:
            i -= 1
        end = starts[i + 1] if i + 1 < len(starts) else 86400
        n = min(end - tod, secs)
        total += rates[i] * n
        tod = (tod + n) % 86400
        secs -= n
    return total


def expected_basal_strokes(pump, tod, secs):
    t = pump.therapy
    return basal_units(t.step_start_s, t.step_rate_nl_day, tod, secs) // (pump.stroke_nl * 86400)


def within_one_stroke(actual, expected):
    assert expected - 1 <= actual <= expected, "delivered %d strokes, prescribed %d" % (actual, expected)


def kinds(pump):
    # Completed strokes by kind, from the reservoir ledger.
    return list(pump.reservoir.strokes)
