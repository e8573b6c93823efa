# Run on the (emulated) Pico at its REPL by tools/rp2emu/bench_rp2.py, with
# the pump deployed: memory after the imports and with the pump built, flash
# used, Pump.tick and one idle main-loop pass in emulated microseconds, and
# allocations per tick under heap_lock. Prints one line: RP2BENCH {json}.
import gc
import json
import os
import time

import micropython

gc.collect()
heap = gc.mem_free() + gc.mem_alloc()
free_boot = gc.mem_free()
import main  # noqa: E402  everything the pump imports (main.run is not called)

import config  # noqa: E402
import pico_board  # noqa: E402
import startup  # noqa: E402
from usb_link import UsbLink  # noqa: E402

gc.collect()
free_imported = gc.mem_free()
board = pico_board.PicoBoard(config)
pump, persist, _ = startup.start_pump(board, board.reset_cause())
link = main.make_link(board, pump, UsbLink())
gc.collect()
free_built = gc.mem_free()


def timed(fn, n, pause_ms):
    out = []
    for _ in range(n):
        t = time.ticks_us()
        fn()
        out.append(time.ticks_diff(time.ticks_us(), t))
        if pause_ms:
            time.sleep_ms(pause_ms)
    out.sort()
    return out


def loop_pass():
    board.loop_begin()
    link.poll()
    if pump.needs_service():
        pump.service()
    board.loop_end()


ticks = timed(pump.tick, 300, board.TICK_MS)
loops = timed(loop_pass, 300, 0)
allocating = 0
for _ in range(100):
    micropython.heap_lock()
    try:
        pump.tick()
    except MemoryError:
        allocating += 1
    finally:
        micropython.heap_unlock()
    time.sleep_ms(board.TICK_MS)
board.stop()
st = os.statvfs("/")
print("RP2BENCH", json.dumps({
    "heap_bytes": heap, "free_at_repl": free_boot, "free_after_imports": free_imported,
    "free_pump_built": free_built,
    "tick_us": [ticks[len(ticks) // 2], ticks[len(ticks) * 99 // 100], ticks[-1]],
    "loop_pass_us": [loops[len(loops) // 2], loops[len(loops) * 99 // 100], loops[-1]],
    "ticks_allocating_of_100": allocating,
    "flash_blocks": [st[2] - st[3], st[2]], "block_size": st[0],
}))
