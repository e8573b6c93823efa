# Run on the (emulated) Pico at its REPL by tools/rp2emu/bench_rp2.py, first
# after `pumpctl maintenance` (kept small: mpremote compiles it into the same
# heap it measures). main.py's maintenance boot has imported every module of
# the pump. Measures free heap so, then with the pump, board and link built
# (and the heap report, micropython.mem_info, for the largest free block);
# then what importing every module takes: all unloaded, collected, imported
# again. Prints one line: RP2HEAP {json}.
import gc
import json
import sys

import micropython

gc.collect()
heap = gc.mem_free() + gc.mem_alloc()
free_imported = gc.mem_free()
import main  # noqa: E402  (main.py ran as __main__: as a module, only its own few functions)
import config  # noqa: E402
import pico_board  # noqa: E402
import startup  # noqa: E402
from usb_link import UsbLink  # noqa: E402

board = pico_board.PicoBoard(config)
pump, persist, _ = startup.start_pump(board, board.reset_cause())
link = main.make_link(board, pump, UsbLink())
gc.collect()
free_built = gc.mem_free()
import aead  # noqa: E402  (imported by wire: which back end seals the link here, and why)
cipher = {"impl": aead.IMPL, "viper_error": aead.VIPER_ERROR}
micropython.mem_info()  # its "max free sz": the largest free block, in 16-byte blocks
del board, pump, persist, link, main, config, pico_board, startup, UsbLink
g = globals()
for name in ("Link", "PicoBoard", "make_link", "loop_once", "run"):  # main.py's, in __main__
    g.pop(name, None)
names = [n for n in sys.modules if n not in ("micropython", "gc", "json", "sys")]
for n in names:
    del sys.modules[n]
gc.collect()
free_bare = gc.mem_free()
for n in names:
    __import__(n)
gc.collect()
print("RP2HEAP", json.dumps({"heap_bytes": heap, "free_after_imports": free_imported, "free_pump_built": free_built,
                             "imports_heap_bytes": free_bare - gc.mem_free(), "modules": names,
                             "aead": cipher}))
# Left unloaded. onboard_bench.py runs next after a soft reset (a fresh heap,
# as at a boot): what was unloaded here is not always all freed, since the
# collector scans the stack conservatively.
for n in names:
    del sys.modules[n]
gc.collect()
