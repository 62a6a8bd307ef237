"""Every hook fails closed by construction, and text from the wire is always printable.

An exception that escapes an add-on hook is logged by mitmproxy as "Addon error" and the
flow goes on: the request is forwarded (fail open).  `failsafe` wraps each WebPolicy hook so
that nothing escapes: whatever the hook was given is refused instead.
- an HTTP flow (requestheaders, request, http_connect) gets the unavailable block page of the
  client's profile, or, if even that cannot be made, a fixed 503 rendered at import time.
  Always blocked, whatever the profile's `on_error`: that setting is for the filter being
  unable to decide (gate.failure), and an escaped exception means the hook's own guards
  failed, so it cannot be known that statutory and deny rules were applied;
- a connection (server_connect, TLS, TCP, SOCKS5 login) is refused: the server connection gets
  an error (mitmproxy then never opens it), the TCP flow is killed, the client connection is
  refused at the choke point from then on, the login is invalid;
- a DNS query is answered SERVFAIL.
Each is counted in `webpolicy_filter_errors` and logged (as a WARNING: mitmproxy exits on an
ERROR logged during start-up).

The root cause of the one failure seen so far (a non-UTF-8 byte in Host made the block page
raise) is fixed in text.py; this wrapper is for the next one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mitmproxy import dns, http, tcp, tls
from mitmproxy.net.dns import response_codes
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers import modes

from webpolicy.engine.decision import unavailable

if TYPE_CHECKING:
    from webpolicy.proxy.chokepoint import Chokepoint
    from webpolicy.proxy.connections import ConnectionFilter
    from webpolicy.proxy.gate import Gate

log = logging.getLogger("webpolicy")

FALLBACK_STATUS = 503
FALLBACK_BODY = (b"The web filter could not check this request, so it has been held back "
                 b"to keep you safe. Please try again in a few minutes.\n")
# Made once, at import: answering an error must not depend on anything that can fail then.
_FALLBACK = http.Response.make(FALLBACK_STATUS, FALLBACK_BODY, {
    "content-type": "text/plain; charset=utf-8", "cache-control": "no-store"})

Hook = TypeVar("Hook", bound=Callable[..., None])


def failsafe(hook: Hook) -> Hook:
    """Wrap a WebPolicy hook (self, one argument): an exception refuses the argument."""
    @functools.wraps(hook)
    def guarded(self, data: Any) -> Any:
        try:
            return hook(self, data)         # an awaitable, if any, is awaited by mitmproxy
        except Exception as exc:  # noqa: BLE001 - the point: nothing may escape
            refuse(self.gate, self.chokepoint, self.connections, data, hook.__name__, exc)
            return None
    return guarded                                   # type: ignore[return-value]


def refuse(gate: Gate, chokepoint: Chokepoint, connections: ConnectionFilter, data: Any,
           hook: str, exc: BaseException) -> None:
    """Refuse whatever a failed hook was given; never raises."""
    try:
        gate.metrics.filter_errors.inc()
        log.warning("webpolicy: hook %s raised, refusing: %r", hook, exc)
    except Exception:  # noqa: BLE001
        pass
    try:
        _refuse(gate, chokepoint, connections, data)
    except Exception:  # noqa: BLE001 - the last resort for each kind
        _last_resort(data)


def _refuse(gate: Gate, chokepoint: Chokepoint, connections: ConnectionFilter,
            data: Any) -> None:
    if isinstance(data, http.HTTPFlow):
        _block_http(gate, data)
    elif isinstance(data, server_hooks.ServerConnectionHookData):
        data.server.error = "webpolicy refused this connection: internal error"
    elif isinstance(data, tcp.TCPFlow):
        chokepoint.refuse_client(data.client_conn.id)
        data.kill()
    elif isinstance(data, (tls.ClientHelloData, tls.TlsData)):
        client = data.context.client
        chokepoint.refuse_client(client.id)
        connections.refuse_handshake(client.id)
    elif isinstance(data, modes.Socks5AuthData):
        data.valid = False
        chokepoint.refuse_client(data.client_conn.id)
    elif isinstance(data, dns.DNSFlow):
        data.response = data.request.fail(response_codes.SERVFAIL)


def _last_resort(data: Any) -> None:
    """What refusing costs nothing: a fixed response, a server error, a kill."""
    try:
        if isinstance(data, http.HTTPFlow):
            data.response = _FALLBACK.copy()
        elif isinstance(data, server_hooks.ServerConnectionHookData):
            data.server.error = "webpolicy refused this connection"
        elif hasattr(data, "kill"):
            data.kill()
    except Exception:  # noqa: BLE001
        pass


def _block_http(gate: Gate, flow: http.HTTPFlow) -> None:
    """The client's profile's unavailable page (always a block), recorded."""
    engine = gate.engine
    client = flow.client_conn.peername[0] if flow.client_conn.peername else ""
    try:
        if engine is None:
            raise LookupError("no policy")
        rules, reason = engine.identify(gate.user(flow), client)
        decision = unavailable(rules.profile.name, reason, engine.version, "block")
    except Exception:  # noqa: BLE001
        decision = unavailable("unknown", "default", engine.version if engine else "none")
    try:
        gate.refuse_request(flow, decision)
    except Exception:  # noqa: BLE001
        flow.response = None
    if flow.response is None or flow.response.status_code < 400:
        flow.response = _FALLBACK.copy()
    flow.request.stream = False
