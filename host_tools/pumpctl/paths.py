"""Where the firmware and the MicroPython unix port are."""
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATOR_MAIN = ROOT / "boards" / "unix" / "main.py"


def micropython() -> str:
    """The unix-port interpreter: $MICROPYTHON, else the one beside this Python."""
    exe = os.environ.get("MICROPYTHON")
    if exe:
        return exe
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError("no MicroPython unix port: run `make setup` or set MICROPYTHON=/path/to/micropython")
    return found
