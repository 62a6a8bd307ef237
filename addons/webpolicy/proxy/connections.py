"""Connections that never become HTTP requests the add-on sees: CONNECT tunnels, TLS
handshakes and raw TCP.

- `http_connect` refuses a CONNECT the profile's connect rules forbid (IP address, port),
  and a blocked pass-through host, with a non-2xx answer before any upstream connection;
- `tls_clienthello` / `tls_start_client` refuse a blocked pass-through connection by SNI
  (transparent mode has nothing else), and a TLS handshake naming another host than its
  CONNECT when the tunnel would not be intercepted; an intercepted connection no request to
  which can be blocked is handed to EarlyUpstream (upstream.py);
- `tcp_start` decides raw TCP inside a tunnel on its destination.
The login that names the user of a connection (CONNECT's proxy login, SOCKS5's) is kept on
the Gate, keyed by the client connection, for the TLS and TCP hooks that have no flow.
"""

from __future__ import annotations

from mitmproxy import ctx, http, tcp, tls
from mitmproxy.proxy.layers import modes
from OpenSSL import SSL

from webpolicy.engine import circumvention
from webpolicy.engine.decision import NO_POLICY, Decision, may_pass_through
from webpolicy.engine.engine import Engine
from webpolicy.proxy import blockpage
from webpolicy.proxy.flows import connect_host, selective_names
from webpolicy.proxy.gate import Gate
from webpolicy.proxy.upstream import EarlyUpstream
from webpolicy.safeguarding.events import RequestFacts


def uninspected(data: tls.ClientHelloData, engine: Engine, user: str | None) -> bool:
    """Selective TLS inspection (issue #19): whether this handshake, which the caller would
    otherwise intercept, may pass through as TLS for this client.  Every name it involves
    (flows.selective_names) must be neither the DoH canary (answered here) nor anything
    decision.may_pass_through refuses.  Any doubt, an error included, intercepts; the choke
    point still decides the upstream connection either way."""
    if not engine.policy.tls.selective:
        return False
    try:
        names = selective_names(data.context, data.client_hello.sni)
        client = data.context.client.peername[0]
        return bool(names) and all(not circumvention.is_canary(name) and
                                   may_pass_through(engine, name, client, user)
                                   for name in names)
    except Exception:  # noqa: BLE001
        return False


class ConnectionFilter:
    def __init__(self, gate: Gate, early_upstream: EarlyUpstream) -> None:
        self.gate = gate
        self.early_upstream = early_upstream
        self._refuse: dict[str, Decision] = {}    # client connection id -> refusal (TLS hooks)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        gate = self.gate
        user = gate.user(flow)
        if user:
            gate.users[flow.client_conn.id] = user
        host, client = flow.request.host, flow.client_conn.peername[0]
        refusal = gate.circumvention_refusal(flow, host, flow.request.port)
        if refusal is not None:            # IP address or port the profile does not allow
            self._refuse_tunnel(flow, refusal, user, passthrough=False)
            return
        if gate.engine is not None and not gate.is_passthrough(host):
            return                         # intercepted: every request inside is decided
        decision = gate.decide_host(host, client, user)
        if decision.blocked:
            self._refuse_tunnel(flow, decision, user, passthrough=True)

    def _refuse_tunnel(self, flow: http.HTTPFlow, decision: Decision, user: str | None,
                       passthrough: bool) -> None:
        """A non-2xx answer to CONNECT refuses the tunnel before any upstream connection."""
        facts = RequestFacts(flow.client_conn.peername[0], user, "CONNECT", None,
                             f"{flow.request.host}:{flow.request.port}")
        self.gate.record(decision, facts, passthrough=passthrough)
        self.gate.metrics.connection_refused(decision.profile, "connect")
        flow.response = http.Response.make(
            blockpage.status_for(decision),
            f"Blocked by the web filter: {decision.category}\n".encode(),
            {"Content-Type": "text/plain"})

    def socks5_auth(self, data: modes.Socks5AuthData) -> None:
        """A SOCKS5 login (checked by mitmproxy's proxyauth, which runs first) names the user
        for everything decided on the connection before its requests: TLS, raw TCP."""
        if data.valid:
            self.gate.users[data.client_conn.id] = data.username

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Pass-through hosts are not intercepted; in transparent mode SNI is all we have.

        Behind a CONNECT, the SNI must name the CONNECT host when the tunnel would not be
        intercepted (either name is a pass-through host): otherwise a client could CONNECT to
        one host and reach another unseen.  In an intercepted tunnel a different SNI is
        decided too, since the upstream connection carries it.
        """
        gate = self.gate
        engine = gate.engine
        sni = data.client_hello.sni
        host = sni or (data.context.server.address or ("",))[0]
        if not host or engine is None:
            return
        connect_name = connect_host(data.context)
        mismatch = circumvention.sni_violation(connect_name, sni) if connect_name else None
        passthrough = any(gate.is_passthrough(name) for name in (host, connect_name) if name)
        client = data.context.client
        user = gate.users.get(client.id)
        waiting = gate.sign_in_waiting(client)   # must sign in first: always intercepted
        if not passthrough and mismatch is None:
            # Intercepted: every request inside is decided.  Connected early only where none
            # can be blocked, and only for a known user when users must log in.  With
            # `tls: {inspect: selective}` not intercepted at all where nothing needs it.
            if (user is not None or not ctx.options.proxyauth) and not waiting:
                if uninspected(data, engine, user):
                    data.ignore_connection = True
                    return
                self.early_upstream.mark(data, engine, user)
            return
        if passthrough and mismatch is not None:
            decision = gate.violation_decision(mismatch, client.peername[0], user)
        else:
            decision = gate.decide_host(host, client.peername[0], user)
        if decision.blocked:
            facts = RequestFacts(client.peername[0], user, "TLS", None, host)
            gate.record(decision, facts, passthrough=passthrough)
            gate.metrics.connection_refused(decision.profile, "tls")
            self._refuse[client.id] = decision
        elif passthrough and not waiting:
            data.ignore_connection = True

    def tls_start_client(self, data: tls.TlsData) -> None:
        """Refuse a blocked pass-through connection: a TLS context without a certificate
        makes the handshake fail before anything is forwarded."""
        if data.conn.id in self._refuse and data.ssl_conn is None:
            data.ssl_conn = SSL.Connection(SSL.Context(SSL.TLS_METHOD))
            data.ssl_conn.set_accept_state()

    def tcp_start(self, flow: tcp.TCPFlow) -> bool:
        """Non-HTTP traffic inside a tunnel is decided on its destination host, and recorded
        here; returns whether it was refused.  Killing the flow does not stop mitmproxy's TCP
        layer from connecting: the choke point (chokepoint.py) refuses the connection."""
        address = flow.server_conn.sni or (flow.server_conn.address or ("",))[0]
        if not address:
            return False
        gate = self.gate
        user = gate.users.get(flow.client_conn.id)
        decision = gate.decide_host(address, flow.client_conn.peername[0], user)
        if decision.blocked:
            facts = RequestFacts(flow.client_conn.peername[0], user, "TCP", None, address)
            gate.record(decision, facts, passthrough=True)
            gate.metrics.connection_refused(decision.profile, "tcp")
            flow.kill()
            return True
        return False

    def refuse_handshake(self, client_id: str) -> None:
        """A hook failed on this connection: its TLS handshake is refused (tls_start_client)."""
        self._refuse[client_id] = NO_POLICY

    def client_disconnected(self, client) -> None:
        self.early_upstream.forget(client.id)
        self.gate.users.pop(client.id, None)
        self._refuse.pop(client.id, None)
