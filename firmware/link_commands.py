# Command table of the programmer link: message types, the roles allowed to
# send each, and the argument limits. The pump (link.py) and the host tool
# (pumpctl, which imports this file by path under CPython) share it, so
# numbers, names and permissions cannot drift. docs/protocol.md section 13
# documents every command.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import events

# Role bits (1 << wire.ROLE_*). A command lists the roles that may send it;
# anything not listed is refused (deny by default).
R_NONE = const(1)  # no session: identify, handshake, provisioning
R_PATIENT = const(2)
R_CLINICIAN = const(4)
R_SESSION = const(R_PATIENT | R_CLINICIAN)

# Outside a session (untagged frames).
IDENTIFY = const(0x01)
HELLO = const(0x02)
PROOF = const(0x03)
PROVISION = const(0x04)  # once, while the pump has no keys
# Session housekeeping.
LOGOUT = const(0x05)
ROTATE_KEYS = const(0x06)  # new link keys for both roles, derived on both sides (wire.rotated_key)
# Reading.
STATUS = const(0x10)
THERAPY = const(0x11)
ALARMS = const(0x12)
LOG_READ = const(0x13)
# Changing therapy or settings: every one is audit-logged.
PROGRAM = const(0x20)
BOLUS = const(0x21)
PRIME = const(0x22)
DEMAND = const(0x23)
SUSPEND = const(0x24)
RESUME = const(0x25)
REFILL = const(0x26)
ACK_ALARM = const(0x27)
SET_CLOCK = const(0x28)
SET_LOW = const(0x29)
SET_ALARM_DATE = const(0x2A)
IMPLANT = const(0x2B)  # the implant test, one step per request (firmware/implant.py)
MAINTENANCE = const(0x2C)  # stop the pump and give the port back to the REPL (boards that can)
# Patient records.
DIARY = const(0x30)

# type: (name, roles, audited). Audited commands change therapy or settings
# and leave a record naming role and session, whatever their outcome.
COMMANDS = {
    IDENTIFY: ("identify", R_NONE | R_SESSION, False),
    HELLO: ("hello", R_NONE, False),
    PROOF: ("proof", R_NONE, False),
    PROVISION: ("provision", R_NONE, False),
    LOGOUT: ("logout", R_SESSION, False),
    ROTATE_KEYS: ("rotate_keys", R_CLINICIAN, True),
    STATUS: ("status", R_SESSION, False),
    THERAPY: ("therapy", R_CLINICIAN, False),
    ALARMS: ("alarms", R_SESSION, False),
    LOG_READ: ("log", R_CLINICIAN, False),
    PROGRAM: ("program", R_CLINICIAN, True),
    BOLUS: ("bolus", R_CLINICIAN, True),
    PRIME: ("prime", R_CLINICIAN, True),
    DEMAND: ("demand", R_SESSION, True),
    SUSPEND: ("suspend", R_CLINICIAN, True),
    RESUME: ("resume", R_CLINICIAN, True),
    REFILL: ("refill", R_CLINICIAN, True),
    ACK_ALARM: ("ack", R_CLINICIAN, True),
    SET_CLOCK: ("clock", R_CLINICIAN, True),
    SET_LOW: ("low", R_CLINICIAN, True),
    SET_ALARM_DATE: ("alarm_date", R_CLINICIAN, True),
    IMPLANT: ("implant", R_CLINICIAN, True),
    MAINTENANCE: ("maintenance", R_CLINICIAN, True),
    DIARY: ("diary", R_PATIENT, False),
}

ROLE_NAMES = ("none", "patient", "clinician")

# Timing of sessions and authentication (pump monotonic seconds).
IDLE_TIMEOUT_S = const(300)  # a session ends after 5 min without a valid frame
HANDSHAKE_S = const(30)  # a HELLO's challenge is good for 30 s, once
REPLY_KEEP_S = const(120)  # a role's last reply answers its retransmission after a new login this long
FREE_FAILURES = const(2)  # failed proofs per role before back-off starts
BACKOFF_S = const(30)  # first back-off; doubles with each further failure
LOCKOUT_MAX_S = const(3600)  # longest lockout
PROVISION_REPLY_S = const(120)  # a lost provisioning reply may be asked again

# Diary entries (events.DIARY: a = pain 0..10, b = activity, c = session).
PAIN_MAX = const(10)
ACTIVITIES = ("rest", "sleep", "sitting", "walking", "working", "exercise", "other")
NOTE_MAX = const(32)  # bytes of UTF-8: the event log's text field

# Implant test steps (IMPLANT "step"), in the order the operating room runs
# them. The *_result steps poll a running test: they change nothing until the
# test is over, and are not audited (the test's own IMPLANT_STEP record is).
IMPLANT_STEPS = ("identity", "catheter", "fill", "prime", "motor_test", "motor_result",
                 "alarm_test", "alarm_result", "start")
IMPLANT_POLLS = ("motor_result", "alarm_result")

# Event log download: records packed back to back, each LOG_RECORD followed
# by its text (seq u32, day u32, tod_s u32, type u8, a..d i32, text length u8).
LOG_RECORD = ">IIIBiiiiB"
LOG_RECORD_LEN = const(30)
LOG_MAX_PER_READ = const(64)

# Event types the link writes. The dedicated types are requested from
# events.py; until they exist the nearest existing type carries the record
# (its text says what it is), so the log never loses an entry.
EV_AUTH_OK = events.AUTH_OK  # a = role, b = 0, text = role name
EV_AUTH_FAILED = events.AUTH_FAILED  # a = role, b = failures in a row, c = lockout s
EV_COMMAND = getattr(events, "LINK_COMMAND", events.AUTH_OK)  # a role, b session, c type, d result
EV_SESSION_END = getattr(events, "SESSION_END", events.AUTH_OK)  # a role, b session, c reason
EV_REJECTED = getattr(events, "LINK_REJECTED", events.FAULT)  # a code, b suppressed, c type
EV_PROVISIONED = getattr(events, "PROVISIONED", events.AUTH_OK)
EV_DIARY = events.DIARY

# Why a session ended (EV_SESSION_END c).
END_LOGOUT = const(0)
END_IDLE = const(1)
END_REPLACED = const(2)
