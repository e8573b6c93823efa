"""pumpctl command line: the emulator launcher and the virtual programmer.
docs/pumpctl.md is the user's guide.

Exit codes:
  0  done
  1  input refused by pumpctl before anything was sent (malformed, ambiguous
     or unknown value, bad option)
  2  refused by the pump (a hard limit, the role, the arguments): nothing changed
  3  link failure: no such port, pump busy, no reply
  4  authentication: no key for this pump, wrong key, locked out, not
     provisioned, session expired
  5  cancelled at the review (or not confirmed without a terminal): nothing changed
  6  `scenario` only: a `check` step failed (docs/scenarios.md)
 70  internal error in pumpctl (a bug): one line; the traceback with --debug or PUMPCTL_DEBUG=1
130  interrupted (Ctrl-C)
141  standard output closed (e.g. piped into `head`): the rest of the output is dropped
"""
import argparse
import contextlib
import csv
import json
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from pumpctl import paths, report
from pumpctl import units as u
from pumpctl.emulator import Emulator, EmulatorError, StateBusy
from pumpctl.fw import alarms, events, link_commands as lc, wire
from pumpctl.keystore import KeyStore, KeyStoreError
from pumpctl.link import AuthError, Client, LinkError, PumpError, find_auto, open_port, unpack_log

EXIT_OK, EXIT_INPUT, EXIT_REFUSED, EXIT_LINK, EXIT_AUTH, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5
EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PIPE = 70, 130, 141
DEBUG_ENV = "PUMPCTL_DEBUG"
_AUTH_CODES = (wire.NOT_AUTHENTICATED, wire.AUTH_FAILED, wire.LOCKED_OUT)


class Cancelled(Exception):
    pass


class Interrupted(Exception):
    """Ctrl-C where it is known that nothing was changed (at a prompt)."""


class UsageError(Exception):
    pass


# -- output ------------------------------------------------------------------------
def _jsonable(x):
    if isinstance(x, (bytes, bytearray)):
        return x.hex()
    raise TypeError(type(x).__name__)


def emit(args, data, text):
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=_jsonable))
    else:
        print(text() if callable(text) else text)


def note(msg):
    print(msg, file=sys.stderr)


def interactive():
    return sys.stdin is not None and not sys.stdin.closed and sys.stdin.isatty()


def ask(prompt):
    """A line typed at the terminal. Ctrl-D (end of input) cancels and Ctrl-C
    interrupts, both before anything is changed."""
    # The prompt goes with the review on standard output (input() would put
    # it on stderr at a terminal).
    try:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        return input()
    except EOFError:
        print()
        raise Cancelled("no answer (end of input): nothing changed")
    except KeyboardInterrupt:
        print()
        raise Interrupted("interrupted at the prompt: nothing changed")


def confirm(args, question):
    """Review-then-confirm: --yes, or 'y' typed at a terminal. Anything else
    cancels, and nothing has been changed."""
    if getattr(args, "yes", False):
        return
    if not interactive():
        raise Cancelled("not confirmed: nothing changed (run at a terminal, or add --yes)")
    answer = ask("%s [y/N] " % question).strip().lower()
    if answer not in ("y", "yes"):
        raise Cancelled("cancelled: nothing changed")


class DryRun(Exception):
    """--dry-run at the end of a review: what would be sent, nothing sent."""

    def __init__(self, command, payload, review=None):
        super().__init__(command)
        self.command, self.payload, self.review = command, payload, review


def send_reviewed(args, c, question, mtype, payload, review=None):
    """The end of every review: with --dry-run stop here (exit 0, nothing sent,
    what would be sent shown); else --yes or 'y' at the terminal, then send."""
    if getattr(args, "dry_run", False):
        raise DryRun(lc.COMMANDS[mtype][0], payload, review)
    confirm(args, question)
    return c.request(mtype, payload)


# -- connecting ---------------------------------------------------------------------
def provision_if_new(client, keystore):
    """Provisions a new pump and stores its keys. Returns a line for the user."""
    ident = client.identify()
    serial = ident["serial"]
    if ident["provisioned"]:
        if keystore.has(serial):
            return "pump %s: keys in %s" % (serial, keystore.path)
        return "pump %s was provisioned by another programmer: no keys for it in %s" % (serial, keystore.path)
    with _no_interrupt():  # the pump gives its keys once: never stop between getting and storing them
        keys = client.provision()
        try:
            keystore.put(serial, keys["patient"], keys["clinician"], ident.get("model", ""))
        except OSError as e:
            # Show the keys rather than lose them.
            raise KeyStoreError("could not save the keys of pump %s to %s (%s); keep them: patient %s clinician %s"
                                % (serial, keystore.path, e, keys["patient"].hex(), keys["clinician"].hex()))
    return "pump %s provisioned: new keys stored in %s" % (serial, keystore.path)


@contextlib.contextmanager
def _no_interrupt():
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
    try:
        client = Client(open_port(spec), timeout=args.timeout)
        try:
            store = KeyStore(args.keystore)
            if emu is not None:
                note(provision_if_new(client, store))
            ident = client.identify()
            if role is not None:
                client.login(role, store.get(ident["serial"], role))
            yield client
        finally:
            client.close()
    finally:
        if emu is not None:
            emu.stop()


def session_role(args, default):
    return args.role or default


def state_dir(args):
    """--state, else $PUMPCTL_STATE, else run/ in the checkout (wherever pumpctl is run from)."""
    return paths.default_state() if getattr(args, "state", None) is None else args.state


# -- commands without a session ---------------------------------------------------
def cmd_identify(args):
    with connected(args) as c:
        ident = dict(c.identify())
        ident["keys_in_store"] = KeyStore(args.keystore).has(ident["serial"])
    emit(args, ident, lambda: report.table([
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
            found.append({"port": rec["port"], "kind": "emulator (%s time)" % ("virtual" if rec.get("virtual")
                                                                              else "real"),
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
    rows = [[d["port"], d["kind"], d.get("state") or "-", d.get("serial", "-"), d.get("model", "-"),
             ("yes" if d["keys_in_store"] else "no") if d.get("keys_in_store") is not None else "-",
             d.get("error", "")] for d in found]
    emit(args, {"devices": found}, lambda: report.table(rows, ["port", "kind", "state", "serial", "model",
                                                               "keys", "note"])
         if rows else "no pump found: no Pico on USB and no emulator running with state folder %s (start one with "
                      "`make run` or `pumpctl emulate`)" % paths.shown(state_dir(args)))
    return EXIT_OK


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
            st = b.call("advance", ms=secs * 1000)
    except BenchError as e:
        msg = str(e).removeprefix("bench: ")
        if "virtual" in msg:
            raise UsageError("%s: only a virtual-time emulator (`pumpctl emulate --virtual`) can be advanced" % msg)
        raise LinkError("bench port %s: %s" % (paths.shown(bench), msg))
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


# -- reading ----------------------------------------------------------------------------
def cmd_status(args):
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        ident = c.identity
    emit(args, {"identity": ident, "status": st}, lambda: report.status_text(ident, st))
    return EXIT_OK


def cmd_interrogate(args):
    with connected(args, session_role(args, "clinician")) as c:
        ident = c.identity
        st = c.request(lc.STATUS)
        th = c.request(lc.THERAPY)
        al = c.request(lc.ALARMS)["alarms"]
        raised = _alarms_raised_at(c, [a[0] for a in al])
    data = {"identity": ident, "status": st, "therapy": th, "alarms": report.alarm_rows(al, raised)}
    emit(args, data, lambda: "\n\n".join([report.status_text(ident, st), "therapy:\n" + report.therapy_text(th),
                                          "alarms:\n" + report.alarms_text(al, raised)]))
    return EXIT_OK


def cmd_alarms(args):
    with connected(args, session_role(args, "clinician")) as c:
        al = c.request(lc.ALARMS)["alarms"]
        acked = []
        if args.ack is not None:
            ids = [a[0] for a in al] if args.ack == "all" else [_alarm_id(args.ack)]
            if getattr(args, "dry_run", False):
                raise DryRun("ack", [{"alarm": a} for a in ids], {
                    "alarms": report.alarm_rows(al), "would_acknowledge": [report.alarm_slug(a) for a in ids]})
            for a in ids:
                acked.append({"id": a, "name": report.alarm_slug(a),
                              "acknowledged": c.request(lc.ACK_ALARM, {"alarm": a})["acknowledged"]})
            al = c.request(lc.ALARMS)["alarms"]
        raised = _alarms_raised_at(c, [a[0] for a in al]) if al else {}
    emit(args, {"alarms": report.alarm_rows(al, raised), "acknowledged": acked},
         lambda: "\n".join(["acknowledged %s: %s" % (a["name"], "yes" if a["acknowledged"] else "was not active")
                            for a in acked] + [report.alarms_text(al, raised)]))
    return EXIT_OK


def _alarm_id(text):
    a = report.alarm_lookup(text)
    if a is None:
        raise u.UnitError("alarm %r: give an id 0..%d or a name (%s), or 'all'"
                          % (text, alarms.COUNT - 1, ", ".join(report.ALARM_SLUGS)))
    return a


_RAISED_SCAN = 1024  # log records read back to find when the active alarms were raised


def _alarms_raised_at(c, ids):
    """{alarm id: (day, tod_s)} of the latest `alarm raised` record of each
    active alarm in the last _RAISED_SCAN log records (a clinician session;
    a patient session cannot read the log and gets {})."""
    want = set(ids)
    if not want or c.role != "clinician":
        return {}
    found = {}
    info = c.request(lc.LOG_READ, {"first": 1, "max": 1})
    last = info["last_seq"]
    end = last
    while want - set(found) and end >= info["first_seq"] and last - end < _RAISED_SCAN:
        start = max(info["first_seq"], end - 127)
        recs, _ = _read_log(c, start, end)
        for r in recs:
            if r[3] == events.ALARM_RAISED and r[4] in want:
                found[r[4]] = (r[1], r[2])
        end = start - 1
    return found


def cmd_log(args):
    first = args.first
    with connected(args, session_role(args, "clinician")) as c:
        recs, info = _read_log(c, first, args.last, show_progress=sys.stderr.isatty() and not args.json)
    if args.csv:
        out = sys.stdout if args.csv == "-" else open(args.csv, "w", newline="")
        try:
            w = csv.writer(out)
            w.writerow(report.LOG_HEADERS)
            w.writerows(report.log_rows(recs))
        finally:
            if out is not sys.stdout:
                out.close()
        if args.csv != "-":
            note("%d records written to %s" % (len(recs), args.csv))
        return EXIT_OK
    emit(args, {"first_seq": info["first_seq"], "last_seq": info["last_seq"], "dropped": info["dropped"],
                "records": report.log_records(recs)},
         lambda: report.log_table(recs) if recs else "no records")
    return EXIT_OK


class Progress:
    """A one-line progress bar on stderr (only at a terminal)."""

    def __init__(self, total, what, enabled=True):
        self.total, self.what, self.enabled = max(total, 0), what, enabled
        self.t0 = time.monotonic()

    def update(self, n):
        if not self.enabled or not self.total:
            return
        frac = min(1.0, n / self.total)
        bar = "#" * int(frac * 30)
        rate = n / max(time.monotonic() - self.t0, 1e-6)
        sys.stderr.write("\r%s [%-30s] %d/%d records  %.0f/s " % (self.what, bar, n, self.total, rate))
        sys.stderr.flush()

    def done(self):
        if self.enabled and self.total:
            sys.stderr.write("\n")


# -- therapy: review, then confirm ------------------------------------------------
def _rx_option(args) -> "dict[str, Any] | None":
    """The prescription in the options (or --file), or None if none is given."""
    given = any((args.drug, args.conc, args.dose, args.step, args.periodic, args.demand))
    if args.file:
        if given:
            raise u.UnitError("give the prescription either in --file or as options, not both")
        return u.prescription_file(args.file)
    if not given:
        return None
    if not args.drug or not args.conc:
        raise u.UnitError("a prescription needs --drug and --conc (e.g. --drug morphine --conc 10mg/mL)")
    return u.prescription(args.drug, args.conc, args.dose, args.step or [], args.periodic or [], args.demand)


def _rx_from_args(args) -> "dict[str, Any]":
    rx = _rx_option(args)
    if rx is None:
        raise u.UnitError("a prescription needs --drug and --conc (e.g. --drug morphine --conc 10mg/mL)")
    return rx


def _extra(day, tod, total_ng, total_nl, empty_in_s, unit):
    return {"total": report.total_text(total_ng, total_nl, unit),
            "empty": u.fmt_date(u.date_after(day, tod, empty_in_s)) if empty_in_s is not None else "-"}


def _know_status(c, st):
    # A refusal at the 24-hour maximum then names what was given in the last 24 h.
    if st.get("ceiling_24h_ng") is not None:
        c.context["given_ng"] = st["ceiling_24h_ng"]


def checked(args, c, mtype, payload, drug):
    """The pump's own dry run (`check: true`) of a request that adds drug.
    With --override, and only when the pump refuses at the drug's usual
    (soft) 24-hour maximum and the drug has a higher hard one, the dry run is
    repeated with the override. Returns (the dry run's reply, the soft refusal
    or None): with a soft refusal the real request needs the override."""
    try:
        return c.request(mtype, dict(payload, check=True)), None
    except PumpError as e:
        soft, hard = report.daily_maxima(drug) if drug in report.limits.DRUGS else (0, 0)
        if not (getattr(args, "override", False) and e.limit == "daily_max" and hard > soft):
            raise
        first = e
    c.context["override_sent"] = True
    return c.request(mtype, dict(payload, check=True, override=True)), first


def override_warning(args, soft_refusal, drug):
    """The plain review line for a dose above the usual maximum, or a note
    that --override was not needed; [] without --override."""
    if soft_refusal is None:
        return ["(--override not needed: within the usual 24-hour maximum; sent without it)"] \
            if getattr(args, "override", False) else []
    unit = u.drug_unit(drug)
    soft, hard = report.daily_maxima(drug)
    return ["ABOVE THE USUAL MAXIMUM: %s's usual 24-hour maximum is %s/day; this goes above it, up to the hard "
            "maximum %s/day at most (never more)." % (drug, u.fmt_mass(soft, unit), u.fmt_mass(hard, unit)),
            "  the pump says: %s" % report.clinical_reason(soft_refusal.reason, drug),
            "  Confirming sends the override (--override); the pump logs it as `soft limit overridden`."]


def _with_override(payload, soft_refusal):
    return dict(payload, override=True) if soft_refusal is not None else payload


def cmd_program(args):
    rx = _rx_from_args(args)
    unit = u.drug_unit(rx["drug"])
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        th = c.request(lc.THERAPY)
        _know_status(c, st)
        check, soft = checked(args, c, lc.PROGRAM, {"rx": rx}, rx["drug"])
        day, tod = st["day"], st["tod_s"]
        cur = _extra(day, tod, th.get("daily_ng"), th.get("max_daily_nl"), st.get("empty_in_s"), unit)
        new = _extra(day, tod, check["daily_ng"], check["max_daily_nl"], check["empty_in_s"], unit)
        review = report.compare(th.get("rx"), rx, cur, new, unit)
        if not args.json:
            print("Review: new therapy for pump %s (reservoir %s)\n%s\n" % (
                c.identity["serial"], u.fmt_volume(st["remaining_nl"]), review))
            for line in override_warning(args, soft, rx["drug"]):
                print(line)
        payload = _with_override({"rx": rx}, soft)
        done = send_reviewed(args, c, "Program this therapy%s?" % (" ABOVE the usual maximum" if soft else ""),
                             lc.PROGRAM, payload, {"current": th.get("rx"), "check": check,
                                                   "above_usual_maximum": soft is not None})
    emit(args, {"programmed": rx, "result": done, "previous": th.get("rx"), "override": soft is not None},
         "programmed: 24-hour maximum %s%s" % (report.total_text(done["daily_ng"], done["max_daily_nl"], unit),
                                               " (above the usual maximum: override logged)" if soft else ""))
    return EXIT_OK


def _current_rx(c):
    th = c.request(lc.THERAPY)
    if th.get("rx") is None:
        raise PumpError({"code": wire.LIMIT, "name": "LIMIT", "limit": "not_programmed",
                         "reason": "no therapy programmed"})
    _know_therapy(c, th["rx"])
    return th["rx"]


def _know_therapy(c, rx):
    # A refusal then speaks the drug's own unit (mg or µg) and concentration.
    if rx:
        c.context.update(drug=rx["drug"], conc=rx["conc"])


def cmd_bolus(args):
    dose = u.mass_ng(args.dose, "bolus dose")
    dur = u.duration_s(args.over, "bolus duration")
    with connected(args, session_role(args, "clinician")) as c:
        rx = _current_rx(c)
        st = c.request(lc.STATUS)
        _know_status(c, st)
        unit = u.drug_unit(rx["drug"])
        req = {"dose_ng": dose, "duration_s": dur}
        check, soft = checked(args, c, lc.BOLUS, req, rx["drug"])
        review = bolus_review(rx, st, dose, dur, check, c.identity.get("stroke_nl", 500))
        if not args.json:
            print("Review: clinician bolus on pump %s\n%s\n" % (c.identity["serial"], report.table(review)))
            for line in override_warning(args, soft, rx["drug"]):
                print(line)
        r = send_reviewed(args, c, "Start this bolus%s?" % (" ABOVE the usual maximum" if soft else ""), lc.BOLUS,
                          _with_override(req, soft), {"rows": dict(review), "check": check,
                                                      "above_usual_maximum": soft is not None})
    given = r.get("dose_ng", check.get("dose_ng", dose))
    emit(args, dict(r, override=soft is not None), "bolus started: %s, %d strokes, %s over %s%s" % (
        u.fmt_mass(given, unit), r["strokes"], u.fmt_volume(r["volume_nl"]), u.fmt_duration(dur),
        " (above the usual maximum: override logged)" if soft else ""))
    return EXIT_OK


def bolus_review(rx, st, dose, dur, check, stroke_nl):
    """Review rows of a clinician bolus from the pump's dry run: the dose the
    whole strokes deliver, beside the dose asked when rounding changed it."""
    unit = u.drug_unit(rx["drug"])
    given = check.get("dose_ng", report.fw_units.volume_to_dose_ng(check["volume_nl"], rx["conc"]))
    strokes = "%d strokes of %s (%s)" % (check["strokes"], u.fmt_pump_value(stroke_nl, "nL"),
                                         u.fmt_volume(check["volume_nl"], 4))
    rows = [["drug", "%s %s" % (rx["drug"], u.fmt_conc(rx["conc"], unit))]]
    if given == dose:
        rows.append(["dose", "%s: %s" % (u.fmt_mass(given, unit), strokes)])
    else:
        rows += [["dose asked", u.fmt_mass(dose, unit)],
                 ["dose delivered", "%s: %s, rounded to whole strokes" % (u.fmt_mass(given, unit), strokes)]]
    rows.append(["over", "%s (basal delivery pauses meanwhile)" % u.fmt_duration(dur)])
    if st.get("ceiling_24h_ng") is not None:
        rows.append(["24-h maximum", report.ceiling_text(rx["drug"], st["ceiling_24h_ng"])])
    return rows


def cmd_prime(args):
    vol = u.volume_nl(args.volume, "priming volume")
    dur = u.duration_s(args.over, "priming duration")
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        th = c.request(lc.THERAPY)
        _know_therapy(c, th.get("rx"))
        _know_status(c, st)
        req = {"volume_nl": vol, "duration_s": dur}
        check = c.request(lc.PRIME, dict(req, check=True))
        review = prime_review(th, st, vol, dur, check)
        if not args.json:
            print("Review: priming bolus on pump %s\n%s\n" % (c.identity["serial"], report.table(review)))
        r = send_reviewed(args, c, "Start priming?", lc.PRIME, req, {"rows": dict(review), "check": check})
    emit(args, r, "priming started: %d strokes, %s over %s" % (r["strokes"], u.fmt_volume(r["volume_nl"], 4),
                                                               u.fmt_duration(dur)))
    return EXIT_OK


def prime_review(th, st, vol, dur, check):
    cath = th.get("catheter_nl") or 0
    rows = [["catheter", "%s, %s" % (u.fmt_volume(cath, 4), "primed" if st.get("catheter_primed") else "not primed")],
            ["priming", "%s over %s: %d strokes (%s)" % (u.fmt_volume(vol, 4), u.fmt_duration(dur), check["strokes"],
                                                          u.fmt_volume(check["volume_nl"], 4))]]
    beyond = check["volume_nl"] - cath
    rx = th.get("rx")
    if beyond > 0 and rx:
        unit = u.drug_unit(rx["drug"])
        rows.append(["beyond the catheter", "%s = %s of %s: dose to the patient, counted against the 24-hour "
                     "maximum" % (u.fmt_volume(beyond, 4), u.fmt_mass(report.fw_units.volume_to_dose_ng(
                         beyond, rx["conc"]), unit), rx["drug"])])
    else:
        rows.append(["counted", "volume only: it fills the catheter with drug (what leaves the tip is the "
                                "catheter's saline, not dose)"])
    if rx and st.get("ceiling_24h_ng") is not None:
        rows.append(["24-h maximum", report.ceiling_text(rx["drug"], st["ceiling_24h_ng"])])
    return rows


def cmd_catheter(args):
    """A catheter revision: the IMPLANT `catheter` step on an implanted pump.
    The new catheter is not primed until `pumpctl prime`."""
    segments = catheter_segments(args.segments)
    total = sum(nl for _, nl in segments)
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        th = c.request(lc.THERAPY)
        cur = th.get("catheter_nl") or 0
        review = [
            ["current catheter", "%s, %s" % (u.fmt_volume(cur, 4), "primed" if st.get("catheter_primed")
                                             else "not primed") if cur else "none recorded"],
            ["new catheter", "%s (total %s), pump end first" % (
                ", ".join("%d mm %s" % (mm, u.fmt_volume(nl, 4)) for mm, nl in segments), u.fmt_volume(total, 4))],
            ["after this", "the new catheter is not primed: until it is, strokes fill it and no drug reaches the "
                           "patient; prime it next: %s" % prime_hint(total)],
        ]
        if not args.json:
            print("Review: catheter revision on pump %s\n%s\n" % (c.identity["serial"], report.table(review)))
        r = send_reviewed(args, c, "Record this catheter revision?", lc.IMPLANT,
                          {"step": "catheter", "segments": segments}, {"rows": dict(review)})
    emit(args, dict(r, next=prime_hint(r["catheter_nl"])), "catheter revision recorded: %s, not primed; next: %s"
         % (u.fmt_volume(r["catheter_nl"], 4), prime_hint(r["catheter_nl"])))
    return EXIT_OK


def prime_hint(volume_nl):
    """`pumpctl prime` for a catheter volume, at a rate well inside the mechanism's (about 12 mL/day)."""
    minutes = -(-volume_nl * 1440 // 12_000_000)
    minutes = max(10, -(-minutes // 5) * 5)
    return "pumpctl prime --volume %smL --over %dmin" % (report.decimal_ml(volume_nl), minutes)


def cmd_demand(args):
    with connected(args, session_role(args, "patient")) as c:
        r = c.request(lc.DEMAND)
    emit(args, r, "demand bolus started: %s over %s" % (u.fmt_volume(r["volume_nl"]), u.fmt_duration(r["duration_s"])))
    return EXIT_OK


def cmd_suspend(args):
    with connected(args, session_role(args, "clinician")) as c:
        rx = c.request(lc.THERAPY).get("rx")
        if not args.json:
            print("Review: suspend therapy. Delivery stops until a clinician resumes it.")
            if rx and rx["drug"] == "baclofen":
                print("WARNING: abrupt withdrawal of intrathecal baclofen can be fatal.")
        r = send_reviewed(args, c, "Suspend?", lc.SUSPEND, None)
    emit(args, r, "pump %s" % r["state"])
    return EXIT_OK


def cmd_maintenance(args):
    with connected(args, session_role(args, "clinician")) as c:
        if not args.json:
            print("Review: stop the pump and give its USB port back to the REPL (mpremote, deploy).")
            print("Delivery stops until the board is powered up again.")
        r = send_reviewed(args, c, "Enter maintenance?", lc.MAINTENANCE, None)
    emit(args, r, "pump stopped; its REPL answers on the port until the next power-up")
    return EXIT_OK


def cmd_resume(args):
    with connected(args, session_role(args, "clinician")) as c:
        th = c.request(lc.THERAPY)
        if not args.json:
            print("Review: resume this therapy (no catch-up of what was missed):\n%s\n" % report.therapy_text(th))
        r = send_reviewed(args, c, "Resume?", lc.RESUME, None)
    emit(args, r, "pump %s" % r["state"])
    return EXIT_OK


def cmd_refill(args):
    withdrawn = u.volume_nl(args.withdrawn, "withdrawn volume")
    added = u.volume_nl(args.added, "added volume")
    rx = _rx_option(args)
    with connected(args, session_role(args, "clinician")) as c:
        done = refill_workflow(args, c, withdrawn, added, rx)
    emit(args, done, refill_done_text(done, added))
    return EXIT_OK


def refill_done_text(done, added):
    extra = ""
    if done.get("drug_changed"):
        extra += "; drug or concentration changed: the catheter's old drug is pushed out first (bridge bolus)"
    if done.get("bolus_cancelled"):
        extra += "; the running bolus was cancelled (it was for the old drug)"
    if done.get("override"):
        extra += "; above the usual maximum: override logged"
    return "refill recorded: %s in the reservoir; discrepancy %s%s%s" % (
        report.fmt_ml(added), report.fmt_ml(done["discrepancy_nl"], signed=True),
        " (acknowledged)" if done["warning"] else "", extra)


def refill_workflow(args, c, withdrawn, added, rx):
    """The guided refill on a logged-in clinician client: dry-run check,
    review, discrepancy acknowledgement, confirm, refill (with the new
    prescription rx, or None). Returns the pump's refill reply. Raises
    Cancelled before anything is changed."""
    st = c.request(lc.STATUS)
    th = c.request(lc.THERAPY)
    _know_therapy(c, rx or th.get("rx"))
    _know_status(c, st)
    req = {"withdrawn_nl": withdrawn, "added_nl": added}
    if rx is not None:
        req["rx"] = rx
    new_rx = rx or th.get("rx")
    check, soft = checked(args, c, lc.REFILL, req, new_rx["drug"] if new_rx else None)
    unit = u.drug_unit(new_rx["drug"] if new_rx else st.get("drug"))
    old = th.get("rx")
    changed = check.get("drug_changed", bool(rx and old and (old["drug"], old["conc"]) != (rx["drug"], rx["conc"])))
    review = [
        ["expected in the reservoir", report.fmt_ml(check["expected_nl"])],
        ["withdrawn", report.fmt_ml(withdrawn)],
        ["discrepancy", "%s%s" % (report.fmt_ml(check["discrepancy_nl"], signed=True),
                                  "  WARNING" if check["warning"] else "")],
        ["added", "%s of %s" % (report.fmt_ml(added), _drug_text(new_rx, unit))],
    ]
    if changed and old:
        what = "DRUG" if old["drug"] != new_rx["drug"] else "CONCENTRATION"
        was = _drug_text(old, u.drug_unit(old["drug"]))
        review.append(["%s CHANGE" % what, "was %s; the catheter's old drug is pushed out first at the old rate "
                                            "(bridge bolus, automatic)" % was])
    elif old and new_rx:
        review.append(["drug", "the same as in the pump"])
    if check.get("bolus_cancelled"):
        review.append(["running bolus", "CANCELLED by the change (its strokes were for the old drug)"])
    if not args.json:
        print("Review: refill of pump %s\n%s\n" % (c.identity["serial"], report.table(review)))
        if rx is not None:
            day, tod = st["day"], st["tod_s"]
            cur = _extra(day, tod, th.get("daily_ng"), th.get("max_daily_nl"), st.get("empty_in_s"), unit)
            new = _extra(day, tod, check["daily_ng"], check["max_daily_nl"], check["empty_in_s"], unit)
            print("New prescription:\n%s\n" % report.compare(old, rx, cur, new, unit))
        elif check.get("empty_in_s") is not None:
            print("projected empty after refill: %s\n" % u.fmt_date(
                u.date_after(st["day"], st["tod_s"], check["empty_in_s"])))
        for line in override_warning(args, soft, new_rx["drug"] if new_rx else ""):
            print(line)
    if check["warning"] and not getattr(args, "dry_run", False):
        _acknowledge_discrepancy(args, check)
    done = send_reviewed(args, c, "Record this refill%s?" % (" ABOVE the usual maximum" if soft else ""), lc.REFILL,
                         _with_override(req, soft), {"rows": dict(review), "check": check,
                                                     "above_usual_maximum": soft is not None})
    if done["warning"]:
        # The clinician has acknowledged the warning: so does the pump.
        c.request(lc.ACK_ALARM, {"alarm": alarms.REFILL_DISCREPANCY})
    return dict(done, override=soft is not None)


def _drug_text(rx, unit):
    return "%s %s" % (rx["drug"], u.fmt_conc(rx["conc"], unit)) if rx else "-"


def cmd_visit(args):
    """Refill visit: the guided refill (and new prescription), then the report
    of the interval since the last visit (pumpctl.visit) from the event log."""
    from pathlib import Path

    from pumpctl import visit, visitrun
    withdrawn = u.volume_nl(args.withdrawn, "withdrawn volume")
    added = u.volume_nl(args.added, "added volume")
    rx = _rx_option(args)
    report_dir = Path(args.report_dir)
    visits = visitrun.load_visits(report_dir)
    with connected(args, session_role(args, "clinician")) as c:
        ident = dict(c.identity)
        serial = ident["serial"]
        prev = visits.get(serial)
        before = c.request(lc.THERAPY)
        done = refill_workflow(args, c, withdrawn, added, rx)
        st = c.request(lc.STATUS)
        after = c.request(lc.THERAPY)
        first = int(prev["seq"]) + 1 if prev else 1
        recs, info = _read_log(c, first)
    try:
        return _visit_report(args, report_dir, visits, ident, prev, first, before, done, st, after, recs, info, added)
    except (visit.VisitError, OSError) as e:
        return _fail(args, EXIT_INPUT, "REPORT", "the refill was recorded, but the report failed: %s" % e,
                     extra={"changed": True, "refill": done})
    except Exception as e:  # a bug in the report: still say what happened on the pump
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        return _fail(args, EXIT_INTERNAL, "INTERNAL", "the refill was recorded, but the report failed (internal error "
                     "%s: %s); rerun with %s=1 for the details" % (type(e).__name__, e, DEBUG_ENV),
                     extra={"changed": True, "refill": done})


def _visit_report(args, report_dir, visits, ident, prev, first, before, done, st, after, recs, info, added):
    from pumpctl import visit, visitrun
    serial = ident["serial"]
    problems = []
    if info["first_seq"] > first:
        problems.append("event log records %d..%d were overwritten before this visit" % (first, info["first_seq"] - 1))
    end = (st["day"], st["tod_s"])
    if prev is None:  # the first visit: the log from the first fill on
        recs = visitrun.first_interval(recs)
    start = (int(prev["day"]), int(prev["tod_s"])) if prev else ((recs[0][1], recs[0][2]) if recs else (st["day"], 0))
    old_rx = before.get("rx")
    conc = old_rx["conc"] if old_rx else st.get("conc_ng_ml", 0)
    rows, state = visitrun.delivered_by_day(recs, start, end, visitrun.DeliveryState.of(prev and prev.get("delivery")),
                                            ident["stroke_nl"], conc)
    new_rx = after.get("rx")
    data = visit.VisitData(
        device=ident, visit_date=visit.as_date(st["day"]), previous_visit=visit.as_date(start[0]),
        records=[r for r in recs if start[0] <= r[1] <= st["day"]], status=st, refill=done,
        old_rx=old_rx, new_rx=new_rx if new_rx != old_rx else None,
        delivered=[(visit.as_date(day), ng, nl) for day, ng, nl in rows])
    summary = visit.summarize(data)
    date = visit.as_date(st["day"])
    report_dir.mkdir(parents=True, exist_ok=True)
    path = visit.render_html(summary, visitrun.report_path(report_dir, serial, date))
    visits[serial] = {"seq": max([first - 1] + [r[0] for r in recs]), "date": date.isoformat(), "day": st["day"],
                      "tod_s": st["tod_s"], "delivery": state.to_dict()}
    visitrun.save_visits(report_dir, visits)
    for p in problems:
        note("pumpctl: %s" % p)
    emit(args, {"refill": done, "report": str(path), "serial": serial, "visit_date": date.isoformat(),
                "previous_visit": summary.previous_visit.isoformat(),
                "delivered": [[d.isoformat(), ng, nl] for d, ng, nl in data.delivered],
                "total_dose_ng": summary.total_dose_ng, "total_volume_nl": summary.total_volume_nl,
                "diary_entries": len(summary.diary), "demand": dataclasses_dict(summary.boluses),
                "attention": list(summary.attention)},
         lambda: "%s\n%s\n%s\nreport: %s" % (
             refill_done_text(done, added), visit.render_text(summary).rstrip("\n"),
             "(delivered: computed from the programmed therapy and the boluses in the event log, as the "
             "pump's own ledger counts it; not measured)", path))
    return EXIT_OK


def dataclasses_dict(obj):
    import dataclasses
    return dataclasses.asdict(obj)


def _acknowledge_discrepancy(args, check):
    msg = ("WARNING: withdrawn %s but %s expected (%s). Possible over- or under-infusion, or a pocket "
           "fill at the last refill: check the patient and the pump before going on."
           % (report.fmt_ml(check["withdrawn_nl"]), report.fmt_ml(check["expected_nl"]),
              report.fmt_ml(check["discrepancy_nl"], signed=True)))
    note(msg)
    if args.accept_discrepancy:
        return
    if not interactive():
        raise Cancelled("discrepancy not acknowledged: nothing changed (add --accept-discrepancy after checking)")
    if ask("Type 'acknowledge' to go on: ").strip().lower() != "acknowledge":
        raise Cancelled("discrepancy not acknowledged: nothing changed")


def cmd_clock(args):
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        now = u.fmt_datetime(st["day"], st["tod_s"])
        if args.set is None:
            emit(args, {"day": st["day"], "tod_s": st["tod_s"]}, "pump clock: %s" % now)
            return EXIT_OK
        day, tod = u.parse_datetime(args.set)
        if not args.json:
            print("Review: pump clock %s -> %s (flex steps and periodic boluses follow the new time; "
                  "no catch-up or repeat of delivery)" % (now, u.fmt_datetime(day, tod)))
        r = send_reviewed(args, c, "Set the clock?", lc.SET_CLOCK, {"day": day, "tod_s": tod})
    emit(args, r, "pump clock set to %s" % u.fmt_datetime(r["day"], r["tod_s"]))
    return EXIT_OK


def cmd_low(args):
    vol = u.volume_nl(args.volume, "low-reservoir threshold")
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        if not args.json:
            print("Review: low-reservoir alarm at %s (now %s)" % (u.fmt_volume(vol), u.fmt_volume(st["low_nl"])))
        r = send_reviewed(args, c, "Set it?", lc.SET_LOW, {"low_nl": vol})
    emit(args, r, "low-reservoir alarm at %s" % u.fmt_volume(r["low_nl"]))
    return EXIT_OK


def cmd_alarm_date(args):
    day = 0 if args.date == "off" else u.parse_date(args.date)
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        if not args.json:
            print("Review: alarm date %s (now %s)" % (u.fmt_date(day) if day else "off", u.fmt_date(st.get("alarm_day"))))
        r = send_reviewed(args, c, "Set it?", lc.SET_ALARM_DATE, {"day": day})
    emit(args, r, "alarm date %s" % (u.fmt_date(r["day"]) if r["day"] else "off"))
    return EXIT_OK


def cmd_diary(args):
    if not 0 <= args.pain <= lc.PAIN_MAX:
        raise u.UnitError("pain score %d: give 0 (none) to %d (worst)" % (args.pain, lc.PAIN_MAX))
    if args.activity not in lc.ACTIVITIES:
        raise u.UnitError("activity %r: one of %s" % (args.activity, ", ".join(lc.ACTIVITIES)))
    if len(args.note.encode()) > lc.NOTE_MAX:
        raise u.UnitError("note is %d bytes: at most %d" % (len(args.note.encode()), lc.NOTE_MAX))
    with connected(args, session_role(args, "patient")) as c:
        r = c.request(lc.DIARY, {"pain": args.pain, "activity": args.activity, "note": args.note})
    emit(args, r, "diary entry %d recorded" % r["seq"])
    return EXIT_OK


def _read_log(c, first=1, last=None, show_progress=False):
    """Event log records first..last (default: to the end) over the link."""
    recs = []
    info = c.request(lc.LOG_READ, {"first": max(first, 1), "max": 1})
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


DIARY_HEADERS = ["seq", "date", "time", "pain", "activity", "note"]


def cmd_diary_list(args):
    from pumpctl import diary
    with connected(args, session_role(args, "clinician")) as c:
        recs, _ = _read_log(c, args.first)
    entries, unreadable = [], []
    for r in recs:
        if r[3] != diary.events.DIARY:
            continue
        try:
            entries.append(diary.decode(r))
        except diary.DiaryError as e:
            unreadable.append(str(e))
    rows = [[e.seq, e.date.isoformat(), u.fmt_tod(e.tod_s), e.pain, e.activity, e.note] for e in entries]
    for msg in unreadable:
        note("unreadable diary record: %s" % msg)
    if args.csv:
        out = sys.stdout if args.csv == "-" else open(args.csv, "w", newline="")
        try:
            w = csv.writer(out)
            w.writerow(DIARY_HEADERS)
            w.writerows(rows)
        finally:
            if out is not sys.stdout:
                out.close()
        if args.csv != "-":
            note("%d diary entries written to %s" % (len(rows), args.csv))
        return EXIT_OK
    emit(args, {"entries": [dict(zip(DIARY_HEADERS, r)) for r in rows], "unreadable": unreadable},
         lambda: report.table(rows, DIARY_HEADERS) if rows else "no diary entries")
    return EXIT_OK


# -- trial (host record, no pump) ----------------------------------------------------------
def _side_effect(text):
    from pumpctl import trial
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise trial.TrialError("side effect %r: KIND:SEVERITY[:TEXT], e.g. nausea:mild or other:moderate:dizziness"
                               % text)
    return trial.SideEffect(parts[0].strip(), parts[1].strip(), parts[2].strip() if len(parts) > 2 else "")


def _trial_date(text):
    import datetime as dt
    return dt.date.today() if text in (None, "today") else text


def cmd_trial(args):
    from pumpctl import trial
    if args.action == "new":
        if os.path.exists(args.file) and not args.force:
            raise trial.TrialError("%s exists: give --force to replace it" % args.file)
        rate = u.rate_ng_day(args.rate, "starting rate") if args.rate else None
        t = trial.Trial(patient_id=args.patient, drug=args.drug, mode=args.mode, start_date=_trial_date(args.start),
                        planned_days=args.days, baseline_pain=args.baseline, rate_ng_day=rate, notes=args.note)
    else:
        t = trial.load(args.file)
        if args.action == "screen":
            t.record_screening(args.item, args.answer, args.note)
        elif args.action == "baseline":
            t.baseline_pain = trial._pain(args.pain, "baseline pain score")
        elif args.action == "day":
            t.add_entry(trial.DailyEntry(date=_trial_date(args.date), pain=args.pain,
                                         side_effects=[_side_effect(x) for x in args.side_effect or []],
                                         note=args.note), replace=args.replace)
        elif args.action == "titrate":
            t.add_titration(trial.Titration(date=_trial_date(args.date),
                                            rate_ng_day=u.rate_ng_day(args.rate, "titration rate"), note=args.note))
        elif args.action == "inject":
            t.add_injection(trial.Injection(time=args.time, dose_ng=u.mass_ng(args.dose, "injection dose"),
                                            route=args.route, note=args.note))
        elif args.action == "decide":
            trial.decide(t, args.name, args.decision, args.note,
                         date=None if args.date is None else trial._date(args.date, "decision date"))
    if args.action != "evaluate":
        trial.save(t, args.file)
    ev = trial.evaluate(t)
    if args.json:
        print(json.dumps({"trial": t.to_dict(), "outcome": ev.outcome.value, "recommendation": ev.recommendation,
                          "reduction_percent": None if ev.reduction_percent is None else float(ev.reduction_percent),
                          "meets_50_percent": ev.meets_50_percent}, indent=2, sort_keys=True, default=str))
    elif args.action in ("evaluate", "decide"):
        print(trial.render_text(t, ev))
    else:
        print("%s: %s saved (%d day(s) recorded); %s" % (args.action, args.file, ev.days_recorded, ev.recommendation))
    return EXIT_OK


# -- implant test ---------------------------------------------------------------------------
IMPLANT_STEP_NAMES = {"identity": "identity", "catheter": "catheter", "fill": "first fill", "prime": "priming",
                      "motor_test": "motor test", "motor_result": "motor test", "alarm_test": "alarm test",
                      "alarm_result": "alarm test", "start": "start therapy", "prime_wait": "priming"}
_POLL_CHUNK_S = 60  # virtual seconds advanced between polls (well inside the 5-min session idle timeout)


class ImplantFailed(Exception):
    def __init__(self, step, reason):
        super().__init__("%s: %s" % (step, reason))
        self.step, self.reason = step, reason


def catheter_segments(text):
    """'500mm:120uL,300mm:80uL' (pump end first) -> [[500, 120000], [300, 80000]]."""
    segs = []
    for part in (text or "").split(","):
        length, sep, vol = part.strip().partition(":")
        if not sep:
            raise u.UnitError("catheter segment %r: LENGTH:VOLUME, e.g. 500mm:120uL" % part.strip())
        length = length.strip().lower()
        scale = 10 if length.endswith("cm") else 1
        num = length[:-2] if length.endswith(("mm", "cm")) else None
        if num is None or not num.strip().isdigit():
            raise u.UnitError("catheter length %r: whole mm or cm, e.g. 500mm" % length)
        segs.append([int(num) * scale, u.volume_nl(vol.strip(), "catheter segment volume")])
    return segs


class ImplantStalled(Exception):
    """Pump time does not move while pumpctl waits in real time: a virtual-time emulator without --bench."""


class TimeSource:
    """Lets a polled implant step progress: real time (sleep), or the bench
    of a virtual-time emulator (advance). In real time it watches the pump's
    clock: one that stands still is a virtual-time emulator, and waiting would
    never end (ImplantStalled)."""

    STILL_S = 5.0  # real seconds without the pump's clock moving

    def __init__(self, bench_path=None):
        self.bench_path = bench_path
        self._seen = None  # (pump time, real time) when the pump's clock last moved

    def wait(self, seconds):
        if self.bench_path:
            from pumpctl.bench import BenchClient
            with BenchClient(self.bench_path) as b:
                b.call("advance", ms=int(seconds * 1000))
        else:
            time.sleep(min(seconds, 1.0))

    def observe(self, st):
        """The pump's STATUS at a poll."""
        if self.bench_path:
            return
        now, pump_t = time.monotonic(), st["day"] * 86400 + st["tod_s"]
        if self._seen is None or pump_t != self._seen[0]:
            self._seen = (pump_t, now)
        elif now - self._seen[1] > self.STILL_S:
            raise ImplantStalled()


class Countdown:
    """The time left of a running priming bolus or motor test, from its
    strokes left: a line each minute of pump time left (rewritten in place at
    a terminal)."""

    def __init__(self, name, say, strokes, duration_s):
        self.name, self.say, self.strokes, self.duration_s = name, say, max(strokes, 1), duration_s
        self.tty = sys.stdout.isatty() and getattr(say, "live", True)
        self.last = None

    def update(self, strokes_left):
        left_s = -(-strokes_left * self.duration_s // self.strokes)
        minute = -(-left_s // 60)
        if minute == self.last:
            return
        self.last = minute
        line = "%-13s %s left (%d of %d strokes to go)" % (self.name, u.fmt_duration(minute * 60) if left_s >= 60
                                                         else "%d s" % left_s, strokes_left, self.strokes)
        if self.tty:
            sys.stdout.write("\r" + line + " " * 8)
            sys.stdout.flush()
        else:
            self.say(line)

    def done(self):
        if self.tty and self.last is not None:
            sys.stdout.write("\r" + " " * 72 + "\r")
            sys.stdout.flush()


def run_implant(c, steps, clock, say, bolus_wait_s=None, current=None):
    """Runs the implant steps [(step, args)] on a logged-in clinician client,
    in order; say(line) reports each. Raises ImplantFailed at the first step
    that fails (the firmware leaves the pump stopped), PumpError-wrapped.
    `current` (a dict) holds the step under way, for an interruption. Two
    steps only wait, for an implant resumed while the pump runs one:
    `prime_wait` (a priming bolus) and `motor_result` (the motor test)."""
    results = []
    current = {} if current is None else current
    for step, extra in steps:
        name = IMPLANT_STEP_NAMES[step]
        current["step"] = name
        try:
            if step == "prime_wait":
                _wait_bolus(c, clock, bolus_wait_s, Countdown(name, say, extra["strokes"], extra["duration_s"]))
                say("%-13s done" % name)
                results.append({"step": step, "reply": {}})
                continue
            r = {"done": False} if step == "motor_result" else c.request(lc.IMPLANT, dict({"step": step}, **extra))
            if step == "prime":
                say("%-13s %d strokes, %s over %s" % (name, r["strokes"], u.fmt_volume(r["volume_nl"], 4),
                                                      u.fmt_duration(extra["duration_s"])))
                _wait_bolus(c, clock, bolus_wait_s, Countdown(name, say, r["strokes"], extra["duration_s"]))
                say("%-13s done" % name)
            elif step in ("motor_test", "motor_result", "alarm_test"):
                poll = "alarm_result" if step == "alarm_test" else "motor_result"
                while not r["done"]:
                    clock.wait(_POLL_CHUNK_S if poll == "motor_result" else 5)
                    clock.observe(c.request(lc.STATUS))
                    r = c.request(lc.IMPLANT, {"step": poll})
                if not r["passed"]:
                    raise ImplantFailed(name, r["reason"])
                say("%-13s passed: %s" % (name, r["reason"]))
            elif step == "identity":
                say("%-13s serial %s, model %s" % (name, r["serial"], r["model"]))
            elif step == "catheter":
                say("%-13s %d segment(s), %s" % (name, len(extra["segments"]), u.fmt_volume(r["catheter_nl"], 4)))
            elif step == "fill":
                say("%-13s %s in the reservoir" % (name, u.fmt_volume(r["remaining_nl"])))
            elif step == "start":
                say("%-13s delivering; 24-hour maximum %s" % (name, report.total_text(
                    r["daily_ng"], r["max_daily_nl"], u.drug_unit(extra["rx"]["drug"]))))
        except PumpError as e:
            raise ImplantFailed(name, "%s%s: %s" % (e.name, " (%s)" % e.limit if e.limit else "",
                                                    report.clinical_reason(e.reason, c.context.get("drug"))))
        results.append({"step": step, "reply": r})
    current.pop("step", None)
    return results


def _wait_bolus(c, clock, limit_s=None, countdown=None):
    waited = 0
    try:
        while True:
            st = c.request(lc.STATUS)
            if st.get("bolus") is None:
                return
            if countdown is not None:
                countdown.update(st["bolus"]["strokes_left"])
            clock.observe(st)
            if limit_s is not None and waited > limit_s:
                raise ImplantFailed("priming", "priming did not finish in %s" % u.fmt_duration(limit_s))
            clock.wait(_POLL_CHUNK_S)
            waited += _POLL_CHUNK_S
    finally:
        if countdown is not None:
            countdown.done()


def implant_steps(serial, model, segments, fill_nl, prime_s, rx):
    return [("identity", {"serial": serial, "model": model}), ("catheter", {"segments": segments}),
            ("fill", {"volume_nl": fill_nl}), ("prime", {"duration_s": prime_s}), ("motor_test", {}),
            ("alarm_test", {}), ("start", {"rx": rx})]


# firmware/implant.py STEP_* (IMPLANT_STEP records, a = step) -> the link's step names
_LOGGED_STEPS = {1: "identity", 2: "catheter", 3: "fill", 4: "prime", 5: "motor_test", 6: "alarm_test", 7: "start"}
_MOTOR_TEST = (4, 60)  # firmware/implant.py: MOTOR_TEST_STROKES over MOTOR_TEST_S, a priming-kind bolus
_KIND_PRIMING = 4


def implant_progress(c, scan=4096):
    """What the pump's event log says of the implant test last begun (since
    its latest `identity` step, within the last `scan` records):
    {"begun": bool, "passed": [step, ...], "failed": step or None,
     "motor_test_started": bool, "priming": (strokes, duration_s) or None}."""
    info = c.request(lc.LOG_READ, {"first": 1, "max": 1})
    end, recs = info["last_seq"], []
    while end >= info["first_seq"] and info["last_seq"] - end < scan:
        start = max(info["first_seq"], end - 255)
        chunk, _ = _read_log(c, start, end)
        recs = chunk + recs
        if any(r[3] == events.IMPLANT_STEP and r[4] == 1 for r in chunk):
            break
        end = start - 1
    begin = max((i for i, r in enumerate(recs) if r[3] == events.IMPLANT_STEP and r[4] == 1), default=None)
    out: "dict[str, Any]" = {"begun": begin is not None, "passed": [], "failed": None, "motor_test_started": False,
                             "priming": None}
    if begin is None:
        return out
    primed, last_start = False, None
    for r in recs[begin:]:
        if r[3] == events.IMPLANT_STEP and r[4] in _LOGGED_STEPS:
            step = _LOGGED_STEPS[r[4]]
            if r[5]:
                out["passed"].append(step)
                out["failed"] = None if out["failed"] == step else out["failed"]
            else:
                out["failed"] = step
            if step == "prime":  # logged once its bolus has started
                primed, out["priming"] = True, last_start
        elif r[3] == events.BOLUS_STARTED and r[4] == _KIND_PRIMING:
            last_start = (r[5], r[6])
            if primed and last_start == _MOTOR_TEST:
                out["motor_test_started"] = True
    return out


def _implanted(st, th):
    """What shows that a pump is implanted (not factory-fresh), or []."""
    signs = []
    if th.get("rx"):
        rx = th["rx"]
        signs.append("therapy %s %s" % (rx["drug"], u.fmt_conc(rx["conc"], u.drug_unit(rx["drug"]))))
    if st.get("remaining_nl"):
        signs.append("reservoir %s" % u.fmt_volume(st["remaining_nl"]))
    if th.get("catheter_nl"):
        signs.append("catheter %s" % u.fmt_volume(th["catheter_nl"], 4))
    return signs


def rx_summary(rx, daily_ng=None):
    """A prescription on one line: 'morphine 10 mg/mL: 3 mg/day from 00:00, 5 mg/day from 08:00; ...'."""
    if not rx:
        return "none"
    unit = u.drug_unit(rx["drug"])
    parts = [", ".join("%s/day from %s" % (u.fmt_mass(d, unit), u.fmt_tod(t)) for t, d in rx["steps"])]
    if rx.get("periodic"):
        parts.append("%d periodic bolus(es)" % len(rx["periodic"]))
    if rx.get("demand"):
        parts.append("demand %s, max %d/24 h" % (u.fmt_mass(rx["demand"][0], unit), rx["demand"][3]))
    if daily_ng:
        parts.append("24-h maximum %s/day" % u.fmt_mass(daily_ng, unit))
    return "%s %s: %s" % (rx["drug"], u.fmt_conc(rx["conc"], unit), "; ".join(parts))


def _implant_review(ident, st, th, serial, model, segments, fill, prime_s, rx, check, todo):
    cur_rx = th.get("rx")
    total = sum(nl for _, nl in segments) if segments else th.get("catheter_nl") or 0
    tests = [t for t, k in (("motor (4 strokes)", "motor_test"), ("motor test under way", "motor_result"),
                            ("alarm tones", "alarm_test")) if k in todo]
    rows = [
        ["identity", "serial %s, model %s" % (ident["serial"], ident["model"]),
         "serial %s, model %s" % (serial, model) if "identity" in todo else "unchanged"],
        ["catheter", u.fmt_volume(th["catheter_nl"], 4) if th.get("catheter_nl") else "none",
         (", ".join("%d mm %s" % (mm, u.fmt_volume(nl, 4)) for mm, nl in segments)
          + " (total %s)" % u.fmt_volume(total, 4)) if segments and "catheter" in todo else "unchanged"],
        ["reservoir", u.fmt_volume(st.get("remaining_nl")) if st.get("remaining_nl") else "empty",
         "first fill %s" % u.fmt_volume(fill) if "fill" in todo else "unchanged (filled before)"],
        ["priming", "-", "the catheter volume over %s" % u.fmt_duration(prime_s) if "prime" in todo
         else "waits for the priming under way" if "prime_wait" in todo else "done"],
        ["tests", "-", ", ".join(tests) or "done"],
        ["therapy", rx_summary(cur_rx, th.get("daily_ng")), rx_summary(rx, check.get("daily_ng"))],
    ]
    for r in rows:
        same = r[2].startswith(("unchanged", "done", "waits")) or r[1] == "-" or r[1] == r[2]
        r.append("" if same else "<< changed")
    return rows


def cmd_implant(args):
    segments = catheter_segments(args.catheter) if args.catheter else None
    fill = u.volume_nl(args.fill, "first fill volume") if args.fill else None
    prime_s = u.duration_s(args.prime_duration, "priming duration")
    rx = _rx_from_args(args)
    if args.resume and args.reimplant:
        raise UsageError("--resume continues the implant test under way, --reimplant starts it again: give one")
    store = KeyStore(args.keystore)
    bench = args.bench or _virtual_bench(args)
    with connected(args, session_role(args, "clinician")) as c:
        old = c.identity["serial"]
        serial = args.serial or old
        model = args.model or c.identity["model"]
        st = c.request(lc.STATUS)
        th = c.request(lc.THERAPY)
        progress = implant_progress(c)
        signs = _implanted(st, th)
        all_steps = implant_steps(serial, model, segments, fill, prime_s, rx)
        if args.resume:
            steps = _resume_steps(all_steps, progress, st)
            if not steps:
                emit(args, {"serial": old, "steps": [], "done_before": progress["passed"]},
                     "the implant test of pump %s is complete: nothing to resume" % old)
                return EXIT_OK
        else:
            steps = all_steps
            if signs and not args.reimplant:
                unfinished = progress["begun"] and "start" not in progress["passed"]
                raise ImplantRefused(old, signs, unfinished)
        if args.reimplant and st.get("remaining_nl"):
            steps = [s for s in steps if s[0] != "fill"]  # a filled pump is refilled, not filled again
        todo = [s for s, _ in steps]
        for s, extra in steps:
            if s == "catheter" and not segments:
                raise UsageError("the catheter step needs --catheter (segments LENGTH:VOLUME, e.g. 500mm:120uL)")
            if s == "fill" and fill is None:
                raise UsageError("the first fill needs --fill (e.g. --fill 20mL)")
        _know_therapy(c, rx)
        check = c.request(lc.PROGRAM, {"rx": rx, "check": True}) if th.get("rx") is None or \
            (th["rx"]["drug"], th["rx"]["conc"]) == (rx["drug"], rx["conc"]) else \
            {"daily_ng": None, "max_daily_nl": None}
        if not args.json:
            what = "resumed implant test" if args.resume else "implant test AGAIN (--reimplant)" if args.reimplant \
                else "implant test"
            print("Review: %s of pump %s%s\n%s\n" % (
                what, old, " (done before: %s)" % ", ".join(IMPLANT_STEP_NAMES[p] for p in progress["passed"])
                if args.resume and progress["passed"] else "",
                report.table(_implant_review(c.identity, st, th, serial, model, segments, fill or 0, prime_s, rx,
                                             check, todo), ["", "now", "after the implant test", ""])))
            print("steps: %s\n" % " -> ".join(IMPLANT_STEP_NAMES[s] for s in todo))
        if getattr(args, "dry_run", False):
            raise DryRun("implant", [dict({"step": st_}, **extra) for st_, extra in steps if st_ != "prime_wait"],
                         {"check": check, "steps": todo})
        confirm(args, "Run the implant test?")
        say = _Quiet() if args.json else (lambda line: print(line, flush=True))
        current: "dict[str, Any]" = {}
        try:
            results = run_implant(c, steps, TimeSource(bench), say, current=current)
        except ImplantFailed as e:
            st = c.request(lc.STATUS)
            emit(args, {"failed_step": e.step, "reason": e.reason, "state": st["state"]},
                 "implant test FAILED at step '%s': %s\npump %s; nothing further was done" % (
                     e.step, e.reason, st["state"]))
            if args.json:
                note("implant test FAILED at step '%s': %s" % (e.step, e.reason))
            return EXIT_REFUSED
        except ImplantStalled:
            raise UsageError("implant test paused at step '%s': the pump's clock stands still, so it is a "
                             "virtual-time emulator: give its bench port, then resume: the same command with "
                             "--resume --bench PATH/bench.sock" % current.get("step", "?"))
        except KeyboardInterrupt:
            raise Interrupted("implant test interrupted at step '%s' (the pump goes on with a running priming or "
                              "test); to go on from there: the same command with --resume" % current.get("step", "?"))
        finally:
            if serial != old and store.has(old) and not store.has(serial):
                _refile_keys(store, old, serial, model)
    emit(args, {"serial": serial, "steps": results},
         "implant test complete: pump %s delivering %s" % (serial, rx["drug"]))
    return EXIT_OK


class _Quiet:
    """say() under --json: nothing on standard output, no live countdown."""
    live = False

    def __call__(self, line):
        pass


class ImplantRefused(UsageError):
    def __init__(self, serial, signs, unfinished):
        super().__init__(
            "pump %s is already implanted (%s): nothing sent. %s" % (
                serial, ", ".join(signs),
                "An implant test was begun and not finished: go on with the same command and --resume."
                if unfinished else "A new catheter is `pumpctl catheter`, a new drug `pumpctl refill`; to run "
                                   "the implant test on it again, add --reimplant (the review shows what changes)."))


def _resume_steps(all_steps, progress, st):
    """The implant steps still to run, from the pump's log and state."""
    if not progress["begun"]:
        return all_steps
    passed = set(progress["passed"])
    if st.get("remaining_nl"):
        passed.add("fill")
    steps = [s for s in all_steps if s[0] not in passed]
    running = st.get("bolus") is not None
    if "prime" in passed and "motor_test" not in passed:
        if progress["motor_test_started"]:
            steps = [("motor_result", {})] + [s for s in steps if s[0] != "motor_test"]
        elif running:
            strokes, dur = progress["priming"] or (st["bolus"]["strokes_left"], 0)
            steps = [("prime_wait", {"strokes": strokes, "duration_s": dur})] + steps
    return steps


def _virtual_bench(args):
    """The bench port of the emulator --port auto finds, when it runs in virtual time."""
    if args.port not in ("auto",):
        return None
    from pumpctl.emulator import running
    rec = running(state_dir(args))
    return rec.get("bench") if rec and rec.get("virtual") else None


def _refile_keys(store, old, new, model):
    # The pump's keys follow its new identity (the pump re-files them too).
    store.put(new, store.get(old, "patient"), store.get(old, "clinician"), model)


def cmd_scenario(args):
    from pumpctl import scenario
    return scenario.run(args.file, args.report_dir, args.state)


# -- the emulator ---------------------------------------------------------------------------
def cmd_emulate(args) -> int:
    rx = None
    if args.prescription is not None:
        rx = u.firmware_prescription(u.prescription_data(args.prescription, "--prescription"))
    emu = Emulator(state_dir(args), virtual=args.virtual, prescription=rx, blank=args.blank)
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
        print("Ctrl-C stops it with its state on flash.", flush=True)
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
    return EXIT_OK


# -- the parser ---------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 1 (refused input), not argparse's 2 (= refused by the pump)
        self.print_usage(sys.stderr)
        raise UsageError(message)


STATE_HELP = ("emulator state folder (default: $%s, else run/ in the checkout, %s, from any directory)"
              % (paths.STATE_ENV, paths.ROOT / "run"))


def _json_arg(text):
    try:
        return json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError("not JSON (%s): e.g. '{\"drug\": \"morphine\", \"conc\": \"10mg/mL\", "
                                         "\"dose\": \"4mg/day\"}'" % e)


def _common():
    p = Parser(add_help=False)
    g = p.add_argument_group("connection and output")
    g.add_argument("--port", default="auto",
                   help="device path, pyserial URL (socket://host:port, rfc2217://...), 'auto' (a Pico on USB, "
                        "else the emulator of --state) or 'emulator' (start one for this command)")
    g.add_argument("--state", help=STATE_HELP)
    g.add_argument("--keystore", help="key store file (default: $PUMPCTL_KEYSTORE or ~/.config/pumpctl/keys.json)")
    g.add_argument("--role", choices=("clinician", "patient"), help="log in with this role's key")
    g.add_argument("--json", action="store_true", help="machine-readable output (errors too: {\"error\": {...}})")
    g.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply (default 2)")
    return p


def _reviewed():
    """Options of the commands that change the pump: review, then confirm."""
    p = Parser(add_help=False)
    g = p.add_argument_group("review and confirm")
    g.add_argument("--yes", action="store_true", help="confirm the review without asking")
    g.add_argument("--dry-run", action="store_true", help="show the review and what would be sent, send nothing, "
                                                          "exit 0")
    return p


def _override_option(p):
    p.add_argument("--override", action="store_true",
                   help="allow a 24-hour total above the drug's usual maximum, up to its hard maximum (ziconotide, "
                        "baclofen); shown at the review, sent only after confirmation, logged by the pump")


def _rx_options(p):
    g = p.add_argument_group("prescription (clinician units)")
    g.add_argument("--drug", help="e.g. morphine, baclofen, ziconotide")
    g.add_argument("--conc", help="concentration, e.g. 10mg/mL or 500ug/mL")
    g.add_argument("--dose", help="continuous daily dose, e.g. 4mg/day")
    g.add_argument("--step", action="append", help="flex step TIME=RATE, e.g. 08:00=5mg/day (repeat)")
    g.add_argument("--periodic", action="append", help="periodic bolus TIME=DOSE/DURATION, e.g. 12:00=0.5mg/10min")
    g.add_argument("--demand", help="patient demand bolus DOSE/DURATION,lockout=DURATION,max=N")
    g.add_argument("--file", help="prescription as JSON (docs/pumpctl.md)")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    p = Parser(prog="pumpctl", description="Virtual clinician programmer for the intrathecal pump.",
               epilog="exit codes: 0 done, 1 input refused by pumpctl, 2 refused by the pump, 3 link failure, "
                      "4 authentication, 5 cancelled at the review, 6 scenario check failed, 70 internal error, "
                      "130 interrupted, 141 output closed")
    p.add_argument("--version", action="version", version=version_text())
    p.add_argument("--debug", action="store_true", help="on an internal error, show the Python traceback "
                                                         "(also $%s=1; may go anywhere on the line)" % DEBUG_ENV)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name, func, help, parents: "tuple[Parser, ...]" = (common,)):
        s = sub.add_parser(name, help=help, description=help, parents=list(parents))
        s.set_defaults(func=func)
        return s

    e = add("emulate", cmd_emulate, "start the emulated pump and show its ports", parents=())
    e.add_argument("--state", help="folder for the flash image, bench socket and port record; " + STATE_HELP)
    e.add_argument("--virtual", action="store_true", help="virtual time, advanced through the bench port")
    e.add_argument("--prescription", type=_json_arg, help="therapy (JSON, either form of `--file` in "
                                                          "docs/pumpctl.md) when the flash holds none")
    e.add_argument("--blank", action="store_true", help="a new pump stays empty and unprogrammed (for `implant`)")
    e.add_argument("--no-status", dest="status", action="store_false", help="no live status line")
    e.add_argument("--keystore", help="key store for the new pump's keys")
    e.add_argument("--timeout", type=float, default=2.0, help=argparse.SUPPRESS)

    reviewed = (common, _reviewed())
    add("identify", cmd_identify, "who is there (no login)")
    add("provision", cmd_provision, "give a new pump its keys and store them")
    s = add("devices", cmd_devices, "the pumps pumpctl can reach: Picos on USB and running emulators", parents=())
    s.add_argument("--state", help=STATE_HELP)
    s.add_argument("--keystore", help="key store (to say whether it holds each pump's keys)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--timeout", type=float, default=1.0, help=argparse.SUPPRESS)
    s = add("advance", cmd_advance, "advance a virtual-time emulator's clock (its bench port)", parents=())
    s.add_argument("duration", help="how long, e.g. 90min, 12h, 28day")
    s.add_argument("--state", help=STATE_HELP)
    s.add_argument("--bench", help="the emulator's bench socket (default: bench.sock in --state)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add("status", cmd_status, "state, reservoir, alarms, battery (patient or clinician)")
    add("interrogate", cmd_interrogate, "full report: device, clock, therapy, reservoir, alarms, totals")
    s = add("program", cmd_program, "program a therapy (review, then confirm)", reviewed)
    _override_option(s)
    _rx_options(s)
    s = add("bolus", cmd_bolus, "clinician bolus (replaces basal while it runs; review from the pump's dry run)",
            reviewed)
    s.add_argument("--dose", required=True, help="e.g. 1mg")
    s.add_argument("--over", required=True, help="duration, e.g. 30min")
    _override_option(s)
    s = add("prime", cmd_prime, "priming bolus to fill a new or revised catheter (after `pumpctl catheter`)",
            reviewed)
    s.add_argument("--volume", required=True, help="e.g. 0.2mL")
    s.add_argument("--over", required=True, help="duration, e.g. 15min")
    s = add("catheter", cmd_catheter, "record a catheter revision (the new catheter is then primed with "
                                      "`pumpctl prime`)", reviewed)
    s.add_argument("--segments", required=True, help="segments LENGTH:VOLUME pump end first, e.g. "
                                                     "500mm:120uL,300mm:80uL")
    add("demand", cmd_demand, "patient demand bolus (patient role)")
    add("suspend", cmd_suspend, "stop delivery until resumed", reviewed)
    add("maintenance", cmd_maintenance, "stop the pump and return the board to its REPL (Pico)", reviewed)
    add("resume", cmd_resume, "resume the programmed therapy", reviewed)
    s = add("refill", cmd_refill, "guided refill: expected vs withdrawn, then the new fill (and prescription)",
            reviewed)
    s.add_argument("--withdrawn", required=True, help="volume drawn out of the reservoir, e.g. 9.5mL")
    s.add_argument("--added", required=True, help="volume put in, e.g. 20mL")
    s.add_argument("--accept-discrepancy", action="store_true", help="acknowledge a discrepancy warning")
    _override_option(s)
    _rx_options(s)
    s = add("visit", cmd_visit, "refill visit: the guided refill (and new prescription), then the report of the "
                                "interval since the last visit (text, and HTML in --report-dir)", reviewed)
    s.add_argument("--withdrawn", required=True, help="volume drawn out of the reservoir, e.g. 9.5mL")
    s.add_argument("--added", required=True, help="volume put in, e.g. 20mL")
    s.add_argument("--accept-discrepancy", action="store_true", help="acknowledge a discrepancy warning")
    s.add_argument("--report-dir", default="reports", help="folder for the HTML reports and visits.json (default: "
                                                           "reports, as for `scenario`; keep one per patient or clinic)")
    _override_option(s)
    _rx_options(s)
    s = sub.add_parser("scenario", help="run a scripted patient course on a fresh virtual-time emulator",
                       description="run a scripted patient course (docs/scenarios.md) on a fresh virtual-time "
                                   "emulator")
    s.set_defaults(func=cmd_scenario)
    s.add_argument("file", help="the scenario (JSON)")
    s.add_argument("--report-dir", default="reports", help="folder for the visit reports (default: reports)")
    s.add_argument("--state", help="emulator state folder, new or empty (default: a temporary folder)")
    s.add_argument("--timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    s = add("alarms", cmd_alarms, "list alarms (priority, raised, tone, what to do); --ack to acknowledge",
            reviewed)
    s.add_argument("--ack", help="alarm id or name (e.g. motor-stall, low-reservoir), or 'all'")
    s = add("clock", cmd_clock, "show or set the pump clock", reviewed)
    s.add_argument("--set", help="'now' (this computer's local time) or YYYY-MM-DDTHH:MM[:SS]")
    s = add("low-threshold", cmd_low, "set the low-reservoir alarm volume", reviewed)
    s.add_argument("volume", help="e.g. 3mL")
    s = add("alarm-date", cmd_alarm_date, "set the alarm (next refill) date", reviewed)
    s.add_argument("date", help="YYYY-MM-DD or 'off'")
    s = add("log", cmd_log, "download the event log (table, --json or --csv)")
    s.add_argument("--from", dest="first", type=int, default=1, help="first sequence number")
    s.add_argument("--to", dest="last", type=int, help="last sequence number")
    s.add_argument("--csv", help="write CSV to FILE ('-' for standard output)")
    s = add("diary", cmd_diary, "add a pain diary entry (patient role)")
    s.add_argument("--pain", type=int, required=True, help="pain score 0 (none) to 10 (worst)")
    s.add_argument("--activity", required=True, help=", ".join(lc.ACTIVITIES))
    s.add_argument("--note", default="", help="short note (up to 32 bytes)")
    s = sub.add_parser("diary-list", help="pain diary entries from the event log (clinician role)",
                       parents=[common])
    s.set_defaults(func=cmd_diary_list)
    s.add_argument("--from", dest="first", type=int, default=1, help="first log sequence number")
    s.add_argument("--csv", help="write CSV to FILE ('-' for standard output)")
    _trial_parser(sub)
    s = add("implant", cmd_implant, "implant test: identity, catheter, first fill, priming, motor and alarm "
                                    "tests, start of therapy (stops at the first failed step)", reviewed)
    s.add_argument("--serial", help="pump serial (default: the pump's own)")
    s.add_argument("--model", help="pump model (default: the pump's own)")
    s.add_argument("--catheter", help="segments LENGTH:VOLUME pump end first, e.g. 500mm:120uL,300mm:80uL")
    s.add_argument("--fill", help="first fill volume, e.g. 20mL")
    s.add_argument("--resume", action="store_true", help="go on with an implant test that was interrupted, from "
                                                         "the step it reached (the pump's event log says which)")
    s.add_argument("--reimplant", action="store_true", help="run the implant test on a pump that is already "
                                                            "implanted (the review shows what changes)")
    s.add_argument("--prime-duration", default="30min", help="priming bolus duration (default 30min)")
    s.add_argument("--bench", help="bench socket of a virtual-time emulator: advance its time while polling "
                                   "(found by itself for the emulator of --port auto)")
    _rx_options(s)
    from pumpctl.deploy import add_deploy_parser  # installs the firmware on a Pico (boards/pico)

    add_deploy_parser(sub)
    return p


def _trial_parser(sub):
    t = sub.add_parser("trial", help="screening trial record (a JSON file; no pump needed)",
                       description="screening trial record: docs/clinical-path.md section 1")
    ts = t.add_subparsers(dest="action", required=True, parser_class=Parser)

    def act(name, help):
        s = ts.add_parser(name, help=help, description=help.replace("%%", "%"))
        s.add_argument("--file", required=True, help="the trial record (JSON)")
        s.add_argument("--json", action="store_true", help="machine-readable output")
        s.set_defaults(func=cmd_trial)
        return s

    s = act("new", "start a trial record")
    s.add_argument("--patient", required=True, help="patient pseudonym (never real patient data)")
    s.add_argument("--drug", required=True)
    s.add_argument("--mode", choices=("continuous", "injection"), required=True)
    s.add_argument("--start", help="day 1, YYYY-MM-DD (default today)")
    s.add_argument("--days", type=int, required=True, help="planned days")
    s.add_argument("--baseline", type=int, required=True, help="pain score 0-10 before the trial")
    s.add_argument("--rate", help="continuous: starting rate, e.g. 0.5mg/day")
    s.add_argument("--note", default="")
    s.add_argument("--force", action="store_true", help="replace an existing file")
    s = act("screen", "record a screening answer")
    s.add_argument("item", help="failed_conservative_care, surgery_not_indicated, no_substance_abuse, "
                                "psychological_evaluation")
    s.add_argument("answer", choices=("yes", "no", "unknown"))
    s.add_argument("--note", default="")
    s = act("baseline", "set the baseline pain score")
    s.add_argument("pain", type=int)
    s = act("day", "record a day's pain score and side effects")
    s.add_argument("--date", help="YYYY-MM-DD (default today)")
    s.add_argument("--pain", type=int, required=True)
    s.add_argument("--side-effect", action="append", help="KIND:SEVERITY[:TEXT], e.g. nausea:mild (repeat)")
    s.add_argument("--note", default="")
    s.add_argument("--replace", action="store_true", help="correct an existing entry for the date")
    s = act("titrate", "change the continuous rate")
    s.add_argument("--date", help="YYYY-MM-DD (default today)")
    s.add_argument("--rate", required=True, help="e.g. 1mg/day")
    s.add_argument("--note", default="")
    s = act("inject", "record a test injection")
    s.add_argument("--time", required=True, help="YYYY-MM-DDTHH:MM")
    s.add_argument("--dose", required=True, help="e.g. 0.1mg")
    s.add_argument("--route", choices=("intrathecal", "epidural"), default="intrathecal")
    s.add_argument("--note", default="")
    act("evaluate", "evaluate against the 50 %% criterion (the physician decides)")
    s = act("decide", "record the physician's decision beside the tool's recommendation")
    s.add_argument("--name", required=True)
    s.add_argument("--decision", required=True, choices=("implant", "no implant", "extend or repeat trial"))
    s.add_argument("--date", help="YYYY-MM-DD (default today)")
    s.add_argument("--note", default="")


def _refusal(e, args):
    """A refusal by the pump: (lines for stderr, the JSON error object)."""
    drug = (getattr(args, "drug", None) or "").strip().lower() or e.context.get("drug")
    try:
        conc = u.conc_ng_ml(args.conc) if getattr(args, "conc", None) else e.context.get("conc")
    except u.UnitError:
        conc = e.context.get("conc")
    given, sent = e.context.get("given_ng"), bool(e.context.get("override_sent"))
    lines = report.refusal_lines(e.name, e.limit, e.reason, drug, conc, given, sent)
    if not e.trusted:
        lines.append("  (unauthenticated reply)")
    lines.append("nothing was changed on the pump")
    err = {"code": e.name, "limit": e.limit, "message": report.clinical_reason(e.reason, drug), "exit": EXIT_REFUSED,
           "pump_code": e.code, "trusted": e.trusted, "changed": False}
    for k, v in report.refusal_parts(e.limit, e.reason, drug, conc, given, sent):
        err["what_to_do" if k == "what to do" else "hint"] = v
    for k in ("wait_s", "retry_s"):
        if k in e.reply:
            err[k] = e.reply[k]
    return lines, err


def _input_errors():
    from pumpctl import scenario, trial, visit
    return (u.UnitError, paths.InputFileError, trial.TrialError, visit.VisitError, scenario.ScenarioError)


def _stdout_closed():
    """True when standard output is a pipe nobody reads any more (`| head`)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, ValueError, OSError):
        return True


def _quiet_stdout():
    # The reader is gone: what is left to print goes nowhere, and so does the
    # flush at exit (the Python documentation's recipe for SIGPIPE).
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, ValueError, OSError):
        pass


def _fix_negative_values(argv):
    # argparse takes "-1mg/day" after an option for another option ("expected
    # one argument"): pass it as the option's value, for units.py to refuse
    # with its reason.
    out = []
    for a in argv:
        if (out and len(a) > 1 and a[0] == "-" and (a[1].isdigit() or a[1] == ".")
                and out[-1].startswith("--") and "=" not in out[-1]):
            out[-1] = "%s=%s" % (out[-1], a)
        else:
            out.append(a)
    return out


def version_text():
    try:
        from importlib.metadata import version
        v = version("pumpctl")
    except Exception:  # not installed (run from the source tree)
        v = "unknown"
    return "pumpctl %s (link protocol %d, firmware in %s)" % (v, wire.PROTOCOL_VERSION, paths.ROOT / "firmware")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get(DEBUG_ENV))
    try:
        rc = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, not at exit: a reader gone by then is a BrokenPipeError handled below
        return rc
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        return _fail(argv, EXIT_INTERRUPTED, "INTERRUPTED", "interrupted (a command already sent may have been "
                     "carried out: check with `pumpctl status`)", newline=True)
    except BrokenPipeError:
        if not _stdout_closed():
            return _internal_error(debug, argv)
        _quiet_stdout()
        return EXIT_PIPE
    except Exception:
        return _internal_error(debug, argv)


def _internal_error(debug, argv=()):
    etype, e, _ = sys.exc_info()
    if debug:
        traceback.print_exc()
    what = "%s: %s" % (etype.__name__ if etype else "error", e) if str(e) else (etype.__name__ if etype else "error")
    return _fail(argv, EXIT_INTERNAL, "INTERNAL", "internal error (%s); nothing more was sent to the pump. Rerun "
                 "with --debug (or %s=1) for the details and report them." % (what, DEBUG_ENV))


def _json_mode(args, argv):
    if args is not None:
        return bool(getattr(args, "json", False))
    return "--json" in argv


_JSON_ARGV: "list[str]" = []  # the command line being run, for errors raised before its options are parsed


def _fail(args_or_argv, rc, code, message, lines=None, extra=None, newline=False):
    """An error: one line `pumpctl: ...` on stderr (or the lines given), and
    with --json the error object on stdout: {"error": {"code", "limit",
    "message", "exit", ...}}. Returns the exit code."""
    for line in lines or ["%spumpctl: %s" % ("\n" if newline else "", message)]:
        note(line)
    args = None if isinstance(args_or_argv, (list, tuple)) else args_or_argv
    argv = args_or_argv if isinstance(args_or_argv, (list, tuple)) else _JSON_ARGV
    if _json_mode(args, list(argv)):
        err = {"code": code, "limit": None, "message": message, "exit": rc}
        err.update(extra or {})
        try:
            print(json.dumps({"error": err}, indent=2, sort_keys=True, default=_jsonable))
        except BrokenPipeError:
            _quiet_stdout()
    return rc


def _main(argv) -> int:
    if argv[:1] == ["diary"] and argv[1:2] in (["add"], ["list"]):
        # `diary add ...` is `diary ...` (patient); `diary list` is the clinician's listing.
        argv = (["diary"] if argv[1] == "add" else ["diary-list"]) + argv[2:]
    argv = _fix_negative_values([a for a in argv if a != "--debug"])
    _JSON_ARGV[:] = argv
    args = None
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except DryRun as e:
        assert args is not None
        emit(args, {"dry_run": True, "command": e.command, "would_send": e.payload, "review": e.review},
             "dry run: nothing was sent to the pump; confirming would send %s %s" % (
                 e.command, json.dumps(e.payload, sort_keys=True, default=_jsonable)))
        return EXIT_OK
    except UsageError as e:
        return _fail(args or argv, EXIT_INPUT, "USAGE", str(e))
    except u.UnitError as e:
        return _fail(args or argv, EXIT_INPUT, "INPUT", "%s (nothing sent)" % e)
    except _input_errors() as e:  # trial, visit, scenario files and values
        return _fail(args or argv, EXIT_INPUT, "INPUT", str(e))
    except (KeyStoreError, AuthError) as e:
        return _fail(args or argv, EXIT_AUTH, "AUTH", str(e))
    except PumpError as e:
        if e.code in _AUTH_CODES:
            msg = "%s (log in again)" % e if e.code == wire.NOT_AUTHENTICATED else str(e)
            return _fail(args or argv, EXIT_AUTH, e.name, msg, extra={"pump_code": e.code})
        lines, err = _refusal(e, args)
        return _fail(args or argv, EXIT_REFUSED, err.pop("code"), err.pop("message"), lines=lines, extra=err)
    except (LinkError, EmulatorError) as e:
        return _fail(args or argv, EXIT_LINK, "LINK", str(e))
    except Cancelled as e:
        return _fail(args or argv, EXIT_CANCELLED, "CANCELLED", str(e))
    except Interrupted as e:
        return _fail(args or argv, EXIT_INTERRUPTED, "INTERRUPTED", str(e))
    except OSError as e:
        if not e.filename:
            raise
        # a file named on the command line
        return _fail(args or argv, EXIT_INPUT, "INPUT", "%s: %s" % (e.filename, e.strerror or e))
