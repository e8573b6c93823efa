"""The whole emulator in virtual time, for `make bench` (issue #18): what a
user's scenario or campaign pays, not the in-process core.

A fresh `pumpctl emulate --virtual` pump (flash image with littlefs, event
log, watchdog model, bench port, pty link) runs 180 days at 1 mL/day,
advanced a day per bench request, with a refill through the link every
15 days, as a clinician would; then 5 days at 24 mL/day (the mechanism's
maximum rate), refilled every 12 hours. Wall time around the advances and refills
only (start-up excluded). The emulator runs its native build, as `pumpctl
emulate` does (docs/emulator-speed.md); the 180 days again on the plain
sources show what that buys. The anchor, in the same run: the in-process
core's 180 days (tools/bench_firmware.py, no flash), from source and from
the native build, is the floor the emulator is compared with. Last, one
campaign patient-year (docs/campaign.md) as `pumpctl campaign` runs it, and
what 200 of them take on 2 cores at that rate.

    .venv/bin/python tools/bench_emulator.py     (prints JSON as its last line)
"""
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host_tools"))

from pumpctl import nativecode, paths, session  # noqa: E402
from pumpctl.emulator import Emulator  # noqa: E402
from pumpctl.fw import link_commands as lc  # noqa: E402
from pumpctl.keystore import KeyStore  # noqa: E402
from pumpctl.link import Client, open_port  # noqa: E402

DAY_MS = 86_400_000
FILL_NL = 20_000_000  # the emulated reservoir's 20 mL
# 1 mL/day: morphine 10 mg/mL at 10 mg/day; 24 mL/day: hydromorphone 1 mg/mL at 24 mg/day.
ONE_ML = {"drug": "morphine", "conc_ng_ml": 10_000_000, "steps": [{"start_s": 0, "dose_ng_day": 10_000_000}]}
MAX_RATE = {"drug": "hydromorphone", "conc_ng_ml": 1_000_000, "steps": [{"start_s": 0, "dose_ng_day": 24_000_000}]}


def refill(emu, store):
    # The clinician withdraws what the pump expects to hold and tops up to 20 mL.
    c = Client(open_port(emu.port))
    try:
        serial = c.identify()["serial"]
        c.login("clinician", store.get(serial, "clinician"))
        expected = c.request(lc.REFILL, {"withdrawn_nl": 0, "added_nl": FILL_NL, "check": True})["expected_nl"]
        c.request(lc.REFILL, {"withdrawn_nl": expected, "added_nl": FILL_NL})
    finally:
        c.close()


def course(tmp, rx, steps, step_ms, refill_every, code="native"):
    # `steps` bench advances of step_ms, a refill before every refill_every-th.
    store = KeyStore(Path(tmp) / "keys.json")
    emu = Emulator(Path(tmp) / "pump", virtual=True, prescription=rx, code=code).start()
    try:
        c = Client(open_port(emu.port))
        session.provision_if_new(c, store)
        c.close()
        bench = emu.bench()
        t = time.perf_counter()
        for step in range(steps):
            if step and step % refill_every == 0:
                refill(emu, store)
            st = bench.call("advance", ms=step_ms)
        wall = time.perf_counter() - t
        bench.close()
    finally:
        emu.stop()
    if st["alarms"] and set(st["alarms"]) - {"low reservoir"}:
        raise RuntimeError("the course raised %s: not a clean run" % st["alarms"])
    return wall, st["strokes"]


def core_180_days_s(code=None):
    import subprocess

    argv = [paths.micropython(), str(ROOT / "tools" / "bench_firmware.py"), "--sim-only"]
    out = subprocess.run(argv + (["--code", str(code)] if code else []), capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["sim_180_days_s"]


def patient_year_s():
    # One campaign patient (docs/campaign.md): a year of baclofen at 0.15 mL/day
    # with its refill visits, sampled daily, in one process as `campaign --only`.
    from pumpctl.campaign import faults, generate, patient

    kinds = generate.assign(20, sorted(faults.FAULT_CLASSES), 0.25, 1)
    spec = generate.patient(1, 2, 365, kinds[2], faults.FAULT_CLASSES.get(kinds[2]))
    t = time.perf_counter()
    row = patient.run_patient(spec)
    if row.get("error"):
        raise RuntimeError("the campaign patient failed: %s" % row["error"])
    return time.perf_counter() - t


def main():
    native = nativecode.code_dir(paths.micropython(), "native")
    if native is None:
        raise SystemExit("no native build: %s" % nativecode.why_source(paths.micropython()))
    with tempfile.TemporaryDirectory() as tmp:
        wall_180, strokes_180 = course(tmp + "/a", ONE_ML, 180, DAY_MS, 15)
    with tempfile.TemporaryDirectory() as tmp:  # the same course on the plain sources: what the native build buys
        wall_src, _ = course(tmp + "/s", ONE_ML, 180, DAY_MS, 15, code="source")
    with tempfile.TemporaryDirectory() as tmp:  # 20 mL lasts 20 h at 24 mL/day: a refill every 12 h
        wall_max, strokes_max = course(tmp + "/b", MAX_RATE, 10, DAY_MS // 2, 1)
    core = core_180_days_s()
    core_native = core_180_days_s(native)
    year = patient_year_s()
    print(json.dumps({
        "emulator_180_days_1ml_s": round(wall_180, 2),
        "emulator_180_days_strokes": strokes_180,
        "emulator_180_days_1ml_source_s": round(wall_src, 2),
        "native_speedup": round(wall_src / wall_180, 2),
        "core_180_days_s": core,
        "core_180_days_native_s": core_native,
        "emulator_vs_core": round(wall_180 / core, 1),
        "emulator_24ml_days_per_s": round(5 / wall_max, 2),
        "emulator_24ml_strokes": strokes_max,
        "campaign_patient_year_s": round(year, 2),
        "campaign_200_patient_years_2_cores_min": round(200 * year / 2 / 60, 1),
    }))


if __name__ == "__main__":
    main()
