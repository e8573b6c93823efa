# Wall-clock time kept by the pump: day number (days since 1970-01-01) and
# time of day, advanced by elapsed monotonic time and set by the programmer.
# Whole seconds feed the scheduler; the sub-second remainder is carried.
from events import DAY_MAX
from units import MS_PER_S, S_PER_DAY


class WallClock:
    def __init__(self):
        self.day = 0
        self.tod_s = 0
        self.sub_ms = 0
        # It reached the last second of the dates the pump keeps (events.DAY_MAX,
        # 2149-06-06; a log record holds the day in 16 bits) and stopped there.
        self.at_end = False

    def elapse(self, ms):
        # Returns the whole seconds that elapsed; tod_s/day move on by them.
        ms += self.sub_ms
        secs = ms // MS_PER_S
        self.sub_ms = ms - secs * MS_PER_S
        tod = self.tod_s + secs
        while tod >= S_PER_DAY:
            if self.day >= DAY_MAX:
                tod = S_PER_DAY - 1
                self.at_end = True
                break
            tod -= S_PER_DAY
            self.day += 1
        self.tod_s = tod
        return secs

    def set(self, day, tod_s):
        self.day = day
        self.tod_s = tod_s
        self.sub_ms = 0
        self.at_end = False

    def ms_to_next_second(self):
        return MS_PER_S - self.sub_ms
