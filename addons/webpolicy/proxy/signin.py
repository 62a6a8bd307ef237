"""Proxy logins checked against the directory (policy.yaml's `directory:`), off the event loop.

mitmproxy's own `--proxyauth ldap:...` binds to the directory on every plain-HTTP request, on
the event loop: one slow directory answer stalls every client, and its users carry no groups.
So with `directory:` in the policy the add-on does the login itself, for the HTTP proxy
listener (regular and upstream modes; transparent, SOCKS5 and reverse clients are identified
by their network):
- `begin` runs first in `http_connect` and `requestheaders`.  What needs no directory is
  answered at once: no or unreadable Proxy-Authorization (407 with the realm), an address
  throttled after failed logins (407), a password checked within `cache_minutes` (accepted);
  otherwise it returns an awaitable that asks the directory in a small thread pool, which
  the add-on awaits before deciding (mitmproxy serves other flows meanwhile).
- A directory that cannot be asked refuses the login with a 503 that says so (fail closed:
  an unverified name could claim staff's profile) and counts it; only a person whose profile
  says `on_error: allow` (staff) and whose same password the directory accepted within the
  last hours (logins.STALE_SECONDS) is let in on that answer ("stale").
- `check` is the same check for the gateway's sign-in page (signinpage.py).
- The accepted user (a `SignedInUser`: name and groups) is put on the flow as
  `flow.metadata[USER_KEY]`, never the password; the Proxy-Authorization header is removed
  before anything else sees the request, so it reaches no log, record or upstream.  After a
  CONNECT, the tunnel's user is kept per client connection for the requests inside it, which
  carry no header, and for the TLS and TCP hooks (Gate.users).
- With `directory.kerberos`, the 407 offers Negotiate too, and a `Negotiate` login is a
  Kerberos ticket checked once per client connection (negotiate.py); Basic stays the fallback.
"""

from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import logging
import math
import time
from collections.abc import Awaitable

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from webpolicy.identity.directory import Directory, DirectoryUnavailable, SignedInUser
from webpolicy.identity.htpasswd import Htpasswd, login_checker
from webpolicy.identity.kerberos import KerberosRefused, negotiate_token
from webpolicy.identity.logins import LoginCache, Throttle
from webpolicy.policy.model import DirectorySettings
from webpolicy.proxy.flows import client_ip, make_response
from webpolicy.proxy.gate import SIGNED_IN_USER as USER_KEY
from webpolicy.proxy.gate import Gate
from webpolicy.proxy.negotiate import Negotiate

log = logging.getLogger("webpolicy")

HEADER = "Proxy-Authorization"
WORKERS = 4                      # directory checks at once; more wait in the pool's queue
WARN_EVERY = 60.0                # seconds between warnings that the directory is down

_REFUSED = (b"You need to sign in to use the web: enter your college username and password.\n")
_THROTTLED = (b"Too many failed sign-ins from this device. Wait a minute, then try again "
              b"with your college username and password.\n")
_UNAVAILABLE = (b"The web filter cannot check sign-ins right now (the college directory "
                b"cannot be reached), so you cannot be signed in. Please try again in a few "
                b"minutes, or ask the IT helpdesk.\n")


class SignIn:
    def __init__(self, gate: Gate, workers: int = 1) -> None:
        self.gate = gate
        self._settings: DirectorySettings | None = None
        self._directory: Directory | Htpasswd | None = None
        self.cache: LoginCache[SignedInUser] = LoginCache(0)
        # The throttle is per process.  With `webpolicy run --workers N` the kernel spreads an
        # address's connections over the workers, so each allows its share of the failures:
        # together about the one limit a single process allows, not N times it.
        self.throttle = Throttle(limit=max(1, math.ceil(Throttle().limit / workers)))
        self._tunnels: dict[str, SignedInUser] = {}      # client connection id -> CONNECT's user
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, "webpolicy-directory")
        self._warned = -WARN_EVERY
        self.negotiate = Negotiate(self._pool)

    def settings(self) -> DirectorySettings | None:
        """The directory settings of the policy in force; a change (a reload) starts a new
        client and an empty cache, so an edited filter or server applies at once."""
        engine = self.gate.engine
        settings = engine.policy.directory if engine is not None else None
        if settings is not self._settings:
            if settings != self._settings:
                self._directory = login_checker(settings) if settings else None
                self.cache = LoginCache(settings.cache_minutes * 60 if settings else 0)
                self.negotiate.configure(settings)
            self._settings = settings          # an equal one from a reload: keep the cache
        return settings

    def begin(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Sign the flow's client in, or refuse it (flow.response set).  Returns an awaitable
        when the directory must be asked; it never raises."""
        settings = self.settings()
        if settings is None or not isinstance(flow.client_conn.proxy_mode,
                                              (mode_specs.RegularMode, mode_specs.UpstreamMode)):
            return None
        header = flow.request.headers.pop(HEADER, "")      # never forwarded, never recorded
        connect = flow.request.method == "CONNECT"
        tunnel_user = None if connect else self._tunnels.get(flow.client_conn.id)
        if tunnel_user is not None:                         # inside a tunnel signed in at CONNECT
            flow.metadata[USER_KEY] = tunnel_user
            return None
        if self.negotiate.offered:
            negotiated = self._negotiated(flow, settings, header)
            if negotiated is not False:
                return negotiated
        credentials = _basic(header)
        if credentials is None:
            self._refuse(flow, settings, "refused", _REFUSED)
            return None
        user, password = credentials
        address = client_ip(flow)
        if self.throttle.blocked(address):
            self._refuse(flow, settings, "throttled", _THROTTLED)
            return None
        known = self.cache.get(user, password)
        if known is not None:
            self._accept(flow, known, "cached")
            return None
        return self._ask(flow, settings, self._directory, user, password, address)

    def _negotiated(self, flow: http.HTTPFlow, settings: DirectorySettings,
                    header: str) -> Awaitable[None] | None | bool:
        """Kerberos: a connection signed in by ticket stays so (a Basic header on it is still
        checked as Basic); a Negotiate token is checked.  False: not Kerberos, go on."""
        known = self.negotiate.known(flow.client_conn.id)
        if known is not None and not header.lstrip().lower().startswith("basic"):
            self._accept(flow, known, "cached")
            return None
        try:
            token = negotiate_token(header)
        except KerberosRefused as exc:
            self.negotiate.refused(str(exc))
            self._refuse(flow, settings, "kerberos_refused", _REFUSED)
            return None
        if token is None:
            return False
        return self._ask_kerberos(flow, settings, token)

    async def _ask_kerberos(self, flow: http.HTTPFlow, settings: DirectorySettings,
                            token: bytes) -> None:
        try:
            found = await self.negotiate.sign_in(flow.client_conn.id, token, self._directory)
        except DirectoryUnavailable as exc:
            self._unavailable(flow, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            self.negotiate.refused(f"unexpected {type(exc).__name__}")
            self._refuse(flow, settings, "kerberos_refused", _REFUSED)
            return
        if found is None:
            self._refuse(flow, settings, "kerberos_refused", _REFUSED)
            return
        self._accept(flow, found, "kerberos")

    async def _ask(self, flow: http.HTTPFlow, settings: DirectorySettings,
                   directory: Directory | Htpasswd,
                   user: str, password: str, address: str) -> None:
        try:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(self._pool, directory.check, user, password)
        except Exception as exc:  # noqa: BLE001 - DirectoryUnavailable or not: never open
            stale = self.outage_fallback(user, password, address)
            if stale is not None:
                self._accept(flow, stale, "stale")
                return
            why = str(exc) if isinstance(exc, DirectoryUnavailable) else \
                f"unexpected {type(exc).__name__}"
            self._unavailable(flow, why)
            return
        if found is None:
            self.throttle.failed(address)
            self._refuse(flow, settings, "refused", _REFUSED)
            return
        if self._settings == settings:      # not an answer from a directory since replaced
            self.cache.put(user, password, found)
        self._accept(flow, found, "ok")

    async def check(self, user: str, password: str, address: str
                    ) -> tuple[str, SignedInUser | None]:
        """A password typed into the sign-in page (signinpage.py), checked exactly as a proxy
        login: throttle, cache, the directory in the pool, the outage fallback.  Returns the
        result counted in webpolicy_proxy_logins and the person (for ok, cached, stale)."""
        settings = self.settings()
        directory = self._directory
        if settings is None or directory is None:
            return "unavailable", None
        if self.throttle.blocked(address):
            result, found = "throttled", None
        elif (found := self.cache.get(user, password)) is not None:
            result = "cached"
        else:
            try:
                loop = asyncio.get_running_loop()
                found = await loop.run_in_executor(self._pool, directory.check, user, password)
                result = "ok" if found is not None else "refused"
            except Exception as exc:  # noqa: BLE001 - fail closed, never open
                found = self.outage_fallback(user, password, address)
                result = "stale" if found is not None else "unavailable"
                if found is None:
                    self._warn_unavailable(str(exc))
            if result == "refused":
                self.throttle.failed(address)
            elif result == "ok" and self._settings == settings:
                self.cache.put(user, password, found)
        self.gate.metrics.proxy_logins.labels(result).inc()
        return result, found

    def outage_fallback(self, user: str, password: str, address: str) -> SignedInUser | None:
        """The directory cannot be asked: a password it accepted within the last
        logins.STALE_SECONDS is still good for a person whose profile says on_error: allow
        (staff, per the policy); for every other profile (learners) None: fail closed."""
        stale = self.cache.stale(user, password)
        engine = self.gate.engine
        if stale is None or engine is None:
            return None
        try:
            rules, _reason = engine.identify(stale, address)
        except Exception:  # noqa: BLE001
            return None
        return stale if rules.profile.on_error == "allow" else None

    def _accept(self, flow: http.HTTPFlow, user: SignedInUser, result: str) -> None:
        flow.metadata[USER_KEY] = user
        if flow.request.method == "CONNECT":
            self._tunnels[flow.client_conn.id] = user
        self.gate.metrics.proxy_logins.labels(result).inc()

    def _refuse(self, flow: http.HTTPFlow, settings: DirectorySettings, result: str,
                body: bytes) -> None:
        realm = "".join(c for c in settings.realm if c.isprintable() and c not in '"\\')
        flow.response = make_response(407, body, [
            *self.negotiate.challenges(),          # Negotiate first: browsers take the first
            (b"proxy-authenticate", f'Basic realm="{realm}", charset="UTF-8"'.encode()),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"cache-control", b"no-store"),
        ])
        self.gate.metrics.proxy_logins.labels(result).inc()

    def _unavailable(self, flow: http.HTTPFlow, why: str) -> None:
        self._warn_unavailable(why)
        flow.response = make_response(503, _UNAVAILABLE, [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"cache-control", b"no-store"),
        ])
        self.gate.metrics.proxy_logins.labels("unavailable").inc()

    def _warn_unavailable(self, why: str) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:    # not once per request while it is down
            self._warned = now
            log.warning("webpolicy: the directory cannot be asked, sign-ins refused (fail "
                        "closed; counted in webpolicy_proxy_logins_total): %s", why)

    def client_disconnected(self, client_id: str) -> None:
        self._tunnels.pop(client_id, None)
        self.negotiate.forget(client_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _basic(header: str) -> tuple[str, str] | None:
    """(user, password) from a Basic Proxy-Authorization value; None if there is none."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        text = binascii.a2b_base64(encoded.strip().encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        return None
    return user, password
