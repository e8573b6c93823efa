"""The pump measured on the emulated RP2040 (stock MicroPython rp2 firmware,
rp2040js at 125 MHz), for `make bench` (tools/bench.py runs this and adds the
figures to build/bench.json). Times are emulated: what a real Pico takes.

Deploys today's firmware onto a blank emulated Pico, provisions it, programs
a flex therapy and fills it, then measures
  - the sealed STATUS round trip over USB CDC (first byte in to last byte out);
  - the command latency: PROGRAM and BOLUS dry runs (the review screens'
    checks) and an applied PROGRAM, first byte in to last byte out;
  - at 1 mL/day with no link traffic, the core's duty cycle (busy / emulated
    time) and, from it, the current and battery life of docs/energy.md's
    model (ENERGY below: its assumptions);
  - the wall time of deploy and of the emulation;
and, at the REPL after `pumpctl maintenance`: free heap after the imports and
with the pump built, the largest free block, and the heap importing every
module takes against their .mpy bytes (onboard_heap.py); flash used,
Pump.tick and one idle main-loop pass (median, p99, worst), ticks that
allocate under heap_lock, and the stroke-start latency of the real main loop, from the
instant a stroke falls due to its first step pulse on GP2 (the emulator's
record), idle and with a PROGRAM being handled (onboard_bench.py). Prints its figures as one
JSON line last."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import picoemu  # noqa: E402

STATUS_ROUNDS = 30
IDLE_S = 300  # emulated seconds at 1 mL/day with no link traffic: 6-7 strokes
ONE_ML_DAY = ["--drug", "morphine", "--conc", "10mg/mL", "--step", "00:00=10mg/day"]
STROKES_PER_DAY = 2000  # 1 mL/day of 500 nL strokes

# docs/energy.md's current model: assumptions, not measurements (see there).
ENERGY = {
    "active_ma": 22.0,  # RP2040 at 125 MHz running bytecode from flash (datasheet range 20-25 mA)
    "wfe_idle_ma": 12.0,  # core halted in WFE, clocks and PLLs running: what the firmware's sleep is
    "dormant_ma": 0.9,  # Pico board in lightsleep()/DORMANT (MicroPython's measurement): the floor
    "motor_mj_per_stroke": 500.0,  # bench stepper: 2 coils x 0.4 A into 5 ohm (+20 % driver), 250 ms
    "converter_eff": 0.85,  # battery to motor supply
    "battery_v": 3.6,
    "battery_mah": 2000.0,  # an implant-class primary cell; figures scale with it
}


def energy(duty_pct, strokes_per_day):
    # Average battery current and life from the measured duty cycle.
    e, d = ENERGY, duty_pct / 100
    mcu_ma = d * e["active_ma"] + (1 - d) * e["wfe_idle_ma"]
    floor_ma = d * e["active_ma"] + (1 - d) * e["dormant_ma"]
    # mJ / V = mC; / 3600 = mAh
    motor_mah_day = strokes_per_day * e["motor_mj_per_stroke"] / (e["battery_v"] * e["converter_eff"]) / 3600
    life = e["battery_mah"] / (mcu_ma * 24 + motor_mah_day)
    life_dormant = e["battery_mah"] / (floor_ma * 24 + motor_mah_day)
    return {"mcu_avg_ma": round(mcu_ma, 2), "motor_mah_per_day": round(motor_mah_day, 1),
            "battery_life_days": round(life, 1), "battery_life_days_if_idle_dormant": round(life_dormant, 1),
            "battery_life_days_mcu_only_if_idle_dormant": round(e["battery_mah"] / (floor_ma * 24), 1)}


def spread(values):
    return [round(pct(values, 50), 1), round(pct(values, 99), 1), round(max(values), 1)]


def latency(on, step_starts):
    # Due instant (the pump's, ms) to the first step pulse after motor_begin
    # (the emulator's, same chip clock), for the strokes idle and the strokes
    # due while a PROGRAM held the ticks.
    # ticks_us wraps every 2^30 us (18 min), ticks_ms every 2^30 ms: a
    # begin is placed in the 2^30 us period nearest its due instant.
    lat = on["latency"]
    edges = [s["chip_ms"] for s in step_starts]
    idle, busy = [], []
    for due, begun_us, during in zip(lat["due_ms"], lat["begun_us"], lat["during_program"]):
        begun_us += round((due * 1000 - begun_us) / (1 << 30)) * (1 << 30)
        after = [t for t in edges if t >= begun_us / 1000 - 0.001]
        if not after:
            raise picoemu.EmuError("no step pulse after a motor_begin at %d us" % begun_us)
        (busy if during else idle).append(after[0] - due)
    return idle, busy


def mpy_bytes(arch, modules):
    # What the .mpy files of the modules the pump imports weigh: the bytecode
    # a custom firmware could freeze into flash.
    from pumpctl import deploy as d

    with tempfile.TemporaryDirectory() as tmp:
        staged = d.stage("pico", arch, Path(tmp))
        return sum(f.local.stat().st_size for f in staged
                   if f.remote.endswith(".mpy") and Path(f.remote).stem in modules)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, len(values) * p // 100)]


def run(state):
    from pumpctl import deploy as d
    from pumpctl.fw import link_commands as lc
    from pumpctl.keystore import KeyStore
    from pumpctl.link import Client, open_port

    fig = {}
    pumpctl = str(Path(sys.executable).with_name("pumpctl"))
    emu = picoemu.PicoEmu(state, pace=False)
    wall0 = time.monotonic()
    try:
        emu.start()
        emu.wait_for(lambda s: s["usb"]["connected"], 60, "USB")
        t0 = time.monotonic()
        report = picoemu.deploy_bench(emu, log=lambda *a: None)
        fig["deploy_wall_s"] = round(time.monotonic() - t0, 1)
        st = emu.wait_for(lambda s: s["boots"] >= 2 and s["wdt"]["enabled"], 120, "the pump")
        fig["boot_to_pump_ms"] = round(st["wdt"]["started_chip_ms"])  # boot window and imports, emulated
        t = st["chip_ms"]
        emu.wait_for(lambda s: s["chip_ms"] > t + 200, 60, "the link")
        for args in (["provision"], ["program", "--drug", "morphine", "--conc", "10mg/mL", "--step", "00:00=3mg/day",
                                     "--step", "08:00=5mg/day", "--yes"],
                     ["refill", "--withdrawn", "0mL", "--added", "20mL", "--yes"]):
            subprocess.run([pumpctl, *args, "--port", emu.port], check=True, capture_output=True, timeout=120)
        client = Client(open_port(emu.port), timeout=10)
        ident = client.identify()
        client.login("clinician", KeyStore().get(ident["serial"], "clinician"))
        rtt, wall = [], []
        for _ in range(STATUS_ROUNDS):
            w = time.monotonic()
            client.request(lc.STATUS)
            wall.append(time.monotonic() - w)
            u = emu.state()["usb"]
            rtt.append(u["last_tx_ms"] - u["first_rx_ms"])
        fig["status_rtt_ms"] = [round(pct(rtt, 50), 1), round(pct(rtt, 99), 1), round(max(rtt), 1)]
        fig["status_rtt_wall_ms"] = round(pct(wall, 50) * 1000)
        rx = client.request(lc.THERAPY)["rx"]
        for name, mtype, payload in (("program_check", lc.PROGRAM, {"rx": rx, "check": True}),
                                     ("bolus_check", lc.BOLUS, {"dose_ng": 150000, "duration_s": 120, "check": True}),
                                     ("program", lc.PROGRAM, {"rx": rx})):
            client.request(lc.STATUS)
            client.request(mtype, payload)
            u = emu.state()["usb"]
            fig[name + "_ms"] = round(u["last_tx_ms"] - u["first_rx_ms"])
        client.logout()
        client.port.close()
        subprocess.run([pumpctl, "program", *ONE_ML_DAY, "--yes", "--port", emu.port], check=True,
                       capture_output=True, timeout=120)
        s0 = emu.state()
        w0 = time.monotonic()
        emu.wait_for(lambda s: s["t_ms"] > s0["t_ms"] + IDLE_S * 1000, 600, "%d s of the pump running" % IDLE_S)
        s1 = emu.state()
        busy = s1["cpu"]["busy_ms"] - s0["cpu"]["busy_ms"]
        idle = s1["cpu"]["idle_ms"] - s0["cpu"]["idle_ms"]
        fig["duty_cycle_pct"] = round(100 * busy / (busy + idle), 2)
        fig["duty_window_strokes"] = s1["motor"]["revolutions"] - s0["motor"]["revolutions"]
        fig.update(energy(fig["duty_cycle_pct"], STROKES_PER_DAY))
        fig["emulated_per_wall"] = round((s1["t_ms"] - s0["t_ms"]) / 1000 / (time.monotonic() - w0), 2)
        subprocess.run([pumpctl, "maintenance", "--yes", "--port", emu.port], check=True, capture_output=True,
                       timeout=120)
        boots = s1["boots"]
        emu.wait_for(lambda s: s["boots"] > boots and s["usb"]["connected"] and s["chip_ms"] > 2000, 120, "the REPL")
        out = d.mpremote(emu.port, "run", str(HERE / "onboard_heap.py"), timeout=600).stdout
        line = [x for x in out.splitlines() if x.startswith("RP2HEAP ")]
        if not line:
            raise picoemu.EmuError("onboard_heap.py printed no figures:\n" + out[-2000:])
        heap = json.loads(line[0].split(" ", 1)[1])
        fig["heap_bytes"] = heap["heap_bytes"]
        fig["free_heap_after_imports"] = heap["free_after_imports"]
        fig["free_heap_pump_running"] = heap["free_pump_built"]
        blocks = re.search(r"max free sz: (\d+)", out)
        fig["largest_free_block_bytes"] = int(blocks.group(1)) * 16 if blocks else None
        fig["imports_heap_bytes"] = heap["imports_heap_bytes"]
        fig["aead_impl"] = heap["aead"]["impl"]  # the link's cipher back end on the Pico (viper expected)
        fig["aead_viper_error"] = heap["aead"]["viper_error"]
        fig["imported_modules"] = len(heap["modules"])
        fig["mpy_bytes_imported"] = mpy_bytes(report.arch, heap["modules"])
        d.mpremote(emu.port, "fs", "cp", str(HERE.parent / "link_stages.py"), ":link_stages.py", timeout=120)
        # A fresh heap for the bench, as at a boot: a soft reset in the raw REPL
        # (main.py does not run) and every module imported again. In the heap
        # onboard_heap.py leaves, its pump and modules unloaded, not all is
        # always freed (the collector scans the stack conservatively), and a
        # pump built there could find no 5.8 KB block for its dose guard.
        out = d.mpremote(emu.port, "soft-reset", "+", "run", str(HERE / "onboard_bench.py"), timeout=600).stdout
        line = [x for x in out.splitlines() if x.startswith("RP2BENCH ")]
        if not line:
            raise picoemu.EmuError("onboard_bench.py printed no figures:\n" + out[-2000:])
        on = json.loads(line[0].split(" ", 1)[1])
        idle_lat, busy_lat = latency(on, emu.state()["motor"]["step_starts"])
        fig["stroke_start_ms_idle"] = spread(idle_lat)
        fig["stroke_start_ms_during_program"] = spread(busy_lat)
        fig["stroke_start_samples"] = [len(idle_lat), len(busy_lat)]
        fig["program_onboard_ms"] = spread([u / 1000 for u in on["latency"]["program_us"]])
        fig["tick_us"] = on["tick_us"]
        fig["link_stages_us"] = on["link_stages_us"]  # a sealed STATUS on this chip, stage by stage (issue #18)
        fig["idle_loop_pass_us"] = on["loop_pass_us"]
        fig["ticks_allocating_of_100"] = on["ticks_allocating_of_100"]
        fig["flash_blocks_used"] = on["flash_blocks"]
    finally:
        emu.stop()
    fig["total_wall_s"] = round(time.monotonic() - wall0, 1)
    return fig


def main():
    why = picoemu.missing()
    if why:
        print(json.dumps({"skipped": why}))
        return 0
    with tempfile.TemporaryDirectory(prefix="rp2bench-") as tmp:
        os.environ.setdefault("PUMPCTL_KEYSTORE", str(Path(tmp) / "keys.json"))
        fig = run(Path(tmp) / "pico")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
