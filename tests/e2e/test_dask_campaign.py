"""`pumpctl campaign` (docs/campaign.md): tiny campaigns whose figures are
checked against the faults the generator injected, on a local Dask cluster
and on a separately started `dask scheduler` + `dask worker`.

Every patient is a real MicroPython emulator in virtual time; the courses are
kept short (days, not years) so the file takes seconds."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pumpctl import cli, units as u
from pumpctl.campaign import faults, generate, patient
from pumpctl.fw import limits

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bench_cmds():
    return set(patient.probe())


def _rows(out):
    return {r["patient"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}


def _aggs(out):
    return {a["fault"]: a for a in pq.read_table(out / "faults.parquet").to_pylist()}


def _planned(seed, n, days, classes, share, bench_cmds):
    """What the campaign injected: the generator run again with the same seed."""
    avail, _ = faults.available(bench_cmds)
    return [generate.patient(seed, i, days, f, avail.get(f))
            for i, f in enumerate(generate.assign(n, classes, share, seed))]


# -- the generator, alone ---------------------------------------------------------------------
def test_patients_are_reproducible_and_inside_the_firmware_limits(bench_cmds):
    avail, _ = faults.available(bench_cmds)
    specs = [generate.patient(9, i, 365, f, avail.get(f))
             for i, f in enumerate(generate.assign(60, sorted(avail), 0.25, 9))]
    assert specs == [generate.patient(9, i, 365, s["fault"], avail.get(s["fault"])) for i, s in enumerate(specs)]
    assert {s["fault"] for s in specs} == set(avail) | {faults.NONE}  # every class gets patients
    for s in specs:
        for st in s["scenario"]["steps"]:
            rx = st.get("prescription")
            if not rx:
                continue
            conc, dose = u.conc_ng_ml(rx["conc"]), u.rate_ng_day(rx["dose"])
            assert dose <= limits.hard_daily(rx["drug"]), rx
            assert dose * 1_000_000 // conc >= 48_000, rx  # the mechanism's slowest rate
        visits = [st for st in s["scenario"]["steps"] if st["step"] == "visit"]
        assert visits and all(v["withdrawn"] == "true" for v in visits)  # a year has refills
        if s["fault"] != faults.NONE:
            assert 1 <= s["fault_day"] < 365


# -- a local cluster ---------------------------------------------------------------------------
def test_a_tiny_campaign_finds_the_injected_faults_and_no_false_alarms(tmp_path, capsys, bench_cmds):
    out = tmp_path / "c"
    argv = ["campaign", "--patients", "4", "--days", "12", "--faults", "motor-stall,occlusion", "--none-share",
            "0.5", "--seed", "3", "--workers", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "motor-stall" in text and "patient-years per wall-minute" in text
    planned = _planned(3, 4, 12, ["motor-stall", "occlusion"], 0.5, bench_cmds)
    rows = _rows(out)
    assert sorted(rows) == [0, 1, 2, 3]
    for spec in planned:
        r = rows[spec["index"]]
        assert r["error"] is None and r["course_exit"] == 0, r
        assert r["fault"] == spec["fault"] and abs(r["years"] - 12 / 365) < 0.01
        if spec["fault"] == faults.NONE:
            assert r["false_alarms"] == 0 and r["alarms"] == []
            # the pump's own bias and noise, no more
            assert r["longest_unalarmed_under_days"] == 0, r["daily_delivered_pct"]
            assert r["worst_24h_overdose_pct"] < 10, r["daily_delivered_pct"]
        else:
            assert r["fault_day"] == pytest.approx(spec["fault_day"])  # injected when planned
            assert r["detected"], r
            assert r["detected_by"] == spec["fault"]  # motor-stall by motor-stall, occlusion by occlusion
            # a stall is seen after a few failed strokes; an occlusion once the pressure passes the limit
            assert 0 <= r["detection_delay_days"] < (0.02 if spec["fault"] == "motor-stall" else 1.0), r
            assert r["longest_unalarmed_under_days"] == 0  # alarmed from the day it began
    aggs = _aggs(out)
    assert aggs["none"]["false_alarms"] == 0 and aggs["none"]["false_alarms_per_patient_year"] == 0
    for name in ("motor-stall", "occlusion"):
        assert aggs[name]["detection_rate"] == 1.0 and aggs[name]["patients"] == aggs[name]["detected"] == 1
    meta = json.loads((out / "campaign.json").read_text())["campaign"]
    assert meta["patients"] == 4 and "local Dask cluster (2 workers" in meta["cluster"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "motor-stall" in html
    assert (out / "detection.png").stat().st_size > 1000


def test_a_pocket_fill_is_found_at_the_refill_after_it(bench_cmds):
    # The generator arms it before a refill that has another after it: the
    # fill happens at the first, the reservoir is short at the second.
    if "pocket_fill" not in bench_cmds:
        pytest.skip("this emulator has no fluid model (bench pocket_fill)")
    fc = faults.available(bench_cmds)[0]["pocket-fill"]
    # the patient of this seed with the shortest refill interval
    best = min((generate.patient(5, i, 200, "pocket-fill", fc) for i in range(12)),
               key=lambda s: [st for st in s["scenario"]["steps"] if st["step"] == "visit"] and
               [d["days"] for d in s["scenario"]["steps"] if d["step"] == "days"][0])
    steps = best["scenario"]["steps"]
    day, visit_days, fault_seen = 0, [], None
    for st in steps:
        if st["step"] == "days":
            day += st["days"]
        elif st["step"] == "visit":
            visit_days.append(day)
        elif st["step"] == "fault":
            fault_seen = day
    fill_at = min(d for d in visit_days if d > fault_seen)
    found_at = min(d for d in visit_days if d > fill_at)
    days = found_at + 1
    spec = generate.patient(5, best["index"], days, "pocket-fill", fc)
    r = patient.run_patient(spec)
    assert r["error"] is None, r.get("log_tail")
    assert r["fault_day"] == pytest.approx(fill_at)  # it happened at the refill after it was armed
    assert r["detected"] and r["detected_by"] == "refill-discrepancy", r["alarms"]
    assert r["detection_delay_days"] == pytest.approx(found_at - fill_at)
    pct = spec["fault_params"]["pct"]
    conc_mg_ml = spec["conc_ng_ml"] / 1e6
    assert r["pocket_mg"] == pytest.approx(20 * pct / 100 * conc_mg_ml, rel=0.02)  # the missed syringe
    assert r["worst_24h_overdose_pct"] > 1000  # that much drug in the pocket at once


# -- a separately started scheduler and worker ------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    port = _free_port()
    addr = "tcp://127.0.0.1:%d" % port
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    log = open(tmp_path / "dask.log", "w")
    procs = []
    try:
        procs.append(subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                      cwd=tmp_path))
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", addr, "--nthreads", "1", "--no-nanny",
                                       "--no-dashboard", "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT,
                                      env=env, cwd=tmp_path))
        yield addr, procs[1].pid
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def test_a_campaign_runs_on_a_separately_started_dask_cluster(tmp_path, capsys, dask_cluster, bench_cmds):
    addr, worker_pid = dask_cluster
    out = tmp_path / "c"
    assert cli.main(["campaign", "--scheduler", addr, "--patients", "3", "--days", "8", "--faults", "motor-stall",
                     "--none-share", "0.34", "--seed", "4", "--out", str(out), "--timeout", "30"]) == 0
    rows = _rows(out)
    planned = _planned(4, 3, 8, ["motor-stall"], 0.34, bench_cmds)
    assert {r["worker_pid"] for r in rows.values()} == {worker_pid}  # every patient ran on that worker
    for spec in planned:
        r = rows[spec["index"]]
        assert r["error"] is None
        if spec["fault"] == "motor-stall":
            assert r["detected"] and r["fault_day"] == pytest.approx(spec["fault_day"])
            assert r["detection_delay_days"] < 0.02
        else:
            assert r["false_alarms"] == 0
    meta = json.loads((out / "campaign.json").read_text())["campaign"]
    assert meta["cluster"] == "the Dask cluster at %s (1 worker)" % addr


# -- refusals: one line, an exit code, no traceback --------------------------------------------
@pytest.mark.parametrize("argv, code, says", [
    (["--patients", "0"], 1, "--patients: 1 to 100000"),
    (["--years", "0"], 1, "--years: more than 0"),
    (["--scheduler", "nowhere"], 1, "tcp://HOST:PORT"),
    (["--faults", "gremlins"], 1, "unknown fault class 'gremlins'"),
])
def test_bad_options_are_refused_in_one_line(argv, code, says, capsys, tmp_path):
    rc = cli.main(["campaign", "--out", str(tmp_path / "c"), "--workers", "1"] + argv)
    err = capsys.readouterr().err
    assert rc == code and says in err and "Traceback" not in err


def test_an_unreachable_scheduler_is_a_link_failure(capsys, tmp_path):
    rc = cli.main(["campaign", "--scheduler", "tcp://127.0.0.1:%d" % _free_port(), "--timeout", "2",
                   "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 3 and "cannot reach the Dask scheduler" in err and "Traceback" not in err
