# Power cut at every flash write of a clinical workflow: the pump boots, every
# acknowledged change is there, nothing is corrupt, the ledger balances and
# therapy resumes.
from fixtures import HOUR_MS, continuous, flex, run
from flashkit import FlashPump, copy_image, first_fill, new_image
from power_cut import PowerCut

FLEX = [(0, 6000000), (8 * 3600, 9000000), (20 * 3600, 4000000)]


def workflow():
    # Steps of a programming session; each returns once its change is durable.
    steps = [
        lambda p: first_fill(p),
        lambda p: p.set_low_threshold(3000000),
        lambda p: run(p, HOUR_MS),
        lambda p: p.clinician_bolus(200000, 600),
        lambda p: run(p, 1200 * 1000),
        lambda p: p.program(flex(FLEX)),
        lambda p: p.set_alarm_date(20030),
        lambda p: p.suspend(),
        lambda p: p.resume(),
        lambda p: p.refill(p.reservoir.remaining_nl, 18000000),
    ]
    for _ in range(3):  # patient requests without a demand prescription: log records
        steps.append(lambda p: p.demand_bolus())
    steps.append(lambda p: p.set_clock(20001, 9 * 3600))
    steps.append(lambda p: run(p, HOUR_MS))
    return steps


def signature(p):
    r = p.reservoir
    return (p.rx, r.low_nl, r.volume_in_nl, r.withdrawn_nl, p.suspended, p.alarm_day)


def run_workflow(fp):
    # Returns (signature after the last acknowledged step, after the step in flight).
    try:
        pump = fp.power_on()
    except PowerCut:
        return None, None  # died while booting a blank pump: nothing acknowledged yet
    acked = signature(pump)
    for step in workflow():
        try:
            step(pump)
        except PowerCut:
            return acked, signature(pump)
        acked = signature(pump)
    return acked, acked


def check_after_reboot(fp, acked, in_flight):
    pump = fp.power_on()
    sig = signature(pump)
    if acked is not None:
        assert sig == acked or sig == in_flight, (sig, acked, in_flight)
    assert pump.reservoir.balance_nl() == 0
    records = pump.log.read(pump.log.first_seq(), 10000)
    assert all(records[i][0] < records[i + 1][0] for i in range(len(records) - 1))
    if pump.rx is not None and not pump.suspended:
        before = fp.board.motor.attempts
        run(pump, HOUR_MS)
        assert fp.board.motor.attempts > before, "therapy did not resume"


def count_writes(base):
    probe = FlashPump(copy_image(base))
    run_workflow(probe)
    total = probe.dev.writes
    probe.power_off()
    probe.remove()
    return total


def sweep(tear):
    base = new_image()
    try:
        total = count_writes(base)
        assert total >= 200, total
        for n in range(1, total + 1):
            fp = FlashPump(copy_image(base), cut_at=n, tear=tear)
            try:
                acked, in_flight = run_workflow(fp)
                fp.power_off()
                check_after_reboot(fp, acked, in_flight)
                fp.power_off()
            finally:
                fp.remove()
    finally:
        base = None
    print("power cut tried at every one of", total, "write points", "(torn writes)" if tear else "")


def test_power_cut_at_every_write_of_a_workflow_loses_nothing_acknowledged():
    sweep(tear=False)


def test_torn_write_at_every_point_of_a_workflow_loses_nothing_acknowledged():
    sweep(tear=True)
