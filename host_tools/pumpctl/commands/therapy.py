"""Commands that change therapy, each reviewed before it is sent: program,
bolus, prime, catheter, demand, suspend, resume, maintenance, refill."""
from dataclasses import dataclass, field
from typing import Any

from pumpctl import report
from pumpctl import units as u
from pumpctl.console import EXIT_OK, Cancelled, ask, emit, interactive, note, send_reviewed, table
from pumpctl.fw import alarms, wire
from pumpctl.fw import link_commands as lc
from pumpctl.link import PumpError
from pumpctl.session import connected, earlier_drug, session_role


def rx_option(args) -> "dict[str, Any] | None":
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


def rx_from_args(args) -> "dict[str, Any]":
    rx = rx_option(args)
    if rx is None:
        raise u.UnitError("a prescription needs --drug and --conc (e.g. --drug morphine --conc 10mg/mL)")
    return rx


def projection(day, tod, total_ng, total_nl, empty_in_s, unit):
    return {"total": report.total_text(total_ng, total_nl, unit),
            "empty": u.fmt_date(u.date_after(day, tod, empty_in_s)) if empty_in_s is not None else "-"}


def rx_unit(rx, default="mg"):
    """The unit (mg or µg) of a prescription's drug."""
    return u.drug_unit(rx["drug"]) if rx and rx.get("drug") in report.limits.DRUGS else default


def know_status(c, st):
    """A refusal at the 24-hour maximum then names what the ceiling holds,
    and after a drug change in the last 24 h says it holds the earlier drug
    too (report.ceiling_text). Returns ceiling_text's `other`."""
    if st.get("ceiling_24h_ng") is not None:
        c.context.update(given_ng=st["ceiling_24h_ng"], given_drug=st.get("drug"))  # in that drug's mass
    other = report.ceiling_other(st, earlier_drug(c, st))
    if other is not None:
        c.context["other"] = other
    return other


def know_request(c, **sent):
    # A refusal then has what was sent (a bolus's shortest duration, the steps given).
    c.context["request"] = dict(sent, stroke_nl=c.identity.get("stroke_nl", 500))


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


BRIDGE_RUNNING = ("A bridge bolus is running: the catheter's earlier drug goes out first at the profile it had; "
                  "this therapy starts when it ends (`bridge bolus done` in the log).")


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


@dataclass
class Review:
    """A review before a change, built from the pump's own dry run: what the
    CLI prints (and --json/--dry-run show) and what `pumpctl web` renders;
    confirming sends `payload` as `mtype` (console.send_reviewed)."""
    title: str
    rows: "list[list[str]]"
    headers: "list[str] | None"
    notes: "list[str]"  # lines after the table (the override warning, ...)
    question: str
    mtype: int
    payload: Any
    review: "dict[str, Any]"  # the --json review, with the dry run ("check") re-checked before sending
    data: "dict[str, Any]" = field(default_factory=dict)  # what the command needs afterwards

    def text(self):
        return "%s\n%s\n" % (self.title, table(self.rows, self.headers))

    def show(self, args):
        if not args.json:
            print(self.text())
            for line in self.notes:
                print(line)


def program_review(args, c, rx) -> Review:
    """The review of a new therapy on a logged-in clinician client: current
    and new side by side, from the pump's dry run."""
    unit = u.drug_unit(rx["drug"])
    st = c.request(lc.STATUS)
    th = c.request(lc.THERAPY)
    know_status(c, st)
    know_request(c, rx=rx)
    check, soft = checked(args, c, lc.PROGRAM, {"rx": rx}, rx["drug"])
    day, tod = st["day"], st["tod_s"]
    cur = projection(day, tod, th.get("daily_ng"), th.get("max_daily_nl"), st.get("empty_in_s"),
                     rx_unit(th.get("rx"), unit))
    new = projection(day, tod, check["daily_ng"], check["max_daily_nl"], check["empty_in_s"], unit)
    return Review("Review: new therapy for pump %s (reservoir %s)" % (c.identity["serial"],
                                                                       u.fmt_volume(st["remaining_nl"])),
                  report.compare_rows(th.get("rx"), rx, cur, new, unit), list(report.COMPARE_HEADERS),
                  override_warning(args, soft, rx["drug"]) + ([BRIDGE_RUNNING] if th.get("bridging") else [])
                  + catheter_warning(th),
                  "Program this therapy%s?" % (" ABOVE the usual maximum" if soft else ""),
                  lc.PROGRAM, _with_override({"rx": rx}, soft),
                  {"current": u.labelled_rx(th.get("rx")), "check": check, "above_usual_maximum": soft is not None},
                  {"previous": th.get("rx"), "rx": rx, "unit": unit, "override": soft is not None})


def program_done(rv, done):
    """(the --json result, the line) once a reviewed program was sent."""
    soft = rv.data["override"]
    return ({"programmed": u.labelled_rx(rv.data["rx"]), "result": done, "previous": u.labelled_rx(rv.data["previous"]),
             "override": soft},
            "programmed: 24-hour maximum %s%s" % (report.total_text(done["daily_ng"], done["max_daily_nl"],
                                                                   rv.data["unit"]),
                                                  " (above the usual maximum: override logged)" if soft else ""))


def cmd_program(args):
    rx = rx_from_args(args)
    with connected(args, session_role(args, "clinician")) as c:
        rv = program_review(args, c, rx)
        rv.show(args)
        done = send_reviewed(args, c, rv.question, rv.mtype, rv.payload, rv.review)
    data, text = program_done(rv, done)
    emit(args, data, text)
    return EXIT_OK


def catheter_warning(th):
    """[the warning] for a pump with no catheter recorded (never implanted:
    `pumpctl emulate --blank`, a Pico fresh from deploy), else []: every stroke
    then counts as dose at once, which is right on the bench and wrong for an
    implanted catheter still holding saline (docs/pumpctl.md). Shown in the
    review the clinician confirms, and in its --json."""
    return [NO_CATHETER] if "catheter_nl" in th and not th["catheter_nl"] else []


NO_CATHETER = ("WARNING: no catheter is recorded on this pump: every stroke counts as dose at once. For an implanted "
               "pump, stop here and implant it first (`pumpctl implant`), or record its catheter (`pumpctl catheter "
               "--segments ...`) and prime it (`pumpctl prime`): until then the catheter's saline would be booked as "
               "drug. Go on only for a pump on the bench, with no catheter.")


def current_rx(c):
    th = c.request(lc.THERAPY)
    if th.get("rx") is None:
        raise PumpError({"code": wire.LIMIT, "name": "LIMIT", "limit": "not_programmed",
                         "reason": "no therapy programmed"})
    know_therapy(c, th["rx"])
    return th["rx"]


def know_therapy(c, rx):
    # A refusal then speaks the drug's own unit (mg or µg) and concentration.
    if rx:
        c.context.update(drug=rx["drug"], conc=rx["conc"])


def bolus_reviewed(args, c, dose, dur) -> Review:
    """The review of a clinician bolus on a logged-in clinician client, from the pump's dry run."""
    rx = current_rx(c)
    st = c.request(lc.STATUS)
    other = know_status(c, st)
    know_request(c, bolus=[dose, dur])
    unit = u.drug_unit(rx["drug"])
    req = {"dose_ng": dose, "duration_s": dur}
    check, soft = checked(args, c, lc.BOLUS, req, rx["drug"])
    review = bolus_review(rx, st, dose, dur, check, c.identity.get("stroke_nl", 500), other)
    return Review("Review: clinician bolus on pump %s" % c.identity["serial"], review, None,
                  override_warning(args, soft, rx["drug"]) + catheter_warning(c.request(lc.THERAPY)),
                  "Start this bolus%s?" % (" ABOVE the usual maximum" if soft else ""), lc.BOLUS,
                  _with_override(req, soft), {"rows": dict(review), "check": check,
                                              "above_usual_maximum": soft is not None},
                  {"dose": dose, "dur": dur, "unit": unit, "check": check, "override": soft is not None})


def bolus_done(rv, r):
    """(the --json result, the line) once a reviewed bolus was sent."""
    d = rv.data
    given = r.get("dose_ng", d["check"].get("dose_ng", d["dose"]))
    return dict(r, override=d["override"]), "bolus started: %s, %d strokes, %s over %s%s" % (
        u.fmt_mass(given, d["unit"]), r["strokes"], u.fmt_volume(r["volume_nl"]), u.fmt_duration(d["dur"]),
        " (above the usual maximum: override logged)" if d["override"] else "")


def cmd_bolus(args):
    dose = u.mass_ng(args.dose, "bolus dose")
    dur = u.duration_s(args.over, "bolus duration")
    with connected(args, session_role(args, "clinician")) as c:
        rv = bolus_reviewed(args, c, dose, dur)
        rv.show(args)
        r = send_reviewed(args, c, rv.question, rv.mtype, rv.payload, rv.review)
    data, text = bolus_done(rv, r)
    emit(args, data, text)
    return EXIT_OK


def bolus_review(rx, st, dose, dur, check, stroke_nl, other=None):
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
        rows.append([report.CEILING_LABEL, report.ceiling_text(rx["drug"], st["ceiling_24h_ng"], other)])
    return rows


def cmd_prime(args):
    vol = u.volume_nl(args.volume, "priming volume")
    dur = u.duration_s(args.over, "priming duration")
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        th = c.request(lc.THERAPY)
        know_therapy(c, th.get("rx"))
        other = know_status(c, st)
        know_request(c, priming=vol)
        req = {"volume_nl": vol, "duration_s": dur}
        check = c.request(lc.PRIME, dict(req, check=True))
        review = prime_review(th, st, vol, dur, check, other)
        if not args.json:
            print("Review: priming bolus on pump %s\n%s\n" % (c.identity["serial"], table(review)))
        r = send_reviewed(args, c, "Start priming?", lc.PRIME, req, {"rows": dict(review), "check": check})
    emit(args, r, "priming started: %d strokes, %s over %s" % (r["strokes"], u.fmt_volume(r["volume_nl"], 4),
                                                               u.fmt_duration(dur)))
    return EXIT_OK


def prime_review(th, st, vol, dur, check, other=None):
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
        rows.append([report.CEILING_LABEL, report.ceiling_text(rx["drug"], st["ceiling_24h_ng"], other)])
    return rows


def cmd_catheter(args):
    """A catheter revision: the IMPLANT `catheter` step on an implanted pump.
    The new catheter is not primed until `pumpctl prime`."""
    segments = u.catheter_segments(args.segments)
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
        if th.get("bridging"):  # the pump ends it: the earlier drug leaves with the old catheter
            review.append(["bridge bolus", "ends: the old catheter takes the earlier drug with it; the new "
                                           "therapy's profile runs from now on"])
        if not args.json:
            print("Review: catheter revision on pump %s\n%s\n" % (c.identity["serial"], table(review)))
        r = send_reviewed(args, c, "Record this catheter revision?", lc.IMPLANT,
                          {"step": "catheter", "segments": segments}, {"rows": dict(review)})
    emit(args, dict(r, next=prime_hint(r["catheter_nl"])), "catheter revision recorded: %s, not primed; next: %s"
         % (u.fmt_volume(r["catheter_nl"], 4), prime_hint(r["catheter_nl"])))
    return EXIT_OK


def prime_hint(volume_nl):
    """`pumpctl prime` for a catheter volume, at a rate well inside the mechanism's (about 12 mL/day)."""
    minutes = -(-volume_nl * 1440 // 12_000_000)
    minutes = max(10, -(-minutes // 5) * 5)
    return "pumpctl prime --volume %smL --over %dmin" % (u.ml_number(volume_nl), minutes)


def cmd_demand(args):
    with connected(args, session_role(args, "patient")) as c:
        r = c.request(lc.DEMAND)
    emit(args, r, demand_text(r))
    return EXIT_OK


def demand_text(r):
    volume = u.fmt_volume(r["volume_nl"])
    if r.get("dose_ng") is not None and r.get("drug"):  # earlier firmware: the volume only
        volume = "%s (%s)" % (u.fmt_mass(r["dose_ng"], u.drug_unit(r["drug"])), volume)
    return "demand bolus started: %s over %s" % (volume, u.fmt_duration(r["duration_s"]))


BACLOFEN_WARNING = "abrupt withdrawal of intrathecal baclofen can be fatal."
MAINTENANCE_WARNING = "Delivery stops until the board is powered up again."


def cmd_suspend(args):
    with connected(args, session_role(args, "clinician")) as c:
        rx = c.request(lc.THERAPY).get("rx")
        st = c.request(lc.STATUS)
        warning = BACLOFEN_WARNING if rx and rx["drug"] == "baclofen" else None
        if not args.json:
            print("Review: suspend therapy. Delivery stops until a clinician resumes it.")
            if st.get("bolus"):  # the pump cancels it: resuming restarts the basal only
                print("The bolus in progress (%s) is cancelled; resuming does not restart it."
                      % report.bolus_state(st["bolus"], c.identity, st.get("conc_ng_ml"),
                                           u.drug_unit(rx["drug"]) if rx else "mg"))
            if warning:
                print("WARNING: %s" % warning)
        r = send_reviewed(args, c, "Suspend?", lc.SUSPEND, None, {"current": u.labelled_rx(rx), "warning": warning})
    r.setdefault("saved", True)  # firmware before 0.2.x refused a suspend it could not save
    text = "pump %s" % r["state"]
    if r["saved"] is False:  # a stop is obeyed even when the pump's flash cannot save it
        text += "\n" + NOT_SAVED % "the suspend"
    emit(args, r, text)
    return EXIT_OK


NOT_SAVED = ("WARNING: %s is in effect, but the pump's flash could not save it (flash fault): a reset of the pump "
             "before its next successful save would bring back the state before it. Stay with the patient, watch "
             "the pump, and plan to replace it.")


def cmd_maintenance(args):
    with connected(args, session_role(args, "clinician")) as c:
        if not args.json:
            print("Review: stop the pump and give its USB port back to the REPL (mpremote, deploy).")
            print(MAINTENANCE_WARNING)
        r = send_reviewed(args, c, "Enter maintenance?", lc.MAINTENANCE, None, {"warning": MAINTENANCE_WARNING})
    emit(args, r, "pump stopped; its REPL answers on the port until the next power-up")
    return EXIT_OK


def cmd_resume(args):
    with connected(args, session_role(args, "clinician")) as c:
        th = c.request(lc.THERAPY)
        if not args.json and th.get("rx") is None:
            print("Review: clear the stall or occlusion alarm (resolved); no therapy is programmed, so nothing "
                  "starts (an implant test goes on with `pumpctl implant ... --resume`)\n")
        elif not args.json:
            print("Review: resume this therapy (no catch-up of what was missed):\n%s\n" % report.therapy_text(th))
        r = send_reviewed(args, c, "Resume?", lc.RESUME, None, {"current": u.labelled_rx(th.get("rx"))})
    emit(args, r, "pump %s" % r["state"])
    return EXIT_OK


def cmd_refill(args):
    withdrawn = u.volume_nl(args.withdrawn, "withdrawn volume")
    added = u.volume_nl(args.added, "added volume")
    rx = rx_option(args)
    with connected(args, session_role(args, "clinician")) as c:
        done = refill_workflow(args, c, withdrawn, added, rx)
    emit(args, done, refill_done_text(done, added))
    return EXIT_OK


def refill_done_text(done, added):
    extra = ""
    if done.get("drug_changed"):  # bridge_strokes 0: none; absent: a pump that does not say
        extra += ("; drug or concentration changed, with no bridge (no catheter volume recorded)"
                  if done.get("bridge_strokes") == 0 else
                  "; drug or concentration changed: the catheter's old drug is pushed out first (bridge bolus)")
    if done.get("bolus_cancelled"):
        extra += "; the running bolus was cancelled (it was for the old drug)"
    if done.get("override"):
        extra += "; above the usual maximum: override logged"
    return "refill recorded: %s in the reservoir; discrepancy %s%s%s" % (
        u.fmt_ml(added), u.fmt_ml(done["discrepancy_nl"], signed=True),
        " (acknowledged)" if done["warning"] else "", extra)


def refill_workflow(args, c, withdrawn, added, rx):
    """The guided refill on a logged-in clinician client: dry-run check,
    review, discrepancy acknowledgement, confirm, refill (with the new
    prescription rx, or None). Returns the pump's refill reply. Raises
    Cancelled before anything is changed."""
    rv = refill_review(args, c, withdrawn, added, rx)
    rv.show(args)
    return refill_send(args, c, rv)


def bridge_text(strokes, stroke_nl):
    """What a drug change's bridge does, from the pump's `bridge_strokes`
    (None: a pump that does not say)."""
    if strokes == 0:
        return ("NO BRIDGE: the pump has no catheter volume recorded, so the catheter's old drug goes out at the new "
                "rate; record the catheter first (`pumpctl catheter`) to have it bridged")
    held = " (%s)" % u.fmt_volume(strokes * stroke_nl, 4) if strokes else ""
    return "the catheter's old drug%s is pushed out first at the old rate (bridge bolus, automatic)" % held


def refill_review(args, c, withdrawn, added, rx) -> Review:
    """The review of a refill (and new prescription rx, or None) on a
    logged-in clinician client, from the pump's dry run."""
    st = c.request(lc.STATUS)
    th = c.request(lc.THERAPY)
    know_therapy(c, rx or th.get("rx"))
    know_status(c, st)
    if rx is not None:
        know_request(c, rx=rx)
    req = {"withdrawn_nl": withdrawn, "added_nl": added}
    if rx is not None:
        req["rx"] = rx
    new_rx = rx or th.get("rx")
    check, soft = checked(args, c, lc.REFILL, req, new_rx["drug"] if new_rx else None)
    unit = u.drug_unit(new_rx["drug"] if new_rx else st.get("drug"))
    old = th.get("rx")
    changed = check.get("drug_changed", bool(rx and old and (old["drug"], old["conc"]) != (rx["drug"], rx["conc"])))
    review = [
        ["expected in the reservoir", u.fmt_ml(check["expected_nl"])],
        ["withdrawn", u.fmt_ml(withdrawn)],
        ["discrepancy", "%s%s" % (u.fmt_ml(check["discrepancy_nl"], signed=True),
                                  "  WARNING" if check["warning"] else "")],
        ["added", "%s of %s" % (u.fmt_ml(added), _drug_text(new_rx, unit))],
    ]
    if changed and old:
        what = "DRUG" if old["drug"] != new_rx["drug"] else "CONCENTRATION"
        was = _drug_text(old, u.drug_unit(old["drug"]))
        review.append(["%s CHANGE" % what, "was %s; %s" % (was, bridge_text(check.get("bridge_strokes"),
                                                                          c.identity["stroke_nl"]))])
    elif old and new_rx:
        review.append(["drug", "the same as in the pump"])
    if check.get("bolus_cancelled"):
        review.append(["running bolus", "CANCELLED by the change (its strokes were for the old drug)"])
    notes = []
    compare_rows = None
    empty = None
    if rx is not None:
        day, tod = st["day"], st["tod_s"]
        # Each column in its own drug's unit: morphine in mg beside baclofen in µg.
        cur = projection(day, tod, th.get("daily_ng"), th.get("max_daily_nl"), st.get("empty_in_s"),
                         rx_unit(old, unit))
        new = projection(day, tod, check["daily_ng"], check["max_daily_nl"], check["empty_in_s"], unit)
        compare_rows = report.compare_rows(old, rx, cur, new, unit)
        notes.append("New prescription:\n%s\n" % table(compare_rows, list(report.COMPARE_HEADERS)))
    elif check.get("empty_in_s") is not None:
        empty = u.fmt_date(u.date_after(st["day"], st["tod_s"], check["empty_in_s"]))
        notes.append("projected empty after refill: %s\n" % empty)
    warning = override_warning(args, soft, new_rx["drug"] if new_rx else "")
    return Review("Review: refill of pump %s" % c.identity["serial"], review, None,
                  notes + warning + catheter_warning(th),
                  "Record this refill%s?" % (" ABOVE the usual maximum" if soft else ""), lc.REFILL,
                  _with_override(req, soft), {"rows": dict(review), "check": check,
                                              "above_usual_maximum": soft is not None},
                  {"override": soft is not None, "compare_rows": compare_rows, "projected_empty": empty,
                   "override_warning": warning, "old": old, "rx": new_rx, "drug_changed": bool(changed)})


def refill_send(args, c, rv):
    """The end of a reviewed refill: the discrepancy acknowledged (if the
    pump warns), confirmed, sent; the pump's discrepancy alarm acknowledged
    with it. Returns the pump's refill reply."""
    check = rv.review["check"]
    if check["warning"] and not getattr(args, "dry_run", False):
        acknowledge_discrepancy(args, check)
    done = send_reviewed(args, c, rv.question, rv.mtype, rv.payload, rv.review)
    if done["warning"]:
        # The clinician has acknowledged the warning: so does the pump.
        c.request(lc.ACK_ALARM, {"alarm": alarms.REFILL_DISCREPANCY})
    return dict(done, override=rv.data["override"])


def _drug_text(rx, unit):
    return "%s %s" % (rx["drug"], u.fmt_conc(rx["conc"], unit)) if rx else "-"


def discrepancy_warning(check):
    """The warning a refill discrepancy gives (the pump's dry run says when)."""
    return ("WARNING: withdrawn %s but %s expected (%s). Possible over- or under-infusion, or a pocket "
            "fill at the last refill: check the patient and the pump before going on."
            % (u.fmt_ml(check["withdrawn_nl"]), u.fmt_ml(check["expected_nl"]),
               u.fmt_ml(check["discrepancy_nl"], signed=True)))


def acknowledge_discrepancy(args, check):
    note(discrepancy_warning(check))
    if args.accept_discrepancy:
        return
    if not interactive():
        raise Cancelled("discrepancy not acknowledged: nothing changed (add --accept-discrepancy after checking)")
    if ask("Type 'acknowledge' to go on: ").strip().lower() != "acknowledge":
        raise Cancelled("discrepancy not acknowledged: nothing changed")

