"""Interlocks provoked through the emulator's bench port, the emulator running
as its own process (the firmware tests provoke each one in-process too)."""
import socket

from linkkit import wait_for
from pumpctl.emulator import Emulator

HOUR_MS = 3_600_000


def test_hung_loop_is_reset_by_the_watchdog_and_therapy_resumes(tmp_path):
    emu = Emulator(tmp_path, virtual=True, wdt_ms=1000).start()
    try:
        with emu.bench() as bench:
            before = bench.call("advance", ms=HOUR_MS)
        # Hang the loop: the reply never comes.
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(emu.bench_path))
        raw.sendall(b'{"cmd": "hang"}\n')
        assert wait_for(lambda: emu.watchdog_resets == 1), "watchdog did not reset the board"
        raw.close()
        assert wait_for(lambda: emu.bench_path.exists())
        with emu.bench() as bench:
            after = bench.call("status")
            assert after["reset_cause"] == 1  # watchdog
            assert after["state"] == "delivering"
            assert after["remaining_nl"] <= before["remaining_nl"]  # never credited back
            later = bench.call("advance", ms=HOUR_MS)
            assert later["strokes"] >= 80  # ~83 an hour at 1 mL/day, counted on the new boot
    finally:
        emu.stop()


def test_motor_stall_through_the_bench_stops_therapy_with_alarm(tmp_path):
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        bench.call("motor", stall=True)
        status = bench.call("advance", ms=HOUR_MS)
        assert "motor stall" in status["alarms"]
        assert status["state"] == "stopped" and status["failed"] == 3


def test_internal_fault_goes_to_safe_state_and_the_pump_still_answers(tmp_path):
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        bench.call("advance", ms=HOUR_MS)
        bench.call("fault")
        status = bench.call("advance", ms=HOUR_MS)
        assert "internal fault" in status["alarms"] and status["state"] == "stopped"


def test_runaway_scheduler_is_stopped_by_the_dose_guard(tmp_path):
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        bench.call("advance", ms=HOUR_MS)
        bench.call("runaway", strokes=5000)
        status = bench.call("advance", ms=HOUR_MS)
        assert "dose limit guard" in status["alarms"] and status["state"] == "stopped"
        assert status["strokes"] < 83 + 90  # stopped within the hour's allowance


def test_bit_flip_in_prescription_is_caught_by_the_integrity_check(tmp_path):
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        bench.call("corrupt", bit=14)
        status = bench.call("advance", ms=400_000)
        assert "integrity error" in status["alarms"] and status["state"] == "stopped"


def test_battery_end_of_service_through_the_bench_stops_therapy(tmp_path):
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        bench.call("battery", mv=2880)
        status = bench.call("advance", ms=400_000)
        assert "battery replacement (ERI)" in status["alarms"] and status["state"] == "delivering"
        bench.call("battery", mv=2600)
        status = bench.call("advance", ms=400_000)
        assert "battery end of service" in status["alarms"] and status["state"] == "stopped"


def test_reset_causes_are_told_apart_and_logged(tmp_path):
    emu = Emulator(tmp_path, virtual=True, wdt_ms=1000).start()
    try:
        with emu.bench() as bench:
            assert bench.call("status")["reset_cause"] == 0  # power-on
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(emu.bench_path))
        raw.sendall(b'{"cmd": "soft_reset"}\n')
        assert wait_for(lambda: emu.resets == [2] and emu.bench_path.exists())
        raw.close()
        with emu.bench() as bench:
            assert bench.call("status")["reset_cause"] == 2  # soft reset
    finally:
        emu.kill()  # the power goes: nothing saved
    with Emulator(tmp_path, virtual=True) as emu, emu.bench() as bench:
        assert bench.call("status")["reset_cause"] == 3  # power loss: state not closed cleanly
