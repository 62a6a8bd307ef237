"""Enforcement through real mitmdump: every path a request can take, real curl and httpx."""

from __future__ import annotations

import base64
import socket
import ssl
import time

import httpx
import pytest

from .conftest import LEARNER_IP, POLICY, STAFF_IP, UNKNOWN_IP
from .proxy import free_port, htpasswd

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_learner_blocked_on_category_and_site_never_contacted(proxy, sites, scheme):
    before = sites.log.contacted("www.gambling.test")
    result = proxy.curl(f"{scheme}://www.gambling.test/slots", "-H", "Accept: text/html",
                        client_ip=LEARNER_IP)
    assert result.status == 403
    assert "This page has been blocked" in result.body
    assert "Gambling" in result.body
    assert sites.log.contacted("www.gambling.test") == before


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_staff_allowed_on_same_url_and_event_logged(proxy, sites, scheme):
    result = proxy.curl(f"{scheme}://www.gambling.test/staff-{scheme}", client_ip=STAFF_IP)
    assert result.status == 200
    assert '"site": "www.gambling.test"' in result.body
    records = proxy.records(1, lambda r: r["url"].endswith(f"/staff-{scheme}"))
    assert records, "the staff visit was not logged"
    assert records[0]["action"] == "logged"
    assert records[0]["profile"] == "staff"
    assert records[0]["profile_reason"] == f"network {STAFF_IP}/32"
    assert records[0]["list"] == "gambling"


@pytest.mark.parametrize("client_ip", [LEARNER_IP, STAFF_IP])
def test_statutory_url_blocked_for_everyone_sibling_allowed(proxy, sites, client_ip):
    blocked = proxy.curl("https://ctiru-host.test/terror/page?x=1", "-H", "Accept: text/html",
                         client_ip=client_ip)
    assert blocked.status == 451
    assert "ctiru-host.test" in blocked.body
    assert "/terror/page" not in blocked.body, "a statutory block page shows the host only"
    sibling = proxy.curl("https://ctiru-host.test/terrain/page", client_ip=client_ip)
    assert sibling.status == 200


def test_block_page_reference_matches_log_record(proxy):
    result = proxy.curl("http://adult.test/", "-i", client_ip=LEARNER_IP)
    assert result.status == 403
    reference = next(line.split(":", 1)[1].strip() for line in result.body.splitlines()
                     if line.lower().startswith("x-webpolicy-reference"))
    assert f"Reference: {reference}" in result.body
    records = proxy.records(1, lambda r: r["id"] == reference)
    assert records and records[0]["action"] == "blocked"
    assert records[0]["category"] == "Pornography"
    assert records[0]["client_ip"] == LEARNER_IP


def test_unknown_client_is_a_learner(proxy):
    result = proxy.curl("http://www.gambling.test/", client_ip=UNKNOWN_IP)
    assert result.status == 403


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_unresolvable_blocked_site_still_gets_block_page(proxy, scheme):
    result = proxy.curl(f"{scheme}://unresolvable-casino.test/", client_ip=LEARNER_IP)
    assert result.status == 403
    assert "Gambling" in result.body


def test_allowed_site_passes(proxy, sites):
    result = proxy.curl("https://news.test/today", client_ip=LEARNER_IP)
    assert result.status == 200
    assert sites.log.requests_to("news.test")[-1].path == "/today"


def test_local_allow_prefix_and_url_entry(proxy):
    assert proxy.curl("http://news.test/adult-section/x", client_ip=LEARNER_IP).status == 403
    assert proxy.curl("http://news.test/adult-sectional", client_ip=LEARNER_IP).status == 200


def test_passthrough_blocked_host_refused_at_connect(proxy, sites):
    before = sites.log.contacted("casino-bank.test")
    result = proxy.curl("https://casino-bank.test/", client_ip=LEARNER_IP)
    assert result.status in (403, 0)
    assert "CONNECT tunnel failed, response 403" in result.stderr
    assert sites.log.contacted("casino-bank.test") == before
    records = proxy.records(1, lambda r: r["host"].startswith("casino-bank.test"))
    assert records and records[-1]["action"] == "refused_passthrough"


def test_passthrough_allowed_host_is_not_intercepted(proxy, sites):
    # Not intercepted: the client sees the site's own certificate, not the proxy's.
    cmd_ca = str(sites.ca)
    result = proxy.curl("https://bank.test/account", "--cacert", cmd_ca, client_ip=LEARNER_IP)
    assert result.status == 200, result.stderr


def test_domain_fronting_blocked(proxy, sites):
    """Neither host is contacted: www.gambling.test is blocked, and news.test, the front, has
    URL rules, so it is not connected to before a request is decided."""
    before = sites.log.contacted("news.test"), sites.log.contacted("www.gambling.test")
    result = proxy.curl("https://news.test/", "-H", "Host: www.gambling.test",
                        client_ip=LEARNER_IP)
    assert result.status == 403
    assert (sites.log.contacted("news.test"), sites.log.contacted("www.gambling.test")) == before


def _handshake_only(proxy, host: str, client_ip: str, sni: str | None = None,
                    login: str | None = None) -> None:
    """CONNECT and the client's TLS handshake, then no request: a browser's preconnect."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10,
                                  source_address=(client_ip, 0)) as raw:
        auth = (f"Proxy-Authorization: Basic {base64.b64encode(login.encode()).decode()}\r\n"
                if login else "")
        raw.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n{auth}\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = raw.recv(4096)
            assert chunk, f"the proxy closed the CONNECT: {reply!r}"
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply
        _tls_handshake(proxy, raw, sni or host)


def _socks5_handshake_only(proxy, port: int, host: str, client_ip: str, login: str) -> None:
    """The same through a SOCKS5 listener, with a username/password login (RFC 1928/1929)."""
    user, _, password = login.partition(":")
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(client_ip, 0)) as raw:
        raw.sendall(b"\x05\x01\x02")                    # one method offered: username/password
        assert raw.recv(2) == b"\x05\x02"
        raw.sendall(bytes([1, len(user)]) + user.encode() + bytes([len(password)]) +
                    password.encode())
        assert raw.recv(2) == b"\x01\x00", "SOCKS5 login refused"
        raw.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + (443).to_bytes(2))
        reply = raw.recv(10)
        assert reply[:2] == b"\x05\x00", reply
        _tls_handshake(proxy, raw, host)


def _tls_handshake(proxy, raw: socket.socket, server_name: str) -> None:
    context = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with context.wrap_socket(raw, server_hostname=server_name):
        pass


def _contacted_after(sites, site: str, before: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while sites.log.contacted(site) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    return sites.log.contacted(site)


@pytest.mark.parametrize("host, client_ip, early", [
    ("social.test", LEARNER_IP, True),             # only logged: no request can be blocked
    ("www.gambling.test", STAFF_IP, True),         # only logged for staff
    ("www.youtube.com", UNKNOWN_IP, True),         # in no list
    ("www.gambling.test", LEARNER_IP, False),      # blocked
    ("www.gambling.test", UNKNOWN_IP, False),      # unknown = learner
    ("ctiru-host.test", STAFF_IP, False),          # a statutory URL under the host
    ("news.test", LEARNER_IP, False),              # a category URL under the host
    ("example.org", STAFF_IP, False),              # a local allow of one prefix
])
def test_upstream_opened_before_a_request_only_where_none_can_be_blocked(
        proxy, sites, host, client_ip, early):
    """Like bare mitmproxy's eager connection, which saves each new connection's first request
    the wait for the upstream handshake; never where a request might be blocked."""
    before = sites.log.contacted(host)
    _handshake_only(proxy, host, client_ip)
    assert _contacted_after(sites, host, before, 3.0 if early else 1.0) == before + early


def test_http2_request_blocked(proxy):
    result = proxy.curl("https://www.gambling.test/h2", "--http2", "-i", client_ip=LEARNER_IP)
    assert result.status == 403
    assert "\nHTTP/2 403" in result.body


def test_websocket_upgrade_to_blocked_host_blocked(proxy, sites):
    before = sites.log.contacted("www.gambling.test")
    result = proxy.curl("http://www.gambling.test/socket", "-H", "Connection: Upgrade",
                        "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
                        "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", client_ip=LEARNER_IP)
    assert result.status == 403
    assert sites.log.contacted("www.gambling.test") == before


def test_httpx_client_over_https(proxy):
    verify = ssl.create_default_context(cafile=str(proxy.ca_cert))
    transport = httpx.HTTPTransport(local_address=LEARNER_IP, proxy=proxy.url, verify=verify)
    with httpx.Client(transport=transport, timeout=15) as client:
        blocked = client.get("https://adult.test/", headers={"Accept": "text/html"})
        allowed = client.get("https://news.test/")
    assert blocked.status_code == 403
    assert blocked.headers["content-type"].startswith("text/html")
    assert allowed.status_code == 200


@pytest.mark.parametrize("connect, sni, client_ip", [
    ("social.test", "www.youtube.com", LEARNER_IP),    # SNI names another host
    ("127.0.1.5", "social.test", STAFF_IP),             # an address says nothing of the site
])
def test_upstream_not_opened_early_unless_the_decided_name_is_the_destination(
        proxy, sites, connect, sni, client_ip):
    before = sites.log.contacted("social.test"), sites.log.contacted("www.youtube.com")
    _handshake_only(proxy, connect, client_ip, sni=sni)
    time.sleep(1.0)
    assert (sites.log.contacted("social.test"), sites.log.contacted("www.youtube.com")) == before


def test_allowed_site_that_cannot_be_reached_early_still_answers(proxy):
    """Opened early (nothing on it can be blocked) but unresolvable: the client's handshake
    still completes and the request gets mitmproxy's 502, as with bare mitmproxy."""
    result = proxy.curl("https://unresolvable-allowed.test/", client_ip=STAFF_IP)
    assert result.status == 502, result.stderr


LOGIN_POLICY = POLICY.replace("users: {{alice: staff}}", "users: {{alice: staff, lena: learner}}")


@pytest.mark.parametrize("listener", ["connect", "socks5"])
def test_early_upstream_follows_the_login_not_the_address(make_proxy, sites, listener,
                                                          tmp_path):
    """A staff login on a learner's machine may preconnect to a site staff only log; a
    learner's login on a staff machine may not, over CONNECT and over SOCKS5 alike."""
    socks_port = free_port()
    users = htpasswd(tmp_path, {"alice": "x", "lena": "x"})
    proxy = make_proxy(policy=LOGIN_POLICY, options={"proxyauth": f"@{users}"},
                       extra_args=["--mode", "regular", "--mode", f"socks5@{socks_port}"])

    def preconnect(client_ip: str, login: str) -> None:
        if listener == "connect":
            _handshake_only(proxy, "www.gambling.test", client_ip, login=login)
        else:
            _socks5_handshake_only(proxy, socks_port, "www.gambling.test", client_ip, login)

    before = sites.log.contacted("www.gambling.test")
    preconnect(STAFF_IP, "lena:x")
    assert _contacted_after(sites, "www.gambling.test", before, 1.0) == before
    preconnect(LEARNER_IP, "alice:x")
    assert _contacted_after(sites, "www.gambling.test", before, 3.0) == before + 1
