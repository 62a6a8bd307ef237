"""Ways round the filter through real mitmdump (issue #15), each seen to work before the choke
point existed: raw TCP in an intercepted tunnel, the gateway's own loopback services, a hook
that raised, a name two IDNA standards read differently, and garbage next to a statutory URL.

Every test asserts the blocked destination never received a connection: the sites count them.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from .conftest import LEARNER_IP, POLICY, STAFF_IP
from .proxy import free_port

pytestmark = pytest.mark.e2e


def _exchange(proxy, data: bytes, client_ip: str, wait: float = 1.5) -> bytes:
    """Send raw bytes to the proxy and read what comes back until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=wait,
                                  source_address=(client_ip, 0)) as raw:
        raw.sendall(data)
        return _read_until_quiet(raw, wait)


def _read_until_quiet(raw: socket.socket, wait: float) -> bytes:
    """What the peer sends until it closes, resets or `wait` seconds pass."""
    reply = b""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            chunk = raw.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        reply += chunk
    return reply


def _tunnel(proxy, target: str, payload: bytes, client_ip: str = LEARNER_IP,
            wait: float = 1.5) -> tuple[bytes, bytes]:
    """CONNECT to `target`, then send `payload` inside the tunnel; (CONNECT answer, the rest)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=wait,
                                  source_address=(client_ip, 0)) as raw:
        raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = raw.recv(4096)
            if not chunk:
                return answer, b""
            answer += chunk
        if not answer.startswith(b"HTTP/1.1 200"):
            return answer, b""
        raw.sendall(payload)
        return answer, _read_until_quiet(raw, wait)


def _settled(sites, site: str, before: int, wait: float = 0.5) -> int:
    """The site's connection count after any late connection had time to arrive."""
    time.sleep(wait)
    return sites.log.contacted(site)


# -- 1. the choke point: every upstream connection ------------------------------------------

@pytest.mark.parametrize("payload", [
    b"\r\nGET / HTTP/1.1\r\nHost: www.gambling.test\r\n\r\n",     # an empty line first
    b"\x00\x01 not http at all\n",                                  # plain binary
])
def test_raw_tcp_in_tunnel_to_blocked_host_never_contacted(proxy, sites, payload):
    """mitmproxy relays bytes it does not recognise as HTTP as raw TCP; killing that flow in
    tcp_start did not stop the relay, so the listed host was contacted."""
    before = sites.log.contacted("www.gambling.test")
    _, rest = _tunnel(proxy, "www.gambling.test:80", payload)
    assert b"HTTP/1.1 200" not in rest
    assert _settled(sites, "www.gambling.test", before) == before


def test_raw_tcp_to_host_with_url_rules_refused(proxy, sites):
    """news.test has a blocked URL under it: raw bytes to it cannot be checked, so refused."""
    before = sites.log.contacted("news.test")
    _, rest = _tunnel(proxy, "news.test:80", b"\r\nGET /adult-section HTTP/1.1\r\n"
                                             b"Host: news.test\r\n\r\n")
    assert b"adult-section" not in rest
    assert _settled(sites, "news.test", before) == before
    records = proxy.records(1, lambda r: r.get("match") == "raw_to_url_rules")
    assert records and (records[-1]["host"], records[-1]["method"]) == ("news.test", "TCP")


def test_raw_tcp_to_allowed_host_still_relayed(proxy, sites):
    """The choke point refuses what is blocked, not raw TCP as such."""
    before = sites.log.contacted("www.youtube.com")
    _, rest = _tunnel(proxy, "www.youtube.com:80", b"\r\nGET /raw HTTP/1.1\r\n"
                                                   b"Host: www.youtube.com\r\n\r\n")
    assert _settled(sites, "www.youtube.com", before) == before + 1


@pytest.mark.parametrize("site, refused", [("news.test", True), ("www.youtube.com", False)])
def test_upgrade_to_raw_bytes_refused_where_urls_are_checked(proxy, sites, site, refused):
    """A 101 that is not a WebSocket makes mitmproxy relay raw bytes on the open connection:
    refused where the host has URL rules (news.test), like any raw connection."""
    reply = _exchange(proxy, f"GET http://{site}/up HTTP/1.1\r\nHost: {site}\r\n"
                             "Connection: Upgrade\r\nUpgrade: x-raw\r\n\r\n".encode(),
                      LEARNER_IP)
    assert (b"raw bytes after the upgrade" not in reply) == refused, reply[:300]
    if refused:
        assert reply.startswith(b"HTTP/1.1 403"), reply[:200]


@pytest.mark.parametrize("option", ["ignore_hosts", "tcp_hosts"])
def test_ignore_and_tcp_hosts_cannot_carry_a_blocked_host(make_proxy, sites, option):
    """Hosts matched by mitmproxy's ignore_hosts skip every TLS and HTTP hook; tcp_hosts
    relays them as raw TCP."""
    proxy = make_proxy(options={option: r"gambling\.test"})
    before = sites.log.contacted("www.gambling.test")
    _tunnel(proxy, "www.gambling.test:443", b"\x16\x03\x01\x00\x00")
    _tunnel(proxy, "www.gambling.test:80", b"GET / HTTP/1.1\r\nHost: www.gambling.test\r\n\r\n")
    assert _settled(sites, "www.gambling.test", before) == before


def test_socks5_raw_bytes_to_blocked_host_never_contacted(make_proxy, sites):
    socks_port = free_port()
    make_proxy(extra_args=["--mode", "regular", "--mode", f"socks5@{socks_port}"])
    before = sites.log.contacted("www.gambling.test")
    host = b"www.gambling.test"
    with socket.create_connection(("127.0.0.1", socks_port), timeout=2,
                                  source_address=(LEARNER_IP, 0)) as raw:
        raw.sendall(b"\x05\x01\x00")                      # no login
        assert raw.recv(2) == b"\x05\x00"
        raw.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + (80).to_bytes(2))
        raw.recv(10)
        raw.sendall(b"\r\nGET / HTTP/1.1\r\nHost: www.gambling.test\r\n\r\n")
        try:
            raw.recv(4096)
        except (TimeoutError, ConnectionResetError):
            pass
    assert _settled(sites, "www.gambling.test", before) == before


ALLOW_ONE_PATH = POLICY.replace("allow: [example.org/teaching/]",
                                "allow: [example.org/teaching/, www.gambling.test/rules/]")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_request_allowed_by_a_url_rule_still_connects(make_proxy, sites, scheme):
    """The choke point respects the request's own decision: a page listed under allow: on a
    blocked host opens (requestheaders decided it with its path), the rest of it does not."""
    proxy = make_proxy(policy=ALLOW_ONE_PATH)
    assert proxy.curl(f"{scheme}://www.gambling.test/rules/odds",
                      client_ip=LEARNER_IP).status == 200
    assert proxy.curl(f"{scheme}://www.gambling.test/", client_ip=LEARNER_IP).status == 403


# -- 2. loopback and the gateway's own services ---------------------------------------------

class _LoopbackService:
    """A stand-in for a service on the gateway's loopback: counts every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def loopback_service():
    service = _LoopbackService()
    yield service
    service.close()


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "127.1", "0x7f000001", "[::ffff:127.0.0.1]"])
@pytest.mark.parametrize("client_ip", [LEARNER_IP, STAFF_IP])
def test_loopback_service_unreachable_for_every_profile(proxy, loopback_service, name, client_ip):
    result = proxy.curl(f"http://{name}:{loopback_service.port}/", client_ip=client_ip)
    assert "secret" not in result.body
    _, rest = _tunnel(proxy, f"{name}:{loopback_service.port}", b"\x00raw\n", client_ip=client_ip)
    assert b"secret" not in rest
    time.sleep(0.3)
    assert loopback_service.accepted == 0


def test_metrics_endpoint_unreachable_through_the_proxy(proxy):
    result = proxy.curl(f"http://127.0.0.1:{proxy.metrics_port}/metrics", client_ip=STAFF_IP)
    assert "webpolicy_" not in result.body
    assert result.status in (403, 502)


# -- 3. every hook fails closed ---------------------------------------------------------------

def test_non_utf8_host_header_fails_closed(proxy, sites):
    """One byte that is not UTF-8 in Host made the block page raise, and mitmproxy forwarded."""
    before = sites.log.contacted("www.gambling.test")
    reply = _exchange(proxy, b"GET http://www.gambling.test/ HTTP/1.1\r\n"
                             b"Host: www.gambling.test\xff\r\nAccept: text/html\r\n\r\n",
                      LEARNER_IP)
    assert reply.startswith((b"HTTP/1.1 403", b"HTTP/1.1 503", b"HTTP/1.1 400")), reply[:200]
    assert _settled(sites, "www.gambling.test", before) == before


# -- 4. one meaning per name ------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["www.gam\u200dbling.test", "www.gam\u200cbling.test",
                                      "gro\u00dfe-casino.test"])
def test_blocked_name_spelled_for_idna2003_never_contacted(make_proxy, sites, spelling):
    """UTS #46 keeps ß and the joiners; Python's idna codec, which mitmproxy resolves with,
    maps ß to ss and drops them: the filter and the connection must not disagree."""
    proxy = make_proxy(lists={"lists/gambling.txt": "www.gambling.test\ngrosse-casino.test\n"})
    site = "www.gambling.test" if "gam" in spelling else "grosse-casino.test"
    before = sites.log.contacted(site)
    # mitmproxy refuses non-ASCII in a request line (400), but an origin-form request names
    # its destination in the Host header alone, which it accepts and resolves.
    reply = _exchange(proxy, f"GET / HTTP/1.1\r\nHost: {spelling}\r\n\r\n".encode(),
                      LEARNER_IP)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert _settled(sites, site, before) == before


# -- 5. statutory and deny rules before on_error --------------------------------------------

def test_statutory_url_beside_garbage_host_blocked_for_staff(proxy, sites):
    """Staff fail open (on_error: allow), but a statutory URL is never reached that way."""
    before = sites.log.contacted("ctiru-host.test")
    reply = _exchange(proxy, b"GET http://ctiru-host.test/terror/page HTTP/1.1\r\n"
                             b"Host: bad host\x01name\r\n\r\n", STAFF_IP)
    assert reply.startswith(b"HTTP/1.1 451"), reply[:200]
    assert _settled(sites, "ctiru-host.test", before) == before
    record = proxy.records(1, lambda r: r.get("list") == "ctiru" and r.get("profile") == "staff")
    assert record and record[-1]["host"] == "ctiru-host.test"


# -- the gateway's own paths (/.webpolicy/...) on a blocked host -----------------------------

REVIEW = "/.webpolicy/review-request"


@pytest.mark.parametrize("args", [
    (),                                                          # a GET of the form's path
    ("--http1.1", "-d", "token=forged&reason=%FF%FE%00=cmd"),    # odd bytes, a bad token
    ("--http2", "-d", "token=forged&reason=x"),                  # HTTP/2
    ("--http1.1", "-H", "Transfer-Encoding: chunked", "-d", "token=x"),   # no Content-Length
    ("--http1.1", "-d", "&".join(f"f{i}=x" for i in range(50))),          # too many fields
    ("--http1.1", "-H", "Content-Length: 99999999", "-d", "token=x"),      # a lie
])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_review_path_on_a_blocked_host_is_answered_by_the_gateway(proxy, sites, args,
                                                                      scheme):
    """The block page's form posts to the blocked site's own origin; the gateway answers
    that path before deciding, whatever the bytes: the site is never contacted."""
    before = sites.log.contacted("www.gambling.test")
    result = proxy.curl(f"{scheme}://www.gambling.test{REVIEW}", *args, client_ip=LEARNER_IP)
    assert 400 <= result.status < 500 or result.status == 0, (result.status, result.stderr)
    assert "gambling" not in result.body.lower() or "request" in result.body.lower()
    assert _settled(sites, "www.gambling.test", before, wait=0.2) == before


def test_the_sign_in_path_is_decided_for_a_client_that_does_not_sign_in(proxy, sites):
    """Outside `sign_in.networks` the path is nobody's: decided like any other (blocked)."""
    before = sites.log.contacted("www.gambling.test")
    for url in ("http://www.gambling.test/.webpolicy/sign-in",
                "https://www.gambling.test/.webpolicy/sign-out"):
        assert proxy.curl(url, client_ip=LEARNER_IP).status in (403, 451)
    assert _settled(sites, "www.gambling.test", before, wait=0.2) == before
