"""The campaign's invariants, checked after every step against the oracle.

Each kind of violation is its own exception class raised from its own line,
so Hypothesis tells distinct failures apart and shrinks each on its own.
"""
import re

from oracle import CRITICAL_REPEAT_MAX_S, ONE, STROKE_NL

SLACK_MS = 60_000  # scheduling in whole seconds, motor time, restored phases
CLOCK_SLACK_S = 2


class Violation(AssertionError):
    invariant = "?"


class CeilingExceeded(Violation):
    invariant = "(a) one 24-hour ceiling"


class SilentStop(Violation):
    invariant = "(b) no silent stop"


class LedgerUnbalanced(Violation):
    invariant = "(c) the ledger balances"


class GaugeOutOfBounds(Violation):
    invariant = "(c) the gauge is within the reserve of the true volume"


class StaleStateRestored(Violation):
    invariant = "(c, d) a decayed state record is flagged, not silently replaced by an older one"


class AcknowledgedLost(Violation):
    invariant = "(d) nothing acknowledged lost by a reset"


class RefusalChangedState(Violation):
    invariant = "(d) a refused command changes nothing"


class AcknowledgedNotApplied(Violation):
    invariant = "(d) an acknowledged command is what the pump holds"


class EscapedException(Violation):
    invariant = "(e) no exception escapes the pump"


class UnexpectedError(Violation):
    invariant = "(e) a command either works or is refused"


class InternalFault(Violation):
    invariant = "(e) no internal fault the bench did not inject"


class ClockNotFlagged(Violation):
    invariant = "(f) the wall clock is right, or flagged as uncertain"


class BenchError(AssertionError):
    """The bench itself failed: not a finding about the pump."""


def kind(v):
    """A violation's kind: its class and the words of its first line, without
    the numbers (what the soak counts and shrinks once)."""
    first = str(v).split("\n")[0].split(": ", 1)[-1]
    words = re.sub(r"[\d.]+", "#", first).split()[:6]
    return "%s: %s" % (type(v).__name__, " ".join(words))


def _fail(cls, what, **details):
    lines = ["%s: %s" % (cls.invariant, what)] + ["  %s: %s" % kv for kv in details.items()]
    return cls("\n".join(lines))


class Checks:
    """Counts every check it runs (the soak reports the total)."""
    total = 0  # over every instance of the process

    def __init__(self):
        self._count = 0

    @property
    def count(self):
        return self._count

    @count.setter
    def count(self, n):
        Checks.total += n - self._count
        self._count = n

    # -- bench ----------------------------------------------------------------
    def bench(self, reply):
        if reply.get("outcome") == "harness_error":
            raise BenchError("harness: %s\n%s" % (reply.get("error"), reply.get("trace", "")))
        if reply["snap"].get("lost"):
            raise BenchError("the harness lost %d stroke or tone records" % reply["snap"]["lost"])

    # -- (a) ---------------------------------------------------------------------
    def ceiling(self, oracle, t_ms):
        self.count += 2
        w = oracle.window
        if w.exceeded():
            raise _fail(CeilingExceeded, "the 24 hours ending at %d ms delivered %.4f hard daily maxima "
                        "(allowed: 1 + one stroke = %.4f)" % (t_ms, w.total / ONE, 1 + w.largest() / ONE),
                        strokes_in_window=len(w.strokes), reservoir=oracle.reservoir,
                        catheter=list(oracle.catheter.segments))
        u = oracle.usual
        if u.exceeded() and not oracle.overridden(t_ms):
            raise _fail(CeilingExceeded, "the 24 hours ending at %d ms delivered %.4f usual daily maxima, "
                        "with no override confirmed (allowed: 1 + one stroke = %.4f)"
                        % (t_ms, u.total / ONE, 1 + u.largest() / ONE),
                        strokes_in_window=len(u.strokes), reservoir=oracle.reservoir,
                        catheter=list(oracle.catheter.segments))

    # -- (b) ---------------------------------------------------------------------
    def gap_ended(self, oracle, t_end):
        """The stretch without strokes from the last stroke (or restart) to
        t_end, where a stroke or the loss of power ends it."""
        self.count += 1
        if not oracle.delivery_owed():
            return
        t0 = oracle.gap_start()
        deadline = oracle.stroke_deadline_ms(t0, t_end) + SLACK_MS
        # A critical alarm active through the gap's end sounded in it, or in
        # the repeat interval before its end (raised earlier).
        heard_from = min(t0, t_end - (CRITICAL_REPEAT_MAX_S + 5) * 1000)
        if t_end <= deadline or oracle.sounded(heard_from, t_end) or oracle.silenced(t_end):
            return
        raise _fail(SilentStop, "no stroke from %d to %d ms (%.1f min, allowed %.1f) and no critical tone"
                    % (t0, t_end, (t_end - t0) / 60000, (deadline - t0) / 60000), prescription=oracle.acked.rx)

    def gap_ongoing(self, oracle, snap):
        self.count += 1
        if not oracle.delivery_owed():
            return
        t0, t1 = oracle.gap_start(), snap["t_ms"]
        deadline = oracle.stroke_deadline_ms(t0, t1) + SLACK_MS
        if t1 <= deadline:
            return
        status = snap.get("status") or {}
        critical = [a["name"] for a in status.get("alarms", []) if a.get("critical")]
        details = dict(prescription=oracle.acked.rx, state=status.get("state"), alarms=status.get("alarms"),
                       remaining_nl=oracle.reservoir.remaining_nl)
        if not critical:
            # A critical alarm that sounded in the gap and has cleared since
            # (a battery reading above end of service again, a line pressure
            # back to normal) restarts therapy on its own: the pump says it
            # delivers. It cleared at most a repeat interval after its last
            # pattern, and a stroke is owed within the usual deadline from
            # there. A pump that says it is stopped, with no alarm, is the
            # silent stop itself.
            heard = oracle.last_sounded(t0, t1)
            if heard is not None and status.get("state") == "delivering":
                cleared_by = min(heard + (CRITICAL_REPEAT_MAX_S + 5) * 1000, t1)
                if t1 <= oracle.stroke_deadline_ms(cleared_by, t1) + SLACK_MS:
                    return
            raise _fail(SilentStop, "no stroke for %.1f min (allowed %.1f) and no critical alarm"
                        % ((t1 - t0) / 60000, (deadline - t0) / 60000), **details)
        if (t1 - t0 > (CRITICAL_REPEAT_MAX_S + 5) * 1000 and not oracle.sounded(t0, t1)
                and not oracle.silenced(t1)):
            raise _fail(SilentStop, "stopped %.1f min with %s but the buzzer never sounded"
                        % ((t1 - t0) / 60000, critical), **details)

    # -- (c) ---------------------------------------------------------------------
    def ledger(self, oracle, snap):
        obs = snap.get("observed")
        if obs is None:
            return
        self.count += 2
        if obs["balance_nl"] != 0:
            raise _fail(LedgerUnbalanced, "the pump's books are off by %d nL" % obs["balance_nl"], observed=obs)
        if oracle.state_lost:
            return
        low, high = oracle.gauge_bounds()
        if not low <= obs["remaining_nl"] <= high and oracle.decayed:
            raise _fail(StaleStateRestored, "the pump shows %d nL; truly %d nL (allowed %d..%d); a state record "
                        "decayed since the fill" % (obs["remaining_nl"], high, low, high))
        if not low <= obs["remaining_nl"] <= high:
            raise _fail(GaugeOutOfBounds, "the pump shows %d nL; truly %d nL (allowed %d..%d after %d unclean "
                        "resets since the fill)" % (obs["remaining_nl"], high, low, high,
                                                    oracle.unclean_since_fill),
                        shown_minus_true_strokes=(obs["remaining_nl"] - high) / STROKE_NL)

    # -- (d) ---------------------------------------------------------------------
    def settings(self, oracle, q, reply, before):
        """What the pump holds is what it acknowledged."""
        snap = reply["snap"]
        obs = snap.get("observed")
        if obs is None:
            return
        self.count += 1
        outcome = reply["outcome"]
        if oracle.pending is not None:
            pending = oracle.pending
            if not oracle.resolve(obs):
                raise _fail(AcknowledgedLost, "the power died during %s; the pump restored neither the state "
                            "before it nor after it" % q["op"], before=oracle.acked.differences(obs),
                            after=pending["after"].differences(obs))
            return
        if q["op"] == "decay_state":
            self._decayed(oracle, snap)
            return
        diffs = oracle.acked.differences(obs)
        if snap["boots"] and diffs and oracle.unsaved_before is not None \
                and oracle.unsaved_before.differences(obs) == {}:
            oracle.acked, diffs = oracle.unsaved_before, {}  # obeyed unsaved, then lost at the reset
        if snap["boots"]:
            oracle.unsaved_before = None
        if snap["boots"] and diffs:
            raise _fail(AcknowledgedLost, "after the reset the pump holds other settings than it acknowledged",
                        differences_acked_vs_pump=diffs, boots=snap["boots"])
        if outcome in ("refused", "error") or self._demand_refused(q, reply):
            self._unchanged(q, reply, before, diffs)
        elif diffs:
            raise _fail(AcknowledgedNotApplied, "%s was acknowledged but the pump holds other settings" % q["op"],
                        differences_acked_vs_pump=diffs)

    @staticmethod
    def _demand_refused(q, reply):
        v = reply.get("value")
        return q["op"] == "demand" and reply["outcome"] == "ok" and isinstance(v, list) and v and v[0] != 0

    def _unchanged(self, q, reply, before, diffs):
        snap = reply["snap"]
        why = reply.get("limit") or reply.get("error") or "demand refused %s" % reply.get("value")
        if diffs:
            raise _fail(RefusalChangedState, "%s was refused (%s) but changed the settings" % (q["op"], why),
                        differences_acked_vs_pump=diffs)
        if snap["boots"] or before.get("status") is None or snap.get("status") is None:
            return
        was, now = before["status"], snap["status"]
        for key in ("remaining_nl", "bolus", "drug", "conc_ng_ml"):
            if was.get(key) != now.get(key):
                raise _fail(RefusalChangedState, "%s was refused (%s) but changed %s" % (q["op"], why, key),
                            before=was.get(key), after=now.get(key))

    def _decayed(self, oracle, snap):
        # A decayed record may cost the state, never silently: either the pump
        # restored what it acknowledged, or it says its state is gone (then
        # its settings and gauge count for nothing until the next fill).
        obs, status = snap["observed"], snap.get("status") or {}
        oracle.decayed = True
        flagged = any(a.get("critical") for a in status.get("alarms", [])) and status.get("state") != "delivering"
        if flagged:
            oracle.lost_state(obs)
            return
        diffs = oracle.acked.differences(obs)
        if diffs:
            raise _fail(StaleStateRestored, "the state record decayed and the pump silently runs other settings",
                        differences_acked_vs_pump=diffs, state=status.get("state"), alarms=status.get("alarms"))

    # -- (e) ---------------------------------------------------------------------
    def exceptions(self, reply, flash_failed):
        snap = reply["snap"]
        self.count += 3
        for e in snap["escaped"]:
            raise _fail(EscapedException, "%s escaped the pump in %s" % (e["error"], e["where"]), trace=e["trace"])
        if snap.get("dead"):
            raise _fail(EscapedException, "the pump does not boot any more")
        if reply["outcome"] == "error" and not (flash_failed and reply["error"].startswith("OSError")):
            raise _fail(UnexpectedError, reply["error"], trace=reply.get("trace"))
        fault = (snap.get("status") or {}).get("fault")
        if fault and not (flash_failed and fault.startswith("OSError")):
            raise _fail(InternalFault, "the pump went to its safe state on %s" % fault)

    # -- (f) ---------------------------------------------------------------------
    def clock(self, oracle, snap):
        status = snap.get("status")
        if not status:
            return
        self.count += 1
        shown = status["day"] * 86400 + status["tod_s"]
        true = oracle.true_clock_s(snap["t_ms"])
        if abs(shown - true) > CLOCK_SLACK_S and not clock_flagged(status):
            raise _fail(ClockNotFlagged, "the pump shows %.0f s %s the true time, unflagged"
                        % (abs(shown - true), "behind" if shown < true else "ahead of"), boots=snap["boots"])


def clock_flagged(status):
    # Any way the pump may say its clock is not to be trusted: a status flag
    # or an alarm naming the clock (the firmware's form of it is its own).
    if any(("clock" in k or "time" in k) and v is True for k, v in status.items()):
        return True
    return any("clock" in a.get("name", "") or "time" in a.get("name", "") for a in status.get("alarms", []))
