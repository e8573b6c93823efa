"""`pumpctl web`: a local web server for the programmer (docs/web.md),
bound to 127.0.0.1 with a fresh token in the address it prints."""
import signal
import sys

from pumpctl import paths
from pumpctl.console import EXIT_OK, note
from pumpctl.emulator import Emulator, StateBusy
from pumpctl.keystore import KeyStore
from pumpctl.link import Client, find_auto, open_port
from pumpctl.session import provision_if_new, state_dir

HOST = "127.0.0.1"  # never another interface (docs/web.md, "Security")


def cmd_web(args):
    from waitress.server import create_server

    from pumpctl.web.app import WebConfig, create_app
    from pumpctl.web.security import Guard

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on kill too (the emulator with it)
    emu = None
    pump = None if args.port == "auto" else args.port
    if args.port == "emulator":
        try:
            emu = Emulator(state_dir(args), virtual=args.virtual).start()
            pump = emu.port
            note("emulated pump started: serial port %s, state folder %s" % (pump, paths.shown(state_dir(args))))
        except StateBusy:
            pump = find_auto(state_dir(args))
            note("using the emulator already running with state folder %s (%s)" % (paths.shown(state_dir(args)),
                                                                                   pump))
        assert pump is not None
        c = Client(open_port(pump), timeout=args.timeout)
        try:
            note(provision_if_new(c, KeyStore(args.keystore)))
        finally:
            c.close()
    guard = Guard()
    app = create_app(WebConfig(pump=pump, state=args.state, keystore=args.keystore, timeout=args.timeout,
                               report_dir=args.report_dir), guard)
    server = create_server(app, host=HOST, port=args.http_port, threads=4, ident="pumpctl-web")
    port = int(getattr(server, "effective_port"))
    guard.bind(port)
    print("pumpctl web: open this address in a browser on this computer (Ctrl-C stops it):", flush=True)
    print("  http://%s:%d/?token=%s" % (HOST, port, guard.token), flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        server.close()
        if emu is not None:
            emu.stop()
    return EXIT_OK
