"""boards/pico type-checked against the real rp2 API.

basedpyright (pinned, bundles its own node) with the pinned
micropython-rp2-rpi-pico-stubs, fully offline: the stubs' `machine`, `rp2`,
`micropython` and their MicroPython stdlib (`time.ticks_ms`, ...) replace
CPython's. Config: boards/pico/pyrightconfig.json; the stdlib location is
passed here because it is inside the virtual environment.
"""
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PICO = ROOT / "boards" / "pico"


def basedpyright():
    exe = Path(sys.executable).with_name("basedpyright")
    found = str(exe) if exe.exists() else shutil.which("basedpyright")
    assert found, "basedpyright is not installed: run `make setup` (requirements.txt pins it)"
    return found


def check(project):
    site = sysconfig.get_path("purelib")
    assert (Path(site) / "machine.pyi").exists(), "micropython-rp2-rpi-pico-stubs missing: run `make setup`"
    proc = subprocess.run([basedpyright(), "--outputjson", "-p", str(project / "pyrightconfig.json"),
                           "--pythonpath", sys.executable, "--typeshedpath", site],
                          capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("basedpyright did not report:\n" + proc.stdout + proc.stderr)
    return report


def errors(report):
    return ["%s:%d: %s" % (d["file"], d["range"]["start"]["line"] + 1, d["message"])
            for d in report["generalDiagnostics"] if d["severity"] == "error"]


def test_pico_board_type_checks_against_the_rp2_stubs():
    report = check(PICO)
    assert report["summary"]["filesAnalyzed"] >= len(list(PICO.glob("*.py")))
    assert errors(report) == [], "\n".join(errors(report))


def test_the_check_catches_a_misspelt_machine_member(tmp_path):
    # The same check on a copy with one rp2 API mistake: it must be an error,
    # so a clean report above means the stubs were really used.
    (tmp_path / "boards").mkdir()
    copy = tmp_path / "boards" / "pico"
    shutil.copytree(PICO, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "firmware", tmp_path / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
    src = (copy / "pico_board.py").read_text()
    assert "self._wdt.feed()" in src
    (copy / "pico_board.py").write_text(src.replace("self._wdt.feed()", "self._wdt.kick()"))
    found = errors(check(copy))
    assert len(found) == 1 and '"kick"' in found[0], found
