"""pytest is the single entry point.

Files in tests/firmware/test_*.py are MicroPython modules: they are collected
here (parsed, never imported by CPython) and each `test_*` function runs in
its own MicroPython unix-port process, once from source and once from the
cross-compiled .mpy files. Set MICROPYTHON to use another unix-port binary.
"""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE_TESTS = ROOT / "tests" / "firmware"
sys.path.insert(0, str(ROOT / "tests"))


def micropython():
    exe = os.environ.get("MICROPYTHON")
    if exe:
        return exe
    venv = ROOT / ".venv" / "bin" / "micropython"
    return str(venv) if venv.exists() else shutil.which("micropython")


def pytest_sessionstart(session):
    # The mpy variant must run what `make mpy` produces from today's sources.
    subprocess.run(["make", "-s", "-C", str(ROOT), "mpy"], check=True, stdout=subprocess.DEVNULL)


def pytest_report_header(config):
    out = subprocess.run([micropython(), "-c", "import sys; print(sys.implementation)"],
                         capture_output=True, text=True)
    return "firmware tests run by: %s %s" % (micropython(), out.stdout.strip())


def pytest_pycollect_makemodule(module_path, parent):
    path = Path(module_path)
    if path.parent == FIRMWARE_TESTS and path.name.startswith("test_"):
        return MicroPythonModule.from_parent(parent, path=path)
    return None


class MicroPythonModule(pytest.File):
    def collect(self):
        tree = ast.parse(self.path.read_text(), str(self.path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                for variant in ("src", "mpy"):
                    yield MicroPythonTest.from_parent(
                        self, name="%s[%s]" % (node.name, variant),
                        test_name=node.name, variant=variant)


class MicroPythonFailure(Exception):
    pass


class MicroPythonTest(pytest.Item):
    def __init__(self, *, test_name, variant, **kw):
        super().__init__(**kw)
        self.test_name = test_name
        self.variant = variant

    def runtest(self):
        cmd = [micropython(), str(FIRMWARE_TESTS / "mprunner.py"), self.variant,
               self.path.stem, self.test_name]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(FIRMWARE_TESTS), timeout=600)
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
