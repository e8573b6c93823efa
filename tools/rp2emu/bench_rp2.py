"""The pump measured on the emulated RP2040 (stock MicroPython rp2 firmware,
rp2040js at 125 MHz), for `make bench` (tools/bench.py runs this and adds the
figures to build/bench.json). Times are emulated: what a real Pico takes.

Deploys today's firmware onto a blank emulated Pico, provisions it, programs
a flex therapy and fills it, then measures
  - the sealed STATUS round trip over USB CDC (first byte in to last byte out);
  - the core's duty cycle with the pump running and no link traffic;
  - the wall time of deploy and of the emulation;
and, at the REPL after `pumpctl maintenance` (onboard_bench.py): free heap
after the imports and with the pump built, flash used, Pump.tick and one
idle main-loop pass (median, p99, worst), ticks that allocate under
heap_lock. Prints its figures as one JSON line last."""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import picoemu  # noqa: E402

STATUS_ROUNDS = 30
IDLE_S = 10  # emulated seconds of the pump running with no link traffic


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
        picoemu.deploy_bench(emu, log=lambda *a: None)
        fig["deploy_wall_s"] = round(time.monotonic() - t0, 1)
        st = emu.wait_for(lambda s: s["boots"] >= 2 and s["wdt"]["enabled"], 120, "the pump")
        fig["boot_to_pump_ms"] = round(st["chip_ms"])  # boot window and imports, emulated
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
        for name, payload in (("program_check", {"rx": client.request(lc.THERAPY)["rx"], "check": True}),
                              ("bolus_check", {"dose_ng": 150000, "duration_s": 120, "check": True})):
            client.request(lc.STATUS)
            client.request(lc.PROGRAM if name == "program_check" else lc.BOLUS, payload)
            u = emu.state()["usb"]
            fig[name + "_ms"] = round(u["last_tx_ms"] - u["first_rx_ms"])
        client.logout()
        client.port.close()
        s0 = emu.state()
        w0 = time.monotonic()
        emu.wait_for(lambda s: s["t_ms"] > s0["t_ms"] + IDLE_S * 1000, 300, "%d s of the pump running" % IDLE_S)
        s1 = emu.state()
        busy = s1["cpu"]["busy_ms"] - s0["cpu"]["busy_ms"]
        idle = s1["cpu"]["idle_ms"] - s0["cpu"]["idle_ms"]
        fig["duty_cycle_pct"] = round(100 * busy / (busy + idle), 1)
        fig["emulated_per_wall"] = round((s1["t_ms"] - s0["t_ms"]) / 1000 / (time.monotonic() - w0), 2)
        subprocess.run([pumpctl, "maintenance", "--yes", "--port", emu.port], check=True, capture_output=True,
                       timeout=120)
        boots = s1["boots"]
        emu.wait_for(lambda s: s["boots"] > boots and s["usb"]["connected"] and s["chip_ms"] > 2000, 120, "the REPL")
        out = d.mpremote(emu.port, "run", str(HERE / "onboard_bench.py"), timeout=600).stdout
        line = [x for x in out.splitlines() if x.startswith("RP2BENCH ")]
        if not line:
            raise picoemu.EmuError("onboard_bench.py printed no figures:\n" + out[-2000:])
        on = json.loads(line[0].split(" ", 1)[1])
        fig["heap_bytes"] = on["heap_bytes"]
        fig["free_heap_after_imports"] = on["free_after_imports"]
        fig["free_heap_pump_running"] = on["free_pump_built"]
        fig["tick_us"] = on["tick_us"]
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
