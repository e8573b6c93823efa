# Flash of the emulated board: a littlefs2 filesystem (the one a Pico's flash
# carries) on a block-device image file that persists between runs.
import os
import vfs

BLOCK_SIZE = 4096
BLOCK_COUNT = 352  # 1.4 MiB: the Pico's default filesystem size
_ERASED = b"\xff"
# littlefs's read unit (its caches are 4 of them, MicroPython's extmod/vfs_lfs):
# with the default 32 bytes a state save took 75 reads and 20 writes through
# this Python device, 512 bytes take 13 and 3, and the save a third of the
# time. (The Pico keeps rp2's defaults.) littlefs keeps files up to a
# cache's size inline in their directory, and a smaller cache cannot read
# those back: every mount of an emulator image goes through filesystem().
# Images made with the default caches read fine this way.
READ_SIZE = 512


class ImageBlockDevice:
    # The extended block protocol littlefs uses: byte offsets and erase.
    def __init__(self, path, block_size=BLOCK_SIZE, block_count=BLOCK_COUNT):
        self.block_size = block_size
        self.block_count = block_count
        size = block_size * block_count
        try:
            if os.stat(path)[6] != size:
                raise OSError
        except OSError:
            with open(path, "wb") as f:
                blank = _ERASED * block_size
                for _ in range(block_count):
                    f.write(blank)
        # Unbuffered: each write() is handed to the kernel at once, so a power
        # cut (the emulator's process killed) keeps everything written before
        # it, as the flash chip would. No fsync: that guards only against the
        # host itself crashing, and costs half a millisecond per block.
        self.file = open(path, "r+b")
        self._erased = _ERASED * block_size
        self.writes = 0

    def readblocks(self, block, buf, offset=0):
        self.file.seek(block * self.block_size + offset)
        self.file.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            self.ioctl(6, block)
            offset = 0
        self.writes += 1
        self.file.seek(block * self.block_size + offset)
        self.file.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.block_count
        if op == 5:
            return self.block_size
        if op == 6:
            self.file.seek(arg * self.block_size)
            self.file.write(self._erased)
        return 0

    def close(self):
        self.file.close()


def filesystem(bdev):
    # The emulator image's littlefs, with its caches (READ_SIZE).
    return vfs.VfsLfs2(bdev, readsize=READ_SIZE)


def mount(bdev, point="/flash"):
    try:
        fs = filesystem(bdev)
    except OSError:
        vfs.VfsLfs2.mkfs(bdev)
        fs = filesystem(bdev)
    vfs.mount(fs, point)
    return point


def unmount(point="/flash"):
    vfs.umount(point)
