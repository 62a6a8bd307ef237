"""Open the upstream connection before the first request, where no request can be blocked.

Bare mitmproxy connects upstream as soon as it knows where a tunnel goes ("eager"), so a new
connection's first request does not wait for the upstream handshake.  webpolicy runs lazy
(a blocked site is never contacted, not even by a handshake), which puts that wait on the
first request instead: at 64 connections it shows in the p99 (docs/benchmarks.md).  Where the
host itself is what gets decided (a CONNECT or SOCKS name, or reverse mode's configured
upstream) and no path on it can be blocked for this client (decision.allows_every_path),
the upstream TLS connection is opened during the client's handshake, as eager would.

Why a wrapper round one built-in hook: mitmproxy calls a `-s` script's hooks before its own
TlsConfig's, whose `tls_clienthello` then sets `establish_server_tls_first` from the global
connection strategy (lazy, here).  So WebPolicy.tls_clienthello only marks the connection,
and TlsConfig's hook, wrapped on that one instance, opens it after its own say.  No per-request
cost: an add-on of its own would cost every request a dispatch (~15 us, measured).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mitmproxy import tls

from . import circumvention
from .canonical import canonical_host
from .decision import allows_every_path
from .flows import early_connect_host

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("webpolicy")


class EarlyUpstream:
    def __init__(self) -> None:
        self._marked: set[str] = set()      # client connection ids, for one hook call
        self._tlsconfig = None
        self._original: Callable[[tls.ClientHelloData], None] | None = None

    def install(self, addons) -> None:
        """Wrap TlsConfig's hook; without it (another mitmproxy), every connection stays lazy."""
        tlsconfig = addons.get("tlsconfig")
        original = getattr(tlsconfig, "tls_clienthello", None)
        if original is None:
            log.warning("webpolicy: mitmproxy has no tlsconfig add-on; upstream connections "
                        "open with each tunnel's first request")
            return
        self.uninstall()
        self._tlsconfig, self._original = tlsconfig, original

        def tls_clienthello(data: tls.ClientHelloData) -> None:
            original(data)
            self.apply(data)

        tlsconfig.tls_clienthello = tls_clienthello

    def uninstall(self) -> None:
        """Undo install (the script is unloaded or reloaded)."""
        if self._tlsconfig is not None:
            del self._tlsconfig.tls_clienthello          # the class's own method again
            self._tlsconfig = self._original = None
        self._marked.clear()

    def mark(self, data: tls.ClientHelloData, engine: Engine, user: str | None) -> None:
        """Called by WebPolicy for an intercepted connection it did not refuse, whose SNI (if
        any) names the CONNECT host: open it early if no request to the host can be blocked
        or answered here (the DoH canary).  Any doubt, an error included, leaves it lazy;
        each request is decided regardless."""
        context = data.context
        if not context.server.tls:
            return
        client = context.client
        try:
            host = early_connect_host(context)
            if host is None:
                return
            host = canonical_host(host)
            if circumvention.is_canary(host):          # answered here, never contacted
                return
            if allows_every_path(engine, host, client.peername[0], user):
                self._marked.add(client.id)
        except Exception:  # noqa: BLE001
            pass

    def apply(self, data: tls.ClientHelloData) -> None:
        client_id = data.context.client.id
        if client_id in self._marked:
            self._marked.discard(client_id)
            data.establish_server_tls_first = True

    def forget(self, client_id: str) -> None:
        self._marked.discard(client_id)
