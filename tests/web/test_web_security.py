"""`pumpctl web`'s security rules (pumpctl/web/security.py, docs/web.md), a
test per rule: 127.0.0.1 only, its own Host only, the launch token, the
session cookie and its expiry, same-origin and CSRF checks on every POST,
the headers, and no key ever in a page."""
import base64

import pytest

from webkit import ORIGIN, Browser, Clock, make_app, text
from pumpctl.keystore import KeyStore
from pumpctl.web import security


@pytest.fixture
def app_guard(tmp_path):
    return make_app(None, tmp_path)


def post_routes(app):
    return sorted(r.rule for r in app.url_map.iter_rules() if "POST" in (r.methods or ()))


def get_routes(app):
    return sorted(r.rule for r in app.url_map.iter_rules()
                  if "GET" in (r.methods or ()) and "<" not in r.rule)


# -- rule 1: 127.0.0.1, and its own Host only ------------------------------------------------
def test_the_server_listens_on_127_0_0_1_only(served):
    from pumpctl.commands import web
    _, _, _, server = served
    assert web.HOST == "127.0.0.1"
    assert server.socket.getsockname()[0] == "127.0.0.1"


def test_a_request_for_another_host_is_refused(app_guard):
    app, guard = app_guard
    c = app.test_client()
    for host in ("evil.example:5555", "127.0.0.1:6666", "192.168.1.10:5555"):
        r = c.get("/?token=" + guard.token, headers={"Host": host})
        assert r.status_code == 421, host
    assert not guard.sessions


# -- rule 2: the launch token ----------------------------------------------------------------------
def test_every_launch_has_a_fresh_long_token():
    tokens = {security.Guard().token for _ in range(20)}
    assert len(tokens) == 20 and all(len(t) >= 40 for t in tokens)


@pytest.mark.parametrize("path", ["/", "/connect", "/interrogate", "/static/app.js", "/log.csv", "/patient"])
def test_requests_without_the_token_are_refused(app_guard, path):
    app, _ = app_guard
    r = app.test_client().get(path, base_url=ORIGIN)
    assert r.status_code == 403 and "token" in r.get_data(as_text=True)


def test_a_wrong_token_is_refused(app_guard):
    app, guard = app_guard
    r = app.test_client().get("/?token=" + guard.token[:-1] + "x", base_url=ORIGIN)
    assert r.status_code == 403 and not guard.sessions


def test_the_token_is_swapped_for_a_strict_http_only_cookie_and_leaves_the_address_bar(app_guard):
    app, guard = app_guard
    r = app.test_client().get("/connect?token=" + guard.token, base_url=ORIGIN)
    assert r.status_code == 302 and r.headers["Location"] == "/connect"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert guard.token not in cookie


def test_a_forged_cookie_is_refused(app_guard):
    app, _ = app_guard
    c = app.test_client()
    c.set_cookie(security.COOKIE, "made-up", domain="127.0.0.1")
    assert c.get("/connect", base_url=ORIGIN).status_code == 403


# -- rule 3: sessions expire ---------------------------------------------------------------------
def test_a_session_expires_after_the_idle_time(tmp_path):
    clock = Clock()
    app, guard = make_app(None, tmp_path, clock=clock)
    b = Browser(app, guard)
    clock.t += security.IDLE_S - 1
    assert b.get("/connect").status_code == 200  # each request keeps it alive
    clock.t += security.IDLE_S + 1
    r = b.get("/connect")
    assert r.status_code == 401 and "expired" in r.get_data(as_text=True)
    assert b.get("/connect").status_code == 403  # gone for good: the printed address again


def test_a_session_expires_after_its_maximum_age_even_in_use(tmp_path):
    clock = Clock()
    app, guard = make_app(None, tmp_path, clock=clock)
    b = Browser(app, guard)
    while clock.t < 1000 + security.MAX_AGE_S - 600:
        clock.t += 600
        assert b.get("/connect").status_code == 200
    clock.t += 601
    assert b.get("/connect").status_code == 401


def test_ending_the_session(tmp_path):
    app, guard = make_app(None, tmp_path)
    b = Browser(app, guard)
    assert b.post("/logout").status_code == 200
    assert b.get("/connect").status_code == 403


# -- rules 4 and 5: same origin and CSRF on every POST ---------------------------------------------------
def test_every_state_changing_route_is_post_only(app_guard):
    app, _ = app_guard
    posts = post_routes(app)
    assert {"/connect", "/confirm", "/cancel", "/alarms/ack", "/patient/demand", "/patient/diary", "/logout",
            "/program/review", "/bolus/review", "/refill/review"} <= set(posts)
    b = Browser(*app_guard)
    for rule in posts:
        if rule not in get_routes(app):
            assert b.get(rule).status_code == 405, rule


def test_every_post_without_the_csrf_token_is_refused(app_guard):
    app, guard = app_guard
    b = Browser(app, guard)
    for rule in post_routes(app):
        r = b.post(rule, {"port": "x", "role": "clinician"}, csrf=False)
        assert r.status_code == 403 and "CSRF" in r.get_data(as_text=True), rule
        r = b.post(rule, {"csrf": "wrong", "port": "x"})
        assert r.status_code == 403 and "CSRF" in r.get_data(as_text=True), rule


def test_the_csrf_token_of_another_session_is_refused(app_guard):
    app, guard = app_guard
    a, b = Browser(app, guard), Browser(app, guard)
    assert a.csrf() != b.csrf()
    r = b.post("/logout", {"csrf": a.csrf()})
    assert r.status_code == 403


def test_the_csrf_token_in_a_header_is_accepted(app_guard):
    b = Browser(*app_guard)
    r = b.post("/logout", csrf=False, headers={"X-CSRF-Token": b.csrf()})
    assert r.status_code == 200


@pytest.mark.parametrize("headers, ok", [
    ({"Origin": "http://evil.example"}, False),
    ({"Origin": "http://127.0.0.1:6666"}, False),
    ({"Origin": "null"}, False),
    ({}, False),  # neither Origin nor Referer
    ({"Referer": "http://evil.example/connect"}, False),
    ({"Referer": "http://127.0.0.1:5555.evil.example/"}, False),
    ({"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"}, False),
    ({"Origin": ORIGIN, "Sec-Fetch-Site": "same-site"}, False),
    ({"Referer": ORIGIN + "/connect"}, True),
    ({"Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}, True),
    ({"Origin": "http://localhost:5555"}, True),
])
def test_posts_from_another_origin_are_refused(app_guard, headers, ok):
    b = Browser(*app_guard)
    r = b.post("/logout", origin=None, headers=headers)
    assert (r.status_code == 200) == ok, r.get_data(as_text=True)


# -- rule 7: headers ----------------------------------------------------------------------------------
def test_every_answer_forbids_framing_caching_and_foreign_scripts(app_guard):
    app, guard = app_guard
    b = Browser(app, guard)
    for r in (b.get("/connect"), b.get("/static/app.js"), app.test_client().get("/", base_url=ORIGIN)):
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
        assert r.headers["Referrer-Policy"] == "same-origin"  # "no-referrer" would make Chromium send Origin: null


def test_no_inline_script_in_any_page(app_guard):
    # The CSP allows scripts from this origin only: data goes in application/json blocks.
    import re
    from pathlib import Path
    from pumpctl.web import app as webapp
    for f in (Path(webapp.__file__).parent / "templates").glob("*.html"):
        for tag in re.findall(r"<script[^>]*>", f.read_text()):
            assert "src=" in tag or 'type="application/json"' in tag, (f.name, tag)
        assert " style=" not in f.read_text() and "onclick" not in f.read_text(), f.name


# -- rule 6: no key ever reaches the browser --------------------------------------------------------------
def test_no_key_in_any_page(pump, tmp_path):
    app, guard = make_app(pump, tmp_path)
    b = Browser(app, guard)
    b.connect(pump.port)
    store = KeyStore(pump.keystore)
    keys = [store.get(pump.serial, role) for role in ("clinician", "patient")]
    forms = [k.hex() for k in keys] + [k.hex().upper() for k in keys]
    forms += [base64.b64encode(k).decode() for k in keys] + [base64.urlsafe_b64encode(k).decode() for k in keys]
    pages = [b.get(p) for p in ("/connect", "/interrogate", "/program", "/alarms", "/log", "/log.csv", "/diary",
                                "/refill", "/bolus", "/reports")]
    pages.append(b.post("/program/review", {"drug": "morphine", "conc": "10mg/mL", "step_time": "00:00",
                                             "step_rate": "4mg/day"}))
    b.connect(pump.port, "patient")
    pages.append(b.get("/patient"))
    for r in pages:
        body = r.get_data()
        assert r.status_code == 200, r.request.path
        for k in keys:
            assert k not in body
        for f in forms:
            assert f.encode() not in body, r.request.path
        assert all(k.hex() not in str(v) for v in r.headers.values() for k in keys)
    # and no key in the server's session either: only ids, the CSRF token, the chosen port and role
    s = guard.sessions[b.sid]
    assert not any(k.hex() in repr(s) or repr(k) in repr(s) for k in keys)


def test_only_listed_pumps_can_be_chosen(pump, tmp_path):
    app, guard = make_app(pump, tmp_path)
    b = Browser(app, guard)
    r = b.post("/connect", {"port": "socket://evil.example:23", "role": "clinician"})
    assert r.status_code == 302 and guard.sessions[b.sid].port is None
    assert "choose one of the pumps listed" in text(b.get("/connect"))


def test_pumpctl_web_prints_a_tokened_127_0_0_1_address_and_stops_with_its_emulator(tmp_path):
    # What `make web` runs: the emulator and the page together.
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request
    env = dict(os.environ, PUMPCTL_STATE=str(tmp_path / "state"), PUMPCTL_KEYSTORE=str(tmp_path / "keys.json"))
    proc = subprocess.Popen([sys.executable, "-m", "pumpctl", "web", "--port", "emulator", "--virtual"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=([\w-]{40,})", lines[1])
        assert m, lines
        base = "http://127.0.0.1:%s" % m.group(1)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/connect", timeout=10)
        assert e.value.code == 403

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **kw):
                return None
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.build_opener(NoRedirect).open("%s/?token=%s" % (base, m.group(2)), timeout=10)
        assert e.value.code == 302 and "pumpctl_web=" in e.value.headers["Set-Cookie"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    assert "provisioned" in (proc.stderr.read() if proc.stderr else "")
    assert not (tmp_path / "state" / "port.json").exists()  # the emulator stopped with it
