# Event log: append-only, bounded, numbered records on littlefs that survive
# reboots and power cuts.
import os

import vfs
import imagekit
from imagekit import POINT, mount, new_image, unmount
from eventlog import RECORD_SIZE, EventLog, decode

DIR = POINT + "/log"
K = 4  # records per segment in these tests
SEGMENTS = 3


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
    return (20000 + seq, seq * 7 % 86400, seq % 256,
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
        assert append(log, 2 * K + 1) == 2 * K + 1
        assert seqs(log.read(1, 20)) == list(range(1, K + 1)) + [2 * K + 1]

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
