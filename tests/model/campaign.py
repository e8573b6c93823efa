"""The model-based campaign: a Hypothesis state machine whose rules are
campaign steps (step_strategies.py), each run by the Driver against the real
firmware in a MicroPython process and checked against the oracle.

Every example starts a fresh pump (an implant, or the emulator's built-in
demonstration pump) on a fresh flash image; the MicroPython process is
shared by all examples of a Python process.
"""
import atexit

from hypothesis import HealthCheck, Phase, reject, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import step_strategies as S
from driver import Driver
from harness_client import Harness
from invariants import Violation, kind

_harness = None
# Kinds of violation already found and reported (the soak fills it): an
# example that runs into one again is counted here and dropped, so that the
# campaign goes on looking for other kinds. Empty in `make test`: strict.
KNOWN = {}


def shared_harness():
    global _harness
    if _harness is None:
        _harness = Harness()
        atexit.register(_harness.close)
    return _harness


class PumpCampaign(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.driver = Driver(shared_harness())

    def do(self, step):
        try:
            self.driver.do(step)
        except Violation as v:
            k = kind(v)
            if k not in KNOWN:
                raise
            KNOWN[k] += 1
            reject()

    def rx(self):
        return self.driver.oracle.acked.rx

    @initialize(mode=st.sampled_from(["implant", "implant", "implant", "demo"]), data=st.data())
    def start(self, mode, data):
        self.driver.start(mode)
        if mode == "implant":
            for step in data.draw(S.implant(), label="implant"):
                self.do(step)

    # -- time ---------------------------------------------------------------
    @rule(step=S.advance(1000, 10 * S.MIN_MS))
    def advance_minutes(self, step):
        self.do(step)

    @rule(step=S.advance(10 * S.MIN_MS, 6 * S.HOUR_MS))
    def advance_hours(self, step):
        self.do(step)

    @rule(step=S.advance(6 * S.HOUR_MS, 30 * S.HOUR_MS))
    def advance_a_day(self, step):
        self.do(step)

    # -- clinician and patient ---------------------------------------------------
    @rule(data=st.data(), override=st.booleans())
    def program(self, data, override):
        self.do({"op": "program", "rx": data.draw(S.any_prescription(self.rx()), label="rx"), "override": override})

    @rule(data=st.data())
    def clinician_bolus(self, data):
        self.do(data.draw(S.clinician_bolus((self.rx() or {}).get("drug")), label="bolus"))

    @rule(step=S.priming_bolus())
    def priming_bolus(self, step):
        self.do(step)

    @rule()
    def demand(self):
        self.do({"op": "demand"})

    @rule(data=st.data())
    def refill(self, data):
        self.do(data.draw(S.refill(self.rx()), label="refill"))

    @rule()
    def suspend(self):
        self.do({"op": "suspend"})

    @rule()
    def resume(self):
        self.do({"op": "resume"})

    @rule(step=S.set_clock())
    def set_clock(self, step):
        self.do(step)

    @rule(pick=st.integers(0, 7))
    def acknowledge(self, pick):
        self.do({"op": "acknowledge", "pick": pick})

    @rule(volume_nl=st.integers(1_000_500, 5_000_000))
    def low_threshold(self, volume_nl):
        self.do({"op": "low_threshold", "volume_nl": volume_nl})

    # -- the world ----------------------------------------------------------------
    @rule(step=S.fault())
    def fault(self, step):
        self.do(step)

    @rule(steps=S.clear_faults())
    def clear_faults(self, steps):
        for step in steps:
            self.do(step)

    @rule(step=S.reset())
    def reset(self, step):
        self.do(step)


def campaign_settings(examples, steps, shrink):
    return settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                    phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate],
                    suppress_health_check=list(HealthCheck), print_blob=False, report_multiple_bugs=True)


def run_campaign(seed_value, examples, steps, shrink=False):
    """Runs `examples` random step sequences of up to `steps` steps each; raises
    the violations found (several distinct ones as an ExceptionGroup)."""
    seed(seed_value)(PumpCampaign)
    try:
        run_state_machine_as_test(PumpCampaign, settings=campaign_settings(examples, steps, shrink))
    except BaseException as e:
        # Hypothesis also draws on constants of the modules loaded, so the seed
        # replays a run from the same entry point (pytest, tools/soak.py); the
        # steps in the violation's note replay it from anywhere.
        e.add_note("model campaign seed %d (%d examples x %d steps); the steps above replay it: save them to a "
                   "file, `python tools/soak.py --shrink FILE` shrinks them" % (seed_value, examples, steps))
        raise
