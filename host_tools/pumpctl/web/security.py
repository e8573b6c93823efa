"""The rules every request to `pumpctl web` passes (docs/web.md, "Security").

1. The server listens on 127.0.0.1 only, and answers only requests whose Host
   is its own (127.0.0.1:PORT or localhost:PORT): no DNS rebinding.
2. A fresh random token per launch, in the URL pumpctl prints. A request
   without it, or without the session cookie it was exchanged for, is
   refused (403). The token is swapped at once for a session cookie
   (HttpOnly, SameSite=Strict) and removed from the address bar.
3. Sessions expire: after IDLE_S without a request and MAX_AGE_S after the
   token was used; then the printed URL must be opened again.
4. Every state-changing request is a POST from this origin: its Origin (or,
   without one, its Referer) must be the server's own, and Sec-Fetch-Site,
   when the browser sends it, same-origin.
5. Every POST carries the session's CSRF token (form field `csrf` or header
   X-CSRF-Token), compared in constant time.
6. No key ever reaches the browser: the pages are rendered from the pump's
   replies; the keys stay in the key store and in session.connected().
7. Every answer: Content-Security-Policy (scripts and styles from this
   origin only, no framing), no caching, no referrer.
"""
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

COOKIE = "pumpctl_web"
IDLE_S = 15 * 60
MAX_AGE_S = 8 * 3600
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store", "Cross-Origin-Opener-Policy": "same-origin",
           "Cross-Origin-Resource-Policy": "same-origin"}


@dataclass
class WebSession:
    sid: str
    csrf: str
    created: float
    last_seen: float
    role: "str | None" = None  # clinician or patient, chosen at the connect screen
    port: "str | None" = None  # the pump chosen at the connect screen
    pending: "dict[str, Any]" = field(default_factory=dict)  # reviews waiting for their confirmation
    flash: "list[tuple[str, str]]" = field(default_factory=list)
    lockout_until: "float | None" = None  # a demand bolus refused in lockout: allowed again then (wall clock)


class Guard:
    """The launch token, the sessions and the checks of rules 1-5."""

    def __init__(self, token=None, idle_s=IDLE_S, max_age_s=MAX_AGE_S, clock: "Callable[[], float]" = time.monotonic):
        self.token = token or secrets.token_urlsafe(32)
        self.idle_s, self.max_age_s, self.clock = idle_s, max_age_s, clock
        self.sessions: "dict[str, WebSession]" = {}
        self.hosts: "set[str]" = set()
        self.lock = threading.Lock()

    def bind(self, port):
        """The origin of the server once it listens on 127.0.0.1:port."""
        self.hosts = {"127.0.0.1:%d" % port, "localhost:%d" % port}

    def origins(self):
        return {"http://%s" % h for h in self.hosts}

    def host_ok(self, host):
        return host in self.hosts

    def token_ok(self, given):
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.token.encode())

    def new_session(self):
        now = self.clock()
        s = WebSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        with self.lock:
            self.sessions[s.sid] = s
        return s

    def session(self, sid):
        """The live session of a cookie, or (None, why)."""
        if not sid:
            return None, "missing"
        with self.lock:
            s = self.sessions.get(sid)
            if s is None:
                return None, "unknown"
            now = self.clock()
            if now - s.last_seen > self.idle_s or now - s.created > self.max_age_s:
                del self.sessions[sid]
                return None, "expired"
            s.last_seen = now
            return s, ""

    def end(self, sid):
        with self.lock:
            self.sessions.pop(sid, None)

    def same_origin(self, origin, referer, fetch_site):
        """Rule 4: (ok, why not)."""
        if fetch_site and fetch_site not in ("same-origin", "none"):
            return False, "Sec-Fetch-Site is %s" % fetch_site
        if origin:
            return (origin in self.origins(), "Origin %s is not this server" % origin)
        if referer:
            ok = any(referer == o or referer.startswith(o + "/") for o in self.origins())
            return ok, "Referer is not this server"
        return False, "neither Origin nor Referer"

    @staticmethod
    def csrf_ok(session, given):
        return isinstance(given, str) and bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
