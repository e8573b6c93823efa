"""Pump settings, each reviewed before it is sent: clock, low-reservoir
threshold, alarm (next refill) date."""
from pumpctl import units as u
from pumpctl.console import EXIT_OK, emit, send_reviewed
from pumpctl.fw import link_commands as lc
from pumpctl.session import connected, session_role


def cmd_clock(args):
    new = None if args.set is None else u.parse_datetime(args.set)  # refused before a pump is reached
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        now = u.fmt_datetime(st["day"], st["tod_s"])
        if new is None:
            emit(args, {"day": st["day"], "tod_s": st["tod_s"]}, "pump clock: %s" % now)
            return EXIT_OK
        if args.set == "now":
            new = u.parse_datetime("now")  # this computer's time once the pump answered
        day, tod = new
        if not args.json:
            print("Review: pump clock %s -> %s (flex steps and periodic boluses follow the new time; "
                  "no catch-up or repeat of delivery)" % (now, u.fmt_datetime(day, tod)))
        r = send_reviewed(args, c, "Set the clock?", lc.SET_CLOCK, {"day": day, "tod_s": tod},
                          {"current": {"day": st["day"], "tod_s": st["tod_s"]}})
    emit(args, r, "pump clock set to %s" % u.fmt_datetime(r["day"], r["tod_s"]))
    return EXIT_OK


def cmd_low(args):
    vol = u.volume_nl(args.volume, "low-reservoir threshold")
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        if not args.json:
            print("Review: low-reservoir alarm at %s (now %s)" % (u.fmt_ml(vol), u.fmt_ml(st["low_nl"])))
        r = send_reviewed(args, c, "Set it?", lc.SET_LOW, {"low_nl": vol}, {"current": {"low_nl": st["low_nl"]}})
    emit(args, r, "low-reservoir alarm at %s" % u.fmt_ml(r["low_nl"]))
    return EXIT_OK


def cmd_alarm_date(args):
    day = 0 if args.date == "off" else u.parse_date(args.date)
    with connected(args, session_role(args, "clinician")) as c:
        st = c.request(lc.STATUS)
        if day and day <= st["day"]:
            raise u.UnitError("alarm date %s is not after the pump's date (%s): give the date of the next refill"
                              % (u.fmt_date(day), u.fmt_date(st["day"])))
        if not args.json:
            print("Review: alarm date %s (now %s)" % (u.fmt_date(day) if day else "off", u.fmt_date(st.get("alarm_day"))))
        r = send_reviewed(args, c, "Set it?", lc.SET_ALARM_DATE, {"day": day},
                          {"current": {"alarm_day": st.get("alarm_day") or 0}})
    emit(args, {"alarm_day": r["day"]}, "alarm date %s" % (u.fmt_date(r["day"]) if r["day"] else "off"))
    return EXIT_OK
