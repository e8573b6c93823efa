"""pumpctl as a user meets it (issue 13): the emulator started with exactly
the command `make run` uses, then pumpctl as separate processes from other
directories, at a terminal (a pty) and with its pipes closed. Findings 1
(`make run` then `pumpctl status` from anywhere), 6 (one emulator per state)
and 4 (no traceback for any interruption or closed pipe)."""
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pumpctl import cli, paths
from pumpctl import session

ROOT = paths.ROOT
BIN = Path(sys.executable).parent
PROGRAM = ["program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "4mg/day"]


def make_run_command(emulate=()):
    """The recipe of `make run`, read from the Makefile, with $(BIN) resolved
    and $(EMULATE) (`make run EMULATE=--virtual`) the options given."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("run:"))
    recipe = [line.strip() for line in lines[i + 1:] if line.startswith("\t")][:1]
    assert recipe, "no recipe for `make run`"
    words = recipe[0].replace("$(BIN)", str(BIN)).split()
    return [w for w in words if w != "$(EMULATE)"] + list(emulate)


class MadeRun:
    """`make run`'s emulator on a state folder of its own ($PUMPCTL_STATE, so
    a developer's run/ is never touched) and a key store of its own."""

    def __init__(self, tmp, emulate=()):
        self.tmp = tmp
        self.state = tmp / "run"
        self.env = dict(os.environ, PUMPCTL_STATE=str(self.state), PUMPCTL_KEYSTORE=str(tmp / "keys.json"))
        self.env.pop(cli.DEBUG_ENV, None)
        self.command = make_run_command(emulate)
        self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=self.env)
        self.lines = []
        deadline = time.monotonic() + 60
        while not self.lines or "Ctrl-C stops it" not in self.lines[-1]:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("make run's emulator did not start: %r %s" % (self.lines, self.proc.stderr.read()))
            self.lines.append(line)
        self.port = self.shown("serial port")
        # The live status line goes on: read it so the pipe never fills.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def shown(self, label):
        return next(line.split(": ", 1)[1].strip() for line in self.lines if line.strip().startswith(label))

    def pumpctl(self, *argv, cwd=None, timeout=60, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.run([str(BIN / "pumpctl"), *argv], cwd=cwd or self.tmp, env=self.env, text=True,
                              timeout=timeout, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    m = MadeRun(tmp_path_factory.mktemp("make-run"))
    yield m
    m.stop()


def one_clear_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("pumpctl: "), err
    return lines[0]


def therapy(made):
    out = made.pumpctl("interrogate", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["therapy"]


# -- finding 1 ---------------------------------------------------------------------------------
def test_make_run_uses_pumpctls_default_state():
    cmd = make_run_command()
    assert cmd[:2] == [str(BIN / "pumpctl"), "emulate"] and "--state" not in cmd, cmd


def test_make_run_then_status_from_any_directory(made, tmp_path):
    for cwd in (ROOT, ROOT / "docs", ROOT / "host_tools" / "pumpctl", tmp_path):
        out = made.pumpctl("status", cwd=cwd)
        assert out.returncode == 0 and "delivering" in out.stdout, (cwd, out.stderr)
    # The folder holds what the README says, and the emulator names it.
    for name in ("flash.img", "bench.sock", "port.json", "emulator.lock"):
        assert (made.state / name).exists(), name
    assert Path(made.shown("flash image")) == made.state / "flash.img"
    assert Path(made.shown("bench port")) == made.state / "bench.sock"
    assert json.loads((made.state / "port.json").read_text())["port"] == made.port


# -- finding 6 ---------------------------------------------------------------------------------
def test_a_second_emulator_on_the_same_state_is_refused_and_the_first_keeps_running(made):
    record = (made.state / "port.json").read_text()
    second = subprocess.run(made.command, cwd=ROOT, env=made.env, capture_output=True, text=True, timeout=60)
    assert second.returncode == cli.EXIT_LINK
    line = one_clear_line(second.stderr)
    assert "already running" in line and "pid %d" % made.proc.pid in line and made.port in line, line
    assert (made.state / "port.json").read_text() == record  # untouched
    out = made.pumpctl("status", "--port", "auto")
    assert out.returncode == 0 and "delivering" in out.stdout, out.stderr
    # `--port emulator` on the same state is refused the same way.
    out = made.pumpctl("status", "--port", "emulator")
    assert out.returncode == cli.EXIT_LINK and "already running" in one_clear_line(out.stderr)
    assert made.proc.poll() is None


# -- finding 4: interruptions at a prompt, closed pipes ------------------------------------------
def at_terminal(made, argv, prompt, answer):
    """pumpctl with a terminal (pty) on stdin and stdout; at `prompt`,
    answer(proc, master). Returns (exit code, stderr, terminal output)."""
    master, slave = os.openpty()
    proc = subprocess.Popen([str(BIN / "pumpctl"), *argv], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                            env=made.env, cwd=made.tmp, text=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while prompt.encode() not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, (seen, proc.poll())
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 4096)
        answer(proc, master)
        deadline = time.monotonic() + 30
        while proc.poll() is None:  # reading what it still writes to the terminal
            assert time.monotonic() < deadline, ("no exit after the answer", seen)
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    pass
        rc = proc.returncode
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return rc, err, seen.decode(errors="replace")


def ctrl_c(proc, master):
    # A pause first: the prompt is written just before input() starts
    # reading, and a SIGINT landing in between is only seen by CPython's
    # readline once a key arrives (the flag is set, its select() never
    # interrupted). A person cannot hit that microsecond; a test can.
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)


def ctrl_d(proc, master):
    os.write(master, b"\x04")


PROMPTS = {
    "review": (PROGRAM, "Program this therapy? [y/N]"),
    "acknowledge": (["refill", "--withdrawn", "1mL", "--added", "20mL"], "Type 'acknowledge'"),
}


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("key,rc,says", [(ctrl_c, cli.EXIT_INTERRUPTED, "interrupted at the prompt: nothing changed"),
                                         (ctrl_d, cli.EXIT_CANCELLED, "end of input): nothing changed")],
                         ids=["ctrl-c", "ctrl-d"])
def test_ctrl_c_and_ctrl_d_at_a_prompt(made, prompt, key, rc, says):
    before = therapy(made)
    argv, text = PROMPTS[prompt]
    got, err, screen = at_terminal(made, argv, text, key)
    if prompt == "acknowledge":  # the discrepancy warning comes first, on stderr
        assert err.startswith("WARNING: withdrawn 1.000 mL"), err
        err = err.split("\n", 1)[1]
    assert got == rc and says in one_clear_line(err), (got, err, screen)
    assert therapy(made) == before


def test_closed_stdin_cancels(made):
    # `<&-`: no standard input at all (not even /dev/null).
    out = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", str(BIN / "pumpctl"), *PROGRAM], env=made.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == cli.EXIT_CANCELLED and "--yes" in one_clear_line(out.stderr), out.stderr


def test_closed_stdout_pipe_exits_quietly(made):
    # `pumpctl log | head` after head has gone: the pipe's reader is closed before anything is written.
    r, w = os.pipe()
    os.close(r)
    try:
        out = made.pumpctl("log", stdout=w)
    finally:
        os.close(w)
    assert out.returncode == cli.EXIT_PIPE and out.stderr == "", out.stderr


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("log", "--csv", "-")])
def test_output_to_a_full_disk_is_one_clear_line(made, args):
    # /dev/full: every write fails with ENOSPC, as on a full disk.
    with open("/dev/full", "w") as full:
        out = made.pumpctl(*args, stdout=full)
    assert out.returncode == cli.EXIT_OUTPUT, out.stderr
    assert "could not write the output (No space left on device)" in one_clear_line(out.stderr)


def test_a_key_store_that_never_ends_is_refused_at_once(made):
    out = made.pumpctl("status", "--keystore", "/dev/zero", timeout=30)
    assert out.returncode == cli.EXIT_AUTH and "not a regular file" in one_clear_line(out.stderr)


def test_emulate_with_a_prescription_the_pump_refuses(tmp_path):
    rx = {"drug": "morphine", "conc_ng_ml": 10_000_000, "steps": [{"start_s": 0, "dose_ng_day": 300_000_000}]}
    out = subprocess.run([str(BIN / "pumpctl"), "emulate", "--state", str(tmp_path / "s"), "--prescription",
                          json.dumps(rx)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PUMPCTL_KEYSTORE=str(tmp_path / "k.json")))
    line = one_clear_line(out.stderr)
    assert out.returncode == cli.EXIT_INPUT and "--prescription" in line and "mL/day" in line, line
    assert " nL" not in line and " ng" not in line
    assert not (tmp_path / "s" / "port.json").exists()


def test_ctrl_c_during_a_scenario_leaves_nothing_that_blocks_a_rerun(tmp_path):
    sc = json.loads((ROOT / "examples" / "morphine-first-quarter.json").read_text())
    sc["steps"] = sc["steps"][:1] + [{"step": "days", "days": 3650}]  # implant, then ten years: interrupted
    path = tmp_path / "sc.json"
    path.write_text(json.dumps(sc))
    state = tmp_path / "state"
    argv = [str(BIN / "pumpctl"), "scenario", str(path), "--state", str(state), "--report-dir", str(tmp_path / "r")]
    env = dict(os.environ)
    env.pop(cli.DEBUG_ENV, None)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out = []
        while not out or "== step 2" not in out[-1]:
            out.append(proc.stdout.readline())
            assert out[-1], "scenario ended early: %s %s" % (out, proc.stderr.read())
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == cli.EXIT_INTERRUPTED and "interrupted" in one_clear_line(err), err
    assert not state.exists() or not any(state.iterdir()), list(state.iterdir())
    # The rerun on the same state folder starts.
    path.write_text(json.dumps({"steps": [{"step": "days", "hours": 1}]}))
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and "scenario complete" in again.stdout, again.stdout + again.stderr


# -- finding 8: a refusal in the drug's own unit -----------------------------------------------------
def test_a_bolus_refusal_on_a_ziconotide_pump_speaks_micrograms(tmp_path, capsys):
    from pumpctl.emulator import Emulator
    from pumpctl.keystore import KeyStore
    from pumpctl.link import Client, open_port
    rx = {"drug": "ziconotide", "conc_ng_ml": 100_000, "steps": [{"start_s": 0, "dose_ng_day": 12_000}]}
    ks = str(tmp_path / "k.json")
    with Emulator(tmp_path / "p", virtual=True, prescription=rx) as emu:
        c = Client(open_port(emu.port))
        try:
            session.provision_if_new(c, KeyStore(ks))
        finally:
            c.close()
        capsys.readouterr()
        rc = cli.main(["bolus", "--dose", "10ug", "--over", "30min", "--yes", "--port", emu.port, "--keystore", ks])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_REFUSED and "(bolus_max)" in err and "4.8 µg" in err, err
    assert " mg" not in err and " ng" not in err and " nL" not in err, err
