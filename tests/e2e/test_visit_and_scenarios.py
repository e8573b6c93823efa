"""Refill visit (`pumpctl visit`) and scripted patient courses (`pumpctl
scenario`) on a virtual-time emulator: the reports' numbers against the
pump's event log and the bench's stroke record."""
import datetime as dt
import json
from pathlib import Path

import pytest

from linkkit import DAY_MS, of_type
from pumpctl import cli, report, scenario, visit
from pumpctl import units as u
from pumpctl.emulator import Emulator
from pumpctl.fw import events
from pumpctl.fw import link_commands as lc
from test_clinical_path import BlankPump

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
DEMAND = visit.fw_scheduler.KIND_DEMAND
BASAL = visit.fw_scheduler.KIND_BASAL
CLINICIAN = visit.fw_scheduler.KIND_CLINICIAN
PRIMING = visit.fw_scheduler.KIND_PRIMING


@pytest.fixture
def implanted(tmp_path, capsys):
    p = BlankPump(tmp_path)
    rc, _, err = p.pumpctl(capsys, "implant", "--serial", "SN-0042", "--catheter", "500mm:120uL,300mm:80uL",
                           "--fill", "20mL", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "2mg/day",
                           "--demand", "0.1mg/10min,lockout=1h,max=4", "--yes", "--bench", str(p.emu.bench_path))
    assert rc == 0, err
    p.serial = "SN-0042"
    yield p
    p.stop()


class PumpDays:
    """Which pump day each stroke of the bench's stroke record fell on, by the
    test's own arithmetic. Virtual time stands still between bench requests,
    so setting the clock to the whole second it shows (the same day: its
    count goes on) pins it: pump time at board time t is that second plus
    t - board_ms. Valid while the clock is not set again."""

    def __init__(self, p):
        st = p.bench("status")
        self.p, self.board_ms, self.day, self.tod_s = p, st["board_ms"], st["day"], st["tod_s"]
        p.call(lc.SET_CLOCK, {"day": self.day, "tod_s": self.tod_s})

    def day_of(self, t):
        return self.day + (self.tod_s * 1000 + t - self.board_ms) // DAY_MS

    def times(self):
        out, first = [], 0
        while True:
            r = self.p.bench("strokes", first=first, limit=4096)
            out += r["times"]
            first = r["first"] + len(r["times"])
            if first >= r["count"]:
                return out

    def strokes_by_day(self):
        """{pump day: strokes} of the strokes from the pin on (board_ms and after)."""
        out = {}
        for t in self.times():
            if t >= self.board_ms:
                out[self.day_of(t)] = out.get(self.day_of(t), 0) + 1
        return out


def daily_totals(log):
    """{day: {kind: (strokes, dose ng)}} from the DAILY_TOTAL records, added up per day and kind."""
    out = {}
    for r in of_type(log, events.DAILY_TOTAL):
        n, ng = out.setdefault(r[4], {}).get(r[5] & 0xFF, (0, 0))
        out[r[4]][r[5] & 0xFF] = (n + r[6], ng + r[7])
    return out


def test_daily_totals_are_the_strokes_the_motor_completed_each_day(implanted, capsys, tmp_path):
    """Several days with demand presses and a clinician bolus, in virtual
    time through the emulator: every day's DAILY_TOTAL records against the
    bench's stroke record, and the visit report shows them per kind."""
    p = implanted
    pin = PumpDays(p)
    to_midnight = (86400 - pin.tod_s) * 1000
    p.bench("advance", ms=to_midnight)  # day 1 from its midnight
    for day in range(1, 5):
        p.bench("advance", ms=10 * 3_600_000)
        assert p.pumpctl(capsys, "demand")[0] == 0  # 0.1 mg: 20 strokes
        p.pumpctl(capsys, "demand")  # refused: lockout
        p.bench("advance", ms=3_600_000)
        if day == 2:
            rc, _, err = p.pumpctl(capsys, "bolus", "--dose", "0.5mg", "--over", "30min", "--yes")
            assert rc == 0, err  # 100 strokes, basal paused for 30 min
        p.bench("advance", ms=3_600_000)
        assert p.pumpctl(capsys, "demand")[0] == 0
        p.bench("advance", ms=12 * 3_600_000)
    p.bench("advance", ms=9 * 3_600_000)  # the visit on day 5, 09:00
    log = p.log()
    got = daily_totals(log)
    bench = pin.strokes_by_day()
    d0 = pin.day
    assert sorted(d for d in got if d > d0) == [d0 + 1, d0 + 2, d0 + 3, d0 + 4]  # day 5 is not over
    for day in range(d0 + 1, d0 + 5):
        kinds = got[day]
        assert sum(n for n, _ in kinds.values()) == bench[day], (day, kinds, bench[day])
        for kind, (n, ng) in kinds.items():
            assert ng == n * 5_000, (day, kind, n, ng)  # 500 nL of 10 mg/mL
        assert kinds[DEMAND][0] == 2 * 20
        assert kinds.get(CLINICIAN, (0, 0))[0] == (100 if day == d0 + 2 else 0)
        basal = kinds[BASAL][0]
        assert basal == bench[day] - 40 - (100 if day == d0 + 2 else 0)
        exact = 400 - (400 / 48 if day == d0 + 2 else 0)  # 2 mg/day: 0.2 mL, 400 strokes; less the bolus's 30 min
        assert abs(basal - exact) <= 1, (day, basal, exact)
    # Day 0 (the pin's): its record holds the day's strokes from the pin on, and those before it.
    assert sum(n for n, _ in got[d0].values()) >= bench[d0]

    rc, out, err = p.pumpctl(capsys, "visit", "--withdrawn", "15mL", "--added", "20mL", "--report-dir",
                             str(tmp_path / "r"), "--yes", "--accept-discrepancy", "--json")
    assert rc == 0, err
    rows = {r["date"]: r for r in json.loads(out)["delivered"]}
    for day in range(d0 + 1, d0 + 5):
        r = rows[visit.as_date(day).isoformat()]
        assert r["source"] == "pump" and r["volume_nl"] == bench[day] * 500 and r["dose_ng"] == bench[day] * 5_000
        assert {k["kind"]: k["strokes"] for k in r["by_kind"]} == \
            {"basal": got[day][BASAL][0], "demand": 40, **({"clinician": 100} if day == d0 + 2 else {})}
    today = rows[visit.as_date(d0 + 5).isoformat()]  # the visit day is not over: the pump's count so far
    assert today["source"] == "pump so far" and today["volume_nl"] == bench[d0 + 5] * 500 \
        and today["dose_ng"] == bench[d0 + 5] * 5_000, (today, bench[d0 + 5])
    rc, text, err = p.pumpctl(capsys, "visit", "--withdrawn", "19.9mL", "--added", "20mL", "--report-dir",
                              str(tmp_path / "r2"), "--yes", "--accept-discrepancy")
    assert rc == 0, err
    assert "demand 0.2 mg (0.020 mL)" in text and "the pump's count so far (day in progress)" in text
    assert "clinician 0.5 mg (0.050 mL)" in text


def test_visit_report_matches_the_log_and_the_strokes(implanted, capsys, tmp_path):
    p = implanted
    pin = PumpDays(p)
    reports = tmp_path / "reports"
    for day in range(6):
        p.bench("advance", ms=DAY_MS // 2)
        assert p.pumpctl(capsys, "diary", "add", "--pain", str(7 - day // 2), "--activity", "walking")[0] == 0
        p.pumpctl(capsys, "demand")  # the second press on a day may meet the lockout: the pump logs it
        p.pumpctl(capsys, "demand")
        p.bench("advance", ms=DAY_MS // 2)
    expected = p.bench("status")["remaining_nl"]
    withdrawn = expected - 5_000_000  # a 5 mL discrepancy (> 20 % and > 2 mL): warning
    rc, out, err = p.pumpctl(capsys, "visit", "--withdrawn", scenario._ml(withdrawn), "--added", "20mL",
                             "--report-dir", str(reports), "--yes")
    assert rc == 5 and "not acknowledged" in err  # nothing changed
    assert not of_type(p.log(), events.REFILL)
    rc, out, err = p.pumpctl(capsys, "visit", "--withdrawn", scenario._ml(withdrawn), "--added", "20mL",
                             "--report-dir", str(reports), "--yes", "--accept-discrepancy")
    assert rc == 0, err
    log = p.log()
    refill = of_type(log, events.REFILL)
    assert len(refill) == 1 and refill[0][4] == withdrawn and refill[0][6] == expected
    given = [r for r in of_type(log, events.BOLUS_STARTED) if r[4] == DEMAND]
    refused = [r for r in of_type(log, events.BOLUS_REFUSED) if r[4] == DEMAND]
    diary = of_type(log, events.DIARY)
    assert len(diary) == 6 and len(given) + len(refused) == 12 and given
    # The report shows the volumes as exactly as the refill review does (issue 13, finding 12).
    headline = "expected %s, withdrawn %s" % (u.fmt_ml(expected), u.fmt_ml(withdrawn))
    date = visit.as_date(refill[0][1])
    html = (reports / ("visit-SN-0042-%s.html" % date)).read_text()
    for text in (out, html):
        assert headline in text and "REFILL DISCREPANCY" in text
        assert "%d requested, %d given, %d refused" % (len(given) + len(refused), len(given), len(refused)) in text
        assert "6 entries on 6 of" in text
    assert "<img" in html and "http" not in html.replace("http-equiv", "")
    stored = json.loads((reports / "visits.json").read_text())["SN-0042"]
    assert stored["date"] == date.isoformat() and stored["seq"] >= refill[0][0]

    # A second visit covers the interval since the first: each day the pump's total of the strokes its
    # motor completed (the first visit's day whole, from its midnight), the second visit's day its count so far.
    for _ in range(7):
        p.bench("advance", ms=DAY_MS // 3)
        p.pumpctl(capsys, "demand")
        p.bench("advance", ms=DAY_MS - DAY_MS // 3)
    bench = pin.strokes_by_day()
    rc, out, err = p.pumpctl(capsys, "visit", "--withdrawn", "10mL", "--added", "20mL",
                             "--report-dir", str(reports), "--yes", "--accept-discrepancy", "--json",
                             "--drug", "morphine", "--conc", "10mg/mL", "--dose", "3mg/day")
    assert rc == 0, err
    r = json.loads(out)
    stroke_nl = p.bench("status")["stroke_nl"]
    assert r["previous_visit"] == date.isoformat()
    days = [visit.day_number(dt.date.fromisoformat(x["date"])) for x in r["delivered"]]
    assert days == list(range(visit.day_number(date), days[-1] + 1)) and len(days) == 8
    for day, row in zip(days[:-1], r["delivered"]):
        assert row["source"] == "pump" and row["volume_nl"] == bench[day] * stroke_nl, (day, row, bench[day])
    last = r["delivered"][-1]
    assert last["source"] == "pump so far" and last["volume_nl"] == bench[days[-1]] * stroke_nl, (last, bench)
    assert r["total_dose_ng"] == pytest.approx(r["total_volume_nl"] * 10, abs=10)  # 10 mg/mL = 10 ng/nL
    given2 = [x for x in of_type(p.log(), events.BOLUS_STARTED) if x[4] == DEMAND and x[0] > stored["seq"]]
    assert r["demand"]["given"] == len(given2) == 7
    assert r["diary_entries"] == 0
    html2 = Path(r["report"]).read_text()
    assert "3 mg/day" in html2 and "Therapy: before and after (changed)" in html2


def test_first_visit_strokes(implanted, capsys, tmp_path):
    """The first visit takes the whole log from the implant: the pump's daily
    totals hold the priming volume too (it left the reservoir); the visit day
    is estimated, to within a stroke."""
    p = implanted
    p.bench("advance", ms=3 * DAY_MS + 12345)
    strokes = sum(p.bench("status")["strokes_by_kind"])
    rc, out, err = p.pumpctl(capsys, "visit", "--withdrawn", "19mL", "--added", "20mL", "--report-dir",
                             str(tmp_path / "r"), "--yes", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert abs(r["total_volume_nl"] - strokes * 500) <= 500
    assert r["demand"]["other_given"] == {"priming": 2}  # priming and the motor test


def test_visit_input_errors(implanted, capsys, tmp_path):
    rc, _, err = implanted.pumpctl(capsys, "visit", "--withdrawn", "ten", "--added", "20mL", "--report-dir",
                                   str(tmp_path))
    assert rc == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "visits.json").write_text("{")
    rc, _, err = implanted.pumpctl(capsys, "visit", "--withdrawn", "1mL", "--added", "20mL", "--report-dir",
                                   str(bad), "--yes")
    assert rc == 1 and "visits.json" in err
    assert not of_type(implanted.log(), events.REFILL)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_scenarios(path, tmp_path, capsys):
    sc = scenario.load(path)
    state, reports = tmp_path / "state", tmp_path / "reports"
    rc = scenario.run(path, reports, state, cli.main)
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    n_visits = sum(1 for s in sc["steps"] if s["step"] == "visit")
    htmls = sorted(reports.glob("visit-*.html"))
    assert len(htmls) == n_visits and "scenario complete" in out
    # The last report against the pump's own log.
    emu = Emulator(state, virtual=True).start()
    try:
        from linkkit import Pump
        p = Pump.__new__(Pump)
        p.emu, p.keystore = emu, state / "keys.json"
        p.serial = list(visit_serials(reports))[0]
        log = p.log()
    finally:
        emu.stop()
    refills = of_type(log, events.REFILL)
    assert len(refills) == n_visits
    last = refills[-1]
    lo = refills[-2][0] if len(refills) > 1 else 0
    html = htmls[-1].read_text() if n_visits == 1 else max(htmls, key=lambda h: h.name).read_text()
    assert "expected %s, withdrawn %s" % (u.fmt_ml(last[6]), u.fmt_ml(last[4])) in html
    diary = [r for r in of_type(log, events.DIARY) if lo < r[0] < last[0]]
    given = [r for r in of_type(log, events.BOLUS_STARTED) if r[4] == DEMAND and lo < r[0] < last[0]]
    refused = [r for r in of_type(log, events.BOLUS_REFUSED) if r[4] == DEMAND and lo < r[0] < last[0]]
    assert ("%d entries on" % len(diary) if diary else "no entries") in html
    assert "%d requested, %d given, %d refused" % (len(given) + len(refused), len(given), len(refused)) in html
    for a in of_type(log, events.ALARM_RAISED):
        if lo < a[0] < last[0]:
            assert report.alarm_slug(a[4]) + ": raised" in html  # one name per alarm (issue 13, finding 11)


def visit_serials(reports):
    return json.loads((reports / "visits.json").read_text()).keys()
