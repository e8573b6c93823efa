"""`pumpctl campaign`: many virtual patients on a Dask cluster, aggregated per
fault class (docs/campaign.md)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pumpctl.console import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_LINK, EXIT_OK, UsageError

DEFAULT_OUT = "campaign"


def add_parser(sub) -> None:
    s = sub.add_parser("campaign", help="a verification campaign: many virtual patients (own seed, drug, refills, "
                                        "one injected fault or none) on a Dask cluster, detection per fault class",
                       description="a verification campaign (docs/campaign.md): N generated virtual patients, each "
                                   "on its own emulator in virtual time, spread over a Dask cluster (a local one by "
                                   "default); writes results.parquet, faults.parquet and report.html")
    s.set_defaults(func=cmd_campaign)
    s.add_argument("--patients", type=int, default=20, help="virtual patients (default 20)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--years", type=float, help="each patient's course, years of virtual time (default 1)")
    g.add_argument("--days", type=int, help="each patient's course, days of virtual time (instead of --years)")
    s.add_argument("--seed", type=int, default=1, help="campaign seed: the same seed gives the same patients "
                                                       "(default 1)")
    s.add_argument("--faults", default="all", help="fault classes, comma-separated, or 'all' (default: every class "
                                                   "the emulator can inject); 'none' for no faults")
    s.add_argument("--none-share", type=float, default=0.25, help="share of patients with no fault, for the false "
                                                                  "alarm rate (default 0.25)")
    s.add_argument("--workers", type=int, default=2, help="local cluster: worker processes, one thread each "
                                                          "(default 2, one per core of the build machine)")
    s.add_argument("--scheduler", help="an existing Dask cluster instead: its scheduler's address, "
                                       "tcp://HOST:PORT (`dask scheduler` + `dask worker ADDRESS --nthreads 1`)")
    s.add_argument("--out", default=DEFAULT_OUT, help="folder for the results and the report (default: %s; "
                                                      "created, files in it replaced)" % DEFAULT_OUT)
    s.add_argument("--only", type=int, metavar="N", help="run patient N of this campaign alone, in this process, "
                                                         "and show its row and its course (a replay)")
    s.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the scheduler and a worker "
                                                              "(default 20)")


def _classes(text: str, available: dict, missing: dict) -> list[str]:
    from pumpctl.campaign import faults
    if text.strip() == "all":
        return sorted(available)
    names = [n.strip() for n in text.split(",") if n.strip()]
    out = []
    for n in names:
        if n == faults.NONE:
            continue
        if n in missing:
            raise UsageError("fault class %s: this emulator cannot inject it (%s)" % (n, missing[n]))
        if n not in available:
            raise UsageError("unknown fault class %r (classes: %s, none, all)" % (n, ", ".join(sorted(
                faults.FAULT_CLASSES))))
        out.append(n)
    return out


def _check(args) -> int:
    if not 1 <= args.patients <= 100_000:
        raise UsageError("--patients: 1 to 100000, got %d" % args.patients)
    if args.days is not None:
        days = args.days
    else:
        years = 1.0 if args.years is None else args.years
        if not 0 < years <= 10:
            raise UsageError("--years: more than 0, at most 10, got %g" % years)
        days = round(years * 365)
    if not 2 <= days <= 3650:
        raise UsageError("--days: 2 to 3650 days of virtual time per patient, got %d" % days)
    if not 0 <= args.none_share <= 1:
        raise UsageError("--none-share: a fraction from 0 to 1, got %g" % args.none_share)
    if not 1 <= args.workers <= 256:
        raise UsageError("--workers: 1 to 256, got %d" % args.workers)
    if args.scheduler is not None and (":" not in args.scheduler or args.scheduler.endswith(":")):
        raise UsageError("--scheduler: the scheduler's address, tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786), got %r"
                         % args.scheduler)
    from pumpctl.campaign import faults
    for n in args.faults.split(","):
        n = n.strip()
        if n and n not in ("all", faults.NONE) and n not in faults.FAULT_CLASSES:
            raise UsageError("unknown fault class %r (classes: %s, none, all)" % (n, ", ".join(sorted(
                faults.FAULT_CLASSES))))
    if args.only is not None and not 0 <= args.only < args.patients:
        raise UsageError("--only: a patient of this campaign, 0 to %d" % (args.patients - 1))
    return days


def _specs(args, days: int, bench_cmds: list[str]):
    from pumpctl.campaign import faults, generate
    available, missing = faults.available(set(bench_cmds))
    classes = _classes(args.faults, available, missing)
    share = 1.0 if not classes else args.none_share
    assigned = generate.assign(args.patients, classes, share, args.seed)
    specs = [generate.patient(args.seed, i, days, f, available.get(f)) for i, f in enumerate(assigned)]
    return specs, {k: v for k, v in missing.items() if args.faults == "all"}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_campaign(args) -> int:
    days = _check(args)
    if args.only is not None:
        return _only(args, days)
    from pumpctl.campaign import aggregate, cluster, output, patient
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError("--out %s: %s" % (args.out, e.strerror or e)) from None
    rows: list[dict] = []
    t0 = time.monotonic()
    try:
        with cluster.client_for(args.scheduler, args.workers, args.timeout) as (client, what):
            bench_cmds = client.submit(patient.probe, pure=False).result()
            specs, left_out = _specs(args, days, bench_cmds)
            total_years = len(specs) * days / 365.0
            _say("campaign seed %d: %d patients x %d days (%.1f patient-years) on %s; truth from %s" % (
                args.seed, len(specs), days, total_years, what,
                "the fluid model" if "fluid" in bench_cmds else "the stroke record (no fluid model)"))
            if left_out:
                _say("left out (this emulator cannot inject them): %s" % ", ".join(sorted(left_out)))
            tty = sys.stderr.isatty()
            step = max(1, len(specs) // 20)

            def progress(row):
                rows.append(row)
                n = len(rows)
                el = time.monotonic() - t0
                yrs = sum(r.get("years") or 0 for r in rows)
                line = "  %d/%d patients, %.1f patient-years, %.0f s" % (n, len(specs), yrs, el)
                if row.get("error"):
                    _say("  patient %d (%s): run failed: %s" % (row["patient"], row["fault"], row["error"]))
                if tty:
                    print("\r" + line, end="" if n < len(specs) else "\n", file=sys.stderr, flush=True)
                elif n % step == 0 or n == len(specs):
                    _say(line)

            cluster.run(client, specs, progress)
            wall = time.monotonic() - t0
    except cluster.ClusterError as e:
        print("pumpctl campaign: %s" % e, file=sys.stderr)
        return EXIT_LINK
    except KeyboardInterrupt:
        print("\ncampaign interrupted: %d patient(s) had finished; the emulators on the workers were ended, "
              "nothing was written" % len(rows), file=sys.stderr)
        return EXIT_INTERRUPTED
    rows.sort(key=lambda r: r["patient"])
    agg = aggregate.by_fault(rows)
    meta = dict(aggregate.totals(rows, wall), seed=args.seed, days_per_patient=days, cluster=what,
                fluid=any(r.get("fluid") for r in rows), left_out=left_out, bench_commands=bench_cmds)
    output.write_parquet(rows, agg, out)
    output.write_meta(meta, agg, out)
    report = output.write_html(rows, agg, meta, out)
    print(output.text_table(agg))
    print("throughput: %.1f patient-years in %.0f s of wall time = %.1f patient-years per wall-minute (%s)" % (
        meta["patient_years"], wall, meta["patient_years_per_wall_minute"] or 0, what))
    print("results: %s, %s; report: %s" % (out / "results.parquet", out / "faults.parquet", report))
    failed = [r for r in rows if r.get("error")]
    if failed:
        print("pumpctl campaign: %d patient run(s) failed (left out of the figures): %s" % (
            len(failed), "; ".join("patient %d: %s" % (r["patient"], r["error"]) for r in failed[:5])),
            file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_OK


def _only(args, days: int) -> int:
    from pumpctl.campaign import patient
    bench_cmds = patient.probe()
    specs, _ = _specs(args, days, bench_cmds)
    spec = specs[args.only]
    print("patient %d of campaign seed %d: %s, fault %s%s" % (
        args.only, args.seed, spec["drug"], spec["fault"],
        "" if spec["fault_day"] is None else " (day %d, %s)" % (spec["fault_day"], spec["fault_params"])))
    print("scenario: %s" % json.dumps(spec["scenario"]))
    row = patient.run_patient(spec, keep_log=True)
    log = row.pop("log_tail", "")
    row.pop("daily_delivered_pct", None)
    print(log.rstrip("\n"))
    print("row: %s" % json.dumps(row, sort_keys=True))
    return EXIT_INTERNAL if row.get("error") else EXIT_OK
