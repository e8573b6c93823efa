# Event log: append-only, bounded, numbered records on littlefs that survive
# reboots and power cuts; two rings, so that what a patient or an
# unauthenticated sender causes at will never evicts the clinical history;
# repeats folded into counts, so that a flood costs the flash a bounded number
# of writes.
import binascii
import os
import struct

import micropython
import vfs
import events
import imagekit
import scheduler
import wire
from imagekit import POINT, mount, new_image, unmount
from eventlog import RECORD_SIZE, EventLog, decode

DIR = POINT + "/log"
K = 4  # records per segment in these tests
SEGMENTS = 3
# Types kept in the clinical ring and never folded (events.clinical,
# events.fold_key), including unknown ones and the largest: the ring
# mechanics below run on them alone.
CLINICAL = (1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 16, 20, 21, 25, 26, 27, 200, 255)  # (15, stroke failed: activity)


def on_fresh_flash(check):
    # Runs check() on a freshly formatted image mounted at POINT; cleans up.
    path = new_image()
    dev = mount(path)
    try:
        check()
    finally:
        unmount(dev)
        os.remove(path)


def new_log():
    return EventLog(DIR, segment_records=K, max_segments=SEGMENTS)


def event(seq):
    # The fields appended as event number seq in these tests: every field
    # differs from record to record, including the extremes of each range.
    return (20000 + seq, seq * 7 % 86400, CLINICAL[seq % len(CLINICAL)],
            seq, -seq, seq * 1000, -0x80000000 + seq, b"event %d" % seq)


def append(log, seq):
    day, tod, etype, a, b, c, d, text = event(seq)
    return log.append(day, tod, etype, a, b, c, d, text)


def expected(seq):
    day, tod, etype, a, b, c, d, text = event(seq)
    return (seq, day, tod, etype, a, b, c, d, text)


def seqs(records):
    return [r[0] for r in records]


def segment_path(segno):
    return "%s/log.%08x" % (DIR, segno)


def test_appends_are_numbered_from_one_and_read_back_in_order():
    def check():
        log = new_log()
        assert [append(log, s) for s in range(1, 4)] == [1, 2, 3]
        assert log.read(1, 10) == [expected(1), expected(2), expected(3)]

    on_fresh_flash(check)


def test_an_empty_log_has_nothing_to_read():
    def check():
        log = new_log()
        assert (log.first_seq(), log.last_seq(), log.dropped()) == (1, 0, 0)
        assert log.read(1, 10) == []

    on_fresh_flash(check)


def test_text_may_be_str_and_is_cut_to_32_bytes():
    def check():
        log = new_log()
        log.append(1, 2, 3, text="alarm: occlusion")
        log.append(1, 2, 3, text=b"x" * 40)
        texts = [r[8] for r in log.read(1, 2)]
        assert texts == [b"alarm: occlusion", b"x" * 32]

    on_fresh_flash(check)


def test_out_of_range_fields_are_refused_without_using_a_sequence_number():
    def check():
        log = new_log()
        for bad in ((70000, 0, 0, 0), (1, 86400, 0, 0), (1, 0, 256, 0), (1, 0, 0, 0x80000000)):
            try:
                log.append(*bad)
                raise AssertionError("accepted %r" % (bad,))
            except ValueError:
                pass
        assert append(log, 1) == 1

    on_fresh_flash(check)


def test_sequence_numbers_continue_after_reopen():
    path = new_image()
    try:
        dev = mount(path)
        log = new_log()
        for s in range(1, 7):
            append(log, s)
        log.close()
        unmount(dev)
        dev = mount(path)
        log = new_log()
        assert log.last_seq() == 6
        assert append(log, 7) == 7
        assert seqs(log.read(1, 20)) == list(range(1, 8))
        log.close()
        unmount(dev)
    finally:
        os.remove(path)


def test_a_full_log_rolls_off_its_oldest_segment_and_counts_the_dropped_records():
    def check():
        log = new_log()
        for s in range(1, K * SEGMENTS + 2):  # one more than fits
            append(log, s)
        assert log.dropped() == K and log.first_seq() == K + 1
        assert seqs(log.read(1, 100)) == list(range(K + 1, K * SEGMENTS + 2))
        assert len(os.listdir(DIR)) == SEGMENTS

    on_fresh_flash(check)


def test_the_dropped_count_survives_reopen():
    path = new_image()
    try:
        dev = mount(path)
        log = new_log()
        for s in range(1, 3 * K * SEGMENTS + 2):
            append(log, s)
        before = (log.first_seq(), log.last_seq(), log.dropped())
        log.close()
        unmount(dev)
        dev = mount(path)
        log = new_log()
        assert (log.first_seq(), log.last_seq(), log.dropped()) == before
        assert log.dropped() == 2 * K * SEGMENTS + K
        unmount(dev)
    finally:
        os.remove(path)


def test_a_read_by_range_crosses_segment_boundaries():
    def check():
        log = new_log()
        for s in range(1, 11):
            append(log, s)
        assert log.read(3, 6) == [expected(s) for s in range(3, 9)]

    on_fresh_flash(check)


def test_a_read_from_before_the_oldest_record_starts_at_the_oldest():
    def check():
        log = new_log()
        for s in range(1, 3 * K + 3):
            append(log, s)
        assert seqs(log.read(1, 2)) == [log.first_seq(), log.first_seq() + 1]

    on_fresh_flash(check)


def test_read_raw_fills_a_buffer_with_encoded_records_and_says_where_to_continue():
    def check():
        log = new_log()
        for s in range(1, 11):
            append(log, s)
        buf = bytearray(3 * RECORD_SIZE)
        n, nxt = log.read_raw(4, buf)
        assert (n, nxt) == (3, 7)
        assert [decode(buf, i * RECORD_SIZE) for i in range(n)] == [expected(s) for s in (4, 5, 6)]
        assert log.read_raw(nxt, buf)[0] == 3 and log.read_raw(10, buf) == (1, 11)

    on_fresh_flash(check)


def test_the_segment_size_of_an_existing_log_wins_over_the_constructor():
    def check():
        log = new_log()
        for s in range(1, 11):
            append(log, s)
        log.close()
        log = EventLog(DIR, segment_records=K * 2, max_segments=SEGMENTS)
        assert append(log, 11) == 11
        assert seqs(log.read(1, 20)) == list(range(1, 12))

    on_fresh_flash(check)


def test_a_corrupt_record_is_skipped_and_counted():
    def check():
        log = new_log()
        for s in range(1, 4):
            append(log, s)
        log.close()
        with open(segment_path(0), "r+b") as f:
            f.seek(16 + RECORD_SIZE + 12)  # record 2, field a
            f.write(b"\x00")
        log = new_log()
        assert seqs(log.read(1, 10)) == [1, 3]
        assert log.corrupt == 1

    on_fresh_flash(check)


def test_a_torn_final_record_is_ignored_and_appends_continue_after_it():
    def check():
        log = new_log()
        for s in range(1, 3):
            append(log, s)
        log.close()
        with open(segment_path(0), "ab") as f:
            f.write(b"\x03\x00\x00\x00torn")  # the start of record 3
        log = new_log()
        assert seqs(log.read(1, 10)) == [1, 2]
        assert append(log, 4) == 4  # 3 is skipped, never reused
        assert append(log, 5) == 5  # into the next segment
        log.close()
        assert seqs(new_log().read(1, 10)) == [1, 2, 4, 5]

    on_fresh_flash(check)


def test_a_full_size_final_record_with_a_bad_crc_is_skipped():
    def check():
        log = new_log()
        append(log, 1)
        log.close()
        with open(segment_path(0), "ab") as f:
            f.write(b"\x02" + bytes(RECORD_SIZE - 1))
        log = new_log()
        assert log.last_seq() == 2
        assert append(log, 3) == 3
        assert seqs(log.read(1, 10)) == [1, 3]

    on_fresh_flash(check)


def test_a_segment_with_a_corrupt_header_is_replaced_by_the_next_append():
    def check():
        log = new_log()
        for s in range(1, K + 1):
            append(log, s)
        log.close()
        with open(segment_path(1), "wb") as f:
            f.write(b"EVL1 torn")  # a new segment whose header was cut short
        log = new_log()
        assert append(log, K + 1) == K + 1
        assert seqs(log.read(1, 10)) == list(range(1, K + 2))

    on_fresh_flash(check)


def test_a_segment_left_empty_by_a_cut_while_creating_it_costs_no_sequence_numbers():
    # littlefs creates a file when it is opened: a cut before the first
    # sync leaves it empty.
    def check():
        log = new_log()
        for s in range(1, K + 1):
            append(log, s)
        log.close()
        open(segment_path(1), "wb").close()
        assert append(new_log(), K + 1) == K + 1

    on_fresh_flash(check)


def test_the_numbers_of_a_decayed_newest_segment_are_never_reused():
    def check():
        log = new_log()
        for s in range(1, K + 3):
            append(log, s)
        log.close()
        with open(segment_path(1), "r+b") as f:
            f.write(b"X")  # the magic of its header
        log = new_log()
        assert log.corrupt == 1
        # Records K+1 and K+2 may have been read: the next number is above
        # them (their two slots count as used), and goes to a new segment.
        assert append(log, K + 3) == K + 3
        assert seqs(log.read(1, 20)) == list(range(1, K + 1)) + [K + 3]

    on_fresh_flash(check)


def test_lowering_max_segments_rolls_off_the_excess_at_open():
    def check():
        log = EventLog(DIR, segment_records=K, max_segments=SEGMENTS + 2)
        for s in range(1, K * (SEGMENTS + 2) + 1):
            append(log, s)
        log.close()
        log = new_log()
        assert log.dropped() == 2 * K and len(os.listdir(DIR)) == SEGMENTS
        assert seqs(log.read(1, 100)) == list(range(2 * K + 1, K * (SEGMENTS + 2) + 1))

    on_fresh_flash(check)


STREAM = 2 * K * SEGMENTS  # appends in a power-cut run: rolls off twice


def append_stream(progress):
    # progress: [seq in flight, last acknowledged seq]
    log = new_log()
    for s in range(1, STREAM + 1):
        progress[0] = s
        assert append(log, s) == s
        progress[1] = s


def first_kept(last):
    # The first seq the log must still hold once record last is appended.
    return max(0, (last - 1) // K - SEGMENTS + 1) * K + 1


def check_after_cut(progress, cut_at):
    acked, inflight = progress[1], progress[0]
    log = new_log()
    got = log.read(1, 1000)
    first = log.first_seq()
    # The roll-off for the record in flight may or may not have happened.
    assert first in (first_kept(max(acked, 1)), first_kept(inflight)), (cut_at, first, progress)
    want = [expected(s) for s in range(first, acked + 1)]
    assert got == want or got == want + [expected(inflight)], (cut_at, seqs(got), progress)
    assert log.dropped() == first - 1
    # The log works on, and never reuses a sequence number a record kept.
    seq = log.append(1, 2, 3)
    assert seq > seqs(got)[-1] if got else seq > acked, (cut_at, seq)
    log.close()
    assert seqs(new_log().read(seq, 1)) == [seq], cut_at


def cut_at_every_write(tear):
    total = imagekit.cut_at_every_write(append_stream, lambda: [0, 0], check_after_cut, tear)
    print("eventlog: power cut at each of %d writes of %d appends (tear=%s)" % (total, STREAM, tear))


def test_a_power_cut_at_any_write_loses_at_most_the_record_in_flight():
    cut_at_every_write(False)


def test_a_torn_write_at_any_point_loses_at_most_the_record_in_flight():
    cut_at_every_write(True)


def test_an_append_costs_about_one_block_erase_at_pico_flash_geometry():
    # RP2040 littlefs: 4096-byte erase blocks, 256-byte programs. Each sync
    # rewrites the segment's partly filled last block. Two full 256-record
    # segments, so the average covers a segment's whole life.
    path = new_image(4096, 256)
    try:
        dev = mount(path, block_size=4096, progsize=256)
        log = EventLog(DIR, segment_records=256, max_segments=2)
        n = 512
        for s in range(1, n + 1):
            append(log, s)
        print("eventlog: %d appends: %d programs, %d erases, %d bytes programmed"
              % (n, dev.programs, dev.erases, dev.bytes_programmed))
        assert dev.erases <= n + n // 10
        log.close()
        unmount(dev)
    finally:
        os.remove(path)



# -- two rings ---------------------------------------------------------------
ACTIVITY = events.DIARY  # a type of the activity ring that is never folded


def on_host_dir(check):
    # Runs check(directory) on a fresh directory of the unix port's own file
    # system, for logs larger than the test image.
    d = "/tmp/evlog-%s" % binascii.hexlify(os.urandom(4)).decode()
    os.mkdir(d)
    try:
        check(d + "/log")
    finally:
        for sub in (d + "/log", d):
            try:
                for name in os.listdir(sub):
                    os.remove(sub + "/" + name)
                os.rmdir(sub)
            except OSError:
                pass


def ring_files(prefix):
    return sorted(n for n in os.listdir(DIR) if n.startswith(prefix))


def test_records_go_to_their_ring_and_activity_roll_off_never_evicts_a_clinical_record():
    def check():
        log = EventLog(DIR, segment_records=K, max_segments=SEGMENTS, activity_segments=2)
        for s in range(1, 6):
            append(log, s)  # clinical
        for i in range(10 * K):  # five times what the activity ring holds
            log.append(20000, i, ACTIVITY, 3, 0, 0, 0, b"diary %d" % i)
        last = log.append(20000, 500, events.ALARM_RAISED, 4)
        got = log.read(1, 1000)
        assert [r for r in got if r[3] != ACTIVITY] == [expected(s) for s in range(1, 6)] + [
            (last, 20000, 500, events.ALARM_RAISED, 4, 0, 0, 0, b"")]
        diary = [r for r in got if r[3] == ACTIVITY]
        assert K <= len(diary) <= 2 * K and diary[-1][8] == b"diary %d" % (10 * K - 1)
        assert seqs(got) == sorted(seqs(got)) and last == 5 + 10 * K + 1
        assert log.first_seq() == 1  # the clinical history is all there
        assert log.dropped() == 10 * K - len(diary)  # what the activity ring rolled off
        assert len(ring_files("log.")) == 2 and len(ring_files("act.")) == 2

    on_fresh_flash(check)


def test_the_clinical_ring_rolls_off_only_its_own_oldest_segment():
    def check():
        log = EventLog(DIR, segment_records=K, max_segments=2, activity_segments=2)
        log.append(20000, 0, ACTIVITY, text=b"kept")
        for s in range(2, 4 * K + 2):
            append(log, s)
        got = log.read(1, 100)
        assert got[0][8] == b"kept" and log.first_seq() == 1  # the activity ring's oldest
        assert seqs(got)[1:] == list(range(2 * K + 2, 4 * K + 2)) and log.dropped() == 2 * K

    on_fresh_flash(check)


def test_reads_merge_the_rings_in_number_order_and_skip_rolled_off_numbers():
    def check():
        log = EventLog(DIR, segment_records=K, max_segments=SEGMENTS, activity_segments=2)
        kinds = []
        for s in range(1, 41):
            if s % 3:
                log.append(20000, s, ACTIVITY, s)
                kinds.append(ACTIVITY)
            else:
                append(log, s)
                kinds.append(0)
        got = log.read(1, 100)
        ordered = seqs(got)
        assert ordered == sorted(ordered) and len(set(ordered)) == len(ordered)
        clinical = list(range(3, 41, 3))  # 13: the ring's 4th segment holds the 13th, the 1st rolled off
        assert [r for r in got if r[3] != ACTIVITY] == [expected(s) for s in clinical[K:]]
        # From a rolled-off number on: the next record held, whatever the gap.
        gone = [s for s in range(ordered[0], 41) if s not in ordered][0]
        assert log.read(gone, 1)[0][0] == min(s for s in ordered if s > gone)
        # Page by page with read_raw, as the link does: the same records.
        buf = bytearray(3 * RECORD_SIZE)
        pages = []
        nxt = 1
        while True:
            n, nxt = log.read_raw(nxt, buf)
            if not n:
                break
            pages += [decode(buf, i * RECORD_SIZE) for i in range(n)]
        assert pages == got and nxt == log.last_seq() + 1

    on_fresh_flash(check)


def test_numbers_continue_after_reopen_with_both_rings():
    path = new_image()
    try:
        dev = mount(path)
        log = new_log()
        for s in range(1, 8):
            if s % 2:
                append(log, s)
            else:
                log.append(20000, s, ACTIVITY, s)
        before = log.read(1, 100)
        log.close()
        unmount(dev)
        dev = mount(path)
        log = new_log()
        assert log.last_seq() == 7 and log.read(1, 100) == before
        assert log.append(20000, 8, ACTIVITY) == 8 and append(log, 9) == 9
        unmount(dev)
    finally:
        os.remove(path)


def test_a_torn_record_keeps_its_number_when_the_other_ring_holds_newer_records():
    # The cut hit the clinical ring's append of record 4 while the activity
    # ring held record 3: the number 4 is still not given again.
    def check():
        log = new_log()
        append(log, 1)
        append(log, 2)
        log.append(20000, 3, ACTIVITY)
        log.close()
        with open(segment_path(0), "ab") as f:
            f.write(b"\x04\x00\x00\x00torn")
        log = new_log()
        assert seqs(log.read(1, 10)) == [1, 2, 3]
        assert append(log, 5) == 5

    on_fresh_flash(check)


def v1_segment(segno, count):
    # A segment of the single-ring log of earlier firmware (EVL1): records
    # numbered by position, s*K+1 on.
    h = bytearray(16)
    struct.pack_into("<4sHHII", h, 0, b"EVL1", K, RECORD_SIZE, segno, 0)
    struct.pack_into("<I", h, 12, binascii.crc32(h[:12]))
    with open(segment_path(segno), "wb") as f:
        f.write(h)
        for i in range(count):
            seq = segno * K + i + 1
            day, tod, etype, a, b, c, d, text = event(seq)
            rec = bytearray(RECORD_SIZE)
            struct.pack_into("<IHBBIiiii32s", rec, 0, seq, day, etype, len(text), tod, a, b, c, d, text)
            struct.pack_into("<I", rec, 60, binascii.crc32(rec[:60]))
            f.write(rec)


def test_a_log_of_the_earlier_single_ring_format_is_read_and_continued():
    def check():
        os.mkdir(DIR)
        v1_segment(0, K)
        v1_segment(1, 2)
        log = new_log()
        assert log.read(1, 100) == [expected(s) for s in range(1, K + 3)] and log.corrupt == 0
        assert (log.first_seq(), log.last_seq(), log.dropped()) == (1, K + 2, 0)
        for s in range(K + 3, 3 * K + 2):  # into the old segment, then new ones
            assert append(log, s) == s
        log.close()
        log = new_log()
        assert log.read(1, 100) == [expected(s) for s in range(K + 1, 3 * K + 2)]  # the oldest rolled off
        assert log.dropped() == K

    on_fresh_flash(check)


# -- folding repeats -----------------------------------------------------------
HOUR = 3600
DEMAND = scheduler.KIND_DEMAND
LOCKOUT = 2  # scheduler.DEMAND_LOCKOUT: a reason code like any other here


def refused(log, tod, reason=LOCKOUT, wait=600):
    return log.append(20000, tod, events.BOLUS_REFUSED, DEMAND, reason, wait)


def repeated(log):
    return [r for r in log.read(1, 10000) if r[3] == events.REPEATED]


def test_repeats_past_the_first_two_in_a_clock_hour_are_folded_into_one_record_at_its_end():
    def check():
        log = new_log()
        got = [refused(log, 8 * HOUR + 10 * i) for i in range(10)]
        assert got == [1, 2] + [0] * 8  # the first two stored, the rest counted
        assert log.last_seq() == 2 and not repeated(log)
        seq = log.append(20000, 9 * HOUR, events.ALARM_RAISED, 3)  # the next hour
        assert seq == 4
        assert log.read(3, 1) == [(3, 20000, 8 * HOUR + 90, events.REPEATED, events.BOLUS_REFUSED, 8,
                                   DEMAND | LOCKOUT << 8, 70, b"repeated bolus refused")]
        assert events.unfold(events.BOLUS_REFUSED, DEMAND | LOCKOUT << 8) == (DEMAND, LOCKOUT, 0, 0)
        assert len(ring_files("act.")) == 1  # refusals and their count: the activity ring

    on_fresh_flash(check)


def test_each_key_is_folded_apart_and_a_command_carried_out_never():
    def check():
        log = EventLog(DIR, segment_records=K * 4, max_segments=SEGMENTS)
        patient, clinician = wire.ROLE_PATIENT, wire.ROLE_CLINICIAN
        for i in range(5):
            for cmd in (0x20, 0x21):  # PROGRAM, BOLUS: FORBIDDEN for the patient
                log.append(20000, 100 + i, events.LINK_COMMAND, patient, 9, cmd, wire.FORBIDDEN, b"x")
            log.append(20000, 100 + i, events.LINK_COMMAND, clinician, 7, 0x20, 0, b"program")
        stored = [r for r in log.read(1, 100) if r[3] == events.LINK_COMMAND]
        assert [r[7] for r in stored].count(0) == 5  # every program carried out
        assert [r[6] for r in stored if r[7]] == [0x20, 0x21, 0x20, 0x21]  # two of each refused one
        log.roll(20000, HOUR)
        rep = repeated(log)
        assert [(r[4], r[5], events.unfold(r[4], r[6])) for r in rep] == [
            (events.LINK_COMMAND, 3, (patient, 0, 0x20, wire.FORBIDDEN)),
            (events.LINK_COMMAND, 3, (patient, 0, 0x21, wire.FORBIDDEN))]
        assert events.fold_key(events.LINK_COMMAND, clinician, 7, 0x20, 0) < 0

    on_fresh_flash(check)


def test_the_window_ends_when_the_clock_hour_changes_either_way_and_only_then():
    def check():
        log = new_log()
        for i in range(5):
            refused(log, 10 * HOUR + i)
        log.roll(20000, 10 * HOUR + 3599)  # the same hour: nothing written
        assert log.last_seq() == 2
        log.roll(20000, 9 * HOUR)  # the clock set back an hour
        assert [r[5] for r in repeated(log)] == [3]
        for i in range(5):
            refused(log, 9 * HOUR + 10 + i)  # a new window: two stored again
        assert log.last_seq() == 5
        log.flush()  # the counts so far; the window goes on
        log.flush()  # nothing new: nothing written
        refused(log, 9 * HOUR + 20)
        log.roll(20001, 9 * HOUR + 20)  # the same hour of the next day
        assert [r[5] for r in repeated(log)] == [3, 3, 1] and log.last_seq() == 7

    on_fresh_flash(check)


def test_a_full_fold_table_counts_the_keys_beyond_it_in_one_record():
    def check(d):
        log = EventLog(d, segment_records=32, max_segments=2, activity_segments=4)
        for reason in range(63):  # 63 keys: the table's
            refused(log, 0, reason)
        assert log.last_seq() == 63
        for reason in range(63, 70):  # 7 more: counted, not stored
            assert refused(log, 1, reason) == 0
        assert refused(log, 2, 5) == 64  # a key in the table is still stored
        log.roll(20000, HOUR)
        assert [(r[4], r[5], r[6], r[2], r[7]) for r in repeated(log)] == [(0, 7, 0, 1, 0)]

    on_host_dir(check)


def test_a_flood_of_repeats_costs_at_most_three_records_per_key_and_hour():
    def check(d):
        log = EventLog(d, segment_records=64, max_segments=2, activity_segments=4)
        n = 20000
        for i in range(n):  # five and a half hours of two keys, one every second
            refused(log, i % 86400, LOCKOUT if i % 2 else 3)
        log.flush()
        hours = (n - 1) // HOUR + 1
        assert log.last_seq() == hours * 2 * 3  # per key and hour: two stored, one count
        recs = log.read(1, 1000)
        stored = len([r for r in recs if r[3] == events.BOLUS_REFUSED])
        assert stored + sum(r[5] for r in repeated(log)) == n and log.dropped() == 0

    on_host_dir(check)


def test_a_folded_repeat_costs_no_allocation():
    # A flood of repeats is counted in place: the count allocates nothing.
    def check():
        log = new_log()
        for i in range(3):
            refused(log, 100)
        micropython.heap_lock()
        try:
            for i in range(100):
                log.append(20000, 100, events.BOLUS_REFUSED, DEMAND, LOCKOUT, 600)
        finally:
            micropython.heap_unlock()
        log.flush()
        assert [r[5] for r in repeated(log)] == [101]

    on_fresh_flash(check)


def test_retention_constants_match_the_modules_they_come_from():
    assert events.DEMAND_KIND == scheduler.KIND_DEMAND
    assert events.CLINICIAN_ROLE == wire.ROLE_CLINICIAN
    assert not events.clinical(events.BOLUS_REQUESTED, DEMAND, 0)
    assert events.clinical(events.LINK_COMMAND, wire.ROLE_PATIENT, 0)  # a demand bolus given
    assert not events.clinical(events.LINK_COMMAND, wire.ROLE_PATIENT, wire.FORBIDDEN)
    assert events.clinical(events.LINK_COMMAND, wire.ROLE_CLINICIAN, wire.LIMIT)
    assert events.clinical(200, 0, 0)  # unknown types are kept


# -- power cuts with both rings ---------------------------------------------------
MIXED = 30  # a third activity: the clinical ring rolls off twice, the activity ring once


def mixed_event(seq):
    return event(seq) if seq % 3 else (20000, seq, ACTIVITY, seq, 0, 0, 0, b"diary %d" % seq)


def mixed_expected(seq):
    return (seq,) + tuple(mixed_event(seq)[i] for i in (0, 1, 2, 3, 4, 5, 6, 7))


def mixed_log():
    return EventLog(DIR, segment_records=K, max_segments=SEGMENTS, activity_segments=2)


def mixed_stream(progress):
    log = mixed_log()
    for s in range(1, MIXED + 1):
        progress[0] = s
        day, tod, etype, a, b, c, d, text = mixed_event(s)
        assert log.append(day, tod, etype, a, b, c, d, text) == s
        progress[1] = s


def mixed_kept(n, landed=True):
    # The numbers held after appending 1..n with no cut (landed False: the
    # roll-off for n happened, the record did not).
    out = []
    for ring, segs in ((lambda s: s % 3, SEGMENTS), (lambda s: not s % 3, 2)):
        mine = [s for s in range(1, n + 1) if ring(s)]
        last = len(mine) - 1
        first = max(0, last // K - segs + 1) * K if mine else 0
        out += mine[first:]
    if not landed:
        out.remove(n)
    return sorted(out)


def check_mixed(progress, cut_at):
    acked, inflight = progress[1], progress[0]
    log = mixed_log()
    got = log.read(1, 1000)
    ok = [mixed_kept(acked)]
    if inflight > acked:
        ok += [mixed_kept(inflight), mixed_kept(inflight, False)]
    assert seqs(got) in ok, (cut_at, seqs(got), progress)
    assert got == [mixed_expected(s) for s in seqs(got)], cut_at
    seq = log.append(1, 2, 3)
    assert seq > acked and (not got or seq > seqs(got)[-1]), (cut_at, seq)
    log.close()
    assert seqs(mixed_log().read(seq, 1)) == [seq], cut_at


def test_a_power_cut_or_torn_write_anywhere_in_a_two_ring_stream_loses_at_most_the_record_in_flight():
    for tear in (False, True):
        total = imagekit.cut_at_every_write(mixed_stream, lambda: [0, 0], check_mixed, tear)
        print("eventlog: two rings, power cut at each of %d writes of %d appends (tear=%s)" % (total, MIXED, tear))
