"""The implant test when its priming is interrupted: a power cut while
pumpctl waits, a priming a reset cut short, and the resumed review
(pumpctl.commands.implant; docs/pumpctl.md section 9, docs/persistence.md)."""
import socket
import threading

import pytest

from pumpctl.commands import implant
from pumpctl.fw import events
from pumpctl.fw import link_commands as lc
from pumpctl.link import LinkError

PRIMING = 4  # firmware/scheduler.py KIND_PRIMING


class FakePump:
    """Answers STATUS from a list (the last one repeats), IMPLANT steps from
    `implant_replies`, and LOG_READ from `log`."""

    def __init__(self, statuses, log=(), implant_replies=()):
        self.statuses, self.log, self.implant_replies = list(statuses), list(log), list(implant_replies)
        self.sent = []
        self.context = {}

    def request(self, mtype, payload=None):
        self.sent.append((mtype, payload))
        if mtype == lc.STATUS:
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if mtype == lc.IMPLANT:
            return self.implant_replies.pop(0)
        raise AssertionError("unexpected request %r" % mtype)


def status(primed, bolus=None, alarms=()):
    return {"catheter_primed": primed, "bolus": bolus, "alarms": list(alarms), "day": 20000, "tod_s": 0}


class StillClock:
    def wait(self, seconds):
        pass

    def observe(self, st):
        pass


@pytest.fixture
def log_of(monkeypatch):
    def install(recs):
        def read_log(c, first=1, last=None, show_progress=False):
            return list(recs), {"first_seq": 1, "last_seq": len(recs) or 0, "dropped": 0}
        monkeypatch.setattr(implant, "read_log", read_log)
        monkeypatch.setattr(FakePump, "request", _with_log_info(FakePump.request, recs))
    return install


def _with_log_info(request, recs):
    def wrapped(self, mtype, payload=None):
        if mtype == lc.LOG_READ:
            return {"first_seq": 1, "last_seq": len(recs)}
        return request(self, mtype, payload)
    return wrapped


def delivered(strokes, taken_off):
    return (7, 20000, 600, events.BOLUS_DELIVERED, PRIMING, strokes, taken_off, 0, b"")


def test_a_bench_port_that_resets_while_pumpctl_advances_time_is_a_lost_link(tmp_path):
    path = str(tmp_path / "bench.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def power_cut():  # the emulator goes away with the request unanswered
        conn, _ = srv.accept()
        conn.recv(100)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()
    t = threading.Thread(target=power_cut)
    t.start()
    try:
        with pytest.raises(LinkError, match="bench port .* stopped answering"):
            implant.TimeSource(path).wait(60)
    finally:
        t.join()
        srv.close()


def test_a_priming_a_reset_cut_short_is_finished_in_the_same_run(log_of):
    log_of([delivered(368, 32)])
    c = FakePump([status(False), status(False), status(True)],
                 implant_replies=[{"strokes": 32, "volume_nl": 16000}])
    lines = []
    implant.run_implant(c, [("prime_wait", {"strokes": 400, "duration_s": 1800, "prime_s": 1800})], StillClock(),
                        lines.append)
    assert [p for t, p in c.sent if t == lc.IMPLANT] == [{"step": "prime", "duration_s": 1800}]
    assert any("a reset during it took them off its plan" in line for line in lines)
    assert lines[-1].split() == ["priming", "done"]


def test_a_priming_that_ended_short_without_an_alarm_does_not_ask_to_clear_one(log_of):
    log_of([delivered(368, 32)])
    with pytest.raises(implant.ImplantFailed) as e:
        implant._primed(FakePump([status(False)]), "priming")
    assert "clear the alarm" not in e.value.reason and "alarms: none" not in e.value.reason
    assert "a reset during it (a power loss) took up to 32 strokes off its plan" in e.value.reason
    assert "go on with the same command and --resume (it primes what is left)" in e.value.reason


def test_a_priming_stopped_by_an_alarm_still_asks_to_clear_it(log_of):
    log_of([delivered(200, 0)])
    with pytest.raises(implant.ImplantFailed, match=r"alarms: occlusion\): resolve the cause, clear the alarm"):
        implant._primed(FakePump([status(False, alarms=[2])]), "priming")


def test_the_resumed_review_does_not_call_a_priming_under_way_done_before():
    passed = ["identity", "catheter", "fill", "prime"]
    assert implant._done_before(passed, ["prime_wait", "motor_test", "alarm_test", "start"]) == \
        ["identity", "catheter", "fill"]
    assert implant._done_before(passed, ["motor_test", "alarm_test", "start"]) == passed


def test_the_implant_review_shows_the_demand_bolus_duration_volume_and_lockout():
    rx = {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 2_000_000]], "demand": [100_000, 600, 3600, 4]}
    assert implant.rx_summary(rx).endswith("demand 0.1 mg over 10 min (0.010 mL), lockout 1 h, max 4/24 h")
