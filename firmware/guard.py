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
CEILING_GROUP = const(15)  # the ceiling is saved in quarter hours (firmware/persist.py)


class Window:
    def __init__(self, bucket_s, buckets, allowances=True, group=0):
        self.bucket_s = bucket_s
        self.n = buckets
        self.used = array.array("i", [0] * buckets)
        # Allowances age out with the window (a lowered limit's old headroom).
        self.allowances = allowances
        self.extra = array.array("i", [0] * (buckets if allowances else 1))
        self.used_sum = 0
        self.extra_sum = 0
        self.index = 0  # bucket number (monotonic) of the current bucket
        # With `group`: the sums of the buckets numbered group * g .. group * g
        # + group - 1 still in the window, slot g % len(groups), kept as
        # buckets fill and age out. The checkpoint saves the 24-hour ceiling
        # in these quarter hours (firmware/persist.py) instead of summing
        # 1441 minutes each time. Enough slots that a group's slot is reused
        # only once all of its buckets have left.
        self.group = group
        self.groups = array.array("i", [0] * ((buckets - 1) // group + 2)) if group else None

    def roll(self, mono_s):
        b = mono_s // self.bucket_s
        k = b - self.index
        if k <= 0:
            return
        if k > self.n:
            k = self.n
        n, used, group = self.n, self.used, self.group
        for i in range(1, k + 1):
            j = (self.index + i) % n
            u = used[j]
            if u:  # bucket number index + i - n leaves the window
                self.used_sum -= u
                used[j] = 0
                if group:
                    self.groups[(self.index + i - n) // group % len(self.groups)] -= u
            if self.allowances:
                self.extra_sum -= self.extra[j]
                self.extra[j] = 0
        self.index = b

    def exempt_used(self, mono_s):
        # Every stroke now in the window no longer counts against the limit:
        # an allowance per bucket equal to its strokes ages out with them.
        self.roll(mono_s)
        for j in range(self.n):
            if self.used[j] > self.extra[j]:
                self.extra_sum += self.used[j] - self.extra[j]
                self.extra[j] = self.used[j]

    def add(self, mono_s, strokes, allowance):
        self.roll(mono_s)
        j = self.index % self.n
        self.used[j] += strokes
        self.used_sum += strokes
        if self.group:
            self.groups[self.index // self.group % len(self.groups)] += strokes
        if allowance:
            self.extra[j] += allowance
            self.extra_sum += allowance

    def regroup(self):
        # The group sums from the buckets, after these were written directly
        # (a restored checkpoint).
        groups = self.groups
        for g in range(len(groups)):
            groups[g] = 0
        for b in range(self.index - self.n + 1, self.index + 1):
            groups[b // self.group % len(groups)] += self.used[b % self.n]


class DoseGuard:
    def __init__(self):
        self.hour = Window(_MIN_BUCKET_S, _MIN_BUCKETS)
        self.day = Window(_DAY_BUCKET_S, _DAY_BUCKETS)
        self.hour_max = 0
        self.day_max = 0
        self.budget = 0  # strokes the running clinician/priming bolus may still give
        self.tripped = False
        self.ceiling = Window(CEILING_BUCKET_S, CEILING_BUCKETS, False, CEILING_GROUP)
        # The hard maximum plus a minute at the therapy's top rate: the
        # window may hold up to a minute more than 24 h (set by the pump).
        self.ceiling_limit = CEILING_UNITS

    def worst_window(self, mono_s, future):
        # Largest ceiling total of any 24-hour window from now on, if from
        # now the pump delivers `future(b)` units at most in the next b
        # buckets, never less for a larger b: the window ending b buckets
        # ahead keeps the past but for its b - 1 oldest buckets, plus the
        # future. As b grows the past only falls and the future only grows,
        # so the largest total is where a non-empty bucket is about to leave,
        # or at b = n: the future is asked there only (a command's check
        # holds the ticks while it runs).
        w = self.ceiling
        w.roll(mono_s)
        used, n = w.used, w.n
        i = w.index % n  # the current bucket: it leaves last
        past = w.used_sum
        worst = 0
        for j in range(i + 1, n):  # oldest first: buckets i+1..n-1, then 0..i-1
            v = used[j]
            if v:
                total = past + future(j - i)
                if total > worst:
                    worst = total
                past -= v
        for j in range(i):
            v = used[j]
            if v:
                total = past + future(j + n - i)
                if total > worst:
                    worst = total
                past -= v
        total = past + future(n)
        return total if total > worst else worst

    def ceiling_24h(self, mono_s):
        self.ceiling.roll(mono_s)
        return self.ceiling.used_sum

    def set_limits(self, hour_max, day_max, mono_s):
        # New limits, lower or higher, must not count strokes of the therapy
        # before them still in the windows: each is exempted for as long as it
        # stays in its window (a new therapy's burst, a demand bolus, would
        # otherwise meet a day of the old rate on top of its own). The 24-hour
        # ceiling still counts them all. Boot (no limits yet) exempts nothing:
        # the strokes before a reset count, and the exemptions made before it
        # come back with the windows (firmware/persist.py).
        hour_max += MARGIN_STROKES
        day_max += MARGIN_STROKES
        if self.hour_max and self.hour_max != hour_max:
            self.hour.exempt_used(mono_s)
        if self.day_max and self.day_max != day_max:
            self.day.exempt_used(mono_s)
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
