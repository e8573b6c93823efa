# Power cut of the emulated board: a block-device wrapper that lets the
# power die during the Nth flash operation, to prove storage survives it.
#
# Counting: every operation that changes flash is one "write" in .writes and
# can be the one the power dies in: a program (writeblocks) and an erase
# (ioctl 6, or the implicit erase of writeblocks without an offset) each
# count once. .programs, .erases and .bytes_programmed split the same
# operations for wear arithmetic.
#
# The cut: when .writes reaches cut_at the operation does nothing, or with
# tear=True only its first half (rounded down to prog_size bytes; an erase
# erases the first half of the block), and PowerCut is raised. Every later
# program or erase raises PowerCut without touching flash: the power is gone.
# Reads still work, so the filesystem can be unmounted cleanly in tests.
#
# close() ends a run: it closes the image, and from then on every operation
# fails with -EIO, the block protocol's error return. File handles abandoned
# by the cut are closed later by the garbage collector: they can no longer
# touch the image (or a later run's image); their close fails with EIO,
# which MicroPython prints from the finaliser.
from micropython import const

_IOCTL_ERASE = const(6)
_EIO = const(5)
_ERASED = b"\xff"


class PowerCut(BaseException):
    # Not an Exception: the firmware's fault handlers must not "handle" the
    # power going away (on a board the CPU simply stops).
    pass


class PowerCutDevice:
    def __init__(self, inner, cut_at=None, tear=False, prog_size=32):
        self.inner = inner
        self.cut_at = cut_at
        self.tear = tear
        self.prog_size = prog_size  # littlefs progsize: the smallest program
        self.block_size = inner.block_size
        self.writes = 0
        self.programs = 0
        self.erases = 0
        self.bytes_programmed = 0
        self.cut = False

    def readblocks(self, block, buf, offset=0):
        if self.inner is None:
            return -_EIO
        self.inner.readblocks(block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        if self.inner is None:
            return -_EIO
        if offset is None:  # simple protocol: a whole block, erased first
            self._erase(block)
            offset = 0
        if self._power_dies():
            if self.tear:
                keep = len(buf) // 2 // self.prog_size * self.prog_size
                if keep:
                    self.inner.writeblocks(block, memoryview(buf)[:keep], offset)
            raise PowerCut
        self.programs += 1
        self.bytes_programmed += len(buf)
        self.inner.writeblocks(block, buf, offset)

    def ioctl(self, op, arg):
        if self.inner is None:
            return -_EIO
        if op == _IOCTL_ERASE:
            self._erase(arg)
            return 0
        return self.inner.ioctl(op, arg)

    def close(self):
        if self.inner is not None:
            self.inner.close()
            self.inner = None

    def _erase(self, block):
        if self._power_dies():
            if self.tear:
                self.inner.writeblocks(block, _ERASED * (self.block_size // 2), 0)
            raise PowerCut
        self.erases += 1
        self.inner.ioctl(_IOCTL_ERASE, block)

    def _power_dies(self):
        # True when the power dies during this operation.
        if self.cut:
            raise PowerCut
        self.writes += 1
        if self.writes == self.cut_at:
            self.cut = True
        return self.cut
