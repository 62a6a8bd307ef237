"""The choke point: every upstream connection is decided in `server_connect`, before it opens.

Every other hook decides one way in (an HTTP request, a CONNECT, a ClientHello, a TCP flow),
and mitmproxy has ways in that reach none of them: raw TCP inside an intercepted tunnel is
relayed even after `flow.kill()` in `tcp_start`, `ignore_hosts` and pass-through skip the TLS
and HTTP hooks.  All of them open their upstream through `open_connection`
(mitmproxy/proxy/server.py), which runs `server_connect` first and gives up, before any
packet, when the hook leaves `data.server.error` set.  So here, for this client, every name
the connection involves is decided: the address it opens (the CONNECT / SOCKS / Host name,
or the IP address) and the SNI it will send.  It opens only if all are allowed.

Rules beyond the lists, for every profile:
- the gateway itself is not a destination: a name the client *writes* as loopback or
  unspecified (127.0.0.0/8, ::1, 0.0.0.0/8, ::, their IPv4-mapped forms: the option
  `webpolicy_own_networks`; `localhost` and `*.localhost`) or as the address:port of the
  proxy's listener or the metrics endpoint, is refused unless listed under `allow:`.  A *name* that merely resolves to an internal address
  is not refused here (the e2e sites do, on 127.0.1.x): keeping internal networks out of reach
  is the firewall's and the resolver's job (docs/circumvention.md);
- one meaning per name: mitmproxy resolves a name with Python's `idna` codec (IDNA 2003: ß is
  ss, ZWJ/ZWNJ vanish) while the filter decides its UTS #46 form; where they differ the
  connection is refused rather than decided on a name it does not reach;
- raw bytes cannot be checked against URL rules: a connection that no allowed HTTP request
  stands behind (raw TCP, pass-through TLS, ignored hosts) is refused to a host with URL
  entries (`allows_every_path`).

An allowed HTTP request leaves a mark (`allow_http`), keyed by its client connection and the
address mitmproxy will open, holding the names requestheaders decided: those are not decided
again, so a host-level block cannot undo a URL-level `allow:` and a request costs one dict
store.  A mark only ever spares names already decided for that client; it never lets a raw
connection pass the URL-rule check on another client connection, and a CONNECT clears the
client's marks (the connection stops being plain HTTP there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable

from mitmproxy import ctx, http
from mitmproxy.connection import Client, Server
from mitmproxy.proxy import mode_specs, server_hooks

from webpolicy.engine.decision import NO_POLICY, Decision, allows_every_path, decide
from webpolicy.engine.engine import Engine
from webpolicy.lists.canonical import CanonicalURL, canonical_host, is_plain_name
from webpolicy.lists.domainindex import is_ip_literal
from webpolicy.proxy.flows import NAMED_DESTINATION_MODES, request_hosts
from webpolicy.proxy.gate import OWN_NETWORKS, Gate, Networks
from webpolicy.safeguarding.events import RequestFacts
from webpolicy.safeguarding.safetext import clean_text

log = logging.getLogger("webpolicy")

LIST = "connect"
OWN_ADDRESS = "own_address"
IDNA_MISMATCH = "idna_mismatch"
UNCHECKABLE = "raw_to_url_rules"
UNREADABLE = "unreadable_name"
UNVERIFIED = "address_not_named"
_CATEGORIES = {
    UNVERIFIED: "Connection to an address that no allowed name stands for",
    OWN_ADDRESS: "Connection to the gateway itself (loopback or its own services)",
    IDNA_MISMATCH: "Site name that two name standards read differently",
    UNCHECKABLE: "Raw connection to a site with page-level rules",
    UNREADABLE: "Connection to a name that cannot be read",
}
_ERROR = "webpolicy refused this connection"

# The mark an allowed HTTP request leaves: (canonical names decided, the user they were for,
# in transparent modes the canonical name its Host header asked for: None if unreadable).
Mark = tuple[tuple[str, ...], str | None, str | None]


def refusal(rule: str, entry: str, profile: str, reason: str, version: str) -> Decision:
    """A block the lists did not make, logged and counted like the connect rules'."""
    return Decision("block", profile, reason, list=LIST, category=_CATEGORIES[rule],
                    severity="high", match=rule, entry=clean_text(entry), policy_version=version)


RESOLVE_TIMEOUT = 5.0       # seconds to resolve a name when verifying a chosen address


def _client_chose_the_address(server: Server, client: Client) -> bool:
    """Transparent-style modes, where the client picked the IP address connected to (in
    CONNECT, SOCKS and reverse modes mitmproxy itself resolves the name decided)."""
    mode = type(client.proxy_mode)
    return bool(server.address) and mode not in NAMED_DESTINATION_MODES and \
        mode is not mode_specs.ReverseMode and is_ip_literal(server.address[0])


async def resolve(name: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses a name resolves to here, as mitmproxy itself would connect (none when it
    does not resolve in RESOLVE_TIMEOUT seconds)."""
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(loop.getaddrinfo(name, port, type=socket.SOCK_STREAM),
                                       RESOLVE_TIMEOUT)
    except (OSError, TimeoutError):
        return set()
    return {ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in found}


def _canonical_or_none(name: str) -> str | None:
    try:
        return canonical_host(name)
    except ValueError:
        return None


def _same_address(name: str, wanted: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(name.strip("[]").split("%", 1)[0]) == wanted
    except ValueError:
        return False


# -- names -----------------------------------------------------------------------------------

def resolved_name(name: str) -> str | None:
    """The name mitmproxy actually resolves (asyncio -> getaddrinfo -> Python's IDNA 2003
    codec), canonical; None when that codec cannot encode it (nothing is resolved then)."""
    if name.isascii():
        return canonical_host(name)
    try:
        return canonical_host(name.encode("idna").decode("ascii"))
    except (UnicodeError, ValueError):
        return None


def idna_mismatch(name: str) -> str | None:
    """'name -> resolved' when the filter's reading of `name` (UTS #46) is not the name
    mitmproxy would connect to; None when they agree (always, for ASCII names)."""
    if name.isascii():
        return None
    try:
        decided = canonical_host(name)
    except ValueError:
        decided = None
    resolved = resolved_name(name)
    if resolved is not None and decided != resolved:
        return f"{name} -> {resolved}"
    return None




def is_own_address(name: str, port: int | None, engine: Engine | None,
                   networks: Networks = OWN_NETWORKS) -> bool:
    """Whether the client wrote the gateway itself: an address in `networks` (loopback and
    unspecified by default) in any spelling, localhost, or the address:port of the proxy's
    listener or metrics endpoint.  A plain name (not localhost) never is: what it resolves
    to is not looked at here."""
    if is_plain_name(name) and not name.endswith("localhost"):
        return False                      # the usual name: ~0.2 us, no parse
    try:
        host = canonical_host(name)
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in networks):
        return True
    return port is not None and (host, port) in own_endpoints(engine)


def own_endpoints(engine: Engine | None) -> frozenset[tuple[str, int]]:
    """The proxy's listener and the metrics endpoint, when bound to a specific address (a
    wildcard or loopback bind is covered by the loopback rule)."""
    found: set[tuple[str, int]] = set()
    try:
        if ctx.options.listen_host and ctx.options.listen_port:
            found.add((canonical_host(ctx.options.listen_host), ctx.options.listen_port))
    except (AttributeError, ValueError):          # no mitmproxy context (unit tests)
        pass
    if engine is not None and engine.policy.metrics.enabled:
        try:
            metrics = engine.policy.metrics
            found.add((canonical_host(metrics.host), metrics.port))
        except ValueError:
            pass
    return frozenset(found)


def _every_path(engine: Engine, host: str, decision: Decision, client_ip: str,
                user: str | None) -> bool:
    """allows_every_path, or a host listed whole under `allow:` and nothing else (the URL
    index keeps such an entry, an IP address say, as a whole-host rule)."""
    if allows_every_path(engine, host, client_ip, user):
        return True
    if decision.list != "allow" or decision.match != "host":
        return False
    rules, _ = engine.identify(user, client_ip)
    _, rule_hosts = engine.host_facts(host)
    return not rules.expression_mask and all(
        _only_allowed_whole(host_rules, engine.allow_bit) for _, host_rules, _ in rule_hosts)


def _only_allowed_whole(rules, allow_bit: int) -> bool:
    """The host's rules in one table are its `allow:` entry and nothing under any path."""
    return (rules.whole == allow_bit and not rules.paths and not rules.queries
            and not rules.exact)


# -- the hook --------------------------------------------------------------------------------

class Chokepoint:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        # client connection id -> {(host, port) mitmproxy will open: the request's mark}
        self._marks: dict[str, dict[tuple[str, int], Mark]] = {}
        # client connection ids refused whole, already recorded by the hook that refused
        # (tcp_start) or failed on them (failsafe): nothing opens for them any more
        self._refused_clients: set[str] = set()

    # -- marks left by the request path --------------------------------------------------

    def allow_http(self, flow: http.HTTPFlow, decided_hosts: tuple[str, ...] | None) -> None:
        """An HTTP request that goes on: the connection mitmproxy opens for it (its request
        host and port, after every stage) may open on the names requestheaders decided."""
        if not decided_hosts:
            return
        request = flow.request
        marks = self._marks.get(flow.client_conn.id)
        if marks is None:
            marks = self._marks[flow.client_conn.id] = {}
        requested = None
        if type(flow.client_conn.proxy_mode) not in NAMED_DESTINATION_MODES:
            requested = _canonical_or_none(request_hosts(flow)[0])
        marks[(request.host, request.port)] = (decided_hosts, self.gate.user(flow), requested)

    def forget_http(self, client_id: str) -> None:
        """The client connection is no longer plain HTTP (CONNECT, raw TCP)."""
        self._marks.pop(client_id, None)

    def refuse_client(self, client_id: str) -> None:
        """Another hook refused this client connection (raw TCP to a blocked host) or failed
        on it: no upstream opens for it any more, and the refusal is not recorded twice."""
        self._refused_clients.add(client_id)

    def client_disconnected(self, client_id: str) -> None:
        self._marks.pop(client_id, None)
        self._refused_clients.discard(client_id)

    def response(self, flow: http.HTTPFlow) -> None:
        """A 101 answer that is not a WebSocket upgrade turns the connection into a raw relay
        (mitmproxy's TCPLayer, on a connection already open: no server_connect follows).  It
        is refused where raw bytes could not be checked (a host with URL rules), like any
        raw connection; a WebSocket stays framed HTTP and its URL was decided."""
        response = flow.response
        if response is None or response.status_code != 101 or flow.websocket is not None:
            return
        engine = self.gate.engine
        client = flow.client_conn
        client_ip = client.peername[0] if client.peername else ""
        request = flow.request
        mark = self._marks.get(client.id, {}).get((request.host, request.port))
        user = mark[1] if mark else self.gate.user(flow)
        hosts = mark[0] if mark else (request.host,)
        for host in hosts:
            found = self._raw_refusal(engine, host, client_ip, user)
            if found is not None:
                facts = RequestFacts(client_ip, user, request.method, None, host)
                event_id = self.gate.record(found, facts, passthrough=True)
                self.gate.metrics.connection_refused(found.profile, "upgrade")
                self.gate.block(flow, found, event_id, None, host)
                return

    def _raw_refusal(self, engine: Engine | None, name: str, client_ip: str,
                     user: str | None) -> Decision | None:
        if engine is None:
            return NO_POLICY
        rules, reason = engine.identify(user, client_ip)
        host = canonical_host(name)
        decision = decide(engine, CanonicalURL("", host, None, "/", ""), client_ip, user)
        if decision.blocked:
            return decision
        if not _every_path(engine, host, decision, client_ip, user):
            return refusal(UNCHECKABLE, host, rules.profile.name, reason, engine.version)
        return None

    # -- deciding -------------------------------------------------------------------------

    def server_connect(self, data: server_hooks.ServerConnectionHookData
                       ) -> Awaitable[None] | None:
        server, client = data.server, data.client
        if client.id in self._refused_clients:
            server.error = _ERROR                # already recorded by the hook that refused
            return
        found = self.refusal(server, client)
        if found is None:
            if _client_chose_the_address(server, client):
                return self._verify_address(server, client)     # mitmproxy awaits it
            return None
        self._refuse(server, client, *found)
        return None

    def _refuse(self, server: Server, client: Client, decision: Decision, name: str,
                raw: bool) -> None:
        facts = RequestFacts(client.peername[0] if client.peername else "",
                             self._user(server, client), "TCP" if raw else "HTTP", None, name)
        self.gate.record(decision, facts, passthrough=raw)
        self.gate.metrics.connection_refused(decision.profile, "upstream")
        server.error = f"{_ERROR}: {decision.category}"

    async def _verify_address(self, server: Server, client: Client) -> None:
        """Transparent modes: the client chose the address, and the names decided (Host,
        SNI) are only what it said.  The address must be one a decided name stands for (the
        name itself, or what it resolves to, as Squid's host_verify_strict checks), or
        listed under `allow:`; a connection that names nothing (raw bytes) is refused, since
        no list can speak for a bare address.  Any failure, DNS included, refuses it."""
        try:
            if await self._address_stands_for_a_name(server, client):
                return
            decision = self._unverified(server, client)
        except Exception as exc:  # noqa: BLE001 - fail closed: nothing opens unverified
            log.warning("webpolicy: cannot verify %s: %r", server.address, exc)
            decision = self._unverified(server, client)
        self._refuse(server, client, decision, str(server.address[0]), self._mark(server,
                                                                                client) is None)

    async def _address_stands_for_a_name(self, server: Server, client: Client) -> bool:
        engine = self.gate.engine
        address, port = server.address[0], server.address[1]
        mark = self._mark(server, client)
        names = {mark[2]} if mark and mark[2] else set()       # what the Host header asked for
        names.update(name for name in (server.sni, client.sni) if name)
        wanted = ipaddress.ip_address(address.split("%", 1)[0])
        if any(_same_address(name, wanted) for name in names):
            return True                          # the client named the address itself
        if engine is not None and self._allow_listed(engine, canonical_host(address),
                                                       client.peername[0], None):
            return True
        for name in sorted(n for n in names if not is_ip_literal(n)):
            if wanted in await resolve(name, port):
                return True
        return False

    def _unverified(self, server: Server, client: Client) -> Decision:
        engine = self.gate.engine
        if engine is None:
            return NO_POLICY
        user = self._user(server, client)
        rules, reason = engine.identify(user, client.peername[0] if client.peername else "")
        return refusal(UNVERIFIED, str(server.address[0]), rules.profile.name, reason,
                       engine.version)

    def refusal(self, server: Server, client: Client) -> tuple[Decision, str, bool] | None:
        """The refusal of this connection, the name refused, and whether it carries raw bytes
        (no allowed request stands behind it); None when every name is allowed."""
        engine = self.gate.engine
        address = server.address
        mark = self._mark(server, client)
        raw = mark is None
        if engine is None:
            return NO_POLICY, str(address[0]) if address else "", raw
        client_ip = client.peername[0] if client.peername else ""
        user = mark[1] if mark else self.gate.users.get(client.id)
        rules, reason = engine.identify(user, client_ip)
        profile = rules.profile.name
        for name, port, named in self._names(server, client):
            decision = self._decide_name(engine, name, port, named, mark, client_ip, user,
                                         profile, reason)
            if decision is not None:
                return decision, name, raw
        return None

    def _decide_name(self, engine: Engine, name: str, port: int | None, named: bool,
                     mark: Mark | None, client_ip: str,
                     user: str | None, profile: str, reason: str) -> Decision | None:
        version = engine.version
        try:
            host = canonical_host(name)
        except ValueError:
            return refusal(UNREADABLE, name, profile, reason, version)
        mismatch = idna_mismatch(name)
        if mismatch is not None:
            return refusal(IDNA_MISMATCH, mismatch, profile, reason, version)
        if named and is_own_address(name, port, engine, self.gate.own_networks) and \
                not self._allow_listed(engine, host, client_ip, user):
            return refusal(OWN_ADDRESS, host if port is None else f"{host}:{port}",
                           profile, reason, version)
        if mark is not None and host in mark[0]:
            return None                         # decided, with its path, by requestheaders
        decision = decide(engine, CanonicalURL("", host, None, "/", ""), client_ip, user)
        if decision.blocked:
            return decision
        if mark is None and not _every_path(engine, host, decision, client_ip, user):
            return refusal(UNCHECKABLE, host, profile, reason, version)
        return None

    @staticmethod
    def _allow_listed(engine: Engine, host: str, client_ip: str, user: str | None) -> bool:
        return decide(engine, CanonicalURL("", host, None, "/", ""), client_ip, user).list \
            == "allow"

    @staticmethod
    def _names(server: Server, client: Client) -> list[tuple[str, int | None, bool]]:
        """(name, port, whether the client chose it) for each name the connection involves:
        the address it opens, the SNI it will send (tlsconfig sends the client's, else the
        address), the client's own SNI.  In reverse-proxy mode the administrator chose the
        address, so the gateway-address rule does not apply to it."""
        names: list[tuple[str, int | None, bool]] = []
        address = server.address
        chosen = type(client.proxy_mode) is not mode_specs.ReverseMode
        if address:
            names.append((address[0], address[1], chosen))
        for sni in (server.sni, client.sni):
            if sni and all(sni != seen for seen, _, _ in names):
                names.append((sni, None, True))
        return names

    def _mark(self, server: Server, client: Client) -> Mark | None:
        marks = self._marks.get(client.id)
        if marks is None or not server.address:
            return None
        return marks.get((server.address[0], server.address[1]))

    def _user(self, server: Server, client: Client) -> str | None:
        mark = self._mark(server, client)
        return mark[1] if mark else self.gate.users.get(client.id)
