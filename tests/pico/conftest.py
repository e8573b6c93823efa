"""Pico board tests: boards/pico on the MicroPython unix port, with the
stand-in `machine` and `rp2` of tests/pico/standins. Each `def test_*()` in
tests/pico/test_*.py runs in its own process, from source and from .mpy
(tests/pico/runner.py sets the path)."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mprun  # noqa: E402

RUNNER = HERE / "runner.py"


def pytest_pycollect_makemodule(module_path, parent):
    path = Path(module_path)
    if path.parent == HERE and path.name.startswith("test_"):
        return mprun.MicroPythonModule.from_parent(parent, path=path, runner=RUNNER)
    return None
