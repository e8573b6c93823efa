"""Issue 15, findings 1 and 3, through the emulated pump's pty: refused
attempts on therapy are audited one by one whatever garbage came before, and
a flood of refused presses is stored as a count that pumpctl reads back."""
import pytest

from linkkit import Raw, of_type
from pumpctl.fw import events, link_commands as lc, wire

RX = {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 4_000_000]]}


def test_patient_attempts_on_therapy_after_garbage_each_leave_an_audit_record(pump, capsys):
    c = pump.client("patient")
    raw = Raw(c)
    for _ in range(8):  # uses up the refusal records' burst
        raw.send(b"\x05hello\x00")
        assert raw.replies()[0][0] == wire.MSG_ERROR
    attempts = ((lc.PROGRAM, {"rx": RX}), (lc.BOLUS, {"dose_ng": 1_000_000, "duration_s": 600}),
                (lc.SUSPEND, None), (lc.SET_CLOCK, {"day": 1, "tod_s": 0}))
    for mtype, args in attempts:
        with pytest.raises(Exception) as e:
            c.request(mtype, args)
        assert getattr(e.value, "code", None) == wire.FORBIDDEN
    c.close()
    audits = [r for r in of_type(pump.log(), lc.EV_COMMAND) if r[4] == wire.ROLE_PATIENT]
    assert [(r[6], r[7], r[8]) for r in audits] == [
        (m, wire.FORBIDDEN, lc.COMMANDS[m][0].encode()) for m, _ in attempts]
    rc, out, _ = pump.pumpctl(capsys, "log")
    assert rc == 0 and out.count("patient, session") >= 4 and "command suspend" in out


def test_a_flood_of_refused_presses_is_one_count_that_pumpctl_reads(pump, capsys):
    c = pump.client("patient")
    refused = 0
    for _ in range(200):  # no demand bolus prescribed: every press refused
        with pytest.raises(Exception) as e:
            c.request(lc.DEMAND)
        refused += getattr(e.value, "code", None) == wire.LIMIT
    c.close()
    assert refused == 200
    pump.bench("advance", ms=3_600_000)  # the clock hour ends: its counts are written
    log = pump.log()
    presses = of_type(log, events.BOLUS_REQUESTED)
    counts = [r for r in of_type(log, events.REPEATED) if r[4] == events.BOLUS_REQUESTED]
    assert len(presses) == 2 and [r[5] for r in counts] == [198]
    assert len(of_type(log, events.BOLUS_REFUSED)) == 2 and len(log) < 40
    rc, out, _ = pump.pumpctl(capsys, "log")
    assert rc == 0 and "198 more: bolus requested (demand)" in out
    assert "198 more: demand from the patient refused: LIMIT" in out
