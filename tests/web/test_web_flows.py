"""`pumpctl web` against a fresh emulated pump, without a browser: each
screen goes through the functions the CLI uses, so the pump's figures,
refusals and review rules are the CLI's."""
from webkit import Browser, make_app, text
from pumpctl.fw import link_commands as lc

MIN_MS = 60_000


def review_id(resp):
    import re
    m = re.search(r'name="review" value="([^"]+)"', resp.get_data(as_text=True))
    assert m, text(resp)
    return m.group(1)


PROGRAM = {"drug": "morphine", "conc": "10mg/mL", "step_time": ["00:00", "08:00"],
           "step_rate": ["3mg/day", "5mg/day"]}


def test_interrogate_shows_therapy_reservoir_alarms_and_battery(browser_app):
    t = text(browser_app.get("/interrogate"))
    for want in ("morphine 10 mg/mL", "20.000 mL of 20.000 mL", "projected empty", "battery 3200 mV",
                 "No active alarms", "basal from 00:00 10 mg/day"):
        assert want in t, want


def test_program_review_side_by_side_then_confirm(browser_app, pump):
    r = browser_app.post("/program/review", PROGRAM)
    t = text(r)
    assert "current new" in t and "10 mg/day (1.000 mL/day) 3 mg/day (0.300 mL/day) &lt;&lt; changed" in t
    assert pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]  # nothing sent at the review
    t = text(browser_app.post("/confirm", {"review": review_id(r)}))
    assert "programmed: 24-hour maximum 5 mg/day" in t
    assert pump.therapy()["rx"]["steps"] == [[0, 3_000_000], [28800, 5_000_000]]


def test_a_review_is_confirmed_once(browser_app, pump):
    rid = review_id(browser_app.post("/program/review", PROGRAM))
    browser_app.post("/confirm", {"review": rid})
    browser_app.post("/program/review", dict(PROGRAM, step_time="00:00", step_rate="4mg/day"))  # another review
    r = browser_app.post("/confirm", {"review": rid})
    assert r.status_code == 302
    assert "no longer open" in text(browser_app.get("/interrogate"))
    assert pump.therapy()["rx"]["steps"] == [[0, 3_000_000], [28800, 5_000_000]]


def test_cancel_sends_nothing(browser_app, pump):
    rid = review_id(browser_app.post("/program/review", PROGRAM))
    browser_app.post("/cancel", {"review": rid})
    assert browser_app.post("/confirm", {"review": rid}).status_code == 302
    assert pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]


def test_an_over_limit_dose_is_refused_with_the_limit_in_clinical_units(browser_app, pump):
    r = browser_app.post("/program/review", dict(PROGRAM, step_time="00:00", step_rate="30mg/day"))
    t = text(r)
    assert "Refused by the pump: nothing was changed" in t
    assert "(daily_max)" in t and "24-hour maximum for morphine: 20 mg/day" in t
    assert "nothing was changed on the pump" in t
    assert pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]


def test_bad_input_is_refused_before_anything_is_sent(browser_app, pump):
    t = text(browser_app.post("/program/review", dict(PROGRAM, conc="ten")))
    assert "Not sent: check the values" in t and "concentration" in t
    assert pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]


def test_figures_changed_since_the_review_are_not_sent(browser_app, pump):
    r = browser_app.post("/refill/review", {"withdrawn": "20mL", "added": "20mL", "change": "same",
                                            "label_checked": "yes"})
    pump.bench("advance", ms=6 * 60 * MIN_MS)  # the reservoir moves on: the expected volume differs
    t = text(browser_app.post("/confirm", {"review": review_id(r)}))
    assert "figures changed while the review was open" in t


def test_clinician_bolus(browser_app, pump):
    r = browser_app.post("/bolus/review", {"dose": "0.5mg", "over": "30min"})
    assert "dose 0.5 mg: 100 strokes" in text(r)
    t = text(browser_app.post("/confirm", {"review": review_id(r)}))
    assert "bolus started: 0.5 mg" in t


def test_refill_with_a_discrepancy_needs_its_acknowledgement(browser_app, pump):
    form = {"withdrawn": "12mL", "added": "20mL", "change": "same"}
    assert "vial's label" in text(browser_app.post("/refill/review", form))  # step 3 not confirmed
    r = browser_app.post("/refill/review", dict(form, label_checked="yes"))
    t = text(r)
    assert "Refill discrepancy" in t and "pocket fill" in t and "WARNING" in t
    r2 = browser_app.post("/confirm", {"review": review_id(r)})
    assert "discrepancy not acknowledged: nothing changed" in text(r2)
    t = text(browser_app.post("/confirm", {"review": review_id(r2), "acknowledge": "yes"}))
    assert "refill recorded: 20.000 mL in the reservoir; discrepancy -8.000 mL (acknowledged)" in t
    assert pump.call(lc.ALARMS)["alarms"] == []


def test_refill_with_a_new_drug_shows_the_bridge(browser_app, pump):
    r = browser_app.post("/refill/review", {"withdrawn": "20mL", "added": "20mL", "change": "new",
                                            "drug": "hydromorphone", "conc": "2mg/mL", "step_time": "00:00",
                                            "step_rate": "1mg/day"})
    t = text(r)
    assert "DRUG CHANGE" in t and "bridge bolus" in t and "New prescription" in t


def test_acknowledge_an_alarm(browser_app, pump):
    pump.bench("motor", stall=True)
    pump.bench("advance", ms=10 * MIN_MS)
    t = text(browser_app.get("/alarms"))
    assert "motor-stall" in t and "critical, therapy stopped" in t and "what to do" in t
    pump.bench("motor", stall=False)
    r = browser_app.post("/alarms/ack", {"alarm": "motor-stall"})
    assert r.status_code == 302
    assert "acknowledged motor-stall: yes" in text(browser_app.get("/alarms"))


def test_patient_demand_refused_in_lockout_with_the_countdown(pump, tmp_path):
    pump.call(lc.PROGRAM, {"rx": {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 3_000_000]],
                                  "periodic": [], "demand": [200_000, 300, 1800, 4]}})
    app, guard = make_app(pump, tmp_path)
    b = Browser(app, guard)
    b.connect(pump.port, "patient")
    assert b.get("/interrogate").status_code == 403  # a clinician screen
    b.post("/patient/demand")
    assert "demand bolus started" in text(b.get("/patient"))
    pump.bench("advance", ms=10 * MIN_MS)  # the 5-min bolus is over; the 30-min lockout is not
    b.post("/patient/demand")
    r = b.get("/patient")
    t = text(r)
    assert "demand_lockout" in t and "allowed again in" in t and "data-countdown" in r.get_data(as_text=True)
    assert "Not yet: allowed again in" in text(b.get("/patient"))  # the countdown stays until the lockout ends


def test_diary_entry_then_the_clinician_chart_and_the_log_csv(pump, tmp_path):
    app, guard = make_app(pump, tmp_path)
    b = Browser(app, guard)
    b.connect(pump.port, "patient")
    b.post("/patient/diary", {"pain": "6", "activity": "walking", "note": "stairs"})
    assert "diary entry" in text(b.get("/patient"))
    b.connect(pump.port, "clinician")
    t = text(b.get("/diary"))
    assert "walking" in t and "stairs" in t and "diary-data" in b.get("/diary").get_data(as_text=True)
    t = text(b.get("/log?event=diary"))
    assert "pain 6, walking" in t
    csv = b.get("/log.csv?event=diary")
    assert csv.mimetype == "text/csv" and "attachment" in csv.headers["Content-Disposition"]
    lines = csv.get_data(as_text=True).strip().splitlines()
    assert lines[0] == "seq,time,event,details,a,b,c,d,text" and len(lines) == 2 and "pain 6" in lines[1]


def test_reports_are_listed_and_served_without_scripts(pump, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "visit-1.html").write_text("<html><body>visit report</body></html>")
    app, guard = make_app(pump, tmp_path, report_dir=str(tmp_path / "reports"))
    b = Browser(app, guard)
    b.connect(pump.port)
    assert "visit-1.html" in text(b.get("/reports"))
    r = b.get("/reports/visit-1.html")
    assert "visit report" in r.get_data(as_text=True) and "script-src" not in r.headers["Content-Security-Policy"]
    assert b.get("/reports/..%2Fkeys.json").status_code == 404
