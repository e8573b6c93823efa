"""Reaching a pump: the port (a Pico, an emulator, a URL), identification,
provisioning of a new pump and the login with a role's key; the event log
read over the link."""
import contextlib
import signal

from pumpctl import paths
from pumpctl import units as u
from pumpctl.console import Progress, note
from pumpctl.emulator import Emulator, StateBusy
from pumpctl.inflight import Journal, outcome
from pumpctl.fw import events
from pumpctl.fw import link_commands as lc
from pumpctl.keystore import KeyStore, KeyStoreError
from pumpctl.link import (AuthError, Client, LinkError, PumpError, emulator_port, find_auto, gone_message,
                          open_port, unpack_log)


def provision_if_new(client, keystore):
    """Provisions a new pump and stores its keys. Returns a line for the user."""
    ident = client.identify()
    serial = ident["serial"]
    if ident["provisioned"]:
        if keystore.has(serial):
            return "pump %s: keys in %s" % (serial, keystore.path)
        return "pump %s was provisioned by another programmer: no keys for it in %s" % (serial, keystore.path)
    with no_interrupt():  # the pump gives its keys once: never stop between getting and storing them
        keys = client.provision()
        try:
            keystore.put(serial, keys["patient"], keys["clinician"], ident.get("model", ""))
        except OSError as e:
            # The pump gives its keys once: keep them, never on the screen.
            try:
                kept = "they are kept in %s (yours only): use it with --keystore, or copy its entry into your " \
                       "key store" % keystore.rescue(serial, keys["patient"], keys["clinician"], ident.get("model", ""))
            except OSError as e2:
                kept = "and could not be kept anywhere (%s): the pump must be provisioned again" % e2
            raise KeyStoreError("could not save the keys of pump %s to %s (%s); %s"
                                % (serial, keystore.path, e.strerror or e, kept))
    return "pump %s provisioned: new keys stored in %s" % (serial, keystore.path)


@contextlib.contextmanager
def no_interrupt():
    # Ctrl-C and SIGTERM wait until the block is done (then take effect).
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def connected(args, role=None):
    """A client for --port (path, URL, auto or emulator), identified and,
    with a role, logged in with that role's key from the key store."""
    emu = None
    spec = args.port
    if spec == "emulator":
        try:
            emu = Emulator(state_dir(args)).start()
        except StateBusy as e:
            raise LinkError("an emulator is already running with state folder %s (pid %s, serial port %s): "
                            "use --port auto" % (paths.shown(e.state_dir), e.pid or "?", e.port or "?"))
        assert emu.port is not None
        spec = emu.port
    elif spec == "auto":
        spec = find_auto(state_dir(args))
    # An emulator (ours, or the one running with --state) that stops is told
    # apart from a Pico unplugged: each has its own what to do.
    emulated = emu is not None or spec == emulator_port(state_dir(args))
    gone = gone_message(spec, state_dir(args) if emulated else None)
    try:
        client = Client(open_port(spec), timeout=args.timeout, gone=gone)
        try:
            store = KeyStore(args.keystore)
            if emu is not None:
                note(provision_if_new(client, store))
            ident = client.identify()
            if role is not None:
                login(client, store, ident["serial"], role)
            if role == "clinician":
                _report_in_flight(client, store, ident["serial"])
            yield client
        finally:
            client.close()
    finally:
        if emu is not None:
            emu.stop()


def _report_in_flight(client, store, serial):
    # A command an earlier pumpctl sent and never heard back about.
    journal = Journal(store.path)
    entry = journal.pending(serial)
    if entry is not None:
        note("pumpctl: the %s command sent to pump %s at %s got no answer then (pumpctl stopped or the link "
             "failed); it %s" % (entry.get("command", "?"), serial, entry.get("sent", "?"), outcome(client, entry)))
        journal.end(serial)


def login(client, store, serial, role):
    """Login with the key store's key; after a key rotation whose reply was
    lost, with the next keys (the pump proves its key first, so trying the
    old one costs no failed proof), which then become the keys."""
    try:
        return client.login(role, store.get(serial, role))
    except AuthError:
        nxt = store.next_key(serial, role)
        if nxt is None:
            raise
    reply = client.login(role, nxt)
    store.promote(serial)
    return reply


def session_role(args, default):
    return args.role or default


def state_dir(args):
    """--state, else $PUMPCTL_STATE, else run/ in the checkout (wherever pumpctl is run from)."""
    return paths.default_state() if getattr(args, "state", None) is None else args.state



def read_log(c, first=1, last=None, show_progress=False):
    """Event log records first..last (default: to the end) over the link."""
    recs = []
    first = min(max(first, 1), u.ARG_MAX)  # the largest argument the link takes: past any log's end
    info = c.request(lc.LOG_READ, {"first": first, "max": 1})
    last = info["last_seq"] if last is None else min(last, info["last_seq"])
    start = nxt = max(first, info["first_seq"])
    progress = Progress(last - start + 1, "event log", enabled=show_progress)
    while nxt <= last:
        p = c.request(lc.LOG_READ, {"first": nxt, "max": lc.LOG_MAX_PER_READ})
        recs += [r for r in unpack_log(p["recs"]) if r[0] <= last]
        if p["next"] <= nxt:
            break
        nxt = p["next"]
        progress.update(min(nxt, last + 1) - start)
    progress.done()
    return recs, info


_EARLIER_SCAN = 512  # log records read back to find the drug before a drug change


def earlier_drug(c, st):
    """The drug before the drug change the STATUS `st` reports (its
    `drug_changed_s`: a change in the last 24 h), from the newest `therapy
    programmed` record of another drug in the last _EARLIER_SCAN log records;
    None without a change in the last 24 h, "" when the log does not say (a
    patient session cannot read it)."""
    if st.get("drug_changed_s") is None:
        return None
    if getattr(c, "role", None) != "clinician":
        return ""
    try:
        info = c.request(lc.LOG_READ, {"first": 1, "max": 1})
        end = info["last_seq"]
        while end >= info["first_seq"] and info["last_seq"] - end < _EARLIER_SCAN:
            start = max(info["first_seq"], end - 127)
            recs, _ = read_log(c, start, end)
            for r in reversed(recs):
                drug = r[8].decode("utf-8", "replace") if r[3] == events.THERAPY_PROGRAMMED else ""
                if drug and drug != st.get("drug"):
                    return drug
            end = start - 1
    except PumpError:  # the log is a courtesy here: the figure is labelled either way
        return ""
    return ""
