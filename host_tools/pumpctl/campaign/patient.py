"""One virtual patient on one emulator, in virtual time: the generated
scenario through pumpctl.scenario's Runner (every pump action by pumpctl's
own commands, time and faults by the bench port), watched from outside.

CampaignRunner adds to the Runner only what a campaign needs:
- a sample of the pump and of the fluid model's truth after every advance of
  virtual time (the ends of days, mostly);
- the campaign's own fault step ({"step": "fault", "class": ..., "params":
  ...}: the bench commands of faults.FAULT_CLASSES) and visit volumes
  ("withdrawn": "true": the true reservoir volume from the fluid model, or
  the pump's own figure when the emulator has no fluid model);
- refills by `pumpctl refill` (the visit's refill without its HTML report: a
  campaign makes thousands);
- the event log read before the emulator stops, however the course ended.
Runs in a Dask worker: `run_patient` never raises; it returns the patient's
row, with `error` set when the harness itself failed."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from pumpctl import scenario
from pumpctl.bench import BenchError
from pumpctl.campaign import faults

S_PER_DAY = 86400
UNDER_FRACTION = 0.8  # a day below 80 % of the prescribed dose is under-delivered
OCCLUSION_MMHG = 200  # the stroke record fallback: no flow above this pressure (docs/bench-port.md)

# The emulators this worker process started, by pid: a Ctrl-C on the client
# ends them (kill_emulators) without touching anything else.
_LIVE: dict[int, Any] = {}
_LIVE_LOCK = threading.Lock()


def kill_emulators() -> int:
    """Ends the emulators this process started (Dask `client.run` on each worker)."""
    with _LIVE_LOCK:
        emus = list(_LIVE.values())
    for emu in emus:
        with contextlib.suppress(Exception):
            emu.kill()
    return len(emus)


class CampaignRunner(scenario.Runner):
    def __init__(self, spec: dict[str, Any], state: Path, out) -> None:
        from pumpctl import cli
        super().__init__(spec["scenario"], state / "reports", state / "pump", cli.main, out)
        self.spec = spec
        self.samples: list[dict[str, Any]] = []
        self.fluid = False
        self.bench_commands: set[str] = set()
        self.fault_t: float | None = None  # s since therapy start
        self.pocket_armed = False
        self.records: list[tuple] = []
        self.t0: int | None = None  # pump time (s since 1970) when therapy started
        self.visits: list[str] = []
        self.collect_error: str | None = None
        self.refusals: list[str] = []

    # -- the emulator --------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        emu = self.pump
        if emu.proc is not None:
            with _LIVE_LOCK:
                _LIVE[emu.proc.pid] = emu
        stop = emu.stop

        def collect_then_stop(*a, **kw):
            try:
                self.collect()
            except Exception as e:  # the course's figures are what the samples say
                self.collect_error = "%s: %s" % (type(e).__name__, e)
            finally:
                with _LIVE_LOCK:
                    if emu.proc is not None:
                        _LIVE.pop(emu.proc.pid, None)
            return stop(*a, **kw)

        emu.stop = collect_then_stop  # type: ignore[method-assign]
        self.bench_commands = bench_commands(emu)
        self.fluid = "fluid" in self.bench_commands
        if self.fluid and "stroke_error" in self.bench_commands and self.spec.get("device"):
            self.bench("stroke_error", **self.spec["device"])  # this patient's own pump

    def collect(self) -> None:
        from pumpctl.session import read_log
        if self.pump.proc is None or self.pump.proc.poll() is not None:
            return
        c = self.client("clinician")
        try:
            self.records, _ = read_log(c, 1)
        finally:
            c.close()

    # -- time, sampled ---------------------------------------------------------------------
    def advance(self, secs: int) -> None:
        if secs > 0:
            self.sample(self.bench("advance", ms=secs * 1000))

    def sample(self, status: dict[str, Any] | None = None) -> None:
        s = status or self.bench("status")
        t = s["day"] * S_PER_DAY + s["tod_s"]
        if self.t0 is None:
            self.t0 = t
        smp = {"t": t - self.t0, "ledger": sum(s["strokes_by_kind"]), "demand": s["strokes_by_kind"][5],
               "motor": s["strokes"], "stroke_nl": s["stroke_nl"], "pressure": s["pressure_mmhg"],
               "alarms": list(s["alarms"]), "state": s["state"], "remaining_nl": s["remaining_nl"]}
        if self.fluid:
            f = self.bench("fluid")
            for k in ("delivered_nl", "delivered_ng", "pocket_nl", "pocket_ng", "reservoir_nl"):
                smp[k] = int(f.get(k) or 0)
        self.samples.append(smp)

    # -- steps -----------------------------------------------------------------------------
    def do_implant(self, st: dict[str, Any]) -> None:
        super().do_implant(st)
        self.sample()  # therapy starts now: t = 0

    def do_fault(self, st: dict[str, Any]) -> None:
        for cmd, args in self.spec["fault_inject"]:
            self.bench(cmd, **args)
        self.sample()
        self.fault_t = self.samples[-1]["t"]
        if self.spec["fault_onset"] == "refill":
            self.pocket_armed = True
            self.fault_t = None  # the fault happens at the next refill
        self.say("campaign fault %s: %s" % (st.get("class"), self.spec["fault_inject"]))

    def do_visit(self, st: dict[str, Any]) -> None:
        if self.fluid and st["withdrawn"] == "true":
            withdrawn = int(self.bench("fluid")["reservoir_nl"])
        else:  # no fluid model: the pump's own figure is the truth
            withdrawn = int(self.bench("status")["remaining_nl"])
        argv = ["refill", "--withdrawn", "%duL" % (withdrawn // 1000), "--added", st["added"], "--yes",
                "--accept-discrepancy"]
        if st.get("prescription"):
            argv += scenario._rx_argv(st["prescription"])
        rc = self.pumpctl(*argv, ok=(0, 1, 2, 5))
        if rc:
            self.refusals.append("refill on day %.0f: exit %d" % (self.samples[-1]["t"] / S_PER_DAY, rc))
        self.sample()
        if self.pocket_armed:
            self.pocket_armed = False
            self.fault_t = self.samples[-1]["t"]

    def do_program(self, st: dict[str, Any]) -> None:
        rc = self.pumpctl("program", "--yes", *scenario._rx_argv(st["prescription"]), ok=(0, 1, 2))
        if rc:
            self.refusals.append("program on day %.0f: exit %d" % (self.samples[-1]["t"] / S_PER_DAY, rc))


def bench_commands(emu) -> set[str]:
    """The emulator's bench commands, as its own refusal of an unknown one lists them."""
    try:
        with emu.bench() as b:
            b.call("campaign-probe")
    except BenchError as e:
        text = str(e)
        if "commands:" in text:
            return {c.strip(" )\"") for c in text.split("commands:", 1)[1].split(",")}
    return set()


def _ml(nl: float) -> float:
    return round(nl / 1e6, 4)


def run_patient(spec: dict[str, Any], keep_log: bool = False) -> dict[str, Any]:
    """Runs one patient; its row (figures below). Never raises."""
    t_wall = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="pumpctl-campaign-"))
    buf = io.StringIO()
    runner = None
    rc = None
    error = None
    try:
        runner = CampaignRunner(spec, state, buf)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            rc = runner.run()
    except Exception as e:  # a harness failure: reported with the patient
        error = "%s: %s" % (type(e).__name__, e)
        buf.write(traceback.format_exc())
    finally:
        shutil.rmtree(state, ignore_errors=True)
    row = figures(spec, runner) if runner is not None and runner.samples else _empty(spec)
    row.update({"course_exit": rc, "error": error or (runner.collect_error if runner else None),
                "wall_s": round(time.monotonic() - t_wall, 3), "worker_pid": os.getpid()})
    if runner is not None and runner.refusals:
        row["notes"] = "; ".join(runner.refusals)
    if keep_log or error or rc not in (0, None):
        row["log_tail"] = buf.getvalue()[-4000:]
    return row


def _empty(spec: dict[str, Any]) -> dict[str, Any]:
    return {"patient": spec["index"], "seed": spec["seed"], "drug": spec["drug"], "fault": spec["fault"],
            "years": 0.0, "fluid": False, "detected": False, "alarms": []}


# -- the patient's figures ---------------------------------------------------------------------
def _dose_at(spec: dict[str, Any], day: float) -> int:
    dose = spec["doses_ng_day"][0][1]
    for d, ng in spec["doses_ng_day"]:
        if d <= day:
            dose = ng
    return int(dose)


def figures(spec: dict[str, Any], r: CampaignRunner) -> dict[str, Any]:
    """The row: truth against what the pump said (alarms from its event log)."""
    from pumpctl import report
    from pumpctl.fw import events
    conc = spec["conc_ng_ml"]
    smp = r.samples
    t_end = smp[-1]["t"]
    # alarms raised after therapy start (the implant's alarm test is before), from the event log
    raised: list[tuple[float, str]] = []
    for rec in r.records:
        if rec[3] == events.ALARM_RAISED and r.t0 is not None:
            t = rec[1] * S_PER_DAY + rec[2] - r.t0
            if t >= 0:
                raised.append((t, report.alarm_slug(rec[4])))
    if not r.records:  # no log (the collect failed): what the samples saw
        seen: set[str] = set()
        for s in smp:
            for a in scenario._slugs(s["alarms"]):
                if a not in seen:
                    seen.add(a)
                    raised.append((s["t"], a))
    concern = [(t, a) for t, a in raised if a in faults.CONCERN_ALARMS]
    # days: true delivered (fluid, else the stroke record) against prescribed
    n_days = max(1, int(t_end // S_PER_DAY))
    true_it = [0.0] * n_days  # ng into the intrathecal space
    true_all = [0.0] * n_days  # ng into the patient: intrathecal + pocket
    presc = [0.0] * n_days
    alarmed = [False] * n_days
    for a, b in zip(smp, smp[1:]):
        day = max(0, int((b["t"] - 1) // S_PER_DAY))  # (a sample at a day's end belongs to that day)
        if day >= n_days or b["t"] < a["t"]:
            continue  # (a visit takes no virtual time: its drug moves count, its dt is 0)
        dt = b["t"] - a["t"]
        if r.fluid:
            it = b["delivered_ng"] - a["delivered_ng"]
            pocket = max(0, b["pocket_ng"] - a["pocket_ng"])
        else:
            strokes = max(0, b["motor"] - a["motor"]) if b["pressure"] < OCCLUSION_MMHG else 0
            it, pocket = strokes * b["stroke_nl"] * conc / 1e6, 0
        true_it[day] += it
        true_all[day] += it + pocket
        presc[day] += _dose_at(spec, a["t"] / S_PER_DAY) * dt / S_PER_DAY \
            + max(0, b["demand"] - a["demand"]) * b["stroke_nl"] * conc / 1e6
        if any(x in faults.CONCERN_ALARMS for x in scenario._slugs(b["alarms"])):
            alarmed[day] = True
    for t, _ in concern:
        if int(t // S_PER_DAY) < n_days:
            alarmed[int(t // S_PER_DAY)] = True
    full = [i for i in range(n_days) if presc[i] > 0]
    pct = [round(100.0 * true_it[i] / presc[i], 2) if presc[i] else None for i in range(n_days)]
    over = max([100.0 * (true_all[i] - presc[i]) / presc[i] for i in full] + [0.0])  # 0: never above
    longest = run = 0
    for i in range(n_days):
        under = presc[i] > 0 and true_it[i] < UNDER_FRACTION * presc[i]
        run = run + 1 if under and not alarmed[i] else 0
        longest = max(longest, run)
    # detection
    fault_t = r.fault_t
    detected_t = None
    detected_by = None
    if fault_t is not None:
        for t, a in raised:
            if t >= fault_t and a in spec["fault_detect"]:
                detected_t, detected_by = t, a
                break
    row: dict[str, Any] = {
        "patient": spec["index"], "seed": spec["seed"], "drug": spec["drug"], "fault": spec["fault"],
        "fault_params": ",".join("%s=%s" % kv for kv in sorted(spec["fault_params"].items())),
        "fault_day": None if fault_t is None else round(fault_t / S_PER_DAY, 3),
        "fault_happened": fault_t is not None,
        "detected": detected_t is not None,
        "detected_by": detected_by,
        "detection_delay_days": None if detected_t is None or fault_t is None
        else round((detected_t - fault_t) / S_PER_DAY, 4),
        "years": round(t_end / S_PER_DAY / 365.0, 4),
        "fluid": r.fluid,
        "device_bias_ppm": spec["device"]["bias_ppm"] if r.fluid else 0,
        "alarms": ["%s@%.2f" % (a, t / S_PER_DAY) for t, a in raised],
        "concern_alarms": len(concern),
        "false_alarms": len(concern) if spec["fault"] == faults.NONE else len([1 for t, _ in concern
                                                                               if fault_t is None or t < fault_t]),
        "worst_24h_overdose_pct": round(over, 2),
        "longest_unalarmed_under_days": longest,
        "delivered_ml": _ml(sum(true_it) / conc * 1e6),
        "prescribed_ml": _ml(sum(presc) / conc * 1e6),
        "pocket_mg": round(sum(true_all[i] - true_it[i] for i in range(n_days)) / 1e6, 4),
        "daily_delivered_pct": pct,
        "refills": sum(1 for rec in r.records if rec[3] == events.REFILL),
        "final_state": smp[-1]["state"],
    }
    return row


def probe() -> list[str]:
    """The bench commands of the emulator a worker runs (which faults it can inject)."""
    from pumpctl.emulator import Emulator
    state = Path(tempfile.mkdtemp(prefix="pumpctl-campaign-probe-"))
    try:
        emu = Emulator(state / "pump", virtual=True, blank=True).start()
        try:
            return sorted(bench_commands(emu))
        finally:
            emu.stop()
    finally:
        shutil.rmtree(state, ignore_errors=True)
