# Run on the (emulated) Pico at its REPL by tools/rp2emu/bench_rp2.py, with
# the pump deployed, after onboard_heap.py: flash used, Pump.tick and one idle
# main-loop pass in emulated microseconds, allocations per tick under
# heap_lock; then the stroke-start latency of the real main loop (below).
# Prints one line: RP2BENCH {json}.
import array
import gc
import json
import os
import time

import micropython

import config
import main
import pico_board
import startup
from usb_link import UsbLink

board = pico_board.PicoBoard(config)
pump, persist, _ = startup.start_pump(board, board.reset_cause())
link = main.make_link(board, pump, UsbLink())


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
import link_stages  # noqa: E402  (copied beside this script by bench_rp2.py)

stages, reply_bytes = link_stages.stages(link, 31)  # where a sealed STATUS's pump time goes
st = os.statvfs("/")
figures = {
    "tick_us": [ticks[len(ticks) // 2], ticks[len(ticks) * 99 // 100], ticks[-1]],
    "loop_pass_us": [loops[len(loops) // 2], loops[len(loops) * 99 // 100], loops[-1]],
    "ticks_allocating_of_100": allocating,
    "flash_blocks": [st[2] - st[3], st[2]], "block_size": st[0],
    "link_stages_us": stages, "status_reply_bytes": reply_bytes,
}
del pump, persist, link, board, ticks, loops
gc.collect()

# -- stroke-start latency ------------------------------------------------------
# The real main loop (main.loop_once: the board's tick timer and watchdog, its
# sleep on the USB CDC, the link) runs a fresh pump in a scratch folder, a
# stroke every 2.4 s. A stroke's due instant is the pump's own: the second
# boundary where its accrual passed a whole stroke (basal_phase // rate
# seconds before the tick's latest second). Every other stroke falls due
# while a PROGRAM (checked, applied, saved to flash) holds the ticks, as a
# link command does.
FAST = {"drug": "morphine", "conc_ng_ml": 1000000, "steps": [{"start_s": 0, "dose_ng_day": 18000000}]}
N = 40


class Scratch:
    pass


cfg = Scratch()
for name in dir(config):
    if name.isupper():
        setattr(cfg, name, getattr(config, name))
cfg.FLASH_DIR = "/bench-latency"
board = pico_board.PicoBoard(cfg)
pump, _, _ = startup.start_pump(board, board.reset_cause())
pump.refill(0, 20000000, rx=FAST)
rate = pump.therapy.step_rate_nl_day[0]
due = array.array("i", [0] * N)  # ticks_ms
begun = array.array("i", [0] * N)  # ticks_us at motor_begin
during = array.array("b", [0] * N)
count = array.array("i", [0])
program_ms = array.array("i", [1, 0])  # ticks_ms when the latest PROGRAM began and ended (none yet: 1 > 0)
begin = board.motor_begin


def noted():  # on the tick path: no allocation
    i = count[0]
    if i < N:
        begun[i] = time.ticks_us()
        back = pump.clock.sub_ms + 1000 * (pump.sched.basal_phase // rate)
        d = time.ticks_add(pump.last_ticks, -back)
        due[i] = d
        # Due while the latest PROGRAM held the ticks (by its due instant, not
        # its start: a PROGRAM shorter than a tick period holds no tick, and
        # its stroke starts at the next one, after the PROGRAM).
        during[i] = time.ticks_diff(d, program_ms[0]) >= 0 and time.ticks_diff(program_ms[1], d) >= 0
        count[0] = i + 1
    begin()


board.motor_begin = noted
transport = UsbLink()
link = main.make_link(board, pump, transport)
wait = transport.wait
command_us = []
board.start(pump)
end = time.ticks_add(time.ticks_ms(), 100000)
commanded = -1
while (count[0] < N or pump.stroking) and time.ticks_diff(end, time.ticks_ms()) > 0:
    ms = pump.ms_to_next_event() - time.ticks_diff(time.ticks_ms(), pump.last_ticks)
    if count[0] & 1 and commanded != count[0] and not pump.stroking and 30 < ms < 3000:
        commanded = count[0]
        wait(ms - 20)  # 20 ms before the stroke falls due
        board.loop_begin()
        program_ms[0] = time.ticks_ms()
        t = time.ticks_us()
        pump.program(FAST)
        command_us.append(time.ticks_diff(time.ticks_us(), t))
        program_ms[1] = time.ticks_ms()
        board.loop_end()  # the held ticks run: the stroke starts
    else:
        main.loop_once(board, pump, link, wait)
board.stop()  # the watchdog runs on: the bench ends the emulator
figures["latency"] = {"due_ms": list(due[:count[0]]), "begun_us": list(begun[:count[0]]),
                      "during_program": list(during[:count[0]]), "program_us": command_us}
print("RP2BENCH", json.dumps(figures))
