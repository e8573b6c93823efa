# Record store: versioned, CRC-protected records on littlefs that a power cut
# at any moment leaves old or new, never mixed, never gone.
import os

import vfs
import imagekit
from imagekit import POINT, mount, new_image, unmount
from records import MAX_PAYLOAD, RecordStore

DIR = POINT + "/rec"
# A sequence of saves of one record: sizes from a few bytes to several blocks.
PAYLOADS = [bytes([65 + i]) * n for i, n in enumerate((10, 700, 1500, 40, 2048))]


def on_fresh_flash(check):
    # Runs check(store) on a freshly formatted, mounted image; cleans up.
    path = new_image()
    dev = mount(path)
    try:
        check(RecordStore(DIR))
    finally:
        unmount(dev)
        os.remove(path)


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_a_saved_record_loads_back_with_its_version():
    def check(store):
        store.save("rx", 7, b"prescription")
        assert store.load("rx") == (7, b"prescription")

    on_fresh_flash(check)


def test_a_record_never_saved_loads_as_none_without_corruption():
    def check(store):
        assert store.load("rx") is None
        assert store.corrupt_found == 0

    on_fresh_flash(check)


def test_an_empty_payload_round_trips():
    def check(store):
        store.save("rx", 1, b"")
        assert store.load("rx") == (1, b"")

    on_fresh_flash(check)


def test_the_latest_of_many_saves_wins():
    def check(store):
        for i in range(5):
            store.save("rx", i, b"v%d" % i)
        assert store.load("rx") == (4, b"v4")

    on_fresh_flash(check)


def test_records_of_different_names_are_independent():
    def check(store):
        store.save("rx", 1, b"one")
        store.save("cfg", 2, b"two")
        store.save("rx", 3, b"three")
        assert store.load("cfg") == (2, b"two")
        assert store.load("rx") == (3, b"three")

    on_fresh_flash(check)


def test_a_record_survives_remount_and_a_new_store_continues_it():
    path = new_image()
    try:
        dev = mount(path)
        RecordStore(DIR).save("rx", 1, b"first")
        RecordStore(DIR).save("rx", 2, b"second")  # no in-memory state shared
        unmount(dev)
        dev = mount(path)
        assert RecordStore(DIR).load("rx") == (2, b"second")
        unmount(dev)
    finally:
        os.remove(path)


def test_a_corrupt_newest_slot_falls_back_to_the_previous_record_and_is_reported():
    def check(store):
        store.save("rx", 1, b"old record")
        store.save("rx", 2, b"new record")  # the second save goes to slot b
        flip_byte(DIR + "/rx.b", 20)
        fresh = RecordStore(DIR)
        assert fresh.load("rx") == (1, b"old record")
        assert fresh.corrupt_found == 1

    on_fresh_flash(check)


def test_a_corrupt_header_is_detected_like_a_corrupt_payload():
    def check(store):
        store.save("rx", 1, b"old record")
        store.save("rx", 2, b"new record")
        flip_byte(DIR + "/rx.b", 4)  # the version field
        assert RecordStore(DIR).load("rx") == (1, b"old record")

    on_fresh_flash(check)


def test_a_save_after_a_corrupt_slot_replaces_the_corrupt_slot():
    def check(store):
        store.save("rx", 1, b"old record")
        store.save("rx", 2, b"new record")
        flip_byte(DIR + "/rx.b", 20)
        fresh = RecordStore(DIR)
        fresh.save("rx", 3, b"newest")
        assert fresh.load("rx") == (3, b"newest")
        assert RecordStore(DIR).load("rx") == (3, b"newest")
        # The valid old record in slot a was kept while slot b was rewritten.
        with open(DIR + "/rx.a", "rb") as f:
            assert f.read()[16:] == b"old record"

    on_fresh_flash(check)


def test_the_only_slot_corrupt_loads_as_none_and_is_reported():
    def check(store):
        store.save("rx", 1, b"only")
        flip_byte(DIR + "/rx.a", 17)
        fresh = RecordStore(DIR)
        assert fresh.load("rx") is None
        assert fresh.corrupt_found == 1

    on_fresh_flash(check)


def test_a_truncated_slot_is_corrupt():
    def check(store):
        store.save("rx", 1, b"old record")
        store.save("rx", 2, b"new record")
        with open(DIR + "/rx.b", "rb") as f:
            head = f.read(20)
        with open(DIR + "/rx.b", "wb") as f:
            f.write(head)
        assert RecordStore(DIR).load("rx") == (1, b"old record")

    on_fresh_flash(check)


def test_an_oversized_payload_is_refused_and_the_record_kept():
    def check(store):
        store.save("rx", 1, b"kept")
        try:
            store.save("rx", 2, bytes(MAX_PAYLOAD + 1))
            raise AssertionError("expected ValueError")
        except ValueError:
            pass
        assert store.load("rx") == (1, b"kept")

    on_fresh_flash(check)


def save_sequence(progress):
    # progress: [index of the save in flight, index of the last acknowledged]
    store = RecordStore(DIR)
    for i in range(len(PAYLOADS)):
        progress[0] = i
        store.save("rx", i + 1, PAYLOADS[i])
        progress[1] = i


def record(i):
    return None if i < 0 else (i + 1, PAYLOADS[i])


def check_after_cut(progress, cut_at):
    store = RecordStore(DIR)
    got = store.load("rx")
    assert got in (record(progress[1]), record(progress[0])), (cut_at, got and got[0], progress)
    store.save("rx", 99, b"after the cut")  # the store works on
    assert RecordStore(DIR).load("rx") == (99, b"after the cut"), cut_at


def cut_at_every_write(tear):
    total = imagekit.cut_at_every_write(save_sequence, lambda: [-1, -1], check_after_cut, tear)
    print("records: power cut at each of %d writes (tear=%s)" % (total, tear))


def test_a_power_cut_at_any_write_of_a_save_leaves_the_old_or_the_new_record():
    cut_at_every_write(False)


def test_a_torn_write_at_any_point_of_a_save_leaves_the_old_or_the_new_record():
    cut_at_every_write(True)


def save_wear(size, saves):
    # Flash operations of `saves` saves of a size-byte record, at RP2040
    # littlefs geometry: 4096-byte erase blocks, 256-byte programs.
    path = new_image(4096, 256)
    try:
        dev = mount(path, block_size=4096, progsize=256)
        store = RecordStore(DIR)
        store.save("rx", 1, bytes(size))  # the first save of each slot creates it
        store.save("rx", 1, bytes(size))
        p0, e0, b0 = dev.programs, dev.erases, dev.bytes_programmed
        for i in range(saves):
            store.save("rx", 1, bytes(size))
        wear = (dev.programs - p0, dev.erases - e0, dev.bytes_programmed - b0)
        print("records: %d saves of %d bytes: %d programs, %d erases, %d bytes programmed"
              % ((saves, size) + wear))
        unmount(dev)
        return wear
    finally:
        os.remove(path)


def test_a_small_save_costs_one_metadata_program_and_rarely_an_erase():
    # Up to about 240 bytes a slot is inlined in littlefs metadata.
    programs, erases, _ = save_wear(100, 50)
    assert programs <= 50 and erases <= 5


def test_a_kilobyte_save_costs_about_one_block_erase():
    programs, erases, _ = save_wear(1000, 20)
    assert programs <= 40 and erases <= 22
