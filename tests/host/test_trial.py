"""Trial records and their evaluation (pumpctl.trial): the rules in
docs/clinical-path.md, the edge cases, and the 50 % boundary exactly."""
import datetime as dt
import json
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpctl import trial as T

START = dt.date(2025, 3, 3)


def day(n):
    return START + dt.timedelta(days=n - 1)


def continuous(baseline=8, days=5, scores=None, **kw):
    t = T.Trial("P-0001", "morphine", "continuous", START, days, baseline, rate_ng_day=100_000, **kw)
    for n, p in (scores or {}).items():
        t.add_entry(T.DailyEntry(day(n), p))
    return t


def injection(baseline=6, days=2):
    return T.Trial("P-0002", "morphine", "injection", START, days, baseline)


# -- the record -------------------------------------------------------------------------------
def test_round_trip_through_json(tmp_path):
    t = continuous(scores={1: 7, 2: 5})
    t.record_screening("failed_conservative_care", "yes", "PT, NSAIDs, opioids 2 years")
    t.record_screening("psychological_evaluation", "no")
    t.add_titration(T.Titration(day(2), 150_000, "more pain at night"))
    t.add_entry(T.DailyEntry(day(3), 4, [T.SideEffect("pruritus", "mild"),
                                         T.SideEffect("other", "moderate", "dizziness")], "slept well"))
    T.decide(t, "Dr. A. Example", "implant", "good response", date=day(5))
    path = tmp_path / "trial.json"
    T.save(t, path)
    data = json.loads(path.read_text())
    assert data["format"] == "pumpctl-trial" and data["version"] == 1
    assert data["entries"][2]["side_effects"][1] == {"kind": "other", "severity": "moderate", "text": "dizziness"}
    back = T.load(path)
    assert back == t
    assert back.screening["failed_conservative_care"].note == "PT, NSAIDs, opioids 2 years"
    assert back.physician_decision.tool_recommendation == T.evaluate(t).recommendation
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left nothing behind


def test_injection_trial_round_trip(tmp_path):
    t = injection()
    t.add_injection(T.Injection(dt.datetime(2025, 3, 3, 9, 30), 200_000, "intrathecal"))
    t.add_injection(T.Injection("2025-03-04T09:00", 300_000, "epidural", "second dose"))
    T.save(t, tmp_path / "t.json")
    assert T.load(tmp_path / "t.json") == t


def test_screening_is_recorded_not_enforced():
    t = continuous(scores={2: 2, 3: 2, 4: 2})
    t.record_screening("no_substance_abuse", "no", "alcohol history")
    ev = T.evaluate(t)
    assert ev.outcome == T.Outcome.MEETS  # the checklist does not gate
    assert "No substance abuse: no" in ev.screening_open
    assert len(ev.screening_open) == 4  # three still unknown
    with pytest.raises(T.TrialError, match="unknown screening item 'mri'"):
        t.record_screening("mri", "yes")
    with pytest.raises(T.TrialError, match="screening answer must be one of: yes, no, unknown"):
        t.record_screening("no_substance_abuse", "maybe")


@pytest.mark.parametrize("score", [-1, 11, 4.5, "5", True, None])
def test_out_of_range_scores_are_rejected_at_entry(score):
    with pytest.raises(T.TrialError, match=r"pain score for 2025-03-04 must be a whole number 0-10"):
        T.DailyEntry(day(2), score)


def test_rates_and_doses_above_the_drugs_own_limits_are_refused_and_change_nothing():
    with pytest.raises(T.TrialError, match="starting rate 30 µg/day is above the ziconotide 24-hour maximum, "
                                           "21.6 µg/day"):
        T.Trial("P", "ziconotide", "continuous", START, 3, 5, rate_ng_day=30_000)
    t = continuous()
    with pytest.raises(T.TrialError, match="titration rate 1000 mg/day is above the morphine 24-hour maximum, "
                                           "20 mg/day"):
        t.add_titration(T.Titration(day(2), 1_000_000_000))
    assert t.titrations == []
    t.add_titration(T.Titration(day(2), 20_000_000))  # the maximum itself is a rate
    inj = injection()
    with pytest.raises(T.TrialError, match="injection dose 6 mg is above the morphine single-bolus maximum, 5 mg"):
        inj.add_injection(T.Injection(dt.datetime(2025, 3, 3, 9), 6_000_000, "intrathecal"))
    assert inj.injections == []


def test_bad_baseline_and_fields_are_named():
    with pytest.raises(T.TrialError, match="baseline pain score must be a whole number 0-10, got 12"):
        continuous(baseline=12)
    with pytest.raises(T.TrialError, match="trial mode must be one of: continuous, injection"):
        T.Trial("P", "morphine", "oral", START, 3, 5)
    with pytest.raises(T.TrialError, match="needs its starting rate"):
        T.Trial("P", "morphine", "continuous", START, 3, 5)
    with pytest.raises(T.TrialError, match="planned days \\(--days\\) must be a whole number from 2 to 60 for a continuous trial"):
        T.Trial("P", "morphine", "continuous", START, 1, 5, rate_ng_day=1000)
    with pytest.raises(T.TrialError, match="injection route must be one of: intrathecal, epidural"):
        T.Injection(dt.datetime(2025, 3, 3, 9), 1000, "oral")
    with pytest.raises(T.TrialError, match="side effect must be one of"):
        T.SideEffect("itching", "mild")
    with pytest.raises(T.TrialError, match="severity of nausea must be one of: mild, moderate, severe"):
        T.SideEffect("nausea", "terrible")
    with pytest.raises(T.TrialError, match="side effect text must not be empty"):
        T.SideEffect("other", "mild")
    with pytest.raises(T.TrialError, match="patient id must not be empty"):
        T.Trial(" ", "morphine", "injection", START, 1, 5)


def test_duplicate_dates_are_refused_unless_replaced():
    t = continuous(scores={2: 5})
    with pytest.raises(T.TrialError, match="already an entry for 2025-03-04 \\(day 2\\): to correct it, give --replace"):
        t.add_entry(T.DailyEntry(day(2), 3))
    t.add_entry(T.DailyEntry(day(2), 3), replace=True)
    assert [(e.date, e.pain) for e in t.entries] == [(day(2), 3)]


def test_entries_outside_the_trial_are_refused():
    t = continuous(days=5)
    for d in (day(0), day(6)):
        with pytest.raises(T.TrialError, match="outside the trial \\(2025-03-03 to 2025-03-07, day 1 to 5\\)"):
            t.add_entry(T.DailyEntry(d, 3))


def test_mode_specific_records():
    with pytest.raises(T.TrialError, match="test injections belong to an injection trial"):
        continuous().add_injection(T.Injection(dt.datetime(2025, 3, 3, 9), 1000, "intrathecal"))
    with pytest.raises(T.TrialError, match="rate changes belong to a continuous trial"):
        injection().add_titration(T.Titration(day(1), 1000))


def test_same_side_effect_twice_in_a_day_is_refused():
    with pytest.raises(T.TrialError, match="side effect listed twice on 2025-03-03: nausea"):
        T.DailyEntry(day(1), 3, [T.SideEffect("nausea", "mild"), T.SideEffect("nausea", "severe")])
    T.DailyEntry(day(1), 3, [T.SideEffect("other", "mild", "a"), T.SideEffect("other", "mild", "b")])


def test_load_names_the_problem(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{")
    with pytest.raises(T.TrialError, match="x.json is not JSON"):
        T.load(p)
    p.write_text(json.dumps({"format": "something"}))
    with pytest.raises(T.TrialError, match="not a trial file"):
        T.load(p)
    good = continuous(scores={2: 4}).to_dict()
    good["entries"][0]["pain"] = 14
    p.write_text(json.dumps(good))
    with pytest.raises(T.TrialError, match="x.json: pain score for 2025-03-04 must be a whole number 0-10, got 14"):
        T.load(p)
    with pytest.raises(T.TrialError, match="No such file"):
        T.load(tmp_path / "missing.json")


# -- evaluation --------------------------------------------------------------------------------
def test_continuous_uses_last_three_recorded_days_after_day_one():
    t = continuous(baseline=8, days=5, scores={1: 1, 2: 7, 3: 4, 4: 3, 5: 4})
    ev = T.evaluate(t)
    assert ev.evaluated_days == (day(3), day(4), day(5))
    assert ev.mean_pain == Fraction(11, 3)
    assert ev.mean_pain_all == Fraction(19, 5)
    assert ev.reduction_percent == Fraction(8 - Fraction(11, 3)) * 100 / 8 == Fraction(1300, 24)
    assert ev.meets_50_percent and ev.outcome == T.Outcome.MEETS
    assert ev.recommendation == ("Trial meets the ≥50 % criterion (54.1 % reduction on days 3, 4, 5) with no "
                                 "severe side effects: consider implant. Physician to confirm or override.")
    assert [r.evaluated for r in ev.days] == [False, False, True, True, True]


def test_day_one_alone_is_insufficient():
    ev = T.evaluate(continuous(scores={1: 2}))
    assert ev.outcome == T.Outcome.INSUFFICIENT_DATA and ev.mean_pain is None
    assert ev.recommendation.startswith("Insufficient data: no pain score recorded after day 1")
    assert not ev.meets_50_percent


def test_no_data_at_all():
    ev = T.evaluate(continuous(days=4))
    assert ev.outcome == T.Outcome.INSUFFICIENT_DATA
    assert ev.days_recorded == 0 and ev.missing_days == (day(1), day(2), day(3), day(4))
    ev = T.evaluate(injection())
    assert ev.recommendation.startswith("Insufficient data: no test injection recorded")


def test_missing_days_are_listed_and_the_rest_evaluated():
    t = continuous(baseline=6, days=7, scores={1: 6, 2: 5, 4: 3, 6: 2})
    ev = T.evaluate(t)
    assert ev.missing_days == (day(3), day(5), day(7))
    assert ev.days_recorded == 4 and ev.days_planned == 7
    assert ev.evaluated_days == (day(2), day(4), day(6))
    assert ev.mean_pain == Fraction(10, 3)
    assert ev.reduction_percent == Fraction(400, 9)  # 44.4 %
    assert ev.outcome == T.Outcome.DOES_NOT_MEET
    assert "(44.4 % reduction on days 2, 4, 6)" in ev.recommendation
    assert "Days recorded 4 of 7; missing: days 3, 5, 7" in T.render_text(t, ev)


def test_baseline_zero_cannot_be_evaluated():
    ev = T.evaluate(continuous(baseline=0, scores={2: 0, 3: 0}))
    assert ev.outcome == T.Outcome.CANNOT_EVALUATE
    assert ev.reduction_percent is None and not ev.meets_50_percent
    assert ev.recommendation.startswith("Cannot evaluate: baseline pain 0")
    assert "100" not in ev.recommendation
    assert T.criterion_percent(ev.reduction_percent) == "undefined"
    assert all(r.reduction_percent is None for r in ev.days)
    T.render_text(continuous(baseline=0, scores={2: 0}))  # renders, no crash


def test_pain_that_increases_is_a_negative_reduction():
    ev = T.evaluate(continuous(baseline=5, scores={2: 6, 3: 7, 4: 6}))
    assert ev.mean_pain == Fraction(19, 3)
    assert ev.reduction_percent == Fraction(-80, 3)  # -26.7 %
    assert ev.outcome == T.Outcome.DOES_NOT_MEET and not ev.meets_50_percent
    assert "pain increased by 26.6 %" in ev.recommendation


def test_exactly_fifty_percent_meets():
    ev = T.evaluate(continuous(baseline=8, scores={2: 4, 3: 4, 4: 4}))
    assert ev.reduction_percent == 50 and ev.meets_50_percent
    assert "(50.0 % reduction" in ev.recommendation


def test_just_under_fifty_percent_does_not_meet():
    # 49.9 %: baseline 10, mean 5.01
    red = T.reduction_percent(10, Fraction(501, 100))
    assert red == Fraction(499, 10) and not T.meets_criterion(red)
    assert T.criterion_percent(red) == "49.9 %"
    ev = T.evaluate(continuous(baseline=9, scores={2: 4, 3: 5, 4: 5}))  # mean 14/3: 48.1 %
    assert ev.reduction_percent == Fraction(1300, 27) and not ev.meets_50_percent
    # shown rounded down, so a value that misses is never printed as 50.0 %
    assert T.criterion_percent(Fraction(49999, 1000)) == "49.9 %"


def test_injection_trial_evaluates_the_day_of_the_latest_injection():
    t = injection(baseline=8, days=3)
    t.add_injection(T.Injection(dt.datetime(2025, 3, 3, 9), 100_000, "intrathecal"))
    t.add_injection(T.Injection(dt.datetime(2025, 3, 4, 9), 200_000, "intrathecal"))
    t.add_entry(T.DailyEntry(day(1), 6))
    ev = T.evaluate(t)
    assert ev.outcome == T.Outcome.INSUFFICIENT_DATA
    assert "no pain score on the day of the latest injection (2025-03-04)" in ev.recommendation
    t.add_entry(T.DailyEntry(day(2), 3))
    t.add_entry(T.DailyEntry(day(3), 8))  # the day after: not the injection's response
    ev = T.evaluate(t)
    assert ev.evaluated_days == (day(2),) and ev.mean_pain == 3
    assert ev.reduction_percent == Fraction(125, 2) and ev.outcome == T.Outcome.MEETS
    assert [r.reduction_percent for r in ev.days] == [25, Fraction(125, 2), 0]
    assert "on day 2)" in ev.recommendation
    text = T.render_text(t, ev)
    assert "09:00 0.2 mg IT" in text


def test_side_effects_counted_and_flagged():
    t = continuous(baseline=8, days=5)
    se = T.SideEffect
    t.add_entry(T.DailyEntry(day(1), 7, [se("nausea", "mild")]))
    t.add_entry(T.DailyEntry(day(2), 4, [se("nausea", "severe"), se("pruritus", "mild")]))
    t.add_entry(T.DailyEntry(day(3), 3, [se("nausea", "moderate"), se("respiratory depression", "mild")]))
    t.add_entry(T.DailyEntry(day(4), 3, [se("other", "mild", "dry mouth")]))
    ev = T.evaluate(t)
    tallies = {s.label: (s.days, s.worst, s.day_numbers) for s in ev.side_effects}
    assert tallies == {"nausea": (3, "severe", (1, 2, 3)), "pruritus": (1, "mild", (2,)),
                       "respiratory depression": (1, "mild", (3,)), "other: dry mouth": (1, "mild", (4,))}
    assert ev.unacceptable == ("nausea (severe) on day 2", "respiratory depression (mild) on day 3")
    assert ev.outcome == T.Outcome.MEETS_WITH_SIDE_EFFECTS
    assert ev.recommendation == (
        "Trial meets the ≥50 % criterion (58.3 % reduction on days 2, 3, 4) but with possibly unacceptable side "
        "effects (nausea (severe) on day 2, respiratory depression (mild) on day 3): weigh them before implant. "
        "Physician to confirm or override.")


def test_rate_follows_titration():
    t = continuous(days=4)
    t.add_titration(T.Titration(day(2), 150_000))
    t.add_titration(T.Titration(day(3), 200_000))
    assert [t.rate_on(day(n)) for n in range(1, 5)] == [100_000, 150_000, 200_000, 200_000]
    assert [r.rate_ng_day for r in T.evaluate(t).days] == [100_000, 150_000, 200_000, 200_000]


def test_physician_decision_is_stored_beside_the_recommendation():
    t = continuous(baseline=8, scores={2: 6, 3: 6, 4: 6})  # 25 %: does not meet
    d = T.decide(t, "Dr. B", "implant", "cancer pain, oral opioids not tolerated: proceed anyway", date=day(5))
    assert t.physician_decision is d
    assert d.tool_recommendation.startswith("Trial does not meet the ≥50 % criterion (25.0 % reduction")
    assert "Physician decision (Dr. B, 2025-03-07): implant - cancer pain" in T.render_text(t)
    with pytest.raises(T.TrialError, match="decision must be one of: implant, no implant, extend or repeat trial"):
        T.decide(t, "Dr. B", "maybe")
    with pytest.raises(T.TrialError, match="physician name must not be empty"):
        T.decide(t, "", "implant")


# -- the boundary, exactly ------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10), st.lists(st.integers(0, 10), min_size=1, max_size=3))
def test_reduction_is_exact_and_the_criterion_inclusive(baseline, scores):
    n, total = len(scores), sum(scores)
    t = continuous(baseline=baseline, days=len(scores) + 1,
                   scores={i + 2: s for i, s in enumerate(scores)})
    ev = T.evaluate(t)
    assert ev.mean_pain == Fraction(total, n)
    assert ev.reduction_percent == Fraction(100 * (baseline * n - total), baseline * n)
    # >= 50 % in integers: 2 (b n - sum) >= b n
    assert ev.meets_50_percent == (2 * (baseline * n - total) >= baseline * n)
    assert (ev.outcome == T.Outcome.MEETS) == ev.meets_50_percent
    if T.criterion_percent(ev.reduction_percent).startswith("50.0"):
        assert ev.meets_50_percent  # what is shown as 50.0 % always meets


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_half_of_baseline_always_meets_and_anything_above_does_not(baseline, k):
    half = Fraction(baseline, 2)
    assert T.meets_criterion(T.reduction_percent(baseline, half))
    assert not T.meets_criterion(T.reduction_percent(baseline, half + Fraction(1, k)))


def test_a_second_decision_is_refused_without_replace_and_the_first_is_kept():
    t = continuous(baseline=8, scores={2: 3, 3: 3, 4: 3})
    T.decide(t, "Dr. A", "implant", "first", date=day(5))
    with pytest.raises(T.TrialError, match=r"a decision is already recorded \(Dr. A, 2025-03-07: implant\): to "
                                           r"correct it, give --replace"):
        T.decide(t, "Dr. C", "no implant", "second", date=day(5))
    assert (t.physician_decision.name, t.physician_decision.decision) == ("Dr. A", "implant")
    T.decide(t, "Dr. C", "no implant", "corrected", date=day(5), replace=True)
    assert t.physician_decision.name == "Dr. C"


def test_a_decision_dated_before_the_trial_started_is_refused():
    t = continuous(baseline=8, scores={2: 3})
    with pytest.raises(T.TrialError, match=r"decision date \(--date\) 2020-01-01 is before the trial's first day, "
                                           r"2025-03-03"):
        T.decide(t, "Dr. C", "no implant", date=dt.date(2020, 1, 1))
    assert t.physician_decision is None


@pytest.mark.parametrize("days", [0, 61, 100_000])
def test_planned_days_are_bounded_naming_the_option(days):
    with pytest.raises(T.TrialError, match=r"planned days \(--days\) must be a whole number from 1 to 60"):
        T.Trial("P", "morphine", "injection", START, days, 5)


def test_a_continuous_trial_starting_at_no_rate_is_refused_naming_the_option():
    with pytest.raises(T.TrialError, match=r"starting rate \(--rate\) 0/day"):
        T.Trial("P", "morphine", "continuous", START, 5, 5, rate_ng_day=0)


def test_trial_messages_name_the_cli_options_not_the_file_fields():
    with pytest.raises(T.TrialError) as e:
        T.Trial("P", "morphine", "continuous", START, 3, 5)
    assert "--rate" in str(e.value) and "rate_ng_day" not in str(e.value)
    t = continuous(days=3)
    with pytest.raises(T.TrialError) as e:
        t.add_entry(T.DailyEntry(day(4), 3))
    assert "pumpctl trial extend --days" in str(e.value) and "planned_days" not in str(e.value)


def test_extend_records_days_after_the_planned_end():
    t = continuous(days=3, scores={2: 4})
    t.extend(5)
    t.add_entry(T.DailyEntry(day(5), 3))
    assert t.end_date == day(5)
    with pytest.raises(T.TrialError, match=r"would leave out what is recorded up to 2025-03-07 \(day 5\)"):
        t.extend(4)


def test_a_bad_trial_rate_on_the_command_line_names_the_option_and_no_pump(tmp_path, capsys):
    from pumpctl import cli
    rc = cli.main(["trial", "new", "--file", str(tmp_path / "t.json"), "--patient", "P", "--drug", "morphine",
                   "--mode", "continuous", "--days", "5", "--baseline", "7", "--rate", "lots"])
    err = capsys.readouterr().err
    assert rc == 1 and "--rate" in err and "nothing sent" not in err, err
