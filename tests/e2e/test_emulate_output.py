"""Issue #13 finding 15: `pumpctl emulate` keeps reading the emulator after
it started. What it prints later (a traceback) is shown and kept in
emulator.log, and an emulator that stops by itself is reported with why."""
import os
import subprocess
import sys
import time
from pathlib import Path

from pumpctl import paths
from pumpctl.bench import BenchClient

CRASH = "MemoryError: memory allocation failed"


def _crashing_runtime(tmp_path):
    # The real unix port; when the pump stops, a traceback, as a crashed board prints it.
    script = tmp_path / "micropython"
    script.write_text("#!/bin/sh\n\"%s\" \"$@\"\necho 'Traceback (most recent call last):'\n"
                      "echo '  File \"main.py\", line 1, in <module>'\necho '%s'\nexit 1\n"
                      % (paths.micropython(), CRASH))
    script.chmod(0o755)
    return script


def _emulate(tmp_path, env):
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "pumpctl", "emulate", "--virtual", "--no-status",
                             "--state", str(state), "--keystore", str(tmp_path / "keys.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C stops it"):
            return proc, state, lines
    raise AssertionError("emulate did not start:\n" + "".join(lines))


def test_an_emulator_that_stops_by_itself_is_reported_with_its_last_message(tmp_path):
    env = dict(os.environ, MICROPYTHON=str(_crashing_runtime(tmp_path)))
    proc, state, lines = _emulate(tmp_path, env)
    with BenchClient(str(state / "bench.sock")) as b:
        b.call("shutdown")  # the pump process ends without pumpctl asking
    out, _ = proc.communicate(timeout=60)
    text = "".join(lines) + out
    assert proc.returncode == 3, text
    assert "emulator: " + CRASH in text
    assert "stopped by itself (exit status 1: %s)" % CRASH in text and "emulator.log" in text
    assert CRASH in (state / "emulator.log").read_text()


def test_the_emulators_output_file_is_named_at_start(tmp_path):
    proc, state, lines = _emulate(tmp_path, dict(os.environ))
    try:
        assert any("output:" in line and "emulator.log" in line for line in lines)
        time.sleep(0.5)
        assert (state / "emulator.log").exists()
    finally:
        proc.send_signal(2)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_an_emulator_killed_by_a_signal_is_reported_as_an_unclean_stop(tmp_path):
    proc, state, lines = _emulate(tmp_path, dict(os.environ))
    children = (Path("/proc") / str(proc.pid) / "task" / str(proc.pid) / "children").read_text().split()
    assert len(children) == 1, children  # the emulator process
    os.kill(int(children[0]), 9)  # the emulated board's power cut
    out, _ = proc.communicate(timeout=60)
    text = "".join(lines) + out
    assert proc.returncode == 3, text
    assert "stopped by itself (killed by SIGKILL: an unclean stop, as a power cut)" in text, text
    assert "exit status -9" not in text


def test_a_bench_power_cut_is_reported_as_a_stop_without_saving(tmp_path):
    proc, state, lines = _emulate(tmp_path, dict(os.environ))
    with BenchClient(str(state / "bench.sock")) as b:
        try:
            b.call("power_cut")
        except (OSError, RuntimeError):
            pass  # no reply: the power is gone
    out, _ = proc.communicate(timeout=60)
    text = "".join(lines) + out
    assert proc.returncode == 3, text
    assert "power cut (bench power_cut): nothing saved since the last checkpoint" in text, text
    assert "the next start (`make run`) is a power-on after a power loss" in text
    assert "Its state is on flash" not in text
