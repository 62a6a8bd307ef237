"""The mitmproxy add-on: a thin adapter from flows to decide() and back to enforcement.

Every way a request can pass through mitmproxy is covered:
- plain HTTP, intercepted HTTPS, HTTP/2 and WebSocket upgrades: `requestheaders`, before any
  upstream connection (the add-on forces `connection_strategy=lazy`, so an intercepted tunnel
  does not open the upstream connection before the decision either; it is opened early only
  for a named host no request to which can be blocked, see addon_upstream.py);
- pass-through TLS (pinned apps): `http_connect` (explicit proxy) and `tls_clienthello` /
  `tls_start_client` (transparent mode, by SNI) refuse a blocked connection;
- anything else inside a tunnel (raw TCP): `tcp_start`.
Any error while deciding fails closed for profiles that block: a raised exception in a hook
would make mitmproxy forward the request (fail open), so hook bodies never let one escape.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from pathlib import Path

from mitmproxy import ctx, dns, exceptions, http, tcp, tls
from mitmproxy.proxy.layers import modes
from OpenSSL import SSL

from . import blockpage, circumvention, searchterms
from .addon_circumvention import Circumvention
from .addon_safesearch import SafeSearch
from .addon_upstream import EarlyUpstream
from .alerts import Alerter
from .auditlog import AuditLog
from .canonical import CanonicalURL, canonical_host, from_parts
from .compiler import open_cache
from .decision import ACTION_RANK, Decision, decide, unavailable
from .engine import Engine, load_engine
from .events import RequestFacts, event_action, make_record, new_event_id
from .flows import client_ip as _client_ip
from .flows import connect_host as _connect_host
from .flows import make_response, request_hosts
from .metrics import Metrics
from .policy import BlockPageSettings, PolicyError, Profile
from .reloader import Reloader
from .watchlist import RecentHits, WatchHit, Watchlist

log = logging.getLogger("webpolicy")


class WebPolicy:
    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.metrics = Metrics()
        self.audit: AuditLog | None = None
        self.alerter: Alerter | None = None
        self.watchlist = Watchlist()              # compiled with each policy, swapped whole
        self._recent_hits = RecentHits()          # flagged suggestions, one per keystroke
        self.reloader: Reloader | None = None
        self._users: dict[str, str] = {}          # client connection id -> proxy-auth user
        self._refuse: dict[str, Decision] = {}    # client connection id -> refusal (TLS hooks)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Companions, called from this add-on's hooks rather than registered with mitmproxy:
        # mitmproxy dispatches every event (eight or so per request) to every add-on, and
        # one add-on that runs them in order costs less than three (docs/benchmarks.md).
        self.circumvention = Circumvention(self)
        self.safesearch = SafeSearch(self)
        self.early_upstream = EarlyUpstream()

    # -- lifecycle ------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("webpolicy_policy", str, "policy.yaml", "Path of the policy file.")
        loader.add_option("webpolicy_reload_interval", str, "2",
                          "Seconds between checks for edited policy or list files; 0 checks "
                          "only on SIGHUP.")
        loader.add_option("webpolicy_metrics", bool, True,
                          "Serve Prometheus metrics where policy.yaml's metrics.listen says.")
        loader.add_option("webpolicy_cache_dir", str, "",
                          "Directory for the compiled list index (a cache, rebuilt when a list "
                          "changes); default: webpolicy-cache in mitmproxy's confdir.")

    def configure(self, updated: set[str]) -> None:
        if "connection_strategy" in updated or "webpolicy_policy" in updated:
            if ctx.options.connection_strategy != "lazy":
                # Eager would open the upstream TCP+TLS connection before a request is decided.
                ctx.options.update(connection_strategy="lazy")
        if "webpolicy_reload_interval" in updated:
            self._reload_interval()
        if "webpolicy_policy" in updated:
            self._load_initial(Path(ctx.options.webpolicy_policy))

    @staticmethod
    def _reload_interval() -> float:
        text = ctx.options.webpolicy_reload_interval
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if seconds < 0:
            raise exceptions.OptionsError(
                f"webpolicy_reload_interval: '{text}' is not a number of seconds (0 = SIGHUP only)")
        return seconds

    def _load_initial(self, path: Path) -> None:
        # The big lists are compiled by a worker process into this cache and memory-mapped
        # (compiler.py); an unchanged policy starts from the cache.
        self._list_cache = open_cache(ctx.options.webpolicy_cache_dir, ctx.options.confdir)
        try:
            engine = load_engine(path, self._list_cache)
        except PolicyError as exc:
            self.metrics.reload_failed()
            raise exceptions.OptionsError(f"webpolicy: the policy cannot be loaded:\n{exc}") from None
        self._install(engine)

    def running(self) -> None:
        engine = self.engine
        if engine is None:
            return
        self.early_upstream.install(ctx.master.addons)
        self._loop = asyncio.get_running_loop()
        try:
            self._loop.add_signal_handler(signal.SIGHUP, self._sighup)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
        try:
            self._serve_metrics(engine)
        except OSError as exc:
            log.error("webpolicy: %s", exc)     # an ERROR at start-up makes mitmdump exit 1
            ctx.master.shutdown()
            return
        cache = self._list_cache
        self.reloader = Reloader(Path(ctx.options.webpolicy_policy),
                                 lambda path: load_engine(path, cache, reload=True),
                                 self._reloaded, self._reload_failed,
                                 self._reload_interval())
        self.reloader.start(engine.policy)
        self.alerter = Alerter(engine.policy.alerts, self._count_alert,
                               engine.policy.block_page.organisation).start()
        # What is alive now (mitmproxy, the add-ons, the first policy) lives as long as the
        # process: out of the cyclic GC's reach, a full collection, which every request in
        # flight waits out, takes a few ms instead of ~40 (a reload used to trigger one).
        gc.freeze()
        log.info("webpolicy: filtering with policy %s", engine.version)

    def done(self) -> None:
        self.early_upstream.uninstall()            # never raises: the rest must stop too
        if self.reloader:
            self.reloader.stop()
        if self.audit:
            self.audit.close()
            self.audit = None
        if self.alerter:
            self.alerter.close()                   # a few seconds to send what is queued
            self.alerter = None
        self.metrics.stop()

    def _sighup(self) -> None:
        log.info("webpolicy: SIGHUP, reloading the policy")
        if self.reloader:
            self.reloader.request()

    def _install(self, engine: Engine) -> Engine | None:
        """Swap a whole new engine in: one assignment, so no request sees a mixture.  Returns
        the engine replaced (the reloader frees it, piecemeal)."""
        old = self.engine
        settings = engine.policy.logging
        if self.audit is None or (old and old.policy.logging != settings):
            previous, self.audit = self.audit, AuditLog(settings.directory, settings.retention_days,
                                                        self._log_write_failed)
            if previous:
                previous.close()
        self._install_watchlist(engine)
        self.engine = engine
        self.metrics.policy_loaded(engine)
        for warning in engine.warnings:
            log.warning("webpolicy: %s", warning)
        log.info("webpolicy: policy %s in force (%s)", engine.version,
                 ", ".join(f"{n}: {s.entries}" for n, s in engine.status.items()))
        return old

    def _reloaded(self, engine: Engine) -> Engine | None:
        """Called from the reload thread; the swap itself is atomic.  Returns the old engine."""
        old = self._install(engine)
        try:
            self._serve_metrics(engine)        # metrics.listen may have changed
        except OSError as exc:
            log.error("webpolicy: %s", exc)
        return old

    def _serve_metrics(self, engine: Engine) -> None:
        """Start, move or stop the metrics endpoint as the policy and options say."""
        settings = engine.policy.metrics
        if ctx.options.webpolicy_metrics and settings.enabled:
            self.metrics.serve(settings.host, settings.port)
        else:
            self.metrics.stop()

    def _reload_failed(self, exc: Exception) -> None:
        self.metrics.reload_failed()
        version = self.engine.version if self.engine else "none"
        log.error("webpolicy: reload refused, policy %s stays in force:\n%s", version, exc)

    def _log_write_failed(self, exc: Exception) -> None:
        self.metrics.log_write_errors.inc()

    def _install_watchlist(self, engine: Engine) -> None:
        """Compile the watchlist beside the engine (off the loop when reloading); terms files
        that cannot be read are warnings: filtering never depends on them."""
        watchlist = Watchlist.compile(engine.policy.watchlist.values(), str(engine.policy.path))
        for problem in watchlist.problems:
            log.warning("webpolicy: %s", problem)
        self.watchlist = watchlist
        if self.alerter:
            self.alerter.configure(engine.policy.alerts, engine.policy.block_page.organisation)

    def _count_alert(self, channel: str, result: str) -> None:
        self.metrics.alerts.labels(channel, result).inc()

    # -- HTTP -----------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Decide; then, on a flow that goes on, the circumvention and safe-search stages.
        Each stage fails closed on its own: a raised hook would forward the request."""
        if flow.response is not None:      # e.g. proxyauth's 407: never overwrite it
            return
        decided_hosts = self._filter(flow)
        if flow.response is None:
            self.circumvention.requestheaders(flow, decided_hosts)
        if flow.response is None:
            self.safesearch.requestheaders(flow, decided_hosts)

    def request(self, flow: http.HTTPFlow) -> None:
        self.safesearch.request(flow)      # form posts: the body is only here

    def dns_request(self, flow: dns.DNSFlow) -> None:
        self.circumvention.dns_request(flow)

    def _filter(self, flow: http.HTTPFlow) -> tuple[str, ...] | None:
        """The decision, its record and the block page; returns the canonical hosts decided
        (None if none could be), so the later stages need not parse them again."""
        started = time.perf_counter()
        client_ip = _client_ip(flow)
        user = self._user(flow)
        decision, url, host, decided_hosts = self._decide_request(flow, client_ip, user)
        self.metrics.observe(decision.profile, decision.action, time.perf_counter() - started)
        search, watch = self._search(flow, url) if url is not None and url.query else (None, None)
        if decision.action == "allow" and not decision.error:
            if watch is None or self._repeated_suggestion(search, watch, client_ip, user):
                return decided_hosts
        facts = RequestFacts(client_ip, user, flow.request.method, url, host,
                             flow.request.headers.get("user-agent", ""),
                             search.term if search else None)
        event_id = self._record(decision, facts, watch=watch)
        if decision.blocked:
            self._block(flow, decision, event_id, url, host)
        return decided_hosts

    def _search(self, flow: http.HTTPFlow, url: CanonicalURL
                ) -> tuple[searchterms.SearchTerm | None, WatchHit | None]:
        """The search term (raw query: canonical form unescapes %26) and its watchlist hit.
        Monitoring only: an error here is logged and never changes the decision."""
        if searchterms.engine_for(url.host) is None:     # nearly every request: ~0.1 us
            return None, None
        try:
            search = searchterms.extract(url.host, url.path, flow.request.path.partition("?")[2])
            return (search, self.watchlist.match(search.term)) if search else (None, None)
        except Exception as exc:  # noqa: BLE001
            log.warning("webpolicy: search term extraction failed: %r", exc)
            return None, None

    def _repeated_suggestion(self, search: searchterms.SearchTerm, watch: WatchHit,
                             client_ip: str, user: str | None) -> bool:
        return search.suggestion and self._recent_hits.repeated(
            (client_ip, user, watch.term), time.monotonic())

    def _decide_request(self, flow: http.HTTPFlow, client_ip: str, user: str | None
                        ) -> tuple[Decision, CanonicalURL | None, str, tuple[str, ...] | None]:
        """Decide on the host actually requested (Host / :authority) and the connection's host.

        An allowed CONNECT/SNI host carrying a blocked Host header (domain fronting) is blocked:
        both are decided and the stricter answer wins.  Returns the decision, the URL it was
        made on, the Host as sent, and the canonical hosts decided.
        """
        engine = self.engine
        request = flow.request
        host, connection_host = request_hosts(flow)
        if engine is None:
            return unavailable("unknown", "default", "none"), None, host, None
        try:
            url = from_parts(request.scheme, host, request.port, request.path)
            decision = decide(engine, url, client_ip, user)
            if connection_host == host:
                return decision, url, host, (url.host,)
            other = from_parts(request.scheme, connection_host, request.port, request.path)
            decided = (url.host, other.host)
            if other.host != url.host and not decision.blocked:
                second = decide(engine, other, client_ip, user)
                if _stricter(second, decision):
                    decision, url = second, other
            return decision, url, host, decided
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            return self._failure(engine, client_ip, user, exc), None, host, None

    def _failure(self, engine: Engine, client_ip: str, user: str | None,
                 exc: BaseException) -> Decision:
        self.metrics.filter_errors.inc()
        # WARNING, not ERROR: mitmproxy exits on any ERROR logged while it is starting up.
        log.warning("webpolicy: cannot decide, failing closed for profiles that block: %r", exc)
        try:
            rules, reason = engine.identify(user, client_ip)
            return unavailable(rules.profile.name, reason, engine.version, rules.profile.on_error)
        except Exception:  # noqa: BLE001
            return unavailable(engine.policy.default_profile, "default", engine.version)

    def _block(self, flow: http.HTTPFlow, decision: Decision, event_id: str,
               url: CanonicalURL | None, host: str) -> None:
        settings = self.engine.policy.block_page if self.engine else None
        page = blockpage.render(decision, event_id, str(url) if url else host,
                                url.host if url else host, settings or _DEFAULT_PAGE,
                                flow.request.headers.get("accept", ""))
        flow.request.stream = False        # a streamed body must not reach the upstream
        flow.response = make_response(page.status, page.body, [
            (b"content-type", page.content_type.encode()),
            (b"cache-control", b"no-store"),
            (b"x-webpolicy-reference", event_id.encode()),
        ])

    # -- connections that never become HTTP requests --------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        user = self._user(flow)
        if user:
            self._users[flow.client_conn.id] = user
        engine = self.engine
        host, client_ip = flow.request.host, flow.client_conn.peername[0]
        refusal = self.circumvention_refusal(flow, host, flow.request.port)
        if refusal is not None:            # IP address or port the profile does not allow
            self._refuse_tunnel(flow, refusal, user, passthrough=False)
            return
        if engine is not None and not self._is_passthrough(engine, host):
            return                         # intercepted: every request inside is decided
        decision = self._decide_host(host, client_ip, user)
        if decision.blocked:
            self._refuse_tunnel(flow, decision, user, passthrough=True)

    def _refuse_tunnel(self, flow: http.HTTPFlow, decision: Decision, user: str | None,
                       passthrough: bool) -> None:
        """A non-2xx answer to CONNECT refuses the tunnel before any upstream connection."""
        facts = RequestFacts(flow.client_conn.peername[0], user, "CONNECT", None,
                             f"{flow.request.host}:{flow.request.port}")
        self._record(decision, facts, passthrough=passthrough)
        self.metrics.connection_refused(decision.profile, "connect")
        flow.response = http.Response.make(
            blockpage.status_for(decision),
            f"Blocked by the web filter: {decision.category}\n".encode(),
            {"Content-Type": "text/plain"})

    def socks5_auth(self, data: modes.Socks5AuthData) -> None:
        """A SOCKS5 login (checked by mitmproxy's proxyauth, which runs first) names the user
        for everything decided on the connection before its requests: TLS, raw TCP."""
        if data.valid:
            self._users[data.client_conn.id] = data.username

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Pass-through hosts are not intercepted; in transparent mode SNI is all we have.

        Behind a CONNECT, the SNI must name the CONNECT host when the tunnel would not be
        intercepted (either name is a pass-through host): otherwise a client could CONNECT to
        one host and reach another unseen.  In an intercepted tunnel a different SNI is
        decided too, since the upstream connection carries it.
        """
        engine = self.engine
        sni = data.client_hello.sni
        host = sni or (data.context.server.address or ("",))[0]
        if not host or engine is None:
            return
        connect_host = _connect_host(data.context)
        mismatch = circumvention.sni_violation(connect_host, sni) if connect_host else None
        passthrough = any(self._is_passthrough(engine, name) for name in (host, connect_host)
                          if name)
        client = data.context.client
        user = self._users.get(client.id)
        if not passthrough and mismatch is None:
            # Intercepted: every request inside is decided.  Connected early only where none
            # can be blocked, and only for a known user when users must log in.
            if user is not None or not ctx.options.proxyauth:
                self.early_upstream.mark(data, engine, user)
            return
        if passthrough and mismatch is not None:
            decision = self._violation_decision(mismatch, client.peername[0], user)
        else:
            decision = self._decide_host(host, client.peername[0], user)
        if decision.blocked:
            facts = RequestFacts(client.peername[0], user, "TLS", None, host)
            self._record(decision, facts, passthrough=passthrough)
            self.metrics.connection_refused(decision.profile, "tls")
            self._refuse[client.id] = decision
        elif passthrough:
            data.ignore_connection = True

    def tls_start_client(self, data: tls.TlsData) -> None:
        """Refuse a blocked pass-through connection: a TLS context without a certificate
        makes the handshake fail before anything is forwarded."""
        if data.conn.id in self._refuse and data.ssl_conn is None:
            data.ssl_conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD))
            data.ssl_conn.set_accept_state()

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        """Non-HTTP traffic inside a tunnel is decided on its destination host."""
        address = flow.server_conn.sni or (flow.server_conn.address or ("",))[0]
        if not address:
            return
        user = self._users.get(flow.client_conn.id)
        decision = self._decide_host(address, flow.client_conn.peername[0], user)
        if decision.blocked:
            facts = RequestFacts(flow.client_conn.peername[0], user, "TCP", None, address)
            self._record(decision, facts, passthrough=True)
            self.metrics.connection_refused(decision.profile, "tcp")
            flow.kill()

    def client_disconnected(self, client) -> None:
        self.early_upstream.forget(client.id)
        self._users.pop(client.id, None)
        self._refuse.pop(client.id, None)

    # -- helpers --------------------------------------------------------------------------

    def _decide_host(self, host: str, client_ip: str, user: str | None) -> Decision:
        engine = self.engine
        if engine is None:
            return unavailable("unknown", "default", "none")
        try:
            return decide(engine, CanonicalURL("", canonical_host(host), None, "/", ""),
                          client_ip, user)
        except Exception as exc:  # noqa: BLE001
            return self._failure(engine, client_ip, user, exc)

    @staticmethod
    def _is_passthrough(engine: Engine, host: str) -> bool:
        try:
            return engine.is_passthrough(canonical_host(host))
        except ValueError:
            return False

    # -- for the companion add-ons (addon_circumvention.py, addon_safesearch.py) -----------

    def identify(self, flow: http.HTTPFlow) -> tuple[Profile, str] | None:
        """The client's profile and why; None until a policy is loaded."""
        engine = self.engine
        if engine is None:
            return None
        client_ip = _client_ip(flow)
        rules, reason = engine.identify(self._user(flow), client_ip)
        return rules.profile, reason

    def circumvention_refusal(self, flow: http.HTTPFlow, host: str,
                              port: int | None) -> Decision | None:
        """The client's connect rules for `host` (port None: a plain request, where only the
        IP-literal rule applies).  An address listed under `allow:` may be used."""
        engine = self.engine
        if engine is None:
            return None                    # nothing is allowed without a policy anyway
        client_ip = _client_ip(flow)
        user = self._user(flow)
        try:
            rules, reason = engine.identify(user, client_ip)
            connect = rules.profile.connect
            violation = (circumvention.ip_literal_violation(host, connect) if port is None
                         else circumvention.connect_violation(host, port, connect))
            if violation is None:
                return None
            if violation.rule == circumvention.IP_LITERAL and \
                    self._decide_host(host, client_ip, user).list == "allow":
                return None
            return circumvention.refusal(violation, rules.profile.name, reason, engine.version)
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            return self._failure(engine, client_ip, user, exc)

    def _violation_decision(self, violation: circumvention.Violation, client_ip: str,
                            user: str | None) -> Decision:
        engine = self.engine
        if engine is None:
            return unavailable("unknown", "default", "none")
        try:
            rules, reason = engine.identify(user, client_ip)
            return circumvention.refusal(violation, rules.profile.name, reason, engine.version)
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            return self._failure(engine, client_ip, user, exc)

    def refuse_request(self, flow: http.HTTPFlow, decision: Decision) -> None:
        """Record a companion add-on's decision and answer with the block page (or, for a
        profile with on_error: allow, only record it)."""
        client_ip = _client_ip(flow)
        request = flow.request
        host = request_hosts(flow)[0]
        try:
            url = from_parts(request.scheme, host, request.port, request.path)
        except ValueError:
            url = None
        facts = RequestFacts(client_ip, self._user(flow), request.method, url, host,
                             request.headers.get("user-agent", ""))
        event_id = self._record(decision, facts)
        if decision.blocked:
            self._block(flow, decision, event_id, url, host)

    def companion_failed(self, flow: http.HTTPFlow, exc: BaseException) -> None:
        """A companion add-on raised: fail closed for profiles that block, as for decide()."""
        engine = self.engine
        if engine is None:
            decision = unavailable("unknown", "default", "none")
        else:
            client_ip = _client_ip(flow)
            decision = self._failure(engine, client_ip, self._user(flow), exc)
        self.refuse_request(flow, decision)

    def _user(self, flow: http.HTTPFlow) -> str | None:
        auth = flow.metadata.get("proxyauth")
        if auth:
            return auth[0]
        return self._users.get(flow.client_conn.id)

    def _record(self, decision: Decision, facts: RequestFacts, passthrough: bool = False,
                watch: WatchHit | None = None) -> str:
        event_id = new_event_id()
        engine = self.engine
        self.metrics.event(decision)
        if watch is not None:
            self.metrics.watchlist_hits.labels(watch.category).inc()
        record = make_record(event_id, event_action(decision, passthrough, watch is not None),
                             decision, facts, engine.device(facts.client_ip) if engine else "",
                             engine.policy.logging.keep_query if engine else False, watch=watch)
        if self.audit is not None:
            self.audit.write(record)
        if self.alerter is not None:
            self.alerter.offer(record)
        return event_id


def _stricter(a: Decision, b: Decision) -> bool:
    return ACTION_RANK[a.action] > ACTION_RANK[b.action]


_DEFAULT_PAGE = BlockPageSettings()
