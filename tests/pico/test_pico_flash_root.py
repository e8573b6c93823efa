# The Pico's flash as `pumpctl deploy` leaves it and the board uses it:
# main.py at the littlefs root, every other module in /lib as .mpy, and the
# state folder the board makes at the root. The rp2 port searches sys.path
# ['', '.frozen', '/lib'] from the root, so a folder at the root named like a
# module (the state folder was once /pump) is imported in place of
# /lib/<name>.mpy: `import main` then fails on the real board (issue #14).
import os
import sys

import vfs

import config
import pinmap
import rp2
from picokit import expect, make_config

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_ROOT = _HERE + "/../.."
# What the tests must not take from the flash: the stand-ins and the runner.
_HOST = ("machine", "rp2", "mptest", "picokit", "vfs", "micropython")


def _copy(src, dest):
    with open(src, "rb") as f:
        data = f.read()
    with open(dest, "wb") as f:
        f.write(data)


def _deployed_flash():
    # A blank littlefs with deploy's layout, on RAM flash.
    dev = rp2.Flash()
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/deploy")
    os.mkdir("/deploy/lib")
    _copy(_ROOT + "/boards/pico/main.py", "/deploy/main.py")
    for d in (_ROOT + "/build/mpy/firmware", _ROOT + "/build/mpy/boards/pico"):
        for name in os.listdir(d):
            if name.endswith(".mpy") and name != "main.mpy":
                _copy(d + "/" + name, "/deploy/lib/" + name)
    vfs.umount("/deploy")
    return dev


def _as_the_rp2_port(dev):
    # The littlefs becomes the root filesystem and the working directory, with
    # the rp2 port's sys.path; nothing of the firmware stays imported.
    vfs.umount("/")
    vfs.mount(vfs.VfsLfs2(dev), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    for name in list(sys.modules):
        if name not in _HOST and not name.startswith("test_"):
            del sys.modules[name]


def test_the_pump_imports_with_its_state_folder_at_the_flash_root():
    dev = _deployed_flash()
    _as_the_rp2_port(dev)
    import pico_board  # /lib/pico_board.mpy: the board makes its state folder at the root

    board_cfg = __import__("config")
    pico_board.PicoBoard(board_cfg)
    top = board_cfg.FLASH_DIR.strip("/").split("/")[0]
    assert top in os.listdir("/"), os.listdir("/")
    assert os.stat("/" + top)[0] & 0x4000  # a folder
    # The second power-up: main.py's imports, with that folder there.
    import main

    import pump
    import startup

    assert hasattr(pump, "Pump") and pump.__file__ == "/lib/pump.mpy", getattr(pump, "__file__", pump)
    assert startup.start_pump and main.run
    for name in os.listdir("/lib"):
        stem = name[:-4]
        assert stem not in os.listdir("/"), "/%s shadows /lib/%s" % (stem, name)


def test_a_state_folder_named_like_a_module_is_refused():
    assert pinmap.flash_dir_problem(config.FLASH_DIR) is None, config.FLASH_DIR
    for bad in ("/pump", "/data", "/config/state", "pump"):
        e = expect(ValueError, pinmap.check, make_config(FLASH_DIR=bad))
        assert "FLASH_DIR" in str(e) and "shadows" in str(e), str(e)
    for good in ("/pump-data", "/pump-data/x", "/pico-flash/pump-data"):
        assert pinmap.flash_dir_problem(good) is None, good
