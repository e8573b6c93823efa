"""pumpctl's clinical units: exact conversion to the firmware's integers and a
clear refusal of anything malformed, ambiguous or inexact."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pumpctl import report
from pumpctl import units as u
from pumpctl.fw import fw_units, link_commands as lc
from pumpctl.keystore import KeyStore, KeyStoreError, default_path
from pumpctl.link import unpack_log


@pytest.mark.parametrize("text,ng", [
    ("0.5mg", 500_000), ("200ug", 200_000), ("200µg", 200_000), ("200μg", 200_000), ("200mcg", 200_000),
    ("50ng", 50), ("1g", 10**9), (".25 mg", 250_000), ("2.4ug", 2400), ("10 MG", 10_000_000),
])
def test_mass(text, ng):
    assert u.mass_ng(text) == ng


@pytest.mark.parametrize("text,nl", [("18.5mL", 18_500_000), ("500uL", 500_000), ("1L", 10**9), ("0.000001mL", 1)])
def test_volume(text, nl):
    assert u.volume_nl(text) == nl


@pytest.mark.parametrize("text,s", [("90s", 90), ("10min", 600), ("1.5h", 5400), ("1day", 86400), ("2d", 172800)])
def test_duration(text, s):
    assert u.duration_s(text) == s


@pytest.mark.parametrize("text,v", [("10mg/mL", 10_000_000), ("500ug/mL", 500_000), ("25 mg / ml", 25_000_000),
                                    ("1mg/uL", 10**9), ("1mg/L", 1000)])
def test_concentration(text, v):
    assert u.conc_ng_ml(text) == v


@pytest.mark.parametrize("text,v", [("4mg/day", 4_000_000), ("0.5mg/h", 12_000_000), ("100ug/24h", 100_000),
                                    ("2.4ug/d", 2400), ("1mg/12h", 2_000_000)])
def test_rate(text, v):
    assert u.rate_ng_day(text) == v


@pytest.mark.parametrize("fn,text,needle", [
    (u.mass_ng, "0.0000001mg", "whole number of ng"),
    (u.mass_ng, "5", "not a number with a unit"),
    (u.mass_ng, "mg", "no number"),
    (u.mass_ng, "5kg", "unknown unit"),
    (u.mass_ng, "1,5mg", "decimal point"),
    (u.mass_ng, "-1mg", "negative: give a positive value"),
    (u.mass_ng, "1e3mg", "not a number with a unit"),
    (u.mass_ng, "5mL", "unknown unit"),
    (u.duration_s, "0.5s", "whole number of seconds"),
    (u.conc_ng_ml, "10mg", "form 10mg/mL"),
    (u.conc_ng_ml, "10mg/mL/h", "form 10mg/mL"),
    (u.conc_ng_ml, "0mg/mL", "is zero: give the concentration on the vial's label"),
    (u.parse_date, "2149-06-07", "outside the dates the pump keeps (1970-01-01 to 2149-06-06)"),
    (u.catheter_segments, "500mm:0uL", "neither zero"),
    (u.catheter_segments, "0mm:100uL", "neither zero"),
    (u.catheter_segments, "99999999999999999999mm:100uL", "more than the pump accepts"),
    (u.catheter_segments, "1501mm:100uL", "at most 1500 mm long"),
    (u.catheter_segments, "1mm:1uL,1mm:1uL,1mm:1uL,1mm:1uL,1mm:1uL", "at most 4 segments"),
    (u.catheter_segments, "500mm:0.6mL,300mm:0.5mL", "1.1000 mL in all, more than the 1.000 mL"),
    (u.parse_date, "1969-12-31", "outside the dates the pump keeps"),
    (u.parse_datetime, "2200-01-01T00:00", "outside the dates the pump keeps"),
    (u.conc_ng_ml, "10mg/0mL", "zero volume"),
    (u.rate_ng_day, "4mg", "form 4mg/day"),
    (u.rate_ng_day, "1mg/7h", "whole number of ng/day"),
    (u.rate_ng_day, "1mg/0h", "zero duration"),
    (u.bolus, "0.5mg/h", "ambiguous"),
    (u.bolus, "0.5mg/10", "not a number with a unit"),
    (u.time_of_day, "24:00", "between 00:00 and 23:59"),
    (u.time_of_day, "8am", "HH:MM"),
    (u.step, "08:00-5mg/day", "form 08:00=5mg/day"),
    (u.demand, "0.2mg/5min,lockout=30min", "both lockout and max"),
    (u.demand, "0.2mg/5min,lockout=30min,max=4,max=5", "once each"),
    (u.demand, "0.2mg/5min,lockout=30min,max=four", "whole number"),
    (u.demand, "0.2mg/5min,wait=30min,max=4", "expected lockout"),
    (u.drug_name, "aspirin", "unknown drug"),
    (u.drug_name, None, "the drug is missing"),
    (u.drug_name, "  ", "the drug is missing"),
])
def test_refusals_say_why(fn, text, needle):
    with pytest.raises(u.UnitError) as e:
        fn(text)
    assert needle in str(e.value)


def test_flex_periodic_demand_prescription_exact():
    rx = u.prescription("Morphine", "10mg/mL", steps=["08:00=5mg/day", "00:00=3mg/day"],
                        periodic_=["12:00=0.5mg/10min"], demand_="0.2mg/5min,lockout=30min,max=4")
    assert rx == {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 3_000_000], [28_800, 5_000_000]],
                  "periodic": [[43_200, 500_000, 600]], "demand": [200_000, 300, 1800, 4]}
    assert u.prescription("ziconotide", "100ug/mL", dose="2.4ug/day") == {
        "drug": "ziconotide", "conc": 100_000, "steps": [[0, 2400]]}


@pytest.mark.parametrize("kw,needle", [
    ({"dose": "4mg/day", "steps": ["00:00=3mg/day"]}, "either --dose"),
    ({}, "either --dose"),
    ({"steps": ["08:00=3mg/day"]}, "starts at 00:00"),
    ({"steps": ["00:00=3mg/day", "00:00=4mg/day"]}, "same time"),
    ({"dose": "4mg/day", "periodic_": ["12:00=1mg/1h", "12:00=1mg/2h"]}, "same time"),
])
def test_prescription_structure_refused(kw, needle):
    with pytest.raises(u.UnitError) as e:
        u.prescription("morphine", "10mg/mL", **kw)
    assert needle in str(e.value)


def test_prescription_file_both_forms(tmp_path):
    clin = tmp_path / "rx.json"
    clin.write_text(json.dumps({"drug": "baclofen", "conc": "500ug/mL", "steps": ["00:00=100ug/day", "22:00=150ug/day"],
                                "demand": "25ug/10min,lockout=1h,max=3"}))
    fw = tmp_path / "fw.json"
    fw.write_text(json.dumps({"drug": "baclofen", "conc_ng_ml": 500000,
                              "steps": [{"start_s": 0, "dose_ng_day": 100000}, {"start_s": 79200, "dose_ng_day": 150000}],
                              "demand": {"dose_ng": 25000, "duration_s": 600, "lockout_s": 3600, "max_per_day": 3}}))
    assert u.prescription_file(str(clin)) == u.prescription_file(str(fw))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"drug": "baclofen", "conc": "500ug/mL", "dose": "1mg/day", "rate": 3}))
    with pytest.raises(u.UnitError, match="unknown keys rate"):
        u.prescription_file(str(bad))
    bad.write_text("{not json")
    with pytest.raises(u.UnitError, match="not JSON"):
        u.prescription_file(str(bad))
    with pytest.raises(u.UnitError, match="No such file"):
        u.prescription_file(str(tmp_path / "missing.json"))


@given(st.integers(1, 25_000_000), st.integers(0, 6))
def test_mass_round_trips_exactly(ng, shift):
    # Any whole ng written in mg (as a decimal) converts back exactly.
    text = u.ml_number(ng) + "mg"  # ng / 10^6 as exact decimal text
    assert u.mass_ng(text) == ng


@given(st.integers(48_000, 24_000_000))
def test_formatted_volume_rate_matches_firmware_rounding(nl_day):
    conc = 10_000_000
    dose = fw_units.volume_to_dose_ng(nl_day, conc)
    assert abs(fw_units.dose_to_volume_nl(dose, conc) - nl_day) <= 1


def test_formatting():
    assert u.fmt_mass(500_000, "mg") == "0.5 mg"
    assert u.fmt_mass(2400, "µg") == "2.4 µg"
    assert u.fmt_conc(10_000_000, "mg") == "10 mg/mL"
    assert u.fmt_tod(28_800) == "08:00" and u.fmt_tod(28_801) == "08:00:01"
    assert u.fmt_duration(600) == "10 min" and u.fmt_duration(3600) == "1 h" and u.fmt_duration(90) == "90 s"
    assert u.fmt_date(20_000) == "2024-10-04"
    assert u.parse_date("2024-10-04") == 20_000
    assert u.parse_datetime("2024-10-04T08:30:15") == (20_000, 30_615)
    assert u.drug_unit("morphine") == "mg" and u.drug_unit("ziconotide") == "µg" and u.drug_unit("baclofen") == "µg"


def test_clinical_hints():
    h = report.clinical_hint("rate", "step 1 rate 1000 nL/day outside 48000..24000000 nL/day", "morphine", 10_000_000)
    # The dose range the clinician can use: the mechanism's, capped at the drug's 24-hour maximum.
    assert h == ("allowed daily dose at 10 mg/mL: 0.48 mg/day to 20 mg/day (the pump moves 0.048 mL/day to "
                 "24.000 mL/day; morphine's 24-hour maximum is 20 mg/day)")
    h = report.clinical_hint("daily_max", "morphine: 24-hour maximum ... exceeds", "morphine")
    assert "20 mg/day" in h and "25 mg/mL" in h
    assert report.clinical_hint("lockout", "demand bolus lockout 60 s outside 900..86400 s", "morphine") == \
        "allowed range: 15 min to 24 h"


def test_side_by_side_review():
    cur = {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 10_000_000]]}
    new = u.prescription("morphine", "10mg/mL", steps=["00:00=3mg/day", "08:00=5mg/day"])
    text = report.compare(cur, new, {"total": "10 mg/day"}, {"total": "5 mg/day"}, "mg")
    lines = text.splitlines()
    assert lines[0].split() == ["current", "new"]
    row = next(l for l in lines if l.startswith("basal from 08:00"))
    assert "10 mg/day (1.000 mL/day)" in row and "5 mg/day (0.500 mL/day)" in row


def test_log_record_unpacking_matches_the_firmware_layout():
    import struct
    recs = struct.pack(lc.LOG_RECORD, 7, 20_000, 3600, 19, 5, 2, 1, 0, 3) + b"abc"
    recs += struct.pack(lc.LOG_RECORD, 8, 20_000, 3601, 17, 2, 0, 0, 0, 0)
    assert unpack_log(recs) == [(7, 20_000, 3600, 19, 5, 2, 1, 0, b"abc"), (8, 20_000, 3601, 17, 2, 0, 0, 0, b"")]
    assert struct.calcsize(lc.LOG_RECORD) == lc.LOG_RECORD_LEN


def test_keystore_is_private_and_atomic(tmp_path, monkeypatch):
    path = tmp_path / "cfg" / "keys.json"
    ks = KeyStore(path)
    with pytest.raises(KeyStoreError, match="no keys for pump X"):
        ks.get("X", "clinician")
    ks.put("X", bytes(32), bytes(range(32)), "model")
    assert ks.get("X", "clinician") == bytes(range(32)) and ks.has("X")
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("{}")
    with pytest.raises(KeyStoreError, match="not a version 1 key store: restore the file from your backup"):
        ks.get("X", "patient")
    path.write_text("{garbage")
    with pytest.raises(KeyStoreError, match=r"unreadable \(.*\): restore the file from your backup \(a pump gives "):
        ks.get("X", "patient")
    monkeypatch.setenv("PUMPCTL_KEYSTORE", str(tmp_path / "env.json"))
    assert default_path() == tmp_path / "env.json"
    assert default_path(str(path)) == path


def test_a_diary_note_with_a_line_break_is_refused_before_sending():
    from pumpctl.commands import diary
    with pytest.raises(u.UnitError, match="one line of text, without a line break"):
        diary.diary_payload(5, "walking", "bad\nnight")


def test_a_serial_is_never_a_path_in_host_file_names(tmp_path):
    from pumpctl import inflight, paths, visitrun
    j = inflight.Journal(tmp_path / "keys.json")
    for serial in ("../../evil", "/etc/x", "..", "a\\b"):
        assert j._path(serial).parent == tmp_path / "inflight"
        assert visitrun.report_path(tmp_path, serial, __import__("datetime").date(2026, 1, 1)).parent == tmp_path
    assert paths.file_part("EMU-0A1B_c.2") == "EMU-0A1B_c.2" and paths.file_part("..") == "_"


def test_a_refusal_for_the_wrong_role_says_which_role_to_use():
    lines = report.refusal_lines("FORBIDDEN", None, "log not allowed for the patient role")
    assert "what to do: this is for the clinician's programmer: give it again with --role clinician" in lines[1]
    lines = report.refusal_lines("FORBIDDEN", None, "demand not allowed for the clinician role")
    assert "--role patient" in lines[1]


def test_a_diary_note_too_long_for_the_pump_says_how_letters_count():
    from pumpctl.commands import diary
    assert diary.diary_payload(5, "walking", "é" * 16)["note"] == "é" * 16  # 32 bytes: fits
    with pytest.raises(u.UnitError, match=r"too long for the pump: 34 bytes, at most 32 \(a plain letter is one, "
                                          r"an accented letter two"):
        diary.diary_payload(5, "walking", "é" * 17)
