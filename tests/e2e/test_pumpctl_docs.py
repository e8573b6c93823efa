"""docs/pumpctl.md works as written: every `pumpctl` command of its sections
4 to 9 (look, program, boluses and priming, refill, alarms and clock, log and
diary), in order, on a fresh emulated pump (virtual time, advanced between
commands as a clinic's day would be), succeeds."""
import datetime
import re
import shlex

from pumpctl import paths
from test_pumpctl_user import MadeRun

DOC = paths.ROOT / "docs" / "pumpctl.md"
REVIEWED = {"program", "bolus", "prime", "catheter", "suspend", "resume", "refill", "clock", "low-threshold",
            "alarm-date", "alarms", "maintenance", "visit", "implant"}
# Pump time after a command (a running bolus ends before the next one).
AFTER_MIN = {"bolus": 31, "prime": 26, "demand": 6}


def doc_commands(first="## 4.", last="## 9a."):
    text = DOC.read_text()
    text = text[text.index(first):text.index(last)]
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "pumpctl":
                cmds.append(argv[1:])
    return cmds


def test_the_docs_name_the_commands_this_test_runs():
    names = [c[0] for c in doc_commands()]
    for name in ("program", "bolus", "catheter", "prime", "demand", "refill", "alarms", "clock", "log", "diary"):
        assert name in names, name
    # Priming follows a catheter revision (the demonstration pump's catheter is primed).
    assert names.index("catheter") < names.index("prime")


def _confirmations(argv):
    # What a clinician types at the review ('y', and "acknowledge" at a discrepancy).
    extra = []
    if argv[0] in REVIEWED and "--yes" not in argv and (argv[0] != "clock" or "--set" in argv) \
            and (argv[0] != "alarms" or "--ack" in argv):
        extra.append("--yes")
    if argv[0] == "refill":
        extra.append("--accept-discrepancy")  # the withdrawn volumes are examples
    return extra


def _dated(argv):
    # A reminder date must come after the pump's date, which the guide sets
    # to this computer's (`clock --set now`): its example date is moved to
    # 90 days from today, the rest of the command as written.
    if argv[0] == "alarm-date" and argv[1] != "off":
        return ["alarm-date", (datetime.date.today() + datetime.timedelta(days=90)).isoformat()] + argv[2:]
    return argv


def test_every_command_of_the_guide_works_as_written_on_make_runs_emulator(tmp_path):
    # `make run EMULATE=--virtual`'s own command; each command of the guide a
    # process of its own, as typed; pump time moved on with `pumpctl advance`.
    made = MadeRun(tmp_path, emulate=["--virtual"])
    try:
        # The pump starts at this computer's time; the guide's noon periodic
        # bolus would then run into its demand press when the test runs late
        # in the morning. Its commands run from 06:00 of the pump's day.
        morning = made.pumpctl("clock", "--set", "%sT06:00" % datetime.date.today(), "--yes")
        assert morning.returncode == 0, morning.stderr
        for argv in doc_commands():
            argv = _dated(argv)
            done = made.pumpctl(*argv, *_confirmations(argv))
            assert done.returncode == 0, (argv, done.stdout, done.stderr)
            assert "Traceback" not in done.stderr
            if argv[0] in AFTER_MIN:
                moved = made.pumpctl("advance", "%dmin" % AFTER_MIN[argv[0]])
                assert moved.returncode == 0, moved.stderr
    finally:
        made.stop()
