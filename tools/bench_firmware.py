# Firmware benchmark, run by the MicroPython unix port (tools/bench.py drives
# it). Prints one JSON object. Reports only: no assertions.
import gc
import json
import sys
import time

root = sys.path[0] + "/.."
sys.path[1:1] = [root + "/firmware", root + "/boards/unix", root + "/tests/firmware"]
if "--code" in sys.argv:  # the emulator's native build first (host_tools/pumpctl/nativecode.py)
    sys.path.insert(1, sys.argv[sys.argv.index("--code") + 1])

from fixtures import DAY_MS, expected_basal_strokes, flex, make_pump, run, strokes  # noqa: E402

FLEX = [(0, 8000000), (6 * 3600, 12000000), (12 * 3600, 10000000), (22 * 3600, 6000000)]
TICKS = 20000
TICK_MS = 100


def reference_loop_us():
    # A fixed workload, timed in the same run, so tick cost can be compared
    # across machines as a ratio.
    t = time.ticks_us()
    x = 0
    for i in range(100000):
        x += i
    return time.ticks_diff(time.ticks_us(), t) / 100000 * 1000  # us per 1000 iterations


def full_rx():
    rx = flex(FLEX)
    rx["periodic"] = [{"time_s": 8 * 3600, "dose_ng": 500000, "duration_s": 600}]
    rx["demand"] = {"dose_ng": 200000, "duration_s": 300, "lockout_s": 900, "max_per_day": 6}
    return rx


def tick_costs():
    import array

    pump = make_pump(full_rx(), tod_s=7 * 3600 + 55 * 60)  # crosses the periodic bolus
    clock = pump.board.clock
    costs = array.array("i", [0] * TICKS)
    for i in range(TICKS):
        clock.advance(TICK_MS)
        t = time.ticks_us()
        pump.tick()
        costs[i] = time.ticks_diff(time.ticks_us(), t)
    s = sorted(costs)
    return s[TICKS // 2], s[TICKS * 99 // 100], s[-1]


def allocations_per_tick():
    pump = make_pump(full_rx(), tod_s=7 * 3600 + 55 * 60)
    clock = pump.board.clock
    run(pump, 1000)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(TICKS):
        clock.advance(TICK_MS)
        pump.tick()
    after = gc.mem_alloc()
    gc.enable()
    return (after - before) / TICKS


def simulate_180_days():
    tod0 = 5 * 3600
    pump = make_pump(flex(FLEX), tod_s=tod0)
    worst = 0
    t = time.ticks_ms()
    for day in range(180):
        if day % 15 == 0:
            pump.reservoir.fill(20000000)
        run(pump, DAY_MS)
        err = abs(strokes(pump) - expected_basal_strokes(pump, tod0, (day + 1) * 86400))
        worst = max(worst, err)
    wall_ms = time.ticks_diff(time.ticks_ms(), t)
    return wall_ms, worst, strokes(pump)


def core_footprint():
    # Heap held by the portable core (pump, scheduler, ledger, therapy): what
    # the Pico must fit. The unix board's bench recorders are not counted.
    from pump import Pump
    from unix_board import UnixBoard

    board = UnixBoard()
    gc.collect()
    before = gc.mem_alloc()
    pump = Pump(board)
    pump.program(full_rx())
    gc.collect()
    return gc.mem_alloc() - before


def flash_wear():
    # A day of 1 mL/day dosing on the Pico's flash geometry (4 KiB blocks,
    # 256-byte programs): block programs and erases per day.
    import os

    import vfs
    from image_flash import ImageBlockDevice
    from power_cut import PowerCutDevice
    from startup import start_pump
    from unix_board import UnixBoard

    path = "/tmp/bench-flash.img"
    dev = PowerCutDevice(ImageBlockDevice(path, 4096, 352), None, False, 256)
    vfs.VfsLfs2.mkfs(dev, progsize=256)
    vfs.mount(vfs.VfsLfs2(dev, progsize=256), "/flash")
    board = UnixBoard(virtual=True, flash_dir="/flash")
    pump, persist, _ = start_pump(board, 0)
    pump.clock.set(20000, 0)
    pump.reservoir.fill(20000000)
    pump.program(flex(FLEX))
    run(pump, DAY_MS)  # settle
    programs, erases, saves = dev.programs, dev.erases, persist.saves
    records = pump.log.last_seq()
    run(pump, DAY_MS)
    result = {"flash_programs_per_day": dev.programs - programs, "flash_erases_per_day": dev.erases - erases,
              "state_saves_per_day": persist.saves - saves, "log_records_per_day": pump.log.last_seq() - records}
    vfs.umount("/flash")
    dev.close()
    os.remove(path)
    return result


def main():
    gc.collect()
    if "--sim-only" in sys.argv:  # tools/bench_emulator.py's anchor, in its own run
        wall_ms, worst_err, n = simulate_180_days()
        print(json.dumps({"sim_180_days_s": wall_ms / 1000, "worst_error_strokes": worst_err}))
        return
    ref = reference_loop_us()
    median, p99, worst_tick = tick_costs()
    alloc = allocations_per_tick()
    wall_ms, worst_err, n = simulate_180_days()
    report = {
        "reference_us_per_1000_iterations": ref,
        "tick_us_median": median, "tick_us_p99": p99, "tick_us_max": worst_tick,
        "tick_median_vs_reference": median / ref, "tick_p99_vs_reference": p99 / ref,
        "bytes_allocated_per_tick": alloc,
        "sim_180_days_s": wall_ms / 1000, "sim_speedup": 180 * DAY_MS / wall_ms,
        "sim_strokes": n, "worst_error_strokes": worst_err,
        "core_heap_bytes": core_footprint(),
    }
    report.update(flash_wear())
    print(json.dumps(report))


main()
