"""Whatever a form posts, `pumpctl web` answers with a page or a redirect
that says what was wrong: never a server error, never a traceback, and the
pump's therapy unchanged by a review."""
import pytest

from webkit import text

ODD = ["", " ", "-1", "0", "1e9", "nan", "inf", "9" * 40, "10mg/mL/h", "é" * 50, "<script>x</script>",
       "%00", "00:00", "25:61", "[]", "{}", "mg", "/day", "1,5mg/day"]
FORMS = {
    "/program/review": ("drug", "conc", "step_time", "step_rate", "periodic", "demand", "override"),
    "/bolus/review": ("dose", "over", "override"),
    "/refill/review": ("withdrawn", "added", "drug", "conc", "change", "acknowledge", "label_checked"),
    "/alarms/ack": ("alarm",),
    "/confirm": ("review",),
    "/cancel": ("review",),
    "/patient/diary": ("pain", "activity", "note"),
    "/patient/demand": ("confirm",),
    "/connect": ("port", "role"),
}
GETS = ["/log?from=-1&to=x&event=%00&since=2020-13-01&until=", "/log.csv?from=99999999999999999999",
        "/reports/..%2F..%2Fetc%2Fpasswd", "/reports/nothing.html", "/diary?x=1"]


def _bad(resp):
    body = resp.get_data(as_text=True)
    return resp.status_code >= 500 or "Traceback" in body


@pytest.mark.parametrize("path", sorted(FORMS))
def test_odd_form_values_are_answered_without_a_server_error(browser_app, pump, path):
    steps = pump.therapy()["rx"]["steps"]
    fields = FORMS[path]
    for value in ODD:
        for field in fields:
            r = browser_app.post(path, {field: value})
            assert not _bad(r), (path, field, value, r.status_code, text(r)[:400])
        r = browser_app.post(path, {f: value for f in fields})
        assert not _bad(r), (path, value, r.status_code, text(r)[:400])
    assert pump.therapy()["rx"]["steps"] == steps  # reviews and refusals send nothing


def test_odd_queries_are_answered_without_a_server_error(browser_app):
    for path in GETS:
        r = browser_app.get(path)
        assert not _bad(r) and r.status_code in (200, 302, 400, 404), (path, r.status_code, text(r)[:400])
