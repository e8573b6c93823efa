"""A campaign's results: results.parquet (one row per patient),
faults.parquet (one row per fault class), campaign.json (the options and the
totals), report.html with its plots (PNG files beside it, and embedded so
the HTML stands alone), and the table printed at the end."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pumpctl.campaign import faults

# Column types of results.parquet, so that every campaign's file has the same
# schema (a column all None would otherwise be typed null).
RESULT_SCHEMA = pa.schema([
    ("patient", pa.int64()), ("seed", pa.int64()), ("drug", pa.string()), ("fault", pa.string()),
    ("fault_params", pa.string()), ("fault_day", pa.float64()), ("fault_happened", pa.bool_()),
    ("detected", pa.bool_()), ("detected_by", pa.string()), ("detection_delay_days", pa.float64()),
    ("years", pa.float64()), ("fluid", pa.bool_()), ("device_bias_ppm", pa.int64()),
    ("alarms", pa.list_(pa.string())), ("concern_alarms", pa.int64()), ("false_alarms", pa.int64()),
    ("worst_24h_overdose_pct", pa.float64()), ("longest_unalarmed_under_days", pa.int64()),
    ("delivered_ml", pa.float64()), ("prescribed_ml", pa.float64()), ("pocket_mg", pa.float64()),
    ("daily_delivered_pct", pa.list_(pa.float64())), ("refills", pa.int64()), ("final_state", pa.string()),
    ("course_exit", pa.int64()), ("error", pa.string()), ("notes", pa.string()), ("wall_s", pa.float64()),
    ("worker_pid", pa.int64()),
])


def write_parquet(rows: list[dict[str, Any]], agg: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    cols = {f.name: [r.get(f.name) for r in rows] for f in RESULT_SCHEMA}
    res = out / "results.parquet"
    pq.write_table(pa.Table.from_pydict(cols, schema=RESULT_SCHEMA), res)
    agg_path = out / "faults.parquet"
    pq.write_table(pa.Table.from_pylist(agg), agg_path)
    return res, agg_path


def _fmt(x: Any, places: int = 2, suffix: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return ("%.*f" % (places, x)) + suffix
    return str(x) + suffix


def table_rows(agg: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["fault class", "patients", "pt-years", "detected", "delay median / worst (days)",
            "false alarms / pt-year", "worst 24 h overdose", "longest unalarmed under-delivery"]
    body = []
    for a in agg:
        if a["fault"] == faults.NONE:
            det = "-"
            delay = "-"
            fa = "%s (%d alarms)" % (_fmt(a["false_alarms_per_patient_year"], 3), a["false_alarms"] or 0)
        else:
            det = "%d/%d (%s)" % (a["detected"], a["faults_happened"],
                                  "-" if a["detection_rate"] is None else "%.0f %%" % (100 * a["detection_rate"]))
            delay = "%s / %s" % (_fmt(a["delay_median_days"], 3), _fmt(a["delay_max_days"], 3))
            fa = "-"
        body.append([a["fault"], str(a["patients"]), _fmt(a["patient_years"], 1), det, delay, fa,
                     _fmt(a["overdose_24h_worst_pct"], 1, " %"), _fmt(a["unalarmed_under_longest_days"], 0, " days")])
    return head, body


def text_table(agg: list[dict[str, Any]]) -> str:
    head, body = table_rows(agg)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


def markdown_table(agg: list[dict[str, Any]]) -> str:
    head, body = table_rows(agg)
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(r) + " |" for r in body])


# -- plots and the HTML report -----------------------------------------------------------------
def _plots(rows: list[dict[str, Any]], agg: list[dict[str, Any]], out: Path) -> list[tuple[str, Path]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fault_rows = [a for a in agg if a["fault"] != faults.NONE]
    names = [a["fault"] for a in agg]

    def save(fig, name, title):
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append((title, path))

    if fault_rows:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        rates = [100 * (a["detection_rate"] or 0) for a in fault_rows]
        ax.barh([a["fault"] for a in fault_rows], rates, color="#4a7ab5")
        for i, a in enumerate(fault_rows):
            ax.text(rates[i] + 1, i, "%d/%d" % (a["detected"], a["faults_happened"]), va="center", fontsize=8)
        ax.set_xlim(0, 115)
        ax.set_xlabel("detected by the pump (% of patients whose fault happened)")
        ax.invert_yaxis()
        save(fig, "detection.png", "Detection rate per fault class")

        fig, ax = plt.subplots(figsize=(8, 3.2))
        for i, a in enumerate(fault_rows):
            ys = [r["detection_delay_days"] for r in rows if r["fault"] == a["fault"] and r.get("detected")
                  and r.get("detection_delay_days") is not None]
            ax.scatter(ys, [i] * len(ys), s=14, alpha=0.7)
        ax.set_yticks(range(len(fault_rows)), [a["fault"] for a in fault_rows])
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel("detection delay, days (log scale above 0.01 day = 14 min)")
        ax.invert_yaxis()
        save(fig, "delay.png", "Detection delay per patient")

    for key, label, fname, title, log in (
            ("worst_24h_overdose_pct", "worst 24 h: true dose into the patient above the prescribed, %",
             "overdose.png", "Worst 24 h overdose per patient", True),
            ("longest_unalarmed_under_days", "longest run of days under 80 % of the prescribed dose, no alarm",
             "under.png", "Longest unalarmed under-delivery per patient", False)):
        fig, ax = plt.subplots(figsize=(8, 3.4))
        for i, n in enumerate(names):
            xs = [r.get(key) or 0 for r in rows if r["fault"] == n and not r.get("error")]
            ax.scatter(xs, [i] * len(xs), s=14, alpha=0.7)
        ax.set_yticks(range(len(names)), names)
        if log:
            ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel(label)
        ax.invert_yaxis()
        save(fig, fname, title)

    # a few patients' daily delivered dose against the prescribed (fluid truth or stroke record)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    shown = set()
    for r in rows:
        if r.get("error") or r["fault"] in shown or not r.get("daily_delivered_pct"):
            continue
        shown.add(r["fault"])
        ys = [y if y is not None else float("nan") for y in r["daily_delivered_pct"]]
        ax.plot(range(len(ys)), ys, lw=0.9, label="%s (patient %d)" % (r["fault"], r["patient"]))
    ax.axhline(100, color="grey", lw=0.6)
    ax.axhline(80, color="grey", lw=0.6, ls=":")
    ax.set_ylim(0, 160)
    ax.set_xlabel("day of therapy")
    ax.set_ylabel("delivered, % of prescribed")
    ax.legend(fontsize=7, ncol=2)
    save(fig, "daily.png", "Daily delivered dose, one patient of each class")
    return made


def write_html(rows: list[dict[str, Any]], agg: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> Path:
    plots = _plots(rows, agg, out)
    head, body = table_rows(agg)
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Verification campaign</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #bbb;padding:3px 7px;"
             "text-align:left}th{background:#eee}.note{color:#555;font-size:90%}</style></head><body>",
             "<h1>Verification campaign</h1>",
             "<p>%d virtual patients, %.1f patient-years of virtual time, in %.0f s of wall time (%.1f patient-years "
             "per wall-minute) on %s. Campaign seed %d. Truth from %s.</p>" % (
                 meta["patients"], meta["patient_years"], meta["wall_s"],
                 meta["patient_years_per_wall_minute"] or 0, e(meta["cluster"]), meta["seed"],
                 "the emulator's fluid model" if meta.get("fluid") else
                 "the stroke record (no fluid model in this emulator: every stroke taken as 0.5 uL)")]
    if meta.get("failed_runs"):
        parts.append("<p><b>%d patient run(s) failed</b> (harness errors, left out of the figures): see "
                     "results.parquet, column error.</p>" % meta["failed_runs"])
    if meta.get("left_out"):
        parts.append("<p class='note'>Fault classes left out (this emulator cannot inject them): %s</p>"
                     % e("; ".join("%s (%s)" % kv for kv in meta["left_out"].items())))
    parts.append("<h2>Per fault class</h2><table><tr>%s</tr>" % "".join("<th>%s</th>" % e(h) for h in head))
    for r in body:
        parts.append("<tr>%s</tr>" % "".join("<td>%s</td>" % e(c) for c in r))
    parts.append("</table><p class='note'>What to expect of the pump:</p><ul class='note'>%s</ul>" % "".join(
        "<li><b>%s</b>: %s</li>" % (e(a["fault"]), e(a["expect"])) for a in agg))
    parts.append("<p class='note'>How each figure is computed: docs/campaign.md. Detection: one of the class's "
                 "alarms raised at or after the fault. Overdose: the day's true drug into the patient "
                 "(intrathecal and pocket) above the prescribed. Under-delivery: days below 80 %% of the "
                 "prescribed dose into the intrathecal space with no alarm of concern.</p>")
    for title, path in plots:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append("<h2>%s</h2><img alt='%s' src='data:image/png;base64,%s'>" % (e(title), e(title), data))
    parts.append("<h2>Patients</h2><table><tr><th>patient</th><th>drug</th><th>fault</th><th>fault day</th>"
                 "<th>detected</th><th>delay (days)</th><th>alarms (name@day)</th><th>worst 24 h overdose</th>"
                 "<th>unalarmed under (days)</th></tr>")
    for r in sorted(rows, key=lambda r: r["patient"]):
        parts.append("<tr>%s</tr>" % "".join("<td>%s</td>" % e(str(c)) for c in (
            r["patient"], r["drug"], r["fault"] + (" (%s)" % r["fault_params"] if r.get("fault_params") else ""),
            _fmt(r.get("fault_day"), 1), "yes" if r.get("detected") else ("-" if r["fault"] == faults.NONE else "no"),
            _fmt(r.get("detection_delay_days"), 3), " ".join(r.get("alarms") or []) or "-",
            _fmt(r.get("worst_24h_overdose_pct"), 1, " %"), _fmt(r.get("longest_unalarmed_under_days"), 0)
            + (" (error: %s)" % r["error"] if r.get("error") else ""))))
    parts.append("</table></body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_meta(meta: dict[str, Any], agg: list[dict[str, Any]], out: Path) -> Path:
    path = out / "campaign.json"
    path.write_text(json.dumps({"campaign": meta, "faults": agg}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
