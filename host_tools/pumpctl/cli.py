"""pumpctl command line."""
import argparse
import json
import signal
import sys
import time

from pumpctl.emulator import Emulator, EmulatorError


def cmd_emulate(args) -> int:
    emu = Emulator(args.state, virtual=args.virtual, prescription=args.prescription)
    try:
        emu.start()
    except (EmulatorError, FileNotFoundError) as e:
        print("pumpctl: %s" % e, file=sys.stderr)
        return 3
    print("emulated pump running")
    print("  serial port: %s" % emu.port)
    print("  bench port:  %s" % emu.bench_path)
    print("  flash image: %s" % emu.image)
    print("Ctrl-C stops it with its state on flash.", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on kill too
    try:
        with emu.bench() as bench:
            while emu.proc.poll() is None:
                s = bench.call("status")
                hh, mm, ss = s["tod_s"] // 3600, s["tod_s"] // 60 % 60, s["tod_s"] % 60
                state = "delivering" if s["running"] else "stopped"
                line = "\r%02d:%02d:%02d  %-10s  strokes %d  reservoir %.3f mL " % (
                    hh, mm, ss, state, s["strokes"], s["remaining_nl"] / 1e6)
                if args.status:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        emu.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pumpctl", description="Virtual clinician programmer for the intrathecal pump.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("emulate", help="start the emulated pump and show its ports")
    e.add_argument("--state", default="run", help="folder for the flash image and bench socket (default: run)")
    e.add_argument("--virtual", action="store_true", help="virtual time, advanced through the bench port")
    e.add_argument("--prescription", type=json.loads, help="therapy (JSON) when the flash holds none")
    e.add_argument("--no-status", dest="status", action="store_false", help="no live status line")
    e.set_defaults(func=cmd_emulate)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
