# Small littlefs images in files, mounted through the power-cut device: the
# flash of the record-store and event-log tests.
import binascii
import os

import vfs
from image_flash import ImageBlockDevice
from power_cut import PowerCutDevice

BLOCK_SIZE = 512
BLOCK_COUNT = 64
POINT = "/flash"


def new_image(block_size=BLOCK_SIZE, progsize=32):
    path = "/tmp/lfs-%s.img" % binascii.hexlify(os.urandom(4)).decode()
    bdev = ImageBlockDevice(path, block_size, BLOCK_COUNT)
    vfs.VfsLfs2.mkfs(bdev, progsize=progsize)
    bdev.close()
    return path


def mount(path, cut_at=None, tear=False, block_size=BLOCK_SIZE, progsize=32):
    dev = PowerCutDevice(ImageBlockDevice(path, block_size, BLOCK_COUNT), cut_at, tear, progsize)
    vfs.mount(vfs.VfsLfs2(dev, progsize=progsize), POINT)
    return dev


def unmount(dev):
    vfs.umount(POINT)
    dev.close()


def cut_at_every_write(workload, new_progress, check, tear):
    # Runs workload(progress) on a fresh image once to count its writes, then
    # once per write with the power cut there; after each cut the image is
    # mounted again with the power back and check(progress, cut_at) runs.
    # File handles the cut abandoned are closed later by the garbage
    # collector against the closed device; MicroPython prints the EIO that
    # raises in the finaliser (seen with pytest -s). Nothing reaches the image.
    from power_cut import PowerCut

    path = new_image()
    try:
        dev = mount(path)
        workload(new_progress())
        total = dev.writes
        unmount(dev)
    finally:
        os.remove(path)
    for cut_at in range(1, total + 1):
        path = new_image()
        try:
            progress = new_progress()
            dev = mount(path, cut_at, tear)
            try:
                workload(progress)
            except PowerCut:
                pass
            assert dev.cut, cut_at
            unmount(dev)
            dev = mount(path)
            check(progress, cut_at)
            unmount(dev)
        finally:
            os.remove(path)
    return total
