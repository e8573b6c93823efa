"""Bounded model-based campaign (part of `make test`): random clinical
sequences with faults and resets, driven against the real firmware in a
MicroPython process and checked after every step against an independent
oracle (tests/model/oracle.py, invariants.py).

No shrinking here, to stay within a couple of minutes: a failure shows the
seed and the whole step sequence (save it to a file: `python tools/soak.py
--shrink FILE` shrinks it), and tests/model/test_counterexamples.py keeps
the minimal ones. `make soak` runs the long campaign.
CAMPAIGN_SEED, CAMPAIGN_EXAMPLES and CAMPAIGN_LENGTH override the defaults.
"""
import os

from campaign import run_campaign

SEED = int(os.environ.get("CAMPAIGN_SEED", "12"))
EXAMPLES = int(os.environ.get("CAMPAIGN_EXAMPLES", "120"))
LENGTH = int(os.environ.get("CAMPAIGN_LENGTH", "80"))


def test_random_clinical_sequences_keep_every_invariant():
    print("model campaign: seed %d, %d examples x up to %d steps" % (SEED, EXAMPLES, LENGTH))
    run_campaign(SEED, EXAMPLES, LENGTH)
