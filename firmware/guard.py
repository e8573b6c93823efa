# Dose-limit guard, independent of the scheduler (defence in depth): counts
# the strokes the motor actually completed and refuses a stroke that would
# exceed what is allowed.
# - The 24-hour ceiling: every stroke that puts drug into the patient, of any
#   kind, weighed by the drug at the catheter tip (firmware/catheter.py),
#   over a window of whole minutes that always covers at least 24 h. The
#   limit is the drug's hard daily maximum; the same window answers the
#   pump's command-time check (worst_window), so the two cannot disagree.
# - The prescription: strokes of the therapy (basal, periodic, demand) over a
#   sliding hour and day against what the therapy can ask for; strokes of a
#   clinician or priming bolus, which replace the therapy while they run,
#   count against that bolus's own budget instead.
import array

from micropython import const

from catheter import CEILING_UNITS

_MIN_BUCKET_S = const(60)  # hour window: 60 one-minute buckets
_MIN_BUCKETS = const(60)
_DAY_BUCKET_S = const(900)  # day window: 96 quarter-hour buckets
_DAY_BUCKETS = const(96)
MARGIN_STROKES = const(2)  # for strokes falling at a bucket edge
CEILING_BUCKET_S = const(60)
CEILING_BUCKETS = const(1441)  # 1440 whole minutes and the current one: never under 24 h


class Window:
    def __init__(self, bucket_s, buckets, allowances=True):
        self.bucket_s = bucket_s
        self.n = buckets
        self.used = array.array("i", [0] * buckets)
        # Allowances age out with the window (a lowered limit's old headroom).
        self.allowances = allowances
        self.extra = array.array("i", [0] * (buckets if allowances else 1))
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
            self.used[j] = 0
            if self.allowances:
                self.extra_sum -= self.extra[j]
                self.extra[j] = 0
        self.index = b

    def add(self, mono_s, strokes, allowance):
        self.roll(mono_s)
        j = self.index % self.n
        self.used[j] += strokes
        self.used_sum += strokes
        if allowance:
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
        self.ceiling = Window(CEILING_BUCKET_S, CEILING_BUCKETS, False)
        # The hard maximum plus a minute at the therapy's top rate: the
        # window may hold up to a minute more than 24 h (set by the pump).
        self.ceiling_limit = CEILING_UNITS

    def worst_window(self, mono_s, future):
        # Largest ceiling total of any 24-hour window from now on, if from
        # now the pump delivers `future(seconds)` units at most in the next
        # `seconds`: each window is what it keeps of the past plus the future.
        w = self.ceiling
        w.roll(mono_s)
        past = w.used_sum
        worst = 0
        for k in range(w.n):
            total = past + future((k + 1) * CEILING_BUCKET_S)
            if total > worst:
                worst = total
            past -= w.used[(w.index + 1 + k) % w.n]  # the oldest bucket leaves the window
        return worst

    def ceiling_24h(self, mono_s):
        self.ceiling.roll(mono_s)
        return self.ceiling.used_sum

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
    def allows_stroke(self, mono_s, exclusive, weight):
        c = self.ceiling
        c.roll(mono_s)
        if c.used_sum + weight > self.ceiling_limit:
            self.tripped = True
            return False
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

    def count_stroke(self, mono_s, exclusive, weight):
        if weight:
            self.ceiling.add(mono_s, weight, 0)
        if exclusive:
            self.budget -= 1
            return
        self.hour.add(mono_s, 1, 0)
        self.day.add(mono_s, 1, 0)
