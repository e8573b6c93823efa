# Dose-limit guard, independent of the scheduler (defence in depth): counts
# the strokes the motor actually completed over a sliding hour and day, and
# refuses a stroke that would exceed what the prescription allows. Strokes of
# the therapy (basal, periodic and demand boluses) are counted in the windows;
# strokes of a clinician or priming bolus, which replace the therapy while
# they run, are counted against that bolus's own budget instead.
import array

from micropython import const

_MIN_BUCKET_S = const(60)  # hour window: 60 one-minute buckets
_MIN_BUCKETS = const(60)
_DAY_BUCKET_S = const(900)  # day window: 96 quarter-hour buckets
_DAY_BUCKETS = const(96)
MARGIN_STROKES = const(2)  # for strokes falling at a bucket edge


class Window:
    def __init__(self, bucket_s, buckets):
        self.bucket_s = bucket_s
        self.n = buckets
        self.used = array.array("i", [0] * buckets)
        self.extra = array.array("i", [0] * buckets)  # bolus allowances
        self.used_sum = 0
        self.extra_sum = 0
        self.index = 0  # bucket number (monotonic) of the current bucket

    def roll(self, mono_s):
        b = mono_s // self.bucket_s
        k = b - self.index
        if k <= 0:
            return
        if k > self.n:
            k = self.n
        for i in range(1, k + 1):
            j = (self.index + i) % self.n
            self.used_sum -= self.used[j]
            self.extra_sum -= self.extra[j]
            self.used[j] = 0
            self.extra[j] = 0
        self.index = b

    def add(self, mono_s, strokes, allowance):
        self.roll(mono_s)
        j = self.index % self.n
        self.used[j] += strokes
        self.used_sum += strokes
        self.extra[j] += allowance
        self.extra_sum += allowance


class DoseGuard:
    def __init__(self):
        self.hour = Window(_MIN_BUCKET_S, _MIN_BUCKETS)
        self.day = Window(_DAY_BUCKET_S, _DAY_BUCKETS)
        self.hour_max = 0
        self.day_max = 0
        self.budget = 0  # strokes the running clinician/priming bolus may still give
        self.tripped = False

    def set_limits(self, hour_max, day_max, mono_s):
        # A lower new limit must not count strokes of the old therapy still in
        # the window: the old headroom is granted as an allowance that ages out.
        hour_max += MARGIN_STROKES
        day_max += MARGIN_STROKES
        if self.hour_max > hour_max:
            self.hour.add(mono_s, 0, self.hour_max - hour_max)
        if self.day_max > day_max:
            self.day.add(mono_s, 0, self.day_max - day_max)
        self.hour_max = hour_max
        self.day_max = day_max

    def allow_bolus(self, strokes):
        self.budget = strokes

    # -- tick path ---------------------------------------------------------
    def allows_stroke(self, mono_s, exclusive):
        if exclusive:
            if self.budget <= 0:
                self.tripped = True
                return False
            return True
        h, d = self.hour, self.day
        h.roll(mono_s)
        d.roll(mono_s)
        if h.used_sum + 1 > self.hour_max + h.extra_sum or d.used_sum + 1 > self.day_max + d.extra_sum:
            self.tripped = True
            return False
        return True

    def count_stroke(self, mono_s, exclusive):
        if exclusive:
            self.budget -= 1
            return
        self.hour.add(mono_s, 1, 0)
        self.day.add(mono_s, 1, 0)
