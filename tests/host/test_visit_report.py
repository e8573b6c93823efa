"""Refill-visit report (pumpctl.visit, pumpctl.diary): a month of realistic
data in, exact numbers out; the HTML file is self-contained; and the pump's
own records (the firmware run under CPython) summarize as they should."""
import base64
import datetime as dt
import re
from fractions import Fraction

import pytest

import firmware_on_cpython  # noqa: F401  (firmware/ and boards/unix on sys.path)
from pumpctl import diary, visit
from pumpctl import units as u
from pumpctl.fw import alarms, events

PREV = dt.date(2025, 6, 3)
VISIT = dt.date(2025, 7, 1)  # 28 days later
CONC = 10_000_000  # morphine 10 mg/mL: 10 ng per nL
DEMAND = 5  # scheduler.KIND_DEMAND
LOCKOUT, DAILY_MAX, BOLUS_ACTIVE = 2, 3, 4  # scheduler.DEMAND_*


def rx(day_step_ng):
    return {"drug": "morphine", "conc_ng_ml": CONC,
            "steps": [{"start_s": 0, "dose_ng_day": 3_000_000}, {"start_s": 8 * 3600, "dose_ng_day": day_step_ng},
                      {"start_s": 20 * 3600, "dose_ng_day": 3_000_000}],
            "demand": {"dose_ng": 200_000, "duration_s": 300, "lockout_s": 7200, "max_per_day": 4}}


OLD_RX, NEW_RX = rx(5_000_000), rx(6_000_000)  # 4 mg/day -> 4.5 mg/day

# Demand presses by day index (0 = PREV): "given" or a refusal code.
PRESSES = {1: ["given"], 4: ["given", LOCKOUT, "given"], 8: ["given", "given"],
           10: ["given", "given", "given", "given", DAILY_MAX], 15: ["given", BOLUS_ACTIVE],
           22: [LOCKOUT, LOCKOUT], 27: ["given"]}
CANCELLED_DAY = 15  # that day's bolus stopped after 10 of 40 strokes
CLINICIAN_DAY = 12  # a 0.5 mg clinician bolus
NO_DIARY = {5, 17, 18}
NO_DELIVERY_DATA = {18}
TWO_ENTRIES = {4: 8, 10: 8}  # a second, evening entry with this score


def pain_on(i):
    return 6 if i < 10 else 5 if i < 20 else 4


class Log:
    def __init__(self):
        self.records = []

    def add(self, date, tod_s, etype, a=0, b=0, c=0, d=0, text=b""):
        self.records.append((len(self.records) + 1, visit.day_number(date), tod_s, etype, a, b, c, d, text))


def month(withdrawn_nl_offset=-40_000):
    """A month between two refill visits, as the CLI would collect it."""
    log = Log()
    days = [PREV + dt.timedelta(days=i) for i in range(29)]
    log.add(PREV, 36000, events.REFILL, 5_000_000, 20_000_000, 5_100_000, -100_000)
    delivered = []
    for i, d in enumerate(days):
        dose = 4_000_000 if d < VISIT else 1_750_000  # the visit at 10:30: 10.5 h of the day
        # diary
        if i not in NO_DIARY:
            a, b, text = diary.encode(pain_on(i), ("walking", "rest", "working", "sleep")[i % 4],
                                      "after physio" if i % 9 == 0 else "")
            log.add(d, 8 * 3600 + 60 * i, events.DIARY, a, b, 7, 0, text)
        if i in TWO_ENTRIES:
            a, b, text = diary.encode(TWO_ENTRIES[i], "other", "bad evening, Übelkeit")
            log.add(d, 21 * 3600, events.DIARY, a, b, 7, 0, text)
        # demand boluses
        t = 12 * 3600
        for p in PRESSES.get(i, []):
            t += 600
            log.add(d, t, events.BOLUS_REQUESTED, DEMAND, 40, 300)
            if p == "given":
                log.add(d, t, events.BOLUS_STARTED, DEMAND, 40, 300, 200_000)
                if i == CANCELLED_DAY:
                    log.add(d, t + 75, events.BOLUS_CANCELLED, DEMAND, 10, 30)
                    dose += 50_000
                else:
                    log.add(d, t + 300, events.BOLUS_DELIVERED, DEMAND, 40)
                    dose += 200_000
            else:
                log.add(d, t, events.BOLUS_REFUSED, DEMAND, p, 1800)
        if i == CLINICIAN_DAY:
            log.add(d, 15 * 3600, events.BOLUS_STARTED, 3, 100, 1800, 500_000)
            log.add(d, 15 * 3600 + 1800, events.BOLUS_DELIVERED, 3, 100)
            dose += 500_000
        if i == 14:
            log.add(d, 3 * 3600, events.ALARM_RAISED, alarms.MOTOR_STALL)
            log.add(d, 3 * 3600 + 300, events.ALARM_CLEARED, alarms.MOTOR_STALL)
        if i == 26:
            log.add(d, 6 * 3600, events.ALARM_RAISED, alarms.RESERVOIR_LOW)
            log.add(d, 9 * 3600, events.ALARM_ACKNOWLEDGED, alarms.RESERVOIR_LOW)
        if i not in NO_DELIVERY_DATA:
            delivered.append((d, dose, dose // 10))
    total_nl = sum(v for _, _, v in delivered)
    expected = 20_000_000 - total_nl
    withdrawn = expected + withdrawn_nl_offset
    warning = abs(withdrawn_nl_offset) > 2_000_000 and abs(withdrawn_nl_offset) * 100 > 20 * expected
    log.add(VISIT, 37800, events.REFILL, withdrawn, 20_000_000, expected, withdrawn - expected)
    active = []
    if warning:
        log.add(VISIT, 37800, events.ALARM_RAISED, alarms.REFILL_DISCREPANCY)
        active = [{"id": alarms.REFILL_DISCREPANCY, "name": "refill discrepancy", "critical": False, "silenced_s": 0}]
    log.add(VISIT, 37800, events.ALARM_CLEARED, alarms.RESERVOIR_LOW)
    log.add(VISIT, 37900, events.THERAPY_PROGRAMMED, 3, 450_000, 5_300_000, 0, b"morphine")
    status = {"day": visit.day_number(VISIT), "tod_s": 37900, "state": "delivering", "drug": "morphine",
              "conc_ng_ml": CONC, "remaining_nl": 20_000_000, "capacity_nl": 20_000_000, "low_nl": 2_000_000,
              "residual_nl": 1_000_000, "max_daily_nl": 530_000,
              "low_in_s": 18_000_000 * 86400 // 530_000, "empty_in_s": 19_000_000 * 86400 // 530_000,
              "alarms": active}
    return visit.VisitData(
        device={"serial": "ITP-000123", "model": "emulated-20mL", "firmware": "0.4.0"},
        visit_date=VISIT, previous_visit=visit.day_number(PREV), records=log.records, status=status,
        refill={"expected_nl": expected, "withdrawn_nl": withdrawn, "discrepancy_nl": withdrawn - expected,
                "warning": warning},
        old_rx=OLD_RX, new_rx=NEW_RX, delivered=delivered)


@pytest.fixture(scope="module")
def ok():
    return visit.summarize(month())


@pytest.fixture(scope="module")
def bad():
    return visit.summarize(month(withdrawn_nl_offset=-2_600_000))


# -- the summary, exactly --------------------------------------------------------------------
def test_interval_and_delivery(ok):
    assert ok.interval_days == 28 and ok.drug == "morphine" and ok.unit == "mg"
    assert len(ok.days) == 29 and ok.days[0].date == PREV and ok.days[-1].date == VISIT
    # 27 full days at 4 mg + 1.75 mg on the visit day + 10 demand boluses of 0.2 mg
    # + 0.05 mg of the cancelled one + a 0.5 mg clinician bolus
    assert ok.total_dose_ng == 112_300_000
    assert ok.total_volume_nl == 11_230_000
    assert ok.days_with_delivery_data == 28
    # the mean over the exact time the 28 days with data cover: 27 whole days and the visit day until 10:31:40
    assert ok.mean_span_s == 27 * 86400 + 37900
    assert ok.mean_daily_dose_ng == Fraction(112_300_000 * 86400, 27 * 86400 + 37900)
    assert ok.mean_daily_volume_nl == Fraction(11_230_000 * 86400, 27 * 86400 + 37900)
    assert ok.days[18].dose_ng is None and ok.days[18].volume_nl is None


def test_diary(ok):
    assert len(ok.diary) == 28 and ok.days_with_diary == 26
    # mean of the daily means: (8x6 + 7 + 7x5 + 6.5 + 9x4) / 26
    assert ok.pain_mean == Fraction(265, 52)
    assert (ok.pain_min, ok.pain_max) == (4, 8)
    first = ok.diary[0]
    assert (first.date, first.tod_s, first.pain, first.activity, first.note) == (PREV, 28800, 6, "walking",
                                                                                 "after physio")
    evening = [e for e in ok.diary if e.tod_s == 21 * 3600]
    assert [(e.date, e.pain, e.activity, e.note) for e in evening] == [
        (PREV + dt.timedelta(days=4), 8, "other", "bad evening, Übelkeit"),
        (PREV + dt.timedelta(days=10), 8, "other", "bad evening, Übelkeit")]


def test_dose_against_pain_by_day(ok):
    d10 = ok.days[10]
    assert (d10.date, d10.dose_ng, d10.volume_nl, d10.pain_mean, d10.pain_entries, d10.demand_given,
            d10.demand_refused) == (dt.date(2025, 6, 13), 4_800_000, 480_000, Fraction(13, 2), 2, 4, 1)
    assert (ok.days[5].pain_mean, ok.days[5].pain_entries) == (None, 0)
    assert ok.days[15].dose_ng == 4_050_000 and ok.days[12].dose_ng == 4_500_000


def test_boluses(ok):
    b = ok.boluses
    assert (b.requested, b.given, b.refused, b.delivered, b.cancelled) == (16, 11, 5, 10, 1)
    assert b.refused_by_reason == {"lockout": 3, "daily maximum": 1, "bolus in progress": 1}
    assert b.other_given == {"clinician": 1}
    assert sum(d.demand_given for d in ok.days) == 11 and sum(d.demand_refused for d in ok.days) == 5


def test_alarms(ok, bad):
    rows = {a.name: (a.critical, a.raised, a.acknowledged, a.cleared, a.active_now) for a in ok.alarms}
    assert rows == {"motor-stall": (True, 1, 0, 1, False), "low-reservoir": (False, 1, 1, 1, False)}
    stall = next(a for a in ok.alarms if a.alarm_id == alarms.MOTOR_STALL)
    assert stall.first_raised == dt.datetime(2025, 6, 17, 3, 0)
    assert {a.name: a.active_now for a in bad.alarms}["refill-discrepancy"] is True


def test_refill_within_tolerance(ok):
    r = ok.refill
    assert (r.expected_nl, r.withdrawn_nl, r.discrepancy_nl, r.warning, r.added_nl) == (
        8_770_000, 8_730_000, -40_000, False, 20_000_000)
    assert r.percent == Fraction(-40_000 * 100, 8_770_000)
    assert not any("DISCREPANCY" in a for a in ok.attention)


def test_refill_with_discrepancy(bad):
    r = bad.refill
    assert (r.expected_nl, r.withdrawn_nl, r.discrepancy_nl, r.warning) == (8_770_000, 6_170_000, -2_600_000, True)
    assert u.fmt_pct(r.percent) == "-29.6 %"
    assert bad.attention[0] == ("REFILL DISCREPANCY: withdrawn 6.170 mL, expected 8.770 mL (-2.600 mL, -29.6 %): "
                                "less came out than the pump computed: over-infusion, a leak or a pocket fill at "
                                "the last refill?")
    assert "active now: refill-discrepancy" in bad.attention


def test_refill_taken_from_the_log_when_no_result_is_given():
    data = month(withdrawn_nl_offset=-2_600_000)
    data.refill = None
    r = visit.summarize(data).refill
    assert (r.expected_nl, r.withdrawn_nl, r.discrepancy_nl, r.warning, r.added_nl) == (
        8_770_000, 6_170_000, -2_600_000, True, 20_000_000)
    data = month()
    data.refill = None
    assert visit.summarize(data).refill.warning is False


def test_reservoir_gauge_and_projection(ok):
    res = ok.reservoir
    assert res.levels[-1] == (VISIT, 8_770_000)  # the gauge at the refill
    assert res.levels[-2] == (VISIT - dt.timedelta(days=1), 8_770_000 + 175_000)
    assert res.levels[0] == (PREV, 20_000_000 - 400_000)  # after the first day's 0.4 mL
    assert len(res.levels) == 28
    assert (res.low_date, res.empty_date) == (dt.date(2025, 8, 4), dt.date(2025, 8, 6))
    assert res.interim_refills == ()


def test_refill_between_visits_resets_the_gauge():
    data = month()
    mid = PREV + dt.timedelta(days=14)  # 06:00: withdrawn 11 mL of an expected 14.55 (24 % less), filled 20 mL
    data.records.append((500, visit.day_number(mid), 21600, events.REFILL, 11_000_000, 20_000_000, 14_550_000,
                         -3_550_000, b""))
    s = visit.summarize(data)
    levels = dict(s.reservoir.levels)
    # after the refill the gauge walks back from the visit as before ...
    assert levels[mid] == 8_770_000 + sum(d.volume_nl or 0 for d in s.days[15:])
    # ... before it, from the refill's expected volume plus that day's delivery up to 06:00
    day_nl = s.days[14].volume_nl
    assert levels[mid - dt.timedelta(days=1)] == 14_550_000 + day_nl * 21600 // 86400
    assert levels[PREV] == levels[mid - dt.timedelta(days=1)] + sum(d.volume_nl or 0 for d in s.days[1:14])
    (d, r), = s.reservoir.interim_refills
    assert (d, r.withdrawn_nl, r.expected_nl, r.added_nl, r.warning) == (mid, 11_000_000, 14_550_000, 20_000_000, True)
    assert ("refill between visits on 2025-06-17: withdrawn 11.000 mL, expected 14.550 mL (-3.550 mL), DISCREPANCY"
            in s.attention)


def test_therapy_side_by_side(ok):
    rows = {r.label: (r.old, r.new, r.changed) for r in ok.therapy}
    assert rows == {
        "drug": ("morphine 10 mg/mL", "morphine 10 mg/mL", False),
        "basal from 00:00": ("3 mg/day (0.300 mL/day)", "3 mg/day (0.300 mL/day)", False),
        "basal from 08:00": ("5 mg/day (0.500 mL/day)", "6 mg/day (0.600 mL/day)", True),
        "basal from 20:00": ("3 mg/day (0.300 mL/day)", "3 mg/day (0.300 mL/day)", False),
        "basal per day": ("4 mg/day (0.400 mL/day)", "4.5 mg/day (0.450 mL/day)", True),
        "demand bolus": ("0.2 mg over 5 min (0.020 mL), lockout 2 h, max 4/24 h",) * 2 + (False,),
        "24-h maximum": ("4.8 mg/day (0.480 mL/day)", "5.3 mg/day (0.530 mL/day)", True),
    }
    assert ok.therapy_changed


def test_attention_lines(ok):
    assert ok.attention == (
        "critical alarm motor-stall raised 1 time (first 2025-06-17 03:00)",
        "5 of 16 demand requests refused (lockout 3, daily maximum 1, bolus in progress 1)",
        "delivery data missing for 1 day",
    )


def test_microgram_drug_and_unchanged_therapy():
    zic = {"drug": "ziconotide", "conc_ng_ml": 100_000, "steps": [{"start_s": 0, "dose_ng_day": 2_400}]}
    data = visit.VisitData(device={"serial": "X"}, visit_date=dt.date(2025, 7, 1), previous_visit=dt.date(2025, 6, 30),
                           records=[], status={"remaining_nl": 5_000_000, "capacity_nl": 20_000_000,
                                               "low_nl": 2_000_000, "residual_nl": 1_000_000, "max_daily_nl": 24_000,
                                               "low_in_s": 3 * 86400, "empty_in_s": None, "alarms": []},
                           old_rx=zic, delivered=[(dt.date(2025, 6, 30), 2_400, 24_000)])
    s = visit.summarize(data)
    assert s.unit == "µg" and not s.therapy_changed
    rows = {r.label: r.new for r in s.therapy}
    assert rows["basal per day"] == "2.4 µg/day (0.024 mL/day)" and rows["drug"] == "ziconotide 100 µg/mL"
    assert s.refill is None and s.reservoir.empty_date is None
    assert s.reservoir.low_date == dt.date(2025, 7, 4)
    assert "low reservoir projected 2025-07-04, before a 1-day return (2025-07-02)" not in s.attention
    assert "no pain diary entries since the last visit" in s.attention
    text = visit.render_text(s)
    assert "no refill at this visit" in text and "empty never" in text


def test_low_reservoir_before_the_next_visit_is_flagged():
    data = month()
    data.status["low_in_s"] = 20 * 86400
    s = visit.summarize(data)
    assert "low reservoir projected 2025-07-21, before a 28-day return (2025-07-29)" in s.attention


def test_unreadable_and_out_of_interval_records_are_reported_not_fatal():
    data = month()
    data.records.append((9998, visit.day_number(VISIT), 40000, events.DIARY, 5, 99, 0, 0, b""))
    data.records.append((9999, visit.day_number(PREV) - 3, 0, events.BOLUS_REQUESTED, DEMAND, 40, 300, 0, b""))
    s = visit.summarize(data)
    assert "diary record 9998: unknown activity code 99" in s.problems
    assert "1 event records dated outside 2025-06-03..2025-07-01 ignored" in s.problems
    assert s.boluses.requested == 16 and len(s.diary) == 28


def test_bad_input_is_named():
    data = month()
    with pytest.raises(visit.VisitError, match="status is missing low_in_s"):
        visit.VisitData({}, VISIT, PREV, [], {k: v for k, v in data.status.items() if k != "low_in_s"})
    with pytest.raises(visit.VisitError, match="delivered has two rows for 2025-06-03"):
        visit.VisitData({}, VISIT, PREV, [], data.status, delivered=[(PREV, 1, 1), (PREV, 2, 2)])
    with pytest.raises(visit.VisitError, match="previous_visit 2025-07-01 is after visit_date 2025-06-03"):
        visit.VisitData({}, PREV, VISIT, [], data.status)


# -- diary encoding ------------------------------------------------------------------------------
def test_diary_encoding_round_trip_and_limits():
    a, b, text = diary.encode(7, "exercise", "swim 20 min")
    assert (a, b, text) == (7, diary.ACTIVITIES.index("exercise"), b"swim 20 min")
    e = diary.decode((12, 20270, 3600, events.DIARY, a, b, 3, 0, text))
    assert (e.seq, e.date, e.tod_s, e.pain, e.activity, e.note) == (12, dt.date(2025, 7, 1), 3600, 7, "exercise",
                                                                  "swim 20 min")
    assert diary.link_args(0, "rest") == {"pain": 0, "activity": "rest", "note": ""}
    diary.encode(10, "other", "é" * 16)  # 32 bytes
    with pytest.raises(diary.DiaryError, match="note is 34 bytes of UTF-8; at most 32 fit"):
        diary.encode(10, "other", "é" * 17)
    with pytest.raises(diary.DiaryError, match="pain score must be a whole number 0-10, got 11"):
        diary.encode(11, "rest")
    with pytest.raises(diary.DiaryError, match="activity must be one of: rest, sleep"):
        diary.encode(3, "flying")
    with pytest.raises(diary.DiaryError, match="record 5 is refill, not a diary entry"):
        diary.decode((5, 1, 0, events.REFILL, 0, 0, 0, 0, b""))


def test_diary_vocabulary_is_the_firmwares():
    from pumpctl.fw import link_commands as lc
    assert diary.ACTIVITIES == lc.ACTIVITIES and diary.NOTE_MAX == lc.NOTE_MAX == 32
    for name in ("rest", "walking", "exercise", "sleep", "other"):
        assert name in diary.ACTIVITIES


# -- rendering ------------------------------------------------------------------------------------
def test_text_report(bad):
    text = visit.render_text(bad)
    lines = text.splitlines()
    assert lines[0] == ("Refill visit 2025-07-01   pump ITP-000123 (emulated-20mL, firmware 0.4.0)   "
                        "since 2025-06-03 (28 days)")
    assert lines[2] == "Attention:" and lines[3].startswith("  ! REFILL DISCREPANCY")
    assert ("Refill          expected 8.770 mL, withdrawn 6.170 mL, difference -2.600 mL (-29.6 %): WARNING; "
            "filled 20.000 mL") in lines
    assert ("Demand boluses  16 requested, 11 given, 5 refused (lockout 3, daily maximum 1, bolus in progress 1); "
            "10 completed; 1 stopped early; other boluses: clinician 1") in lines
    assert "Pain diary      28 entries on 26 of 29 days; mean 5.1/10 (range 4-8)" in lines
    assert ("Delivered       morphine 112.3 mg (11.230 mL) on 28 calendar days; mean 4.093 mg/day (0.409 mL/day) "
            "over the 658.5 h (27.4 days) from 2025-06-03 00:00 to 2025-07-01 10:31 (1 day in it left out: no data)"
            ) in lines
    assert any(re.fullmatch(r"\s+\* basal per day\s+4 mg/day \(0.400 mL/day\)\s+4.5 mg/day \(0.450 mL/day\)", l)
               for l in lines)
    # no delivery_detail in this data: where the day's figures came from is not known ("-")
    assert any(re.fullmatch(r"\s+2025-06-13\s+4.8 mg\s+0.480 mL\s+-\s+6.5\s+2\s+4\s+1", l) for l in lines)
    assert len(lines) < 80


def test_html_report_is_self_contained(bad, tmp_path):
    path = visit.render_html(bad, tmp_path / "visit.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page
    markup = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # base64 may hold "//"
    assert "//" not in markup and "url(" not in markup
    assert "<script" not in markup and "<link" not in markup and "@import" not in markup
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert [alt for alt, _ in images] == ["delivered dose and pain score by day", "reservoir volume and projection",
                                          "demand boluses given and refused by day"]
    for _, b64 in images:
        png = base64.b64decode(b64, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width == 800 and 200 <= height <= 400
    assert page.count("<img") == 3
    # the tables show the numbers
    assert "<td>basal per day</td><td>4 mg/day (0.400 mL/day)</td><td>4.5 mg/day (0.450 mL/day)</td>" in page
    assert '<tr class="changed"><td>basal from 08:00</td>' in page
    assert ('<td class="n">8.770 mL</td><td class="n">6.170 mL</td><td class="n">-2.600 mL</td>'
            '<td class="n">-29.6 %</td><td>WARNING</td>') in page
    assert ('<tr><td>2025-06-13</td><td class="n">4.8 mg</td><td class="n">0.480 mL</td><td>-</td><td class="n">6.5</td>'
            '<td class="n">2</td><td class="n">4</td><td class="n">1</td></tr>') in page
    assert '<td class="n">16</td><td class="n">11</td><td class="n">5</td><td class="n">10</td><td class="n">1</td>' in page
    assert "<td>lockout</td><td class=\"n\">3</td>" in page
    assert "<td>motor-stall</td><td>critical</td><td class=\"n\">1</td><td>2025-06-17 03:00</td>" in page
    assert "bad evening, Übelkeit" in page and "REFILL DISCREPANCY" in page


def test_html_escapes_text(tmp_path):
    data = month()
    data.device["serial"] = "<b>&x"
    page = visit.render_html(visit.summarize(data), tmp_path / "v.html").read_text()
    assert "<b>&x" not in page and "&lt;b&gt;&amp;x" in page


# -- the pump's own records --------------------------------------------------------------------------
def test_summary_of_a_firmware_pump_run():
    """The emulated pump (firmware under CPython, virtual time) writes the log,
    status and refill result that summarize() reads."""
    from pump import Pump
    from pumpctl import visitrun
    from scheduler import DEMAND_BOLUS_ACTIVE, DEMAND_LOCKOUT, DEMAND_OK
    from unix_board import UnixBoard, run_virtual

    board = UnixBoard(virtual=True)
    pump = Pump(board)
    start = visit.day_number(PREV)
    pump.clock.set(start, 0)
    pump.reservoir.fill(20_000_000)
    pump.program(OLD_RX)
    for i in range(3):
        run_virtual(pump, 12 * 3600 * 1000)
        assert pump.demand_bolus() == (DEMAND_OK, 0)
        assert pump.demand_bolus()[0] == DEMAND_BOLUS_ACTIVE  # the 5-min bolus is still running
        run_virtual(pump, 600 * 1000)
        code, wait = pump.demand_bolus()
        assert code == DEMAND_LOCKOUT and wait > 0
        a, b, text = diary.encode(5 - i, "walking", "day %d" % i)
        pump.record(events.DIARY, a, b, 0, 0, text)
        run_virtual(pump, (12 * 3600 - 600) * 1000)  # to midnight
    expected_before = pump.status()["remaining_nl"]
    # The pump's daily totals, against the stroke record (board time 0 is PREV 00:00).
    rows, detail, _ = visitrun.delivered(pump.log.records, (start, 0), (pump.clock.day, pump.clock.tod_s),
                                         visitrun.DeliveryState(), 500, CONC)
    times = pump.board.motor.times(0, 100_000)[0]
    bench = [len([t for t in times if i * 86_400_000 <= t < (i + 1) * 86_400_000]) for i in range(3)]
    assert rows == [(start + i, bench[i] * 5_000, bench[i] * 500) for i in range(3)], (rows, bench)
    assert [detail[start + i].source for i in range(3)] == ["pump"] * 3
    assert [k[:2] for k in detail[start].kinds] == [(1, bench[0] - 40), (5, 40)]  # basal, one demand bolus
    delivered = [(visit.as_date(d), ng, nl) for d, ng, nl in rows]
    result = pump.refill(expected_before - 100_000, 20_000_000, NEW_RX)
    data = visit.VisitData(device={"serial": "emulated"}, visit_date=pump.clock.day, previous_visit=start,
                           records=pump.log.records, status=pump.status(), refill=result,
                           old_rx=OLD_RX, new_rx=NEW_RX, delivered=delivered)
    s = visit.summarize(data)
    b = s.boluses
    assert (b.requested, b.given, b.refused, b.delivered) == (9, 3, 6, 3)
    assert b.refused_by_reason == {"bolus in progress": 3, "lockout": 3}
    assert [(e.pain, e.activity, e.note) for e in s.diary] == [(5, "walking", "day 0"), (4, "walking", "day 1"),
                                                               (3, "walking", "day 2")]
    # 4 mg basal + one 0.2 mg bolus a day, to within a stroke (5 µg)
    assert all(abs(ng - 4_200_000) <= 5_000 for _, ng, _ in delivered)
    assert s.total_volume_nl == 20_000_000 - expected_before
    assert s.refill.expected_nl == expected_before and s.refill.discrepancy_nl == -100_000
    assert not s.refill.warning and s.refill.added_nl == 20_000_000
    assert s.reservoir.remaining_nl == 20_000_000 and s.reservoir.low_date is not None
    assert s.therapy_changed and s.problems == ()


def test_presses_and_refusals_the_pump_folded_into_repeated_records_are_counted():
    # A flood of presses is stored as the first two of each hour and one
    # REPEATED record of the rest (docs/persistence.md): the report counts them all.
    data = month()
    day = visit.day_number(PREV + dt.timedelta(days=22))
    key = events.fold_key(events.BOLUS_REFUSED, DEMAND, LOCKOUT, 0, 0)
    data.records.append((10_000, day, 13 * 3600, events.REPEATED, events.BOLUS_REQUESTED, 500,
                         events.fold_key(events.BOLUS_REQUESTED, DEMAND, 0, 0, 0), 3000, b""))
    data.records.append((10_001, day, 13 * 3600, events.REPEATED, events.BOLUS_REFUSED, 500, key, 3000, b""))
    b = visit.summarize(data).boluses
    assert (b.requested, b.refused) == (16 + 500, 5 + 500)
    assert b.refused_by_reason["lockout"] == 3 + 500


# -- the pump's daily totals ---------------------------------------------------------------------
def test_delivered_per_day_is_the_pumps_daily_total_and_a_day_without_one_is_estimated():
    from pumpctl import visitrun
    DT, BASAL, PRIMING, RESET = events.DAILY_TOTAL, 1, 4, 1 << 20
    recs = [(1, 100, 36000, events.THERAPY_PROGRAMMED, 1, 1_000_000, 10_000_000, 0, b"morphine"),
            # day 100: priming (volume; 10 strokes beyond the catheter as dose), basal, a demand bolus
            (2, 101, 0, DT, 100, PRIMING, 210, 50_000, b"priming"),
            (3, 101, 0, DT, 100, BASAL, 1160, 5_800_000, b"basal"),
            (4, 101, 0, DT, 100, DEMAND, 40, 200_000, b"demand bolus"),
            # day 101: an unclean reset; the clock set back into it gave it two records of basal
            (5, 101, 50000, DT, 101, BASAL | RESET | 1 << 16, 1000, 5_000_000, b"basal"),
            (6, 102, 0, DT, 101, BASAL, 999, 4_995_000, b"basal"),
            # day 102: no record (the log rolled it off, say): estimated; day 103: the visit, in progress
            ]
    rows, detail, state = visitrun.delivered(recs, (100, 36000), (103, 43200), visitrun.DeliveryState(), 500,
                                             10_000_000)
    assert rows == [(100, 6_050_000, 705_000), (101, 9_995_000, 999_500), (102, 10_000_000, 1_000_000),
                    (103, 5_000_000, 500_000)], rows
    assert [detail[d].source for d in (100, 101, 102, 103)] == ["pump", "pump", "estimated", "estimated"]
    assert detail[100].kinds == ((BASAL, 1160, 5_800_000, 580_000), (PRIMING, 210, 50_000, 105_000),
                                 (DEMAND, 40, 200_000, 20_000))
    assert detail[101].resets == 1 and detail[101].kinds == ((BASAL, 1999, 9_995_000, 999_500),)
    data = visit.VisitData(device={"serial": "X"}, visit_date=103, previous_visit=100, records=recs,
                           status=month().status | {"day": 103, "tod_s": 43200}, old_rx=OLD_RX,
                           delivered=rows, delivery_detail=detail)
    s = visit.summarize(data)
    assert [d.delivery.source for d in s.days] == ["pump", "pump", "estimated", "estimated"]
    text = visit.render_text(s)
    assert "basal 5.8 mg (0.580 mL), priming 0.05 mg (0.105 mL), demand 0.2 mg (0.020 mL)" in text
    assert "estimated (no daily total from the pump)" in text and "estimated (day in progress)" in text
    assert "the pump's daily totals, 2 days estimated" in text
    assert ("1970-04-12: the pump reset 1 time without saving: up to 0.016 mL delivered that day may be uncounted"
            in s.attention)
    assert "delivery on 1970-04-13, 1970-04-14 estimated from the therapy records (no daily total from the pump)" \
        in s.attention


def test_a_second_visit_the_same_day_misses_no_delivery_data():
    s = visit.summarize(visit.VisitData(
        device={"serial": "X"}, visit_date=103, previous_visit=103, records=[],
        status=month().status | {"day": 103, "tod_s": 43200}, old_rx=OLD_RX, delivered=[], delivery_detail={}))
    assert not [a for a in s.attention if "delivery data missing" in a], s.attention
    assert visit.headline(s)["delivered"] == "- (the last visit was today)"


def test_the_visit_day_is_the_pumps_own_count_so_far_when_it_has_one():
    from pumpctl import visitrun
    rows = [(102, 10_000_000, 1_000_000), (103, 5_000_000, 500_000)]
    est = {102: visit.DayDelivery("pump"), 103: visit.DayDelivery("estimated")}
    st = {"day": 103, "tod_s": 43200, "today_nl": 480_000, "today_dose_ng": 4_800_000}
    detail = dict(est)
    assert visitrun.with_today(rows, detail, st, 100) == [(102, 10_000_000, 1_000_000), (103, 4_800_000, 480_000)]
    assert detail[103].source == visit.SO_FAR
    s = visit.summarize(visit.VisitData(
        device={"serial": "X"}, visit_date=103, previous_visit=102, records=[],
        status=month().status | st, old_rx=OLD_RX, delivered=visitrun.with_today(rows, dict(est), st, 100),
        delivery_detail=detail))
    text = visit.render_text(s)
    assert "the pump's count so far (day in progress)" in text and "estimated" not in text
    # The interval began today (a second visit), or firmware without the count: estimated as before.
    for start_day, status in ((103, st), (100, {k: v for k, v in st.items() if k != "today_dose_ng"})):
        detail = dict(est)
        assert visitrun.with_today(rows, detail, status, start_day) == rows
        assert detail[103].source == "estimated"


def test_another_drugs_strokes_count_in_the_volume_and_are_listed_apart_never_added_to_the_dose():
    # A refill from morphine to hydromorphone 10 mg/mL at noon of day 101:
    # the morphine part (end reason 2), the bridge's morphine, the new drug.
    from pumpctl import visitrun
    DT, BASAL, BRIDGE, DRUG_END = events.DAILY_TOTAL, 1, 2, 2 << 16
    recs = [(1, 100, 36000, events.THERAPY_PROGRAMMED, 1, 1_000_000, 10_000_000, 0, b"morphine"),
            (2, 101, 0, DT, 100, BASAL, 2000, 10_000_000, b"morphine"),
            (3, 101, 43200, events.THERAPY_PROGRAMMED, 1, 200_000, 2_000_000, 400, b"hydromorphone"),
            (4, 101, 43200, DT, 101, BASAL | DRUG_END, 1000, 5_000_000, b"morphine"),
            (5, 102, 0, DT, 101, BASAL, 100, 500_000, b"hydromorphone"),
            (6, 102, 0, DT, 101, BRIDGE, 100, 500_000, b"morphine"),
            (7, 103, 0, DT, 102, BASAL, 400, 2_000_000, b"hydromorphone")]
    rows, detail, _ = visitrun.delivered(recs, (100, 36000), (103, 0), visitrun.DeliveryState(), 500,
                                         10_000_000, "hydromorphone")
    # dose: hydromorphone only; volume: every stroke
    assert rows[:2] == [(100, 0, 1_000_000), (101, 500_000, 600_000)], rows
    assert detail[101].kinds == ((BASAL, 100, 500_000, 50_000),)
    assert detail[101].other == ((BASAL, 1000, 5_000_000, 500_000, "morphine"), (BRIDGE, 100, 500_000, 50_000,
                                                                                 "morphine"))
    assert visit.by_kind(detail[101], "mg") == ("basal 0.5 mg (0.050 mL), basal 5 mg morphine (0.500 mL, not in "
                                                "the day's dose), bridge 0.5 mg morphine (0.050 mL, not in the "
                                                "day's dose)")
    hydro = {"drug": "hydromorphone", "conc": 10_000_000, "steps": [[0, 2_000_000]]}
    s = visit.summarize(visit.VisitData(
        device={"serial": "X"}, visit_date=103, previous_visit=100, records=recs,
        status=month().status | {"day": 103, "tod_s": 0, "drug": "hydromorphone"}, old_rx=hydro,
        delivered=rows, delivery_detail=detail))
    assert ("another drug in this interval: morphine on 1970-04-11, 1970-04-12; its doses are listed apart, not "
            "added to the hydromorphone dose (milligrams of two drugs do not add up)") in s.attention
    delivered = visit.headline(s)["delivered"]
    assert "also morphine 15.5 mg, not added (another drug)" in delivered
    # The mean is hydromorphone's over the days it alone was given (day 102).
    assert s.mean_days == 1 and ("mean 2 mg/day (0.200 mL/day) over the 24 h of hydromorphone alone from "
                                 "1970-04-13 00:00 to 1970-04-14 00:00") in delivered, delivered
    # Records of earlier firmware (the kind as their text) and of the same drug count as before.
    same = visitrun.daily_totals([(2, 101, 0, DT, 100, BASAL, 2000, 10_000_000, b"basal")], 500, "hydromorphone")
    assert same[100].kinds == ((BASAL, 2000, 10_000_000, 1_000_000),) and same[100].other == ()


def test_a_day_of_no_delivery_is_zero_not_missing():
    from pumpctl import visitrun
    recs = [(1, 101, 0, events.DAILY_TOTAL, 100, 0, 0, 0, b"nothing delivered")]
    rows, detail, _ = visitrun.delivered(recs, (100, 0), (101, 0), visitrun.DeliveryState(), 500, 10_000_000)
    assert rows == [(100, 0, 0)] and detail[100].source == "pump" and detail[100].kinds == ()
    assert visit.by_kind(detail[100], "mg") == "nothing delivered"



def _after_a_drug_change_visited_at_noon():
    # Morphine to ziconotide 25 ug/mL at 2.4 ug/day at noon of day 100 (the
    # last visit), its bridge of morphine through day 101, the visit at noon
    # of day 102: the pump's count so far is 12 h of ziconotide alone.
    from pumpctl import visitrun
    DT, BASAL, BRIDGE, DRUG_END = events.DAILY_TOTAL, 1, 2, 2 << 16
    recs = [(1, 100, 43200, events.THERAPY_PROGRAMMED, 1, 96_000, 2_400, 400, b"ziconotide"),
            (2, 101, 0, DT, 100, BASAL | DRUG_END, 200, 1_000_000, b"morphine"),
            (3, 101, 0, DT, 100, BRIDGE, 200, 1_000_000, b"morphine"),
            (4, 102, 0, DT, 101, BASAL, 104, 1_300, b"ziconotide"),
            (5, 102, 0, DT, 101, BRIDGE, 200, 1_000_000, b"morphine")]
    st = month().status | {"day": 102, "tod_s": 43200, "drug": "ziconotide", "conc_ng_ml": 25_000,
                           "today_dose_ng": 1_200, "today_nl": 48_000}
    rows, detail, _ = visitrun.delivered(recs, (100, 43200), (102, 43200), visitrun.DeliveryState(), 500, 25_000,
                                         "ziconotide")
    rows = visitrun.with_today(rows, detail, st, 100)
    zico = {"drug": "ziconotide", "conc": 25_000, "steps": [[0, 2_400]]}
    return visit.summarize(visit.VisitData(
        device={"serial": "X"}, visit_date=102, previous_visit=100, records=recs, status=st, old_rx=zico,
        delivered=rows, delivery_detail=detail))


def test_the_mean_daily_dose_counts_a_partial_visit_day_for_its_hours_not_a_whole_day():
    s = _after_a_drug_change_visited_at_noon()
    assert s.mean_span_s == 12 * 3600
    assert s.mean_daily_dose_ng == 2_400  # the programmed rate: 1.2 ug in 12 h
    assert "mean 2.4 µg/day" in visit.headline(s)["delivered"]


def test_the_mean_daily_volume_is_over_the_same_span_as_the_mean_dose():
    s = _after_a_drug_change_visited_at_noon()
    assert s.mean_daily_volume_nl == 96_000  # 0.048 mL in the same 12 h; the bridge's morphine is not in it
    assert ("mean 2.4 µg/day (0.096 mL/day) over the 12 h of ziconotide alone from 1970-04-13 00:00 to "
            "1970-04-13 12:00") in visit.headline(s)["delivered"]


def _a_demand_bolus_a_power_cut_interrupted():
    # Demand 20 strokes at 10:00 of day 101; a power cut at 10:05 after 10
    # strokes, none of them saved: the boot logs BOLUS_DELIVERED with at
    # least 0 strokes given and 20 a reset took off its plan.
    recs = [(1, 101, 36000, events.BOLUS_REQUESTED, DEMAND, 20, 600, 0, b""),
            (2, 101, 36000, events.BOLUS_STARTED, DEMAND, 20, 600, 0, b""),
            (3, 101, 36400, events.BOOT, 1, 0, 0, 0, b""),
            (4, 101, 36400, events.BOLUS_DELIVERED, DEMAND, 0, 20, 0, b""),
            (5, 101, 50000, events.BOLUS_STARTED, DEMAND, 20, 600, 0, b""),
            (6, 101, 50600, events.BOLUS_DELIVERED, DEMAND, 20, 0, 0, b"")]
    return visit.summarize(visit.VisitData(
        device={"serial": "X", "stroke_nl": 500}, visit_date=102, previous_visit=100, records=recs,
        status=month().status | {"day": 102, "tod_s": 0}, old_rx=OLD_RX))


def test_a_demand_bolus_a_reset_cut_short_is_counted_interrupted_not_completed():
    b = _a_demand_bolus_a_power_cut_interrupted().boluses
    assert (b.given, b.delivered, b.cancelled, b.interrupted) == (2, 1, 0, 1)
    assert (b.interrupted_strokes, b.interrupted_unsure) == (0, 20)


def test_a_demand_bolus_a_reset_cut_short_shows_on_its_day_with_what_it_gave_at_least():
    s = _a_demand_bolus_a_power_cut_interrupted()
    _, rows = visit.day_table(s)
    day = {r[0]: r for r in rows}[str(visit.as_date(101))]
    assert ("demand boluses: 1 interrupted by a reset or the flash (not completed): at least 0 mg (0.000 mL, 0 "
            "strokes) delivered, up to 0.1 mg (0.010 mL, 20 strokes) more may have been given") in day[3]
    assert "1 completed" in visit.headline(s)["demand boluses"]


def test_a_second_visit_report_the_same_day_gets_its_own_file_and_never_replaces_the_first(tmp_path):
    from pumpctl import visitrun
    day = dt.date(2025, 2, 6)
    first = visitrun.write_report("<html>first</html>", tmp_path, "SN-VI1", day)
    second = visitrun.write_report("<html>second</html>", tmp_path, "SN-VI1", day)
    assert (first.name, second.name) == ("visit-SN-VI1-2025-02-06.html", "visit-SN-VI1-2025-02-06-2.html")
    assert first.read_text() == "<html>first</html>" and second.read_text() == "<html>second</html>"
    assert {p.name for p in tmp_path.iterdir()} == {first.name, second.name}  # no temporary file left
