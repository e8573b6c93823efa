# The checkpoint saves the 24-hour ceiling in quarter hours that the guard's
# window keeps as minutes fill and age out (firmware/guard.py, Window.group).
# Checked against a reference written here: each quarter hour summed minute
# by minute from the window's own buckets, for random histories (strokes in
# the same minute, minute by minute, gaps of hours, jumps past 24 h) and
# across a restore.
# mprun: native
import random

from guard import DoseGuard
from persist import _ceiling, _load_ceiling

CASES = 12
OPS = 120
# The reference's own figures (docs/persistence.md): minutes of the window
# (1440 whole ones and the current one) and minutes in a quarter hour.
WINDOW_MIN = 1441
QUARTER_MIN = 15


def ref_quarters(w, reserve):
    # Minute numbers index - 1440 .. index, grouped by quarter hour of the
    # clock (minute // 15), oldest first; the reserve on the newest.
    first = w.index - (WINDOW_MIN - 1)
    out = []
    current = None
    for minute in range(first, w.index + 1):
        q = minute // QUARTER_MIN
        if q != current:
            out.append(0)
            current = q
        out[-1] += w.used[minute % WINDOW_MIN]
    out[-1] += reserve
    return out


def random_history(w, mono_s):
    for _ in range(OPS):
        r = random.randrange(10)
        if r < 6:
            mono_s += random.randrange(0, 300)  # strokes minutes apart, or in the same minute
        elif r < 9:
            mono_s += random.randrange(300, 6 * 3600)
        else:
            mono_s += random.randrange(86400, 3 * 86400)  # the whole window ages out
        w.add(mono_s, random.randrange(1, 90000), 0)
        reserve = random.randrange(0, 1000)
        got = _ceiling(w, reserve)
        assert got[0] == w.index
        assert got[1] == ref_quarters(w, reserve), "quarter hours differ at minute %d" % w.index
        assert sum(got[1]) == w.used_sum + reserve
    return mono_s


def test_saved_quarter_hours_sum_the_minutes_they_cover():
    random.seed(1)
    for case in range(CASES):
        w = DoseGuard().ceiling
        random_history(w, random.randrange(0, 1 << 28))


def test_quarter_hours_stay_exact_after_a_restored_checkpoint():
    random.seed(2)
    for case in range(CASES // 4):
        w = DoseGuard().ceiling
        mono_s = random_history(w, random.randrange(0, 1 << 28))
        saved = _ceiling(w, 0)
        back = DoseGuard().ceiling
        _load_ceiling(back, saved)
        assert _ceiling(back, 0) == saved
        assert back.used_sum == w.used_sum
        random_history(back, mono_s)  # and go on filling and aging out


def test_quarter_hours_start_at_a_window_that_begins_before_minute_zero():
    w = DoseGuard().ceiling
    w.add(0, 7, 0)
    w.add(5 * 60, 11, 0)
    assert _ceiling(w, 3) == [5, ref_quarters(w, 3)]
    assert _ceiling(w, 3)[1][-1] == 21
