"""The pump on the stock MicroPython v1.28 rp2 firmware, on an emulated
RP2040 with the bench prototype of docs/wiring.md on its pins (tools/rp2emu,
docs/rp2emu.md): deployed with `pumpctl deploy` onto a blank Pico, programmed
with pumpctl over USB CDC, each stroke confirmed by the index sensor the
emulator drives back.

One emulated Pico, one test: booting and deploying is the expensive part,
and the steps build on each other. The fixture deploys, provisions,
programs a flex therapy and fills the reservoir; each step, a subtest in
the report, leaves the pump delivering for the next, except the last, which
ends at the REPL. (One test item also keeps pytest-xdist from spreading the
steps over workers: with pytest 9, xdist_group markers are not honoured.)"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import picoemu
from pumpctl import deploy as d
from pumpctl.fw import link_commands as lc
from pumpctl.keystore import KeyStore
from pumpctl.link import Client, LinkError, open_port

WHY = picoemu.missing()
PUMPCTL = str(Path(sys.executable).with_name("pumpctl"))
STROKE_NL = 500
FILL_NL = 20000000
AHEAD = 32  # a saved state counts this many strokes ahead (docs/persistence.md)
MOTOR_STALL = 1  # firmware/alarms.py
STALL_TONES = (988, 494)  # alarms.TONE_A / TONE_B of the motor stall
WDT_MS = 8000  # hal.Board.WDT_MS
BOOT = 1  # firmware/events.py
RESET_WATCHDOG = 1  # firmware/hal.py
WAIT = 120  # s of wall time for anything: generous on a loaded 2-core machine
FLEX = ("--drug", "morphine", "--conc", "10mg/mL", "--step", "00:00=3mg/day", "--step", "08:00=5mg/day")


class Pico:
    """The emulated Pico and what the tests have seen of it."""

    def __init__(self, emu):
        self.emu = emu
        self.pulses_before = 0  # index pulses counted by emulator runs ended by power cuts
        self.unclean = 0  # resets that did not close the state cleanly
        self.deploy_report = None
        self.provisioned = None
        self.times = {}

    @property
    def port(self):
        return self.emu.port

    def pumpctl(self, *args, timeout=90):
        t0 = time.monotonic()
        proc = subprocess.run([PUMPCTL, *args, "--port", self.port, "--json"], capture_output=True, text=True,
                              timeout=timeout)
        self.times.setdefault(args[0], []).append(round(time.monotonic() - t0, 1))
        assert proc.returncode == 0, "pumpctl %s: exit %d\n%s%s" % (" ".join(args), proc.returncode,
                                                                     proc.stdout, proc.stderr)
        return json.loads(proc.stdout)

    def status(self):
        return self.pumpctl("status")["status"]

    def pulses(self, st=None):
        """Index pulses (confirmed strokes) since the first power-up."""
        st = st or self.emu.state()
        return self.pulses_before + st["motor"]["index_pulses"]

    def consumed(self, status):
        """Strokes the pump has taken off its reservoir since the fill."""
        return (FILL_NL - status["remaining_nl"]) // STROKE_NL

    def status_between_strokes(self):
        """The pump's status with no stroke confirmed while it was asked, and
        the confirmed strokes at that moment: paced (an idle core lets
        unpaced time run far ahead of the wall clock, strokes and all, during
        one pumpctl run), and taken again when an index pulse fell between
        the bench readings around it."""
        self.emu.bench("pace", on=True)
        try:
            for _ in range(10):
                before = self.wait(lambda s: not s["motor"]["enabled"], "a pause between strokes")
                st = self.status()
                if self.pulses(self.emu.state()) == self.pulses(before):
                    return st, self.pulses(before)
        finally:
            self.emu.bench("pace", on=False)
        raise AssertionError("a stroke was confirmed during every status request")

    def ledger_ok(self, status):
        # Never counted short of what was delivered (that could over-deliver);
        # counted ahead by at most the saved lead per unclean reset.
        confirmed = self.pulses()
        return confirmed <= self.consumed(status) <= confirmed + AHEAD * self.unclean, (
            confirmed, self.consumed(status), self.unclean)

    def wait(self, predicate, what, timeout=WAIT):
        return self.emu.wait_for(predicate, timeout, what)

    def wait_running(self, boots):
        """Until boot number `boots` runs the pump: its watchdog is on (the
        REPL never starts one), and the link has the port."""
        st = self.wait(lambda s: s["boots"] >= boots and s["wdt"]["enabled"], "the pump to start (boot %d)" % boots)
        t = st["chip_ms"]
        self.wait(lambda s: s["chip_ms"] > t + 200, "the link to open")

    def bolus_running(self):
        st = self.status()
        if not st["bolus"]:
            # 0.3 mg at 10 mg/mL: 60 strokes over 2 minutes, the first at once.
            assert self.pumpctl("bolus", "--dose", "0.3mg", "--over", "2min", "--yes")["strokes"] == 60
        return st

    def power_cut_when_idle(self):
        """Kills the emulator between two strokes (the cam at its index)."""
        self.wait(lambda s: not s["motor"]["enabled"], "a pause between strokes")
        st = self.emu.state()
        self.emu.power_cut()
        self.pulses_before += st["motor"]["index_pulses"]
        self.unclean += 1


@pytest.fixture(scope="module")
def pico(tmp_path_factory):
    if WHY:
        pytest.fail("CI=true and the emulated Pico cannot run: %s" % WHY)
    # Not paced: idle time (the boot window, waits between strokes) passes at
    # once, so the tests take less wall time; pumpctl's timeouts are the host's.
    emu = picoemu.PicoEmu(tmp_path_factory.mktemp("pico"), pace=False)
    p = Pico(emu)
    try:
        emu.start()
        p.wait(lambda s: s["usb"]["connected"], "USB enumeration")
        t0 = time.monotonic()
        p.deploy_report = picoemu.deploy_bench(emu, log=lambda *a: None)
        p.times["deploy"] = round(time.monotonic() - t0, 1)
        p.wait_running(2)
        p.provisioned = p.pumpctl("provision")
        p.pumpctl("program", *FLEX, "--yes")
        p.pumpctl("refill", "--withdrawn", "0mL", "--added", "20mL", "--yes")
        yield p
    finally:
        emu.stop()
        print("\nemulated Pico: pumpctl wall times (s) %s; emulator log %s" % (p.times, emu.log_path))


def step_deploy_onto_a_blank_pico_then_the_pump_boots_from_main(pico):
    report = pico.deploy_report
    assert report.arch == "armv6m" and report.board_mpy >> 10 == 4  # the RP2040's own architecture
    assert len(report.files) == len(d.sources("pico")) + 1  # every module and the cipher's native code, verified by sha256
    st = pico.emu.state()
    assert st["boots"] == 2 and "machine.reset" in st["resets"][0]["cause"]  # deploy's reset
    assert st["wdt"]["enabled"]  # main.py started the pump (the REPL never starts a watchdog)
    ident = pico.pumpctl("identify")
    assert ident["model"] == "Pico bench prototype"  # the bench config.py at the root took effect
    # The serial is machine.unique_id(): the emulated flash chip's unique id.
    assert ident["serial"] == pico.emu.unique_id == pico.provisioned["serial"] and ident["provisioned"]


def step_flex_therapy_and_bolus_over_usb_each_stroke_confirmed_by_the_index_sensor(pico):
    therapy = pico.pumpctl("interrogate")["therapy"]
    assert [s[1] if isinstance(s, list) else s["dose_ng_day"] for s in therapy["rx"]["steps"]] == [3000000, 5000000]
    st = pico.status()
    assert st["state"] == "delivering" and st["drug"] == "morphine"
    assert st["battery_mv"] in range(3550, 3651)  # 3.6 V on the divider at GP27, through the real ADC
    assert pico.ledger_ok(st)
    before = pico.pulses()
    bolus = pico.pumpctl("bolus", "--dose", "0.15mg", "--over", "1min", "--yes")
    assert bolus["strokes"] == 30  # 0.15 mg at 10 mg/mL, the first stroke at once
    bench = pico.wait(lambda s: pico.pulses(s) >= before + 4 and not s["motor"]["enabled"], "4 bolus strokes")
    st, confirmed = pico.status_between_strokes()  # unpaced, strokes go on after it: compare with then
    m = bench["motor"]
    assert pico.consumed(st) == confirmed  # every confirmed stroke counted, nothing else
    assert m["steps"] == 200 * m["revolutions"] and m["position"] == 0  # steps stop at the index: no overrun
    assert m["ignored_steps"] == 0 and m["dir"] == 1  # the driver is on only while it steps, forward
    assert st["bolus"]["kind"] == "clinician" and st["bolus"]["strokes_left"] <= 30 - 4
    assert not pico.pumpctl("alarms")["alarms"]


def step_power_cut_loses_nothing_acknowledged(pico):
    # A new flex profile, acknowledged, and the power goes.
    pico.pumpctl("program", "--drug", "morphine", "--conc", "10mg/mL", "--step", "00:00=4mg/day",
                 "--step", "12:00=6mg/day", "--yes")
    pico.power_cut_when_idle()
    pico.emu.power_on()
    pico.wait_running(1)
    therapy = pico.pumpctl("interrogate")["therapy"]
    rates = [s[1] if isinstance(s, list) else s["dose_ng_day"] for s in therapy["rx"]["steps"]]
    assert rates == [4000000, 6000000], therapy["rx"]
    assert pico.ledger_ok(pico.status())
    # A bolus, acknowledged, and the power goes again: it carries on after.
    pico.bolus_running()
    pico.power_cut_when_idle()
    pico.emu.power_on()
    pico.wait_running(1)
    st = pico.status()
    assert st["bolus"] and st["bolus"]["kind"] == "clinician", st["bolus"]
    assert pico.ledger_ok(st)
    pico.wait(lambda s: s["motor"]["index_pulses"] >= 1, "a bolus stroke after the power cut")


def step_watchdog_resets_a_loop_hung_in_a_flash_write_and_therapy_resumes_from_flash(pico):
    pico.bolus_running()
    st = pico.emu.state()
    boots = st["boots"]
    # A programmer sends a new therapy; the flash write that must precede the
    # reply never completes: the core spins with interrupts off, no tick feeds
    # the watchdog.
    client = Client(open_port(pico.port), timeout=2.0, retries=0)
    try:
        ident = client.identify()
        client.login("clinician", KeyStore().get(ident["serial"], "clinician"))
        old = client.request(lc.THERAPY)["rx"]
        new = dict(old, steps=[[0, 2000000], [43200, 7000000]])
        pico.emu.bench("fault", flash_hang=True)
        with pytest.raises(LinkError):
            client.request(lc.PROGRAM, {"rx": new})  # never acknowledged
    finally:
        client.port.close()
    st = pico.wait(lambda s: s["boots"] > boots, "the watchdog reset")
    pico.unclean += 1
    reset, hung = st["resets"][-1], st["faults"]["hung_at_ms"]
    assert reset["cause"] == "watchdog" and reset["last_feed_ms"] < hung, (reset, hung)
    assert abs(reset["t_ms"] - reset["last_feed_ms"] - WDT_MS) < 5, reset  # WDT_MS after the last feed
    pico.wait_running(boots + 1)
    st = pico.status()
    assert st["state"] == "delivering" and st["drug"] == "morphine", st
    assert pico.ledger_ok(st)
    rx = pico.pumpctl("interrogate")["therapy"]["rx"]
    steps = [[s["start_s"], s["dose_ng_day"]] for s in rx["steps"]]  # pumpctl's labelled form
    assert steps in ([list(s) for s in old["steps"]], new["steps"]), rx  # all or nothing
    records = pico.pumpctl("log")["records"]
    assert [r["a"] for r in records if r["type"] == BOOT][-1] == RESET_WATCHDOG
    before = pico.pulses()
    pico.wait(lambda s: pico.pulses(s) > before, "a stroke after the watchdog reset")


def step_stall_sounds_the_motor_stall_alarm_then_maintenance_opens_the_repl(pico):
    pico.bolus_running()  # strokes to come (before the fault: three failed strokes stop therapy)
    pico.emu.bench("fault", stall=True)  # the motor turns no more: no index pulse
    pico.emu.bench("clear")
    before = pico.emu.state()["motor"]

    def both_tones(s):
        seen = {t for t in STALL_TONES for x in s["buzzer"]["tones"] if abs(x["hz"] - t) < t * 0.01 and x["edges"] > 20}
        return seen == set(STALL_TONES)

    bench = pico.wait(both_tones, "the motor-stall tones on the buzzer")
    m = bench["motor"]
    assert m["index_pulses"] == before["index_pulses"] and m["stalled_steps"] >= 3 * 200  # three strokes tried
    st = pico.status()
    assert "motor-stall" in st["alarms"] and st["state"] != "delivering", st
    assert [a for a in pico.pumpctl("alarms")["alarms"] if a.get("id") == MOTOR_STALL]
    # The clinician's maintenance command: the pump stops, saves and reboots once into the REPL.
    boots = bench["boots"]
    pico.pumpctl("maintenance", "--yes")
    pico.wait(lambda s: s["boots"] > boots and s["usb"]["connected"] and s["chip_ms"] > 2000, "the maintenance boot")
    out = d.mpremote(pico.port, "exec", "import os; print('REPL', sorted(os.listdir('/')))", timeout=60).stdout
    assert "REPL" in out and "'lib'" in out and "'main.py'" in out and "'pump-data'" in out, out
    assert not pico.emu.state()["wdt"]["enabled"]
    # The link's cipher is the compiled (viper) one, not the pure-Python
    # fallback a fragmented heap would leave (main.py imports aead first).
    out = d.mpremote(pico.port, "exec", "import aead; print('AEAD', aead.IMPL, aead.VIPER_ERROR)", timeout=60).stdout
    assert "AEAD viper None" in out, out
    # The harness itself: BOOTSEL reads as pressed, UART0 transmits (its TX
    # interrupt clears), and with pacing a sleep at the REPL takes its time on
    # the wall clock too.
    out = d.mpremote(pico.port, "exec", "import rp2\nprint('BOOTSEL', rp2.bootsel_button())").stdout
    assert "BOOTSEL 0" in out, out
    pico.emu.bench("button", bootsel=True)
    pico.emu.bench("pace", on=True)
    t0 = time.monotonic()
    out = d.mpremote(pico.port, "exec", "import machine, rp2, time\nprint('BOOTSEL', rp2.bootsel_button())\n"
                     "machine.UART(0, 115200).write(b'uart ok')\ntime.sleep_ms(1000)").stdout
    assert time.monotonic() - t0 >= 1.0
    assert "BOOTSEL 1" in out, out
    assert pico.emu.state()["uart"][0].endswith("uart ok")


STEPS = (step_deploy_onto_a_blank_pico_then_the_pump_boots_from_main,
         step_flex_therapy_and_bolus_over_usb_each_stroke_confirmed_by_the_index_sensor,
         step_power_cut_loses_nothing_acknowledged,
         step_watchdog_resets_a_loop_hung_in_a_flash_write_and_therapy_resumes_from_flash,
         step_stall_sounds_the_motor_stall_alarm_then_maintenance_opens_the_repl)


def test_the_pump_on_the_stock_rp2_firmware(pico, subtests):
    failed = None
    for step in STEPS:
        name = step.__name__[len("step_"):]
        with subtests.test(name):
            if failed:
                pytest.skip("after the failed step %s" % failed)
            try:
                step(pico)
            except BaseException:
                failed = name
                raise
