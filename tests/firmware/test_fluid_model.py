# The emulator's fluid model (boards/unix/fluid_model.py) against oracles
# that do not use its code: exact stroke volumes from the bias in integer
# arithmetic, conservation of every nanolitre and nanogram over random fault
# sequences, first-in-first-out catheter contents, reproducible noise, and a
# pump ticking beside it under heap_lock (the model stays off the tick path).
# mprun: native (also run on the emulator's native build: tests/mprun.py)
import micropython

import alarms
from fixtures import MORPHINE_10MG_ML, continuous, make_pump
from fluid_model import MECHANISM_MAX_MMHG, FluidModel
from lockkit import assert_no_tick_fault, locked_tick

CAP = 20000000
STROKE = 500
DEAD = 200000
PPM = 1000000


def quiet(primed=False):
    # A model with no noise and no fill-level effect: every stroke is exactly its bias.
    m = FluidModel(CAP, STROKE, DEAD, primed=primed, fill_ppm=0)
    m.noise_ppm = 0
    return m


def strokes(m, n):
    for _ in range(n):
        m._stroke()


def test_with_no_noise_n_strokes_deliver_exactly_n_times_the_biased_stroke():
    for bias in (0, -100000, 145000, -145000, 1, -3):
        m = quiet()
        m.bias_ppm = bias
        m.fill(CAP, "morphine", MORPHINE_10MG_ML)
        n = 9999
        strokes(m, n)
        s = m.sinks
        assert s["delivered"][0] + m.catheter_nl() - DEAD == n * STROKE * (PPM + bias) // PPM, bias
        assert CAP - m.res[0] == n * STROKE * (PPM + bias) // PPM


def test_drift_and_wear_accumulate_per_day_of_model_time():
    m = quiet()
    m.fill(CAP, "morphine", MORPHINE_10MG_ML)
    m.drift_ppm_per_day = -1000
    m.wear_ppm_per_day = 500
    m._elapse(10 * 86400000)
    assert m.drift_ppm() == -10000 and m.wear_ppm() == 5000
    strokes(m, 100)
    assert CAP - m.res[0] == 100 * STROKE * (PPM - 15000) // PPM


def test_the_catheter_is_first_in_first_out_so_the_old_drug_leaves_first():
    m = quiet()  # a catheter of saline, as after implant
    a, b = MORPHINE_10MG_ML, 2 * MORPHINE_10MG_ML
    m.fill(CAP, "morphine", a)
    per = DEAD // STROKE
    strokes(m, per)
    assert m.sinks["delivered"] == [DEAD, 0]  # saline first
    strokes(m, per)
    assert m.sinks["delivered"][1] == DEAD * a // 1000000
    m.refill(m.res[0], CAP, "morphine", b)  # a concentration change
    strokes(m, per)
    assert m.sinks["delivered"][1] == 2 * DEAD * a // 1000000  # the bridge: old drug still
    strokes(m, per)
    assert m.sinks["delivered"][1] == 2 * DEAD * a // 1000000 + DEAD * b // 1000000


def test_a_first_fills_drug_gets_its_mass_when_a_prescription_names_it():
    m = FluidModel(CAP, STROKE, DEAD, primed=True)
    m.fill(CAP // 2, None, 0)
    strokes(m, 1000)
    assert m.sinks["delivered"][1] == 0
    m.learn("morphine", MORPHINE_10MG_ML)
    assert_conserved(m)
    assert m.sinks["delivered"][1] == m.sinks["delivered"][0] * MORPHINE_10MG_ML // 1000000


def test_noise_is_reproducible_from_its_seed_with_about_the_sd_asked():
    def volumes(seed):
        m = quiet()
        m.noise_ppm = 10000
        m.reseed(seed)
        m.fill(CAP, "morphine", MORPHINE_10MG_ML)
        out = []
        for _ in range(3000):
            before = m.res[0]
            m._stroke()
            out.append(before - m.res[0])
        return out

    a, b, c = volumes(7), volumes(7), volumes(8)
    assert a == b and a != c
    mean = sum(a) / len(a)
    sd = (sum((v - mean) ** 2 for v in a) / len(a)) ** 0.5
    assert abs(mean - STROKE) < 0.5, mean
    assert 4.0 < sd < 6.0, sd  # 1 % of 500 nL, within the nL rounding


def test_an_occluded_line_holds_the_strokes_and_releases_them_at_once():
    m = quiet(primed=True)
    m.fill(CAP, "morphine", MORPHINE_10MG_ML)
    m.set_occluded(True)
    strokes(m, 5)
    assert m.sinks["delivered"][0] == 0 and m.held_nl == 2500
    assert m.pressure_mmhg() == 400
    m.set_occluded(False)
    assert m.release_last_nl == 2500 and m.sinks["delivered"][0] == 2500 and m.pressure_mmhg() == 0
    assert_conserved(m)


def test_a_pocket_fill_and_a_disconnection_send_drug_to_the_pocket():
    m = quiet(primed=True)
    m.fill(CAP // 2, "morphine", MORPHINE_10MG_ML)
    m.pocket_fill_pct = 60
    m.refill(m.res[0], 10000000, "morphine", MORPHINE_10MG_ML)
    assert m.sinks["pocket"] == [6000000, 60000000] and m.res[0] == 4000000
    assert m.pocket_fill_pct == 0  # one refill's miss
    m.leak_pct = 100
    strokes(m, 10)
    assert m.sinks["pocket"][0] == 6005000 and m.sinks["delivered"][0] == 0
    assert_conserved(m)


def totals(m):
    s = m.sinks
    nl = m.res[0] + m.catheter_nl() + s["delivered"][0] + s["pocket"][0] + s["withdrawn"][0]
    ng = m.res[1] + sum(p[1] for p in m.catheter) + s["delivered"][1] + s["pocket"][1] + s["withdrawn"][1]
    return nl, ng


def assert_conserved(m):
    nl, ng = totals(m)
    assert nl == m.sinks["in"][0], (nl, m.sinks["in"][0])
    assert ng == m.sinks["in"][1], (ng, m.sinks["in"][1])
    assert m.catheter_nl() == m.dead_nl + m.held_nl


class Lcg:
    # The test's own random numbers (not the model's generator).
    def __init__(self, seed):
        self.x = seed

    def below(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x % n


def test_every_nanolitre_and_nanogram_is_conserved_over_random_fault_sequences():
    path = "/tmp/fluid-model-test-%d.json" % id(Lcg)
    for seed in range(6):
        r = Lcg(seed)
        m = FluidModel(CAP, STROKE, 1000 + r.below(300000), primed=bool(r.below(2)))
        m.fill(1000000 + r.below(CAP), "morphine", MORPHINE_10MG_ML)
        for _ in range(150):
            op = r.below(11)
            if op == 0:
                m.set_occluded(not m.occluded)
            elif op == 1:
                m.leak_pct = r.below(101)
            elif op == 2:
                m.septum_nl_per_day = r.below(2000000)
            elif op == 3:
                m._elapse(r.below(5 * 86400000))
            elif op == 4:
                m.pocket_fill_pct = r.below(101)
            elif op == 5:
                m.refill(r.below(CAP), 1000000 + r.below(CAP), "morphine", (1 + r.below(25)) * 1000000)
            elif op == 6:
                m.bias_ppm = r.below(1000000) - 500000
                m.noise_ppm = r.below(200001)
                m.reseed(r.below(1000))
            elif op == 7:
                m.drift_ppm_per_day, m.wear_ppm_per_day = r.below(40001) - 20000, r.below(20001)
            elif op == 8:
                m.save(path)
                m = FluidModel.load(path)
            else:
                strokes(m, r.below(300))
            assert_conserved(m)
            assert m.res[0] >= 0 and m.res[1] >= 0 and m.res[0] <= CAP


def test_the_model_saved_and_loaded_is_the_same_model():
    m = FluidModel(CAP, STROKE, primed=True)
    m.fill(CAP, "baclofen", 500000)
    m.bias_ppm, m.septum_nl_per_day, m.leak_pct = -30000, 1000, 20
    strokes(m, 77)
    m.set_occluded(True)
    strokes(m, 3)
    path = "/tmp/fluid-model-save-%d.json" % id(m)
    m.save(path)
    n = FluidModel.load(path)
    assert n.reading() == m.reading()
    strokes(m, 50)
    strokes(n, 50)
    assert n.reading() == m.reading()  # the generator's state went with it
    assert FluidModel.load("/tmp/no-such-fluid-model.json") is None


def test_a_model_saved_again_unchanged_writes_nothing():
    # The emulator saves after every bench request; a reading moves nothing.
    m = FluidModel(CAP, STROKE, primed=True)
    m.fill(CAP, "baclofen", 500000)
    path = "/tmp/fluid-model-unchanged-%d.json" % id(m)
    m.save(path)
    with open(path, "w") as f:
        f.write("not written again")
    m.save(path)
    with open(path) as f:
        assert f.read() == "not written again"
    strokes(m, 1)
    m.save(path)
    assert FluidModel.load(path).reading() == m.reading()


def pump_beside(fluid):
    # A pump at 1 mL/day of morphine 10 mg/mL, the model (reservoir full) on its board.
    pump = make_pump(continuous())
    fluid.fill(CAP, "morphine", MORPHINE_10MG_ML)
    pump.board.fluid = fluid
    return pump


def run_beside(pump, fluid, ms):
    # A virtual-time loop with the tick under heap_lock and the model settled
    # after each tick, unlocked (as boards/unix/unix_board.run_virtual does).
    clock = pump.board.clock
    left = ms
    while left > 0:
        micropython.heap_lock()
        try:
            step = pump.ms_to_next_event()
        finally:
            micropython.heap_unlock()
        step = min(max(step, 1), left)
        clock.advance(step)
        left -= step
        locked_tick(pump)
        fluid.settle(pump.board)
        if pump.needs_service():
            pump.service()
    assert_no_tick_fault(pump)


def test_the_pump_ticks_beside_the_model_without_allocating_and_sees_the_occlusion():
    fluid = quiet(primed=True)
    pump = pump_beside(fluid)
    board = pump.board
    run_beside(pump, fluid, 3600000)
    assert fluid.strokes == board.motor.completed > 80
    fluid.set_occluded(True)
    fluid.sync(board)
    run_beside(pump, fluid, 3600000)
    assert pump.alarms.active & (1 << alarms.OCCLUSION)
    assert fluid.held_nl == 5 * 500 and board.pressure_mmhg() == 400  # 2 strokes below 200 mmHg, 3 above


def test_past_the_mechanisms_limit_strokes_fail_and_the_pump_calls_it_a_stall():
    fluid = FluidModel(CAP, STROKE, primed=True)
    pump = pump_beside(fluid)
    board = pump.board
    fluid.set_occluded(True)
    fluid.sync(board)
    for _ in range(3):  # resumed without clearing the occlusion, twice
        run_beside(pump, fluid, 3600000)
        pump.resume()
    assert board.pressure_mmhg() >= MECHANISM_MAX_MMHG
    run_beside(pump, fluid, 3600000)
    assert pump.alarms.active & (1 << alarms.MOTOR_STALL)


def test_a_worn_gear_train_fails_strokes_until_the_pump_stops_for_a_stall():
    fluid = FluidModel(CAP, STROKE, primed=True)
    pump = pump_beside(fluid)
    board = pump.board
    fluid.wear_acc = 300000 * 86400000  # 30 % worn: 30 % of attempts fail
    for _ in range(48):
        run_beside(pump, fluid, 3600000)
        if pump.alarms.active & (1 << alarms.MOTOR_STALL):
            break
    assert pump.alarms.active & (1 << alarms.MOTOR_STALL)
    assert board.motor.failed >= 3
