"""pytest is the single entry point.

Files in tests/firmware/test_*.py are MicroPython modules: they are collected
by tests/mprun.py (parsed, never imported by CPython) and each `test_*`
function runs in its own MicroPython unix-port process, once from source and
once from the cross-compiled .mpy files. Set MICROPYTHON to use another
unix-port binary.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_TESTS = ROOT / "tests" / "firmware"
sys.path.insert(0, str(ROOT / "tests"))

import mprun  # noqa: E402

# No test may touch the user's own programmer key store.
os.environ.setdefault("PUMPCTL_KEYSTORE", os.path.join(tempfile.mkdtemp(prefix="pumpctl-keys-"), "keys.json"))


def pytest_sessionstart(session):
    # The mpy variant must run what `make mpy` produces from today's sources.
    subprocess.run(["make", "-s", "-C", str(ROOT), "mpy"], check=True, stdout=subprocess.DEVNULL)


def pytest_report_header(config):
    out = subprocess.run([mprun.micropython(), "-c", "import sys; print(sys.implementation)"],
                         capture_output=True, text=True)
    return "firmware tests run by: %s %s" % (mprun.micropython(), out.stdout.strip())


def pytest_pycollect_makemodule(module_path, parent):
    path = Path(module_path)
    if path.parent == FIRMWARE_TESTS and path.name.startswith("test_"):
        return mprun.MicroPythonModule.from_parent(parent, path=path, runner=FIRMWARE_TESTS / "mprunner.py")
    return None
