"""Figures a clinician reads, each drug in its own unit and named for what it
is: the 24-hour limit after a drug change, the refill review's two drugs,
refusals with what to do, times of day as clock times, input typed with
digits 0-9 (audit rx, findings 4, 5, 9 and 10)."""
import argparse

import pytest

from pumpctl import cli, report
from pumpctl import units as u
from pumpctl.link import PumpError

IDENT = {"serial": "SN-1", "model": "IT-40", "firmware": "0.2.0", "stroke_nl": 500}
MG = 1_000_000


def status(**kw):
    """Hydromorphone 10 mg/mL an hour after a refill from morphine: none given
    yet, the morphine of the day before in the 24-hour ceiling."""
    st = {"day": 20000, "tod_s": 7200, "state": "delivering", "drug": "hydromorphone", "conc_ng_ml": 10 * MG,
          "remaining_nl": 10_000_000, "capacity_nl": 20_000_000, "low_nl": 2_000_000, "residual_nl": 1_000_000,
          "low_in_s": 86400, "empty_in_s": 90000, "alarm_day": 0, "battery_mv": 3200, "bolus": None, "alarms": [],
          "today_dose_ng": 0, "today_nl": 0, "last_24h_dose_ng": 0, "last_24h_nl": 1_000_000,
          "delivered_nl": 1_000_000, "drug_delivered_ng": 10 * MG, "ceiling_24h_ng": 13_750_000,
          "catheter_primed": True, "clock_uncertain": False, "fault": None, "drug_changed_s": 3600}
    st.update(kw)
    return st


def row(rows, label):
    return dict(rows)[label]


def refusal(limit, reason, args=None, **context):
    e = PumpError({"code": 8, "name": "LIMIT", "limit": limit, "reason": reason})
    e.context.update(context)
    return cli._refusal(e, args or argparse.Namespace())


# -- finding 4: the 24-hour ceiling after a drug change -----------------------------------------
def test_status_after_a_drug_change_shows_the_24_hour_limit_used_not_a_dose_given():
    text = row(report.status_rows(IDENT, status(), "morphine"), report.CEILING_LABEL)
    assert "given" not in text.split("(")[0]
    assert text.startswith("24-hour limit used: 55 % of 25 mg/day (13.75 mg-equivalent of hydromorphone")
    assert "counting the morphine given before the drug change" in text


def test_status_delivered_total_adds_no_two_drugs_masses():
    text = row(report.status_rows(IDENT, status(), "morphine"), "delivered total")
    assert text.startswith("1.000 mL") and " mg" not in text and "µg" not in text


def test_a_refusal_at_the_24_hour_maximum_after_a_drug_change_names_no_dose_given():
    lines, err = refusal("daily_max", "bolus: 24 h would reach 29.65 mg (13.75 mg given), over the daily max 25 mg/day:"
                         " lower it or wait", drug="hydromorphone", given_ng=13_750_000, given_drug="hydromorphone",
                         other="morphine")
    text = "\n".join(lines)
    assert "given in the last 24 h" not in text and "13.75 mg given" not in text
    assert "24-hour limit used: 55 % (13.75 mg-equivalent of hydromorphone, counting the morphine" in err["hint"]


def test_a_refusal_at_a_refill_to_another_drug_shows_the_ceiling_in_the_new_drugs_unit():
    _lines, err = refusal("daily_max", "refill: 24 h would reach 1952.6 ug, over the usual max 1000 ug/day: lower it",
                          drug="baclofen", given_ng=12_500_000, given_drug="morphine")
    assert "24-hour limit used: 63 % (1250 µg-equivalent of baclofen, counting the morphine" in err["hint"]


# -- finding 5: each drug's figures in its own unit ----------------------------------------------
def test_refill_review_shows_the_current_drug_in_mg_beside_a_new_drug_in_ug():
    morphine = {"drug": "morphine", "conc": 10 * MG, "steps": [[0, 10 * MG]]}
    baclofen = {"drug": "baclofen", "conc": 500_000, "steps": [[0, 200_000]]}
    rows = {r[0]: r for r in report.compare_rows(morphine, baclofen, {}, {}, "µg")}
    assert rows["drug"][1:3] == ["morphine 10 mg/mL", "baclofen 500 µg/mL"]
    assert rows["basal from 00:00"][1:3] == ["10 mg/day (1.000 mL/day)", "200 µg/day (0.400 mL/day)"]


def test_a_refusal_shows_a_mg_drugs_dose_below_1_mg_in_mg():
    text = report.clinical_reason("clinician bolus: 2 ug is less than one stroke (0.5 uL = 5 ug): choose at least 5 ug",
                                  "morphine")
    assert text == "clinician bolus: 0.002 mg is less than one stroke (0.5 µL = 0.005 mg): choose at least 0.005 mg"


# -- finding 9: refusals say what to do ----------------------------------------------------------
def test_a_bolus_too_fast_for_the_mechanism_names_the_shortest_duration():
    reason = "clinician bolus: 720 mL/day on top of the basal 0 uL/day exceeds the mechanism's 24 mL/day: make it longe"
    _lines, err = refusal("rate", reason, drug="baclofen", conc=500_000,
                          request={"bolus": [250_000, 60], "stroke_nl": 500})
    assert err["what_to_do"].startswith("give the clinician bolus over at least 30 min")


def test_a_demand_bolus_too_fast_beside_the_basal_names_the_shortest_duration():
    rx = {"drug": "hydromorphone", "conc": 10 * MG, "steps": [[0, 4 * MG]], "demand": [MG, 60, 1800, 4]}
    reason = "demand bolus: 144 mL/day on top of the basal 0.4 mL/day exceeds the mechanism's 24 mL/day: make it longe"
    _lines, err = refusal("rate", reason, drug="hydromorphone", conc=10 * MG, request={"rx": rx, "stroke_nl": 500})
    # 0.1 mL beside 0.4 mL/day: 0.1 mL * 1440 min / 23.6 mL = 6.1 min
    assert err["what_to_do"].startswith("give the demand bolus over at least 7 min")


def test_a_refill_refused_while_a_bridge_runs_says_what_to_do():
    _lines, err = refusal("bridge_running", "refill: the catheter still holds 0.2 mL of the earlier drug (bridge "
                          "running): refill with the current drug no")
    assert "refill with the drug and concentration now in the pump" in err["what_to_do"]


@pytest.mark.parametrize("limit", ["step_start", "periodic_time"])
def test_a_refused_time_of_day_says_what_to_do(limit):
    _lines, err = refusal(limit, "periodic bolus 1 time 90000 s outside 0..86399 s")
    assert "23:59:59" in err["what_to_do"]


def test_a_refusal_of_too_many_steps_says_how_many_were_given():
    rx = {"drug": "morphine", "conc": 10 * MG, "steps": [[h * 3600, MG] for h in range(11)]}
    _lines, err = refusal("steps", "prescription: 1..10 steps required", request={"rx": rx})
    assert err["what_to_do"].startswith("11 steps were given")


# -- finding 10: times and input -----------------------------------------------------------------
def test_a_time_of_day_refusal_names_the_range_accepted():
    assert u.time_of_day("23:59:59") == 86399
    with pytest.raises(u.UnitError, match="between 00:00 and 23:59:59"):
        u.time_of_day("24:00")


def test_a_time_of_day_in_a_refusal_is_a_clock_time():
    assert report.clinical_reason("periodic bolus 1 time 90000 s outside 0..86399 s", "morphine", None,
                                  "periodic_time") == "periodic bolus 1 time 25:00 outside 00:00 to 23:59:59"


def test_a_demand_wait_is_in_hours_and_minutes():
    assert report.clinical_reason("daily maximum of demand boluses reached; allowed again in 1318 min") \
        == "daily maximum of demand boluses reached; allowed again in 21 h 58 min"


def test_a_catheter_error_echoes_the_input_as_typed():
    with pytest.raises(u.UnitError, match="'120uL'"):
        u.catheter_segments("120uL:500mm")


@pytest.mark.parametrize("text", ["\uff15mg/day", "\u0665mg/day", "1\u06602mg/day"])
def test_a_dose_typed_with_digits_of_another_script_is_refused(text):
    with pytest.raises(u.UnitError, match="digits 0-9"):
        u.rate_ng_day(text)


def test_a_time_of_day_typed_with_digits_of_another_script_is_refused():
    with pytest.raises(u.UnitError, match="digits 0-9"):
        u.time_of_day("\uff10\uff18:00")
