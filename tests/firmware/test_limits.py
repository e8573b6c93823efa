# Hard limits: every violation is refused with the limit named, and the
# active therapy is left exactly as it was.
import prescription
from fixtures import MORPHINE_10MG_ML, continuous, flex, make_pump, raises_limit, run

STROKE_NL = 500


def check(rx):
    return prescription.validate(rx, STROKE_NL)


def test_rate_below_mechanism_minimum_is_refused():
    raises_limit("rate", check, continuous(dose_ng_day=400000))  # 0.04 mL/day


def test_rate_above_mechanism_maximum_is_refused():
    raises_limit("rate", check, continuous(dose_ng_day=10000000, conc=400000))  # 25 mL/day


def test_concentration_above_drug_maximum_is_refused():
    raises_limit("concentration", check, continuous(conc=26000000))


def test_unknown_drug_is_refused():
    raises_limit("drug", check, continuous(drug="caffeine"))


def test_daily_dose_above_drug_maximum_is_refused():
    raises_limit("daily_max", check, continuous(dose_ng_day=21000000))


def test_ziconotide_daily_maximum_is_the_us_label_19_2_ug():
    check(continuous(drug="ziconotide", conc=25000, dose_ng_day=19200))
    raises_limit("daily_max", check, continuous(drug="ziconotide", conc=25000, dose_ng_day=19300))


def test_more_than_ten_steps_is_refused():
    raises_limit("steps", check, flex([(i * 3600, 1000000) for i in range(11)]))


def test_first_step_must_start_at_midnight():
    raises_limit("step_start", check, flex([(60, 1000000)]))


def test_steps_out_of_order_are_refused():
    raises_limit("step_start", check, flex([(0, 1000000), (7200, 1000000), (3600, 1000000)]))


def test_bolus_above_drug_maximum_is_refused():
    rx = continuous()
    rx["periodic"] = [{"time_s": 0, "dose_ng": 5000001, "duration_s": 3600}]
    raises_limit("bolus_max", check, rx)


def test_lockout_shorter_than_fifteen_minutes_is_refused():
    rx = continuous()
    rx["demand"] = {"dose_ng": 100000, "duration_s": 300, "lockout_s": 899, "max_per_day": 4}
    raises_limit("lockout", check, rx)


def test_24_hour_total_with_demand_maximum_over_daily_limit_is_rejected_not_trimmed():
    rx = continuous(dose_ng_day=18000000)
    rx["demand"] = {"dose_ng": 500000, "duration_s": 300, "lockout_s": 3600, "max_per_day": 5}
    e = raises_limit("daily_max", check, rx)
    assert "20.5 mg" in e.message, e.message


def test_periodic_boluses_count_toward_the_daily_limit():
    rx = continuous(dose_ng_day=19000000)
    rx["periodic"] = [{"time_s": 3600, "dose_ng": 600000, "duration_s": 600},
                      {"time_s": 7200, "dose_ng": 600000, "duration_s": 600}]
    raises_limit("daily_max", check, rx)


def test_bolus_too_fast_for_the_mechanism_is_refused():
    rx = continuous()
    rx["periodic"] = [{"time_s": 0, "dose_ng": 2000000, "duration_s": 60}]  # 200 uL/min
    raises_limit("rate", check, rx)


def test_non_integer_dose_is_refused_with_the_field_named():
    rx = continuous()
    rx["steps"][0]["dose_ng_day"] = 1.5
    e = raises_limit("type", check, rx)
    assert "dose_ng_day" in e.message


def test_refused_prescription_leaves_active_therapy_untouched():
    pump = make_pump(continuous())
    before = pump.therapy
    run(pump, 3600000)
    raises_limit("daily_max", pump.program, continuous(dose_ng_day=30000000))
    assert pump.therapy is before
    assert pump.sched.step_rate[0] == 1000000
    assert pump.rx == continuous()


def test_concentration_change_outside_a_refill_is_refused():
    pump = make_pump(continuous())
    raises_limit("concentration_change", pump.program, continuous(conc=2 * MORPHINE_10MG_ML))


def test_clinician_bolus_over_daily_limit_with_therapy_is_refused_and_nothing_starts():
    pump = make_pump(continuous(dose_ng_day=18000000))
    raises_limit("daily_max", pump.clinician_bolus, 2500000, 3600)
    assert not pump.sched.bolus_busy()


def test_second_bolus_while_one_runs_is_refused():
    pump = make_pump(continuous())
    pump.clinician_bolus(100000, 600)
    raises_limit("bolus_active", pump.clinician_bolus, 100000, 600)


def test_a_drug_dosed_in_micrograms_is_refused_in_micrograms_only():
    # 1.2 mg read as 1.2 ug would be a 1000-fold slip: a baclofen refusal
    # names every figure in ug, as the programmer shows baclofen.
    text = raises_limit("daily_max", check, continuous(drug="baclofen", conc=500000, dose_ng_day=1200000)).message
    assert "1200 ug" in text and "1000 ug/day" in text and " mg" not in text, text
    text = raises_limit("daily_max", check, continuous(drug="clonidine", conc=1000000, dose_ng_day=5000000)).message
    assert "5000 ug" in text and "2000 ug/day" in text and " mg" not in text, text


def test_a_drug_dosed_in_milligrams_is_refused_in_milligrams():
    text = raises_limit("daily_max", check, continuous(dose_ng_day=21000000)).message
    assert "21 mg" in text and "20 mg/day" in text, text


def test_a_bolus_below_one_stroke_names_the_one_stroke_it_could_be_once():
    # Baclofen 500 ug/mL: a stroke gives 0.25 ug; 0.2 ug rounds to it, 25 % off.
    pump = make_pump(continuous(drug="baclofen", conc=500000, dose_ng_day=200000))
    text = raises_limit("bolus_rounding", pump.clinician_bolus, 200, 1800).message
    assert text.count("0.25 ug") == 2 and text.endswith("choose 0.25 ug"), text  # the stroke's dose, the choice


def test_a_bolus_too_fast_for_the_mechanism_is_refused_within_the_wires_100_characters():
    # The reply cuts a reason at 100 characters: the refusal of the eighth
    # periodic bolus, the longest name, beside a basal must still end whole.
    rx = continuous(dose_ng_day=4000000)
    rx["periodic"] = [{"time_s": 3600 * (i + 1), "dose_ng": 1000000 if i == 7 else 10000, "duration_s": 60}
                      for i in range(8)]
    text = raises_limit("rate", check, rx).message
    assert text.startswith("periodic bolus 8") and len(text) <= 100 and text.endswith("make it longer"), text
