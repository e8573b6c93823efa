"""Where things are: the firmware, the MicroPython unix port, the emulator's
state folder; and reading a small input file without hanging on a device."""
import json
import os
import shutil
import stat
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATOR_MAIN = ROOT / "boards" / "unix" / "main.py"
STATE_ENV = "PUMPCTL_STATE"
INPUT_MAX_BYTES = 4 << 20  # key stores, prescriptions, scenarios, trial records: a few KB each


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


def default_state() -> Path:
    """The emulator's state folder when --state is not given: $PUMPCTL_STATE,
    else run/ in this checkout (where `make run` keeps it), whatever the
    current directory."""
    env = os.environ.get(STATE_ENV)
    return Path(env).expanduser().absolute() if env else ROOT / "run"


def file_part(name: str) -> str:
    """A pump's serial as part of a file name: anything but letters, digits,
    '-', '_' and '.' becomes '_' (a serial comes from the device: never a
    path of its own)."""
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in name)
    return "_" if safe.strip(".") == "" else safe


def shown(path) -> str:
    """A path as the user reads it: relative below the current directory, else absolute."""
    p = Path(path).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


class InputFileError(ValueError):
    """An input file that cannot be read: the message names it and says why."""


def read_text(path, what="file", limit=INPUT_MAX_BYTES) -> str:
    """The text of a small regular file. A device, FIFO or folder is refused at
    once (never read for ever: /dev/zero, a pipe nobody writes), and so is a
    file larger than `limit` bytes or not UTF-8."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise InputFileError("%s %s: %s" % (what, path, e.strerror or e)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputFileError("%s %s is not a regular file" % (what, path))
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise InputFileError("%s %s is larger than %d KB: not a pumpctl file" % (what, path, limit >> 10))
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise InputFileError("%s %s is not UTF-8 text" % (what, path)) from None
    except OSError as e:
        raise InputFileError("%s %s: %s" % (what, path, e.strerror or e)) from None
    finally:
        os.close(fd)


class DuplicateKeyError(ValueError):
    """A JSON object with a key given twice."""

    def __init__(self, key, first, then):
        self.key = key
        super().__init__("key %s given twice (%s, then %s): give it once"
                         % (json.dumps(key), _brief(first), _brief(then)))


def _brief(value, limit=40):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _refuse_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKeyError(key, obj[key], value)
        obj[key] = value
    return obj


def loads_json(text: str):
    """JSON a person wrote (a prescription, a scenario): a key given twice in
    any object is refused (DuplicateKeyError, naming it) rather than the last
    one silently kept: which one did the clinician mean?"""
    return json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
