# The implant test run in the operating room on a newly filled pump: identity,
# catheter, first fill, priming, motor test, alarm test, start of therapy.
# Each step validates first, is logged, and is durable before it returns; a
# step that fails leaves the pump stopped and says which step and why.
from micropython import const

import alarms
import events
from limits import CATHETER_VOLUME_MAX_NL, LimitError, check_range, is_plain_text
from scheduler import KIND_PRIMING

STEP_IDENTITY = const(1)
STEP_CATHETER = const(2)
STEP_FILL = const(3)
STEP_PRIME = const(4)
STEP_MOTOR_TEST = const(5)
STEP_ALARM_TEST = const(6)
STEP_START = const(7)
STEP_NAMES = ("", "identity", "catheter", "first fill", "priming", "motor test", "alarm test", "start therapy")

MAX_SEGMENTS = const(4)
SEGMENT_LENGTH_MAX_MM = const(1500)
MOTOR_TEST_STROKES = const(4)
MOTOR_TEST_S = const(60)
SERIAL_MAX = const(24)
SERIAL_MARKS = "-_."


def _logged(pump, step, ok, c=0, d=0, text=b""):
    # A test's result: logged and saved.
    pump.record(events.IMPLANT_STEP, step, 1 if ok else 0, c, d, text)
    pump.commit()


def _step(pump, what, step, c, d, text, apply):
    # A change (identity, catheter, first fill): applied, logged and saved,
    # or undone and refused when it cannot be saved (Pump._durably).
    def changed():
        apply()
        pump.record(events.IMPLANT_STEP, step, 1, c, d, text)
    pump._durably(what, changed)


def is_serial(text):
    # A serial names the pump's key-store entry and host files (reports,
    # the in-flight journal): no '/', space or control character.
    for c in text:
        if not ("0" <= c <= "9" or "A" <= c <= "Z" or "a" <= c <= "z" or c in SERIAL_MARKS):
            return False
    return True


def set_identity(pump, serial, model):
    if not isinstance(serial, str) or not 1 <= len(serial) <= SERIAL_MAX or not is_serial(serial):
        raise LimitError("serial", "identity: serial must be 1..%d letters, digits, '-', '_' or '.'" % SERIAL_MAX)
    if not isinstance(model, str) or not 1 <= len(model) <= SERIAL_MAX or not is_plain_text(model):
        raise LimitError("model", "identity: model must be 1..%d characters, no control character" % SERIAL_MAX)
    def apply():
        pump.device["serial"] = serial
        pump.device["model"] = model
    _step(pump, "identity", STEP_IDENTITY, 0, 0, serial.encode()[:32], apply)


def set_catheter(pump, segments):
    # segments: [[length_mm, volume_nl], ...], pump end first.
    if not isinstance(segments, list) or not 1 <= len(segments) <= MAX_SEGMENTS:
        raise LimitError("catheter", "catheter: 1..%d segments required" % MAX_SEGMENTS)
    total = 0
    for i, seg in enumerate(segments):
        if not isinstance(seg, (list, tuple)) or len(seg) != 2:
            raise LimitError("catheter", "catheter segment %d: [length_mm, volume_nl] required" % (i + 1))
        check_range("catheter", "catheter segment %d length" % (i + 1), seg[0], 1, SEGMENT_LENGTH_MAX_MM, "mm")
        check_range("catheter", "catheter segment %d volume" % (i + 1), seg[1], 1, CATHETER_VOLUME_MAX_NL, "nL")
        total += seg[1]
    check_range("catheter", "catheter total volume", total, 1, CATHETER_VOLUME_MAX_NL, "nL")
    def apply():
        pump.revise_catheter(total)  # a new catheter holds no drug until primed
        pump.device["catheter"] = [list(s) for s in segments]
    _step(pump, "catheter", STEP_CATHETER, total, len(segments), b"", apply)
    return total


def first_fill(pump, volume_nl):
    r = pump.reservoir
    if r.volume_in_nl:
        raise LimitError("first_fill", "first fill: the pump has been filled before (use a refill)")
    if volume_nl > r.capacity_nl:
        raise LimitError("overfill", "first fill: %d nL exceeds the reservoir's %d nL" % (volume_nl, r.capacity_nl))
    check_range("added", "first fill volume", volume_nl, r.residual_nl + pump.stroke_nl, r.capacity_nl, "nL")
    def apply():
        r.fill(volume_nl)
        pump.record(events.RESERVOIR_SET, volume_nl)
    _step(pump, "first fill", STEP_FILL, volume_nl, 0, b"", apply)


def prime(pump, duration_s):
    cath = pump.catheter
    if not cath.volume_nl:
        raise LimitError("catheter_unset", "priming: set the catheter first")
    # What the catheter still needs: all of it, or the rest of a priming
    # that stopped part-way (a stall, an occlusion) when the test is resumed.
    volume = cath.saline * pump.stroke_nl if cath.saline else cath.volume_nl
    strokes = pump.priming_bolus(volume, duration_s)
    _logged(pump, STEP_PRIME, True, strokes, duration_s)
    return strokes


def start_motor_test(pump):
    # A few strokes into the primed catheter, each confirmed by the motor
    # feedback; they reach the patient, so the 24-hour ceiling counts them.
    pump.motor_test_from = pump.failed_total
    return pump.motor_test_bolus(MOTOR_TEST_STROKES, MOTOR_TEST_S)


def motor_test_result(pump):
    # None while running; else (passed, reason).
    s = pump.sched
    if s.bolus_kind == KIND_PRIMING:
        return None
    failed = pump.failed_total - pump.motor_test_from
    ok = failed == 0 and not pump.alarms.critical()
    reason = "all %d strokes confirmed" % MOTOR_TEST_STROKES if ok else "%d strokes not confirmed" % failed
    _logged(pump, STEP_MOTOR_TEST, ok, failed, 0, reason.encode()[:32])
    return ok, reason


def start_alarm_test(pump):
    pump.alarms.start_test()


def alarm_test_result(pump):
    a = pump.alarms
    if a.testing >= 0:
        return None
    ok = a.tested == (1 << alarms.COUNT) - 1
    _logged(pump, STEP_ALARM_TEST, ok, a.tested)
    return ok, "every alarm tone sounded" if ok else "alarm test interrupted"


def start_therapy(pump, rx):
    therapy = pump.program(rx)
    if pump.suspended:
        pump.resume()
    _logged(pump, STEP_START, True, therapy.basal_nl_per_day())
    return therapy
