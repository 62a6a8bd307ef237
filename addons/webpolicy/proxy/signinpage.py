"""The gateway's sign-in page, for networks without proxy logins (policy.yaml's `sign_in:`).

A client the policy says must sign in (every transparent-mode client, and clients in
`sign_in.networks`) is identified by a session on its address (identity/sessions.py):
- `begin` runs first in `requestheaders` and `http_connect`.  The reserved paths under
  /.webpolicy/ are the gateway's own on every host and are never forwarded: a GET of the
  sign-in or sign-out form is answered at once; a POST is marked and answered in `request`,
  where its body is.  Otherwise the address's session (from the store's short in-process
  cache, or the database in a worker thread) puts its person on the flow, as a proxy login
  does (`SignedInUser` with method "session", so records say `identified_by: session`); with
  none the flow is marked as waiting for a sign-in.
- The request is then decided as any other: statutory and block rules apply before sign-in
  too (with the profile of an unknown client), so a blocked address gets the block page,
  recorded, never the sign-in page.  Only a request that would go on is replaced (`serve`):
  over HTTPS (intercepted) by the sign-in page itself, status 511; from plain HTTP by a
  redirect to the sign-in page on the same host over HTTPS, so a password never crosses the
  network in clear.  Nothing upstream is contacted before sign-in: raw bytes in a tunnel
  (which get no page) are refused without a session (`person`, asked by the add-on's
  tcp_start), and decided as the session's person with one.
- The form posts username and password to the same origin; they are checked by the same
  path as proxy logins (signin.SignIn.check: throttled per address, cached, the directory
  in a worker thread), never stored, logged or put in a record.  Each form carries a token
  bound to the client address and its time (sessions.form_token; CSRF): a page elsewhere
  cannot sign a client in or out.  Every page is no-store, framed by nobody, with a CSP
  that allows no script and only its own inline style.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import ipaddress
import logging
import re
import urllib.parse
from collections.abc import Awaitable
from html import escape
from pathlib import Path

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from webpolicy.identity.directory import SignedInUser
from webpolicy.identity.sessions import (
    Session,
    SessionStore,
    SessionStoreError,
    form_token,
    token_ok,
)
from webpolicy.policy.model import Policy, SignInSettings
from webpolicy.proxy.flows import client_ip, make_response
from webpolicy.proxy.gate import SIGNED_IN_USER, Gate
from webpolicy.proxy.signin import SignIn
from webpolicy.safeguarding.safetext import encodable

log = logging.getLogger("webpolicy")

PREFIX = "/.webpolicy/"
SIGN_IN = "/.webpolicy/sign-in"
SIGN_OUT = "/.webpolicy/sign-out"
STORE_FILE = "sign-in-sessions.sqlite3"   # in logging.directory: 0700, the proxy's own
SESSION = "webpolicy_session"             # flow.metadata: the client's Session (block page)
WAITING = "webpolicy_sign_in_waiting"     # flow.metadata: no session, sign-in page due
FORM = "webpolicy_sign_in_form"           # flow.metadata: a POST to answer in `request`
FORM_LIMIT = 4096                         # bytes of a posted form
PURGE_EVERY = 100                         # sign-ins between deletions of expired sessions

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;"
          "color:#222}label{display:block;margin-top:1rem}input{width:100%;padding:.5rem;"
          "font-size:1rem;box-sizing:border-box}button{margin-top:1.2rem;padding:.6rem 1.2rem;"
          "font-size:1rem}.note{color:#a00}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # same-origin, not no-referrer: with no-referrer a browser posts the form with "Origin:
    # null", which the same-origin check refuses.
    (b"referrer-policy", b"same-origin"),
]

_CSP = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'")
_SAFE_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")

_MESSAGES = {
    "refused": "That username and password were not accepted. Try again.",
    "throttled": "Too many failed sign-ins from this device. Wait a minute, then try again.",
    "unavailable": "The web filter cannot check sign-ins right now (the college directory "
                   "cannot be reached). Please try again in a few minutes, or ask the IT "
                   "helpdesk.",
    "expired": "This sign-in form had expired. Please sign in again.",
}
_STATUS = {"refused": 403, "throttled": 429, "unavailable": 503, "expired": 403}


class SignInPage:
    def __init__(self, gate: Gate, signin: SignIn) -> None:
        self.gate = gate
        self.signin = signin
        self.store: SessionStore | None = None
        self._store_path: Path | None = None
        # One thread: the store's one SQLite connection is used by one thread at a time.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "webpolicy-sessions")
        self._sign_ins = 0

    # -- the policy ---------------------------------------------------------------------------

    def install(self, policy: Policy) -> None:
        """Open the session store in the policy's log directory (start-up or the reload
        thread, never the event loop).  A store that cannot be opened refuses the policy."""
        if policy.sign_in is None:
            return
        path = Path(policy.logging.directory) / STORE_FILE
        if path != self._store_path:
            store = SessionStore(path)                  # raises SessionStoreError
            self.store, self._store_path = store, path

    def settings(self) -> SignInSettings | None:
        engine = self.gate.engine
        return engine.policy.sign_in if engine is not None and self.store is not None else None

    def covers(self, client) -> bool:
        """Whether this client connection must sign in on the page."""
        settings = self.settings()
        if settings is None:
            return False
        if settings.transparent and isinstance(client.proxy_mode, mode_specs.TransparentMode):
            return True
        if not settings.networks or not client.peername:
            return False
        try:
            address = ipaddress.ip_address(client.peername[0].split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in settings.networks)

    def waiting(self, client) -> bool:
        """For the TLS hooks, which cannot wait: a covered client whose address has no session
        in memory.  Such a connection is intercepted (never passed through, never connected
        early), so its requests get the sign-in page; a cold cache only errs that way."""
        if not self.covers(client):
            return False
        settings, store = self.settings(), self.store
        if not client.peername:
            return True
        if self.gate.users.get(client.id):        # a tunnel whose CONNECT had a session
            return False
        known, session = store.cached(client.peername[0], settings.idle, settings.max)
        return not known or session is None

    async def person(self, client) -> SignedInUser | None:
        """Who is signed in at this client's address now (memory, else the database in a
        thread); None if nobody.  For raw connections, which get no sign-in page."""
        settings, store = self.settings(), self.store
        if settings is None or store is None or not client.peername:
            return None
        address = client.peername[0]
        known, session = store.cached(address, settings.idle, settings.max)
        if not known:
            session = await self._session(address)
        return SignedInUser(session.user, session.groups, "session") if session else None

    # -- requests ------------------------------------------------------------------------

    def begin(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """For a covered client: a reserved path answered (or marked for `request`), the
        session's person put on the flow, or the flow marked as waiting.  None when done;
        else an awaitable (the database is asked in a thread)."""
        if not self.covers(flow.client_conn):
            return None
        flow.request.headers.pop("Proxy-Authorization", None)   # never forwarded
        settings, store = self.settings(), self.store
        path = flow.request.path.partition("?")[0]
        if flow.request.method != "CONNECT" and path.startswith(PREFIX):
            return self._reserved(flow, path)
        known, session = store.cached(client_ip(flow), settings.idle, settings.max)
        if known:
            self._apply(flow, session)
            return None
        return self._look_up(flow)

    async def _look_up(self, flow: http.HTTPFlow) -> None:
        self._apply(flow, await self._session(client_ip(flow)))

    async def _session(self, address: str) -> Session | None:
        settings, store = self.settings(), self.store
        if settings is None or store is None:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, store.get, address, settings.idle,
                                          settings.max)

    def _apply(self, flow: http.HTTPFlow, session: Session | None) -> None:
        """The session's person on the flow, and on its connection for the TLS and TCP hooks
        (Gate.users), which must not keep a person signed out or replaced since."""
        users = self.gate.users
        if session is None:
            flow.metadata[WAITING] = True
            users.pop(flow.client_conn.id, None)
            return
        person = SignedInUser(session.user, session.groups, "session")
        flow.metadata[SIGNED_IN_USER] = person
        flow.metadata[SESSION] = session
        if flow.client_conn.id in users:
            users[flow.client_conn.id] = person

    def serve(self, flow: http.HTTPFlow) -> bool:
        """After the decision, on a flow that would go on: a waiting client gets the sign-in
        page (HTTPS) or a redirect to it (plain HTTP) instead.  Whether it did."""
        if not flow.metadata.get(WAITING) or flow.request.method == "CONNECT":
            return False
        request = flow.request
        if request.scheme == "https":
            target = request.pretty_url if request.method in ("GET", "HEAD") else "/"
            self._form(flow, target, status=511)
        else:
            self._redirect_to_https(flow, request.pretty_url)
        return True

    def _reserved(self, flow: http.HTTPFlow, path: str) -> Awaitable[None] | None:
        """/.webpolicy/...: the gateway's own pages, on every host, never forwarded."""
        request = flow.request
        if path not in (SIGN_IN, SIGN_OUT):
            _answer(flow, 404, _page("Not found", "<p>There is no such page.</p>"))
            return None
        if not _navigation(request):                # a script's fetch(): see _navigation
            _answer(flow, 403, _page("Open this page yourself", "<p>Type the address of a "
                                     "website into the browser to sign in.</p>"))
            return None
        if request.scheme != "https":               # passwords and tokens only over TLS
            if request.method in ("GET", "HEAD"):
                self._redirect_to_https(flow, _next(request.query.get("next", ""), request),
                                        path)
            else:
                _answer(flow, 400, _page("Use HTTPS", "<p>Sign in over HTTPS.</p>"))
            return None
        if request.method == "POST":
            length = request.headers.get("content-length", "0")
            if not length.isdigit() or int(length) > FORM_LIMIT:
                _answer(flow, 413, _page("Too large", "<p>That form was too large.</p>"))
                return None
            flow.metadata[FORM] = path
            request.stream = False
            return None
        if path == SIGN_OUT:
            return self._sign_out_form(flow)
        target = _next(request.query.get("next", ""), request)
        return self._sign_in_form(flow, target)

    async def _sign_in_form(self, flow: http.HTTPFlow, target: str) -> None:
        """The form, also for a signed-in client: another person at a shared PC signs in
        here, which ends the first person's session."""
        session = await self._session(client_ip(flow))
        self._form(flow, target, signed_in=session.user if session else "")

    async def _sign_out_form(self, flow: http.HTTPFlow) -> None:
        address = client_ip(flow)
        session = await self._session(address)
        if session is None:
            _answer(flow, 200, _page("Not signed in", "<p>Nobody is signed in on this "
                                     "device.</p>"))
            return
        token = form_token(self.store.key, address, "sign-out")
        body = (f"<p>Signed in as <b>{_html(session.user)}</b>.</p>"
                f'<form method="post" action="{SIGN_OUT}">'
                f'<input type="hidden" name="token" value="{_html(token)}">'
                "<button type=\"submit\">Sign out</button></form>")
        _answer(flow, 200, _page("Sign out", body))

    def _form(self, flow: http.HTTPFlow, target: str, status: int = 200, message: str = "",
              user: str = "", signed_in: str = "") -> None:
        engine = self.gate.engine
        organisation = engine.policy.block_page.organisation if engine else ""
        token = form_token(self.store.key, client_ip(flow), "sign-in")
        note = f'<p class="note" role="alert">{_html(message)}</p>' if message else ""
        if signed_in:
            note += (f"<p>{_html(signed_in)} is signed in on this device; signing in as "
                     f'someone else signs them out. <a href="{SIGN_OUT}">Sign out</a></p>')
        body = (f"<p>{_html(organisation)}: sign in with your username and password to use "
                "the web on this device.</p>" + note +
                f'<form method="post" action="{SIGN_IN}">'
                f'<input type="hidden" name="token" value="{_html(token)}">'
                f'<input type="hidden" name="next" value="{_html(target)}">'
                '<label for="username">Username</label>'
                f'<input id="username" name="username" autocomplete="username" required '
                f'value="{_html(user)}">'
                '<label for="password">Password</label>'
                '<input id="password" name="password" type="password" '
                'autocomplete="current-password" required>'
                '<button type="submit">Sign in</button></form>'
                "<p>You are signed out when you sign out, after a while without use, or when "
                "someone else signs in on this device.</p>")
        _answer(flow, status, _page("Sign in to use the web", body))

    def _redirect_to_https(self, flow: http.HTTPFlow, target: str, path: str = SIGN_IN) -> None:
        host = flow.request.pretty_host
        if ":" in host:
            host = f"[{host}]"
        location = f"https://{host}{path}"
        if path == SIGN_IN:
            location += "?" + urllib.parse.urlencode({"next": target})
        _redirect(flow, location, 302)

    # -- posted forms (the `request` hook: the body is here) ------------------------------

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        path = flow.metadata.pop(FORM, None)
        if path is None or flow.response is not None:
            return None
        content = flow.request.content or b""
        flow.request.content = b""                   # the password goes no further
        if len(content) > FORM_LIMIT:
            _answer(flow, 413, _page("Too large", "<p>That form was too large.</p>"))
            return None
        try:
            form = {k: v[0] for k, v in urllib.parse.parse_qs(
                content.decode("utf-8", "replace"), max_num_fields=8).items()}
        except ValueError:          # more fields than the form has: the sender's error
            _answer(flow, 400, _page("Not this form", "<p>That was not the sign-in form.</p>"))
            return None
        address = client_ip(flow)
        purpose = "sign-out" if path == SIGN_OUT else "sign-in"
        if not self._same_origin(flow) or \
                not token_ok(self.store.key, address, purpose, form.get("token", "")):
            if purpose == "sign-out":
                _answer(flow, 403, _page("Form expired", "<p>That sign-out form had expired: "
                                         f'<a href="{SIGN_OUT}">try again</a>.</p>'))
            else:
                self._form(flow, _next(form.get("next", ""), flow.request), 403,
                           _MESSAGES["expired"])
            return None
        if purpose == "sign-out":
            return self._sign_out(flow, address)
        return self._sign_in(flow, address, form)

    @staticmethod
    def _same_origin(flow: http.HTTPFlow) -> bool:
        """A browser names the page a form came from; it must be this host's (the token is
        the real check: this only refuses what is plainly cross-site)."""
        origin = flow.request.headers.get("origin", "")
        site = flow.request.headers.get("sec-fetch-site", "")
        if site and site not in ("same-origin", "none"):
            return False
        if not origin:
            return True
        return origin == f"https://{flow.request.pretty_host}" + (
            f":{flow.request.port}" if flow.request.port != 443 else "")

    async def _sign_in(self, flow: http.HTTPFlow, address: str, form: dict[str, str]) -> None:
        user, password = form.get("username", "").strip(), form.get("password", "")
        target = _next(form.get("next", ""), flow.request)
        if not user or not password:
            self._form(flow, target, 403, _MESSAGES["refused"], user)
            return
        result, person = await self.signin.check(user, password, address)
        del password
        if person is None:
            self._form(flow, target, _STATUS[result], _MESSAGES[result], user)
            return
        settings = self.settings()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.store.start, address, str(person),
                                   person.groups)
        self._sign_ins += 1
        if settings is not None and self._sign_ins % PURGE_EVERY == 0:
            loop.run_in_executor(self._pool, self.store.purge, settings.idle, settings.max)
        log.info("webpolicy: sign-in page: a session started")     # no name: the log is not
        _redirect(flow, target)                                     # where records live

    async def _sign_out(self, flow: http.HTTPFlow, address: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.store.end, address)
        self.gate.users.pop(flow.client_conn.id, None)
        _answer(flow, 200, _page("Signed out", "<p>You are signed out. Close the browser, "
                                 f'or <a href="{SIGN_IN}">sign in again</a>.</p>'))

    def block_page_link(self, flow: http.HTTPFlow) -> bytes:
        """HTML for the block page of a signed-in client: who is signed in, and how to sign
        out (shared PCs: the next person must not browse as this one)."""
        session = flow.metadata.get(SESSION)
        if session is None or not _navigation(flow.request):   # never to a website's script
            return b""
        return (f'<p>Signed in as {_html(session.user)}. <a href="{SIGN_OUT}">Sign out</a>'
                f' or <a href="{SIGN_IN}">sign in as someone else</a>.</p>').encode()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.close()


def _next(text: str, request: http.Request) -> str:
    """Where to go after signing in: an http(s) URL on the host of this request, else its
    root (never another site: an open redirect would lend the gateway's page to phishing)."""
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        parts = None
    if parts and parts.scheme in ("http", "https") and parts.hostname and \
            parts.hostname.lower() == request.pretty_host.lower().strip("[]") and \
            not parts.path.startswith(PREFIX):
        return urllib.parse.urlunsplit(parts)
    return f"https://{request.pretty_host}/" if ":" not in request.pretty_host \
        else f"https://[{request.pretty_host}]/"


def _navigation(request: http.Request) -> bool:
    """Whether the browser is showing this to the person (a typed address, a link, a form),
    not handing it to a page's script.  The reserved paths are answered on every host, so
    they share each website's origin: a script on any site could otherwise fetch() the
    sign-in page from its own origin, read who is signed in and the form's token, and sign
    the person out or in as someone else.  Browsers say which in Sec-Fetch-Mode/-Dest
    (Fetch Metadata); a client that sends neither (curl, an old browser) is let through."""
    headers = request.headers
    return (headers.get("sec-fetch-mode", "navigate") == "navigate"
            and headers.get("sec-fetch-dest", "document") == "document")


def _html(text: str) -> str:
    return escape(encodable(text), quote=True)


def _page(title: str, body: str) -> bytes:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_html(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{_html(title)}</h1>{body}</body></html>").encode()


def _answer(flow: http.HTTPFlow, status: int, body: bytes) -> None:
    flow.request.stream = False
    flow.response = make_response(status, body, [*HEADERS, (b"content-security-policy",
                                                             _csp(flow.request).encode())])


def _csp(request: http.Request) -> str:
    """No script, only the page's own style, never framed; the form may post only here and
    the answer may go on to this host by plain HTTP too (a browser checks form-action on the
    redirect after sign-in, back to the http:// page it asked for)."""
    host = request.pretty_host
    host = f"[{host}]" if ":" in host else host
    if not _SAFE_HOST.fullmatch(host):
        return _CSP
    return f"{_CSP} http://{host}:* https://{host}:*"


def _redirect(flow: http.HTTPFlow, location: str, status: int = 303) -> None:
    flow.request.stream = False
    flow.response = make_response(status, b"", [
        (b"location", encodable(location).encode()),
        (b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")])


__all__ = ["SessionStoreError", "SignInPage"]
