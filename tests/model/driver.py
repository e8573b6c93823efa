"""Runs campaign steps: each goes to the harness, its reply feeds the oracle,
and every invariant is checked. A step is a plain dict (JSON), so a failing
sequence is its own reproduction: `Driver.replay(steps)`.

Steps are the harness's requests, with a few resolved here from the oracle
(never from the pump) so that a recorded sequence replays exactly:
  refill        "withdrawn_delta_nl": withdrawn = true remaining + delta
  acknowledge   "pick": index into the alarms the last status listed
  first_fill    "drug", "conc_ng_ml": what the clinician put in (a bench note;
                the first prescription programmed after it names it instead)
"""
import json

from invariants import Checks, Violation
from oracle import Oracle

ADVANCE_MAX_MS = 2 * 3_600_000  # per harness request: bounded replies (2000 strokes an hour at most)
FAULT_OPS = {"motor", "pressure", "battery_glitch", "flash_fault", "arm_power_cut", "power_cut", "watchdog",
             "decay_state"}


class Driver:
    steps_run = 0  # campaign steps, over every driver of the process (the soak's report)
    requests_run = 0  # harness requests (a long advance is several)

    def __init__(self, harness):
        self.harness = harness
        self.checks = Checks()

    def start(self, mode):
        hello = self.harness.new(mode)
        self.checks.bench(hello)
        self.oracle = Oracle.start(mode, hello)
        self.steps = [{"op": "start", "mode": mode}]
        self.last = hello["snap"]
        self.flash_failed = False  # the bench has made flash writes fail in this run

    def replay(self, steps):
        self.start(steps[0]["mode"])
        for step in steps[1:]:
            self.do(step)

    def reproduction(self):
        return "steps (tests/model/test_counterexamples.py replays them):\n" + json.dumps(self.steps)

    def do(self, step):
        self.steps.append(step)
        Driver.steps_run += 1
        try:
            if step["op"] == "advance":
                left = step["ms"]
                while left > 0:  # a long advance is checked every ADVANCE_MAX_MS too
                    self._do({"op": "advance", "ms": min(left, ADVANCE_MAX_MS)})
                    left -= ADVANCE_MAX_MS
            else:
                self._do(step)
        except Violation as v:
            v.add_note(self.reproduction())
            raise

    def _do(self, step):
        o, checks = self.oracle, self.checks
        q = self._request(step)
        t0 = self.last["t_ms"]
        reply = self.harness.request(q)
        checks.bench(reply)
        Driver.requests_run += 1
        snap = reply["snap"]
        self._world(q, t0)
        if reply["outcome"] == "ok" and q["op"] not in FAULT_OPS:
            o.acknowledged(q, reply.get("value"), t0)
        elif reply["outcome"] == "power_cut":
            o.in_flight(q, t0)
        o.tones(snap["tones"])
        for kind, t, boot in timeline(snap):
            if kind == "stroke":
                checks.gap_ended(o, t)
                o.stroke(t)
                checks.ceiling(o, t)
            else:
                checks.gap_ended(o, boot["down_ms"])
                o.boot(boot)
        if snap["boots"] and (snap.get("observed") or {}).get("rx") is None:
            o.rtc_boot(snap["boots"][-1]["t_ms"])
        checks.exceptions(reply, self.flash_failed)
        checks.settings(o, q, reply, self.last)
        checks.ledger(o, snap)
        checks.gap_ongoing(o, snap)
        checks.clock(o, snap)
        self.last = snap

    def _world(self, q, t_ms):
        self.oracle.fault(q, t_ms)
        if q["op"] == "flash_fault" and q["on"]:
            self.flash_failed = True

    def _request(self, step):
        q = dict(step)
        if q["op"] == "refill" and "withdrawn_nl" not in q:
            q["withdrawn_nl"] = max(0, self.oracle.reservoir.remaining_nl + q.pop("withdrawn_delta_nl", 0))
        if q["op"] == "acknowledge" and "alarm" not in q:
            alarms = (self.last.get("status") or {}).get("alarms") or []
            q["alarm"] = alarms[q.pop("pick") % len(alarms)]["id"] if alarms else 0
        return q


def timeline(snap):
    """Strokes and power-downs of a step in time order (a stroke at the very
    moment the power goes comes first)."""
    events = [("stroke", t, None) for t in snap["strokes"]]
    events += [("boot", b["down_ms"], b) for b in snap["boots"]]
    return sorted(events, key=lambda e: (e[1], e[0] == "boot"))
