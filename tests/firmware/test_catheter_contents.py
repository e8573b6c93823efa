# What leaves the catheter tip is what the pump books: random courses of drug
# and strength changes, refills, new doses, clinician and demand boluses,
# catheter revisions with priming, suspensions and clock changes, checked stroke by stroke against an oracle of
# its own: a first-in first-out model of the catheter's contents, fed only
# with what the test did and how many strokes the motor completed. The
# ledger's drug total and every drug's daily totals must equal the oracle's.
# mprun: native (also run on the emulator's native build: tests/mprun.py)
import array
import gc
import random

import events
from fixtures import DAY_MS, HOUR_MS, make_pump, run
from limits import LimitError
from scheduler import KIND_BRIDGE

STROKE_NL = 500
CATHETER_NL = 100000  # 200 strokes
# (drug, ng/mL, ng/day): two strengths of morphine and of hydromorphone (one of
# them weighing what morphine 10 mg/mL weighs against its 24-hour maximum),
# and baclofen.
DRUGS = (("morphine", 10000000, 2000000), ("morphine", 20000000, 3000000),
         ("hydromorphone", 12500000, 2500000), ("hydromorphone", 5000000, 1000000),
         ("baclofen", 2000000, 200000))
SALINE = ""


def rx_of(d):
    return {"drug": d[0], "conc_ng_ml": d[1], "steps": [{"start_s": 0, "dose_ng_day": d[2]}]}


class CatheterOracle:
    # The catheter as [[strokes, drug, ng/mL], ...], tip first.
    def __init__(self, drug):
        self.line = [[CATHETER_NL // STROKE_NL, drug[0], drug[1]]]
        self.reservoir = drug
        self.given = {}  # drug: ng that left the tip

    def strokes(self, n):
        for _ in range(n):
            self.line.append([1, self.reservoir[0], self.reservoir[1]])
            tip = self.line[0]
            if tip[1] != SALINE:
                self.given[tip[1]] = self.given.get(tip[1], 0) + STROKE_NL * tip[2] // 1000000
            tip[0] -= 1
            if not tip[0]:
                self.line.pop(0)

    def new_catheter(self):
        self.line = [[CATHETER_NL // STROKE_NL, SALINE, 0]]


def logged_ng_by_drug(pump):
    out = {}
    for r in pump.log.of_type(events.DAILY_TOTAL):
        drug = bytes(r[8]).decode()
        out[drug] = out.get(drug, 0) + r[7]
    return out


def random_course(seed, steps=40):
    random.seed(seed)
    drug = DRUGS[0]
    pump = make_pump(rx_of(drug))
    pump.catheter.assume_primed(CATHETER_NL)
    oracle = CatheterOracle(drug)
    seen = pump.reservoir.total_strokes()
    for _ in range(steps):
        op = random.choice(("run", "run", "refill", "change", "bolus", "revise", "suspend", "program", "demand",
                            "clock"))
        try:
            if op == "run":
                run(pump, random.randint(1, 12) * HOUR_MS + random.randint(0, 3000))
            elif op == "refill":
                pump.refill(pump.reservoir.remaining_nl, 20000000)
            elif op == "change":  # another drug or strength, or the same again with its prescription
                new = random.choice(DRUGS)
                pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of(new))
                drug = oracle.reservoir = new
            elif op == "bolus":
                pump.clinician_bolus(random.randint(1, 20) * 1000 * drug[1] // 10000000, random.randint(10, 120) * 60)
            elif op == "program":  # the same drug, another dose, with a demand bolus
                rx = rx_of(drug)
                rx["steps"][0]["dose_ng_day"] = drug[2] * random.choice((1, 2)) // random.choice((1, 2))
                rx["demand"] = {"dose_ng": drug[1] // 200, "duration_s": 600, "lockout_s": 3600, "max_per_day": 6}
                pump.program(rx)
            elif op == "demand":
                pump.demand_bolus()
            elif op == "clock":  # another time of day, on the day before, the same day or the next
                pump.set_clock(pump.clock.day + random.choice((-1, 0, 1)), random.randint(0, 86399))
            elif op == "revise":
                n = pump.reservoir.total_strokes()
                oracle.strokes(n - seen)  # the old catheter's last strokes, then it is gone
                seen = n
                pump.revise_catheter(CATHETER_NL)
                oracle.new_catheter()
                pump.priming_bolus(CATHETER_NL, 1200)
            else:
                pump.suspend()
                run(pump, HOUR_MS)
                pump.resume()
        except LimitError:
            pass  # refused, changing nothing (a change during a bridge, a bolus during a bolus)
        n = pump.reservoir.total_strokes()
        oracle.strokes(n - seen)
        seen = n
    run(pump, DAY_MS)
    run(pump, (86400 - pump.clock.tod_s) * 1000 + 2000)  # past midnight: every day before is logged
    pump.service()
    oracle.strokes(pump.reservoir.total_strokes() - seen)
    return pump, oracle, drug


def test_every_drug_the_catheter_gave_is_booked_as_that_drug_over_random_courses():
    for seed in range(1, 61):
        pump, oracle, last = random_course(seed)
        assert pump.reservoir.drug_delivered_ng() == sum(oracle.given.values()), (seed, oracle.given)
        logged = logged_ng_by_drug(pump)
        for drug in set(list(logged) + list(oracle.given)):
            # The day begun at the end is not logged yet: a stroke or two of the last drug.
            slack = 2 * STROKE_NL * last[1] // 1000000 if drug == last[0] else 0
            assert abs(logged.get(drug, 0) - oracle.given.get(drug, 0)) <= slack, (seed, drug, logged, oracle.given)


def test_a_refill_with_the_same_drug_during_a_bridge_lets_the_bridge_run_on():
    # Morphine, then hydromorphone: 200 strokes of morphine to push out at
    # the morphine profile. A refill of hydromorphone with its prescription
    # an hour later must not end that bridge.
    pump = make_pump(rx_of(DRUGS[0]))
    pump.catheter.assume_primed(CATHETER_NL)
    run(pump, HOUR_MS)
    pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of(DRUGS[3]))
    run(pump, HOUR_MS)
    left = pump.sched.bridge_left
    pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of(DRUGS[3]))
    assert pump.sched.bridge_left == left > 0
    run(pump, 2 * DAY_MS)
    assert pump.reservoir.strokes[KIND_BRIDGE] == CATHETER_NL // STROKE_NL


def test_a_drug_change_before_the_catheter_is_primed_bridges_through_the_saline():
    # A revised catheter half primed (100 strokes of saline ahead of 100 of
    # morphine), then hydromorphone: the morphine profile runs until the
    # hydromorphone reaches the tip, 200 strokes, and the saline is no dose.
    pump = make_pump(rx_of(DRUGS[0]))
    pump.revise_catheter(CATHETER_NL)
    pump.priming_bolus(CATHETER_NL // 2, 600)
    run(pump, 700 * 1000)
    given = pump.reservoir.drug_delivered_ng()
    pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of(DRUGS[3]))
    assert pump.sched.bridge_left == CATHETER_NL // STROKE_NL
    run(pump, 2 * DAY_MS)
    assert pump.reservoir.strokes[KIND_BRIDGE] == CATHETER_NL // STROKE_NL // 2  # the morphine, booked as it
    morphine = CATHETER_NL // STROKE_NL // 2 * 5000
    hydromorphone = (pump.reservoir.total_strokes() - 3 * 100) * 2500  # after the priming, the saline, the morphine
    assert pump.reservoir.drug_delivered_ng() - given == morphine + hydromorphone


def test_a_strength_change_the_day_another_drugs_bridge_ended_keeps_the_two_drugs_apart():
    # Morphine, then hydromorphone 5 mg/mL at 20:00 (the bridge runs past
    # midnight), then hydromorphone 12.5 mg/mL the next day: that day's
    # morphine bridge strokes stay morphine in the log.
    pump = make_pump(rx_of(DRUGS[0]), tod_s=20 * 3600)
    pump.catheter.assume_primed(CATHETER_NL)
    pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of(DRUGS[3]))
    run(pump, 18 * HOUR_MS)  # 14:00 the next day: the bridge (200 strokes at 400 a day) ended at 08:00
    assert not pump.sched.bridge_left
    pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of(DRUGS[2]))
    run(pump, DAY_MS)
    recs = [(r[5] & 0xFF, bytes(r[8]), r[6], r[7]) for r in pump.log.of_type(events.DAILY_TOTAL)]
    morphine = [(k, n, ng) for k, drug, n, ng in recs if drug == b"morphine"]
    assert [k for k, _, _ in morphine] == [KIND_BRIDGE, KIND_BRIDGE], recs  # the evening's, the morning's
    assert sum(n for _, n, _ in morphine) == 200 and sum(ng for _, _, ng in morphine) == 200 * 5000, recs
    assert all(ng == n * 2500 for _, drug, n, ng in recs if drug == b"hydromorphone"), recs  # 5 mg/mL only


def test_a_day_count_ended_before_the_last_one_is_logged_keeps_its_drug():
    # Hydromorphone replaces morphine, and the clock is set at once, before
    # the morphine part is logged: that part must not take the new drug's name.
    pump = make_pump(rx_of(DRUGS[0]))
    pump.catheter.assume_primed(CATHETER_NL)
    run(pump, 6 * HOUR_MS)
    morphine = len(pump.board.motor.times(0, 1000000)[0])  # strokes the motor completed so far
    pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of(DRUGS[3]))
    pump.set_clock(pump.clock.day + 1, 3600)  # no service() between: the morphine part still waits
    run(pump, HOUR_MS)
    first = [(bytes(r[8]), r[6], r[7]) for r in pump.log.of_type(events.DAILY_TOTAL)][0]
    assert first == (b"morphine", morphine, morphine * 5000), (first, morphine)


# The hard daily maxima (ng/day) of ../shared/DOMAIN.md, written here apart
# from firmware/limits.py: the ceiling's own figures are what is checked.
HARD_MAX_NG_DAY = {"morphine": 20000000, "hydromorphone": 25000000, "baclofen": 2000000}


class Last24Hours:
    # The most any rolling 24 hours gave, in ppm of the drug's maximum:
    # strokes kept only while inside the window (small arrays, 31-bit ints).
    def __init__(self):
        self.times = array.array("i")
        self.ppm = array.array("i")
        self.first = 0
        self.given = 0
        self.worst = 0

    def stroke(self, t, ppm):
        self.times.append(t)
        self.ppm.append(ppm)
        self.given += ppm
        while t - self.times[self.first] >= DAY_MS:
            self.given -= self.ppm[self.first]
            self.first += 1
        if self.given > self.worst:
            self.worst = self.given
        if self.first > 4096:
            self.times = self.times[self.first:]
            self.ppm = self.ppm[self.first:]
            self.first = 0


def worst_24_hours_of_a_high_dose_course(seed, steps=60):
    # Doses of 20-99 % of the maximum, large boluses (some with --override),
    # demand boluses every 15 min, drug changes and clock changes: the pump
    # refuses what would pass the ceiling. Every stroke is weighed by the
    # oracle's drug at the tip, at the motor's time of it.
    random.seed(seed)

    def rx_of_share(d, pct):
        return {"drug": d[0], "conc_ng_ml": d[1],
                "steps": [{"start_s": 0, "dose_ng_day": HARD_MAX_NG_DAY[d[0]] * pct // 100 // 1000 * 1000}]}
    drug = DRUGS[0]
    pump = make_pump(rx_of_share(drug, 50))
    pump.catheter.assume_primed(CATHETER_NL)
    line = [[CATHETER_NL // STROKE_NL, drug[0], drug[1]]]
    window = Last24Hours()
    seen = 0
    for _ in range(steps):
        op = random.choice(("run", "run", "change", "bolus", "bolus", "program", "demand", "clock"))
        try:
            if op == "run":
                run(pump, random.randint(1, 8) * HOUR_MS + random.randint(0, 3000))
            elif op == "change":
                new = random.choice(DRUGS)
                pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of_share(new, random.randint(20, 95)))
                drug = new
            elif op == "bolus":
                pump.clinician_bolus(HARD_MAX_NG_DAY[drug[0]] * random.randint(5, 25) // 100 // 1000 * 1000,
                                     random.randint(10, 120) * 60, override=random.random() < 0.5)
            elif op == "program":
                rx = rx_of_share(drug, random.randint(20, 99))
                rx["demand"] = {"dose_ng": HARD_MAX_NG_DAY[drug[0]] // 20 // 1000 * 1000, "duration_s": 600,
                                "lockout_s": 900, "max_per_day": 12}
                pump.program(rx, override=random.random() < 0.5)
            elif op == "demand":
                pump.demand_bolus()
            else:
                pump.set_clock(pump.clock.day + random.choice((-1, 0, 1)), random.randint(0, 86399))
        except LimitError:
            pass
        times = pump.board.motor.times(seen, 1000000)[0]
        seen += len(times)
        for t in times:
            line.append([1, drug[0], drug[1]])
            tip = line[0]
            window.stroke(t, STROKE_NL * tip[2] // HARD_MAX_NG_DAY[tip[1]])  # nL x ng/mL / (ng/day): ppm
            tip[0] -= 1
            if not tip[0]:
                line.pop(0)
    return window.worst


# docs/safety.md, invariant 1: the windows are whole minutes, so a minute of
# the rate (at most 1/1440 of the maximum) and one stroke (at most 500 ppm of
# it here) may pass.
TOLERANCE_PPM = 1000000 // 1440 + 500


def test_no_24_hours_pass_the_drugs_hard_maximum_over_random_high_dose_courses():
    for seed in range(1, 13):
        assert worst_24_hours_of_a_high_dose_course(seed) <= 1000000 + TOLERANCE_PPM, seed


def test_delivered_today_is_the_current_drugs_since_midnight_or_its_change_over_random_courses():
    # The status's "delivered today": every stroke since midnight, or since
    # the last change to another drug, whose drug at the tip (the oracle's)
    # is the pump's drug now, each at its own strength.
    for seed in range(1, 31):
        random.seed(seed)
        drug = DRUGS[0]
        pump = make_pump(rx_of(drug))
        pump.catheter.assume_primed(CATHETER_NL)
        oracle = CatheterOracle(drug)
        strokes = StrokesAtTheTip(pump, oracle)
        changed_ms = 0
        for step in range(50):
            op = random.choice(("run", "run", "change", "bolus", "refill", "revise"))
            try:
                if op == "run":
                    run(pump, random.randint(1, 10) * HOUR_MS + random.randint(0, 3000))
                elif op == "change":
                    new = random.choice(DRUGS)
                    pump.refill(pump.reservoir.remaining_nl, 20000000, rx_of(new))
                    if new[0] != drug[0]:
                        changed_ms = pump.board.clock.elapsed_ms
                    drug = oracle.reservoir = new
                elif op == "refill":
                    pump.refill(pump.reservoir.remaining_nl, 20000000)
                elif op == "bolus":
                    pump.clinician_bolus(random.randint(1, 20) * 1000 * drug[1] // 10000000, 600)
                else:
                    strokes.take()
                    pump.revise_catheter(CATHETER_NL)
                    oracle.new_catheter()
                    pump.priming_bolus(CATHETER_NL, 1200)
            except LimitError:
                pass
            strokes.take()
            since = max(pump.board.clock.elapsed_ms // DAY_MS * DAY_MS, changed_ms)  # the clock began at 00:00
            strokes.forget_before(since)
            today = sum(ng for t, d, ng in strokes.given if d == drug[0])
            assert pump.status()["today_dose_ng"] == today, (seed, step, op, drug, today)
        gc.collect()


class StrokesAtTheTip:
    # The strokes the motor completed, each (board ms, drug at the tip, ng)
    # from the oracle, kept from a given time on.
    def __init__(self, pump, oracle):
        self.pump, self.oracle = pump, oracle
        self.seen = 0
        self.given = []

    def take(self):
        times = self.pump.board.motor.times(self.seen, 1000000)[0]
        self.seen += len(times)
        for t in times:
            tip = self.oracle.line[0]
            self.given.append((t, tip[1], STROKE_NL * tip[2] // 1000000 if tip[1] != SALINE else 0))
            self.oracle.strokes(1)

    def forget_before(self, t0):
        self.given = [g for g in self.given if g[0] >= t0]
