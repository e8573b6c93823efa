# Event types of the pump's event log. Shared with the host tools (which
# import this file under CPython), so names and numbers cannot drift.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


BOOT = const(1)  # a = reset cause
THERAPY_PROGRAMMED = const(2)  # a = steps, b = basal nL/day, c = 24-h max ng, text = drug
THERAPY_SUSPENDED = const(3)
THERAPY_RESUMED = const(4)
BOLUS_REQUESTED = const(5)  # a = kind, b = strokes, c = duration s
BOLUS_REFUSED = const(6)  # a = kind, b = reason code, c = seconds until allowed
BOLUS_STARTED = const(7)  # a = kind, b = strokes, c = duration s, d = dose ng
BOLUS_DELIVERED = const(8)  # a = kind, b = strokes delivered (at least), c = strokes resets took off the plan
# (some may have been given: up to pump.CHECKPOINT_STROKES a reset; docs/persistence.md)
BOLUS_CANCELLED = const(9)  # a = kind, b = strokes delivered (at least), c = not delivered (resets: at most), d = why:
CANCELLED_BY_COMMAND = const(0)  # a command's (a refill, a suspend)
CANCELLED_UNSAVED = const(1)  # the flash could not save its progress (docs/persistence.md)
CLOCK_SET = const(10)  # a = old day, b = old tod s, c = new day, d = new tod s
REFILL = const(11)  # a = withdrawn nL, b = added nL, c = expected nL, d = discrepancy nL
ALARM_RAISED = const(12)  # a = alarm id
ALARM_CLEARED = const(13)  # a = alarm id
ALARM_ACKNOWLEDGED = const(14)  # a = alarm id
STROKE_FAILED = const(15)  # a = consecutive failures, b = cause (1 motor, 2 catheter pressure)
FAULT = const(16)  # a = fault code, text = cause
AUTH_OK = const(17)
AUTH_FAILED = const(18)
DIARY = const(19)
BRIDGE_DONE = const(20)  # the bridge's strokes are in the daily totals (kind bridge)
RESERVOIR_SET = const(21)  # a = volume nL
LINK_COMMAND = const(22)  # a = role, b = session, c = command type, d = result code (audit)
SESSION_END = const(23)  # a = role, b = session, c = reason
LINK_REJECTED = const(24)  # a = error code, b = frames suppressed, c = command type
PROVISIONED = const(25)
IMPLANT_STEP = const(26)  # a = step, b = 1 passed / 0 failed, c, d = step data, text = detail
OVERRIDE = const(27)  # a = dose ng the clinician confirmed above a soft maximum, text = which limit
# Repeats folded into one record (docs/persistence.md): a = their type (0: any
# type, the fold table was full), b = how many, c = their key (fold_key), d =
# seconds from the first to the last; the record's own time is the last's.
REPEATED = const(28)
# Strokes delivered in a pump day (docs/dosing.md, "Daily totals"), one record
# per kind of stroke with strokes (kind 0 with no stroke: nothing delivered):
# a = pump day counted, b = kind | (days covered - 1) << 8 | end reason << 16
# (0 midnight, 1 clock set to another day) | unclean resets << 20 (each may
# hide up to 32 strokes) | 1 << 28 when counting began during the day,
# c = strokes the motor completed, d = dose ng they delivered (saturated at
# 2^31 - 1), text = kind name. A day may have several records of a kind
# (the clock set back into it): they add up.
DAILY_TOTAL = const(29)

# The last day a record can carry (16 bits: 2149-06-06); the pump's clock
# is never set beyond it (firmware/pump.py set_clock).
DAY_MAX = const(0xFFFF)

NAMES = {
    BOOT: "boot", THERAPY_PROGRAMMED: "therapy programmed", THERAPY_SUSPENDED: "therapy suspended",
    THERAPY_RESUMED: "therapy resumed", BOLUS_REQUESTED: "bolus requested", BOLUS_REFUSED: "bolus refused",
    BOLUS_STARTED: "bolus started", BOLUS_DELIVERED: "bolus delivered", BOLUS_CANCELLED: "bolus cancelled",
    CLOCK_SET: "clock set", REFILL: "refill", ALARM_RAISED: "alarm raised", ALARM_CLEARED: "alarm cleared",
    ALARM_ACKNOWLEDGED: "alarm acknowledged", STROKE_FAILED: "stroke failed", FAULT: "fault",
    AUTH_OK: "authenticated", AUTH_FAILED: "authentication failed", DIARY: "diary entry",
    BRIDGE_DONE: "bridge bolus done", RESERVOIR_SET: "reservoir set",
    LINK_COMMAND: "programmer command", SESSION_END: "session ended", LINK_REJECTED: "frame rejected",
    PROVISIONED: "keys provisioned", IMPLANT_STEP: "implant step", OVERRIDE: "soft limit overridden",
    REPEATED: "repeated", DAILY_TOTAL: "daily total",
}

# Retention and folding (docs/persistence.md). Values of other modules, kept
# here so that the host can import this file alone (tests check them).
DEMAND_KIND = const(5)  # scheduler.KIND_DEMAND
CLINICIAN_ROLE = const(2)  # wire.ROLE_CLINICIAN


def clinical(etype, a, d):
    # True for records kept in the clinical ring; False for those a patient or
    # an unauthenticated sender can cause at will, and a failing motor's
    # single stroke failures (its alarms are clinical: stall, occlusion, stroke
    # failures), in the activity ring: none of them may push the clinical
    # history out. Unknown types are clinical.
    if (etype == DIARY or etype == LINK_REJECTED or etype == AUTH_FAILED or etype == BOLUS_REFUSED
            or etype == STROKE_FAILED):
        return False
    if etype == AUTH_OK or etype == SESSION_END:
        return a == CLINICIAN_ROLE
    if etype == LINK_COMMAND:
        return d == 0 or a == CLINICIAN_ROLE  # done (therapy changed), or the clinician's
    if etype == BOLUS_REQUESTED:
        return a != DEMAND_KIND  # a demand press: its bolus, if given, is BOLUS_STARTED
    return True


def fold_key(etype, a, b, c, d):
    # Records that are folded when repeated, and what makes two the same: the
    # key fields one byte each (>= 0); -1 for records always kept one by one.
    # A command that was carried out (LINK_COMMAND d = 0) is never folded.
    if etype == BOLUS_REQUESTED and a == DEMAND_KIND:
        return a
    if etype == BOLUS_REFUSED:
        return (a & 0xFF) | (b & 0xFF) << 8  # kind, reason
    if etype == STROKE_FAILED:
        return (a & 0xFF) | (b & 0xFF) << 8  # failures in a row, cause
    if etype == LINK_COMMAND and d:
        return (a & 0xFF) | (c & 0xFF) << 8 | (d & 0xFF) << 16  # role, command, error code
    return -1


def unfold(etype, key):
    # The key fields of a REPEATED record's type as (a, b, c, d), the others 0.
    if etype == BOLUS_REFUSED or etype == STROKE_FAILED:
        return key & 0xFF, key >> 8 & 0xFF, 0, 0
    if etype == LINK_COMMAND:
        return key & 0xFF, 0, key >> 8 & 0xFF, key >> 16 & 0xFF
    return key & 0xFF, 0, 0, 0


class MemoryLog:
    # Event log kept in RAM: for tests and until a flash log is attached.
    # Keeps every record as it comes: no rings, no folding.
    def __init__(self):
        self.records = []

    def append(self, day, tod_s, etype, a=0, b=0, c=0, d=0, text=b""):
        self.records.append((len(self.records) + 1, day, tod_s, etype, a, b, c, d, text))
        return len(self.records)

    def read(self, first_seq, max_count):
        first = max(first_seq, 1)
        return self.records[first - 1:first - 1 + max_count]

    def first_seq(self):
        return 1

    def last_seq(self):
        return len(self.records)

    def dropped(self):
        return 0

    def roll(self, day, tod_s):
        pass  # nothing is folded in RAM

    def flush(self):
        pass

    def of_type(self, etype):
        return [r for r in self.records if r[3] == etype]
