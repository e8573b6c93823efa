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
