"""The emulator's code as native machine code (issue #18, docs/emulator-speed.md).

The emulated pump runs the same sources as always (firmware/ and
boards/unix/), compiled by mpy-cross with MicroPython's native emitter for
the unix port's own processor: the same program, about 1.5 times as fast
in virtual time, where every campaign, scenario and accuracy run spends its
time. A Pico still runs bytecode (pumpctl deploy); the firmware tests run
both the sources and the native build (tests/mprun.py).

The build is kept in build/emulator-code/<key>/, the key a hash of the
sources, the compiler and the target: a changed source makes a new build at
the next start, never a stale one. It is made in a scratch folder and
renamed into place, so emulators starting together (a campaign's workers,
parallel tests) never load a half-written one. A source the native emitter
cannot take is compiled to bytecode instead (the manifest says which).

The emulator runs the plain sources instead when PUMPCTL_EMULATOR_CODE=source
(tracebacks with line numbers, for debugging), or when no native build can be
made for this interpreter (another processor, another .mpy version, no
mpy-cross): `why_source()` says why."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pumpctl import deploy, paths

ROOT = paths.ROOT
BUILD = ROOT / "build" / "emulator-code"
ENV = "PUMPCTL_EMULATOR_CODE"  # "source": the plain sources; "native" (default): the native build
MANIFEST = "manifest.json"
STALE_S = 3600  # older builds are removed (after an hour: a running emulator may still reboot from one)
_ARCHES = ("x86", "x64")  # the unix ports' processors (deploy.NATIVE_ARCH names)
_PROBE = "import sys; print(getattr(sys.implementation, '_mpy', 0))"

_why: dict[str, str] = {}  # interpreter -> why it runs the sources
_probed: dict[str, int] = {}


def sources() -> list[Path]:
    """Every module the emulator imports (boards/unix/main.py stays the script)."""
    out = sorted((ROOT / "firmware").glob("*.py")) + sorted((ROOT / "boards" / "unix").glob("*.py"))
    return [p for p in out if p.name != "main.py"]


def code_dir(interpreter: str, choice: str | None = None) -> Path | None:
    """The native build for this interpreter (made if needed), or None: run
    the sources. `choice` "native" or "source" overrides $PUMPCTL_EMULATOR_CODE."""
    if (choice or os.environ.get(ENV, "native")) == "source":
        _why[interpreter] = "asked for" if choice else "%s=source" % ENV
        return None
    try:
        arch, version = _target(interpreter)
        mpy_cross = _mpy_cross()
        emitted = _emitted()
        if emitted != version:
            raise _NoBuild("the interpreter loads .mpy v%d.%d, mpy-cross emits v%d.%d" % (version + emitted))
        return _build(mpy_cross, arch, emitted)
    except _NoBuild as e:
        _why[interpreter] = str(e)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        _why[interpreter] = "%s: %s" % (type(e).__name__, e)
        return None


def why_source(interpreter: str) -> str | None:
    """Why code_dir(interpreter) gave None, once it did."""
    return _why.get(interpreter)


class _NoBuild(Exception):
    pass


def _target(interpreter: str) -> tuple[str, tuple[int, int]]:
    if interpreter not in _probed:
        out = subprocess.run([interpreter, "-c", _PROBE], capture_output=True, text=True, timeout=30)
        _probed[interpreter] = int(out.stdout.strip() or 0) if out.returncode == 0 else 0
    mpy = _probed[interpreter]
    arch = deploy.native_arch(mpy)
    if arch not in _ARCHES:
        raise _NoBuild("no native emitter for this interpreter's processor (sys.implementation._mpy %d)" % mpy)
    return arch, (mpy & 0xFF, (mpy >> 8) & 3)


def _mpy_cross() -> str:
    try:
        return deploy.tool("mpy-cross")
    except deploy.DeployError:
        raise _NoBuild("no mpy-cross (run `make setup`)") from None


def _emitted() -> tuple[int, int]:
    try:
        return deploy.mpy_cross_version()
    except (ValueError, IndexError, OSError):
        raise _NoBuild("mpy-cross did not say which .mpy version it emits") from None


def _key(arch: str, emitted: tuple[int, int], files: list[Path]) -> str:
    h = hashlib.sha256(("%s mpy%d.%d\n" % ((arch,) + emitted)).encode())
    for src in files:
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _build(mpy_cross: str, arch: str, emitted: tuple[int, int]) -> Path:
    files = sources()
    final = BUILD / ("%s-%s" % (arch, _key(arch, emitted, files)))
    if (final / MANIFEST).exists():
        return final
    BUILD.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=BUILD))
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            emitters = list(pool.map(lambda src: _compile(mpy_cross, arch, src, scratch), files))
        manifest = {"arch": arch, "mpy": "%d.%d" % emitted,
                    "modules": {src.stem: how for src, how in zip(files, emitters)}}
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(scratch, final)
        except OSError:
            if not (final / MANIFEST).exists():  # not another starter's identical build: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _remove_stale(final)
    return final


def _compile(mpy_cross: str, arch: str, src: Path, out: Path) -> str:
    dest = out / (src.stem + ".mpy")
    native = subprocess.run([mpy_cross, "-march=" + arch, "-X", "emit=native", "-o", str(dest), str(src)],
                            capture_output=True, text=True, timeout=120)
    if native.returncode == 0:
        return "native"
    plain = subprocess.run([mpy_cross, "-o", str(dest), str(src)], capture_output=True, text=True, timeout=120)
    if plain.returncode != 0:
        raise _NoBuild("mpy-cross %s: %s" % (src.relative_to(ROOT), plain.stderr.strip()[-300:]))
    return "bytecode (%s)" % (native.stderr.strip().splitlines() or ["native emitter refused it"])[-1]


def _remove_stale(keep: Path) -> None:
    now = time.time()
    for d in BUILD.iterdir():
        try:
            if d != keep and now - d.stat().st_mtime > STALE_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass
