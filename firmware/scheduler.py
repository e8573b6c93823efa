# Stroke scheduler. Decides when each motor stroke is due from the active
# therapy, in whole seconds, with exact integer accrual: a channel delivering
# `inc` strokes per `period` seconds keeps its partial stroke as an integer
# phase in [0, period), so nothing is rounded and nothing drifts over months.
#
# Basal: inc = rate nL/day, period = stroke_nl * 86400 (phase unit: nL/86400).
# Bolus: inc = n strokes, period = duration s (one stroke owed at the start);
# the bolus holds its channel for its whole duration, so a bolus that
# replaces the basal never hands back early (its last stroke is due one
# stroke-interval before the end).
# A segment never runs past the next stroke, step boundary or periodic-bolus
# time, so phase + inc * seconds stays below 2 * period: small ints only.
#
# Volume follows elapsed (monotonic) time; wall-clock time of day only selects
# the flex step and triggers periodic boluses. See docs/dosing.md.
import array
from micropython import const

from limits import DEMAND_MAX_PER_DAY, MAX_PERIODIC, MAX_STEPS
from units import S_PER_DAY

# Stroke kinds: what a delivered stroke counts as.
KIND_NONE = const(0)
KIND_BASAL = const(1)
KIND_BRIDGE = const(2)  # basal volume pushing the old drug out of the catheter
KIND_CLINICIAN = const(3)
KIND_PRIMING = const(4)  # fills a catheter: what it pushes out is saline, beyond the catheter dose
KIND_DEMAND = const(5)
KIND_PERIODIC = const(6)
KIND_UNCOMMANDED = const(7)  # the motor moved with no stroke commanded (a driver fault)

# A periodic bolus never fires twice within this window, whatever the clock
# does (a clock set back across its time would otherwise repeat it).
PERIODIC_REFIRE_MIN_S = const(43200)

# Demand refusals.
DEMAND_OK = const(0)
DEMAND_NOT_PRESCRIBED = const(1)
DEMAND_LOCKOUT = const(2)
DEMAND_DAILY_MAX = const(3)
DEMAND_BOLUS_ACTIVE = const(4)
DEMAND_NOT_RUNNING = const(5)

_FAR = const(1 << 29)  # "no event": larger than any real interval in seconds
_RX_VALUES = const(8)  # the prescription's single values in the sealed copy (seal, intact)


def _copy(dst, src):
    # Element by element: a slice assignment would allocate the slice.
    for i in range(len(src)):
        dst[i] = src[i]


def is_exclusive(kind):
    # Clinician and priming boluses replace the basal while they run.
    return kind == KIND_CLINICIAN or kind == KIND_PRIMING


class Scheduler:
    def __init__(self, stroke_nl):
        self.stroke_nl = stroke_nl
        self.basal_period = stroke_nl * S_PER_DAY
        self.step_start = array.array("i", [0] * MAX_STEPS)
        self.step_rate = array.array("i", [0] * MAX_STEPS)
        self.n_steps = 0
        # Pending profile after a bridge bolus.
        self.next_start = array.array("i", [0] * MAX_STEPS)
        self.next_rate = array.array("i", [0] * MAX_STEPS)
        self.next_n = 0
        self.bridge_left = 0
        self.per_time = array.array("i", [0] * MAX_PERIODIC)
        self.per_strokes = array.array("i", [0] * MAX_PERIODIC)
        self.per_duration = array.array("i", [0] * MAX_PERIODIC)
        self.per_last = array.array("i", [-PERIODIC_REFIRE_MIN_S] * MAX_PERIODIC)
        self.n_per = 0
        self.per_pending = 0  # bit mask of periodic boluses waiting for the bolus channel
        self.demand_strokes = 0
        self.demand_duration = 0
        self.demand_lockout = 0
        self.demand_max = 0
        self.demand_times = array.array("i", [0] * DEMAND_MAX_PER_DAY)
        self.demand_count = 0  # activations recorded in demand_times (ring)
        self.running = False  # anything accrues at all
        self.basal_on = False  # the therapy runs (a priming bolus may run without it)
        # A second copy of the prescription as legitimately loaded: see intact().
        self.sealed_arrays = tuple(array.array("i", a) for a in (
            self.step_start, self.step_rate, self.next_start, self.next_rate, self.per_time, self.per_strokes,
            self.per_duration))
        self.sealed_values = array.array("i", [0] * _RX_VALUES)
        self.mono_s = 0
        self.basal_phase = 0
        self.owed_basal = 0
        self.boluses_started = 0  # which bolus runs: the pump compares it with the one it last saved
        self.clear_bolus()

    # -- programming (not on the tick path) --------------------------------
    def load(self, therapy, bridge_strokes=0):
        # Bridge: keep delivering the current profile for `bridge_strokes`
        # strokes (the catheter's old drug), then switch to the new one.
        if bridge_strokes > 0 and self.n_steps:
            self._copy_steps(therapy, self.next_start, self.next_rate)
            self.next_n = len(therapy.step_start_s)
            self.bridge_left = bridge_strokes
        else:
            self._copy_steps(therapy, self.step_start, self.step_rate)
            self.n_steps = len(therapy.step_start_s)
            self.bridge_left = 0
        self.n_per = len(therapy.periodic)
        for i, (t, strokes, dur) in enumerate(therapy.periodic):
            self.per_time[i] = t
            self.per_strokes[i] = strokes
            self.per_duration[i] = dur
        self.per_pending = 0
        d = therapy.demand
        if d is None:
            self.demand_strokes = 0
        else:
            self.demand_strokes, self.demand_duration, self.demand_lockout, self.demand_max = d
        self.running = True
        self.basal_on = True
        self.seal()

    @staticmethod
    def _copy_steps(therapy, starts, rates):
        for i, s in enumerate(therapy.step_start_s):
            starts[i] = s
            rates[i] = therapy.step_rate_nl_day[i]

    # -- integrity (housekeeping, every 5 min: tick path) --------------------
    # Redundant storage with comparison (IEC 60730 class B): the prescription
    # as loaded is copied apart, and the check compares every value with its
    # copy, the arrays as memory (array equality compares bytes, allocating
    # nothing). Any change to either copy, whatever bits and however many
    # values, is a mismatch; whole arrays, used part or not, and the counts
    # that say how much of them is used.
    def seal(self):
        # The prescription as it is now is the legitimate one (load, the end
        # of a bridge, which happens on the tick path: nothing allocated).
        v = self.sealed_values
        v[0] = self.n_steps
        v[1] = self.next_n
        v[2] = self.n_per
        v[3] = self.demand_strokes
        v[4] = self.demand_duration
        v[5] = self.demand_lockout
        v[6] = self.demand_max
        v[7] = self.basal_period
        # The arrays by name, here and in intact(), not through a list of
        # them: an array replaced rather than filled would escape the check.
        c = self.sealed_arrays
        _copy(c[0], self.step_start)
        _copy(c[1], self.step_rate)
        _copy(c[2], self.next_start)
        _copy(c[3], self.next_rate)
        _copy(c[4], self.per_time)
        _copy(c[5], self.per_strokes)
        _copy(c[6], self.per_duration)

    def intact(self):
        v = self.sealed_values
        if not (self.n_steps == v[0] and self.next_n == v[1] and self.n_per == v[2]
                and self.demand_strokes == v[3] and self.demand_duration == v[4]
                and self.demand_lockout == v[5] and self.demand_max == v[6] and self.basal_period == v[7]):
            return False
        c = self.sealed_arrays
        return (self.step_start == c[0] and self.step_rate == c[1] and self.next_start == c[2]
                and self.next_rate == c[3] and self.per_time == c[4] and self.per_strokes == c[5]
                and self.per_duration == c[6])

    def stop(self):
        # Suspended or stopped for safety: nothing accrues and nothing owed is
        # kept, so resuming never delivers a catch-up bolus.
        self.running = False
        self.basal_on = False
        self.owed_basal = 0
        self.per_pending = 0
        self.clear_bolus()

    def resume(self):
        if self.n_steps:
            self.running = True
            self.basal_on = True

    def clear_bolus(self):
        self.bolus_kind = KIND_NONE
        self.bolus_left = 0
        self.bolus_inc = 0
        self.bolus_period = 1
        self.bolus_phase = 0
        self.bolus_elapsed = 0
        self.owed_bolus = 0

    def start_bolus(self, kind, strokes, duration_s):
        # One stroke is owed at once; the rest are spread evenly over the duration.
        self.boluses_started += 1
        self.bolus_kind = kind
        self.bolus_inc = strokes
        self.bolus_period = duration_s
        self.bolus_phase = 0
        self.bolus_elapsed = 0
        self.bolus_left = strokes - 1
        self.owed_bolus = 1

    def bolus_busy(self):
        return self.bolus_kind != KIND_NONE

    # -- patient demand ----------------------------------------------------
    def demand_check(self):
        # Returns (refusal code, seconds until a request can next be allowed).
        if not self.demand_strokes:
            return DEMAND_NOT_PRESCRIBED, 0
        if not self.basal_on:
            return DEMAND_NOT_RUNNING, 0
        if self.bolus_kind != KIND_NONE:
            return DEMAND_BOLUS_ACTIVE, 0
        now = self.mono_s
        n = self.demand_count
        if n:
            last = self.demand_times[(n - 1) % DEMAND_MAX_PER_DAY]
            wait = last + self.demand_lockout - now
            if wait > 0:
                return DEMAND_LOCKOUT, wait
        if n >= self.demand_max:
            oldest = self.demand_times[(n - self.demand_max) % DEMAND_MAX_PER_DAY]
            wait = oldest + S_PER_DAY - now
            if wait > 0:
                return DEMAND_DAILY_MAX, wait
        return DEMAND_OK, 0

    def demand_start(self):
        self.demand_times[self.demand_count % DEMAND_MAX_PER_DAY] = self.mono_s
        self.demand_count += 1
        self.start_bolus(KIND_DEMAND, self.demand_strokes, self.demand_duration)

    # -- the tick path -----------------------------------------------------
    def step_index(self, tod):
        # With no profile loaded (priming before any therapy) index 0 has rate 0.
        starts = self.step_start
        i = self.n_steps - 1
        while i > 0 and starts[i] > tod:
            i -= 1
        return i if i > 0 else 0

    def _step_rate(self, i):
        # Step i's rate, or none while an exclusive bolus replaces the basal.
        if not self.basal_on or is_exclusive(self.bolus_kind):
            return 0
        return self.step_rate[i]

    def secs_to_event(self, tod):
        # Seconds until the next stroke accrues, step boundary or periodic time.
        if not self.running:
            return _FAR
        i = self.step_index(tod)
        return self._secs_to_event(tod, i, self._step_rate(i))

    def _secs_to_event(self, tod, i, rate):
        # secs_to_event, given the step and its rate (advance has them too).
        nxt = (self.step_start[i + 1] if i + 1 < self.n_steps else S_PER_DAY) - tod
        if rate:
            s = (self.basal_period - self.basal_phase + rate - 1) // rate
            if s < nxt:
                nxt = s
        if self.bolus_left:
            s = (self.bolus_period - self.bolus_phase + self.bolus_inc - 1) // self.bolus_inc
            if s < nxt:
                nxt = s
        elif self.bolus_kind:
            s = self.bolus_period - self.bolus_elapsed  # end of the bolus's hold
            if 0 < s < nxt:
                nxt = s
        times = self.per_time
        for j in range(self.n_per):
            s = times[j] - tod
            if s <= 0:
                s += S_PER_DAY
            if s < nxt:
                nxt = s
        return nxt if nxt > 0 else 1

    def advance(self, secs, tod):
        # Accrue `secs` seconds of therapy starting at time of day `tod`.
        while secs > 0 and self.running:
            i = self.step_index(tod)
            rate = self._step_rate(i)
            n = self._secs_to_event(tod, i, rate)
            if n > secs:
                n = secs
            if rate:
                p = self.basal_phase + rate * n
                while p >= self.basal_period:
                    p -= self.basal_period
                    self.owed_basal += 1
                self.basal_phase = p
            if self.bolus_left:
                p = self.bolus_phase + self.bolus_inc * n
                while p >= self.bolus_period and self.bolus_left:
                    p -= self.bolus_period
                    self.bolus_left -= 1
                    self.owed_bolus += 1
                self.bolus_phase = p
            if self.bolus_kind and self.bolus_elapsed < self.bolus_period:
                self.bolus_elapsed += n
                self._end_bolus_when_done()
            tod += n
            if tod >= S_PER_DAY:
                tod -= S_PER_DAY
            secs -= n
            self.mono_s += n
            if self.n_per and self.basal_on:
                self._periodic_at(tod)
        if not self.running:
            self.mono_s += secs
        if self.per_pending and self.bolus_kind == KIND_NONE:
            self._start_pending()

    def _periodic_at(self, tod):
        times = self.per_time
        for j in range(self.n_per):
            if times[j] == tod and self.mono_s - self.per_last[j] >= PERIODIC_REFIRE_MIN_S:
                self.per_last[j] = self.mono_s
                self.per_pending |= 1 << j

    def _start_pending(self):
        for j in range(self.n_per):
            if self.per_pending & (1 << j):
                self.per_pending &= ~(1 << j)
                self.start_bolus(KIND_PERIODIC, self.per_strokes[j], self.per_duration[j])
                return

    def next_stroke_kind(self):
        if self.owed_bolus:
            return self.bolus_kind
        if self.owed_basal:
            return KIND_BRIDGE if self.bridge_left else KIND_BASAL
        return KIND_NONE

    def stroke_delivered(self, kind):
        if kind == KIND_BASAL or kind == KIND_BRIDGE:
            self.owed_basal -= 1
        else:
            self.owed_bolus -= 1
            self._end_bolus_when_done()
        if self.bridge_left:
            # Any stroke pushes the catheter's old drug: the old profile
            # runs until the catheter holds only the new one.
            self.bridge_left -= 1
            if not self.bridge_left:
                self._end_bridge()

    def _end_bolus_when_done(self):
        if self.bolus_kind and not self.owed_bolus and not self.bolus_left \
                and self.bolus_elapsed >= self.bolus_period:
            self.bolus_kind = KIND_NONE
            if self.per_pending:
                self._start_pending()

    def end_bridge(self):
        # The catheter's earlier drug is gone with the catheter (a revision):
        # the new profile runs from now on.
        if self.bridge_left:
            self.bridge_left = 0
            self._end_bridge()

    def _end_bridge(self):
        n = self.next_n
        for i in range(n):
            self.step_start[i] = self.next_start[i]
            self.step_rate[i] = self.next_rate[i]
        self.n_steps = n
        self.next_n = 0
        self.seal()
