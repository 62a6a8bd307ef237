"""The mitmproxy add-on: a thin adapter from flows to decide() and back to enforcement.

Every way a request can pass through mitmproxy is covered:
- plain HTTP, intercepted HTTPS, HTTP/2 and WebSocket upgrades: `requestheaders`, before any
  upstream connection (the add-on forces `connection_strategy=lazy`, so an intercepted tunnel
  does not open the upstream connection before the decision either);
- pass-through TLS (pinned apps): `http_connect` (explicit proxy) and `tls_clienthello` /
  `tls_start_client` (transparent mode, by SNI) refuse a blocked connection;
- anything else inside a tunnel (raw TCP): `tcp_start`.
Any error while deciding fails closed for profiles that block: a raised exception in a hook
would make mitmproxy forward the request (fail open), so hook bodies never let one escape.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from mitmproxy import ctx, exceptions, http, tcp, tls
from OpenSSL import SSL

from . import blockpage
from .auditlog import AuditLog
from .canonical import CanonicalURL, canonical_host, from_parts
from .decision import Decision, decide, unavailable
from .engine import Engine, build_engine
from .events import RequestFacts, event_action, make_record, new_event_id
from .metrics import Metrics
from .policy import BlockPageSettings, PolicyError, load_policy
from .reloader import Reloader

log = logging.getLogger("webpolicy")


def load_engine(path: Path) -> Engine:
    return build_engine(load_policy(path))


class WebPolicy:
    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.metrics = Metrics()
        self.audit: AuditLog | None = None
        self.reloader: Reloader | None = None
        self._users: dict[str, str] = {}          # client connection id -> proxy-auth user
        self._refuse: dict[str, Decision] = {}    # client connection id -> refusal (TLS hooks)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def load(self, loader) -> None:
        loader.add_option("webpolicy_policy", str, "policy.yaml", "Path of the policy file.")
        loader.add_option("webpolicy_reload_interval", str, "2",
                          "Seconds between checks for edited policy or list files; 0 checks "
                          "only on SIGHUP.")
        loader.add_option("webpolicy_metrics", bool, True,
                          "Serve Prometheus metrics where policy.yaml's metrics.listen says.")

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
        try:
            engine = load_engine(path)
        except PolicyError as exc:
            self.metrics.reloads.labels("failure").inc()
            raise exceptions.OptionsError(f"webpolicy: the policy cannot be loaded:\n{exc}") from None
        self._install(engine)

    def running(self) -> None:
        engine = self.engine
        if engine is None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            self._loop.add_signal_handler(signal.SIGHUP, self._sighup)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
        if ctx.options.webpolicy_metrics and engine.policy.metrics.enabled:
            settings = engine.policy.metrics
            try:
                self.metrics.serve(settings.host, settings.port)
            except OSError as exc:
                log.error("webpolicy: %s (set metrics.listen in policy.yaml)", exc)
                ctx.master.shutdown()
                return
        self.reloader = Reloader(Path(ctx.options.webpolicy_policy), load_engine,
                                 self._reloaded, self._reload_failed,
                                 self._reload_interval())
        self.reloader.start(engine.policy)
        log.info("webpolicy: filtering with policy %s", engine.version)

    def done(self) -> None:
        if self.reloader:
            self.reloader.stop()
        if self.audit:
            self.audit.close()
            self.audit = None
        self.metrics.stop()

    def _sighup(self) -> None:
        log.info("webpolicy: SIGHUP, reloading the policy")
        if self.reloader:
            self.reloader.request()

    def _install(self, engine: Engine) -> None:
        """Swap a whole new engine in: one assignment, so no request sees a mixture."""
        old = self.engine
        settings = engine.policy.logging
        if self.audit is None or (old and old.policy.logging != settings):
            previous, self.audit = self.audit, AuditLog(settings.directory, settings.retention_days,
                                                        self._log_write_failed)
            if previous:
                previous.close()
        self.engine = engine
        self.metrics.policy_loaded(engine)
        for warning in engine.warnings:
            log.warning("webpolicy: %s", warning)
        log.info("webpolicy: policy %s in force (%s)", engine.version,
                 ", ".join(f"{n}: {s.entries}" for n, s in engine.status.items()))

    def _reloaded(self, engine: Engine) -> None:
        """Called from the reload thread; the swap itself is atomic."""
        self._install(engine)

    def _reload_failed(self, exc: Exception) -> None:
        self.metrics.reloads.labels("failure").inc()
        version = self.engine.version if self.engine else "none"
        log.error("webpolicy: reload refused, policy %s stays in force:\n%s", version, exc)

    def _log_write_failed(self, exc: Exception) -> None:
        self.metrics.log_write_errors.inc()

    # -- HTTP -----------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:      # e.g. proxyauth's 407: never overwrite it
            return
        started = time.perf_counter()
        client_ip = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        user = self._user(flow)
        decision, url, host = self._decide_request(flow, client_ip, user)
        self.metrics.observe(decision.profile, decision.action, time.perf_counter() - started)
        if decision.action == "allow" and not decision.error:
            return
        facts = RequestFacts(client_ip, user, flow.request.method, url, host,
                             flow.request.headers.get("user-agent", ""))
        event_id = self._record(decision, facts)
        if decision.blocked:
            self._block(flow, decision, event_id, url, host)

    def _decide_request(self, flow: http.HTTPFlow, client_ip: str,
                        user: str | None) -> tuple[Decision, CanonicalURL | None, str]:
        """Decide on the host actually requested (Host / :authority) and the connection's host.

        An allowed CONNECT/SNI host carrying a blocked Host header (domain fronting) is blocked:
        both are decided and the stricter answer wins.
        """
        engine = self.engine
        request = flow.request
        host = request.pretty_host
        if engine is None:
            return unavailable("unknown", "default", "none"), None, host
        try:
            url = from_parts(request.scheme, host, request.port, request.path)
            decision = decide(engine, url, client_ip, user)
            if request.host != host and not decision.blocked:
                other = from_parts(request.scheme, request.host, request.port, request.path)
                if other.host != url.host:
                    second = decide(engine, other, client_ip, user)
                    if _stricter(second, decision):
                        decision, url = second, other
            return decision, url, host
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            return self._failure(engine, client_ip, user, exc), None, host

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
        flow.response = http.Response.make(page.status, page.body, {
            "Content-Type": page.content_type,
            "Cache-Control": "no-store",
            "X-Webpolicy-Reference": event_id,
        })

    # -- connections that never become HTTP requests --------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        user = self._user(flow)
        if user:
            self._users[flow.client_conn.id] = user
        engine = self.engine
        host = flow.request.host
        if engine is not None and not self._is_passthrough(engine, host):
            return                         # intercepted: every request inside is decided
        decision = self._decide_host(host, flow.client_conn.peername[0], user)
        if decision.blocked:
            facts = RequestFacts(flow.client_conn.peername[0], user, "CONNECT", None,
                                 f"{host}:{flow.request.port}")
            self._record(decision, facts, passthrough=True)
            self.metrics.passthrough_refused.labels(decision.profile, "blocked").inc()
            flow.response = http.Response.make(
                blockpage.status_for(decision), b"Blocked by the web filter\n",
                {"Content-Type": "text/plain"})

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Pass-through hosts are not intercepted; in transparent mode SNI is all we have."""
        engine = self.engine
        host = data.client_hello.sni or (data.context.server.address or ("",))[0]
        if not host or engine is None or not self._is_passthrough(engine, host):
            return
        client = data.context.client
        user = self._users.get(client.id)
        decision = self._decide_host(host, client.peername[0], user)
        if decision.blocked:
            facts = RequestFacts(client.peername[0], user, "TLS", None, host)
            self._record(decision, facts, passthrough=True)
            self.metrics.passthrough_refused.labels(decision.profile, "blocked").inc()
            self._refuse[client.id] = decision
        else:
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
            flow.kill()

    def client_disconnected(self, client) -> None:
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

    def _user(self, flow: http.HTTPFlow) -> str | None:
        auth = flow.metadata.get("proxyauth")
        if auth:
            return auth[0]
        return self._users.get(flow.client_conn.id)

    def _record(self, decision: Decision, facts: RequestFacts, passthrough: bool = False) -> str:
        event_id = new_event_id()
        engine = self.engine
        if decision.failed_closed:
            self.metrics.fail_closed.labels(decision.profile).inc()
        elif decision.blocked and decision.list:
            self.metrics.blocks.labels(decision.profile, decision.list, decision.category).inc()
        if self.audit is not None:
            record = make_record(event_id, event_action(decision, passthrough), decision, facts,
                                 engine.device(facts.client_ip) if engine else "",
                                 engine.policy.logging.keep_query if engine else False)
            self.audit.write(record)
        return event_id


def _stricter(a: Decision, b: Decision) -> bool:
    rank = {"allow": 0, "log": 1, "block": 2}
    return rank[a.action] > rank[b.action]


_DEFAULT_PAGE = BlockPageSettings()
