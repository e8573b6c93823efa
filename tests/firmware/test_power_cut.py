# Power cut of the emulated board: the Nth flash write is the last one.
import binascii
import os

import vfs
from image_flash import ImageBlockDevice
from power_cut import PowerCut, PowerCutDevice

BLOCK_SIZE = 512
BLOCK_COUNT = 64
PROG = 32


def image_path():
    return "/tmp/power_cut-%s.img" % binascii.hexlify(os.urandom(4)).decode()


def device(path, cut_at=None, tear=False):
    return PowerCutDevice(ImageBlockDevice(path, BLOCK_SIZE, BLOCK_COUNT), cut_at, tear, PROG)


def block(dev, n):
    buf = bytearray(BLOCK_SIZE)
    dev.readblocks(n, buf)
    return buf


def raises_power_cut(fn, *args):
    try:
        fn(*args)
    except PowerCut:
        return True
    return False


def test_writes_before_the_cut_reach_flash_and_are_counted():
    path = image_path()
    try:
        dev = device(path, cut_at=3)
        dev.writeblocks(1, b"\x11" * 64, 0)
        dev.ioctl(6, 2)
        assert block(dev, 1)[:64] == b"\x11" * 64
        assert (dev.writes, dev.programs, dev.erases, dev.bytes_programmed) == (2, 1, 1, 64)
        dev.close()
    finally:
        os.remove(path)


def test_the_cut_write_raises_power_cut_and_changes_nothing():
    path = image_path()
    try:
        dev = device(path, cut_at=1)
        assert raises_power_cut(dev.writeblocks, 1, b"\x00" * 64, 0)
        assert block(dev, 1) == b"\xff" * BLOCK_SIZE
        assert dev.cut and dev.writes == 1 and dev.programs == 0
        dev.close()
    finally:
        os.remove(path)


def test_a_torn_write_keeps_only_its_first_half_in_whole_program_units():
    path = image_path()
    try:
        dev = device(path, cut_at=1, tear=True)
        assert raises_power_cut(dev.writeblocks, 1, b"\x00" * 96, 0)
        # Half of 96 is 48, rounded down to the 32-byte program size.
        assert block(dev, 1)[:96] == b"\x00" * 32 + b"\xff" * 64
        dev.close()
    finally:
        os.remove(path)


def test_an_erase_counts_as_a_write_and_can_be_the_cut():
    path = image_path()
    try:
        dev = device(path, cut_at=2)
        dev.writeblocks(1, b"\x00" * BLOCK_SIZE, 0)
        assert raises_power_cut(dev.ioctl, 6, 1)
        assert block(dev, 1) == b"\x00" * BLOCK_SIZE
        assert dev.writes == 2 and dev.erases == 0
        dev.close()
    finally:
        os.remove(path)


def test_a_torn_erase_erases_only_the_first_half_of_the_block():
    path = image_path()
    try:
        dev = device(path, cut_at=2, tear=True)
        dev.writeblocks(1, b"\x00" * BLOCK_SIZE, 0)
        assert raises_power_cut(dev.ioctl, 6, 1)
        half = BLOCK_SIZE // 2
        assert block(dev, 1) == b"\xff" * half + b"\x00" * half
        dev.close()
    finally:
        os.remove(path)


def test_a_whole_block_write_without_offset_is_an_erase_then_a_program():
    path = image_path()
    try:
        dev = device(path)
        dev.writeblocks(1, b"\x22" * BLOCK_SIZE)
        assert (dev.writes, dev.erases, dev.programs) == (2, 1, 1)
        assert block(dev, 1) == b"\x22" * BLOCK_SIZE
        dev.close()
    finally:
        os.remove(path)


def test_every_write_after_the_cut_fails_without_touching_flash():
    path = image_path()
    try:
        dev = device(path, cut_at=1, tear=True)
        raises_power_cut(dev.writeblocks, 1, b"\x00" * 64, 0)
        assert raises_power_cut(dev.writeblocks, 2, b"\x00" * 64, 0)
        assert raises_power_cut(dev.ioctl, 6, 3)
        assert block(dev, 2) == b"\xff" * BLOCK_SIZE
        assert dev.writes == 1
        dev.close()
    finally:
        os.remove(path)


def test_geometry_queries_pass_through_after_the_cut():
    path = image_path()
    try:
        dev = device(path, cut_at=1)
        raises_power_cut(dev.ioctl, 6, 0)
        assert dev.ioctl(4, 0) == BLOCK_COUNT and dev.ioctl(5, 0) == BLOCK_SIZE
        dev.close()
    finally:
        os.remove(path)


def test_littlefs_works_on_the_device_and_every_inner_write_is_counted():
    path = image_path()
    try:
        dev = device(path)
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), "/flash")
        with open("/flash/f", "wb") as f:
            f.write(b"x" * 1000)
        vfs.umount("/flash")
        assert dev.programs == dev.inner.writes and dev.erases > 0
        dev.close()
        dev = device(path)
        vfs.mount(vfs.VfsLfs2(dev), "/flash")
        with open("/flash/f", "rb") as f:
            assert f.read() == b"x" * 1000
        vfs.umount("/flash")
        dev.close()
    finally:
        os.remove(path)


def test_a_cut_inside_littlefs_surfaces_as_power_cut():
    path = image_path()
    try:
        plain = device(path)
        vfs.VfsLfs2.mkfs(plain)
        plain.close()
        dev = device(path, cut_at=1)
        vfs.mount(vfs.VfsLfs2(dev), "/flash")
        try:
            assert raises_power_cut(lambda: open("/flash/f", "wb").write(b"x"))
        finally:
            vfs.umount("/flash")
            dev.close()
    finally:
        os.remove(path)


def test_a_closed_device_refuses_everything_with_eio():
    # Abandoned littlefs file handles are closed by the garbage collector
    # after the run: they must not reach the image any more.
    path = image_path()
    try:
        dev = device(path, cut_at=1)
        raises_power_cut(dev.ioctl, 6, 0)
        dev.close()
        buf = bytearray(16)
        assert dev.readblocks(0, buf) == -5
        assert dev.writeblocks(1, b"\x00" * 64, 0) == -5
        assert dev.ioctl(6, 1) == -5
        assert dev.writes == 1
    finally:
        os.remove(path)
