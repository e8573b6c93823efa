"""Helpers of the `pumpctl web` tests: the app on a pump, and a client that
behaves as the page does (token, cookie, CSRF token, Origin)."""
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from pumpctl.web.app import WebConfig, create_app  # noqa: E402
from pumpctl.web.security import Guard  # noqa: E402

ORIGIN = "http://127.0.0.1:5555"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make_app(pump=None, tmp_path=None, clock=None, **cfg):
    guard = Guard(clock=clock) if clock else Guard()
    guard.bind(5555)
    config = WebConfig(pump=pump.port if pump else "/dev/null-no-pump",
                       keystore=str(pump.keystore) if pump else None,
                       state=str(tmp_path / "state") if tmp_path else None, **cfg)
    return create_app(config, guard), guard


class Browser:
    """The Flask test client as a same-origin page: the token exchanged for
    the cookie, and the CSRF token and Origin sent with every POST."""

    def __init__(self, app, guard):
        self.app, self.guard = app, guard
        self.client = app.test_client()
        r = self.client.get("/?token=" + guard.token, base_url=ORIGIN)
        assert r.status_code == 302
        self.sid = self.client.get_cookie("pumpctl_web", domain="127.0.0.1").value

    def get(self, path, **kw):
        return self.client.get(path, base_url=ORIGIN, **kw)

    def csrf(self):
        return self.guard.sessions[self.sid].csrf

    def post(self, path, data=None, csrf=True, origin=ORIGIN, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf", self.csrf())
        headers = kw.pop("headers", {})
        if origin:
            headers.setdefault("Origin", origin)
        return self.client.post(path, data=data, base_url=ORIGIN, headers=headers, **kw)

    def connect(self, port, role="clinician"):
        r = self.post("/connect", {"port": port, "role": role})
        assert r.status_code == 302, r.get_data(as_text=True)
        return r


def text(resp):
    """A page's text, tags removed and spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", resp.get_data(as_text=True)))
