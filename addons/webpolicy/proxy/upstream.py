"""Open the upstream connection before the first request, where no request can be blocked.

Bare mitmproxy connects upstream as soon as it knows where a tunnel goes ("eager"), so a new
connection's first request does not wait for the upstream handshake.  webpolicy runs lazy
(a blocked site is never contacted, not even by a handshake), which puts that wait on the
first request instead: at 64 connections it shows in the p99 (docs/benchmarks.md).  Where the
hosts the connection reaches or names are what gets decided (flows.early_connect_hosts) and no
path on them can be blocked for this client (decision.allows_every_path), the upstream TLS
connection is opened during the client's handshake, as eager would.

Why a wrapper round one built-in hook: mitmproxy calls a `-s` script's hooks before its own
TlsConfig's, whose `tls_clienthello` then sets `establish_server_tls_first` from the global
connection strategy (lazy, here).  So WebPolicy.tls_clienthello only marks the connection,
and TlsConfig's hook, wrapped on that one instance, opens it after its own say.  No per-request
cost: an add-on of its own would cost every request a dispatch (~15 us in an in-process
measurement).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mitmproxy import tls

from webpolicy.engine import circumvention
from webpolicy.engine.decision import allows_every_path
from webpolicy.proxy.flows import early_connect_hosts

if TYPE_CHECKING:
    from webpolicy.engine.engine import Engine

log = logging.getLogger("webpolicy")


class EarlyUpstream:
    def __init__(self) -> None:
        # client connection id -> (the ClientHelloData marked, the server address then): a
        # mark applies to that one hook call, never to a later handshake on the connection.
        self._marked: dict[str, tuple[tls.ClientHelloData, tuple | None]] = {}
        self._tlsconfig = None
        self._wrapper: Callable[[tls.ClientHelloData], None] | None = None

    def install(self, addons) -> None:
        """Wrap TlsConfig's hook; without it (another mitmproxy), every connection stays lazy."""
        self.uninstall()
        tlsconfig = addons.get("tlsconfig")
        original = getattr(tlsconfig, "tls_clienthello", None)
        if original is None:
            log.warning("webpolicy: mitmproxy has no tlsconfig add-on; upstream connections "
                        "open with each tunnel's first request")
            return

        @functools.wraps(original)
        def tls_clienthello(data: tls.ClientHelloData) -> None:
            original(data)
            self.apply(data)

        tlsconfig.tls_clienthello = tls_clienthello
        self._tlsconfig, self._wrapper = tlsconfig, tls_clienthello

    def uninstall(self) -> None:
        """Undo install (the script is unloaded or reloaded); never raises."""
        tlsconfig, wrapper = self._tlsconfig, self._wrapper
        self._tlsconfig = self._wrapper = None
        self._marked.clear()
        if tlsconfig is not None and vars(tlsconfig).get("tls_clienthello") is wrapper:
            del tlsconfig.tls_clienthello          # the class's own method again

    def mark(self, data: tls.ClientHelloData, engine: Engine, user: str | None) -> None:
        """Called by WebPolicy for an intercepted connection it did not refuse, whose SNI (if
        any) names the CONNECT host: open it early if no request to the hosts it reaches or
        names can be blocked or answered here (the DoH canary).  Any doubt, an error
        included, leaves it lazy; each request is decided regardless."""
        context = data.context
        if not context.server.tls:
            return
        client = context.client
        try:
            hosts = early_connect_hosts(context, data.client_hello.sni)
            if hosts and all(not circumvention.is_canary(host) and
                             allows_every_path(engine, host, client.peername[0], user)
                             for host in hosts):
                self._marked[client.id] = (data, context.server.address)
        except Exception:  # noqa: BLE001
            pass

    def apply(self, data: tls.ClientHelloData) -> None:
        marked = self._marked.pop(data.context.client.id, None)
        if marked is not None and marked[0] is data and marked[1] == data.context.server.address:
            data.establish_server_tls_first = True

    def forget(self, client_id: str) -> None:
        self._marked.pop(client_id, None)
