# The fluid path as it really is, beside what the pump believes: the true
# reservoir, the true volume of each stroke, the catheter's contents in
# order (tip first), and where every nanolitre and nanogram went (the
# intrathecal space, the subcutaneous pocket, the clinician's syringe).
# Bench equipment (docs/fluid-model.md): nothing in firmware/ imports it,
# and the pump sees only what a real pump sees (stroke confirmation, the
# pressure sensor, the battery, what the clinician enters).
#
# Not on the tick path: the emulator settles it after each tick, where it
# may allocate (totals pass 2^30 nL within months: long ints on a 31-bit
# port). What the tick reads are small ints and flags it leaves on the board
# (occlusion_mmhg, occlusion_rise) and the motor (blocked, worn).
#
# A parcel of fluid is [nl, ng, drug, label]: label is the concentration the
# syringe was labelled with (ng/mL; 0 saline), PENDING while no prescription
# has named the drug of a first fill; its mass is then assigned once one does.
import json
import os

from micropython import const

PPM = const(1000000)
DAY_MS = const(86400000)
NL_PER_ML = const(1000000)
PENDING = const(-1)

# Defaults and ranges: docs/fluid-model.md says where each comes from.
DEAD_VOLUME_NL = const(200000)  # 0.2 mL: ~90 cm of 0.53 mm ID catheter (0.0022 mL/cm)
MMHG_PER_UL = const(160)  # occluded line: 6.25 nL per mmHg of compliance
MECHANISM_MAX_MMHG = const(600)  # above this the rollers cannot push a stroke
FILL_PPM = const(5000)  # stroke +0.5 % with a full reservoir, -0.5 % empty, 0 at half
BODY_TEMP_DC = const(370)  # 37.0 degC, in tenths
TEMP_PPM_PER_DC = const(100)  # +0.1 % per degC above body temperature
NOISE_PPM = const(10000)  # per-stroke SD: 1 %
SEED = const(1)
_NOISE_MEAN = const(510)  # the sum of four random bytes: mean 510 ...
_NOISE_SD = const(148)  # ... SD 147.8: roughly normal, bounded at 3.4 SD
_MASK32 = const(0xFFFFFFFF)

# What a save keeps (the per-boot counters of the motor are not: a reset
# starts them again from 0).
_FIELDS = ("capacity_nl", "nominal_nl", "dead_nl", "fill_ppm", "bias_ppm", "noise_ppm", "drift_ppm_per_day",
           "seed", "temp_dc", "wear_ppm_per_day", "occluded", "leak_pct", "pocket_fill_pct", "septum_nl_per_day",
           "rng", "carry", "drift_acc", "wear_acc", "leak_acc", "age_ms", "held_nl", "strokes", "stroke_nl_last",
           "released_nl", "release_last_nl", "pocket_fill_last_nl", "res", "catheter", "sinks", "pending")
_SINKS = ("in", "delivered", "pocket", "withdrawn")


def _take(parcel, nl):
    # Takes nl (at most all) out of a parcel; returns the mass that went
    # with it. Floor shares: the last of a parcel takes what is left, so
    # mass is conserved exactly.
    if nl >= parcel[0]:
        m = parcel[1]
        parcel[0] = parcel[1] = 0
        return m
    m = parcel[1] * nl // parcel[0]
    parcel[0] -= nl
    parcel[1] -= m
    return m


class FluidModel:
    def __init__(self, capacity_nl, stroke_nl, dead_nl=DEAD_VOLUME_NL, primed=False, fill_ppm=FILL_PPM):
        # primed: the catheter starts full of the first fill's drug (the
        # demonstration pump); otherwise of saline, as after implant.
        self.capacity_nl = capacity_nl
        self.nominal_nl = stroke_nl
        self.dead_nl = dead_nl
        self.fill_ppm = fill_ppm
        self.bias_ppm = 0
        self.noise_ppm = NOISE_PPM
        self.drift_ppm_per_day = 0
        self.temp_dc = BODY_TEMP_DC
        self.wear_ppm_per_day = 0
        self.reseed(SEED)
        self.occluded = False
        self.leak_pct = 0  # share of what leaves the tip that goes to the pocket (disconnection)
        self.pocket_fill_pct = 0  # armed for the next refill
        self.septum_nl_per_day = 0
        self.carry = 0  # stroke volume below 1 nL, in nL/PPM, carried to the next stroke
        self.drift_acc = self.wear_acc = self.leak_acc = 0  # ppm*ms, ppm*ms, nL*ms
        self.age_ms = 0
        self.held_nl = 0  # pushed into the occluded line beyond its dead volume
        self.strokes = 0  # strokes that moved fluid
        self.stroke_nl_last = 0
        self.released_nl = self.release_last_nl = self.pocket_fill_last_nl = 0
        self.res = [0, 0, None, PENDING]
        self.catheter = [[dead_nl, 0, None, PENDING] if primed else [dead_nl, 0, "saline", 0]]
        self.sinks = {k: [0, 0] for k in _SINKS}
        self.sinks["in"][0] = dead_nl
        self.pending = {k: 0 for k in _SINKS}  # nL of a not yet named drug, per sink
        self.pending["in"] = dead_nl if primed else 0
        self.saved = {}  # path -> what save() last wrote there
        self.new_boot()

    def new_boot(self):
        # The board (and its motor's counters) started again from 0.
        self.seen_strokes = self.seen_attempts = self.board_ms = 0

    def reseed(self, seed):
        self.seed = seed
        self.rng = (seed * 2654435761 + 1) & _MASK32 or 1

    # -- random numbers: xorshift32, the same on every port ---------------
    def _next(self):
        x = self.rng
        x ^= (x << 13) & _MASK32
        x ^= x >> 17
        x ^= (x << 5) & _MASK32
        self.rng = x
        return x

    def _noise_ppm(self):
        if not self.noise_ppm:
            return 0  # no draw: a noiseless run is exactly its bias
        x = self._next()
        s = (x & 255) + (x >> 8 & 255) + (x >> 16 & 255) + (x >> 24)
        return self.noise_ppm * (s - _NOISE_MEAN) // _NOISE_SD

    # -- derived figures ---------------------------------------------------
    # Methods, not properties: a class with a property makes every attribute
    # store look for a setter first (MicroPython), and settle stores many.
    def drift_ppm(self):
        return self.drift_acc // DAY_MS

    def wear_ppm(self):
        return self.wear_acc // DAY_MS

    def catheter_nl(self):
        return sum(p[0] for p in self.catheter)

    def pressure_mmhg(self):
        return self.held_nl * MMHG_PER_UL // 1000 if self.occluded else 0

    def error_ppm(self):
        # The stroke's systematic error now (noise aside).
        half = self.capacity_nl // 2
        fill = self.fill_ppm * (self.res[0] - half) // half
        temp = (self.temp_dc - BODY_TEMP_DC) * TEMP_PPM_PER_DC
        return self.bias_ppm + self.drift_ppm() - self.wear_ppm() + fill + temp

    # -- after each tick -----------------------------------------------------
    def settle(self, board, force=False):
        # Moves the fluid for what the board did since the last settle. With
        # no stroke begun or completed since, and no septum leak, it waits
        # (unless forced): the time-driven figures (drift, wear, age) grow
        # linearly, so one later catch-up equals many small steps, and the
        # emulator's loop settles after every tick (most ticks move nothing).
        motor = board.motor
        if not (force or self.septum_nl_per_day or motor.completed != self.seen_strokes):
            if motor.attempts == self.seen_attempts:
                return
            if not (self.wear_acc or self.wear_ppm_per_day):
                self.seen_attempts = motor.attempts  # an unworn gear train completes every attempt
                return
        now = board.clock.elapsed_ms
        if now > self.board_ms:
            self._elapse(now - self.board_ms)
            self.board_ms = now
        done = motor.completed
        for _ in range(done - self.seen_strokes):
            self._stroke()
        self.seen_strokes = done
        if motor.attempts != self.seen_attempts:
            # A new stroke attempt: a worn gear train may not complete it.
            self.seen_attempts = motor.attempts
            wear = self.wear_ppm()
            motor.worn = wear > 0 and self._next() % PPM < wear
        self.sync(board)

    def sync(self, board):
        # What the tick path reads: small ints and flags, nothing to compute.
        p = self.pressure_mmhg()
        board.occlusion_mmhg = p
        board.occlusion_rise = self.nominal_nl * MMHG_PER_UL // 1000 if self.occluded else 0
        board.motor.blocked = p >= MECHANISM_MAX_MMHG

    def _elapse(self, ms):
        self.age_ms += ms
        self.drift_acc += self.drift_ppm_per_day * ms
        self.wear_acc += self.wear_ppm_per_day * ms
        if self.septum_nl_per_day:
            self.leak_acc += self.septum_nl_per_day * ms
            nl = self.leak_acc // DAY_MS
            self.leak_acc -= nl * DAY_MS
            r = self.res
            nl = min(nl, r[0])
            if nl > 0:
                self._sink("pocket", nl, _take(r, nl), r[3])

    def _stroke_volume(self):
        n = self.nominal_nl * (PPM + self.error_ppm() + self._noise_ppm()) + self.carry
        if n < 0:
            n = 0
        v = n // PPM
        self.carry = n - v * PPM
        return v

    def _stroke(self):
        # One completed motor stroke: the reservoir's fluid enters the
        # catheter; as much leaves the tip, unless the line is occluded.
        r = self.res
        v = min(self._stroke_volume(), r[0])
        self.stroke_nl_last = v
        if v <= 0:
            return  # an empty reservoir: the rollers move nothing
        m = _take(r, v)
        last = self.catheter[-1] if self.catheter else None
        if last is not None and last[2] == r[2] and last[3] == r[3]:
            last[0] += v
            last[1] += m
        else:
            self.catheter.append([v, m, r[2], r[3]])
        self.strokes += 1
        if self.occluded:
            self.held_nl += v
        else:
            self._out_of_tip(v)

    def _out_of_tip(self, nl):
        # First in, first out: after a concentration change the old drug leaves first.
        cath = self.catheter
        while nl > 0 and cath:
            p = cath[0]
            k = min(nl, p[0])
            m = _take(p, k)
            pocket = k * self.leak_pct // 100
            pm = m * pocket // k
            if pocket:  # a catheter leak (usually none)
                self._sink("pocket", pocket, pm, p[3])
            self._sink("delivered", k - pocket, m - pm, p[3])
            nl -= k
            if not p[0]:
                cath.pop(0)

    def _sink(self, name, nl, ng, label):
        s = self.sinks[name]
        s[0] += nl
        s[1] += ng
        if label == PENDING:
            self.pending[name] += nl

    # -- what the clinician does --------------------------------------------
    def learn(self, drug, conc_ng_ml):
        # A prescription names the drug of a first fill: its fluid gets its mass.
        if drug is None or not self.pending["in"]:
            return
        assigned = 0
        for p in [self.res] + self.catheter:
            if p[3] == PENDING:
                ng = p[0] * conc_ng_ml // NL_PER_ML
                p[1] += ng
                p[2], p[3] = drug, conc_ng_ml
                assigned += ng
        for name in _SINKS:
            if name != "in":
                ng = self.pending[name] * conc_ng_ml // NL_PER_ML
                self.sinks[name][1] += ng
                self.pending[name] = 0
                assigned += ng
        self.sinks["in"][1] += assigned  # what came in, now that its mass is known
        self.pending["in"] = 0

    def fill(self, nl, drug, conc_ng_ml):
        # A first fill: the syringe's drug may not be named yet (drug None).
        self._add(nl, drug, conc_ng_ml)

    def refill(self, withdrawn_nl, added_nl, drug, conc_ng_ml):
        # The clinician aspirates (no more than is really there), then injects.
        r = self.res
        w = min(withdrawn_nl, r[0])
        self._sink("withdrawn", w, _take(r, w), r[3])
        self._add(added_nl, drug, conc_ng_ml)

    def _add(self, nl, drug, conc_ng_ml):
        label = PENDING if drug is None else conc_ng_ml
        ng = 0 if drug is None else nl * conc_ng_ml // NL_PER_ML
        self._sink("in", nl, ng, label)
        r = self.res
        into = min(nl - nl * self.pocket_fill_pct // 100, self.capacity_nl - r[0])
        pocket = nl - into  # the needle missed the septum, or a full reservoir overflowed
        pm = ng * pocket // nl if nl else 0
        self._sink("pocket", pocket, pm, label)
        self.pocket_fill_last_nl = pocket
        self.pocket_fill_pct = 0  # a miss is one refill's
        r[0] += into
        r[1] += ng - pm
        r[2], r[3] = drug, label

    # -- faults (bench commands) --------------------------------------------
    def set_occluded(self, on):
        # Cleared: the volume held by the line's compliance leaves the tip at once.
        if self.occluded and not on:
            held, self.held_nl = self.held_nl, 0
            self.occluded = False
            self._out_of_tip(held)
            self.release_last_nl = held
            self.released_nl += held
        self.occluded = on

    # -- the truth, for the bench -----------------------------------------
    def reading(self):
        s = self.sinks
        return {"reservoir_nl": self.res[0], "reservoir_ng": self.res[1], "reservoir_drug": self.res[2],
                "delivered_nl": s["delivered"][0], "delivered_ng": s["delivered"][1],
                "pocket_nl": s["pocket"][0], "pocket_ng": s["pocket"][1],
                "withdrawn_nl": s["withdrawn"][0], "withdrawn_ng": s["withdrawn"][1],
                "added_nl": s["in"][0], "added_ng": s["in"][1],
                "catheter_nl": self.catheter_nl(), "dead_volume_nl": self.dead_nl, "held_nl": self.held_nl,
                "catheter": [{"nl": p[0], "ng": p[1], "drug": p[2], "conc_ng_ml": p[3]} for p in self.catheter],
                "strokes": self.strokes, "stroke_nl_last": self.stroke_nl_last, "error_ppm": self.error_ppm(),
                "pressure_mmhg": self.pressure_mmhg(), "released_nl": self.released_nl,
                "release_last_nl": self.release_last_nl, "pocket_fill_last_nl": self.pocket_fill_last_nl,
                "age_ms": self.age_ms, "drift_ppm": self.drift_ppm(), "wear_ppm": self.wear_ppm(),
                "params": self.params(), "faults": self.faults()}

    def params(self):
        return {"bias_ppm": self.bias_ppm, "noise_ppm": self.noise_ppm, "drift_ppm_per_day": self.drift_ppm_per_day,
                "seed": self.seed, "temp_dc": self.temp_dc, "fill_ppm": self.fill_ppm}

    def faults(self):
        return {"occluded": self.occluded, "leak_pct": self.leak_pct, "pocket_fill_pct": self.pocket_fill_pct,
                "septum_nl_per_day": self.septum_nl_per_day, "wear_ppm_per_day": self.wear_ppm_per_day}

    # -- it is physics: it outlives the pump's resets ------------------------
    def save(self, path):
        # The emulator saves after every bench request, and most of them
        # (readings) move nothing: what `path` already holds is not written again.
        text = json.dumps({k: getattr(self, k) for k in _FIELDS})
        if text == self.saved.get(path):
            return
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)  # a whole file or the previous one, never half
        self.saved[path] = text

    @classmethod
    def load(cls, path):
        # The model saved at `path`, or None when there is none to read.
        try:
            with open(path) as f:
                state = json.loads(f.read())
        except (OSError, ValueError):
            return None
        m = cls(state["capacity_nl"], state["nominal_nl"])
        for k in _FIELDS:
            if k in state:
                setattr(m, k, state[k])
        return m

    @classmethod
    def adopt(cls, capacity_nl, stroke_nl, remaining_nl, drug, conc_ng_ml):
        # A pump that ran before the model existed: its belief is the best truth there is.
        m = cls(capacity_nl, stroke_nl, primed=True)
        m.fill(remaining_nl, drug, conc_ng_ml)
        m.learn(drug, conc_ng_ml)
        return m
