# Stand-in for the rp2 port's `rp2` module: the BOOTSEL button the test
# presses, and Flash as a RAM block device (the extended block protocol
# littlefs uses, like rp2.Flash) for a littlefs the test mounts.
_bootsel = 0

_BLOCK_SIZE = 4096
_BLOCK_COUNT = 64


def bootsel_button():
    return _bootsel


def press_bootsel(pressed=True):
    global _bootsel
    _bootsel = 1 if pressed else 0


class Flash:
    def __init__(self, *, start=-1, len=-1):
        self.block_count = _BLOCK_COUNT
        self.data = bytearray(b"\xff" * (_BLOCK_SIZE * _BLOCK_COUNT))

    def readblocks(self, block, buf, offset=0):
        at = block * _BLOCK_SIZE + offset
        buf[:] = self.data[at:at + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            self.ioctl(6, block)
            offset = 0
        at = block * _BLOCK_SIZE + offset
        self.data[at:at + len(buf)] = buf

    def ioctl(self, op, arg=0):
        if op == 4:  # block count
            return self.block_count
        if op == 5:  # block size
            return _BLOCK_SIZE
        if op == 6:  # erase
            at = arg * _BLOCK_SIZE
            self.data[at:at + _BLOCK_SIZE] = b"\xff" * _BLOCK_SIZE
        return 0
