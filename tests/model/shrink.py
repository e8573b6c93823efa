"""Shrinks a recorded step sequence (delta debugging on the JSON steps): drops
chunks of steps, then single steps, then halves long advances, as long as the
replay still ends in the same kind of violation. Complements Hypothesis's
shrinker, which gives up after five minutes on long stateful runs."""
from driver import Driver


def violation(harness, steps):
    """The violation replaying `steps` ends in, or None."""
    try:
        Driver(harness).replay(steps)
    except AssertionError as v:
        return v
    return None


def shrink(harness, steps, kind_of, log=lambda msg: None):
    """Returns (smallest steps found, the violation they end in, or None)."""
    first = violation(harness, steps)
    if first is None:
        return steps, None
    target = kind_of(first)

    def still(candidate):
        v = violation(harness, candidate)
        return v is not None and kind_of(v) == target

    steps = _drop_chunks(steps, still, log)
    steps = _halve_advances(steps, still)
    return steps, violation(harness, steps)


def _drop_chunks(steps, still, log):
    size = max(1, (len(steps) - 1) // 2)
    while size >= 1:
        i = 1  # steps[0] starts the pump
        while i < len(steps):
            candidate = steps[:i] + steps[i + size:]
            if len(candidate) > 1 and still(candidate):
                steps = candidate
                log("%d steps" % len(steps))
            else:
                i += size
        size //= 2
    return steps


def _halve_advances(steps, still):
    for i, step in enumerate(steps):
        while step["op"] == "advance" and step["ms"] > 1000:
            candidate = dict(step, ms=step["ms"] // 2)
            trial = steps[:i] + [candidate] + steps[i + 1:]
            if not still(trial):
                break
            steps, step = trial, candidate
    return steps
