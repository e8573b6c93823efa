"""Commands about the device rather than the therapy: identify, provision,
devices, advance (virtual time) and emulate."""
import contextlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from pumpctl import paths, report
from pumpctl import units as u
from pumpctl.bench import BenchError
from pumpctl.console import EXIT_LINK, EXIT_OK, Cancelled, DryRun, UsageError, emit, send_reviewed, table
from pumpctl.emulator import Emulator, EmulatorError, StateBusy
from pumpctl.fw import link_commands as lc
from pumpctl.fw import wire
from pumpctl.keystore import KeyStore, KeyStoreError
from pumpctl.link import Client, LinkError, PumpError, open_port
from pumpctl.session import connected, provision_if_new, state_dir


def cmd_identify(args):
    with connected(args) as c:
        ident = dict(c.identify())
        ident["keys_in_store"] = KeyStore(args.keystore).has(ident["serial"])
    emit(args, ident, lambda: table([
        ["serial", ident["serial"]], ["model", ident["model"]], ["firmware", ident["firmware"]],
        ["protocol", ident["version"]], ["reservoir", u.fmt_volume(ident["reservoir_nl"])],
        ["stroke", "%d nL" % ident["stroke_nl"]],
        ["provisioned", "yes" if ident["provisioned"] else "no (run `pumpctl provision`)"],
        ["keys in store", "yes" if ident["keys_in_store"] else "no"]]))
    return EXIT_OK


def cmd_provision(args):
    with connected(args) as c:
        store = KeyStore(args.keystore)
        ident = c.identify()
        if ident["provisioned"] and not store.has(ident["serial"]):
            raise PumpError({"code": wire.FORBIDDEN, "name": "FORBIDDEN",
                             "reason": "pump %s is already provisioned and its keys are not in %s"
                                       % (ident["serial"], store.path)})
        line = provision_if_new(c, store)
        c.login("clinician", store.get(ident["serial"], "clinician"))  # the keys work
    emit(args, {"serial": ident["serial"], "keystore": str(store.path)}, line)
    return EXIT_OK


def cmd_devices(args):
    found = find_devices(args)
    rows = [[d["port"], kind_text(d), d.get("state") or "-", d.get("serial", "-"), d.get("model", "-"),
             ("yes" if d["keys_in_store"] else "no") if d.get("keys_in_store") is not None else "-",
             d.get("error", "")] for d in found]
    emit(args, {"devices": found}, lambda: table(rows, ["port", "kind", "state", "serial", "model",
                                                               "keys", "note"])
         if rows else "no pump found: no Pico on USB and no emulator running with state folder %s (start one with "
                      "`make run` or `pumpctl emulate`)" % paths.shown(state_dir(args)))
    return EXIT_OK


def find_devices(args):
    """Picos on USB (2E8A:0005) and the emulators running with the state
    folders pumpctl knows (--state or its default, and the folders here),
    each identified (no login)."""
    import serial.tools.list_ports

    from pumpctl.emulator import running
    from pumpctl.link import PICO_PID, PICO_VID
    found = [{"port": p.device, "kind": "pico", "state": None}
             for p in sorted(serial.tools.list_ports.comports(), key=lambda p: p.device)
             if p.vid == PICO_VID and p.pid == PICO_PID]
    folders = [Path(state_dir(args))]
    with contextlib.suppress(OSError):
        folders += sorted(d for d in Path.cwd().iterdir() if d.is_dir() and (d / "port.json").exists())
    seen = set()
    for d in folders:
        key = d.resolve()
        rec = running(d) if key not in seen else None
        seen.add(key)
        if rec:
            found.append({"port": rec["port"], "kind": "emulator", "virtual": bool(rec.get("virtual")),
                          "state": paths.shown(d), "pid": rec.get("pid"), "bench": rec.get("bench")})
    store = KeyStore(args.keystore)
    for dev in found:
        try:
            c = Client(open_port(dev["port"]), timeout=args.timeout, retries=0)
            try:
                ident = c.identify()
            finally:
                c.close()
            dev.update(serial=ident["serial"], model=ident["model"], provisioned=ident["provisioned"],
                       keys_in_store=store.has(ident["serial"]))
        except (LinkError, PumpError) as e:
            dev["error"] = str(e)
        except KeyStoreError as e:
            dev["keys_in_store"] = None
            dev["error"] = str(e)
    return found


def kind_text(dev):
    """The devices table's kind: 'pico', 'emulator (virtual time)', 'emulator (real time)'."""
    if dev["kind"] != "emulator":
        return dev["kind"]
    return "emulator (%s time)" % ("virtual" if dev["virtual"] else "real")


# The most one bench `advance` takes (boards/unix/emulator.py ADVANCE_MAX_MS).
ADVANCE_STEP_S = 366 * 86400


def _bench_gone(bench, state, bench_given, what):
    # As `pumpctl status` says it for the serial port (link.gone_message).
    if bench_given:
        return ("the pump is not answering: the emulator of bench port %s %s (the port does not answer): start it "
                "again with `pumpctl emulate --virtual --state DIR`, then give --bench DIR/bench.sock"
                % (paths.shown(bench), what))
    return ("the pump is not answering: the emulator with state folder %s %s (its bench port %s does not answer): "
            "start it again with `pumpctl emulate --virtual --state %s` (or `make run EMULATE=--virtual`), then "
            "advance its clock" % (paths.shown(state), what, paths.shown(bench), paths.shown(state)))


def cmd_advance(args):
    """Advances a virtual-time emulator through its bench port."""
    from pumpctl.bench import BenchClient, BenchError
    from pumpctl.emulator import running
    secs = u.duration_s(args.duration, "time to advance")
    state = Path(state_dir(args))
    bench = Path(args.bench) if args.bench else state / "bench.sock"
    rec = running(state) if not args.bench else None
    if rec is not None and not rec.get("virtual"):
        raise UsageError("the emulator with state folder %s runs in real time: only a virtual-time emulator "
                         "(`pumpctl emulate --virtual`) can be advanced" % paths.shown(state))
    if not bench.exists():
        raise LinkError("no emulator bench port at %s: start a virtual-time emulator (`pumpctl emulate --virtual "
                        "--state %s`) or give --state DIR / --bench PATH" % (paths.shown(bench), paths.shown(state)))
    try:
        with BenchClient(str(bench)) as b:
            left = secs
            while True:  # one request covers at most ADVANCE_STEP_S: a longer time goes in steps
                step = min(left, ADVANCE_STEP_S)
                st = b.call("advance", ms=step * 1000)
                left -= step
                if left <= 0:
                    break
    except BenchError as e:
        msg = str(e).removeprefix("bench: ")
        if "virtual" in msg:
            raise UsageError("%s: only a virtual-time emulator (`pumpctl emulate --virtual`) can be advanced" % msg)
        if "closed the connection" in msg:
            raise LinkError(_bench_gone(bench, state, args.bench, "stopped while its clock was advancing"))
        raise LinkError("bench port %s: %s" % (paths.shown(bench), msg))
    except (ConnectionRefusedError, FileNotFoundError):
        # The socket file of an emulator that stopped (killed, a power cut) without removing it.
        raise LinkError(_bench_gone(bench, state, args.bench, "is not running")) from None
    except (ConnectionResetError, BrokenPipeError):
        raise LinkError(_bench_gone(bench, state, args.bench, "stopped while its clock was advancing")) from None
    except OSError as e:
        raise LinkError("bench port %s: %s" % (paths.shown(bench), e.strerror or e))
    names = [report.alarm_slug(report.alarm_lookup(a)) if report.alarm_lookup(a) is not None else a
             for a in st.get("alarms", [])]
    data = {"advanced_s": secs, "day": st["day"], "tod_s": st["tod_s"], "state": st["state"],
            "remaining_nl": st["remaining_nl"], "alarms": names}
    emit(args, data, "advanced %s: pump time %s, %s, reservoir %s, alarms: %s" % (
        u.fmt_duration(secs), u.fmt_datetime(st["day"], st["tod_s"]), st["state"], u.fmt_volume(st["remaining_nl"]),
        ", ".join(names) or "none"))
    return EXIT_OK



def cmd_emulate(args) -> int:
    rx = None
    if args.prescription is not None:
        rx = u.firmware_prescription(u.prescription_data(args.prescription, "--prescription"))
    emu = Emulator(state_dir(args), virtual=args.virtual, prescription=rx, blank=args.blank, code=args.code)
    try:
        emu.start()
    except StateBusy:
        raise
    except EmulatorError as e:
        if rx is not None and "LimitError" in str(e):
            reason = str(e).split("LimitError:", 1)[1].strip()
            raise u.UnitError("--prescription refused by the pump: %s; correct it (docs/pumpctl.md), or leave it "
                              "out for the demonstration therapy" % report.clinical_reason(reason, rx["drug"]))
        raise
    except FileNotFoundError as e:  # no MicroPython unix port
        raise EmulatorError(str(e))
    assert emu.proc is not None and emu.port is not None
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on kill too
    try:
        print("emulated pump running")
        print("  serial port: %s" % emu.port)
        print("  bench port:  %s" % paths.shown(emu.bench_path))
        print("  flash image: %s" % paths.shown(emu.image))
        print("  code:        %s" % emu.code_shown())
        print("  state:       %s (pid %d; `pumpctl status` finds it from any directory)"
              % (paths.shown(emu.state_dir), os.getpid()), flush=True)
        try:
            client = Client(open_port(emu.port), timeout=args.timeout)
            try:
                print("  %s" % provision_if_new(client, KeyStore(args.keystore)))
            finally:
                client.close()
        except (LinkError, PumpError, KeyStoreError) as e:
            print("  provisioning failed: %s" % e)
        print("  output:      %s (the emulator's own messages are shown here too)" % paths.shown(emu.log_path))
        print("Ctrl-C stops it with its state on flash.", flush=True)
        emu.on_output = _show_output
        rc = _watch_emulator(emu, args.status)
    except KeyboardInterrupt:
        print("\nstopping")
        rc = EXIT_OK
    finally:
        emu.stop()
    return rc


_RESTART_GRACE_S = 2.0  # a board that resets itself (watchdog) is running again within this


def _show_output(line):
    # A message of the emulator (a warning, a traceback) on its own line, above the status line.
    sys.stdout.write("\r%s\remulator: %s\n" % (" " * 60, line))
    sys.stdout.flush()


def _watch_emulator(emu, live):
    """The pump's status each second until the emulator stops; a stop nobody
    asked for is reported with its reason (EXIT_LINK)."""
    while True:
        proc = emu.proc
        if proc is None or proc.poll() is not None:
            time.sleep(_RESTART_GRACE_S)  # a board reset: the launcher starts it again
            if emu.proc is proc or emu.proc is None or emu.proc.poll() is not None:
                emu.wait_output(_RESTART_GRACE_S)  # its last words shown first
                reason = emu.exit_reason() or "no exit status"
                state = ("It stopped without saving: the next start (`make run`) is a power-on after a power loss"
                         if "power cut" in reason else "Its state is on flash: start it again with `make run`")
                print("\nthe emulated pump stopped by itself (%s); its output is in %s. %s" % (
                    reason, paths.shown(emu.log_path), state), flush=True)
                return EXIT_LINK
            continue
        try:
            with emu.bench() as bench:
                s = bench.call("status")
        except (BenchError, OSError, ValueError):
            time.sleep(0.2)  # resetting, or just stopped: looked at again above
            continue
        if live:
            hh, mm, ss = s["tod_s"] // 3600, s["tod_s"] // 60 % 60, s["tod_s"] % 60
            sys.stdout.write("\r%02d:%02d:%02d  %-10s  strokes %d  reservoir %s " % (
                hh, mm, ss, "delivering" if s["running"] else "stopped", s["strokes"], u.fmt_volume(s["remaining_nl"])))
            sys.stdout.flush()
        time.sleep(1.0)



def cmd_rotate_keys(args):
    """New link keys for both roles (issue #15): derived by pump and pumpctl
    from the current keys and fresh entropy, so no key crosses the link."""
    store = KeyStore(args.keystore)
    with connected(args, "clinician") as c:
        serial = c.identity["serial"]
        ent = secrets.token_bytes(wire.KEY_LEN)
        new = {name: wire.rotated_key(store.get(serial, name), role, ent)
               for name, role in (("patient", wire.ROLE_PATIENT), ("clinician", wire.ROLE_CLINICIAN))}
        if not args.json:
            print("Review: new link keys for pump %s (patient and clinician), derived on both sides from the "
                  "current keys: no key is sent. Afterwards only the new keys log in: the patient's handset needs "
                  "the new patient key from %s." % (serial, store.path))
        store.put_next(serial, new["patient"], new["clinician"])
        try:
            send_reviewed(args, c, "Rotate the keys?", lc.ROTATE_KEYS, {"entropy": ent},
                          {"serial": serial, "keystore": str(store.path)})
        except BaseException as e:
            if isinstance(e, (DryRun, Cancelled)):
                store.drop_next(serial)  # nothing was sent
            raise  # any other end: the next keys stay, the next login finds out which ones work
        store.promote(serial)
    emit(args, {"serial": serial, "rotated": True, "keystore": str(store.path)},
         "pump %s: new link keys in %s (the old ones no longer log in)" % (serial, store.path))
    return EXIT_OK
