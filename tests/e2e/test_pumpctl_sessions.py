"""Issue #13 finding 9: a review left open, a second programmer on the port,
pumpctl commands run side by side."""
import subprocess
import sys
import threading

import serial

from linkkit import of_type
from pumpctl import console, link
from pumpctl.fw import events, link_commands as lc


def _pause_at_the_review(monkeypatch, during):
    """The clinician confirms only after `during()` (the pump's time goes on meanwhile)."""
    real = console.confirm

    def late_confirm(args, question):
        during()
        return real(args, question)
    monkeypatch.setattr(console, "confirm", late_confirm)


def test_a_review_left_open_past_the_session_idle_time_logs_in_again_and_sends(pump, capsys, monkeypatch):
    _pause_at_the_review(monkeypatch, lambda: pump.bench("advance", ms=(lc.IDLE_TIMEOUT_S + 10) * 1000))
    rc, _, err = pump.pumpctl(capsys, "suspend", "--yes")
    assert rc == 0, err
    assert "logging in again" in err and "NOT_AUTHENTICATED" not in err
    assert pump.call(lc.STATUS)["state"] == "suspended"


def test_a_review_whose_figures_changed_meanwhile_is_not_sent(pump, capsys, monkeypatch):
    # An hour at the review: strokes were delivered, so the reservoir the
    # refill review showed is no longer the pump's.
    _pause_at_the_review(monkeypatch, lambda: pump.bench("advance", ms=3_600_000))
    before = len(of_type(pump.log(), events.REFILL))
    rc, _, err = pump.pumpctl(capsys, "refill", "--withdrawn", "1mL", "--added", "10mL", "--yes",
                              "--accept-discrepancy")
    assert rc == console.EXIT_CANCELLED, err
    assert "changed while the review was open" in err and "nothing sent" in err
    assert len(of_type(pump.log(), events.REFILL)) == before


def test_a_session_is_stale_by_this_computers_clock_before_the_pump_ends_it(pump):
    c = pump.client("clinician")
    try:
        assert c.idle_s == lc.IDLE_TIMEOUT_S and not c.session_stale()
        c.last_exchange -= lc.IDLE_TIMEOUT_S - c.STALE_MARGIN_S - 5
        assert not c.session_stale()
        c.last_exchange -= 10
        assert c.session_stale()
        c.relogin()
        assert not c.session_stale() and c.request(lc.STATUS)["state"]
    finally:
        c.close()


def test_a_held_port_is_busy_with_what_to_do(pump, capsys, monkeypatch):
    monkeypatch.setattr(link, "BUSY_WAIT_S", 0.3)
    with serial.Serial(pump.port, exclusive=True):
        rc, _, err = pump.pumpctl(capsys, "status")
    assert rc == console.EXIT_LINK
    assert "in use by another program" in err and "retry" in err and "Traceback" not in err


def test_a_port_freed_within_the_wait_is_used(pump, capsys):
    held = serial.Serial(pump.port, exclusive=True)
    threading.Timer(1.0, held.close).start()
    rc, out, err = pump.pumpctl(capsys, "status")
    assert rc == 0, err


def test_four_status_commands_at_once_all_answer(pump):
    cmd = [sys.executable, "-m", "pumpctl", "status", "--port", pump.port, "--keystore", str(pump.keystore)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [rc for rc, _ in results] == [0, 0, 0, 0], results
