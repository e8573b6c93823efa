"""pytest is the single entry point.

Files in tests/firmware/test_*.py are MicroPython modules: they are collected
by tests/mprun.py (parsed, never imported by CPython) and each `test_*`
function runs in its own MicroPython unix-port process, once from source and
once from the cross-compiled .mpy files, on the 64-bit unix port and on the
31-bit one (the RP2040's small-int width). Set MICROPYTHON (and MICROPYTHON31)
to use other unix-port binaries.
"""
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_TESTS = ROOT / "tests" / "firmware"
sys.path.insert(0, str(ROOT / "tests"))

import mprun  # noqa: E402

# A shell that starts `make test` in the background (`make test &`, nohup)
# leaves SIGINT ignored, and every process started from here would inherit
# that: the tests of what Ctrl-C does to pumpctl and the emulator would then
# see nothing. A handler of our own is reset to the default in each child.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# No test may touch the user's own programmer key store.
os.environ.setdefault("PUMPCTL_KEYSTORE", os.path.join(tempfile.mkdtemp(prefix="pumpctl-keys-"), "keys.json"))


def pytest_sessionstart(session):
    # The mpy variant must run what `make mpy` produces from today's sources
    # (once: not again in each pytest-xdist worker).
    if hasattr(session.config, "workerinput"):
        return
    subprocess.run(["make", "-s", "-C", str(ROOT), "mpy"], check=True, stdout=subprocess.DEVNULL)


def pytest_report_header(config):
    lines = []
    for label, exe in (("", mprun.micropython()), ("31-bit ", mprun.micropython31())):
        if exe is None:
            lines.append("%sfirmware tests: no interpreter found (those variants skip, or fail with CI=true)" % label)
            continue
        out = subprocess.run([exe, "-c", "import sys; print(sys.implementation, sys.maxsize)"],
                             capture_output=True, text=True)
        lines.append("%sfirmware tests run by: %s %s" % (label, exe, out.stdout.strip()))
    return lines


def pytest_pycollect_makemodule(module_path, parent):
    path = Path(module_path)
    if path.parent == FIRMWARE_TESTS and path.name.startswith("test_"):
        return mprun.MicroPythonModule.from_parent(parent, path=path, runner=FIRMWARE_TESTS / "mprunner.py")
    return None
