"""`pumpctl web`: the programmer in a browser (issue #17, docs/web.md).

Every screen calls the functions the command line calls (commands/*.py,
report.py, session.connected): the same link, roles, reviews built from the
pump's own dry run, refusals in clinical units. Nothing here decides what is
safe: the pump and those functions do. A review is kept on the server (the
browser holds only its random id); confirming it logs in again, repeats the
pump's dry run and sends only if every figure is still the one reviewed
(console.still_as_reviewed), as a review left open at the terminal does.
"""
import argparse
import contextlib
import csv
import io
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from flask import Flask, Response, abort, g, redirect, render_template, request, send_from_directory, url_for

from pumpctl import cli, console, report
from pumpctl import units as u
from pumpctl.commands import device, diary, reading, therapy
from pumpctl.console import Cancelled, UsageError
from pumpctl.emulator import EmulatorError
from pumpctl.fw import limits, wire
from pumpctl.fw import link_commands as lc
from pumpctl.keystore import KeyStoreError
from pumpctl.link import AuthError, Client, LinkError, PumpError
from pumpctl.session import connected, earlier_drug, read_log
from pumpctl.web.security import COOKIE, HEADERS, Guard, WebSession

ROLES = ("clinician", "patient")
PENDING_S = 10 * 60  # a review not confirmed in time is dropped (the figures are checked again anyway)
STEP_ROWS = 8
PERIODIC_ROWS = 3


@dataclass
class WebConfig:
    pump: "str | None" = None  # the pump's port (--port), or None: chosen at the connect screen
    state: "str | None" = None
    keystore: "str | None" = None
    timeout: float = 2.0
    report_dir: str = "reports"
    roles: "tuple[str, ...]" = ROLES


@dataclass
class Pending:
    kind: str  # program, bolus, refill
    argv: "list[str]"
    review: therapy.Review
    context: "dict[str, Any]"
    created: float
    extra: "dict[str, Any]" = field(default_factory=dict)


@dataclass
class Problem:
    """An error as the CLI would report it: its kind (exit code's meaning) and lines."""
    kind: str
    message: str
    lines: "list[str]" = field(default_factory=list)
    limit: "str | None" = None
    wait_s: "int | None" = None


def explain(e: BaseException, args: "argparse.Namespace | None") -> Problem:
    """The CLI's mapping of an error (cli._main) for a page."""
    if isinstance(e, UsageError):
        return Problem("input", str(e))
    if isinstance(e, u.UnitError):
        return Problem("input", "%s (nothing sent)" % e)
    if isinstance(e, (KeyStoreError, AuthError)):
        return Problem("auth", str(e))
    if isinstance(e, PumpError):
        if e.code in (wire.NOT_AUTHENTICATED, wire.AUTH_FAILED, wire.LOCKED_OUT):
            return Problem("auth", "%s (log in again)" % e if e.code == wire.NOT_AUTHENTICATED else str(e))
        lines, err = cli._refusal(e, args)  # the CLI's own refusal text, in clinical units
        return Problem("refused", err["message"], lines, e.limit, err.get("wait_s"))
    if isinstance(e, (LinkError, EmulatorError)):
        return Problem("link", str(e))
    if isinstance(e, Cancelled):
        return Problem("cancelled", str(e))
    raise e


ERRORS = (UsageError, u.UnitError, KeyStoreError, AuthError, PumpError, LinkError, EmulatorError, Cancelled)


def create_app(cfg: WebConfig, guard: "Guard | None" = None, wall: "Callable[[], float]" = time.time) -> Flask:
    here = Path(__file__).resolve().parent
    app = Flask("pumpctl.web", template_folder=str(here / "templates"), static_folder=str(here / "static"))
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    guard = guard or Guard()
    app.extensions["pumpctl_guard"] = guard
    link_lock = threading.Lock()  # one exchange with the pump at a time (the port is exclusive anyway)

    # -- security (security.py) -----------------------------------------------------------------
    @app.before_request
    def _guard():
        if not guard.host_ok(request.host):
            abort(Response("refused: this server answers only http://127.0.0.1 requests to its own port\n", 421,
                           mimetype="text/plain"))
        given = request.args.get("token")
        if given is not None:
            if not guard.token_ok(given) or request.method != "GET":
                abort(Response("refused: wrong token\n", 403, mimetype="text/plain"))
            s = guard.new_session()
            resp = redirect(request.path)
            resp.set_cookie(COOKIE, s.sid, httponly=True, samesite="Strict", path="/")
            return resp
        s, why = guard.session(request.cookies.get(COOKIE))
        if s is None:
            text = ("your session expired: open the address `pumpctl web` printed again\n" if why == "expired"
                    else "refused: open the address `pumpctl web` printed (it carries this launch's token)\n")
            abort(Response(text, 401 if why == "expired" else 403, mimetype="text/plain"))
        if request.method not in ("GET", "HEAD"):
            ok, why_not = guard.same_origin(request.headers.get("Origin"), request.headers.get("Referer"),
                                            request.headers.get("Sec-Fetch-Site"))
            if not ok:
                abort(Response("refused: not from this page (%s)\n" % why_not, 403, mimetype="text/plain"))
            given_csrf = request.form.get("csrf") or request.headers.get("X-CSRF-Token")
            if not guard.csrf_ok(s, given_csrf):
                abort(Response("refused: missing or wrong CSRF token (reload the page)\n", 403,
                               mimetype="text/plain"))
        g.session = s
        return None

    @app.after_request
    def _headers(resp):
        for k, v in HEADERS.items():
            if k == "Content-Security-Policy":
                resp.headers.setdefault(k, v)  # the reports' own, stricter one (report_file)
            else:
                resp.headers[k] = v
        return resp

    @app.context_processor
    def _context():
        s = getattr(g, "session", None)
        return {"csrf": s.csrf if s else "", "session": s, "roles": cfg.roles}

    # -- the pump ---------------------------------------------------------------------------------
    def sess() -> WebSession:
        return g.session

    def parse(command: str, *options: str, role: "str | None" = None) -> argparse.Namespace:
        s = sess()
        argv = [command, *options, "--json", "--port=%s" % (s.port or cfg.pump or "auto"),
                "--timeout=%s" % cfg.timeout, "--role=%s" % (role or s.role or "clinician")]
        if cfg.keystore:
            argv.append("--keystore=%s" % cfg.keystore)
        if cfg.state:
            argv.append("--state=%s" % cfg.state)
        return cli.build_parser().parse_args(argv)

    @contextlib.contextmanager
    def pump(args: argparse.Namespace) -> Iterator[Client]:
        with link_lock, connected(args, args.role) as c:
            yield c

    def need(role: str):
        s = sess()
        if s.port is None and cfg.pump is None:
            return redirect(url_for("connect"))
        if s.role is None:
            return redirect(url_for("connect"))
        if s.role != role:
            abort(Response("this screen is for the %s role: choose it at the connect screen\n" % role, 403,
                           mimetype="text/plain"))
        return None

    def page(template: str, **kw):
        s = sess()
        kw.setdefault("problem", None)
        flashes, s.flash = list(s.flash), []
        return render_template(template, flashes=flashes, pump_port=s.port or cfg.pump, **kw)

    def flash(kind: str, text: str):
        sess().flash.append((kind, text))

    def pending_put(p: Pending) -> str:
        s = sess()
        now = time.monotonic()
        for k in [k for k, v in s.pending.items() if now - v.created > PENDING_S]:
            del s.pending[k]
        rid = secrets.token_urlsafe(16)
        s.pending[rid] = p
        return rid

    # -- connect ------------------------------------------------------------------------------------
    @app.get("/")
    def index():
        s = sess()
        if s.role is None or (s.port is None and cfg.pump is None):
            return redirect(url_for("connect"))
        return redirect(url_for("interrogate" if s.role == "clinician" else "patient"))

    def devices() -> "list[dict[str, Any]]":
        ns = argparse.Namespace(state=cfg.state, keystore=cfg.keystore, timeout=1.0)
        with link_lock:
            found = device.find_devices(ns)
        for d in found:
            d["kind_text"] = device.kind_text(d)
        if cfg.pump and not any(d["port"] == cfg.pump for d in found):
            found.insert(0, {"port": cfg.pump, "kind": "given", "kind_text": "given to pumpctl web (--port)"})
        return found

    @app.get("/connect")
    def connect():
        return page("connect.html", devices=devices())

    @app.post("/connect")
    def connect_post():
        s = sess()
        port, role = request.form.get("port", ""), request.form.get("role", "")
        if role not in cfg.roles:
            flash("error", "choose a role: %s" % " or ".join(cfg.roles))
            return redirect(url_for("connect"))
        if port not in [d["port"] for d in devices()]:
            flash("error", "choose one of the pumps listed")
            return redirect(url_for("connect"))
        s.port, s.role, s.pending = port, role, {}
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout():
        guard.end(sess().sid)
        resp = Response("session ended: open the address `pumpctl web` printed to start again\n",
                        mimetype="text/plain")
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # -- interrogate -------------------------------------------------------------------------------
    @app.get("/interrogate")
    def interrogate():
        if (r := need("clinician")) is not None:
            return r
        args = parse("interrogate")
        try:
            with pump(args) as c:
                ident, st, th, al, raised = reading.interrogate(c)
                earlier = earlier_drug(c, st)
        except ERRORS as e:
            return page("problem.html", problem=explain(e, args), title="Interrogate")
        cap = st.get("capacity_nl") or 1
        gauge = {"pct": max(0, min(100, round(100 * st["remaining_nl"] / cap))),
                 "low_pct": max(0, min(100, round(100 * st.get("low_nl", 0) / cap))),
                 "remaining": u.fmt_volume(st["remaining_nl"]), "capacity": u.fmt_volume(cap),
                 "low": st["remaining_nl"] <= st.get("low_nl", 0)}
        return page("interrogate.html", ident=ident, status=report.status_rows(ident, st, earlier),
                    therapy=report.therapy_table_rows(th), alarms=report.alarm_rows(al, raised), gauge=gauge,
                    state=st["state"])

    # -- program --------------------------------------------------------------------------------------
    def rx_form(rx: "dict[str, Any] | None") -> "dict[str, Any]":
        """A prescription as the form's texts (clinical units, as the CLI takes them)."""
        f: "dict[str, Any]" = {"drug": "", "conc": "", "steps": [], "periodic": [], "demand": ""}
        if rx:
            unit = u.drug_unit(rx["drug"])
            f.update(drug=rx["drug"], conc=u.fmt_conc(rx["conc"], unit),
                     steps=[(u.fmt_tod(t), "%s/day" % u.fmt_mass(d, unit)) for t, d in rx["steps"]],
                     periodic=["%s=%s/%s" % (u.fmt_tod(t), u.fmt_mass(d, unit), u.fmt_duration(s))
                               for t, d, s in rx.get("periodic", [])])
            d = rx.get("demand")
            if d:
                f["demand"] = "%s/%s,lockout=%s,max=%d" % (u.fmt_mass(d[0], unit), u.fmt_duration(d[1]),
                                                           u.fmt_duration(d[2]), d[3])
        f["steps"] += [("", "")] * (STEP_ROWS - len(f["steps"]))
        f["periodic"] += [""] * (PERIODIC_ROWS - len(f["periodic"]))
        return f

    def form_rx_options() -> "list[str]":
        f = request.form
        opts = ["--drug=%s" % f.get("drug", "").strip(), "--conc=%s" % f.get("conc", "").strip()]
        for t, r in zip(f.getlist("step_time"), f.getlist("step_rate")):
            if t.strip() or r.strip():
                opts.append("--step=%s=%s" % (t.strip(), r.strip()))
        opts += ["--periodic=%s" % p.strip() for p in f.getlist("periodic") if p.strip()]
        if f.get("demand", "").strip():
            opts.append("--demand=%s" % f["demand"].strip())
        if f.get("override") == "yes":
            opts.append("--override")
        return opts

    def form_back() -> "dict[str, Any]":
        f = request.form
        steps = list(zip(f.getlist("step_time"), f.getlist("step_rate")))
        steps += [("", "")] * (STEP_ROWS - len(steps))
        per = f.getlist("periodic") + [""] * (PERIODIC_ROWS - len(f.getlist("periodic")))
        return {"drug": f.get("drug", ""), "conc": f.get("conc", ""), "steps": steps, "periodic": per,
                "demand": f.get("demand", ""), "override": f.get("override") == "yes"}

    def drugs():
        return [{"name": d, "maxima": report.maxima_text(d)} for d in sorted(limits.DRUGS)]

    @app.get("/program")
    def program():
        if (r := need("clinician")) is not None:
            return r
        args = parse("interrogate")
        try:
            with pump(args) as c:
                th = c.request(lc.THERAPY)
        except ERRORS as e:
            return page("problem.html", problem=explain(e, args), title="Program")
        return page("program.html", form=rx_form(th.get("rx")), drugs=drugs(), current=th.get("rx"))

    def profile(rx: "dict[str, Any] | None", unit: str) -> "list[list[float]]":
        """The 24-hour basal profile [[hour, dose per day in the drug's unit], ...] for the chart."""
        if not rx:
            return []
        pts = [[t / 3600, u.mass_value(d, unit)] for t, d in rx["steps"]]
        return pts + [[24.0, pts[-1][1]]] if pts else []

    @app.post("/program/review")
    def program_review():
        if (r := need("clinician")) is not None:
            return r
        argv = ["program", *form_rx_options()]
        args = None
        try:
            args = parse(*argv)
            rx = therapy.rx_from_args(args)
            with pump(args) as c:
                rv = therapy.program_review(args, c, rx)
                ctx = dict(c.context)
        except ERRORS as e:
            return page("program.html", form=form_back(), drugs=drugs(), current=None, problem=explain(e, args))
        rid = pending_put(Pending("program", argv, rv, ctx, time.monotonic()))
        unit = rv.data["unit"]
        chart = {"unit": "%s/day" % unit, "current": profile(rv.data["previous"], unit),
                 "new": profile(rv.data["rx"], unit)}
        return page("review.html", rv=rv, rid=rid, kind="program", chart=chart, title="Review: new therapy")

    # -- clinician bolus ------------------------------------------------------------------------------
    @app.get("/bolus")
    def bolus():
        if (r := need("clinician")) is not None:
            return r
        return page("bolus.html", form={"dose": "", "over": "", "override": False})

    @app.post("/bolus/review")
    def bolus_review():
        if (r := need("clinician")) is not None:
            return r
        f = request.form
        argv = ["bolus", "--dose=%s" % f.get("dose", "").strip(), "--over=%s" % f.get("over", "").strip()]
        if f.get("override") == "yes":
            argv.append("--override")
        args = None
        try:
            args = parse(*argv)
            dose = u.mass_ng(args.dose, "bolus dose")
            dur = u.duration_s(args.over, "bolus duration")
            with pump(args) as c:
                rv = therapy.bolus_reviewed(args, c, dose, dur)
                ctx = dict(c.context)
        except ERRORS as e:
            return page("bolus.html", form={"dose": f.get("dose", ""), "over": f.get("over", ""),
                                            "override": f.get("override") == "yes"}, problem=explain(e, args))
        rid = pending_put(Pending("bolus", argv, rv, ctx, time.monotonic()))
        return page("review.html", rv=rv, rid=rid, kind="bolus", chart=None, title="Review: clinician bolus")

    # -- refill wizard --------------------------------------------------------------------------------
    @app.get("/refill")
    def refill():
        if (r := need("clinician")) is not None:
            return r
        args = parse("interrogate")
        try:
            with pump(args) as c:
                st = c.request(lc.STATUS)
                th = c.request(lc.THERAPY)
        except ERRORS as e:
            return page("problem.html", problem=explain(e, args), title="Refill")
        return page("refill.html", st=st, current=th.get("rx"), current_text=_drug_text(th.get("rx")),
                    reservoir=u.fmt_volume(st["remaining_nl"]), capacity=u.fmt_volume(st["capacity_nl"]),
                    form=dict(rx_form(th.get("rx")), withdrawn="", added="", change="same"), drugs=drugs())

    def _drug_text(rx):
        return "%s %s" % (rx["drug"], u.fmt_conc(rx["conc"], u.drug_unit(rx["drug"]))) if rx else "none"

    @app.post("/refill/review")
    def refill_review():
        if (r := need("clinician")) is not None:
            return r
        f = request.form
        argv = ["refill", "--withdrawn=%s" % f.get("withdrawn", "").strip(), "--added=%s" % f.get("added", "").strip()]
        new_rx = f.get("change") == "new"
        if new_rx:
            argv += form_rx_options()
        elif f.get("override") == "yes":
            argv.append("--override")
        args = None
        try:
            if not new_rx and f.get("label_checked") != "yes":
                raise u.UnitError("confirm the drug and concentration on the vial's label (step 3)")
            args = parse(*argv)
            withdrawn = u.volume_nl(args.withdrawn, "withdrawn volume")
            added = u.volume_nl(args.added, "added volume")
            rx = therapy.rx_option(args)
            with pump(args) as c:
                rv = therapy.refill_review(args, c, withdrawn, added, rx)
                ctx = dict(c.context)
        except ERRORS as e:
            st_text = {"reservoir": "", "capacity": ""}
            return page("refill.html", st=None, current=None, current_text="", drugs=drugs(),
                        form=dict(form_back(), withdrawn=f.get("withdrawn", ""), added=f.get("added", ""),
                                  change=f.get("change", "same")), problem=explain(e, args), **st_text)
        check = rv.review["check"]
        warning = therapy.discrepancy_warning(check) if check["warning"] else None
        rid = pending_put(Pending("refill", argv, rv, ctx, time.monotonic(), {"warning": warning}))
        return page("review.html", rv=rv, rid=rid, kind="refill", chart=None, title="Review: refill",
                    discrepancy=warning)

    # -- confirm: the one way a reviewed change reaches the pump ---------------------------------------
    @app.post("/confirm")
    def confirm():
        s = sess()
        if (r := need("clinician")) is not None:
            return r
        p = s.pending.pop(request.form.get("review", ""), None)
        if p is None or time.monotonic() - p.created > PENDING_S:
            flash("error", "that review is no longer open (confirmed already, cancelled or too old): nothing sent; "
                           "review again")
            return redirect(url_for("interrogate"))
        rv = p.review
        argv = list(p.argv) + ["--yes"]
        if p.kind == "refill" and p.extra.get("warning"):
            if request.form.get("acknowledge") != "yes":
                pending_rid = pending_put(p)
                return page("review.html", rv=rv, rid=pending_rid, kind="refill", chart=None, title="Review: refill",
                            discrepancy=p.extra["warning"],
                            problem=Problem("cancelled", "discrepancy not acknowledged: nothing changed (tick the "
                                                         "box after checking the patient and the pump)"))
            argv.append("--accept-discrepancy")
        args = None
        try:
            args = parse(*argv)
            with pump(args) as c:
                c.context.update(p.context)
                console.still_as_reviewed(c, rv.mtype, rv.payload, rv.review)
                if p.kind == "refill":
                    done = therapy.refill_send(args, c, rv)
                    data, text = done, therapy.refill_done_text(done, rv.payload["added_nl"])
                else:
                    done = console.send_reviewed(args, c, rv.question, rv.mtype, rv.payload, rv.review)
                    data, text = (therapy.program_done if p.kind == "program" else therapy.bolus_done)(rv, done)
        except ERRORS as e:
            return page("problem.html", problem=explain(e, args), title="Not sent")
        return page("done.html", text=text, data=data, kind=p.kind)

    @app.post("/cancel")
    def cancel():
        sess().pending.pop(request.form.get("review", ""), None)
        flash("info", "cancelled: nothing changed")
        return redirect(url_for("interrogate"))

    # -- alarms ------------------------------------------------------------------------------------------
    @app.get("/alarms")
    def alarms_page():
        if (r := need("clinician")) is not None:
            return r
        args = parse("alarms")
        try:
            with pump(args) as c:
                al = c.request(lc.ALARMS)["alarms"]
                raised = reading.alarms_raised_at(c, [a[0] for a in al]) if al else {}
        except ERRORS as e:
            return page("problem.html", problem=explain(e, args), title="Alarms")
        return page("alarms.html", alarms=report.alarm_rows(al, raised))

    @app.post("/alarms/ack")
    def alarms_ack():
        if (r := need("clinician")) is not None:
            return r
        which = request.form.get("alarm", "")
        args = None
        try:
            args = parse("alarms", "--ack=%s" % which)
            with pump(args) as c:
                al = c.request(lc.ALARMS)["alarms"]
                ids = [a[0] for a in al] if which == "all" else [reading.alarm_id(which)]
                acked = reading.acknowledge(c, ids)
        except ERRORS as e:
            return page("problem.html", problem=explain(e, args), title="Alarms")
        for a in acked:
            flash("info", "acknowledged %s: %s" % (a["name"], reading.ack_text(a)))
        return redirect(url_for("alarms_page"))

    # -- event log, diary, reports ------------------------------------------------------------------------
    def log_filtered():
        f = request.args
        first = int(f["from"]) if f.get("from", "").isdigit() else 1
        last = int(f["to"]) if f.get("to", "").isdigit() else None
        text = f.get("event", "").strip().lower()
        since, until = f.get("since", "").strip(), f.get("until", "").strip()
        args = parse("log")
        with pump(args) as c:
            recs, info = read_log(c, first, last)
            info = dict(info, stroke_nl=c.identity.get("stroke_nl"))
        keep = []
        for raw, r in zip(recs, report.log_records(recs, info["stroke_nl"])):
            day = r["time"][:10]
            if text and text not in (r["event"] + " " + r["details"]).lower():
                continue
            if (since and day < since) or (until and day > until):
                continue
            keep.append(raw)
        return keep, info, {"from": f.get("from", ""), "to": f.get("to", ""), "event": f.get("event", ""),
                            "since": since, "until": until}

    @app.get("/log")
    def log():
        if (r := need("clinician")) is not None:
            return r
        try:
            recs, info, filters = log_filtered()
        except ERRORS as e:
            return page("problem.html", problem=explain(e, None), title="Event log")
        rows = report.log_records(recs, info["stroke_nl"])
        return page("log.html", records=rows, info=info, filters=filters, query=request.query_string.decode())

    @app.get("/log.csv")
    def log_csv():
        if (r := need("clinician")) is not None:
            return r
        try:
            recs, info, _ = log_filtered()
        except ERRORS as e:
            return page("problem.html", problem=explain(e, None), title="Event log")
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(report.LOG_HEADERS)
        w.writerows(report.log_rows(recs, info["stroke_nl"]))
        return Response(out.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=pump-event-log.csv"})

    @app.get("/diary")
    def diary_page():
        if (r := need("clinician")) is not None:
            return r
        args = parse("diary-list")
        try:
            with pump(args) as c:
                recs, _ = read_log(c, 1)
        except ERRORS as e:
            return page("problem.html", problem=explain(e, args), title="Pain diary")
        entries, unreadable = diary.diary_entries(recs)
        rows = [[e.seq, e.date.isoformat(), u.fmt_tod(e.tod_s), e.pain, e.activity, e.note] for e in entries]
        chart = {"points": [["%s %s" % (e.date.isoformat(), u.fmt_tod(e.tod_s)), e.pain] for e in entries]}
        return page("diary.html", rows=rows, headers=diary.DIARY_HEADERS, unreadable=unreadable, chart=chart)

    def report_files():
        d = Path(cfg.report_dir)
        return sorted(p.name for p in d.glob("*.html")) if d.is_dir() else []

    @app.get("/reports")
    def reports():
        if (r := need("clinician")) is not None:
            return r
        return page("reports.html", files=report_files(), folder=str(Path(cfg.report_dir).resolve()))

    @app.get("/reports/<name>")
    def report_file(name):
        if (r := need("clinician")) is not None:
            return r
        if name not in report_files():
            abort(404)
        resp = send_from_directory(Path(cfg.report_dir).resolve(), name)
        # The reports carry their own inline styles; no script runs in them.
        resp.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                                   "frame-ancestors 'none'")
        return resp

    # -- the patient handset --------------------------------------------------------------------------
    @app.get("/patient")
    def patient():
        if (r := need("patient")) is not None:
            return r
        args = parse("status", role="patient")
        try:
            with pump(args) as c:
                st = c.request(lc.STATUS)
        except ERRORS as e:
            return page("patient.html", problem=explain(e, args), status=None, lockout=None,
                        activities=lc.ACTIVITIES, pain_max=lc.PAIN_MAX)
        until = sess().lockout_until
        left = int(until - wall()) if until is not None and until > wall() else None
        return page("patient.html", status=st, reservoir=u.fmt_volume(st["remaining_nl"]),
                    lockout=left, lockout_until=until if left else None, activities=lc.ACTIVITIES,
                    pain_max=lc.PAIN_MAX)

    @app.post("/patient/demand")
    def patient_demand():
        if (r := need("patient")) is not None:
            return r
        args = parse("demand", role="patient")
        try:
            with pump(args) as c:
                res = c.request(lc.DEMAND)
        except ERRORS as e:
            prob = explain(e, args)
            if prob.wait_s:
                sess().lockout_until = wall() + prob.wait_s
            flash("error", "; ".join(prob.lines) if prob.lines else prob.message)
            return redirect(url_for("patient"))
        sess().lockout_until = None
        flash("info", therapy.demand_text(res))
        return redirect(url_for("patient"))

    @app.post("/patient/diary")
    def patient_diary():
        if (r := need("patient")) is not None:
            return r
        f = request.form
        args = None
        try:
            pain = f.get("pain", "")
            if not pain.strip().lstrip("-").isdigit():
                raise u.UnitError("pain score %r: give a whole number 0 to %d" % (pain, lc.PAIN_MAX))
            payload = diary.diary_payload(int(pain), f.get("activity", ""), f.get("note", ""))
            args = parse("diary", "--pain=%s" % payload["pain"], "--activity=%s" % payload["activity"],
                         "--note=%s" % payload["note"], role="patient")
            with pump(args) as c:
                res = c.request(lc.DIARY, payload)
        except ERRORS as e:
            prob = explain(e, args)
            flash("error", prob.message)
            return redirect(url_for("patient"))
        flash("info", "diary entry %d recorded" % res["seq"])
        return redirect(url_for("patient"))

    return app
