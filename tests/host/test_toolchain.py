"""The toolchain: pinned MicroPython runs the firmware tests; an override replaces it."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_micropython_override_runs_the_firmware_tests(tmp_path):
    real = os.environ.get("MICROPYTHON") or str(ROOT / ".venv" / "bin" / "micropython")
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "my-micropython"
    wrapper.write_text('#!/bin/sh\necho "$@" >> %s\nexec %s "$@"\n' % (log, real))
    wrapper.chmod(0o755)
    env = dict(os.environ, MICROPYTHON=str(wrapper))
    test = "tests/firmware/test_foundation.py::test_default_rate_delivers_the_prescribed_strokes_in_a_day[src]"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mprunner.py src test_foundation" in log.read_text()


def test_every_firmware_and_board_module_is_cross_compiled_for_armv6m():
    sources = sorted(p.relative_to(ROOT) for d in ("firmware", "boards") for p in (ROOT / d).rglob("*.py"))
    assert sources
    for src in sources:
        mpy = ROOT / "build" / "mpy" / src.with_suffix(".mpy")
        assert mpy.exists(), "%s was not compiled" % src
        assert mpy.stat().st_mtime >= (ROOT / src).stat().st_mtime, "%s is stale" % mpy


def test_the_first_make_says_what_it_is_installing():
    # Issue #13 finding 15: the set-up is not a silent minute.
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    plan = subprocess.run(["make", "-n", "-W", "requirements.txt", "setup"], cwd=root, capture_output=True,
                          text=True, timeout=60).stdout.splitlines()
    said = [line for line in plan if line.startswith("echo")]
    assert said and "setting up" in said[0] and plan.index(said[0]) < next(
        i for i, line in enumerate(plan) if "pip install" in line)
