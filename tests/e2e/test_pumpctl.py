"""pumpctl end to end: every command and role through the real pty of a
virtual-time emulated pump, pumpctl run in-process (and as a process where the
process matters)."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
import serial

from linkkit import DAY_MS, of_type
from pumpctl import cli, link, paths
from pumpctl.fw import alarms, events, link_commands as lc, wire

FLEX = ["--drug", "morphine", "--conc", "10mg/mL", "--step", "00:00=3mg/day", "--step", "08:00=5mg/day",
        "--periodic", "12:00=0.5mg/10min", "--demand", "0.2mg/5min,lockout=30min,max=4"]


def test_serial_port_answers_identify_with_pyserial(tmp_path):
    # Any serial program reaches the link: an IDENTIFY frame gets the identity.
    from pumpctl.emulator import Emulator
    with Emulator(tmp_path / "p", virtual=True) as emu, serial.Serial(emu.port, 115200, timeout=2) as port:
        port.write(wire.Session().seal(lc.IDENTIFY, 1, None))
        frame = port.read_until(b"\x00")
    t, _, mid, _, p = wire.peek(frame)
    assert t == lc.IDENTIFY | wire.REPLY and mid == 1 and p["serial"].startswith("EMU-") and not p["provisioned"]


def test_identify_and_provision(tmp_path, capsys):
    from pumpctl.emulator import Emulator
    ks = str(tmp_path / "k.json")
    with Emulator(tmp_path / "p", virtual=True) as emu:
        rc = cli.main(["identify", "--port", emu.port, "--keystore", ks])
        out = capsys.readouterr().out
        assert rc == 0 and "run `pumpctl provision`" in out
        assert cli.main(["status", "--port", emu.port, "--keystore", ks]) == 4
        assert "no keys for pump" in capsys.readouterr().err
        assert cli.main(["provision", "--port", emu.port, "--keystore", ks]) == 0
        assert "provisioned: new keys stored" in capsys.readouterr().out
        assert os.stat(ks).st_mode & 0o777 == 0o600
        assert cli.main(["provision", "--port", emu.port, "--keystore", ks]) == 0  # idempotent
        assert "keys in" in capsys.readouterr().out
        other = str(tmp_path / "other.json")
        assert cli.main(["provision", "--port", emu.port, "--keystore", other]) == 2
        assert "already provisioned" in capsys.readouterr().err
        assert cli.main(["identify", "--json", "--port", emu.port, "--keystore", ks]) == 0
        ident = json.loads(capsys.readouterr().out)
        assert ident["provisioned"] and ident["keys_in_store"] and ident["version"] == 2


def test_interrogate_and_status_by_role(pump, capsys):
    rc, out, _ = pump.pumpctl(capsys, "interrogate")
    assert rc == 0
    for word in ("morphine 10 mg/mL", "reservoir", "projected empty", "battery", "24-h maximum", "no active alarms"):
        assert word in out, word
    rc, out, _ = pump.pumpctl(capsys, "interrogate", "--json")
    data = json.loads(out)
    assert data["therapy"]["rx"]["steps"] == [{"start_s": 0, "dose_ng_day": 10_000_000}]
    assert data["status"]["state"] == "delivering"
    rc, out, _ = pump.pumpctl(capsys, "status", "--role", "patient")
    assert rc == 0 and "delivering" in out
    rc, _, err = pump.pumpctl(capsys, "interrogate", "--role", "patient")
    assert rc == 2 and "FORBIDDEN" in err


def test_program_flex_review_then_confirm(pump, capsys, monkeypatch):
    rc, out, err = pump.pumpctl(capsys, "program", *FLEX)  # no terminal, no --yes: cancelled
    assert rc == 5 and "nothing changed" in err
    assert "current" in out and "new" in out and "3 mg/day (0.300 mL/day)" in out and "projected empty" in out
    assert pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    rc, out, err = pump.pumpctl(capsys, "program", *FLEX)
    assert rc == 5 and pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]
    monkeypatch.setattr("builtins.input", lambda prompt="": "y")
    rc, out, err = pump.pumpctl(capsys, "program", *FLEX)
    assert rc == 0 and "programmed" in out, err
    rx = pump.therapy()["rx"]
    assert rx == {"drug": "morphine", "conc": 10_000_000, "steps": [[0, 3_000_000], [28_800, 5_000_000]],
                  "periodic": [[43_200, 500_000, 600]], "demand": [200_000, 300, 1800, 4]}
    assert of_type(pump.log(), lc.EV_COMMAND, b"program")[-1][4] == wire.ROLE_CLINICIAN


def test_program_from_file_and_json(pump, capsys, tmp_path):
    f = tmp_path / "rx.json"
    f.write_text(json.dumps({"drug": "morphine", "conc": "10mg/mL", "dose": "4mg/day"}))
    rc, out, _ = pump.pumpctl(capsys, "program", "--file", str(f), "--json", "--yes")
    assert rc == 0 and json.loads(out)["result"]["daily_ng"] == 4_000_000
    assert pump.therapy()["rx"]["steps"] == [[0, 4_000_000]]


def test_refused_and_malformed_programs_change_nothing(pump, capsys):
    before = pump.therapy()
    seq = pump.last_seq()
    rc, _, err = pump.pumpctl(capsys, "program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "30mg/day", "--yes")
    assert rc == 2 and "daily_max" in err and "20 mg/day" in err and "nothing was changed" in err
    rc, _, err = pump.pumpctl(capsys, "program", "--drug", "morphine", "--conc", "10mg/mL", "--dose", "0.1mg/day",
                              "--yes")
    # The range a clinician can use: the mechanism's, and no higher than the drug's 24-hour maximum.
    assert rc == 2 and "(rate)" in err and "at 10 mg/mL: 0.48 mg/day to 20 mg/day" in err and " nL" not in err
    rc, _, err = pump.pumpctl(capsys, "program", "--drug", "morphine", "--conc", "20mg/mL", "--dose", "4mg/day", "--yes")
    assert rc == 2 and "concentration_change" in err and "pumpctl refill" in err
    mark = pump.last_seq()
    for bad in (["--dose", "4mg"], ["--dose", "4"], ["--dose", "4mg/day", "--step", "00:00=1mg/day"],
                ["--step", "08:00=1mg/day"], ["--dose", "1mg/7h"], ["--demand", "0.2mg/h,lockout=1h,max=2"]):
        rc, _, err = pump.pumpctl(capsys, "program", "--drug", "morphine", "--conc", "10mg/mL", *bad, "--yes")
        assert rc == 1 and "nothing sent" in err, (bad, err)
    assert pump.last_seq() == mark + 2  # only our own log-in and log-out: nothing reached the pump
    rc, _, err = pump.pumpctl(capsys, "program", "--drug", "aspirin", "--conc", "10mg/mL", "--dose", "1mg/day")
    assert rc == 1 and "unknown drug" in err
    rc, _, err = pump.pumpctl(capsys, "program", "--bogus")
    assert rc == 1
    assert pump.therapy() == before
    log = pump.log(seq + 1)
    assert not of_type(log, lc.EV_COMMAND, b"program")  # dry runs only: nothing applied, nothing audited
    assert [r for r in log if r[3] == lc.EV_REJECTED and r[4] == wire.LIMIT and r[6] == lc.PROGRAM]


def test_after_a_drug_change_status_names_the_drug_and_since_when(pump, capsys):
    from test_json_schemas import schema_problems
    assert pump.pumpctl(capsys, "program", *FLEX, "--yes")[0] == 0
    pump.bench("advance", ms=3_600_000)
    rc, out, err = pump.pumpctl(capsys, "refill", "--withdrawn", "19mL", "--added", "20mL", "--accept-discrepancy",
                                "--drug", "hydromorphone", "--conc", "2mg/mL", "--dose", "1mg/day", "--yes")
    assert rc == 0, err
    pump.bench("advance", ms=3_600_000)
    rc, out, _ = pump.pumpctl(capsys, "status", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["status"]["drug_changed_s"] == 3600 and not schema_problems(doc, "status"), doc
    rc, out, _ = pump.pumpctl(capsys, "status")
    assert "of hydromorphone since the drug change at" in out, out


def morning(pump):
    # 06:00 of the pump's day (it starts at this computer's time): FLEX's noon
    # periodic bolus stays out of the way of a test's demand presses.
    pump.call(lc.SET_CLOCK, {"day": pump.call(lc.STATUS)["day"], "tod_s": 6 * 3600})


def test_boluses_demand_suspend_resume(pump, capsys):
    morning(pump)
    assert pump.pumpctl(capsys, "program", *FLEX, "--yes")[0] == 0
    rc, out, err = pump.pumpctl(capsys, "bolus", "--dose", "1mg", "--over", "30min", "--yes")
    assert rc == 0 and "bolus started: 1 mg, 200 strokes" in out, err
    rc, _, err = pump.pumpctl(capsys, "prime", "--volume", "0.1mL", "--over", "10min", "--yes")
    assert rc == 2 and "bolus_active" in err
    pump.bench("advance", ms=1_900_000)
    # Priming only fills a catheter that is not primed: a revised one (docs/safety.md).
    pump.call(lc.IMPLANT, {"step": "catheter", "segments": [[400, 100000]]})
    rc, out, err = pump.pumpctl(capsys, "prime", "--volume", "0.1mL", "--over", "10min", "--yes")
    assert rc == 0 and "priming started: 200 strokes" in out, err
    pump.bench("advance", ms=700_000)
    rc, out, err = pump.pumpctl(capsys, "demand")  # the patient's button
    assert rc == 0 and "demand bolus started: 0.2 mg (0.020 mL) over 5 min" in out, err
    rc, out, _ = pump.pumpctl(capsys, "status", "--role", "patient")
    assert "demand, 0.2 mg (0.020 mL) left" in out
    rc, _, err = pump.pumpctl(capsys, "demand")
    assert rc == 2 and "demand_bolus_active" in err and "press again when it has ended" in err
    pump.bench("advance", ms=400_000)
    rc, _, err = pump.pumpctl(capsys, "demand")
    assert rc == 2 and "lockout" in err and "allowed again in" in err and "wait the time shown above" in err
    rc, _, err = pump.pumpctl(capsys, "bolus", "--dose", "1mg", "--over", "30min", "--role", "patient", "--yes")
    assert rc == 2 and "FORBIDDEN" in err
    rc, out, _ = pump.pumpctl(capsys, "suspend", "--yes")
    assert rc == 0 and "suspended" in out
    assert not pump.bench("status")["running"]
    rc, out, _ = pump.pumpctl(capsys, "resume", "--yes")
    assert rc == 0 and "delivering" in out
    log = pump.log()
    assert [r[4] for r in of_type(log, events.BOLUS_STARTED)][:3] == [3, 4, 5]
    assert of_type(log, lc.EV_COMMAND, b"demand")[0][4] == wire.ROLE_PATIENT


def test_suspending_during_a_bolus_says_the_bolus_is_cancelled(pump, capsys):
    assert pump.pumpctl(capsys, "bolus", "--dose", "1mg", "--over", "30min", "--yes")[0] == 0
    rc, out, _ = pump.pumpctl(capsys, "suspend", "--yes")
    assert rc == 0 and "The bolus in progress (clinician, " in out and "is cancelled; resuming does not restart" in out
    assert of_type(pump.log(), events.BOLUS_CANCELLED)
    rc, out, _ = pump.pumpctl(capsys, "suspend", "--dry-run")  # nothing in progress: nothing said
    assert rc == 0 and "cancelled" not in out


def test_refill_discrepancy_must_be_acknowledged(pump, capsys):
    pump.bench("advance", ms=DAY_MS)
    remaining = pump.bench("status")["remaining_nl"]
    rc, out, err = pump.pumpctl(capsys, "refill", "--withdrawn", "10mL", "--added", "20mL", "--yes")
    assert rc == 5 and "WARNING" in err and "not acknowledged" in err
    assert pump.bench("status")["remaining_nl"] == remaining
    rc, out, err = pump.pumpctl(capsys, "refill", "--withdrawn", "10mL", "--added", "20mL", "--yes",
                                "--accept-discrepancy")
    assert rc == 0 and "acknowledged" in out, err
    assert pump.bench("status")["remaining_nl"] == 20_000_000
    assert pump.call(lc.ALARMS)["alarms"] == []  # acknowledged on the pump too
    acks = of_type(pump.log(), events.ALARM_ACKNOWLEDGED)
    assert acks and acks[-1][4] == alarms.REFILL_DISCREPANCY
    rc, _, err = pump.pumpctl(capsys, "refill", "--withdrawn", "10mL", "--added", "25mL", "--yes")
    assert rc == 2 and "overfill" in err


def test_refill_with_new_concentration_bridges(pump, capsys):
    pump.bench("advance", ms=DAY_MS)
    remaining = pump.bench("status")["remaining_nl"]
    rc, out, err = pump.pumpctl(capsys, "refill", "--withdrawn", "%gmL" % (remaining / 1e6), "--added", "18mL",
                                "--drug", "morphine", "--conc", "20mg/mL", "--dose", "4mg/day", "--yes")
    assert rc == 0, err
    assert "bridge bolus" in out and "20 mg/mL" in out
    th = pump.therapy()
    assert th["rx"]["conc"] == 20_000_000


def test_alarms_clock_thresholds(pump, capsys):
    st = pump.call(lc.STATUS)
    day = st["day"]
    rc, out, _ = pump.pumpctl(capsys, "clock")
    assert rc == 0 and "pump clock" in out
    rc, out, _ = pump.pumpctl(capsys, "clock", "--set", "2030-01-02T03:04:05", "--yes")
    assert rc == 0 and "2030-01-02 03:04:05" in out
    rc, _, err = pump.pumpctl(capsys, "clock", "--set", "yesterday", "--yes")
    assert rc == 1
    rc, out, _ = pump.pumpctl(capsys, "low-threshold", "3mL", "--yes")
    assert rc == 0 and pump.call(lc.STATUS)["low_nl"] == 3_000_000
    rc, _, err = pump.pumpctl(capsys, "low-threshold", "0.5mL", "--yes")
    assert rc == 2 and "(low_threshold)" in err and "20" in err and " mL" in err and " nL" not in err
    rc, _, err = pump.pumpctl(capsys, "alarm-date", "2030-01-02", "--yes")
    assert rc == 1 and "not after the pump's date (2030-01-02)" in err  # it would only sound at once
    rc, _, err = pump.pumpctl(capsys, "clock", "--set", "2150-01-01T00:00", "--yes")
    assert rc == 1 and "outside the dates the pump keeps" in err
    rc, out, _ = pump.pumpctl(capsys, "alarm-date", "2030-01-03", "--yes")
    assert rc == 0
    pump.bench("advance", ms=DAY_MS)
    rc, out, _ = pump.pumpctl(capsys, "alarms")
    assert rc == 0 and "alarm-date-reached" in out and "raised      2030-01-03 00:04:05" in out
    rc, out, _ = pump.pumpctl(capsys, "alarms", "--ack", "alarm-date-reached")
    assert rc == 0 and "acknowledged alarm-date-reached: yes" in out and "no active alarms" in out
    rc, _, err = pump.pumpctl(capsys, "alarms", "--ack", "fire")
    assert rc == 1
    rc, out, _ = pump.pumpctl(capsys, "alarm-date", "off", "--yes")
    assert rc == 0 and "off" in out
    names = [r[8] for r in of_type(pump.log(), lc.EV_COMMAND)]
    for n in (b"clock", b"low", b"alarm_date", b"ack"):
        assert n in names


def test_diary_and_log_download(pump, capsys, tmp_path):
    rc, out, _ = pump.pumpctl(capsys, "diary", "--pain", "6", "--activity", "walking", "--note", "after lunch")
    assert rc == 0 and "diary entry" in out
    rc, _, err = pump.pumpctl(capsys, "diary", "--pain", "11", "--activity", "walking")
    assert rc == 1
    rc, _, err = pump.pumpctl(capsys, "diary", "--pain", "3", "--activity", "rest", "--role", "clinician")
    assert rc == 2 and "FORBIDDEN" in err
    rc, out, _ = pump.pumpctl(capsys, "log")
    assert rc == 0 and "diary entry" in out and "after lunch" in out and "authenticated" in out
    rc, out, _ = pump.pumpctl(capsys, "log", "--json", "--from", "2", "--to", "4")
    assert [r["seq"] for r in json.loads(out)["records"]] == [2, 3, 4]
    csv_path = tmp_path / "log.csv"
    rc, _, err = pump.pumpctl(capsys, "log", "--csv", str(csv_path))
    lines = csv_path.read_text().splitlines()
    assert rc == 0 and lines[0] == "seq,time,event,details,a,b,c,d,text" and len(lines) > 5
    diary = [r for r in pump.log() if r[3] == events.DIARY]
    assert diary[0][4:6] == (6, lc.ACTIVITIES.index("walking"))


def test_port_errors(pump, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(link, "BUSY_WAIT_S", 0.3)
    rc, _, err = pump.pumpctl(capsys, "identify")
    assert rc == 0
    capsys.readouterr()
    assert cli.main(["identify", "--port", "/dev/nonexistent-pump"]) == 3
    assert "no such port" in capsys.readouterr().err
    assert cli.main(["identify", "--port", "auto", "--state", str(tmp_path / "none")]) == 3
    assert "no pump found" in capsys.readouterr().err
    with serial.Serial(pump.port, exclusive=True):
        rc, _, err = pump.pumpctl(capsys, "identify")
    assert rc == 3 and "busy" in err
    # A port where nothing answers: the link fails after its retries.
    master, slave = os.openpty()
    try:
        assert cli.main(["identify", "--port", os.ttyname(slave), "--timeout", "0.2"]) == 3
        assert "no reply" in capsys.readouterr().err
    finally:
        os.close(master)
        os.close(slave)


def test_socket_url(pump, capsys):
    # pyserial URL: a TCP bridge to the pty stands in for a remote serial server.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def bridge():
        conn, _ = srv.accept()
        with serial.Serial(pump.port, timeout=0.01) as s:
            conn.settimeout(0.01)
            while True:
                try:
                    data = conn.recv(4096)
                    if not data:
                        return
                    s.write(data)
                except socket.timeout:
                    pass
                out = s.read(4096)
                if out:
                    conn.sendall(out)

    t = threading.Thread(target=bridge, daemon=True)
    t.start()
    capsys.readouterr()
    rc = cli.main(["status", "--port", "socket://127.0.0.1:%d" % port, "--keystore", str(pump.keystore)])
    out = capsys.readouterr().out
    srv.close()
    assert rc == 0 and "delivering" in out


def test_pumpctl_emulate_provisions_and_auto_finds_it(tmp_path):
    env = dict(os.environ, PUMPCTL_KEYSTORE=str(tmp_path / "keys.json"))
    proc = subprocess.Popen([sys.executable, "-m", "pumpctl", "emulate", "--state", str(tmp_path / "run"),
                             "--virtual", "--no-status"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = [proc.stdout.readline() for _ in range(7)]
        assert any("provisioned: new keys stored" in l for l in lines), lines
        out = subprocess.run([sys.executable, "-m", "pumpctl", "status", "--port", "auto", "--state",
                              str(tmp_path / "run")], capture_output=True, text=True, env=env)
        assert out.returncode == 0 and "delivering" in out.stdout, out.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "run" / "port.json").exists()


def test_port_emulator_starts_its_own(tmp_path, capsys):
    ks = str(tmp_path / "k.json")
    rc = cli.main(["status", "--port", "emulator", "--state", str(tmp_path / "e"), "--keystore", ks])
    out, err = capsys.readouterr()
    assert rc == 0 and "delivering" in out and "provisioned" in err


def test_maintenance_is_refused_by_the_emulator_and_therapy_continues(pump, capsys):
    rc, out, err = pump.pumpctl(capsys, "maintenance", "--yes")
    assert rc == 2 and "no REPL" in out + err
    assert pump.call(lc.STATUS)["state"] == "delivering"


# -- issue 13, finding 14: --dry-run, devices, advance ---------------------------------------------
@pytest.mark.parametrize("argv,command", [
    (["suspend"], "suspend"),
    (["resume"], "resume"),
    (["clock", "--set", "2030-01-02T03:04:05"], "clock"),
    (["low-threshold", "3mL"], "low"),
    (["alarm-date", "2140-01-03"], "alarm_date"),
    (["program", *FLEX], "program"),
    (["bolus", "--dose", "1mg", "--over", "30min"], "bolus"),
    (["refill", "--withdrawn", "1mL", "--added", "20mL"], "refill"),  # a discrepancy: reviewed, not asked
    (["catheter", "--segments", "500mm:120uL"], "implant"),
])
def test_dry_run_reviews_says_what_would_be_sent_and_sends_nothing(pump, capsys, argv, command):
    seq = pump.last_seq()
    rc, out, err = pump.pumpctl(capsys, *argv, "--dry-run")
    assert rc == 0 and "dry run: nothing was sent to the pump; confirming would send %s" % command in out, err
    rc, out, err = pump.pumpctl(capsys, *argv, "--dry-run", "--json")
    data = json.loads(out)
    assert rc == 0 and data["dry_run"] and data["command"] == command and "would_send" in data, err
    log = pump.log(seq + 1)
    assert not of_type(log, lc.EV_COMMAND)  # nothing audited: nothing was sent but dry runs
    assert pump.call(lc.STATUS)["state"] == "delivering" and pump.therapy()["rx"]["steps"] == [[0, 10_000_000]]


def test_devices_lists_the_emulator_and_advance_moves_its_virtual_time(pump, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pump's state folder is tmp_path/pump: found from here
    capsys.readouterr()
    assert cli.main(["devices", "--keystore", str(pump.keystore), "--state", str(tmp_path / "elsewhere")]) == 0
    out = capsys.readouterr().out
    assert pump.port in out and pump.serial in out and "emulator (virtual time)" in out, out
    assert cli.main(["devices", "--json", "--keystore", str(pump.keystore), "--state", str(tmp_path / "pump")]) == 0
    dev = json.loads(capsys.readouterr().out)["devices"]
    assert [(d["port"], d["serial"], d["keys_in_store"]) for d in dev] == [(pump.port, pump.serial, True)]
    before = pump.bench("status")
    assert cli.main(["advance", "90min", "--state", str(tmp_path / "pump")]) == 0
    out = capsys.readouterr().out
    after = pump.bench("status")
    assert (after["day"] * 86400 + after["tod_s"]) - (before["day"] * 86400 + before["tod_s"]) == 5400
    assert out.startswith("advanced 90 min: pump time ") and "delivering" in out
    assert cli.main(["advance", "1day", "--json", "--bench", str(pump.emu.bench_path)]) == 0
    assert json.loads(capsys.readouterr().out)["advanced_s"] == 86400


def test_advance_longer_than_one_bench_request_goes_in_steps(pump, capsys, monkeypatch):
    from pumpctl.commands import device
    emulator_py = (paths.ROOT / "boards" / "unix" / "emulator.py").read_text()
    assert "ADVANCE_MAX_MS = 366 * 86400000" in emulator_py and device.ADVANCE_STEP_S == 366 * 86400
    monkeypatch.setattr(device, "ADVANCE_STEP_S", 3600)  # the same loop, in hours
    from pumpctl.bench import BenchClient
    sent, call = [], BenchClient.call

    def recorded(self, cmd, **kw):
        sent.append((cmd, kw))
        return call(self, cmd, **kw)
    monkeypatch.setattr(BenchClient, "call", recorded)
    before = pump.bench("status")
    assert cli.main(["advance", "150min", "--bench", str(pump.emu.bench_path)]) == 0
    assert [kw["ms"] for cmd, kw in sent if cmd == "advance"] == [3_600_000, 3_600_000, 1_800_000]
    after = pump.bench("status")
    assert (after["day"] * 86400 + after["tod_s"]) - (before["day"] * 86400 + before["tod_s"]) == 9000
    assert capsys.readouterr().out.startswith("advanced 2 h 30 min: ")


def test_advance_refuses_a_real_time_emulator(tmp_path, capsys):
    from pumpctl.emulator import Emulator
    with Emulator(tmp_path / "rt"):
        assert cli.main(["advance", "1h", "--state", str(tmp_path / "rt")]) == cli.EXIT_INPUT
    assert "real time" in capsys.readouterr().err


def test_a_demand_refusal_under_json_carries_the_wait(pump, capsys):
    morning(pump)
    assert pump.pumpctl(capsys, "program", *FLEX, "--yes")[0] == 0
    assert pump.pumpctl(capsys, "demand")[0] == 0
    pump.bench("advance", ms=400_000)
    rc, out, err = pump.pumpctl(capsys, "demand", "--json")
    e = json.loads(out)["error"]
    assert rc == cli.EXIT_REFUSED and e["limit"] == "demand_lockout" and 0 < e["wait_s"] <= 1800, out
    assert "lockout" in err
