# Helpers for the Pico board tests: configurations, a littlefs on RAM flash,
# a fake USB serial port, and running the board on the virtual clock.
import io
import select

import vfs

import config
import machine
import rp2
from pico_board import PicoBoard

_STREAM_POLL = 3  # MP_STREAM_POLL
FLASH_MOUNT = "/pico-flash"  # the Pico's root filesystem, mounted beside the host's (no identifier: see pinmap)

# The bench prototype of docs/wiring.md.
BENCH = {"STEP_PIN": 2, "DIR_PIN": 3, "ENABLE_PIN": 4, "MOTOR_FEEDBACK": 5, "BUZZER_PIN": 16,
         "PRESSURE_ADC": 26, "BATTERY_ADC": 27, "BATTERY_RATIO_NUM": 2, "MAINTENANCE_BUTTON": 15}


class Config:
    pass


def make_config(base=None, **overrides):
    # config.py's values, then `base` (e.g. BENCH), then the overrides.
    at_rest()
    cfg = Config()
    for name in dir(config):
        if name.isupper():
            setattr(cfg, name, getattr(config, name))
    for table in (base or {}, overrides):
        for name in table:
            setattr(cfg, name, table[name])
    if "FLASH_DIR" not in overrides:
        cfg.FLASH_DIR = mount_flash() + config.FLASH_DIR
    return cfg


_mounted = []


def mount_flash():
    # A fresh littlefs on RAM flash, as the rp2 port's root.
    if not _mounted:
        dev = rp2.Flash()
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), FLASH_MOUNT)
        _mounted.append(dev)
    return FLASH_MOUNT


def at_rest():
    # Analogue inputs of a healthy bench: 3.2 V cell through a 1:1 divider on
    # GP27, 4.95 V VSYS/3 on GP29, the pressure sensor at its zero on GP26.
    machine.set_adc_mv(27, 1600)
    machine.set_adc_mv(29, 1650)
    machine.set_adc_mv(26, 330)


def make_board(base=None, **overrides):
    return PicoBoard(make_config(base, **overrides), machine.clock.ticks_ms)


class FakeSerial(io.IOBase):
    # Host side of the USB CDC port: bytes the host sent wait in `rx` for the
    # board's stdin; what the board writes lands in `tx` write by write.
    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()
        self.writes = []

    def ioctl(self, req, arg):
        if req == _STREAM_POLL:
            return select.POLLIN if (arg & select.POLLIN) and self.rx else 0
        return -1  # no file descriptor (the unix port asks) or anything else

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def write(self, data):
        self.writes.append(len(data))
        self.tx += data
        return len(data)

    def send(self, data):
        self.rx += data


def run_loop(board, pump, link, ms):
    # main.py's loop for `ms` of virtual time (the link's transport sleeps,
    # on the stand-in select).
    import main

    end = machine.clock.now + ms
    wait = link.transport.wait
    while machine.clock.now < end:
        main.loop_once(board, pump, link, wait)


def expect(exc_class, fn, *args):
    try:
        fn(*args)
    except exc_class as e:
        return e
    raise AssertionError("%s not raised" % exc_class.__name__)
