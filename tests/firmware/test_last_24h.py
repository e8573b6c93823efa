# The status's "delivered today" and "last 24 h" (today_nl, today_dose_ng,
# last_24h_nl, last_24h_dose_ng): what the motor delivered since the pump
# day began and in the 24 hours before now, checked against the bench's
# stroke record (board times of completed strokes) counted by the test
# itself, each stroke's dose at the concentration the test put in.
import json

from fixtures import DAY_MS, HOUR_MS, continuous, make_pump, raises_limit, run
from flashkit import FlashPump, first_fill, new_image, with_pump

STROKE_NL = 500
NG_PER_STROKE = 5000  # 500 nL of 10 mg/mL
MINUTE_MS = 60000
# The pump counts in hours and takes the strokes of the hour the window
# starts in as evenly spread: a basal rate's 83 or 84 strokes an hour put
# the count within a stroke or two of the record's.
BASAL_SLACK = 2


def record_last_day(pump):
    # Strokes completed in the 24 h before now, from the stroke record.
    now = pump.board.clock.elapsed_ms
    times = pump.board.motor.times(0, 1000000)[0]
    return len([t for t in times if now - DAY_MS < t <= now])


def last_24h(pump):
    st = pump.status()
    return st["last_24h_nl"] // STROKE_NL, st["last_24h_dose_ng"]


def today(pump):
    st = pump.status()
    return st["today_nl"] // STROKE_NL, st["today_dose_ng"]


def assert_near_record(pump, slack=BASAL_SLACK):
    vol, dose = last_24h(pump)
    want = record_last_day(pump)
    assert abs(vol - want) <= slack, (vol, want)
    assert abs(dose - vol * NG_PER_STROKE) < NG_PER_STROKE, (dose, vol)  # every stroke is dose


def test_a_basal_rate_reads_a_days_strokes_at_every_minute_of_the_hour():
    pump = make_pump(continuous())  # 10 mg/day: 2000 strokes a day
    run(pump, 30 * HOUR_MS)
    for _ in range(61):
        assert_near_record(pump)
        run(pump, MINUTE_MS)


def test_before_a_day_has_passed_it_reads_what_was_delivered_so_far():
    pump = make_pump(continuous())
    run(pump, 5 * HOUR_MS + 20 * MINUTE_MS)
    vol, _ = last_24h(pump)
    assert vol == pump.board.motor.completed


def test_a_bolus_counts_for_24_hours_and_then_no_longer():
    pump = make_pump(continuous())
    run(pump, 2 * HOUR_MS)
    pump.clinician_bolus(1000000, 600)  # 1 mg: 200 strokes in 10 min, basal paused
    run(pump, 23 * HOUR_MS)  # 25 h: the bolus's hour wholly inside the window
    assert record_last_day(pump) > 2150  # a day's basal, and the bolus less the basal it replaced
    assert_near_record(pump)
    run(pump, 3 * HOUR_MS)  # 28 h: wholly out of it
    assert record_last_day(pump) < 2050
    assert_near_record(pump)


def test_it_survives_a_restart():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        run(pump, 30 * HOUR_MS + 40 * MINUTE_MS)
        want = last_24h(pump)
        fp.persist.save(clean=True)
        fp.power_off()
        assert last_24h(fp.power_on()) == want
    with_pump(check)


def test_a_state_saved_with_24_hourly_buckets_restores_its_hours():
    # A record from firmware that kept 24 hours (hour h at h % 24) and no
    # bridge or folded doses, read by this one (h % 25): each hour lands
    # where it belongs, and once the window has moved past the hour the
    # record lacked, the figure agrees with the stroke record again.
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        run(pump, 30 * HOUR_MS + 10 * MINUTE_MS)
        d = fp.persist.snapshot(clean=True)
        hour, strokes, dose = d["ledger"]["hours"][:3]
        old_strokes, old_dose = [0] * 24, [0] * 24
        for k in range(24):
            old_strokes[(hour - k) % 24] = strokes[(hour - k) % 25]
            old_dose[(hour - k) % 24] = dose[(hour - k) % 25]
        d["ledger"]["hours"] = [hour, old_strokes, old_dose]  # no bridge or folded doses either
        d["ledger"]["today"] = [20001, 0, 0]  # kept then, ignored now
        fp.persist.store.save("pump", 1, json.dumps(d).encode())
        board = fp.board
        fp.power_off()
        pump = fp.power_on(board=board)
        assert last_24h(pump)[0] == sum(old_strokes)  # the hour it lacked counts as empty
        run(pump, 90 * MINUTE_MS)
        assert_near_record(pump)
    with_pump(check)


def test_delivered_today_counts_the_strokes_since_the_pump_days_midnight():
    pump = make_pump(continuous())  # day 20000 00:00 at board time 0
    run(pump, 30 * HOUR_MS + 25 * MINUTE_MS)
    times = pump.board.motor.times(0, 1000000)[0]
    since_midnight = len([t for t in times if t > DAY_MS])
    assert today(pump) == (since_midnight, since_midnight * NG_PER_STROKE)


def six_hours_with_a_catheter():
    # 10 mg/mL for 6 h with 0.1 mL (200 strokes) of it in the catheter, then
    # between strokes (docs/dosing.md: a stroke under way counts at its
    # kind's strength). Returns the pump and the strokes completed.
    pump = make_pump(continuous())
    pump.revise_catheter(100000)
    pump.catheter.assume_primed(100000)
    run(pump, 6 * HOUR_MS)
    while pump.stroking:
        run(pump, 10)
    return pump, pump.board.motor.completed


def test_a_refill_with_another_strength_changes_no_dose_already_given():
    # 10 mg/mL, then 20 mg/mL at 6 h; the catheter's 0.1 mL of the first
    # solution (200 strokes) is pushed out first, at its own strength.
    catheter_strokes = 100000 // STROKE_NL
    pump, before = six_hours_with_a_catheter()
    given = (today(pump), last_24h(pump))
    assert given[0] == (before, before * NG_PER_STROKE)
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(conc=20000000))
    assert (today(pump), last_24h(pump)) == given
    run(pump, 14 * HOUR_MS)
    after = pump.board.motor.completed - before
    assert after > catheter_strokes
    want = (before + catheter_strokes) * NG_PER_STROKE + (after - catheter_strokes) * 2 * NG_PER_STROKE
    assert today(pump) == (before + after, want)
    assert last_24h(pump) == (before + after, want)  # the window still holds the whole course


def test_a_refill_that_cannot_be_saved_leaves_the_doses_as_they_were():
    # Two changes of strength, the second refused by a failing flash: the
    # pump goes back to its state before it, the doses of both strengths
    # already given included.
    fp = FlashPump(new_image(), flash_faults=True)
    pump = fp.power_on()
    first_fill(pump)
    run(pump, 3 * HOUR_MS)
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(conc=20000000))
    run(pump, 3 * HOUR_MS)
    while pump.stroking:
        run(pump, 10)
    given = (today(pump), last_24h(pump))
    fp.dev.failing = True
    raises_limit("flash_fault", pump.refill, pump.reservoir.remaining_nl, 20000000, continuous(conc=5000000))
    assert pump.reservoir.conc_ng_ml == 20000000
    assert (today(pump), last_24h(pump)) == given
    fp.power_off()


def test_a_drug_change_at_the_same_strength_counts_the_bridge_as_drug_given():
    # Morphine 10 mg/mL, then hydromorphone 10 mg/mL at 6 h: the catheter's
    # 0.1 mL of morphine (200 strokes) is pushed out first. Every stroke puts
    # 5 ug of one drug or the other into the patient: none counts as nothing.
    pump, before = six_hours_with_a_catheter()
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(2000000, drug="hydromorphone"))
    run(pump, 14 * HOUR_MS)
    after = pump.board.motor.completed - before
    assert after > 100000 // STROKE_NL  # the bridge is over
    assert pump.status()["drug_delivered_ng"] == (before + after) * NG_PER_STROKE


def test_after_a_drug_change_today_and_the_last_24_h_count_the_new_drug_only():
    # Morphine 10 mg/mL for 6 h, then hydromorphone 10 mg/mL: the catheter's
    # 0.1 mL of morphine (200 strokes) goes first. Doses of two drugs do not
    # add up: today and the last 24 h give the hydromorphone since the change,
    # and say since when, for a day. Today's strokes are those since the
    # change too (the day's count starts again there: its daily totals);
    # the last 24 h's are every stroke in the window.
    catheter_strokes = 100000 // STROKE_NL
    pump, before = six_hours_with_a_catheter()
    assert "drug_changed_s" not in pump.status()
    pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(2000000, drug="hydromorphone"))
    st = pump.status()
    assert (st["today_dose_ng"], st["last_24h_dose_ng"], st["drug_changed_s"]) == (0, 0, 0)
    assert st["today_nl"] == 0 and st["last_24h_nl"] == before * STROKE_NL
    run(pump, 14 * HOUR_MS)
    after = pump.board.motor.completed - before
    new_drug = (after - catheter_strokes) * NG_PER_STROKE
    assert today(pump) == (after, new_drug)
    assert last_24h(pump) == (before + after, new_drug)
    assert pump.status()["drug_changed_s"] == 14 * 3600
    run(pump, 10 * HOUR_MS)  # a day since the change: the bridge's strokes (its first 2.4 h) still in the window
    assert pump.status()["drug_changed_s"] == 24 * 3600
    run(pump, 4 * HOUR_MS)
    assert "drug_changed_s" not in pump.status()
    assert last_24h(pump)[1] == last_24h(pump)[0] * NG_PER_STROKE  # all hydromorphone now


def test_a_drug_change_is_remembered_across_a_restart():
    # Mid-bridge: the catheter's morphine is still going out. After the
    # restart the bridge is still the other drug, and the change as old.
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        pump.revise_catheter(100000)
        pump.catheter.assume_primed(100000)
        run(pump, 6 * HOUR_MS)
        pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(2000000, drug="hydromorphone"))
        run(pump, HOUR_MS)
        assert pump.bridging
        want = (today(pump), last_24h(pump), pump.status()["drug_changed_s"])
        fp.persist.save(clean=True)
        board = fp.board
        fp.power_off()
        pump = fp.power_on(board=board)
        assert (today(pump), last_24h(pump), pump.status()["drug_changed_s"]) == want
    with_pump(check)


def test_a_drug_change_while_the_flash_fails_is_refused_and_changes_nothing():
    # A day's count still waiting for the log (the flash failing since
    # before midnight): the refill to another drug is refused as the flash's
    # fault, and the pump keeps its drug and its doses.
    fp = FlashPump(new_image(), flash_faults=True)
    pump = fp.power_on()
    first_fill(pump)  # 08:00
    run(pump, 15 * HOUR_MS)
    fp.dev.failing = True
    run(pump, 2 * HOUR_MS)  # past midnight: the day is closed, its records not written
    assert pump.totals.pending
    while pump.stroking:
        run(pump, 10)
    given = (today(pump), last_24h(pump), pump.reservoir.remaining_nl)
    raises_limit("flash_fault", pump.refill, pump.reservoir.remaining_nl, 20000000,
                 continuous(2000000, drug="hydromorphone"))
    assert pump.therapy.drug == "morphine"
    assert (today(pump), last_24h(pump), pump.reservoir.remaining_nl) == given
    fp.power_off()
