"""What pumpctl's screens make of the pump's replies, without a pump: the new
status keys and alarms (docs/safety.md), one name per alarm everywhere,
event-log records in words, figures that add up, errors as JSON under
--json, and --dry-run on every command that changes the pump (issue 13,
findings 7, 10, 11, 12, 14)."""
import json
import re

import pytest

from pumpctl import cli, paths, report
from pumpctl import units as u
from pumpctl.fw import alarms, events, link_commands as lc

IDENT = {"serial": "SN-1", "model": "IT-40", "firmware": "0.2.0", "stroke_nl": 500}


def status(**kw):
    st = {"day": 20000, "tod_s": 3600, "state": "delivering", "drug": "morphine", "conc_ng_ml": 10_000_000,
          "remaining_nl": 19_998_500, "capacity_nl": 20_000_000, "low_nl": 2_000_000, "residual_nl": 1_000_000,
          "low_in_s": 86400, "empty_in_s": 90000, "alarm_day": 0, "battery_mv": 3200, "bolus": None, "alarms": [],
          "today_dose_ng": 12_500_000, "today_nl": 1_250_000, "last_24h_dose_ng": 12_500_000, "last_24h_nl": 1_250_000,
          "delivered_nl": 1_250_000, "drug_delivered_ng": 12_500_000, "ceiling_24h_ng": 12_500_000,
          "catheter_primed": True, "clock_uncertain": False, "fault": None}
    st.update(kw)
    return st


def rows(text):
    return {line.split("  ")[0]: line for line in text.splitlines()}


# -- status ------------------------------------------------------------------------------------
def test_status_shows_the_24_hour_ceiling_in_the_drugs_unit():
    text = report.status_text(IDENT, status())
    assert "given in the last 24 h: 12.5 mg of 20 mg/day" in text
    zico = report.status_text(IDENT, status(drug="ziconotide", conc_ng_ml=100_000, ceiling_24h_ng=11_534))
    assert "given in the last 24 h: 11.534 µg of 19.2 µg/day (usual maximum; up to 21.6 µg/day with --override" \
        in zico


def test_the_drugs_24_hour_ceiling_is_not_labelled_as_the_therapys_maximum():
    # interrogate shows the therapy's own "24-h maximum" (6.5 mg/day, say) below
    # the status: the drug's 20 mg/day must not read as that one.
    r = rows(report.status_text(IDENT, status()))
    assert "24-h maximum" not in r and "of 20 mg/day" in r["drug 24-h max"]


def test_after_a_drug_change_the_doses_name_the_drug_and_since_when():
    # Hydromorphone since 14:00 (the pump counts its dose only, from then on).
    st = status(drug="hydromorphone", tod_s=19 * 3600, drug_changed_s=5 * 3600, today_dose_ng=420_000,
                today_nl=60_000, last_24h_dose_ng=420_000, last_24h_nl=160_000)
    r = rows(report.status_text(IDENT, st))
    assert r["delivered today"].endswith("0.42 mg (0.060 mL) of hydromorphone since the drug change at 14:00")
    assert r["last 24 h"].endswith("0.42 mg (0.160 mL) of hydromorphone since the drug change at 14:00 (the "
                                   "volume: every stroke, the catheter's earlier drug included)")
    # The next morning: today began after the change.
    r = rows(report.status_text(IDENT, dict(st, day=20001, tod_s=10 * 3600, drug_changed_s=20 * 3600)))
    assert r["delivered today"].endswith("0.42 mg (0.060 mL) of hydromorphone (the volume: every stroke, the "
                                         "catheter's earlier drug included)")
    assert "since the drug change on 2024-10-04 at 14:00" in r["last 24 h"]
    assert rows(report.status_text(IDENT, status()))["delivered today"].endswith("12.5 mg (1.250 mL)")


def test_status_says_what_to_do_about_the_clock_the_catheter_and_a_fault():
    text = report.status_text(IDENT, status(clock_uncertain=True, catheter_primed=False, alarms=[13],
                                            fault="RuntimeError: battery ADC read failed", battery_mv=None))
    r = rows(text)
    assert "UNCERTAIN (after an unclean reset" in r["clock"] and "pumpctl clock --set now" in r["clock"]
    assert "NO" in r["catheter primed"] and "pumpctl prime" in r["catheter primed"]
    assert "RuntimeError: battery ADC read failed" in r["fault"]
    assert "not readable" in r["battery"]
    assert r["alarms"].endswith("clock-uncertain")
    assert "catheter primed  yes" in report.status_text(IDENT, status())
    assert "fault" not in rows(report.status_text(IDENT, status()))


def test_status_projects_the_low_and_empty_dates_until_they_are_reached():
    r = rows(report.status_text(IDENT, status()))
    assert r["low reservoir"].endswith("at 2.000 mL, projected 2024-10-05")
    assert r["projected empty"].endswith("2024-10-05 (every allowed bolus used)")
    r = rows(report.status_text(IDENT, status(remaining_nl=1_500_000, low_in_s=0)))
    assert r["low reservoir"].endswith("at 2.000 mL, reached: plan a refill (`pumpctl refill`)")
    assert "every allowed bolus used" in r["projected empty"]
    r = rows(report.status_text(IDENT, status(remaining_nl=1_000_000, low_in_s=0, empty_in_s=0)))
    assert r["projected empty"].endswith("reached: refill now (`pumpctl refill`)")


# -- alarms ------------------------------------------------------------------------------------
@pytest.mark.parametrize("a,priority,says", [
    (alarms.FLASH_FAULT, "critical, therapy continues", "changes cannot be saved"),
    (alarms.UNCOMMANDED_MOTION, "critical, therapy stopped", "pumpctl resume"),
    (alarms.CLOCK_UNCERTAIN, "non-critical", "pumpctl clock --set now"),
    (alarms.RESERVOIR_LOW, "non-critical", "pumpctl refill"),
    (alarms.MOTOR_STALL, "critical, therapy stopped", "pumpctl alarms --ack motor-stall"),
])
def test_every_alarm_has_priority_tone_and_what_to_do(a, priority, says):
    text = report.alarms_text([[a, alarms.NAMES[a], alarms.is_critical(a), 0]], {a: (20000, 3600)})
    r = rows(text)
    assert "%s (id %d)" % (report.alarm_slug(a), a) in r["alarm"]
    assert r["priority"].endswith(priority)
    assert "2024-10-04 01:00" in r["raised"]
    assert "%d Hz" % alarms.TONE_B[a] in r["tone"] and "every" in r["tone"]
    assert says in text


def test_every_alarm_id_has_a_name_and_what_to_do():
    assert len(report.ALARM_SLUGS) == alarms.COUNT == len(set(report.ALARM_SLUGS))
    for a in range(alarms.COUNT):
        slug = report.alarm_slug(a)
        assert re.fullmatch(r"[a-z0-9-]+", slug), slug  # no shell quoting
        assert a in report.ALARM_TODO
        for name in (slug, alarms.NAMES[a], alarms.NAMES[a].upper(), slug.replace("-", "_"), str(a)):
            assert report.alarm_lookup(name) == a, name
    assert report.alarm_lookup("battery-replacement-(ERI)") == alarms.BATTERY_ERI  # the old spelling
    assert report.alarm_lookup("fire") is None and report.alarm_lookup("99") is None


def test_the_scenario_check_accepts_either_alarm_name():
    from pumpctl import scenario
    assert scenario.same_alarm("motor stall", "motor-stall") and scenario.same_alarm("motor-stall", "motor stall")
    assert not scenario.same_alarm("motor stall", "occlusion")


def test_a_drug_change_review_says_whether_the_catheter_is_bridged():
    from pumpctl.commands import therapy
    assert "old drug (0.2000 mL) is pushed out first at the old rate" in therapy.bridge_text(400, 500)
    # A pump with no catheter volume recorded (a demonstration image made before it recorded one).
    assert therapy.bridge_text(0, 500).startswith("NO BRIDGE: the pump has no catheter volume recorded")
    assert "pushed out first" in therapy.bridge_text(None, 500)


# -- the event log in words ------------------------------------------------------------------------
def test_log_records_are_named_not_raw_numbers():
    recs = [(1, 20000, 0, events.BOOT, 3, 0, 0, 0, b""),
            (2, 20000, 60, events.THERAPY_PROGRAMMED, 1, 400_000, 4_000_000, 0, b"morphine"),
            (3, 20000, 120, events.ALARM_RAISED, alarms.MOTOR_STALL, 0, 0, 0, b""),
            (4, 20000, 180, events.BOLUS_STARTED, 3, 200, 1800, 1_000_000, b""),
            (5, 20000, 240, events.REFILL, 4_100_000, 20_000_000, 19_998_500, -15_898_500, b""),
            (6, 20000, 300, events.OVERRIDE, 20_000, 0, 0, 0, b"soft daily maximum"),
            (7, 20000, 360, events.FAULT, 4, 0, 0, 0, b"clock uncertain: set it"),
            (8, 20000, 420, lc.EV_COMMAND, 2, 7, lc.PROGRAM, 0, b"program"),
            (9, 20000, 480, events.BRIDGE_DONE, 0, 0, 0, 0, b"")]
    got = {r["seq"]: r for r in report.log_records(recs)}
    assert got[1]["details"] == "reset cause: power loss"
    assert got[3]["event"] == "alarm raised" and got[3]["details"] == "motor-stall"
    assert got[4]["details"] == "clinician: 200 strokes over 30 min, 1 mg"
    assert got[5]["details"] == "withdrawn 4.100 mL, added 20.000 mL, expected 19.9985 mL, discrepancy -15.8985 mL"
    assert got[6]["event"] == "soft limit overridden" and "20000 ng" not in got[6]["details"]
    assert got[7]["details"] == "clock uncertain"
    assert got[8]["details"] == "clinician, session 7: done"
    # The pump records no count with it: "0 strokes of the earlier drug" misread a 400-stroke bridge.
    assert got[9]["details"] == "the catheter's earlier drug is out: the new therapy's profile runs"
    table = report.log_table(recs)
    assert "alarm raised" in table and "motor-stall" in table


def test_the_names_of_record_numbers_follow_the_firmware():
    import hal
    import implant
    assert report.RESET_CAUSES[hal.RESET_POWER_LOSS] == "power loss"
    assert report.RESET_CAUSES[hal.RESET_WATCHDOG] == "watchdog reset"
    assert report.IMPLANT_STEP_NAMES == implant.STEP_NAMES
    persist = (paths.ROOT / "firmware" / "persist.py").read_text()
    for name, code in re.findall(r"^FAULT_(\w+) = (\d+)", persist, re.M):
        assert name.lower().split("_")[0] in report.FAULT_CODES[int(code)].replace(" ", "_"), (name, code)
    pump = (paths.ROOT / "firmware" / "pump.py").read_text()
    assert re.search(r"^RESERVE_STROKES = const\((\d+)\)", pump, re.M).group(1) == str(report.RESERVE_STROKES)
    totals = (paths.ROOT / "firmware" / "daytotals.py").read_text()
    assert re.search(r"^PARTIAL = const\(1 << (\d+)\)", totals, re.M).group(1) == "28"
    assert re.search(r"^END_CLOCK = const\((\d+)\)", totals, re.M).group(1) == "1"


def daily_total(day, kind, strokes, dose_ng, span=0, reason=0, resets=0, partial=False, text=b"morphine"):
    b = kind | span << 8 | reason << 16 | resets << 20 | (1 << 28 if partial else 0)
    return (9, day + 1, 0, events.DAILY_TOTAL, day, b, strokes, dose_ng, text)


def test_a_daily_total_reads_as_the_day_its_kind_strokes_volume_and_dose_of_its_drug():
    rec = daily_total(20783, 1, 1312, 6_560_000)
    assert report.log_records([rec], 500)[0]["details"] == "2026-11-26, basal: 1312 strokes, 0.656 mL, 6.56 mg morphine"
    assert report.log_records([rec])[0]["details"] == "2026-11-26, basal: 1312 strokes, 6.56 mg morphine"  # no volume
    # Each record in its own drug's unit, whatever the therapy programmed.
    rec = daily_total(20783, 2, 20, 50_000, text=b"ziconotide")
    assert report.log_records([rec], 500)[0]["details"] == "2026-11-26, bridge: 20 strokes, 0.010 mL, 50 µg ziconotide"
    # Earlier firmware named the kind there: the drug programmed gives the unit.
    rec = daily_total(20783, 1, 1312, 6_560_000, text=b"basal")
    assert report.log_records([rec], 500)[0]["details"] == "2026-11-26, basal: 1312 strokes, 0.656 mL, 6.56 mg"


def test_a_daily_total_says_what_may_be_missing_from_it():
    rec = daily_total(20783, 5, 40, 200_000, span=2, reason=1, resets=1, partial=True)
    text = report.log_records([rec], 500)[0]["details"]
    assert text == ("2026-11-26 to 2026-11-28, demand: 40 strokes, 0.020 mL, 0.2 mg morphine; ended early: clock set "
                    "to another day; 1 unclean reset(s): up to 32 strokes may be missing for each; counted from part-way "
                    "through the day")
    assert report.log_records([daily_total(20783, 0, 0, 0)])[0]["details"] == "2026-11-26: nothing delivered"


# -- finding 12: figures side by side add up ------------------------------------------------------
@pytest.mark.parametrize("expected,withdrawn", [(19_998_500, 4_100_000), (14_198_500, 14_199_000),
                                                (9_603_000, 9_500_000), (20_000_000, 0)])
def test_refill_figures_add_up_as_shown(expected, withdrawn):
    def ml(text):
        return float(text.split()[0])
    shown = ml(u.fmt_ml(withdrawn)) - ml(u.fmt_ml(expected))
    assert abs(shown - ml(u.fmt_ml(withdrawn - expected, signed=True))) < 1e-9


def test_a_reason_the_pump_cut_short_keeps_only_whole_clauses():
    cut = ("clinician bolus: with 0 ug of ziconotide given in the last 24 h, a 24-hour window would reach 21.1 u")
    assert len(cut) == report.REASON_MAX
    text = report.clinical_reason(cut, "ziconotide")
    assert text == "clinician bolus: with 0 µg of ziconotide given in the last 24 h …"


# -- finding 10: errors as JSON under --json ------------------------------------------------------
@pytest.mark.parametrize("argv,code,rc", [
    (["status", "--json", "--port", "/dev/nonexistent-pump"], "LINK", cli.EXIT_LINK),
    (["program", "--json", "--drug", "aspirin", "--conc", "1mg/mL", "--dose", "1mg/day"], "INPUT", cli.EXIT_INPUT),
    (["bolus", "--json", "--dose", "1mg"], "USAGE", cli.EXIT_INPUT),
])
def test_errors_under_json_are_a_labelled_object_on_stdout(argv, code, rc, capsys):
    assert cli.main(argv) == rc
    out, err = capsys.readouterr()
    e = json.loads(out)["error"]
    assert e["code"] == code and e["exit"] == rc and e["message"] and "limit" in e
    assert err.strip().splitlines()[-1].startswith("pumpctl: ")  # and the line for people on stderr


@pytest.mark.parametrize("argv", [
    ["program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "2mg/day", "--dose", "3mg/day"],
    ["program", "--drug", "morphine", "--drug", "baclofen", "--conc", "10mg/mL", "--dose", "2mg/day"],
    ["bolus", "--dose", "1mg", "--over", "30min", "--dose", "2mg"],
    ["refill", "--withdrawn", "5mL", "--added", "20mL", "--added", "18mL"],
])
def test_a_therapy_figure_given_twice_is_refused_before_anything_is_sent(argv, capsys):
    # No --port: a repeated figure is refused before pumpctl looks for a pump.
    assert cli.main(argv + ["--json"]) == cli.EXIT_INPUT
    e = json.loads(capsys.readouterr().out)["error"]
    assert e["code"] == "USAGE" and "given twice" in e["message"] and not e["changed"], e


def test_a_pump_refusal_under_json(capsys):
    from pumpctl.link import PumpError
    e = PumpError({"code": 8, "name": "LIMIT", "limit": "demand_lockout", "reason": "lockout: too soon",
                   "wait_s": 600})
    lines, err = cli._refusal(e, None)
    assert err["limit"] == "demand_lockout" and err["wait_s"] == 600 and err["exit"] == cli.EXIT_REFUSED
    assert lines[-1] == "nothing was changed on the pump"


# -- finding 14: --dry-run wherever the pump is changed --------------------------------------------
CHANGING = ("program", "bolus", "prime", "catheter", "suspend", "resume", "maintenance", "refill", "visit", "clock",
            "low-threshold", "alarm-date", "alarms", "implant")
READING = ("identify", "status", "interrogate", "log", "demand", "diary", "diary-list")


def _options(name):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {o for a in sub.choices[name]._actions for o in a.option_strings}


@pytest.mark.parametrize("name", CHANGING)
def test_every_command_that_changes_the_pump_has_dry_run_and_yes(name):
    assert {"--dry-run", "--yes"} <= _options(name)


@pytest.mark.parametrize("name", READING)
def test_reading_commands_have_no_meaningless_yes(name):
    assert "--yes" not in _options(name) and "--dry-run" not in _options(name)


@pytest.mark.parametrize("name", ["program", "bolus", "refill", "visit"])
def test_override_where_drug_is_added(name):
    assert "--override" in _options(name)
    assert "--override" not in _options("prime")


def test_devices_and_advance_without_an_emulator(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["devices", "--state", str(tmp_path / "none")]) == 0
    assert "no pump found" in capsys.readouterr().out
    assert cli.main(["advance", "1h", "--state", str(tmp_path / "none")]) == cli.EXIT_LINK
    assert "no emulator bench port" in capsys.readouterr().err
    assert cli.main(["advance", "soon", "--state", str(tmp_path / "none")]) == cli.EXIT_INPUT


def test_the_visit_report_counts_delivery_on_through_a_flash_fault():
    # The flash-fault alarm is critical but therapy continues (docs/safety.md): the basal goes on accruing.
    from pumpctl import visitrun
    recs = [(1, 100, 0, events.THERAPY_PROGRAMMED, 1, 1_000_000, 10_000_000, 0, b"morphine"),
            (2, 100, 43200, events.ALARM_RAISED, alarms.FLASH_FAULT, 0, 0, 0, b"")]
    rows, state = visitrun.delivered_by_day(recs, (100, 0), (101, 0), visitrun.DeliveryState(), 500, 10_000_000)
    assert rows == [(100, 10_000_000, 1_000_000)] and not state.stopped
    recs[1] = (2, 100, 43200, events.ALARM_RAISED, alarms.MOTOR_STALL, 0, 0, 0, b"")
    rows, state = visitrun.delivered_by_day(recs, (100, 0), (101, 0), visitrun.DeliveryState(), 500, 10_000_000)
    assert rows == [(100, 5_000_000, 500_000)] and state.stopped


@pytest.mark.parametrize("nl, shown", [(14_198_500, "14.1985 mL"), (14_199_000, "14.199 mL"),
                                       (-15_898_500, "-15.8985 mL"), (0, "0.000 mL"), (500, "0.0005 mL"),
                                       (20_000_000, "20.000 mL"), (6_170_000, "6.170 mL")])
def test_a_counted_volume_is_shown_exactly_with_at_least_three_decimals(nl, shown):
    assert u.fmt_ml(nl) == shown


def test_figures_are_formatted_in_one_place():
    # units.py is the one home of drug_unit and fmt_*: the visit report, the
    # reviews and the screens cannot disagree on a format.
    import re
    pkg = paths.ROOT / "host_tools" / "pumpctl"
    homes = {}
    for f in sorted(pkg.rglob("*.py")):
        for name in re.findall(r"^def ((?:fmt_\w+|drug_unit|_?table))\(", f.read_text(), re.M):
            homes.setdefault(name.lstrip("_"), []).append(str(f.relative_to(pkg)))
    assert {n: fs for n, fs in homes.items() if len(fs) > 1} == {}
    assert all(fs == ["units.py"] for n, fs in homes.items() if n != "table"), homes
    assert homes.get("table") == ["console.py"], homes


def test_visit_has_the_same_report_folder_default_as_scenario():
    args = cli.build_parser().parse_args(["visit", "--withdrawn", "1mL", "--added", "20mL"])
    assert args.report_dir == cli.build_parser().parse_args(["scenario", "x.json"]).report_dir == "reports"


def test_scenario_docs_and_examples_name_alarms_as_pumpctl_does():
    # One alarm naming scheme everywhere (issue #13): the slugs of `pumpctl alarms`.
    import json
    import re
    doc = (paths.ROOT / "docs" / "scenarios.md").read_text()
    listed = re.search(r"Alarm names, as everywhere in pumpctl[^\n]*\n([^\n]+)", doc)
    assert listed and re.findall(r"`([^`]+)`", listed.group(1)) == list(report.ALARM_SLUGS)
    for block in re.findall(r'"(?:no_)?alarms": \[([^\]]*)\]', doc):
        assert all(n in report.ALARM_SLUGS for n in json.loads("[%s]" % block)), block
    for path in sorted((paths.ROOT / "examples").glob("*.json")):
        for step in json.loads(path.read_text()).get("steps", []):
            for key in ("alarms", "no_alarms"):
                names = step.get(key)
                if isinstance(names, list):
                    assert all(n in report.ALARM_SLUGS for n in names), (path.name, names)


def test_demand_and_priming_bolus_log_records_give_the_dose_and_volume_not_strokes_only():
    from pumpctl.fw import events
    recs = [(1, 20000, 0, events.THERAPY_PROGRAMMED, 1, 200_000, 2_000_000, 0, b"morphine"),
            (2, 20000, 60, events.BOLUS_STARTED, 4, 400, 1800, 0, b""),
            (3, 20000, 1860, events.BOLUS_DELIVERED, 4, 400, 0, 0, b""),
            (4, 20000, 3600, events.BOLUS_REQUESTED, 5, 20, 600, 0, b""),
            (5, 20000, 3600, events.BOLUS_STARTED, 5, 20, 600, 0, b""),
            (6, 20000, 4200, events.BOLUS_DELIVERED, 5, 20, 0, 0, b"")]
    details = [r["details"] for r in report.log_records(recs, 500, 10_000_000)]
    assert details[1] == "priming: 400 strokes over 30 min, 0.2000 mL (filling the catheter)"
    assert details[2] == "priming: 400 strokes delivered, 0.2000 mL (filling the catheter)"
    assert details[3] == "demand: 20 strokes over 10 min, 0.1 mg (0.010 mL)"
    assert details[5] == "demand: 20 strokes delivered, 0.1 mg (0.010 mL)"


def test_the_priming_step_record_says_the_priming_started_not_that_it_passed():
    from pumpctl.fw import events
    rec = (1, 20000, 0, events.IMPLANT_STEP, 4, 1, 400, 1800, b"")
    assert report.event_details(rec) == "priming: started, 400 strokes over 30 min (done at its `bolus delivered` " \
                                        "record)"


def test_the_ceiling_text_without_the_earlier_drugs_name_has_no_doubled_word():
    text = report.ceiling_text("ziconotide", 2160, "")
    assert "the the" not in text and "counting the earlier drug given before the drug change" in text
