"""The pump on the stock MicroPython rp2 firmware, on an emulated RP2040
(tools/rp2emu, docs/rp2emu.md). Skipped, with one message, when node or the
firmware/boot ROM files are absent; with CI=true that fails instead."""
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tools" / "rp2emu"))

import picoemu  # noqa: E402

WHY = picoemu.missing()


def pytest_collection_modifyitems(config, items):
    # Outside CI without node or the firmware: one skip reason for all of
    # them. In CI they run, and the emulator fixture fails them with it.
    if WHY is None or os.environ.get("CI") == "true":
        return
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE:
            item.add_marker(pytest.mark.skip(reason="emulated Pico: " + WHY))
