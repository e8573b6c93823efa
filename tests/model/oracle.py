"""The campaign's oracle: an independent model of an implanted pump.

It never imports or calls firmware code. Its numbers come from the documents
(docs/dosing.md, docs/limits.md, docs/persistence.md, docs/safety.md, README)
and its state only from what the campaign did: the commands it sent and the
pump acknowledged, the faults it injected, and the motor model's record of
completed strokes (times only: the motor does not know what a stroke was for).

What it models:
- what was acknowledged: prescription, suspension, fills and refills,
  low-reservoir threshold, catheter volume, wall clock;
- the reservoir by its own arithmetic: added minus completed strokes x 500 nL,
  and which drug at which concentration it holds;
- the catheter as a FIFO: it holds saline at implant, every stroke pushes
  500 nL of the reservoir's content in at the pump end and the same volume
  out of the tip into the patient, old drug first after a change;
- the 24-hour ceiling: the sum, over the strokes of any rolling 24 hours, of
  the drug leaving the tip divided by that drug's daily maximum (the hard
  one always; the usual one unless the clinician confirmed an override);
- when strokes are owed, and how far apart they may legitimately be.

Where the model has to assume something, it assumes in the pump's favour and
says so (a stroke against an occluded catheter moves nothing; a bolus or a
bridge interrupted by a reset may run on for what it did since its last
checkpoint; the first prescription after a fill names what was filled).
"""
import math
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field, replace

# -- numbers from the documents ------------------------------------------------
STROKE_NL = 500  # docs/dosing.md: the emulated mechanism's stroke
RESIDUAL_NL = 1_000_000  # docs/safety.md: at 1 mL the pump treats itself as empty
RESERVE_STROKES = 32  # docs/persistence.md: a saved state counts up to 32 strokes ahead
CHECKPOINT_MAX_MS = 3_600_000  # docs/persistence.md: delivery is saved at least every hour
# Commands the pump acknowledges only once saved (a demand may be refused unsaved).
SAVING_OPS = {"program", "clinician_bolus", "priming_bolus", "refill", "resume", "set_clock", "low_threshold",
              "identity", "catheter", "first_fill", "prime", "start_therapy"}
FLASH_RETRY_MS = 60_000  # firmware/pump.py FLASH_RETRY_S: a failed save is tried again after this
OCCLUSION_MMHG = 200  # docs/safety.md: a stroke against more pressure than this is not delivered
CRITICAL_SILENCE_S = 3600  # docs/safety.md: acknowledging silences a critical alarm for 1 h
CRITICAL_REPEAT_MAX_S = 900  # docs/safety.md: the slowest critical repeat (battery, 15 min)
TWO_TONE_SEGMENT_MS = 250  # DOMAIN.md/safety.md: critical = two tones alternating, 3 s
DAY_MS = 86_400_000
NL_PER_ML = 1_000_000

# Daily maxima in ng/day, incl. boluses (docs/limits.md): the tables of them
# in the campaign; update them here when the limits change. The usual (soft)
# maximum may be passed only after the clinician confirmed an override; the
# hard maximum never (it differs where a source gives two figures).
DAILY_MAX_NG = {
    "morphine": 20_000_000,
    "hydromorphone": 25_000_000,
    "ziconotide": 19_200,
    "baclofen": 1_000_000,
    "clonidine": 2_000_000,
    "bupivacaine": 20_000_000,
    "sufentanil": 100_000,
}
HARD_DAILY_MAX_NG = dict(DAILY_MAX_NG, ziconotide=21_600, baclofen=2_000_000)
UNKNOWN_DRUG_MAX_NG = 1  # a drug the table does not know: any of it is too much

# The emulator's built-in therapy of a new, non-blank pump (README).
DEMO_DRUG, DEMO_CONC, DEMO_FILL_NL = "morphine", 10_000_000, 20_000_000

# Shares of a daily maximum are exact integers in units of 1/ONE.
_L = math.lcm(*DAILY_MAX_NG.values(), *HARD_DAILY_MAX_NG.values())
ONE = NL_PER_ML * _L


def share(maxima, drug, conc_ng_ml, volume_nl):
    """Drug in `volume_nl` at `conc_ng_ml` as a fraction (x ONE) of its daily maximum."""
    if drug is None:
        return 0  # saline or air
    top = maxima.get(drug)
    if top is None:
        return volume_nl * conc_ng_ml * _L // UNKNOWN_DRUG_MAX_NG
    return volume_nl * conc_ng_ml * (_L // top)


def interval_ms(rx):
    """Longest time between strokes any flex step of `rx` allows, in ms (None if unusable)."""
    try:
        conc = rx["conc_ng_ml"]
        rates = [s["dose_ng_day"] * NL_PER_ML / conc for s in rx["steps"]]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    if not rates or min(rates) <= 0:
        return None
    return STROKE_NL / min(rates) * DAY_MS


# -- the physical pump -----------------------------------------------------------
class Catheter:
    """FIFO of the fluid in the catheter, pump end first: [drug, conc, nL] segments."""

    def __init__(self, volume_nl=0):
        self.volume_nl = volume_nl
        self.segments = deque([[None, 0, volume_nl]]) if volume_nl else deque()

    def push(self, drug, conc, volume_nl):
        """Pushes `volume_nl` in; returns the [(drug, conc, nL)] leaving the tip."""
        if not self.volume_nl:
            return [(drug, conc, volume_nl)]
        head = self.segments[0] if self.segments else None
        if head is not None and head[0] == drug and head[1] == conc:
            head[2] += volume_nl
        else:
            self.segments.appendleft([drug, conc, volume_nl])
        out, left = [], volume_nl
        while left:
            tail = self.segments[-1]
            n = min(left, tail[2])
            out.append((tail[0], tail[1], n))
            tail[2] -= n
            left -= n
            if not tail[2]:
                self.segments.pop()
        return out


@dataclass
class Reservoir:
    remaining_nl: int = 0
    drug: str = None
    conc_ng_ml: int = 0


class CeilingWindow:
    """Shares (of the daily maxima `maxima`) of the strokes of the last 24 h,
    with their sum and largest."""

    def __init__(self, maxima):
        self.maxima = maxima
        self.strokes = deque()  # (t_ms, share)
        self.total = 0
        self.top = deque()  # (t_ms, share), shares decreasing: the window's largest first

    def add(self, t_ms, out):
        """A stroke at t_ms; `out`: the [(drug, conc, nL)] it pushed out of the tip."""
        s = sum(share(self.maxima, drug, conc, nl) for drug, conc, nl in out)
        self.strokes.append((t_ms, s))
        self.total += s
        while self.top and self.top[-1][1] <= s:
            self.top.pop()
        self.top.append((t_ms, s))
        while self.strokes[0][0] <= t_ms - DAY_MS:
            self.total -= self.strokes.popleft()[1]
        while self.top[0][0] <= t_ms - DAY_MS:
            self.top.popleft()

    def largest(self):
        return self.top[0][1] if self.top else 0

    def exceeded(self):
        """True when the window holds more than one daily maximum plus one stroke."""
        return self.total > ONE + self.largest()


# -- what the clinician was told -------------------------------------------------
def normal_rx(rx):
    """A prescription in one canonical form: the pump may keep it in another
    (defaults left out, boluses sorted) and still hold the same therapy."""
    if not isinstance(rx, dict):
        return rx
    d = rx.get("demand")
    return (rx.get("drug"), rx.get("conc_ng_ml"),
            tuple((s.get("start_s"), s.get("dose_ng_day")) for s in rx.get("steps") or []),
            tuple(sorted((b.get("time_s"), b.get("dose_ng"), b.get("duration_s")) for b in rx.get("periodic") or [])),
            None if not d else (d.get("dose_ng"), d.get("duration_s"), d.get("lockout_s"), d.get("max_per_day")))


@dataclass(frozen=True)
class Acked:
    """Settings the pump acknowledged, as a programmer would read them back."""
    rx: dict = None
    suspended: bool = False
    catheter_nl: int = 0
    volume_in_nl: int = 0
    withdrawn_nl: int = 0
    low_nl: int = 0

    @staticmethod
    def of(observed):
        return Acked(**{k: observed[k] for k in Acked.__dataclass_fields__})

    def differences(self, observed):
        same = {"rx": lambda a, b: normal_rx(a) == normal_rx(b)}
        return {k: (getattr(self, k), observed.get(k)) for k in Acked.__dataclass_fields__
                if not same.get(k, lambda a, b: a == b)(getattr(self, k), observed.get(k))}


@dataclass
class BolusWindow:
    """An acknowledged bolus that replaces the basal while it runs."""
    start_ms: int
    end_ms: int


@dataclass
class Oracle:
    acked: Acked = field(default_factory=Acked)
    reservoir: Reservoir = field(default_factory=Reservoir)
    catheter: Catheter = field(default_factory=Catheter)
    window: CeilingWindow = field(default_factory=lambda: CeilingWindow(HARD_DAILY_MAX_NG))
    usual: CeilingWindow = field(default_factory=lambda: CeilingWindow(DAILY_MAX_NG))
    rx_override: bool = False  # the prescription running was confirmed with an override
    override_until_ms: int = 0  # an override's doses are in the 24-hour window until then
    clock_s: int = 0  # true wall clock (s since 1970) at board time clock_at_ms
    clock_at_ms: int = 0
    epoch_s: int = 0  # the world's clock at board time 0 (the bench's stand-in for an RTC)
    occluded: bool = False
    bridge_rx: dict = None  # the old profile a bridge may still be running
    bridge_left: int = 0  # strokes it may still take
    boluses: list = field(default_factory=list)
    ack_ms: list = field(default_factory=list)  # acknowledged alarm silences
    critical_sounds: list = field(default_factory=list)  # board times of two-tone patterns
    last_tone: tuple = None
    last_stroke_ms: int = None
    restart_ms: int = 0  # last moment delivery (re)started on command or boot
    unclean_since_fill: int = 0
    # Strokes delivered since the fill while the flash refused writes: the
    # pump cannot save them (its flash-fault alarm sounds meanwhile), so a
    # reset may forget them (docs/persistence.md, "When a write fails").
    flash_failing: bool = False
    unsaved_since_fill: int = 0
    # The last flash outage (board times): a reset during it, or before the
    # pump saved again after it, restores a state as old as its start.
    outage_from_ms: int = None
    outage_to_ms: int = None
    state_lost: bool = False  # the state record decayed: the pump starts over
    decayed: bool = False  # a state record decayed since the last fill
    pending: dict = None  # command in flight when the power died
    # The settings before a stop or a silence the pump obeyed without flash
    # (docs/persistence.md): a reset may bring them back, until a later
    # command is saved.
    unsaved_before: Acked = None

    # -- start --------------------------------------------------------------
    @classmethod
    def start(cls, mode, hello):
        o = cls(acked=Acked.of(hello["snap"]["observed"]), clock_s=hello["epoch_s"], epoch_s=hello["epoch_s"])
        if mode == "demo":
            o.reservoir = Reservoir(DEMO_FILL_NL, DEMO_DRUG, DEMO_CONC)
        return o

    # -- commands -------------------------------------------------------------
    def acknowledged(self, q, value, t_ms):
        """The pump acknowledged command `q` at board time t_ms."""
        old_rx = self.acked.rx
        op = q["op"]
        if op in ("suspend", "acknowledge") and value is not None:
            saved = value[1] if op == "acknowledge" else value  # (acknowledged, saved) / saved
            value = value[0] if op == "acknowledge" else None
            if not saved and self.unsaved_before is None:
                self.unsaved_before = self.acked
            elif saved:
                self.unsaved_before = None
        elif op in SAVING_OPS:
            self.unsaved_before = None  # a command saved: everything before it is on flash
        self.acked = self.after(q, self.acked)
        if op == "first_fill":
            self.reservoir = Reservoir(q["volume_nl"], q.get("drug"), q.get("conc_ng_ml", 0))
            self.unclean_since_fill = self.unsaved_since_fill = 0
            self.state_lost = self.decayed = False
        elif op == "refill":
            self._refill(q, old_rx)
        elif op == "catheter":
            self.catheter = Catheter(self.acked.catheter_nl)
        elif op == "set_clock":
            self.clock_s, self.clock_at_ms = q["day"] * 86400 + q["tod_s"], t_ms
        elif op == "acknowledge" and value is not False:
            self.ack_ms = self.ack_ms[-8:] + [t_ms]
        elif op == "suspend":
            self.boluses.clear()  # a suspend cancels a running bolus
        elif op in ("clinician_bolus", "priming_bolus", "prime"):
            self._bolus(q, t_ms)
        if old_rx is None and self.acked.rx is not None and op in ("program", "start_therapy"):
            self._filled_with(self.acked.rx)
        if op in ("program", "start_therapy", "refill", "resume", "clinician_bolus", "priming_bolus", "prime"):
            self.restart_ms = max(self.restart_ms, t_ms)
        self._override(q, t_ms)

    def _override(self, q, t_ms):
        op, confirmed = q["op"], bool(q.get("override"))
        if op in ("program", "start_therapy") or (op == "refill" and q.get("rx")):
            if self.rx_override and not confirmed:
                self.override_until_ms = t_ms + DAY_MS  # the overridden therapy's doses age out
            self.rx_override = confirmed
        elif op == "clinician_bolus" and confirmed:
            self.override_until_ms = max(self.override_until_ms, t_ms + q["duration_s"] * 1000 + DAY_MS)

    def overridden(self, t_ms):
        """The clinician confirmed going above the usual maximum for this window."""
        return self.rx_override or t_ms <= self.override_until_ms

    def after(self, q, acked):
        """The acknowledged settings once command `q` has been applied."""
        op = q["op"]
        if op == "program":
            return replace(acked, rx=q["rx"])
        if op == "start_therapy":
            return replace(acked, rx=q["rx"], suspended=False)
        if op == "refill":
            rx = q.get("rx") or acked.rx
            return replace(acked, rx=rx, volume_in_nl=acked.volume_in_nl + q["added_nl"],
                           withdrawn_nl=acked.withdrawn_nl + q["withdrawn_nl"])
        if op == "first_fill":
            return replace(acked, volume_in_nl=acked.volume_in_nl + q["volume_nl"])
        if op == "catheter":
            return replace(acked, catheter_nl=sum(seg[1] for seg in q["segments"]))
        if op == "suspend":
            return replace(acked, suspended=True)
        if op == "resume":
            return replace(acked, suspended=False)
        if op == "low_threshold":
            return replace(acked, low_nl=q["volume_nl"])
        return acked

    def _filled_with(self, rx):
        # The first prescription after a fill names what the clinician filled:
        # the pump cannot tell otherwise, and a prescription for another drug
        # than the one in it is the clinician's mix-up, not the pump's.
        r, drug, conc = self.reservoir, rx["drug"], rx["conc_ng_ml"]
        for seg in self.catheter.segments:
            if (seg[0], seg[1]) == (r.drug, r.conc_ng_ml) and r.drug is not None:
                seg[0], seg[1] = drug, conc
        r.drug, r.conc_ng_ml = drug, conc

    def _refill(self, q, old):
        # The clinician fills what the new prescription names, else what the
        # pump's prescription names (else more of what is in it).
        rx, r = q.get("rx") or old, self.reservoir
        drug, conc = (rx["drug"], rx["conc_ng_ml"]) if rx else (r.drug, r.conc_ng_ml)
        rx = q.get("rx")
        if rx and old is not None and (old["drug"], old["conc_ng_ml"]) != (drug, conc):
            self.bridge_rx = old  # the old profile may run while the catheter's old drug goes out
            self.bridge_left = -(-self.catheter.volume_nl // STROKE_NL) + 2
        self.reservoir = Reservoir(q["added_nl"], drug, conc)
        self.unclean_since_fill = self.unsaved_since_fill = 0
        self.state_lost = self.decayed = False

    def _bolus(self, q, t_ms):
        end = t_ms + q["duration_s"] * 1000
        self.boluses = [b for b in self.boluses if b.end_ms > t_ms - DAY_MS] + [BolusWindow(t_ms, end)]

    def in_flight(self, q, t_ms):
        """The power died while command `q` ran: it may or may not have been applied."""
        self.pending = {"q": q, "t_ms": t_ms, "after": self.after(q, self.acked)}
        # What leaves no trace in the settings is assumed to have happened,
        # which only widens what the pump may do (a silence, a bolus).
        if q["op"] == "acknowledge":
            self.ack_ms = self.ack_ms[-8:] + [t_ms]
        elif q["op"] in ("clinician_bolus", "priming_bolus", "prime"):
            self._bolus(q, t_ms)

    def resolve(self, observed):
        """After the reboot: adopt whichever of before/after the pump restored.
        Returns False when it restored neither."""
        p, self.pending = self.pending, None
        if self.acked.differences(observed) == {}:
            return True
        if p["after"].differences(observed) == {}:
            self.acknowledged(p["q"], None, p["t_ms"])
            if p["q"]["op"] in ("refill", "first_fill"):
                self.unclean_since_fill = 1  # the reset came after the fill
            return True
        if self.unsaved_before is not None and self.unsaved_before.differences(observed) == {}:
            self.acked, self.unsaved_before = self.unsaved_before, None  # a stop obeyed without flash, lost
            return True
        return False

    # -- the world --------------------------------------------------------------
    def fault(self, q, t_ms):
        if q["op"] == "pressure":
            self.occluded = q["mmhg"] > OCCLUSION_MMHG
        elif q["op"] == "flash_fault":
            if q["on"] and not self.flash_failing:
                self.outage_from_ms, self.outage_to_ms = t_ms, None
            elif not q["on"] and self.flash_failing:
                self.outage_to_ms = t_ms
            self.flash_failing = bool(q["on"])

    def tones(self, tones):
        """Pattern changes [t_ms, hz]; two tones alternating within a segment = critical."""
        for t, hz in tones:
            last = self.last_tone
            if last is not None and hz != last[1] and t - last[0] <= TWO_TONE_SEGMENT_MS + 50:
                if not self.critical_sounds or self.critical_sounds[-1] != last[0]:
                    self.critical_sounds.append(last[0])
            self.last_tone = (t, hz)

    def stroke(self, t_ms):
        """A stroke completed at t_ms: debit the reservoir, push the catheter,
        count what reached the patient. A stroke against an occluded catheter
        moves nothing (and delivers nothing: it does not end a stop)."""
        if self.occluded:
            return
        self.last_stroke_ms = t_ms
        if self.flash_failing:
            self.unsaved_since_fill += 1
        r = self.reservoir
        r.remaining_nl -= STROKE_NL
        out = self.catheter.push(r.drug, r.conc_ng_ml, STROKE_NL)
        self.window.add(t_ms, out)
        self.usual.add(t_ms, out)
        if self.bridge_left:
            self.bridge_left -= 1

    def boot(self, boot):
        # A bolus under way resumes for the rest of its duration as last saved
        # (docs/persistence.md): it may run on for the time the pump was off
        # and the time it ran since its last checkpoint (an hour at most, or
        # since a flash outage began: the pump could save nothing after).
        down, up = boot["down_ms"], boot["t_ms"]
        stale = CHECKPOINT_MAX_MS
        if self.outage_from_ms is not None and (self.outage_to_ms is None
                                                or down - self.outage_to_ms <= CHECKPOINT_MAX_MS + FLASH_RETRY_MS):
            stale += down - self.outage_from_ms
        for b in self.boluses:
            if b.start_ms <= down < b.end_ms:
                b.end_ms += up - down + min(down - b.start_ms, stale)
        self.restart_ms = boot["t_ms"]
        self.unclean_since_fill += 1  # every reset in the campaign is unclean
        if self.bridge_rx is not None:
            # A bridge resumes from its last checkpoint: its profile may run
            # for the strokes it did since once more.
            self.bridge_left += RESERVE_STROKES + 2

    def rtc_boot(self, t_ms):
        """A pump with no therapy boots on the world's clock (the emulator's
        stand-in for an RTC): from then on that is the time it should show."""
        self.clock_s, self.clock_at_ms = self.epoch_s + t_ms // 1000, t_ms - t_ms % 1000

    def lost_state(self, observed):
        """The state record decayed and the pump started over: what it now holds
        is all a clinician could rely on until the next fill."""
        self.acked = Acked.of(observed)
        self.unsaved_before = None  # what the pump holds now is the new baseline
        self.state_lost = True
        self.bridge_rx = None
        self.boluses.clear()

    # -- expectations ---------------------------------------------------------------
    def true_clock_s(self, t_ms):
        return self.clock_s + (t_ms - self.clock_at_ms) / 1000

    def gauge_bounds(self):
        """(lowest, highest) reservoir volume the pump may show."""
        r = self.reservoir.remaining_nl
        # Strokes a reset forgot because they could not be saved read high.
        unsaved = self.unsaved_since_fill if self.unclean_since_fill else 0
        return r - self.unclean_since_fill * RESERVE_STROKES * STROKE_NL, r + unsaved * STROKE_NL

    def delivery_owed(self):
        """True while the acknowledged therapy must be delivering."""
        a = self.acked
        low, _ = self.gauge_bounds()
        return (a.rx is not None and not a.suspended and not self.state_lost
                and low > RESIDUAL_NL + STROKE_NL and interval_ms(a.rx) is not None)

    def stroke_deadline_ms(self, t0, t1):
        """Latest a stroke may come after one at t0 (or a restart), looking at
        what ran in [t0, t1]: two of the slowest basal intervals (the profile
        now, or the old one a bridge may still run), counted from the end of
        any bolus replacing the basal meanwhile (a reset may have taken up to
        32 of its strokes, docs/persistence.md, so it may give nothing more)."""
        ivs = [interval_ms(self.acked.rx)]
        if self.bridge_left and self.bridge_rx is not None:
            ivs.append(interval_ms(self.bridge_rx) or 0)
        ends = [b.end_ms for b in self.boluses if b.start_ms <= t1 and b.end_ms >= t0]
        return max([t0] + ends) + 2 * max(ivs)

    def gap_start(self):
        return max(self.restart_ms, self.last_stroke_ms or 0)

    def sounded(self, t0, t1):
        """A critical two-tone pattern started in [t0, t1]."""
        i = bisect_left(self.critical_sounds, t0)
        return i < len(self.critical_sounds) and self.critical_sounds[i] <= t1

    def last_sounded(self, t0, t1):
        """The start of the last critical two-tone pattern in [t0, t1], or None."""
        i = bisect_right(self.critical_sounds, t1)
        return self.critical_sounds[i - 1] if i and self.critical_sounds[i - 1] >= t0 else None

    def silenced(self, t_ms):
        """An acknowledgement may still be silencing a critical alarm at t_ms."""
        quiet = (CRITICAL_SILENCE_S + CRITICAL_REPEAT_MAX_S + 10) * 1000
        return any(t_ms - quiet <= a <= t_ms for a in self.ack_ms)
