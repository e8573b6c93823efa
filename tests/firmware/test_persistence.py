# Persistent state: nothing acknowledged is lost, whatever the reset, and a
# reset never over-delivers.
import alarms
import events
import hal
from fixtures import DAY_MS, HOUR_MS, MORPHINE_10MG_ML, continuous, flex, make_pump, raises_limit, run
from flashkit import FlashPump, first_fill, new_image, with_pump
from scheduler import KIND_CLINICIAN


def test_programmed_therapy_and_ledger_survive_a_clean_restart():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        run(pump, 5 * HOUR_MS)
        remaining, rx = pump.reservoir.remaining_nl, pump.rx
        fp.persist.save(clean=True)
        fp.power_off()
        pump = fp.power_on()
        assert pump.rx == rx
        assert pump.reservoir.remaining_nl == remaining
        assert pump.reservoir.balance_nl() == 0
        assert fp.cause == hal.RESET_POWER_ON
    with_pump(check)


def test_unclean_restart_is_logged_as_power_loss_and_resumes_therapy():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        run(pump, HOUR_MS)
        fp.power_off()  # no clean save: the power died
        pump = fp.power_on()
        assert fp.cause == hal.RESET_POWER_LOSS
        boots = [r for r in pump.log.read(1, 1000) if r[3] == events.BOOT]
        assert boots[-1][4] == hal.RESET_POWER_LOSS, boots
        before = fp.board.motor.completed
        run(pump, HOUR_MS)
        assert fp.board.motor.completed - before >= 80  # 1 mL/day: ~83 strokes an hour
    with_pump(check)


def test_reset_never_credits_the_reservoir_with_undelivered_volume():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        run(pump, 10 * HOUR_MS)
        true_remaining = pump.reservoir.remaining_nl
        fp.power_off()
        pump = fp.power_on()
        assert pump.reservoir.remaining_nl <= true_remaining
        assert pump.reservoir.balance_nl() == 0
    with_pump(check)


def test_bolus_in_progress_is_not_restarted_after_a_reset_and_never_over_delivers():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        pump.clinician_bolus(1000000, 3600)  # 100 uL = 200 strokes over an hour
        run(pump, 1800 * 1000)
        done_before = fp.board.motor.completed
        board = fp.board
        fp.power_off()
        pump = fp.power_on(board=board)  # same motor: its record spans the reset
        run(pump, 2 * HOUR_MS)
        bolus = pump.reservoir.strokes[KIND_CLINICIAN]
        assert done_before > 90
        assert bolus <= 200, bolus  # the saved state counted ahead: never more
        assert bolus >= 200 - 32 - 24
    with_pump(check)


def test_latched_alarm_survives_a_reset_and_keeps_therapy_stopped():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        fp.board.motor.stalled = True
        run(pump, HOUR_MS)
        assert pump.alarms.active & (1 << alarms.MOTOR_STALL)
        fp.power_off()
        pump = fp.power_on()
        assert pump.alarms.active & (1 << alarms.MOTOR_STALL)
        assert not pump.sched.running
        before = fp.board.motor.attempts
        run(pump, HOUR_MS)
        assert fp.board.motor.attempts == before
    with_pump(check)


def boot_with_saved_state(change):
    # The pump saves a programmed state; `change(d)` edits it as a record
    # with a valid CRC (damage the CRC missed, or another firmware's
    # ranges); then it boots from it. Returns (pump, strokes the hour after,
    # its FAULT records).
    import json
    fp = FlashPump(new_image())
    pump = fp.power_on()
    pump.device["serial"] = "IT-0042"
    first_fill(pump)
    run(pump, HOUR_MS)
    d = fp.persist.snapshot(clean=True)
    change(d)
    fp.persist.store.save("pump", 1, json.dumps(d).encode())
    fp.power_off()
    pump = fp.power_on()
    before = fp.board.motor.completed
    run(pump, HOUR_MS)
    strokes = fp.board.motor.completed - before
    faults = [r for r in pump.log.read(1, 1000) if r[3] == events.FAULT]
    fp.power_off()
    return pump, strokes, faults


def assert_stopped_on_integrity(pump, strokes, faults):
    assert pump.alarms.active & (1 << alarms.INTEGRITY)
    assert pump.rx is None and pump.therapy is None and strokes == 0
    assert pump.device["serial"] == "IT-0042"  # the identity record is its own
    assert faults and faults[-1][8].startswith(b"state not loadable"), faults


def test_a_saved_clock_beyond_the_logs_dates_boots_stopped_with_the_integrity_alarm():
    # Firmware that let the clock be set past 2149-06-06 saved a state every
    # boot then failed on (the log's first record could not carry the date).
    def beyond(d):
        d["clock"] = [84006, 0]  # 2200-01-01
    assert_stopped_on_integrity(*boot_with_saved_state(beyond))


def test_a_saved_state_missing_a_part_boots_stopped_with_the_integrity_alarm():
    def without_ledger(d):
        del d["ledger"]
    assert_stopped_on_integrity(*boot_with_saved_state(without_ledger))


def test_the_clock_is_never_set_beyond_the_logs_dates_and_a_refusal_changes_nothing():
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    raises_limit("clock", pump.set_clock, events.DAY_MAX + 1, 0)
    assert (pump.clock.day, pump.clock.tod_s) == (20000, 3600)
    pump.set_clock(events.DAY_MAX, 0)  # 2149-06-06: the last date
    assert pump.clock.day == events.DAY_MAX


def test_a_change_that_fails_part_way_is_undone():
    # A fault inside a change (here: its log record cannot be written) must
    # not leave the change half applied.
    pump = make_pump(continuous())
    run(pump, HOUR_MS)
    pump.memento = (lambda: (pump.clock.day, pump.clock.tod_s), lambda d: pump.clock.set(*d))
    record = pump.record

    def failing(etype, *args):
        if etype == events.CLOCK_SET:
            raise ValueError("log write failed")
        return record(etype, *args)
    pump.record = failing
    try:
        pump.set_clock(20005, 7200)
        raise AssertionError("the fault inside the change was swallowed")
    except ValueError:
        pass
    assert (pump.clock.day, pump.clock.tod_s) == (20000, 3600)


def test_unreadable_state_raises_integrity_alarm_and_stops():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        fp.power_off()
        import vfs
        from flashkit import POINT

        pump = fp.power_on()
        import os

        for name in os.listdir(POINT + "/state"):
            with open(POINT + "/state/" + name, "r+b") as f:
                f.seek(20)
                f.write(b"\x00\x01\x02")
        fp.power_off()
        pump = fp.power_on()
        assert pump.alarms.active & (1 << alarms.INTEGRITY)
        assert pump.rx is None
    with_pump(check)


def test_bridge_in_progress_survives_a_reset():
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        pump.catheter.assume_primed(100000)
        pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(conc=2 * MORPHINE_10MG_ML))
        run(pump, HOUR_MS)
        left = pump.sched.bridge_left
        fp.persist.save(clean=True)
        fp.power_off()
        pump = fp.power_on()
        assert pump.sched.bridge_left == left
        assert pump.sched.step_rate[0] == 1000000  # still the old profile
        assert pump.therapy.conc_ng_ml == 2 * MORPHINE_10MG_ML
    with_pump(check)


def test_a_power_cut_during_a_bridge_brings_the_catheter_back_as_it_truly_is():
    # Morphine 10 mg/mL, then 25 mg/mL at the same dose: 200 strokes of the
    # weaker drug to push out at its rate, 2.5 times the new one's. A power
    # cut 20 strokes after an ordinary checkpoint: had the pump come back
    # with the catheter of that checkpoint, the bridge would run on for those
    # 20 strokes with the new drug at the old, faster rate. The oracle is the
    # motor's stroke record: the bridge must end after exactly 200 strokes.
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)  # 10 mg/day of 10 mg/mL: 1 mL/day
        pump.catheter.assume_primed(100000)
        board = fp.board
        pump.refill(pump.reservoir.remaining_nl, 20000000, continuous(conc=25000000))
        at_change = board.motor.completed
        while board.motor.completed < at_change + 92 or pump.stroking:  # 20 after the checkpoint of every 24
            run(pump, 10000)
        fp.power_off()  # unclean: nothing saved at the cut
        pump = fp.power_on(board=board)  # the same motor: its record spans the cut
        left = 200 - (board.motor.completed - at_change)
        assert pump.sched.bridge_left == left, (pump.sched.bridge_left, left)
        assert (pump.catheter.old, pump.catheter.saline) == (left, 0)
        while pump.sched.bridge_left:
            run(pump, 10000)
        assert board.motor.completed - at_change == 200
    with_pump(check)


def test_a_power_cut_while_priming_brings_back_the_saline_still_in_the_line():
    # A revised catheter of 200 strokes primed over an hour; a power cut 20
    # strokes after the checkpoint of every 24. The saline still ahead of the
    # drug is what the stroke record says, not what that checkpoint said: a
    # stroke of drug must never be counted as saline (no dose) by the
    # 24-hour ceiling.
    def check(fp):
        pump = fp.power_on()
        first_fill(pump)
        board = fp.board
        pump.revise_catheter(100000)
        pump.priming_bolus(100000, 3600)
        start = board.motor.completed
        while board.motor.completed < start + 92 or pump.stroking:
            run(pump, 1000)
        fp.power_off()  # unclean: nothing saved at the cut
        pump = fp.power_on(board=board)
        assert pump.catheter.saline == 200 - (board.motor.completed - start)
    with_pump(check)


# The slowest basal the mechanism allows (48 uL/day, 4 strokes an hour):
# nearly every stroke in these courses is the bolus's, so the stroke record
# alone says how much of it was given.
SLOW_BASAL = continuous(dose_ng_day=480000)


def bolus_on_slow_basal(flash_faults=False):
    # (flash pump, pump, board, strokes before it) with a clinician bolus of
    # 1 mg at 10 mg/mL (100 uL = 200 strokes) over an hour just started.
    fp = FlashPump(new_image(), flash_faults=flash_faults)
    pump = fp.power_on()
    first_fill(pump, SLOW_BASAL)
    board = fp.board
    pump.clinician_bolus(1000000, 3600)
    return fp, pump, board, board.motor.completed


def test_a_reset_during_a_flash_outage_never_gives_a_bolus_twice():
    # The flash refuses writes from just after the bolus is confirmed; a
    # watchdog reset near its end brings it back as last saved (from its
    # start). Had it run on unsaved, the reset would have given it again.
    fp, pump, board, _ = bolus_on_slow_basal(flash_faults=True)
    fp.dev.failing = True
    run(pump, 3500 * 1000)
    assert pump.alarms.active & (1 << alarms.FLASH_FAULT)
    fp.power_off()
    pump = fp.power_on(hal.RESET_WATCHDOG, board=board)  # same motor: its record spans the reset
    fp.dev.failing = False
    run(pump, 2 * HOUR_MS)
    basal_at_most = 4 * 3 + 2  # 3500 s + 2 h at 4 strokes an hour, and a stroke either side
    assert board.motor.completed <= 200 + basal_at_most, board.motor.completed
    assert board.motor.completed >= 200 - 32 - 24  # the reserve's and the outage's strokes at most are lost


def test_a_bolus_goes_no_further_than_its_saved_progress_vouches_while_the_flash_fails():
    # No reset: the bolus stops 24 strokes past its last save (the reserve
    # of 32 covers them), basal resumes, and the stop is logged once the
    # flash writes again.
    fp, pump, board, start = bolus_on_slow_basal(flash_faults=True)
    fp.dev.failing = True
    run(pump, HOUR_MS)
    assert board.motor.completed - start <= 24 + 4 + 1, board.motor.completed - start  # and an hour of basal
    assert pump.sched.running and not pump.sched.bolus_busy()
    fp.dev.failing = False
    run(pump, 2 * 60 * 1000)  # the flash is tried again after a minute
    cut = [r[4:8] for r in pump.log.read(1, 1000) if r[3] == events.BOLUS_CANCELLED]
    assert len(cut) == 1 and cut[0][0] == KIND_CLINICIAN and cut[0][3] == events.CANCELLED_UNSAVED, cut
    assert cut[0][1] <= 24 and cut[0][1] + cut[0][2] == 200


def test_a_periodic_bolus_due_while_the_flash_fails_is_not_started():
    # It is in no saved state: a reset would bring back the day before it
    # fired, and it would fire again.
    rx = dict(SLOW_BASAL)
    rx["periodic"] = [{"time_s": 9 * 3600, "dose_ng": 500000, "duration_s": 600}]  # 100 strokes at 09:00
    fp = FlashPump(new_image(), flash_faults=True)
    pump = fp.power_on()
    first_fill(pump, rx)  # at 08:00
    board = fp.board
    start = board.motor.completed
    fp.dev.failing = True
    run(pump, 2 * HOUR_MS)
    assert board.motor.completed - start <= 4 * 2 + 1, board.motor.completed - start  # basal only


def test_the_largest_state_fits_one_record():
    # Ten flex steps, eight periodic boluses, demand, a bridge holding the old
    # prescription, a day at a high rate: the record must still fit, or a
    # save would fail and stop therapy.
    from records import MAX_PAYLOAD
    fp = FlashPump(new_image())
    pump = fp.power_on()
    pump.reservoir.fill(20000000)
    pump.catheter.assume_primed(300000)

    def rx(conc):
        r = flex([(i * 8000, 1000000 + i * 11111) for i in range(10)], conc=conc)
        r["periodic"] = [{"time_s": 4000 + i * 9000, "dose_ng": 20000, "duration_s": 3600} for i in range(8)]
        r["demand"] = {"dose_ng": 100000, "duration_s": 900, "lockout_s": 900, "max_per_day": 24}
        return r

    pump.program(rx(1000000))
    run(pump, DAY_MS)
    pump.refill(pump.reservoir.remaining_nl, 20000000, rx(2000000))
    run(pump, 600 * 1000)
    assert pump.bridging
    size = len(fp.persist.record())
    assert size < MAX_PAYLOAD * 9 // 10, size  # room for a longer serial and more alarms


def bolus_records(pump):
    return [r[3:7] for r in pump.log.read(1, 1000) if r[3] in (events.BOLUS_DELIVERED, events.BOLUS_CANCELLED)]


def test_a_bolus_a_reset_interrupted_is_logged_with_what_it_gave_at_least():
    # 200 strokes planned; the reset's reserve takes 32 off the rest. The
    # log must not say 200 were given (the visit report adds these up):
    # the motor's record, less the basal, is the oracle.
    fp, pump, board, start = bolus_on_slow_basal()
    run(pump, 1800 * 1000)
    fp.power_off()
    pump = fp.power_on(board=board)
    run(pump, 2 * HOUR_MS)
    given = board.motor.completed - start - 4 * 2  # 4 basal strokes an hour after the bolus, at most
    (_, kind, at_least, taken), = bolus_records(pump)
    assert (kind, at_least + taken) == (KIND_CLINICIAN, 200)
    assert taken == 32 and at_least <= given <= at_least + 24 + 4 * 2, (at_least, given)


def test_a_bolus_the_reserve_ends_at_a_reset_is_logged_as_ended():
    # The reset comes with fewer than 32 strokes left: the restored state
    # ends the bolus. Its record says so, with what it gave at least.
    fp, pump, board, start = bolus_on_slow_basal()
    run(pump, 3400 * 1000)
    given = board.motor.completed - start
    assert 200 - 32 < given < 200
    fp.power_off()
    pump = fp.power_on(board=board)
    assert not pump.sched.bolus_busy()
    (_, kind, at_least, taken), = bolus_records(pump)
    assert (kind, at_least + taken) == (KIND_CLINICIAN, 200)
    assert at_least <= given <= at_least + taken, (at_least, taken, given)  # its strokes and up to 4 basal ones
