"""The emulator's native build (host_tools/pumpctl/nativecode.py): made once
per set of sources, never half-made, and the sources run instead (saying
why) wherever no native build can be made."""
import json
import threading

import pytest

from pumpctl import nativecode, paths


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    d = tmp_path / "emulator-code"
    monkeypatch.setattr(nativecode, "BUILD", d)
    return d


def fake_interpreter(tmp_path, mpy):
    # Answers the probe the way a unix port of another processor would.
    exe = tmp_path / ("micropython-%d" % mpy)
    exe.write_text("#!/bin/sh\necho %d\n" % mpy)
    exe.chmod(0o755)
    return str(exe)


def test_every_module_of_the_emulator_is_built_as_native_code(build_dir):
    code = nativecode.code_dir(paths.micropython(), "native")
    assert code is not None and code.parent == build_dir
    manifest = json.loads((code / nativecode.MANIFEST).read_text())
    assert manifest["modules"] == {src.stem: "native" for src in nativecode.sources()}
    assert {p.stem for p in code.glob("*.mpy")} == set(manifest["modules"])


def test_the_same_sources_reuse_the_build_and_a_changed_source_gets_a_new_one(build_dir, tmp_path, monkeypatch):
    exe = paths.micropython()
    first = nativecode.code_dir(exe, "native")
    assert nativecode.code_dir(exe, "native") == first
    changed = tmp_path / "units.py"
    changed.write_text((paths.ROOT / "firmware" / "units.py").read_text() + "\n# changed\n")
    files = [changed if p.name == "units.py" else p for p in nativecode.sources()]
    monkeypatch.setattr(nativecode, "sources", lambda: files)
    second = nativecode.code_dir(exe, "native")
    assert second is not None and second != first


def test_emulators_starting_together_share_one_whole_build(build_dir):
    exe = paths.micropython()
    got = []
    threads = [threading.Thread(target=lambda: got.append(nativecode.code_dir(exe, "native"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and got[0] is not None
    assert [p.name for p in build_dir.iterdir()] == [got[0].name]  # no scratch folder left behind


def test_asking_for_the_sources_runs_the_sources_and_says_so(build_dir, monkeypatch):
    exe = paths.micropython()
    monkeypatch.setenv(nativecode.ENV, "source")
    assert nativecode.code_dir(exe) is None
    assert nativecode.ENV in nativecode.why_source(exe)
    assert nativecode.code_dir(exe, "native") is not None  # an explicit choice wins over the variable


def test_an_interpreter_of_another_processor_runs_the_sources(build_dir, tmp_path):
    exe = fake_interpreter(tmp_path, 6 | 3 << 8 | 4 << 10)  # .mpy 6.3 for armv6m
    assert nativecode.code_dir(exe, "native") is None
    assert "processor" in nativecode.why_source(exe)
    assert not build_dir.exists()


def test_an_interpreter_of_another_mpy_version_runs_the_sources(build_dir, tmp_path):
    exe = fake_interpreter(tmp_path, 5 | 2 << 10)  # .mpy 5.0 for x64 (MicroPython 1.19)
    assert nativecode.code_dir(exe, "native") is None
    assert "v5.0" in nativecode.why_source(exe)


def test_no_mpy_cross_runs_the_sources(build_dir, monkeypatch):
    exe = paths.micropython()

    def missing():
        raise nativecode._NoBuild("no mpy-cross (run `make setup`)")

    monkeypatch.setattr(nativecode, "_mpy_cross", missing)
    assert nativecode.code_dir(exe, "native") is None
    assert "mpy-cross" in nativecode.why_source(exe)
