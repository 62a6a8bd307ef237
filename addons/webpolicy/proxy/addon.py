"""The mitmproxy add-on WebPolicy: lifecycle and reload, and the hooks it hands over.

This module owns what lasts: options, loading the policy, the reload swap, the metrics
endpoint, the safeguarding writer and alerter, and the order the hooks run in.  The hooks
themselves live by concern:
- requests.py: every HTTP request (plain, intercepted HTTPS, HTTP/2, WebSocket upgrades),
  decided before any upstream connection: the add-on forces `connection_strategy=lazy`, and
  upstream.py opens a connection early only where no request on it can be blocked;
- connections.py: CONNECT, TLS handshakes (pass-through and transparent mode, by SNI) and raw
  TCP in a tunnel;
- stages/: circumvention and safe search, run after the decision on flows that go on;
- chokepoint.py: `server_connect`, the backstop every upstream connection passes, whatever
  hook it came through (or none: raw TCP, pass-through, ignore_hosts);
- failsafe.py: the wrapper on every hook, so an exception refuses instead of forwarding;
- reviewform.py: the block page's "ask for a review" form, posted to a path of the gateway's
  own on any host, answered first in `requestheaders`/`request` and never forwarded;
- signin.py: proxy logins checked against the policy's directory, first in `http_connect`
  and `requestheaders`, in a thread when the directory must be asked.
They share one Gate (gate.py): the engine in force, who each connection is, and how a
decision is recorded and enforced.  Any error while deciding fails closed for profiles that
block: a raised exception in a hook would make mitmproxy forward the request (fail open).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

from mitmproxy import ctx, dns, exceptions, http, tcp, tls
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers import modes

from webpolicy.engine.decision import Decision
from webpolicy.engine.engine import Engine, load_engine
from webpolicy.engine.watchlist import Watchlist
from webpolicy.lists.compiler import open_cache
from webpolicy.lists.remote import UPDATED, PolicySources, Refresher
from webpolicy.monitoring.metrics import Metrics
from webpolicy.policy import history
from webpolicy.policy.model import PolicyError
from webpolicy.proxy import reuseport
from webpolicy.proxy.chokepoint import Chokepoint
from webpolicy.proxy.connections import ConnectionFilter
from webpolicy.proxy.failsafe import failsafe, refuse
from webpolicy.proxy.gate import DEFAULT_OWN_NETWORKS, Gate, parse_networks
from webpolicy.proxy.reloader import Reloader
from webpolicy.proxy.requests import RequestFilter
from webpolicy.proxy.reviewform import FORM as REVIEW_FORM
from webpolicy.proxy.reviewform import ReviewForm
from webpolicy.proxy.signin import SignIn
from webpolicy.proxy.signinpage import FORM, SignInPage, SessionStoreError
from webpolicy.proxy.stages.circumvention import Circumvention
from webpolicy.proxy.stages.safesearch import SafeSearch
from webpolicy.proxy.upstream import EarlyUpstream
from webpolicy.safeguarding.alerts import Alerter
from webpolicy.safeguarding.alertstate import FILE_NAME as ALERT_STATE_FILE
from webpolicy.safeguarding.alertstate import SharedState
from webpolicy.safeguarding.logwriter import LogDirectoryError, LogWriter, preflight
from webpolicy.safeguarding.reviewrequests import ReviewTokens

log = logging.getLogger("webpolicy")


class WebPolicy:
    def __init__(self) -> None:
        # One of `webpolicy run --workers N`'s workers (cli/supervisor.py), or None: then
        # metrics are shared through files the supervisor serves, and so is alert state.
        self.worker = reuseport.worker_number()
        self.metrics = Metrics(shared=self.worker is not None)
        self.gate = Gate(self.metrics)
        if (key := reuseport.form_key()) is not None:   # workers: one key for all of them
            self.gate.review_tokens = ReviewTokens(key)
        self.reloader: Reloader | None = None
        self.refresher: Refresher | None = None     # downloads URL list sources when due
        self._loop: asyncio.AbstractEventLoop | None = None
        self.early_upstream = EarlyUpstream()
        self.requests = RequestFilter(self.gate)
        self.connections = ConnectionFilter(self.gate, self.early_upstream)
        self.chokepoint = Chokepoint(self.gate)
        self.circumvention = Circumvention(self.gate)
        self.safesearch = SafeSearch(self.gate)
        self.signin = SignIn(self.gate, reuseport.worker_count())
        self.reviewform = ReviewForm(self.gate)
        self.signinpage = SignInPage(self.gate, self.signin)
        self.gate.sign_in_waiting = self.signinpage.waiting
        self.gate.sign_out_link = self.signinpage.block_page_link

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
        loader.add_option("webpolicy_own_networks", str, DEFAULT_OWN_NETWORKS,
                          "Addresses that are the gateway itself, comma-separated networks: a "
                          "client may not name them as a destination unless they are listed "
                          "under allow: in the policy.")
        self._hold_sighup()

    def _hold_sighup(self) -> None:
        """From the moment the add-on loads until `running` installs the real handler, a
        SIGHUP (an admin's reload, a log rotation) is held for later instead of killing the
        proxy, Python's default: compiling big lists at start-up takes seconds."""
        if threading.current_thread() is not threading.main_thread():
            return
        def held(signum, frame) -> None:
            self._sighup_held = True
        self._sighup_held = False
        signal.signal(signal.SIGHUP, held)

    def configure(self, updated: set[str]) -> None:
        _refuse_unsafe_options(updated)
        if "connection_strategy" in updated or "webpolicy_policy" in updated:
            if ctx.options.connection_strategy != "lazy":
                # Eager would open the upstream TCP+TLS connection before a request is decided.
                ctx.options.update(connection_strategy="lazy")
        if "webpolicy_own_networks" in updated:
            try:
                self.gate.own_networks = parse_networks(
                    ctx.options.webpolicy_own_networks)
            except ValueError as exc:
                raise exceptions.OptionsError(f"webpolicy_own_networks: {exc}") from None
        if "webpolicy_reload_interval" in updated:
            self._reload_interval()
        if "webpolicy_policy" in updated:
            self._load_initial(Path(ctx.options.webpolicy_policy))
        if "proxyauth" in updated and self.gate.engine is not None:
            try:
                _refuse_any_login_for_named_users(self.gate.engine)
            except UnsafeConfiguration as exc:
                raise exceptions.OptionsError(f"webpolicy: {exc}") from None

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
            preflight(engine.policy.logging.directory)
            _refuse_any_login_for_named_users(engine)
            self.signinpage.install(engine.policy)
        except (PolicyError, LogDirectoryError, UnsafeConfiguration, SessionStoreError) as exc:
            self.metrics.reload_failed()
            raise exceptions.OptionsError(f"webpolicy: the policy cannot be loaded:\n{exc}") from None
        self._install(engine)
        self._record_history("accepted", "start", engine=engine)

    def running(self) -> None:
        engine = self.gate.engine
        if engine is None:
            return
        if self.worker is not None and not self._listening_shared():
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
                                 lambda path: self._load_for_reload(path, cache),
                                 self._reloaded, self._reload_failed,
                                 self._reload_interval())
        self.reloader.start(engine.policy)
        if getattr(self, "_sighup_held", False):
            log.info("webpolicy: a SIGHUP came during start-up: reloading now")
            self.reloader.request()
        # A replaced last good copy is a changed list file: the reloader picks it up (every
        # worker's does; only worker 0 downloads).
        if not self.worker:
            self.refresher = Refresher(PolicySources(Path(ctx.options.webpolicy_policy)),
                                       self._sources_refreshed).start()
        self.gate.alerter = self._alerter(engine)
        # What is alive now (mitmproxy, the add-ons, the first policy) lives as long as the
        # process: out of the cyclic GC's reach, a full collection, which every request in
        # flight waits out, takes a few ms instead of ~40 (a reload used to trigger one).
        gc.freeze()
        worker = "" if self.worker is None else f" (worker {self.worker}, pid {os.getpid()})"
        log.info("webpolicy: filtering with policy %s%s", engine.version, worker)

    def _listening_shared(self) -> bool:
        """A worker must listen with SO_REUSEPORT (reuseport.py): checked here, once
        mitmproxy's servers are up; a worker that does not is stopped (the supervisor says
        why), not left to take no connections or all of them."""
        try:
            count = reuseport.verify(ctx.master.addons.get("proxyserver"))
        except reuseport.ReusePortError as exc:
            log.error("webpolicy: %s", exc)
            ctx.master.shutdown()
            return False
        log.info("webpolicy: worker %d shares %d listening socket(s) (SO_REUSEPORT)",
                 self.worker, count)
        return True

    def _alerter(self, engine: Engine) -> Alerter:
        """The alert thread; with workers, its repeat counts and suppressions are shared
        through the log directory (alertstate.py), in wall-clock time."""
        policy = engine.policy
        if self.worker is None:
            return Alerter(policy.alerts, self._count_alert, policy.block_page.organisation).start()
        state = SharedState(Path(policy.logging.directory) / ALERT_STATE_FILE)
        return Alerter(policy.alerts, self._count_alert, policy.block_page.organisation,
                       clock=time.time, state=state).start()

    def done(self) -> None:
        self.early_upstream.uninstall()            # never raises: the rest must stop too
        if self.reloader:
            self.reloader.stop()
        if self.refresher:
            self.refresher.stop()
        gate = self.gate
        if gate.log_writer:
            gate.log_writer.close()
            gate.log_writer = None
        if gate.alerter:
            gate.alerter.close()                   # a few seconds to send what is queued
            gate.alerter = None
        self.signin.close()
        self.signinpage.close()
        self.metrics.stop()

    def _sources_refreshed(self, states, outcomes) -> None:
        """The Refresher's report (its thread): metrics; and a reload when a copy appeared
        that the policy in force does not watch (its reload was refused for want of it)."""
        self.metrics.list_sources(states, outcomes)
        engine, reloader = self.gate.engine, self.reloader
        watched = set(engine.policy.files()) if engine else set()
        if reloader and any(o.result == UPDATED and not watched.issuperset(o.source.copies())
                            for o in outcomes):
            if self.worker is not None:
                os.kill(os.getppid(), signal.SIGHUP)   # the supervisor reloads every worker
            else:
                reloader.request()

    def _sighup(self) -> None:
        log.info("webpolicy: SIGHUP, reloading the policy")
        if self.reloader:
            self.reloader.request()

    def _load_for_reload(self, path: Path, cache) -> Engine:
        """The reloader's build (off the loop): a policy whose new logging.directory cannot
        hold the log is refused like a broken one, and the old writer keeps writing."""
        engine = load_engine(path, cache, reload=True)
        _refuse_any_login_for_named_users(engine)
        current = self.gate.engine
        directory = engine.policy.logging.directory
        if current is None or current.policy.logging.directory != directory:
            preflight(directory)
        self.signinpage.install(engine.policy)     # a store that cannot open refuses it
        return engine

    def _install(self, engine: Engine) -> Engine | None:
        """Swap a whole new engine in: one assignment, so no request sees a mixture.  Returns
        the engine replaced (the reloader frees it, piecemeal)."""
        gate = self.gate
        old = gate.engine
        settings = engine.policy.logging
        if gate.log_writer is None or (old and old.policy.logging != settings):
            previous, gate.log_writer = gate.log_writer, LogWriter(
                settings.directory, settings.retention_days, self._log_write_failed)
            if previous:
                previous.close()
        self._install_watchlist(engine)
        gate.engine = engine
        self.metrics.policy_loaded(engine)
        for warning in engine.warnings:
            log.warning("webpolicy: %s", warning)
        log.info("webpolicy: policy %s in force (%s)", engine.version,
                 ", ".join(f"{n}: {s.entries}" for n, s in engine.status.items()))
        return old

    def _reloaded(self, engine: Engine) -> Engine | None:
        """Called from the reload thread; the swap itself is atomic.  Returns the old engine."""
        old = self._install(engine)
        self._record_history("accepted", "reload", engine=engine, old=old)
        try:
            self._serve_metrics(engine)        # metrics.listen may have changed
        except OSError as exc:
            log.error("webpolicy: %s", exc)
        return old

    def _serve_metrics(self, engine: Engine) -> None:
        """Start, move or stop the metrics endpoint as the policy and options say."""
        settings = engine.policy.metrics
        if self.worker is not None:
            return                     # the supervisor serves every worker's metrics
        if ctx.options.webpolicy_metrics and settings.enabled:
            self.metrics.serve(settings.host, settings.port)
        else:
            self.metrics.stop()

    def _reload_failed(self, exc: Exception) -> None:
        self.metrics.reload_failed()
        version = self.gate.engine.version if self.gate.engine else "none"
        log.error("webpolicy: reload refused, policy %s stays in force:\n%s", version, exc)
        problems = [str(p) for p in exc.problems] if isinstance(exc, PolicyError) else [str(exc)]
        self._record_history("refused", "reload", problems=problems)

    def _record_history(self, event: str, how: str, *, engine: Engine | None = None,
                        old: Engine | None = None, problems: list[str] | None = None) -> None:
        """The policy history (policy/history.py) of a change the proxy accepted or refused, by
        the policy file's owner (a hand edit; `webpolicy apply` records its own, and this adds
        nothing for a file already recorded).  Never on the event loop (start-up and the reload
        thread); a history that cannot be written is a warning, never a reason to stop filtering."""
        path = Path(ctx.options.webpolicy_policy)
        try:
            history.record(path, event, history.file_owner(path), how,
                           version=engine.version if engine else "", problems=problems,
                           lists=history.list_changes(_entry_counts(old), _entry_counts(engine)))
        except (history.HistoryError, OSError) as exc:
            log.warning("webpolicy: the policy history was not written: %s", exc)

    def _log_write_failed(self, exc: Exception) -> None:
        self.metrics.log_write_errors.inc()

    def _install_watchlist(self, engine: Engine) -> None:
        """Compile the watchlist beside the engine (off the loop when reloading); terms files
        that cannot be read are warnings: filtering never depends on them."""
        watchlist = Watchlist.compile(engine.policy.watchlist.values(), str(engine.policy.path))
        for problem in watchlist.problems:
            log.warning("webpolicy: %s", problem)
        self.requests.watchlist = watchlist
        if self.gate.alerter:
            self.gate.alerter.configure(engine.policy.alerts, engine.policy.block_page.organisation)

    def _count_alert(self, channel: str, result: str) -> None:
        self.metrics.alerts.labels(channel, result).inc()

    # -- hooks: each hands over to the part that owns the concern ------------------------
    # Each is wrapped by failsafe: an exception refuses what the hook was given (a raised
    # hook would make mitmproxy forward the request).

    @failsafe
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Sign in (directory logins); decide; then, on a flow that goes on, the
        circumvention and safe-search stages.  Each stage fails closed on its own: a raised
        hook would forward the request."""
        if flow.response is not None:      # e.g. proxyauth's 407: never overwrite it
            return None
        if self.reviewform.begin(flow):    # the block page's form: the gateway's own path
            return None
        asking = self._identify(flow)
        if asking is not None:             # the directory is being asked, in a thread
            return self._signed_in_then(asking, flow, self._filter_request)
        if flow.response is not None:      # the sign-in's 407
            return None
        return self._filter_request(flow)

    def _identify(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """A client that signs in on the gateway's page (signinpage.py) is its session's
        person; any other, with directory: in the policy, needs a proxy login (signin.py)."""
        if self.signinpage.covers(flow.client_conn):
            return self.signinpage.begin(flow)
        return self.signin.begin(flow)

    async def _signed_in_then(self, asking: Awaitable[None], flow: http.HTTPFlow,
                              hook) -> None:
        """After the directory's answer, the rest of the hook, failing closed like failsafe:
        an exception raised here, after the hook returned, would escape the wrapper."""
        try:
            # signin.py's awaitables catch their own errors, but the sign-in page's session
            # lookup (a SQLite read in a thread) may raise: guarded here, since an escaped
            # exception would forward the flow undecided (a reserved path too).
            await asking
            if flow.response is not None:
                return
            more = hook(flow)
            if more is not None:
                await more
        except Exception as exc:  # noqa: BLE001 - nothing may escape: it would forward
            refuse(self.gate, self.chokepoint, self.connections, flow, hook.__name__, exc)

    async def _answered(self, answering: Awaitable[None] | None, flow: http.HTTPFlow) -> None:
        """A posted sign-in form is answered by the gateway, whatever happens: an exception,
        or no answer at all, refuses it (it holds a password: it must never go upstream)."""
        try:
            if answering is not None:
                await answering
        except Exception as exc:  # noqa: BLE001 - nothing may escape: it would forward
            refuse(self.gate, self.chokepoint, self.connections, flow, "request", exc)
        if flow.response is None:
            refuse(self.gate, self.chokepoint, self.connections, flow, "request",
                   RuntimeError("the sign-in form was not answered"))

    def _filter_request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if FORM in flow.metadata:          # a posted sign-in form: answered in `request`
            return None
        filtered = self.requests.filter(flow)
        decided_hosts = filtered.hosts
        if flow.response is None and self.signinpage.serve(flow):   # not signed in yet
            self.metrics.observe(filtered.decision.profile, filtered.decision.action,
                                 filtered.seconds)
            return None
        if flow.response is None:
            self.circumvention.requestheaders(flow, decided_hosts)
        if flow.response is None:
            self.safesearch.requestheaders(flow, decided_hosts)
        self.metrics.observe(filtered.decision.profile, _counted_action(filtered.decision, flow),
                             filtered.seconds)
        if flow.response is None:          # its connection may open on the names decided
            self.chokepoint.allow_http(flow, decided_hosts)
            return None
        # A statutory or critical block: the page waits for its record to be on disk.
        return self.gate.on_disk(flow.response.headers.get("x-webpolicy-reference"))

    @failsafe
    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.metadata.get(REVIEW_FORM):  # answered here, never forwarded
            return self.reviewform.answer(flow)
        if FORM in flow.metadata:          # the sign-in page's own form, never forwarded
            return self._answered(self.signinpage.request(flow), flow)
        self.safesearch.request(flow)      # form posts: the body is only here
        return None
        # No stage moves a request to another host; if one ever did, the choke point would
        # find no mark for the new address and decide it as it decides raw connections.

    @failsafe
    def response(self, flow: http.HTTPFlow) -> None:
        self.chokepoint.response(flow)     # a non-WebSocket 101 would become a raw relay

    @failsafe
    def server_connect(self, data: server_hooks.ServerConnectionHookData
                       ) -> Awaitable[None] | None:
        return self.chokepoint.server_connect(data)     # transparent modes: an address check

    @failsafe
    def dns_request(self, flow: dns.DNSFlow) -> None:
        self.circumvention.dns_request(flow)

    @failsafe
    def http_connect(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        self.chokepoint.forget_http(flow.client_conn.id)
        asking = self._identify(flow)
        if asking is not None:
            return self._signed_in_then(asking, flow, self._filter_connect)
        if flow.response is None:
            self._filter_connect(flow)
        return None

    def _filter_connect(self, flow: http.HTTPFlow) -> None:
        self.connections.http_connect(flow)

    @failsafe
    def socks5_auth(self, data: modes.Socks5AuthData) -> None:
        self.connections.socks5_auth(data)

    @failsafe
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        self.connections.tls_clienthello(data)

    @failsafe
    def tls_start_client(self, data: tls.TlsData) -> None:
        self.connections.tls_start_client(data)

    @failsafe
    def tcp_start(self, flow: tcp.TCPFlow) -> Awaitable[None] | None:
        self.chokepoint.forget_http(flow.client_conn.id)
        if self.signinpage.covers(flow.client_conn):   # nothing upstream before sign-in
            return self._tcp_signed_in_then(flow)
        self._filter_tcp(flow)
        return None

    def _filter_tcp(self, flow: tcp.TCPFlow) -> None:
        if self.connections.tcp_start(flow):           # recorded there: refuse, once
            self.chokepoint.refuse_client(flow.client_conn.id)

    async def _tcp_signed_in_then(self, flow: tcp.TCPFlow) -> None:
        """Raw bytes (or a passed-through TLS stream) from a client that signs in on the
        page get no sign-in page: without a session they are refused, with one decided as
        its person (a tunnel opened before sign-in was decided as the client's network).
        mitmproxy awaits this before it opens the connection; nothing may escape."""
        try:
            person = await self.signinpage.person(flow.client_conn)
            if person is None:
                self.chokepoint.refuse_client(flow.client_conn.id)
                flow.kill()
                return
            self.gate.users[flow.client_conn.id] = person
            self._filter_tcp(flow)
        except Exception as exc:  # noqa: BLE001 - it would relay
            refuse(self.gate, self.chokepoint, self.connections, flow, "tcp_start", exc)

    @failsafe
    def client_disconnected(self, client) -> None:
        self.chokepoint.client_disconnected(client.id)
        self.connections.client_disconnected(client)
        self.signin.client_disconnected(client.id)


def _entry_counts(engine: Engine | None) -> dict[str, int] | None:
    return {name: s.entries for name, s in engine.status.items()} if engine else None


class UnsafeConfiguration(ValueError):
    """A mitmproxy option or combination that would quietly weaken filtering."""


def _refuse_unsafe_options(updated: set[str]) -> None:
    """Options that would let a blocked request through or leave it unanswered are refused
    at start-up (and when set later), with what to do instead."""
    if "stream_large_bodies" in updated and ctx.options.stream_large_bodies:
        raise exceptions.OptionsError(
            "webpolicy: stream_large_bodies is not supported: mitmproxy cannot answer a request "
            "it has started to stream, so a blocked upload above that size would get no block "
            "page.  Remove --set stream_large_bodies (body_size_limit still bounds memory).")


def _refuse_any_login_for_named_users(engine: Engine) -> None:
    """`--proxyauth any` takes any password: with clients.users naming staff, anyone could
    type a staff name and be filtered as staff.  And a policy with `directory:` does its own
    login (signin.py): mitmproxy's --proxyauth on top would ask for a second one."""
    if ctx.options.proxyauth and engine.policy.directory is not None:
        raise UnsafeConfiguration(
            f"{engine.policy.path} has directory: (proxy logins checked by webpolicy against "
            "the directory) and --proxyauth is set too: remove --proxyauth.")
    if ctx.options.proxyauth == "any" and engine.policy.users:
        raise UnsafeConfiguration(
            "--proxyauth any accepts any password, so anyone could sign in as a user listed "
            f"under clients.users in {engine.policy.path} and get that user's profile.  Check "
            "passwords (--proxyauth @/path/to/htpasswd or an LDAP directory), or remove "
            "clients.users.")


def _counted_action(decision: Decision, flow: http.HTTPFlow) -> str:
    """The request's action as counted in webpolicy_requests_total: the decision's, unless a
    stage refused what the decision allowed (an IP-literal request, the DoH canary)."""
    response = flow.response
    if decision.action != "block" and response is not None and response.status_code >= 400:
        return "block"
    return decision.action
