"""host_tools/ (pumpctl) type-checked with basedpyright: 0 errors.

Config: host_tools/pyrightconfig.json (standard mode, the firmware's shared
modules on the path as pumpctl.fw puts them); `make typecheck` runs the same.
The second test proves the check is live: a copy with the bug issue 13 found
(`visit` used in cmd_visit without its import) must fail it.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from test_pico_typecheck import basedpyright

ROOT = Path(__file__).resolve().parents[2]
HOST = ROOT / "host_tools"


def check(project):
    proc = subprocess.run([basedpyright(), "--outputjson", "-p", str(project / "pyrightconfig.json"),
                           "--pythonpath", sys.executable], capture_output=True, text=True, timeout=300)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("basedpyright did not report:\n" + proc.stdout + proc.stderr)


def errors(report):
    return ["%s:%d: %s" % (d["file"], d["range"]["start"]["line"] + 1, d["message"])
            for d in report["generalDiagnostics"] if d["severity"] == "error"]


def test_host_tools_type_check():
    report = check(HOST)
    assert report["summary"]["filesAnalyzed"] >= len(list((HOST / "pumpctl").rglob("*.py")))
    assert errors(report) == [], "\n".join(errors(report))


def test_the_check_catches_a_name_used_without_its_import(tmp_path):
    copy = tmp_path / "host_tools"
    shutil.copytree(HOST / "pumpctl", copy / "pumpctl", ignore=shutil.ignore_patterns("__pycache__"))
    config = json.loads((HOST / "pyrightconfig.json").read_text())
    config["extraPaths"] = [str(ROOT / "firmware")]
    (copy / "pyrightconfig.json").write_text(json.dumps(config))
    command = copy / "pumpctl" / "commands" / "visit.py"
    src = command.read_text()
    i = src.index("def cmd_visit(")
    j = src.index("    from pumpctl import visit, visitrun\n", i)  # cmd_visit's own import
    command.write_text(src[:j] + src[j:].replace("import visit, visitrun", "import visitrun", 1))
    found = errors(check(copy))
    assert found and all('"visit" is not defined' in e for e in found), found
