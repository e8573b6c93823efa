"""Per-fault-class figures from the patient rows (plain Python: the test
checks them against the injected truth).

- detection rate: patients whose fault happened (a pocket fill happens only at
  a refill after it was armed) and on whom one of the class's detecting alarms
  was raised at or after it, over the patients whose fault happened;
- detection delay: from the fault to that alarm, days (median and worst);
- false alarms: on the patients with no fault, every alarm of concern
  (faults.CONCERN_ALARMS) raised after therapy started; rate per patient-year;
- worst 24 h overdose: the largest day's true drug into the patient
  (intrathecal + pocket) above the prescribed dose, % of it;
- longest unalarmed under-delivery: the longest run of days below 80 % of the
  prescribed dose into the intrathecal space with no alarm of concern raised
  or active, days."""
from __future__ import annotations

import statistics
from typing import Any

from pumpctl.campaign import faults


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


def by_fault(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    names = sorted({r["fault"] for r in rows}, key=lambda n: (n != faults.NONE, n))
    for name in names:
        rs = [r for r in rows if r["fault"] == name and not r.get("error")]
        happened = [r for r in rs if r.get("fault_happened")]
        det = [r for r in happened if r.get("detected")]
        delays = [r["detection_delay_days"] for r in det if r.get("detection_delay_days") is not None]
        years = sum(r.get("years") or 0.0 for r in rs)
        false = sum(r.get("false_alarms") or 0 for r in rs)
        over = [r.get("worst_24h_overdose_pct") or 0.0 for r in rs]
        under = [r.get("longest_unalarmed_under_days") or 0 for r in rs]
        fc = faults.FAULT_CLASSES.get(name)
        out.append({
            "fault": name,
            "title": fc.title if fc else "no fault",
            "patients": len(rs),
            "failed_runs": len([r for r in rows if r["fault"] == name and r.get("error")]),
            "patient_years": round(years, 3),
            "faults_happened": len(happened) if name != faults.NONE else 0,
            "detected": len(det),
            "detection_rate": round(len(det) / len(happened), 4) if happened else None,
            "delay_median_days": _median(delays),
            "delay_max_days": round(max(delays), 4) if delays else None,
            "false_alarms": false if name == faults.NONE else None,
            "false_alarms_per_patient_year": round(false / years, 4) if name == faults.NONE and years else None,
            "overdose_24h_worst_pct": round(max(over), 2) if over else None,
            "overdose_24h_median_pct": _median(over),
            "unalarmed_under_longest_days": max(under) if under else None,
            "unalarmed_under_median_days": _median([float(x) for x in under]),
            "expect": fc.expect if fc else "no alarm of concern",
        })
    return out


def totals(rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    years = sum(r.get("years") or 0.0 for r in rows)
    return {"patients": len(rows), "patient_years": round(years, 3), "wall_s": round(wall_s, 1),
            "patient_years_per_wall_minute": round(years / (wall_s / 60.0), 2) if wall_s > 0 else None,
            "failed_runs": len([r for r in rows if r.get("error")])}
