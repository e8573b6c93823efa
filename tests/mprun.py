"""Runs MicroPython test modules under pytest, one unix-port process per test.

A test file is a MicroPython module: it is parsed (never imported by
CPython) and each top-level `def test_*()` becomes a pytest item that runs
`micropython RUNNER VARIANT MODULE TEST` in the file's directory, once per
variant ("src": from source; "mpy": from the cross-compiled .mpy files), and
again as "src31"/"mpy31" on the 31-bit unix port (small ints as on an
RP2040: above 2^30 an int allocates; $MICROPYTHON31, by default
shared/runtimes/ beside the checkout). The runner script prints "PASS name"
and exits 0 on success.

Used by tests/pico/conftest.py; tests/conftest.py can use it for
tests/firmware the same way (runner tests/firmware/mprunner.py).
"""
import ast
import os
import shutil
import sys
from pathlib import Path
import subprocess

import pytest

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("src", "mpy", "src31", "mpy31")
# The emulator's native build (host_tools/pumpctl/nativecode.py), for the
# modules that ask for it with a line "# mprun: native" (the tick's
# allocation and small-int proofs, the dosing arithmetic).
NATIVE_VARIANTS = ("nat", "nat31")
NATIVE_MARK = "\n# mprun: native"
RUNTIME31 = ROOT.parent / "shared" / "runtimes" / "micropython-1.28.0-unix-i386"


def micropython():
    """The unix-port interpreter: $MICROPYTHON, else the project's, else PATH."""
    exe = os.environ.get("MICROPYTHON")
    if exe:
        return exe
    venv = ROOT / ".venv" / "bin" / "micropython"
    return str(venv) if venv.exists() else shutil.which("micropython")


def micropython31():
    """The 31-bit unix port: $MICROPYTHON31, else the shared one, if it exists."""
    exe = os.environ.get("MICROPYTHON31") or str(RUNTIME31)
    return exe if os.access(exe, os.X_OK) else None


def interpreter(variant):
    # CI must run every variant: a missing 31-bit port fails there, and is
    # skipped (saying why) on a developer's machine.
    if not variant.endswith("31"):
        return micropython()
    exe = micropython31()
    if exe is None:
        why = ("31-bit MicroPython not found (%s): set MICROPYTHON31 or put shared/ beside the checkout"
               % (os.environ.get("MICROPYTHON31") or RUNTIME31))
        if os.environ.get("CI") == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return exe


def native_variant(exe):
    """The runner's "nat:DIR" for this interpreter: the emulator's own native build of today's sources."""
    if str(ROOT / "host_tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "host_tools"))
    from pumpctl import nativecode

    code = nativecode.code_dir(exe, "native")
    if code is None:
        why = "no native build for %s: %s" % (exe, nativecode.why_source(exe))
        if os.environ.get("CI") == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return "nat:%s" % code


def test_names(path):
    tree = ast.parse(Path(path).read_text(), str(path))
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


class MicroPythonFailure(Exception):
    pass


class MicroPythonModule(pytest.File):
    def __init__(self, *, runner, **kw):
        super().__init__(**kw)
        self.runner = Path(runner)

    def collect(self):
        native = NATIVE_MARK in self.path.read_text()
        for name in test_names(self.path):
            for variant in VARIANTS + (NATIVE_VARIANTS if native else ()):
                yield MicroPythonTest.from_parent(self, name="%s[%s]" % (name, variant), test_name=name,
                                                  variant=variant, runner=self.runner)


class MicroPythonTest(pytest.Item):
    def __init__(self, *, test_name, variant, runner, **kw):
        super().__init__(**kw)
        self.test_name = test_name
        self.variant = variant
        self.runner = runner

    def runtest(self):
        # The runner knows "src", "mpy" and "nat:DIR"; "31" only picks the interpreter.
        exe = interpreter(self.variant)
        kind = native_variant(exe) if self.variant.startswith("nat") else self.variant[:3]
        cmd = [exe, str(self.runner), kind, self.path.stem, self.test_name]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(self.path.parent), timeout=600)
        self.output = proc.stdout + proc.stderr
        if proc.returncode != 0 or ("PASS " + self.test_name) not in proc.stdout:
            raise MicroPythonFailure(self.output)
        if self.output.strip() != "PASS " + self.test_name:
            sys.stdout.write(self.output)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonFailure):
            return "MicroPython (%s) failed:\n%s" % (self.variant, excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, "micropython: %s[%s]" % (self.test_name, self.variant)
