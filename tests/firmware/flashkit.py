# An emulated pump on a real littlefs image, rebooted as often as a test likes.
import hal
import vfs
from fixtures import continuous
from flash_fault import FlashFaultDevice
from power_cut import PowerCut, PowerCutDevice
from startup import start_pump
from unix_board import UnixBoard

POINT = "/flash"
BLOCK_SIZE = 512
BLOCK_COUNT = 256  # 128 KiB: room for state and a few thousand log records
PROG = 32


class RamFlash:
    # A flash chip held in RAM (the same littlefs on top, much faster than an
    # image file for sweeps of thousands of power cuts). Erased bytes are 0xff.
    block_size = BLOCK_SIZE
    block_count = BLOCK_COUNT

    def __init__(self, image):
        self.image = image
        self.mv = memoryview(image)

    def readblocks(self, block, buf, offset=0):
        at = block * BLOCK_SIZE + offset
        buf[:] = self.mv[at:at + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            self.ioctl(6, block)
            offset = 0
        at = block * BLOCK_SIZE + offset
        self.mv[at:at + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return BLOCK_COUNT
        if op == 5:
            return BLOCK_SIZE
        if op == 6:
            at = arg * BLOCK_SIZE
            self.mv[at:at + BLOCK_SIZE] = ERASED_BLOCK
        return 0

    def close(self):
        pass


ERASED_BLOCK = b"\xff" * BLOCK_SIZE


def new_image():
    image = bytearray(b"\xff" * (BLOCK_SIZE * BLOCK_COUNT))
    vfs.VfsLfs2.mkfs(RamFlash(image), progsize=PROG)
    return image


def copy_image(src):
    return bytearray(src)


class FlashPump:
    # power_on() boots the pump from the image; power_off() unmounts it.
    def __init__(self, image, cut_at=None, tear=False, flash_faults=False):
        # flash_faults: dev is a FlashFaultDevice whose `failing` the test sets.
        self.flash_faults = flash_faults
        self.image = image
        self.cut_at = cut_at
        self.tear = tear
        self.dev = None
        self.board = None

    def power_on(self, cause=hal.RESET_POWER_ON, board=None):
        self.dev = PowerCutDevice(RamFlash(self.image), self.cut_at, self.tear, PROG)
        if self.flash_faults:
            self.dev = FlashFaultDevice(self.dev)
        vfs.mount(vfs.VfsLfs2(self.dev, progsize=PROG), POINT)
        self.board = board or UnixBoard(virtual=True, flash_dir=POINT)
        self.board.flash = POINT
        self.pump, self.persist, self.cause = start_pump(self.board, cause)
        return self.pump

    def power_off(self):
        try:
            self.pump.log.close()
        except (Exception, PowerCut):  # the power is already gone
            pass
        try:
            vfs.umount(POINT)
        except OSError:
            pass
        self.dev.close()
        self.cut_at = None  # the power comes back

    def remove(self):
        self.image = None


def first_fill(pump, rx=None, fill_nl=20000000):
    pump.clock.set(20000, 8 * 3600)
    pump.reservoir.fill(fill_nl)
    pump.program(rx or continuous())


def with_pump(check):
    # check(fp) on a fresh flash pump, powered off and removed afterwards.
    fp = FlashPump(new_image())
    try:
        check(fp)
    finally:
        fp.power_off()
        fp.remove()
