# Issue 15, findings 1 and 3, on the whole firmware: a pump booted from its
# flash (event log, state), the programmer link in the same process. What a
# patient key or garbage on the link can cause at will neither evicts the
# clinical history nor goes unrecorded, and costs the flash a bounded number
# of writes. The log is read back as the host reads it, over LOG_READ.
import binascii
import os
import struct


import alarms
import events
import hal
import link_commands as lc
import wire
from fixtures import HOUR_MS, run
from lockkit import locked_polls
from link import _DEMAND_LIMITS, Link
from scheduler import KIND_DEMAND
from startup import start_pump
from test_link import FLEX, Host, Loop
from unix_board import UnixBoard

PRESSES = 100000
BURSTS = 100  # presses come in bursts, 20 minutes apart: 33 hours of them
BURST_GAP_MS = 20 * 60 * 1000


class FlashPump:
    # A pump booted from a fresh flash folder, its link, and a host.
    def __init__(self):
        self.dir = "/tmp/retention-%s" % binascii.hexlify(os.urandom(4)).decode()
        os.mkdir(self.dir)
        self.board = UnixBoard(virtual=True, flash_dir=self.dir)
        self.pump, self.persist, _ = start_pump(self.board, hal.RESET_POWER_ON)
        self.io = Loop()
        self.link = Link(self.pump, self.io, serial="TEST-0015")
        self.host = Host(self.link, self.io)
        self.keys = self.host.provision()

    def clinical_history(self):
        # Boot and provisioning are there; a clinician sets the clock,
        # programs (demand bolus: lockout 30 min, 4 a day), refills, logs out.
        h, pump = self.host, self.pump
        pump.reservoir.fill(10000000)  # the implant's first fill (bench)
        h.login(wire.ROLE_CLINICIAN, self.keys["clinician"])
        h.ok(lc.SET_CLOCK, {"day": 20000, "tod_s": 8 * 3600})
        h.ok(lc.PROGRAM, {"rx": FLEX})
        h.ok(lc.REFILL, {"withdrawn_nl": pump.reservoir.remaining_nl, "added_nl": 20000000})
        h.ok(lc.LOGOUT)

    def log_over_link(self, keep=None):
        # The whole log as pumpctl reads it, LOG_READ pages from 1 on: the
        # records (those keep() takes), the first reply, and how many were
        # read. Numbers only go up from record to record and page to page.
        h = self.host
        h.login(wire.ROLE_CLINICIAN, self.keys["clinician"])
        recs = []
        nxt = 1
        info = None
        count = last = 0
        while True:
            p = h.ok(lc.LOG_READ, {"first": nxt, "max": lc.LOG_MAX_PER_READ})
            info = info or p
            data, i = p["recs"], 0
            while i < len(data):
                r = struct.unpack_from(lc.LOG_RECORD, data, i)
                n = r[-1]
                r = r[:-1] + (bytes(data[i + lc.LOG_RECORD_LEN:i + lc.LOG_RECORD_LEN + n]),)
                assert nxt <= r[0] and last < r[0] < p["next"], (nxt, last, r[0], p["next"])
                last = r[0]
                count += 1
                if keep is None or keep(r):
                    recs.append(r)
                i += lc.LOG_RECORD_LEN + n
            assert p["next"] > nxt
            nxt = p["next"]
            if nxt > p["last_seq"]:
                break
        h.ok(lc.LOGOUT)
        return recs, info, count

    def end_hour(self):
        # Into the next clock hour: the link's next poll writes the counts.
        run(self.pump, HOUR_MS)
        self.link.poll()

    def remove(self):
        self.pump.log.close()
        _rmtree(self.dir)


def _rmtree(path):
    for entry in os.ilistdir(path):
        if entry[1] == 0x4000:  # a directory
            _rmtree(path + "/" + entry[0])
        else:
            os.remove(path + "/" + entry[0])
    os.rmdir(path)


def with_pump(check):
    fp = FlashPump()
    try:
        check(fp)
    finally:
        fp.remove()


def of(recs, etype, a=None):
    return [r for r in recs if r[3] == etype and (a is None or r[4] == a)]


def test_100000_refused_demand_presses_keep_the_clinical_history_and_count_every_press():
    def check(fp):
        pump, host = fp.pump, fp.host
        fp.clinical_history()
        before = pump.log.read(1, 1000)
        history = [r for r in before if events.clinical(r[3], r[4], r[7])]
        assert {events.BOOT, events.PROVISIONED, events.CLOCK_SET, events.THERAPY_PROGRAMMED,
                events.REFILL, events.LINK_COMMAND} <= set(r[3] for r in history)
        first_flood = pump.log.last_seq() + 1
        given = 0
        refused = {}
        for burst in range(BURSTS):
            host.login(wire.ROLE_PATIENT, fp.keys["patient"])  # the last session went idle
            host.next_id = 1  # message ids are 16-bit: a new session may use them again
            for _ in range(PRESSES // BURSTS):
                t, _, p, _ = host.call(lc.DEMAND)
                if t == lc.DEMAND | wire.REPLY:
                    given += 1
                else:
                    refused[p["limit"]] = refused.get(p["limit"], 0) + 1
            run(pump, BURST_GAP_MS)
        fp.end_hour()
        appended = pump.log.last_seq() - first_flood + 1
        # Read back over the link: the clinical records kept, the records of
        # a foldable kind counted by key, one by one and folded.
        tally = {}

        def visit(r):
            t, a, b, c, d = r[3:8]
            if t == events.REPEATED:
                k = (a, c)
                tally[k] = tally.get(k, 0) + b
            elif events.fold_key(t, a, b, c, d) >= 0:
                k = (t, events.fold_key(t, a, b, c, d))
                tally[k] = tally.get(k, 0) + 1
            return events.clinical(t, a, d)

        clinical, info, count = fp.log_over_link(visit)
        hours = (BURSTS * BURST_GAP_MS + HOUR_MS) // HOUR_MS + 1
        print("retention: %d presses (%d given, refused %r): %d records appended over %d hours, %d held"
              % (PRESSES, given, refused, appended, hours, count))

        # Nothing rolled off; the clinical history is all there, unchanged,
        # and after it every bolus given.
        assert info["first_seq"] == 1 and info["dropped"] == 0
        assert clinical[:len(history)] == history
        assert given >= 4 and len(of(clinical, events.BOLUS_STARTED, KIND_DEMAND)) == given
        assert len([r for r in of(clinical, lc.EV_COMMAND, wire.ROLE_PATIENT) if r[7] == 0]) == given
        # Every press is counted, every refusal by its reason, every audit.
        assert tally[(events.BOLUS_REQUESTED, events.fold_key(events.BOLUS_REQUESTED, KIND_DEMAND, 0, 0, 0))] == PRESSES
        for limit, n in refused.items():
            key = events.fold_key(events.BOLUS_REFUSED, KIND_DEMAND, _DEMAND_LIMITS.index(limit), 0, 0)
            assert tally[(events.BOLUS_REFUSED, key)] == n, limit
        assert tally[(lc.EV_COMMAND, events.fold_key(lc.EV_COMMAND, wire.ROLE_PATIENT, 0, lc.DEMAND, wire.LIMIT))] \
            == PRESSES - given
        assert sum(tally.values()) == PRESSES + 2 * (PRESSES - given)  # and nothing else folded
        # Flash writes: at most 3 records per fold key and clock hour (the
        # request, a refusal per reason, the audit), plus the sessions and
        # what each bolus given writes; 300,000 without folding.
        keys = 1 + len(refused) + 1
        assert appended <= 3 * keys * hours + 2 * BURSTS + 4 * given, appended

    with_pump(check)


def test_a_diary_flood_rolls_off_only_diary_entries():
    def check(fp):
        pump, host = fp.pump, fp.host
        fp.clinical_history()
        history = [r for r in pump.log.read(1, 1000) if events.clinical(r[3], r[4], r[7])]
        host.login(wire.ROLE_PATIENT, fp.keys["patient"])
        n = 5000  # more than the whole log of 4096 records held before the rings
        for i in range(n):
            host.ok(lc.DIARY, {"pain": i % 11, "activity": "rest", "note": "entry %d" % i})
        diary = [0, None]  # how many read back, the newest

        def visit(r):
            if r[3] == events.DIARY:
                diary[0] += 1
                diary[1] = r[8]
            return events.clinical(r[3], r[4], r[7])

        clinical, info, count = fp.log_over_link(visit)
        assert info["first_seq"] == 1
        assert clinical[:len(history)] == history  # then the patient's logout, the clinician's log-in
        assert 1792 <= diary[0] <= 2048 and diary[1] == b"entry %d" % (n - 1)  # the activity ring's worth
        assert info["dropped"] > 0 and info["dropped"] + count <= info["last_seq"]

    with_pump(check)


def test_refused_clinical_commands_after_garbage_are_audited_and_a_flood_of_them_is_bounded():
    def check(fp):
        pump, host, log = fp.pump, fp.host, fp.pump.log
        fp.clinical_history()
        host.login(wire.ROLE_PATIENT, fp.keys["patient"])
        for _ in range(8):  # garbage: the refusal records' burst is used up
            host.push(b"\x05hello\x00")
        host.frames()
        mark = log.last_seq()
        attempts = ((lc.PROGRAM, {"rx": FLEX}), (lc.BOLUS, {"dose_ng": 1000000, "duration_s": 600}),
                    (lc.SUSPEND, None), (lc.SET_CLOCK, {"day": 1, "tod_s": 0}))
        for mtype, args in attempts:
            host.err(mtype, args, wire.FORBIDDEN)
        recs = log.read(mark + 1, 100)
        assert [(r[4], r[6], r[7], r[8]) for r in recs] == [
            (wire.ROLE_PATIENT, m, wire.FORBIDDEN, lc.COMMANDS[m][0].encode()) for m, _ in attempts]
        # A flood of them, 250 of each, within the hour.
        for _ in range(249):
            for mtype, args in attempts:
                host.err(mtype, args, wire.FORBIDDEN)
        assert log.last_seq() == mark + 8  # the first two of each (role, command, error)
        host.ok(lc.LOGOUT)
        mark = log.last_seq()
        fp.end_hour()  # nothing else is logged: the link ends the window
        counts = [(events.unfold(r[4], r[6])[2], r[5]) for r in of(log.read(mark + 1, 100), events.REPEATED)]
        assert counts == [(m, 248) for m, _ in attempts]
        assert not pump.suspended and pump.rx["steps"][1]["start_s"] == 28800

    with_pump(check)


def test_the_idle_poll_allocates_nothing_with_the_flash_log_across_an_hour():
    def check(fp):
        link, pump = fp.link, fp.pump
        fp.clinical_history()
        link.poll()
        for tod in (3599, 3600):  # the same hour, then the next: roll() with nothing to write
            pump.clock.set(20000, tod)
            fault = locked_polls(link)
            assert fault is None, fault

    with_pump(check)


def test_an_intermittent_motor_keeps_the_clinical_history_and_folds_its_failures():
    # A motor failing every 3rd attempt for two weeks at 1 mL/day: 4,500
    # single failures. Before, each was a clinical record, and they pushed
    # the refill and the prescription out of the log within a week.
    def check(fp):
        pump = fp.pump
        fp.clinical_history()
        history = [r for r in pump.log.read(1, 1000) if events.clinical(r[3], r[4], r[7])]
        pump.board.motor.intermittent = 3
        for _ in range(14 * 24):
            fp.end_hour()
        failed = pump.board.motor.failed
        assert failed > 4000 and pump.sched.running
        folded = [0, 0]  # failures stored one by one, and counted in `repeated` records

        def visit(r):
            if r[3] == events.STROKE_FAILED:
                folded[0] += 1
            elif r[3] == events.REPEATED and r[4] == events.STROKE_FAILED:
                folded[1] += r[5]
            return events.clinical(r[3], r[4], r[7])

        clinical, info, count = fp.log_over_link(visit)
        assert clinical[:len(history)] == history  # nothing of the history pushed out
        assert any(r[3] == events.ALARM_RAISED and r[4] == alarms.STROKE_FAILURES for r in clinical)
        assert folded[0] + folded[1] == failed  # every failure accounted for, stored or counted
        assert count < 1500  # 2 stored and 1 count a clock hour, not a record a failure

    with_pump(check)
