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
from typing import Any

from pumpctl import paths, report
from pumpctl import units as u
from pumpctl.emulator import Emulator, EmulatorError, StateBusy
from pumpctl.fw import alarms, link_commands as lc, wire
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
    if args.yes:
        return
    if not interactive():
        raise Cancelled("not confirmed: nothing changed (run at a terminal, or add --yes)")
    answer = ask("%s [y/N] " % question).strip().lower()
    if answer not in ("y", "yes"):
        raise Cancelled("cancelled: nothing changed")


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
    data = {"identity": ident, "status": st, "therapy": th, "alarms": al}
    emit(args, data, lambda: "\n\n".join([report.status_text(ident, st), "therapy:\n" + report.therapy_text(th),
                                          "alarms:\n" + report.alarms_text(al)]))
    return EXIT_OK


def cmd_alarms(args):
    with connected(args, session_role(args, "clinician")) as c:
        al = c.request(lc.ALARMS)["alarms"]
        acked = []
        if args.ack is not None:
            ids = [a[0] for a in al] if args.ack == "all" else [_alarm_id(args.ack)]
            for a in ids:
                acked.append([a, c.request(lc.ACK_ALARM, {"alarm": a})["acknowledged"]])
            al = c.request(lc.ALARMS)["alarms"]
    emit(args, {"alarms": al, "acknowledged": acked},
         lambda: "\n".join(["acknowledged %s: %s" % (alarms.NAMES[a], "yes" if ok else "was not active")
                            for a, ok in acked] + [report.alarms_text(al)]))
    return EXIT_OK


def _alarm_id(text):
    if text.isdigit() and int(text) < alarms.COUNT:
        return int(text)
    names = [n.replace(" ", "-") for n in alarms.NAMES]
    if text in names:
        return names.index(text)
    raise u.UnitError("alarm %r: give an id 0..%d or a name (%s), or 'all'" % (text, alarms.COUNT - 1, ", ".join(names)))


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
                "records": [list(r[:8]) + [r[8].decode("utf-8", "replace")] for r in recs]},
         lambda: report.table(report.log_rows(recs), report.LOG_HEADERS) or "no records")
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


def cmd_program(args):
    rx = _rx_from_args(args)
    unit = u.drug_unit(rx["drug"])
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        th = c.request(lc.THERAPY)
        check = c.request(lc.PROGRAM, {"rx": rx, "check": True})
        day, tod = st["day"], st["tod_s"]
        cur = _extra(day, tod, th.get("daily_ng"), th.get("max_daily_nl"), st.get("empty_in_s"), unit)
        new = _extra(day, tod, check["daily_ng"], check["max_daily_nl"], check["empty_in_s"], unit)
        review = report.compare(th.get("rx"), rx, cur, new, unit)
        if not args.json:
            print("Review: new therapy for pump %s (reservoir %s)\n%s\n" % (
                c.identity["serial"], u.fmt_volume(st["remaining_nl"]), review))
        confirm(args, "Program this therapy?")
        done = c.request(lc.PROGRAM, {"rx": rx})
    emit(args, {"programmed": rx, "result": done, "previous": th.get("rx")},
         "programmed: 24-hour maximum %s" % report.total_text(done["daily_ng"], done["max_daily_nl"], unit))
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
        unit = u.drug_unit(rx["drug"])
        vol = report.fw_units.dose_to_volume_nl(dose, rx["conc"])
        if not args.json:
            print("Review: clinician bolus of %s (about %s of %s %s) over %s; basal delivery pauses meanwhile" % (
                u.fmt_mass(dose, unit), u.fmt_volume(vol), rx["drug"], u.fmt_conc(rx["conc"], unit),
                u.fmt_duration(dur)))
        confirm(args, "Start this bolus?")
        r = c.request(lc.BOLUS, {"dose_ng": dose, "duration_s": dur})
    emit(args, r, "bolus started: %d strokes, %s" % (r["strokes"], u.fmt_volume(r["volume_nl"])))
    return EXIT_OK


def cmd_prime(args):
    vol = u.volume_nl(args.volume, "priming volume")
    dur = u.duration_s(args.over, "priming duration")
    with connected(args, session_role(args, "clinician")) as c:
        if not args.json:
            print("Review: priming bolus of %s over %s (fills the catheter; counted as volume, not dose)"
                  % (u.fmt_volume(vol, 4), u.fmt_duration(dur)))
        confirm(args, "Start priming?")
        r = c.request(lc.PRIME, {"volume_nl": vol, "duration_s": dur})
    emit(args, r, "priming started: %d strokes, %s" % (r["strokes"], u.fmt_volume(r["volume_nl"], 4)))
    return EXIT_OK


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
        confirm(args, "Suspend?")
        r = c.request(lc.SUSPEND)
    emit(args, r, "pump %s" % r["state"])
    return EXIT_OK


def cmd_maintenance(args):
    with connected(args, session_role(args, "clinician")) as c:
        if not args.json:
            print("Review: stop the pump and give its USB port back to the REPL (mpremote, deploy).")
            print("Delivery stops until the board is powered up again.")
        confirm(args, "Enter maintenance?")
        r = c.request(lc.MAINTENANCE)
    emit(args, r, "pump stopped; its REPL answers on the port until the next power-up")
    return EXIT_OK


def cmd_resume(args):
    with connected(args, session_role(args, "clinician")) as c:
        th = c.request(lc.THERAPY)
        if not args.json:
            print("Review: resume this therapy (no catch-up of what was missed):\n%s\n" % report.therapy_text(th))
        confirm(args, "Resume?")
        r = c.request(lc.RESUME)
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
    return "refill recorded: %s in the reservoir; discrepancy %+.3f mL%s" % (
        u.fmt_volume(added), done["discrepancy_nl"] / 1e6, " (acknowledged)" if done["warning"] else "")


def refill_workflow(args, c, withdrawn, added, rx):
    """The guided refill on a logged-in clinician client: dry-run check,
    review, discrepancy acknowledgement, confirm, refill (with the new
    prescription rx, or None). Returns the pump's refill reply. Raises
    Cancelled before anything is changed."""
    st = c.request(lc.STATUS)
    th = c.request(lc.THERAPY)
    _know_therapy(c, rx or th.get("rx"))
    req = {"withdrawn_nl": withdrawn, "added_nl": added}
    if rx is not None:
        req["rx"] = rx
    check = c.request(lc.REFILL, dict(req, check=True))
    new_rx = rx or th.get("rx")
    unit = u.drug_unit(new_rx["drug"] if new_rx else st.get("drug"))
    review = [
        ["expected in the reservoir", u.fmt_volume(check["expected_nl"])],
        ["withdrawn", u.fmt_volume(withdrawn)],
        ["discrepancy", "%+.3f mL%s" % (check["discrepancy_nl"] / 1e6, "  WARNING" if check["warning"] else "")],
        ["added", u.fmt_volume(added)],
    ]
    if not args.json:
        print("Review: refill of pump %s\n%s\n" % (c.identity["serial"], report.table(review)))
        if rx is not None:
            day, tod = st["day"], st["tod_s"]
            cur = _extra(day, tod, th.get("daily_ng"), th.get("max_daily_nl"), st.get("empty_in_s"), unit)
            new = _extra(day, tod, check["daily_ng"], check["max_daily_nl"], check["empty_in_s"], unit)
            print("New prescription:\n%s\n" % report.compare(th.get("rx"), rx, cur, new, unit))
            old = th.get("rx")
            if old and (old["drug"], old["conc"]) != (rx["drug"], rx["conc"]):
                print("Drug or concentration changes: the catheter's old drug is pushed out first "
                      "(bridge bolus, automatic).\n")
        elif check.get("empty_in_s") is not None:
            print("projected empty after refill: %s\n" % u.fmt_date(
                u.date_after(st["day"], st["tod_s"], check["empty_in_s"])))
    if check["warning"]:
        _acknowledge_discrepancy(args, check)
    confirm(args, "Record this refill?")
    done = c.request(lc.REFILL, req)
    if done["warning"]:
        # The clinician has acknowledged the warning: so does the pump.
        c.request(lc.ACK_ALARM, {"alarm": alarms.REFILL_DISCREPANCY})
    return done


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
        note("pumpctl: the refill was recorded, but the report failed: %s" % e)
        return EXIT_INPUT
    except Exception as e:  # a bug in the report: still say what happened on the pump
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        note("pumpctl: the refill was recorded, but the report failed (internal error %s: %s); rerun with %s=1 "
             "for the details" % (type(e).__name__, e, DEBUG_ENV))
        return EXIT_INTERNAL


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
    msg = ("WARNING: withdrawn %s but %s expected (%+.3f mL). Possible over- or under-infusion, or a pocket "
           "fill at the last refill: check the patient and the pump before going on."
           % (u.fmt_volume(check["withdrawn_nl"]), u.fmt_volume(check["expected_nl"]), check["discrepancy_nl"] / 1e6))
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
        confirm(args, "Set the clock?")
        r = c.request(lc.SET_CLOCK, {"day": day, "tod_s": tod})
    emit(args, r, "pump clock set to %s" % u.fmt_datetime(r["day"], r["tod_s"]))
    return EXIT_OK


def cmd_low(args):
    vol = u.volume_nl(args.volume, "low-reservoir threshold")
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        if not args.json:
            print("Review: low-reservoir alarm at %s (now %s)" % (u.fmt_volume(vol), u.fmt_volume(st["low_nl"])))
        confirm(args, "Set it?")
        r = c.request(lc.SET_LOW, {"low_nl": vol})
    emit(args, r, "low-reservoir alarm at %s" % u.fmt_volume(r["low_nl"]))
    return EXIT_OK


def cmd_alarm_date(args):
    day = 0 if args.date == "off" else u.parse_date(args.date)
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        if not args.json:
            print("Review: alarm date %s (now %s)" % (u.fmt_date(day) if day else "off", u.fmt_date(st.get("alarm_day"))))
        confirm(args, "Set it?")
        r = c.request(lc.SET_ALARM_DATE, {"day": day})
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
                      "alarm_result": "alarm test", "start": "start therapy"}
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


class TimeSource:
    """Lets a polled implant step progress: real time (sleep), or the bench
    of a virtual-time emulator (advance)."""

    def __init__(self, bench_path=None):
        self.bench_path = bench_path

    def wait(self, seconds):
        if self.bench_path:
            from pumpctl.bench import BenchClient
            with BenchClient(self.bench_path) as b:
                b.call("advance", ms=int(seconds * 1000))
        else:
            time.sleep(min(seconds, 1.0))


def run_implant(c, steps, clock, say, bolus_wait_s=None):
    """Runs the implant steps [(step, args)] on a logged-in clinician client,
    in order; say(line) reports each. Raises ImplantFailed at the first step
    that fails (the firmware leaves the pump stopped), PumpError-wrapped."""
    results = []
    for step, extra in steps:
        name = IMPLANT_STEP_NAMES[step]
        try:
            r = c.request(lc.IMPLANT, dict({"step": step}, **extra))
            if step == "prime":
                say("%-13s %d strokes, %s" % (name, r["strokes"], u.fmt_volume(r["volume_nl"], 4)))
                _wait_bolus(c, clock, bolus_wait_s)
                say("%-13s done" % name)
            elif step in ("motor_test", "alarm_test"):
                poll = "motor_result" if step == "motor_test" else "alarm_result"
                while not r["done"]:
                    clock.wait(_POLL_CHUNK_S if step == "motor_test" else 5)
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
            raise ImplantFailed(name, "%s%s: %s" % (e.name, " (%s)" % e.limit if e.limit else "", e.reason))
        results.append({"step": step, "reply": r})
    return results


def _wait_bolus(c, clock, limit_s=None):
    waited = 0
    while c.request(lc.STATUS).get("bolus") is not None:
        if limit_s is not None and waited > limit_s:
            raise ImplantFailed("priming", "priming did not finish in %s" % u.fmt_duration(limit_s))
        clock.wait(_POLL_CHUNK_S)
        waited += _POLL_CHUNK_S


def implant_steps(serial, model, segments, fill_nl, prime_s, rx):
    return [("identity", {"serial": serial, "model": model}), ("catheter", {"segments": segments}),
            ("fill", {"volume_nl": fill_nl}), ("prime", {"duration_s": prime_s}), ("motor_test", {}),
            ("alarm_test", {}), ("start", {"rx": rx})]


def cmd_implant(args):
    segments = catheter_segments(args.catheter)
    fill = u.volume_nl(args.fill, "first fill volume")
    prime_s = u.duration_s(args.prime_duration, "priming duration")
    rx = _rx_from_args(args)
    unit = u.drug_unit(rx["drug"])
    store = KeyStore(args.keystore)
    with connected(args, session_role(args, "clinician")) as c:
        old = c.identity["serial"]
        serial = args.serial or old
        model = args.model or c.identity["model"]
        check = c.request(lc.PROGRAM, {"rx": rx, "check": True})
        if not args.json:
            print("Review: implant test of pump %s\n%s\n" % (old, report.table([
                ["identity", "serial %s, model %s" % (serial, model)],
                ["catheter", ", ".join("%d mm %s" % (mm, u.fmt_volume(nl, 4)) for mm, nl in segments)
                 + " (total %s)" % u.fmt_volume(sum(nl for _, nl in segments), 4)],
                ["first fill", u.fmt_volume(fill)],
                ["priming", "the catheter volume over %s" % u.fmt_duration(prime_s)],
                ["tests", "motor (4 strokes), alarm tones"],
                ["therapy", report.therapy_text({"rx": rx, "daily_ng": check["daily_ng"],
                                                 "max_daily_nl": check["max_daily_nl"],
                                                 "catheter_nl": sum(nl for _, nl in segments)}).replace("\n", "\n  ")],
            ])))
        confirm(args, "Run the implant test?")
        say = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
        steps = implant_steps(serial, model, segments, fill, prime_s, rx)
        try:
            results = run_implant(c, steps, TimeSource(args.bench), say)
        except ImplantFailed as e:
            st = c.request(lc.STATUS)
            emit(args, {"failed_step": e.step, "reason": e.reason, "state": st["state"]},
                 "implant test FAILED at step '%s': %s\npump %s; nothing further was done" % (
                     e.step, e.reason, st["state"]))
            if args.json:
                note("implant test FAILED at step '%s': %s" % (e.step, e.reason))
            return EXIT_REFUSED
        finally:
            if serial != old and store.has(old) and not store.has(serial):
                _refile_keys(store, old, serial, model)
    emit(args, {"serial": serial, "steps": results},
         "implant test complete: pump %s delivering %s" % (serial, rx["drug"]))
    return EXIT_OK


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
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.add_argument("--yes", action="store_true", help="confirm the review without asking")
    g.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply (default 2)")
    return p


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

    add("identify", cmd_identify, "who is there (no login)")
    add("provision", cmd_provision, "give a new pump its keys and store them")
    add("status", cmd_status, "state, reservoir, alarms, battery (patient or clinician)")
    add("interrogate", cmd_interrogate, "full report: device, clock, therapy, reservoir, alarms, totals")
    s = add("program", cmd_program, "program a therapy (review, then confirm)")
    _rx_options(s)
    s = add("bolus", cmd_bolus, "clinician bolus (replaces basal while it runs)")
    s.add_argument("--dose", required=True, help="e.g. 1mg")
    s.add_argument("--over", required=True, help="duration, e.g. 30min")
    s = add("prime", cmd_prime, "priming bolus to fill a new catheter")
    s.add_argument("--volume", required=True, help="e.g. 0.2mL")
    s.add_argument("--over", required=True, help="duration, e.g. 10min")
    add("demand", cmd_demand, "patient demand bolus (patient role)")
    add("suspend", cmd_suspend, "stop delivery until resumed")
    add("maintenance", cmd_maintenance, "stop the pump and return the board to its REPL (Pico)")
    add("resume", cmd_resume, "resume the programmed therapy")
    s = add("refill", cmd_refill, "guided refill: expected vs withdrawn, then the new fill (and prescription)")
    s.add_argument("--withdrawn", required=True, help="volume drawn out of the reservoir, e.g. 9.5mL")
    s.add_argument("--added", required=True, help="volume put in, e.g. 20mL")
    s.add_argument("--accept-discrepancy", action="store_true", help="acknowledge a discrepancy warning")
    _rx_options(s)
    s = add("visit", cmd_visit, "refill visit: the guided refill (and new prescription), then the report of the "
                                "interval since the last visit (text, and HTML in --report-dir)")
    s.add_argument("--withdrawn", required=True, help="volume drawn out of the reservoir, e.g. 9.5mL")
    s.add_argument("--added", required=True, help="volume put in, e.g. 20mL")
    s.add_argument("--accept-discrepancy", action="store_true", help="acknowledge a discrepancy warning")
    s.add_argument("--report-dir", required=True, help="folder for the HTML reports and visits.json")
    _rx_options(s)
    s = sub.add_parser("scenario", help="run a scripted patient course on a fresh virtual-time emulator",
                       description="run a scripted patient course (docs/scenarios.md) on a fresh virtual-time "
                                   "emulator")
    s.set_defaults(func=cmd_scenario)
    s.add_argument("file", help="the scenario (JSON)")
    s.add_argument("--report-dir", default="reports", help="folder for the visit reports (default: reports)")
    s.add_argument("--state", help="emulator state folder, new or empty (default: a temporary folder)")
    s.add_argument("--timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    s = add("alarms", cmd_alarms, "list alarms; --ack to acknowledge")
    s.add_argument("--ack", help="alarm id or name, or 'all'")
    s = add("clock", cmd_clock, "show or set the pump clock")
    s.add_argument("--set", help="'now' (this computer's local time) or YYYY-MM-DDTHH:MM[:SS]")
    s = add("low-threshold", cmd_low, "set the low-reservoir alarm volume")
    s.add_argument("volume", help="e.g. 3mL")
    s = add("alarm-date", cmd_alarm_date, "set the alarm (next refill) date")
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
                                    "tests, start of therapy (stops at the first failed step)")
    s.add_argument("--serial", help="pump serial (default: the pump's own)")
    s.add_argument("--model", help="pump model (default: the pump's own)")
    s.add_argument("--catheter", required=True, help="segments LENGTH:VOLUME pump end first, e.g. 500mm:120uL,300mm:80uL")
    s.add_argument("--fill", required=True, help="first fill volume, e.g. 20mL")
    s.add_argument("--prime-duration", default="30min", help="priming bolus duration (default 30min)")
    s.add_argument("--bench", help="bench socket of a virtual-time emulator: advance its time while polling")
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


def _refused(e, args):
    drug = (getattr(args, "drug", None) or "").strip().lower() or e.context.get("drug")
    try:
        conc = u.conc_ng_ml(args.conc) if getattr(args, "conc", None) else e.context.get("conc")
    except u.UnitError:
        conc = e.context.get("conc")
    for line in report.refusal_lines(e.name, e.limit, e.reason, drug, conc):
        note(line)
    if not e.trusted:
        note("  (unauthenticated reply)")
    note("nothing was changed on the pump")


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
        note("\npumpctl: interrupted (a command already sent may have been carried out: check with "
             "`pumpctl status`)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_closed():
            return _internal_error(debug)
        _quiet_stdout()
        return EXIT_PIPE
    except Exception:
        return _internal_error(debug)


def _internal_error(debug):
    etype, e, _ = sys.exc_info()
    if debug:
        traceback.print_exc()
    what = "%s: %s" % (etype.__name__ if etype else "error", e) if str(e) else (etype.__name__ if etype else "error")
    note("pumpctl: internal error (%s); nothing more was sent to the pump. Rerun with --debug (or %s=1) for the "
         "details and report them." % (what, DEBUG_ENV))
    return EXIT_INTERNAL


def _main(argv) -> int:
    if argv[:1] == ["diary"] and argv[1:2] in (["add"], ["list"]):
        # `diary add ...` is `diary ...` (patient); `diary list` is the clinician's listing.
        argv = (["diary"] if argv[1] == "add" else ["diary-list"]) + argv[2:]
    argv = _fix_negative_values([a for a in argv if a != "--debug"])
    args = None
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as e:
        note("pumpctl: %s" % e)
        return EXIT_INPUT
    except u.UnitError as e:
        note("pumpctl: %s (nothing sent)" % e)
        return EXIT_INPUT
    except _input_errors() as e:  # trial, visit, scenario files and values
        note("pumpctl: %s" % e)
        return EXIT_INPUT
    except (KeyStoreError, AuthError) as e:
        note("pumpctl: %s" % e)
        return EXIT_AUTH
    except PumpError as e:
        if e.code in _AUTH_CODES:
            note("pumpctl: %s (log in again)" % e if e.code == wire.NOT_AUTHENTICATED else "pumpctl: %s" % e)
            return EXIT_AUTH
        _refused(e, args)
        return EXIT_REFUSED
    except (LinkError, EmulatorError) as e:
        note("pumpctl: %s" % e)
        return EXIT_LINK
    except Cancelled as e:
        note("pumpctl: %s" % e)
        return EXIT_CANCELLED
    except Interrupted as e:
        note("pumpctl: %s" % e)
        return EXIT_INTERRUPTED
    except OSError as e:
        if not e.filename:
            raise
        note("pumpctl: %s: %s" % (e.filename, e.strerror or e))  # a file named on the command line
        return EXIT_INPUT
