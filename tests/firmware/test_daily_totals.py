# DAILY_TOTAL records: the strokes the motor completed each pump day, per
# kind, and their dose, checked against the bench's stroke record (board
# times of completed strokes) with the test's own arithmetic: a stroke at
# board time t belongs to the pump day the clock showed then.
# mprun: native (also run on the emulator's native build: tests/mprun.py)
import gc

import events
from fixtures import DAY_MS, HOUR_MS, MORPHINE_10MG_ML, continuous, make_pump, run
from flashkit import FlashPump, copy_image, first_fill, new_image, with_pump
from power_cut import PowerCut
from scheduler import KIND_BASAL, KIND_BRIDGE, KIND_CLINICIAN, KIND_DEMAND, KIND_PRIMING

NG_PER_STROKE = 5000  # 500 nL of 10 mg/mL
DAY0 = 20000


def totals(pump):
    # {day: {kind: [strokes, dose ng, b]}}, records of one day and kind added up.
    out = {}
    for r in pump.log.read(1, 100000):
        if r[3] == events.DAILY_TOTAL:
            kinds = out.setdefault(r[4], {})
            k = r[5] & 0xFF
            got = kinds.setdefault(k, [0, 0, r[5]])
            got[0] += r[6]
            got[1] += r[7]
    return out


def day_strokes(pump, day):
    return sum(v[0] for k, v in totals(pump).get(day, {}).items())


def bench_times(board):
    return board.motor.times(0, 1000000)[0]


def per_day(times, segments):
    # segments: [(board ms from, board ms to, day at `from`, ms of that day at `from`)].
    out = {}
    for t in times:
        for lo, hi, day, ms in segments:
            if lo <= t < hi:
                d = day + (ms + t - lo) // DAY_MS
                out[d] = out.get(d, 0) + 1
    return out


def with_demand(rx):
    rx["demand"] = {"dose_ng": 200000, "duration_s": 300, "lockout_s": 3600, "max_per_day": 4}
    return rx


def test_each_day_is_logged_at_midnight_per_kind_with_the_strokes_the_motor_completed():
    pump = make_pump(with_demand(continuous()))  # day 20000 00:00 at board time 0
    run(pump, 10 * HOUR_MS)
    pump.demand_bolus()  # 0.2 mg: 40 strokes
    run(pump, 20 * HOUR_MS)  # day 20001 06:00
    pump.clinician_bolus(500000, 1800)  # 0.5 mg: 100 strokes, basal paused
    run(pump, 2 * DAY_MS)  # to day 20003 06:00
    bench = per_day(bench_times(pump.board), [(0, 1 << 40, DAY0, 0)])
    got = totals(pump)
    assert sorted(got) == [DAY0, DAY0 + 1, DAY0 + 2], sorted(got)  # 20003 is not over
    for day in (DAY0, DAY0 + 1, DAY0 + 2):
        assert day_strokes(pump, day) == bench[day], (day, day_strokes(pump, day), bench[day])
        for k, (n, ng, b) in got[day].items():
            assert ng == n * NG_PER_STROKE and b >> 8 == 0, (day, k, n, ng, b)  # one day, ended at midnight
    assert got[DAY0][KIND_DEMAND][0] == 40 and KIND_CLINICIAN not in got[DAY0]
    assert got[DAY0 + 1][KIND_CLINICIAN][0] == 100 and KIND_DEMAND not in got[DAY0 + 1]
    assert set(got[DAY0 + 2]) == {KIND_BASAL}
    # 2000 basal strokes a day; the bolus day lost the half hour of basal it replaced.
    assert got[DAY0 + 2][KIND_BASAL][0] == 2000
    assert 1957 <= got[DAY0 + 1][KIND_BASAL][0] <= 1959
    records = pump.log.of_type(events.DAILY_TOTAL)
    assert all((r[1], r[2]) == (r[4] + 1, 0) for r in records)  # written at the midnight that ended the day
    assert [(r[5] & 0xFF, r[8]) for r in records if r[4] == DAY0] == [(KIND_BASAL, b"morphine"),
                                                                       (KIND_DEMAND, b"morphine")]


def test_priming_strokes_count_as_volume_and_only_the_drug_beyond_the_catheter_as_dose():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    pump.suspend()
    pump.revise_catheter(100000)  # 200 strokes of saline
    pump.priming_bolus(105000, 600)  # 210 strokes: the last 10 push drug
    run(pump, DAY_MS)
    n, ng, b = totals(pump)[DAY0][KIND_PRIMING]
    assert (n, ng) == (210, 10 * NG_PER_STROKE), (n, ng)


def test_a_day_without_delivery_is_logged_as_nothing_delivered():
    pump = make_pump(continuous())
    pump.suspend()
    run(pump, 2 * DAY_MS + 1000)
    got = totals(pump)
    assert got[DAY0] == {0: [0, 0, 0]} and got[DAY0 + 1] == {0: [0, 0, 0]}, got


def test_a_clock_set_to_another_day_ends_the_day_and_a_day_set_back_into_adds_up():
    pump = make_pump(continuous())
    run(pump, 10 * HOUR_MS)
    t1 = pump.board.clock.elapsed_ms
    pump.set_clock(DAY0 + 5, 6 * 3600)  # forward to another day
    run(pump, 20 * HOUR_MS)  # crosses the midnight of day 20005 at t1 + 18 h
    t2 = pump.board.clock.elapsed_ms
    pump.set_clock(DAY0 + 5, 23 * 3600)  # back from 20006 02:00 into day 20005
    run(pump, 2 * HOUR_MS)
    t3 = pump.board.clock.elapsed_ms
    pump.set_clock(DAY0 + 6, 12 * 3600)  # from 20006 01:00: the same day, no new part
    run(pump, DAY_MS)
    bench = per_day(bench_times(pump.board), [(0, t1, DAY0, 0), (t1, t2, DAY0 + 5, 6 * HOUR_MS),
                                              (t2, t3, DAY0 + 5, 23 * HOUR_MS), (t3, 1 << 40, DAY0 + 6, 12 * HOUR_MS)])
    got = totals(pump)
    assert sorted(got) == [DAY0, DAY0 + 5, DAY0 + 6], sorted(got)
    for day in got:
        assert day_strokes(pump, day) == bench[day], (day, day_strokes(pump, day), bench[day])
    ends = [(r[4], r[5] >> 16 & 0xF) for r in pump.log.of_type(events.DAILY_TOTAL)]
    assert ends == [(DAY0, 1), (DAY0 + 5, 0), (DAY0 + 6, 1), (DAY0 + 5, 0), (DAY0 + 6, 0)], ends


def test_a_concentration_change_at_a_refill_keeps_each_strokes_own_concentration():
    pump = make_pump(continuous())
    pump.catheter.assume_primed(20000)  # 40 strokes of the old drug to push out at the new rate
    run(pump, 9 * HOUR_MS)
    t1 = pump.board.clock.elapsed_ms
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(conc=2 * MORPHINE_10MG_ML))
    run(pump, DAY_MS)
    times = bench_times(pump.board)
    before = len([t for t in times if t < t1])
    after = len([t for t in times if t1 <= t < DAY_MS])
    got = totals(pump)[DAY0]
    bridge = pump.reservoir.strokes[KIND_BRIDGE]  # the catheter's 40 strokes, less one in flight at the refill
    assert 39 <= bridge <= 40 and got[KIND_BRIDGE][:2] == [bridge, bridge * NG_PER_STROKE], (bridge, got)
    assert got[KIND_BASAL][0] == before + after - bridge
    assert got[KIND_BASAL][1] == before * NG_PER_STROKE + (after - bridge) * 2 * NG_PER_STROKE
    # The ledger's dose over the day says the same.
    assert got[KIND_BASAL][1] + got[KIND_BRIDGE][1] == pump.reservoir.drug_delivered_ng() - \
        2 * NG_PER_STROKE * len([t for t in times if t >= DAY_MS])


def parts(pump, day):
    # [(end reason, {kind: (strokes, dose ng)})] of one day, in log order.
    out = []
    for r in pump.log.read(1, 100000):
        if r[3] == events.DAILY_TOTAL and r[4] == day:
            reason = r[5] >> 16 & 0xF
            if not out or out[-1][0] != reason:
                out.append((reason, {}))
            out[-1][1][r[5] & 0xFF] = (r[6], r[7])
    return out


def test_a_drug_change_ends_the_old_drugs_count_so_no_record_adds_two_drugs():
    # Morphine 10 mg/mL until 9 h, then hydromorphone 10 mg/mL: the day has
    # the morphine part (ended by the drug change) and the hydromorphone part
    # (ended at midnight), whose bridge record is the catheter's morphine.
    pump = make_pump(continuous())
    pump.catheter.assume_primed(20000)  # 40 strokes of morphine to push out first
    run(pump, 9 * HOUR_MS)
    while pump.stroking:
        run(pump, 10)
    t1 = pump.board.clock.elapsed_ms
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(2000000, drug="hydromorphone"))
    run(pump, DAY_MS)
    times = bench_times(pump.board)
    before = len([t for t in times if t <= t1])
    after = len([t for t in times if t1 < t < DAY_MS])
    got = parts(pump, DAY0)
    assert [reason for reason, _ in got] == [2, 0], got  # drug change, then midnight
    drugs = [(r[5] & 0xFF, r[8]) for r in pump.log.of_type(events.DAILY_TOTAL) if r[4] == DAY0]
    assert drugs == [(KIND_BASAL, b"morphine"), (KIND_BASAL, b"hydromorphone"), (KIND_BRIDGE, b"morphine")], drugs
    assert got[0][1] == {KIND_BASAL: (before, before * NG_PER_STROKE)}, (got, before, after)
    assert got[1][1] == {KIND_BRIDGE: (40, 40 * NG_PER_STROKE),
                         KIND_BASAL: (after - 40, (after - 40) * NG_PER_STROKE)}


def change_drug_at(pump, when_stroking, rx):
    # Refills to another drug 9 h in, with a stroke under way or between strokes.
    run(pump, 9 * HOUR_MS)
    while bool(pump.stroking) != when_stroking:
        run(pump, 10)
    pump.refill(pump.reservoir.remaining_nl, 20000000, rx)


def day_parts_by_drug(pump, day):
    # [(kind, drug, strokes, dose ng)] of the day's records, in log order.
    return [(r[5] & 0xFF, r[8], r[6], r[7]) for r in pump.log.of_type(events.DAILY_TOTAL) if r[4] == day]


def earlier_drug_strokes(pump, day):
    return [(n, ng) for kind, drug, n, ng in day_parts_by_drug(pump, day) if drug == b"morphine" and kind == KIND_BRIDGE]


def test_the_stroke_under_way_at_a_drug_change_is_the_catheters_earlier_drug():
    # The catheter holds 40 strokes of morphine at the change: the stroke the
    # motor is turning then pushes the first of them, like the 39 after it.
    pump = make_pump(continuous())
    pump.catheter.assume_primed(20000)
    change_drug_at(pump, True, continuous(2000000, drug="hydromorphone"))
    run(pump, DAY_MS)
    assert earlier_drug_strokes(pump, DAY0) == [(40, 40 * NG_PER_STROKE)], day_parts_by_drug(pump, DAY0)


def test_a_bolus_during_the_bridge_is_booked_as_the_catheters_earlier_drug():
    # A 0.05 mg hydromorphone bolus (10 strokes) given at once: its strokes
    # push the catheter's morphine out, so they are morphine, not hydromorphone.
    pump = make_pump(continuous())
    pump.catheter.assume_primed(20000)
    change_drug_at(pump, False, continuous(2000000, drug="hydromorphone"))
    at_change = len(bench_times(pump.board))
    pump.clinician_bolus(50000, 600)
    run(pump, 2 * HOUR_MS)
    since = len(bench_times(pump.board)) - at_change
    st = pump.status()
    assert st["today_dose_ng"] == (since - 40) * NG_PER_STROKE, (st, since)  # hydromorphone: after the 40
    assert pump.log.of_type(events.BOLUS_DELIVERED)[-1][5] == 10  # the bolus itself ran whole
    run(pump, DAY_MS)
    assert earlier_drug_strokes(pump, DAY0) == [(40, 40 * NG_PER_STROKE)], day_parts_by_drug(pump, DAY0)
    assert not [p for p in day_parts_by_drug(pump, DAY0) if p[0] == KIND_CLINICIAN], day_parts_by_drug(pump, DAY0)


def test_a_change_to_another_drug_of_the_same_ceiling_weight_is_bridged():
    # Morphine 10 mg/mL and hydromorphone 12.5 mg/mL weigh the same against
    # their 24-hour maxima (20 and 25 mg/day), and are not the same drug: the
    # catheter's morphine still goes out at the morphine profile, as morphine.
    pump = make_pump(continuous())
    pump.catheter.assume_primed(20000)
    change_drug_at(pump, False, continuous(2500000, conc=12500000, drug="hydromorphone"))
    assert pump.sched.bridge_left == 40
    run(pump, DAY_MS)
    assert earlier_drug_strokes(pump, DAY0) == [(40, 40 * NG_PER_STROKE)], day_parts_by_drug(pump, DAY0)


# -- across resets ----------------------------------------------------------------------------
def reboot(fp):
    board = fp.board
    fp.power_off()
    pump = fp.power_on(board=board)  # the same motor, stroke record and virtual clock
    return pump, board.clock.elapsed_ms, pump.clock.day, pump.clock.tod_s


def test_a_clean_restart_mid_day_keeps_the_days_count_exact():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)  # day 20000 08:00 at board time 0
        run(pump, 10 * HOUR_MS)
        fp.persist.save(clean=True)
        pump, t_boot, day, tod = reboot(fp)
        assert (day, tod) == (DAY0, 18 * 3600)
        run(pump, 10 * HOUR_MS)
        bench = per_day(bench_times(fp.board), [(0, 1 << 40, DAY0, 8 * HOUR_MS)])
        n, ng, b = totals(pump)[DAY0][KIND_BASAL]
        assert n == bench[DAY0] and b >> 20 == 0, (n, bench[DAY0], b)
    with_pump(check)


def test_a_power_cut_mid_day_loses_the_day_neither_whole_nor_twice_and_says_so():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        run(pump, 15 * HOUR_MS)  # 23:00
        t_cut = fp.board.clock.elapsed_ms
        pump, t_boot, day, tod = reboot(fp)  # no clean save: the power died
        assert t_boot == t_cut and day == DAY0 and 22 * 3600 < tod <= 23 * 3600  # the last checkpoint's clock
        run(pump, 3 * HOUR_MS)
        midnight = t_boot + (86400 - tod) * 1000  # by the restored clock
        bench = per_day(bench_times(fp.board), [(0, t_cut, DAY0, 8 * HOUR_MS), (t_boot, 1 << 40, DAY0, tod * 1000)])
        got = totals(pump)
        assert sorted(got) == [DAY0] and midnight < fp.board.clock.elapsed_ms
        n, ng, b = got[DAY0][KIND_BASAL]
        # The strokes since the last checkpoint before the cut are not in the count: at most 32 (the reserve).
        assert bench[DAY0] - 32 <= n <= bench[DAY0], (n, bench[DAY0])
        assert b >> 20 & 0xFF == 1, b  # the record says one unclean reset may have hidden strokes
        assert len(daily_records(pump)) == 1
    with_pump(check)


def daily_records(pump):
    return [r for r in pump.log.read(1, 100000) if r[3] == events.DAILY_TOTAL]


def test_a_power_cut_at_every_flash_write_around_midnight_logs_each_day_exactly_once():
    # The closed day is saved in the state before its records are written;
    # a restore that finds some of them on the log writes only the others.
    base = new_image()
    fp = FlashPump(base)
    pump = fp.power_on()
    first_fill(pump, with_demand(continuous(dose_ng_day=12000000)))
    run(pump, 15 * HOUR_MS + 58 * 60 * 1000)  # 23:58
    pump.demand_bolus()  # 40 strokes over 5 min: a second kind at midnight
    fp.persist.save(clean=True)
    fp.power_off()
    window = 4 * 60 * 1000

    def attempt(cut_at):
        fp = FlashPump(copy_image(base), cut_at=cut_at)
        try:
            pump = fp.power_on()
            run(pump, window)
            return fp, None
        except PowerCut:
            return fp, fp.board

    fp, _ = attempt(None)
    writes = fp.dev.writes
    want = [r[5] & 0xFF for r in daily_records(fp.pump)]
    assert want == [KIND_BASAL, KIND_DEMAND], want
    fp.power_off()
    fp.remove()
    fp = None
    for n in range(1, writes + 1):
        gc.collect()  # an image and a board per try: the 31-bit port has 1 MB of heap
        fp, board = attempt(n)
        try:
            if board is None:
                continue
            pump, _, _, _ = reboot(fp)
            run(pump, 20 * 60 * 1000)  # past midnight by the restored clock
            recs = daily_records(pump)
            kinds = [r[5] & 0xFF for r in recs]
            assert sorted(kinds) == want and all(r[4] == DAY0 for r in recs), (n, recs)
        finally:
            fp.power_off()
            fp.remove()
            fp = pump = None
    print("power cut tried at each of", writes, "flash writes around midnight")


def test_a_day_not_yet_logged_is_merged_with_the_next_and_logged_when_the_flash_works_again():
    pump = make_pump(continuous())
    log = pump.log
    real = log.append

    def failing(*a, **k):
        raise OSError(5)
    log.append = failing
    run(pump, 2 * DAY_MS + 1000)  # two midnights with the log failing
    assert pump.totals.pending and not log.of_type(events.DAILY_TOTAL)
    log.append = real
    run(pump, 120 * 1000)  # the flash retry
    recs = log.of_type(events.DAILY_TOTAL)
    assert len(recs) == 1 and recs[0][4] == DAY0 and recs[0][5] >> 8 & 0xFF == 1, recs  # covers 2 days
    bench = per_day(bench_times(pump.board), [(0, 1 << 40, DAY0, 0)])
    assert recs[0][6] == bench[DAY0] + bench[DAY0 + 1]
