"""pumpctl and the firmware's safety closure (docs/safety.md, issue 12): the
override of a soft daily maximum, reviews from the pump's own dry runs for
bolus and priming, the catheter revision that priming needs, refusals at the
24-hour ceiling, and the new status keys and alarms on screen."""
import json

import pytest

from linkkit import Pump, of_type
from pumpctl import cli
from pumpctl.fw import alarms, events, link_commands as lc
from pumpctl.link import Client

MIN_MS = 60_000


class ZiconotidePump(Pump):
    """A pump on ziconotide 100 µg/mL at 12 µg/day: its usual (soft) 24-hour
    maximum is 19.2 µg, its hard one 21.6 µg (docs/limits.md)."""

    def __init__(self, tmp_path):
        rx = {"drug": "ziconotide", "conc_ng_ml": 100_000, "steps": [{"start_s": 0, "dose_ng_day": 12_000}]}
        super().__init__(tmp_path, prescription=rx)


@pytest.fixture
def zico(tmp_path):
    p = ZiconotidePump(tmp_path)
    yield p
    p.stop()


@pytest.fixture
def sent(monkeypatch):
    """Every request pumpctl sends: [(type, payload)]."""
    log = []
    real = Client.request

    def request(self, mtype, payload=None):
        log.append((mtype, payload))
        return real(self, mtype, payload)

    monkeypatch.setattr(Client, "request", request)
    return log


def real_requests(log, mtype):
    return [p for t, p in log if t == mtype and not (p or {}).get("check")]


ZICO = ["--drug", "ziconotide", "--conc", "100ug/mL"]


# -- 1. --override --------------------------------------------------------------------------
def test_program_above_the_usual_maximum_needs_override_and_says_so(zico, capsys, sent):
    before = zico.therapy()["rx"]
    rc, out, err = zico.pumpctl(capsys, "program", *ZICO, "--dose", "20ug/day", "--yes")
    assert rc == cli.EXIT_REFUSED and "(daily_max)" in err, err
    assert "19.2 µg/day usual, 21.6 µg/day hard" in err and "repeat with --override" in err, err
    # With --override: the review says it plainly; without a confirmation nothing is sent.
    rc, out, err = zico.pumpctl(capsys, "program", *ZICO, "--dose", "20ug/day", "--override")
    assert rc == cli.EXIT_CANCELLED
    assert "ABOVE THE USUAL MAXIMUM" in out and "19.2 µg/day" in out and "hard maximum 21.6 µg/day" in out, out
    assert not real_requests(sent, lc.PROGRAM) and zico.therapy()["rx"] == before
    # --dry-run: the pump's dry run with the override, and what confirming would send.
    rc, out, _ = zico.pumpctl(capsys, "program", *ZICO, "--dose", "20ug/day", "--override", "--dry-run", "--json")
    data = json.loads(out)
    assert rc == 0 and data["dry_run"] and data["would_send"]["override"] is True
    assert data["review"]["above_usual_maximum"] and not real_requests(sent, lc.PROGRAM)
    rc, out, err = zico.pumpctl(capsys, "program", *ZICO, "--dose", "20ug/day", "--override", "--yes")
    assert rc == 0 and "above the usual maximum: override logged" in out, err
    assert real_requests(sent, lc.PROGRAM) == [{"rx": zico.therapy()["rx"], "override": True}]
    assert zico.therapy()["rx"]["steps"] == [[0, 20_000]]
    assert [r[4] for r in of_type(zico.log(), events.OVERRIDE)] == [20_000]
    # Never above the hard maximum, override or not.
    rc, _, err = zico.pumpctl(capsys, "program", *ZICO, "--dose", "22ug/day", "--override", "--yes")
    assert rc == cli.EXIT_REFUSED and "(daily_hard_max)" in err and "never exceeded" in err, err


def test_override_is_not_sent_when_not_needed(zico, capsys, sent):
    rc, out, err = zico.pumpctl(capsys, "program", *ZICO, "--dose", "15ug/day", "--override", "--yes")
    assert rc == 0 and "--override not needed" in out, err
    assert real_requests(sent, lc.PROGRAM)[0].get("override") is None
    assert not of_type(zico.log(), events.OVERRIDE)


def test_bolus_review_shows_the_delivered_dose_and_the_override(zico, capsys, sent):
    assert zico.pumpctl(capsys, "program", *ZICO, "--dose", "19ug/day", "--yes")[0] == 0
    # 1.02 µg is not whole 0.5 µL strokes at 100 µg/mL: the pump delivers 20 strokes, 1 µg.
    rc, out, err = zico.pumpctl(capsys, "bolus", "--dose", "1.02ug", "--over", "30min", "--override")
    assert rc == cli.EXIT_CANCELLED, err
    assert "dose asked      1.02 µg" in out and "dose delivered  1 µg: 20 strokes of 0.5 µL" in out, out
    assert "rounded to whole strokes" in out and "ABOVE THE USUAL MAXIMUM" in out
    assert not real_requests(sent, lc.BOLUS)
    rc, out, err = zico.pumpctl(capsys, "bolus", "--dose", "1.02ug", "--over", "30min", "--override", "--yes")
    assert rc == 0 and "bolus started: 1 µg, 20 strokes" in out, err
    assert real_requests(sent, lc.BOLUS) == [{"dose_ng": 1020, "duration_s": 1800, "override": True}]
    assert of_type(zico.log(), events.OVERRIDE)


def test_refill_with_override(zico, capsys, sent):
    remaining = zico.call(lc.STATUS)["remaining_nl"]
    argv = ["refill", "--withdrawn", "%gmL" % (remaining / 1e6), "--added", "18mL", *ZICO, "--dose", "20ug/day"]
    rc, _, err = zico.pumpctl(capsys, *argv, "--yes")
    assert rc == cli.EXIT_REFUSED and "(daily_max)" in err and "--override" in err
    rc, out, err = zico.pumpctl(capsys, *argv, "--override", "--yes")
    assert rc == 0 and "ABOVE THE USUAL MAXIMUM" in out and "override logged" in out, err
    assert real_requests(sent, lc.REFILL)[0]["override"] is True
    assert zico.therapy()["rx"]["steps"] == [[0, 20_000]]


def test_a_refusal_at_the_24_hour_ceiling_names_the_figures_and_what_to_do(pump, capsys):
    # Morphine 10 mg/day and two 5 mg boluses: a third is over 20 mg/day in 24 h.
    for _ in range(2):
        rc, _, err = pump.pumpctl(capsys, "bolus", "--dose", "5mg", "--over", "30min", "--yes")
        assert rc == 0, err
        pump.bench("advance", ms=31 * MIN_MS)
    rc, out, err = pump.pumpctl(capsys, "bolus", "--dose", "5mg", "--over", "30min", "--yes")
    assert rc == cli.EXIT_REFUSED and "(daily_max)" in err, err
    given = pump.call(lc.STATUS)["ceiling_24h_ng"]
    assert "given in the last 24 h: %s mg" % format(given / 1e6, "g") in err, err
    assert "24-hour maximum for morphine: 20 mg/day" in err and "no override above it" in err and "wait" in err
    assert " ng" not in err and " nL" not in err and "Traceback" not in err
    # --json: the same as a labelled error object on standard output.
    rc, out, _ = pump.pumpctl(capsys, "bolus", "--dose", "5mg", "--over", "30min", "--yes", "--json")
    e = json.loads(out)["error"]
    assert rc == cli.EXIT_REFUSED and e["code"] == "LIMIT" and e["limit"] == "daily_max" and e["exit"] == 2
    assert "wait" in e["what_to_do"] and "20 mg/day" in e["hint"] and e["changed"] is False
    # --override cannot pass the only maximum morphine has.
    rc, _, err = pump.pumpctl(capsys, "bolus", "--dose", "5mg", "--over", "30min", "--yes", "--override")
    assert rc == cli.EXIT_REFUSED and "no override above it" in err


def test_a_bolus_that_is_not_whole_strokes_is_refused_with_the_deliverable_doses(pump, capsys):
    rc, _, err = pump.pumpctl(capsys, "bolus", "--dose", "7.5ug", "--over", "30min", "--yes")
    assert rc == cli.EXIT_REFUSED and "(bolus_rounding)" in err and "0.005 mg or 0.01 mg" in err, err
    assert "whole 0.5 µL strokes" in err


# -- 1. bolus and prime reviews, the catheter revision -------------------------------------------
def test_bolus_review_is_the_pumps_dry_run(pump, capsys, sent):
    rc, out, _ = pump.pumpctl(capsys, "bolus", "--dose", "1.002mg", "--over", "30min")
    assert rc == cli.EXIT_CANCELLED
    assert {"dose_ng": 1_002_000, "duration_s": 1800, "check": True} in [p for t, p in sent if t == lc.BOLUS]
    assert "dose asked      1.002 mg" in out and "dose delivered  1 mg: 200 strokes of 0.5 µL (0.1000 mL)" in out
    assert "given in the last 24 h: 0 mg of 20 mg/day" in out and "basal delivery pauses" in out
    assert not real_requests(sent, lc.BOLUS) and pump.call(lc.STATUS)["bolus"] is None


def test_catheter_revision_then_priming(pump, capsys, sent):
    # The demonstration pump's catheter (0.2 mL, recorded) is primed: priming needs a revision first.
    rc, _, err = pump.pumpctl(capsys, "prime", "--volume", "0.2mL", "--over", "25min", "--yes")
    assert rc == cli.EXIT_REFUSED and "(catheter_primed)" in err and "pumpctl catheter --segments" in err, err
    rc, out, _ = pump.pumpctl(capsys, "catheter", "--segments", "500mm:120uL,300mm:80uL")
    assert rc == cli.EXIT_CANCELLED and "500 mm 0.1200 mL, 300 mm 0.0800 mL (total 0.2000 mL)" in out
    assert "current catheter  0.2000 mL, primed" in out and pump.therapy()["catheter_nl"] == 200_000
    rc, out, err = pump.pumpctl(capsys, "catheter", "--segments", "500mm:120uL,300mm:80uL", "--yes")
    assert rc == 0 and "catheter revision recorded: 0.2000 mL, not primed" in out, err
    assert "next: pumpctl prime --volume 0.2mL --over 25min" in out
    assert real_requests(sent, lc.IMPLANT) == [{"step": "catheter", "segments": [[500, 120_000], [300, 80_000]]}]
    rc, out, _ = pump.pumpctl(capsys, "status")
    assert "catheter primed  NO" in out
    rc, _, err = pump.pumpctl(capsys, "prime", "--volume", "0.25mL", "--over", "25min", "--yes")
    assert rc == cli.EXIT_REFUSED and "(priming_volume)" in err and "0.22 mL" in err, err
    rc, out, _ = pump.pumpctl(capsys, "prime", "--volume", "0.22mL", "--over", "25min")
    assert rc == cli.EXIT_CANCELLED and "0.2000 mL, not primed" in out and "440 strokes" in out
    assert "beyond the catheter  0.0200 mL = 0.2 mg of morphine" in out, out
    rc, out, err = pump.pumpctl(capsys, "prime", "--volume", "0.2mL", "--over", "25min", "--yes")
    assert rc == 0 and "priming started: 400 strokes" in out, err
    pump.bench("advance", ms=26 * MIN_MS)
    rc, out, _ = pump.pumpctl(capsys, "status")
    assert "catheter primed  yes" in out
    rc, _, err = pump.pumpctl(capsys, "prime", "--volume", "0.1mL", "--over", "25min", "--yes")
    assert rc == cli.EXIT_REFUSED and "(catheter_primed)" in err and "hidden dose" in err


def test_a_catheter_revision_during_a_bridge_ends_the_bridge(pump, capsys):
    # The demonstration pump's catheter holds morphine; then hydromorphone: the bridge runs.
    remaining = "%gmL" % (pump.call(lc.STATUS)["remaining_nl"] / 1e6)
    rc, _, err = pump.pumpctl(capsys, "refill", "--withdrawn", remaining, "--added", "18mL", "--drug", "hydromorphone",
                              "--conc", "10mg/mL", "--dose", "1mg/day", "--yes")
    assert rc == 0 and pump.therapy()["bridging"], err
    rc, out, _ = pump.pumpctl(capsys, "program", "--drug", "hydromorphone", "--conc", "10mg/mL", "--dose", "2mg/day",
                              "--dry-run")
    assert rc == 0 and "A bridge bolus is running: the catheter's earlier drug goes out first" in out, out
    rc, out, _ = pump.pumpctl(capsys, "catheter", "--segments", "500mm:120uL", "--yes")
    assert rc == 0 and "bridge bolus      ends: the old catheter takes the earlier drug with it" in out, out
    pump.bench("advance", ms=MIN_MS)
    assert not pump.therapy()["bridging"]
    assert of_type(pump.log(), events.BRIDGE_DONE)


# -- 2. refill and program reviews mark what changes ---------------------------------------------
def test_refill_review_names_the_drug_added_and_marks_a_concentration_change(pump, capsys):
    remaining = pump.call(lc.STATUS)["remaining_nl"]
    withdrawn = "%gmL" % (remaining / 1e6)
    rc, out, _ = pump.pumpctl(capsys, "refill", "--withdrawn", withdrawn, "--added", "18mL")
    assert rc == cli.EXIT_CANCELLED
    assert "18.000 mL of morphine 10 mg/mL" in out and "the same as in the pump" in out, out
    assert "CHANGE" not in out
    assert pump.pumpctl(capsys, "bolus", "--dose", "1mg", "--over", "30min", "--yes")[0] == 0
    rc, out, _ = pump.pumpctl(capsys, "refill", "--withdrawn", withdrawn, "--added", "18mL", "--drug", "morphine",
                              "--conc", "20mg/mL", "--dose", "4mg/day")
    assert rc == cli.EXIT_CANCELLED
    assert "18.000 mL of morphine 20 mg/mL" in out and "CONCENTRATION CHANGE" in out, out
    assert "was morphine 10 mg/mL" in out and "<< CONCENTRATION CHANGE" in out
    assert "CANCELLED by the change" in out  # the running 1 mg bolus was for 10 mg/mL
    rc, out, err = pump.pumpctl(capsys, "refill", "--withdrawn", withdrawn, "--added", "18mL", "--drug", "morphine",
                                "--conc", "20mg/mL", "--dose", "4mg/day", "--yes")
    assert rc == 0 and "drug or concentration changed" in out and "bolus was cancelled" in out, err
    assert pump.call(lc.STATUS)["bolus"] is None


def test_program_review_marks_the_rows_that_change(pump, capsys):
    rc, out, _ = pump.pumpctl(capsys, "program", "--drug", "morphine", "--conc", "10mg/mL", "--step",
                              "00:00=10mg/day", "--step", "08:00=5mg/day")
    assert rc == cli.EXIT_CANCELLED
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert rows["basal from 08:00"].endswith("<< changed") and not rows["basal from 00:00"].endswith("changed")
    assert not rows["drug"].endswith("changed")


# -- 2. status and alarms: the new keys and alarms -------------------------------------------------
def test_status_shows_the_24_hour_ceiling_and_json_carries_the_new_keys(pump, capsys):
    pump.bench("advance", ms=12 * 60 * MIN_MS)
    st = pump.call(lc.STATUS)
    rc, out, _ = pump.pumpctl(capsys, "status")
    assert rc == 0 and "given in the last 24 h: %s mg of 20 mg/day" % format(st["ceiling_24h_ng"] / 1e6, "g") in out
    assert "catheter primed  yes" in out and "UNCERTAIN" not in out
    rc, out, _ = pump.pumpctl(capsys, "status", "--json")
    data = json.loads(out)["status"]
    for key in ("ceiling_24h_ng", "catheter_primed", "clock_uncertain", "fault"):
        assert key in data


def test_clock_uncertain_after_an_unclean_reset_says_what_to_do(pump, capsys):
    pump.bench("advance", ms=10 * MIN_MS)
    pump.emu.kill()  # the power dies
    pump.emu.start()
    rc, out, _ = pump.pumpctl(capsys, "status")
    assert rc == 0 and "UNCERTAIN (after an unclean reset" in out and "pumpctl clock --set now" in out, out
    assert "clock-uncertain" in out
    rc, out, _ = pump.pumpctl(capsys, "alarms")
    assert "clock-uncertain (id 13)" in out and "non-critical" in out and "set the pump clock" in out, out
    assert "831 Hz 1 s, every 1 h" in out
    assert pump.pumpctl(capsys, "clock", "--set", "2030-01-02T03:04:05", "--yes")[0] == 0
    rc, out, _ = pump.pumpctl(capsys, "status")
    assert "UNCERTAIN" not in out and "alarms           none" in out


def test_uncommanded_motion_alarm_on_screen_and_acknowledged_by_its_name(pump, capsys):
    pump.bench("spin", strokes=1)
    pump.bench("advance", ms=MIN_MS)
    rc, out, _ = pump.pumpctl(capsys, "alarms")
    assert rc == 0 and "uncommanded-motor-motion (id 12)" in out, out
    assert "critical, therapy stopped" in out and "pumpctl resume" in out and "1319/659 Hz 3 s, every 5 min" in out
    rc, out, _ = pump.pumpctl(capsys, "alarms", "--json")
    a = json.loads(out)["alarms"][0]
    assert a["id"] == alarms.UNCOMMANDED_MOTION and a["name"] == "uncommanded-motor-motion"
    assert a["raised_at"] and a["priority"] == "critical, therapy stopped" and "resume" in a["what_to_do"]
    for name in ("uncommanded-motor-motion", "uncommanded motor motion", "12"):
        rc, out, err = pump.pumpctl(capsys, "alarms", "--ack", name)
        assert rc == 0 and "acknowledged uncommanded-motor-motion" in out, (name, err)
    rc, out, _ = pump.pumpctl(capsys, "log")
    assert "alarm raised" in out and "uncommanded-motor-motion" in out
    rc, out, _ = pump.pumpctl(capsys, "log", "--json")
    raised = [r for r in json.loads(out)["records"] if r["event"] == "alarm raised"]
    assert raised[-1]["details"] == "uncommanded-motor-motion" and raised[-1]["a"] == alarms.UNCOMMANDED_MOTION


def test_status_with_an_unreadable_battery_is_still_shown(pump, capsys):
    pump.bench("fault")  # the battery ADC read starts failing
    rc, out, err = pump.pumpctl(capsys, "status")
    assert rc == 0 and "battery" in out and "Traceback" not in err, err


def test_a_flash_that_refuses_writes_refuses_the_change_and_therapy_continues(pump, capsys):
    # Hazard 7 of issue 12 through the bench: the flash chip starts refusing writes.
    before = pump.therapy()["rx"]
    assert pump.bench("flash_fault", on=True)["failing"] is True
    rc, _, err = pump.pumpctl(capsys, "program", "--drug", "morphine", "--conc", "10mg/mL",
                              "--dose", "12mg/day", "--yes")
    assert rc == cli.EXIT_REFUSED and "(flash_fault)" in err and "Traceback" not in err, err
    assert pump.therapy()["rx"] == before
    st = pump.bench("advance", ms=60 * MIN_MS)
    assert st["state"] == "delivering" and "flash fault" in st["alarms"], st
    assert st["strokes"] >= 80  # 1 mL/day goes on: ~83 strokes an hour
    pump.bench("flash_fault", on=False)
    st = pump.bench("advance", ms=60 * MIN_MS)
    assert "flash fault" not in st["alarms"], st


def test_a_suspend_the_flash_cannot_save_stops_delivery_and_says_it_is_not_saved(pump, capsys):
    # A clinician can always stop the pump; the programmer says what a reset would undo.
    pump.bench("flash_fault", on=True)
    rc, out, err = pump.pumpctl(capsys, "suspend", "--yes")
    assert rc == 0 and "pump suspended" in out and "could not save it" in out and "Traceback" not in err, (out, err)
    before = pump.bench("status")["strokes"]
    st = pump.bench("advance", ms=60 * MIN_MS)
    assert st["strokes"] == before and st["state"] == "suspended", st
    rc, out, err = pump.pumpctl(capsys, "alarms", "--ack", "flash-fault")
    assert rc == 0 and "acknowledged flash-fault: yes, but not saved" in out, (out, err)
