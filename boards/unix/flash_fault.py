# Flash faults of the emulated board, as littlefs sees them (bench equipment):
# a block-device wrapper that
#   - fails programs and erases while `failing` is set, the way a worn or
#     marginal flash chip fails them;
#   - turns a power cut of the device below it (power_cut.PowerCutDevice) into
#     a failed write and sets `power_died`, so the bench stops the pump there.
# Both return -EIO, the block protocol's error return: littlefs reports
# OSError(EIO) to the firmware and its own state stays consistent. (An
# exception raised inside littlefs unwinds through its C code and can leave
# it holding pointers to dead stack frames: harmless when the filesystem is
# abandoned at once, as the power-cut sweeps do, but not when the firmware
# catches the exception and keeps using the filesystem.) Reads keep working.
from micropython import const

from power_cut import PowerCut

_IOCTL_ERASE = const(6)
_EIO = const(5)


class FlashFaultDevice:
    def __init__(self, inner):
        self.inner = inner
        self.block_size = inner.block_size
        self.failing = False
        self.failed = 0  # programs and erases refused while failing
        self.power_died = False

    def readblocks(self, block, buf, offset=0):
        return self.inner.readblocks(block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        if self.failing:
            self.failed += 1
            return -_EIO
        try:
            return self.inner.writeblocks(block, buf, offset)
        except PowerCut:
            self.power_died = True
            return -_EIO

    def ioctl(self, op, arg):
        if op == _IOCTL_ERASE:
            if self.failing:
                self.failed += 1
                return -_EIO
            try:
                return self.inner.ioctl(op, arg)
            except PowerCut:
                self.power_died = True
                return -_EIO
        return self.inner.ioctl(op, arg)

    def close(self):
        self.inner.close()
