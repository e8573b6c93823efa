"""Issue #15 finding 7, the host's side: pumpctl killed with a therapy
command sent and unanswered. The next command to that pump says, from the
pump's audit record, whether it was carried out; it never sends it again."""
import pytest

from pumpctl import link
from pumpctl.fw import events, link_commands as lc

PROGRAM = ["program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "6mg/day", "--yes"]


class Killed(BaseException):
    """pumpctl's process ending at once (SIGKILL): nothing after it runs."""


def kill_at_program(monkeypatch, after_sending):
    real = link.Client.request

    def request(self, mtype, payload=None):
        if mtype == lc.PROGRAM and not (isinstance(payload, dict) and payload.get("check")):
            if after_sending:
                real(self, mtype, payload)
            raise Killed()
        return real(self, mtype, payload)
    monkeypatch.setattr(link.Client, "request", request)


def programmed(pump):
    return [r for r in pump.log() if r[3] == events.THERAPY_PROGRAMMED]


@pytest.mark.parametrize("after_sending, says", [(True, "was carried out"), (False, "never reached the pump")])
def test_the_next_command_says_what_became_of_a_command_pumpctl_died_sending(pump, capsys, monkeypatch,
                                                                               after_sending, says):
    before = len(programmed(pump))
    kill_at_program(monkeypatch, after_sending)
    with pytest.raises(Killed):
        pump.pumpctl(capsys, *PROGRAM)
    monkeypatch.undo()
    rc, _, err = pump.pumpctl(capsys, "status")
    assert rc == 0 and ("program command" in err and says in err), err
    assert len(programmed(pump)) == before + (1 if after_sending else 0)  # never sent again
    rc, _, err = pump.pumpctl(capsys, "status")
    assert "got no answer" not in err  # said once


def test_an_answered_command_leaves_nothing_to_report(pump, capsys):
    assert pump.pumpctl(capsys, *PROGRAM)[0] == 0
    rc, _, err = pump.pumpctl(capsys, "status")
    assert rc == 0 and "got no answer" not in err
