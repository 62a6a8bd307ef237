"""The choke point (chokepoint.py) on mitmproxy's own test objects: every name of an upstream
connection is decided, the gateway's own addresses and names two IDNA standards read
differently are refused, raw bytes never reach a host with URL rules, and an allowed request's
connection opens.  Property tests feed arbitrary text where the wire can put it and check that
a blocked destination is never allowed and that no hook raises."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mitmproxy import connection, http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from tests.unit.helpers import engine_from
from webpolicy.proxy import chokepoint, failsafe
from webpolicy.proxy.addon import WebPolicy
from webpolicy.proxy.gate import parse_networks

POLICY = """\
version: "unit"
default_profile: learner
profiles:
  learner:
    block: [gambling, adult]
  staff:
    block: []
    log: [gambling]
    on_error: allow
clients:
  networks:
    - {cidr: 10.20.0.0/16, profile: staff}
lists:
  ctiru: {statutory: true, category: Terrorist content, format: urls, sources: [ctiru.txt]}
  gambling: {category: Gambling, sources: [gambling.txt]}
  adult: {category: Pornography, format: urls, sources: [adult.txt]}
allow: [127.0.0.5, gambling.example/rules/]
"""
LISTS = {"ctiru.txt": "ctiru.example/terror/page\n",
         "gambling.txt": "gambling.example\ngrosse-casino.example\n",
         "adult.txt": "news.example/adult-section\n"}
BLOCKED = frozenset({"gambling.example", "grosse-casino.example"})
LEARNER, STAFF = "10.10.0.5", "10.20.0.9"


@pytest.fixture(scope="module")
def addon(tmp_path_factory) -> WebPolicy:
    policy = WebPolicy()
    policy.gate.engine = engine_from(tmp_path_factory.mktemp("policy"), POLICY, LISTS)
    return policy


@pytest.fixture(autouse=True)
def no_hook_may_raise(monkeypatch):
    """failsafe turns a raised hook into a refusal; here that counts as a failure."""
    def raised(gate, chokepoint, connections, data, hook, exc):
        raise AssertionError(f"hook {hook} raised {exc!r}")
    monkeypatch.setattr(failsafe, "refuse", raised)


def client(ip: str = LEARNER, sni: str | None = None, mode: str = "regular") -> connection.Client:
    c = tflow.tclient_conn()
    c.peername = (ip, 50000)
    c.sni = sni
    c.proxy_mode = ProxyMode.parse(mode)
    return c


def connect(addon: WebPolicy, host: str, port: int = 80, sni: str | None = None,
            who: connection.Client | None = None) -> str | None:
    """server_connect for a new server connection; the error it leaves (None: it opens)."""
    server = connection.Server(address=(host, port))
    server.sni = sni
    addon.server_connect(server_hooks.ServerConnectionHookData(client=who or client(),
                                                               server=server))
    return server.error


def request_flow(host: str, host_header: bytes | None = None, path: bytes = b"/",
                 ip: str = LEARNER, extra: list[tuple[bytes, bytes]] = ()) -> http.HTTPFlow:
    request = tutils.treq(host="placeholder", port=80, path=path, scheme=b"http",
                          headers=http.Headers([(b"host", host_header or host.encode()),
                                                *extra]))
    request.data.host = host                  # as mitmproxy's parser leaves it, unchecked
    f = tflow.tflow(req=request)
    f.client_conn.peername = (ip, 50000)
    f.client_conn.proxy_mode = ProxyMode.parse("regular")
    return f


# -- every name decided ---------------------------------------------------------------------

@pytest.mark.parametrize("host", ["gambling.example", "GAMBLING.example.", "www.gambling.example"])
def test_blocked_address_refused(addon, host):
    assert connect(addon, host) is not None


def test_allowed_address_opens(addon):
    assert connect(addon, "news.test") is None
    assert connect(addon, "grosse-casino.example", who=client(STAFF)) is None   # staff: log


@pytest.mark.parametrize("sni", ["gambling.example", "www.gambling.example"])
def test_blocked_sni_refused_behind_an_allowed_address(addon, sni):
    assert connect(addon, "news.test", 443, sni=sni) is not None
    assert connect(addon, "news.test", 443, who=client(sni=sni)) is not None


def test_statutory_host_refused_even_for_staff_raw(addon):
    """ctiru.example has a statutory URL: raw bytes to it cannot be checked."""
    assert connect(addon, "ctiru.example", who=client(STAFF)) is not None


def test_raw_bytes_to_a_host_with_url_rules_refused_but_its_requests_open(addon):
    assert connect(addon, "news.example") is not None
    f = request_flow("news.example", path=b"/today")
    addon.requestheaders(f)
    assert f.response is None
    assert connect(addon, "news.example", who=f.client_conn) is None
    blocked = request_flow("news.example", path=b"/adult-section")
    addon.requestheaders(blocked)
    assert blocked.response.status_code == 403


def test_a_url_allow_on_a_blocked_host_is_respected(addon):
    f = request_flow("gambling.example", path=b"/rules/odds")
    addon.requestheaders(f)
    assert f.response is None
    assert connect(addon, "gambling.example", who=f.client_conn) is None
    assert connect(addon, "gambling.example") is not None       # another connection: raw


def test_connect_clears_the_marks_of_plain_requests(addon):
    f = request_flow("news.example", path=b"/today")
    addon.requestheaders(f)
    tunnel = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="news.example", port=80,
                                         path=b"", scheme=b"", authority=b"news.example:80"))
    tunnel.client_conn = f.client_conn
    addon.http_connect(tunnel)
    assert connect(addon, "news.example", who=f.client_conn) is not None


@pytest.mark.parametrize("host, refused", [("news.example", True), ("news.test", False)])
def test_an_upgrade_to_raw_bytes_is_refused_where_urls_are_checked(addon, host, refused):
    f = request_flow(host, path=b"/chat")
    addon.requestheaders(f)
    assert f.response is None
    f.response = http.Response.make(101, b"", {"upgrade": "x-raw", "connection": "upgrade"})
    addon.response(f)
    assert (f.response.status_code == 403) == refused


def test_a_websocket_upgrade_is_left_alone(addon):
    f = tflow.twebsocketflow()
    f.client_conn.peername = (LEARNER, 50000)
    f.request.host = "news.example"
    addon.response(f)
    assert f.response.status_code == 101


# -- the gateway itself -----------------------------------------------------------------------

@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "admin.localhost", "127.0.0.1",
                                  "127.1", "0x7f000001", "2130706433", "::1", "0.0.0.0",
                                  "::ffff:127.0.0.1", "::", "0"])
@pytest.mark.parametrize("ip", [LEARNER, STAFF])
def test_loopback_refused_for_every_profile(addon, host, ip):
    assert connect(addon, host, 8080, who=client(ip)) is not None


def test_loopback_listed_under_allow_opens(addon):
    assert connect(addon, "127.0.0.5", 8080) is None


def test_loopback_upstream_of_a_reverse_proxy_opens(addon):
    """The administrator chose it, not the client."""
    assert connect(addon, "127.0.0.1", 8080, who=client(mode="reverse:http://127.0.0.1:8080")) \
        is None


def test_names_resolving_to_loopback_are_not_looked_up(addon):
    assert connect(addon, "intranet.example", 80) is None


def test_own_networks_can_be_narrowed():
    narrow = parse_networks("127.0.0.0/24")
    assert chokepoint.is_own_address("127.0.0.9", 80, None, narrow)
    assert not chokepoint.is_own_address("127.0.1.9", 80, None, narrow)
    with pytest.raises(ValueError, match="not-a-network"):
        parse_networks("127.0.0.0/8, not-a-network")


# -- one meaning per name ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gam\u200dbling.example", "gam\u200cbling.example",
                                  "gro\u00dfe-casino.example", "GRO\u1e9eE-casino.example"])
def test_a_name_idna2003_reads_as_a_blocked_one_is_refused(addon, name):
    assert chokepoint.resolved_name(name) in BLOCKED
    assert connect(addon, name) is not None
    f = request_flow(name, host_header=name.encode())
    addon.requestheaders(f)
    assert f.response is not None and f.response.status_code == 403


def test_an_idn_both_standards_read_alike_opens(addon):
    assert chokepoint.idna_mismatch("b\u00fccher.example") is None
    assert connect(addon, "b\u00fccher.example") is None


# -- properties -------------------------------------------------------------------------------

_blocked_spellings = st.builds(
    lambda host, upper, dot, joiner: (
        "".join(c.upper() if u else c for c, u in zip(host, upper)) + ("." if dot else "")
    ).replace("b", "b" + joiner, 1),
    st.sampled_from(sorted(BLOCKED) + ["www.gambling.example"]),
    st.lists(st.booleans(), min_size=30, max_size=30), st.booleans(),
    st.sampled_from(["", "\u200d", "\u200c", "\u00ad"]))
_names = st.one_of(st.text(max_size=40), _blocked_spellings,
                   st.text(alphabet="gamblin.exs\u00df\u200d\u200c-", max_size=30))


def _resolves_to_blocked(name: str) -> bool:
    try:
        resolved = chokepoint.resolved_name(name)
    except ValueError:
        return False
    return resolved is not None and (resolved in BLOCKED or
                                     any(resolved.endswith("." + b) for b in BLOCKED))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=_names, sni=st.one_of(st.none(), _names), port=st.integers(1, 65535))
def test_no_connection_to_a_blocked_host_ever_opens(addon, host, sni, port):
    assume(host)
    error = connect(addon, host, port, sni=sni)
    if _resolves_to_blocked(host) or (sni and _resolves_to_blocked(sni)):
        assert error is not None


_wire_bytes = st.one_of(st.binary(max_size=40),
                        _blocked_spellings.map(lambda s: s.encode("utf-8")))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=_names, host_header=_wire_bytes, path=st.binary(max_size=40),
       query=st.binary(max_size=20), auth=st.binary(max_size=20))
def test_no_request_to_a_blocked_host_is_forwarded(addon, host, host_header, path, query, auth):
    """requestheaders never raises; a request that goes on never opens a connection to a
    blocked host: the choke point refuses it if the request path let it through."""
    assume(host and host_header)
    f = request_flow(host, host_header, b"/" + path + b"?" + query,
                     extra=[(b"authorization", auth), (b"user-agent", path)])
    addon.requestheaders(f)
    addon.request(f)
    if f.response is not None:
        assert f.response.status_code >= 400
        f.response.content             # a complete answer, encodable
        return
    if _resolves_to_blocked(host):
        assert connect(addon, host, 80, who=f.client_conn) is not None


# -- cost --------------------------------------------------------------------------------------

def test_the_mark_and_the_choke_point_cost_microseconds(addon):
    """Measured, not assumed: an allowed request pays one mark; its connection, one
    server_connect that finds it.  Generous bounds: the machine is shared."""
    f = request_flow("news.example", path=b"/today")
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        addon.chokepoint.allow_http(f, ("news.example",))
    mark = (time.perf_counter() - started) / n
    server = connection.Server(address=("news.example", 80))
    data = server_hooks.ServerConnectionHookData(client=f.client_conn, server=server)
    started = time.perf_counter()
    for _ in range(n):
        addon.chokepoint.server_connect(data)
    connect_cost = (time.perf_counter() - started) / n
    assert server.error is None
    print(f"mark {mark * 1e6:.2f} us, server_connect {connect_cost * 1e6:.2f} us")
    assert mark < 20e-6 and connect_cost < 200e-6


# -- transparent modes: the address the client chose must stand for a decided name -----------

RESOLVES = {"school.example": {"192.0.2.10"}, "gambling.example": {"192.0.2.66"}}


@pytest.fixture
def fake_dns(monkeypatch):
    async def resolve(name, port):
        return {ipaddress.ip_address(a) for a in RESOLVES.get(name, ())}
    monkeypatch.setattr(chokepoint, "resolve", resolve)


def transparent(addon: WebPolicy, address: str, port: int = 80, sni: str | None = None,
                host_header: str | None = None) -> str | None:
    """server_connect in transparent mode, after an allowed request naming `host_header`
    (None: raw bytes, no request); the error it leaves (None: it opens)."""
    who = client(mode="transparent")
    if host_header is not None:
        flow = request_flow(address, host_header.encode())
        flow.client_conn = who
        addon.requestheaders(flow)
        assert flow.response is None, "the request itself is allowed"
    server = connection.Server(address=(address, port))
    server.sni = sni
    waiting = addon.server_connect(server_hooks.ServerConnectionHookData(client=who,
                                                                         server=server))
    if waiting is not None:
        asyncio.run(waiting)
    return server.error


def test_an_allowed_name_at_its_own_address_opens(addon, fake_dns):
    assert transparent(addon, "192.0.2.10", host_header="school.example") is None
    assert transparent(addon, "192.0.2.10", 443, sni="school.example") is None


def test_an_allowed_name_at_a_blocked_sites_address_is_refused(addon, fake_dns):
    """Host (or SNI) school.example sent to gambling.example's address: a client in
    transparent mode picks the address, so the name alone would let it reach any site."""
    assert transparent(addon, "192.0.2.66", host_header="school.example")
    assert transparent(addon, "192.0.2.66", 443, sni="school.example")


def test_a_name_that_does_not_resolve_cannot_vouch_for_an_address(addon, fake_dns):
    assert transparent(addon, "192.0.2.10", host_header="nowhere.example")


def test_the_address_named_itself_opens(addon, fake_dns):
    """curl http://192.0.2.10/: the Host is the address, decided as such."""
    assert transparent(addon, "192.0.2.10", host_header="192.0.2.10") is None


def test_unnamed_raw_bytes_are_refused_unless_the_address_is_allowed(addon, fake_dns):
    assert transparent(addon, "192.0.2.10") is not None
    assert transparent(addon, "127.0.0.5") is None         # listed under allow:


def test_named_modes_need_no_address_check(addon, fake_dns):
    """CONNECT and SOCKS: mitmproxy resolves the decided name itself."""
    assert connect(addon, "school.example", 443, sni="school.example") is None
    assert connect(addon, "192.0.2.66", 443, sni="school.example") is None, \
        "the choke point itself has no address check in named modes (the IP-literal rule does)"
