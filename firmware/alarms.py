# Alarms: raised on the transition of their condition, visible to the
# programmer, acknowledged by it. Acknowledging silences the tone for a while;
# a condition that persists sounds again when the silence ends. Each alarm
# has its own tone pattern and repeat interval on the board's buzzer.
# Everything the tick calls here allocates nothing.
import array

from micropython import const

# Critical: therapy stopped or about to stop. Lower id = higher priority.
RESERVOIR_EMPTY = const(0)
MOTOR_STALL = const(1)
OCCLUSION = const(2)
BATTERY_EOS = const(3)
INTERNAL_FAULT = const(4)
INTEGRITY = const(5)
DOSE_GUARD = const(6)
# Non-critical.
RESERVOIR_LOW = const(7)
BATTERY_ERI = const(8)
ALARM_DATE = const(9)
REFILL_DISCREPANCY = const(10)
# Added later; ids are stable (the log and the host tools name alarms by id).
FLASH_FAULT = const(11)  # critical: state cannot be saved; therapy continues
UNCOMMANDED_MOTION = const(12)  # critical: the motor moved with no stroke commanded
CLOCK_UNCERTAIN = const(13)  # the wall clock may be wrong after an unclean reset
STROKE_FAILURES = const(14)  # strokes failing now and then (retried): the gear wear before a stall
COUNT = const(15)
CRITICAL_MASK = const(0x7F | (1 << FLASH_FAULT) | (1 << UNCOMMANDED_MOTION))

NAMES = ("reservoir empty", "motor stall", "occlusion", "battery end of service", "internal fault",
         "integrity error", "dose limit guard", "low reservoir", "battery replacement (ERI)",
         "alarm date reached", "refill discrepancy", "flash fault", "uncommanded motor motion",
         "clock uncertain", "stroke failures")

# Tone patterns: two tones alternating every SEGMENT_MS for the duration
# (critical: a 3-s two-tone, as on SynchroMed) or one tone (non-critical 1 s).
SEGMENT_MS = const(250)
TONE_A = (880, 988, 932, 831, 1047, 1175, 1109, 660, 698, 740, 784, 1245, 1319, 831, 622)
TONE_B = (440, 494, 466, 415, 523, 587, 554, 660, 698, 740, 784, 622, 659, 831, 622)
DURATION_MS = (3000, 3000, 3000, 3000, 3000, 3000, 3000, 1000, 1000, 1000, 1000, 3000, 3000, 1000, 1000)
REPEAT_S = (600, 600, 600, 900, 300, 300, 300, 3600, 14400, 7200, 3600, 600, 300, 3600, 3600)
SILENCE_CRITICAL_S = const(3600)  # a persisting critical alarm comes back after an hour
SILENCE_NON_CRITICAL_S = const(86400)

_NEVER = const(1 << 29)


def is_critical(alarm):
    return (1 << alarm) & CRITICAL_MASK != 0


class Alarms:
    def __init__(self):
        self.active = 0  # bit mask: condition present
        self.raised = 0  # bit mask: raised since the event log last heard
        self.cleared = 0  # bit mask: cleared since the event log last heard
        self.silenced_until = array.array("i", [0] * COUNT)  # monotonic s
        self.next_sound = array.array("i", [0] * COUNT)  # monotonic s
        self.sounding = -1  # alarm whose pattern is playing
        self.sound_ms = 0  # board ticks when it started
        self.testing = -1  # alarm test: the alarm whose tone is being demonstrated
        self.tested = 0  # bit mask of tones played by the last alarm test

    # -- tick path --------------------------------------------------------
    def set(self, alarm, present, now_s):
        bit = 1 << alarm
        if present:
            if not self.active & bit:
                self.active |= bit
                self.raised |= bit
                self.silenced_until[alarm] = 0
                self.next_sound[alarm] = now_s
        elif self.active & bit:
            self.active &= ~bit
            self.cleared |= bit

    def critical(self):
        return self.active & CRITICAL_MASK

    def tone(self, now_s, now_ms, elapsed_ms):
        # The buzzer frequency now (0 = silent). `elapsed_ms` is ms since the
        # pattern that is playing started, computed by the caller from ticks.
        if self.testing >= 0:
            return self._test_tone(now_ms, elapsed_ms)
        if not self.active:
            self.sounding = -1
            return 0
        if self.sounding >= 0:
            a = self.sounding
            if elapsed_ms < DURATION_MS[a] and self.active & (1 << a) and now_s >= self.silenced_until[a]:
                return TONE_A[a] if (elapsed_ms // SEGMENT_MS) & 1 == 0 else TONE_B[a]
            self.sounding = -1
        a = self._due(now_s)
        if a < 0:
            return 0
        self.sounding = a
        self.sound_ms = now_ms
        self.next_sound[a] = now_s + REPEAT_S[a]
        return TONE_A[a]

    def start_test(self):
        # Sounds every alarm's tone once, in order (implant test): the
        # clinician hears that the buzzer and each pattern work.
        self.testing = 0
        self.tested = 0
        self.sounding = -1

    def _test_tone(self, now_ms, elapsed_ms):
        a = self.testing
        if self.sounding != a:
            self.sounding = a
            self.sound_ms = now_ms
            elapsed_ms = 0
        if elapsed_ms < DURATION_MS[a]:
            return TONE_A[a] if (elapsed_ms // SEGMENT_MS) & 1 == 0 else TONE_B[a]
        self.tested |= 1 << a
        self.testing = a + 1 if a + 1 < COUNT else -1
        self.sounding = -1
        return 0

    def _due(self, now_s):
        active = self.active
        for a in range(COUNT):
            if active & (1 << a) and now_s >= self.silenced_until[a] and now_s >= self.next_sound[a]:
                return a
        return -1

    def secs_to_next_sound(self, now_s):
        best = _NEVER
        active = self.active
        if not active:
            return best
        for a in range(COUNT):
            if active & (1 << a):
                t = self.next_sound[a]
                s = self.silenced_until[a]
                if s > t:
                    t = s
                t -= now_s
                if t < best:
                    best = t if t > 0 else 0
        return best

    # -- programmer ---------------------------------------------------------
    def acknowledge(self, alarm, now_s):
        if not self.active & (1 << alarm):
            return False
        self.silenced_until[alarm] = now_s + (SILENCE_CRITICAL_S if is_critical(alarm) else SILENCE_NON_CRITICAL_S)
        self.next_sound[alarm] = self.silenced_until[alarm]
        if self.sounding == alarm:
            self.sounding = -1
        return True

    def listing(self, now_s):
        return [{"id": a, "name": NAMES[a], "critical": is_critical(a),
                 "silenced_s": max(0, self.silenced_until[a] - now_s)}
                for a in range(COUNT) if self.active & (1 << a)]
