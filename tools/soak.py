"""Long model-based campaign against the real firmware (tests/model).

    python tools/soak.py --steps 100000 --seed 1       (make soak STEPS=100000 SEED=1)

Runs Hypothesis campaigns with seeds SEED, SEED+1, ... (EXAMPLES step
sequences of up to LENGTH steps each) until STEPS steps have run. The first
time a kind of violation turns up, its step sequence is shrunk (shrink.py),
printed and written to build/soak/<kind>.json: paste it into
tests/model/test_counterexamples.py. From then on that kind is counted and
its examples dropped, so that the campaign goes on looking for other kinds.
The printed seed reproduces the soak (same firmware, and this same entry
point: Hypothesis also draws on constants of the modules loaded). Exit
status 1 when any violation was found.

    python tools/soak.py --shrink build/soak/<kind>.json    shrinks a recorded sequence again
"""
import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "model")]

from hypothesis.errors import Unsatisfiable  # noqa: E402

import campaign as model  # noqa: E402
from campaign import run_campaign, shared_harness  # noqa: E402
from driver import Driver  # noqa: E402
from invariants import Checks, kind  # noqa: E402
from shrink import shrink  # noqa: E402

OUT = ROOT / "build" / "soak"


def violations(exc):
    """The violations inside what a campaign raised (Hypothesis groups distinct ones)."""
    if isinstance(exc, BaseExceptionGroup):
        return [v for e in exc.exceptions for v in violations(e)]
    return [exc]


def steps_of(v):
    for note in reversed(getattr(v, "__notes__", [])):
        if note.startswith("steps ("):
            return json.loads(note.split("\n", 1)[1])
    return None


def campaign(seed, examples, length):
    try:
        run_campaign(seed, examples, length)
        return []
    except Unsatisfiable:
        return []  # every example ran into known kinds
    except Exception as e:  # noqa: BLE001  (violations, flaky replays, bench errors: all reported)
        return violations(e)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--no-shrink", action="store_true")
    ap.add_argument("--shrink", metavar="FILE", help="shrink the step sequence in FILE and print it")
    ap.add_argument("--out", default=str(OUT), help="where the reproductions go (default build/soak)")
    a = ap.parse_args()
    if a.shrink:
        return shrink_file(a.shrink)
    print("soak: seed %d, %d steps, campaigns of %d examples x up to %d steps" % (a.seed, a.steps, a.examples,
                                                                               a.length), flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    found, counts, shrunk = {}, {}, {}
    start, seed, shrink_steps = time.time(), a.seed, 0
    while Driver.steps_run - shrink_steps < a.steps:
        before = Driver.steps_run
        new = []
        for v in campaign(seed, a.examples, a.length):
            k = kind(v)
            counts[k] = counts.get(k, 0) + 1
            if k not in found:
                found[k] = (seed, v)
                new.append(k)
        print("seed %d: %d steps, %s" % (seed, Driver.steps_run - before, "new: " + "; ".join(new) if new
                                         else "nothing new"), flush=True)
        for k in new:
            model.KNOWN[k] = 0  # from now on counted, and the campaign looks further
        for k in [] if a.no_shrink else new:
            mark = Driver.steps_run
            steps = steps_of(found[k][1])
            if steps:
                small, v = shrink(shared_harness(), steps, kind)
                if v is not None:
                    shrunk[k] = (small, v)
                print("  shrunk %s: %d -> %d steps" % (k, len(steps), len(small)), flush=True)
            shrink_steps += Driver.steps_run - mark
        seed += 1
    for k, n in model.KNOWN.items():
        counts[k] = counts.get(k, 0) + n
    report(found, counts, shrunk, a, start, shrink_steps)
    return 1 if found else 0


def shrink_file(path):
    steps = json.loads(Path(path).read_text())
    small, v = shrink(shared_harness(), steps, kind, log=lambda m: print(m, flush=True))
    print("%s\n%d -> %d steps:\n%s" % (str(v) if v else "no violation", len(steps), len(small), json.dumps(small)))
    return 1 if v else 0


def report(found, counts, shrunk, a, start, shrink_steps):
    took = time.time() - start
    run = Driver.steps_run - shrink_steps
    print("\nsoak seed %d: %d campaign steps (+%d shrinking; %d harness requests) in %.0f s (%.0f steps/s), "
          "%d invariant checks" % (a.seed, run, shrink_steps, Driver.requests_run, took, Driver.steps_run / took,
                                   Checks.total))
    if not found:
        print("no violation")
    for i, (k, (seed, v)) in enumerate(sorted(found.items()), 1):
        steps, v = shrunk.get(k) or (steps_of(v), v)
        name = re.sub(r"\W+", "-", k.lower()).strip("-")[:60]
        path = Path(a.out) / ("%s.json" % name)
        path.write_text(json.dumps(steps) + "\n")
        print("\n[%d] %s  (%d times; first with seed %d)\n%s" % (i, k, counts.get(k, 0), seed,
                                                              str(v).split("\n\nsteps")[0]))
        print("reproduction (%d steps, %s):\n%s" % (len(steps or []), os.path.relpath(path),
                                                   json.dumps(steps)))


if __name__ == "__main__":
    sys.exit(main())
