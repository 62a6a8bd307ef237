"""The bypass tests in transparent mode (issue #15): a client in its own network namespace,
nftables redirecting its TCP 80/443 to mitmdump's `--mode transparent` listener, the add-on
as deployed (connection_strategy left as it sets it: lazy).  See netns.py for the network.

The client names no proxy: mitmproxy knows only the address the client connected to
(SO_ORIGINAL_DST), the SNI and the Host header.  Every test asserts how many TCP connections
the blocked site received, counted by the site itself: zero.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import POLICY, write_policy
from .netns import (GATEWAY_IP, INTERNET_SITES, LEARNER_NS_IP, STAFF_NS_IP, ClientNamespace,
                    InternetSites, missing_tools)
from .proxy import Proxy, free_port

pytestmark = pytest.mark.e2e

VPN_IP = INTERNET_SITES["vpn.test"]
DOH_IP = INTERNET_SITES["doh.test"]

# The standard test policy, with the namespace's two client addresses in its networks, one
# destination denied by its address and one address with a URL rule (deny: is for everyone).
TRANSPARENT_POLICY = POLICY.replace(
    "  networks:\n",
    "  networks:\n"
    f"    - {{{{cidr: {LEARNER_NS_IP}/32, profile: learner}}}}\n"
    f"    - {{{{cidr: {STAFF_NS_IP}/32, profile: staff}}}}\n"
).replace("deny: []", f"deny: [{VPN_IP}, {DOH_IP}/private/]")
assert TRANSPARENT_POLICY.count("10.213.") == 4
BLOCKED = "This page has been blocked"


@dataclass
class Gateway:
    proxy: Proxy
    client: ClientNamespace
    internet: InternetSites
    cacert: Path            # the proxy's CA and the sites' CA: intercepted and passed through

    def settled(self, site: str, wait: float = 0.5) -> int:
        """The site's connection count once any late connection had time to arrive."""
        time.sleep(wait)
        return self.internet.contacted(site)

    def records(self, host: str, client_ip: str = LEARNER_NS_IP) -> list[dict]:
        return self.proxy.records(1, lambda r: r["host"] == host and r["client_ip"] == client_ip)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("transparent")
    port = free_port()
    client = ClientNamespace(port).open()
    internet = proxy = None
    try:
        internet = InternetSites(directory)
        policy_path, metrics_port = write_policy(directory, TRANSPARENT_POLICY)
        # The regular listener on loopback is only there for Proxy.start to see it is up.
        proxy = Proxy(directory, policy_path, free_port(), metrics_port, internet.hosts_file(),
                      internet.ca, ["--mode", "regular",
                                    "--mode", f"transparent@{GATEWAY_IP}:{port}"])
        proxy.start()
        client.wait_for_listener(GATEWAY_IP, port)
        cacert = directory / "trusted.pem"
        cacert.write_text(proxy.ca_cert.read_text() + internet.ca.read_text())
        yield Gateway(proxy, client, internet, cacert)
    finally:
        if proxy is not None:
            proxy.stop()
        if internet is not None:
            internet.stop()
        client.close()


# -- 1. plain HTTP ----------------------------------------------------------------------------

def test_plain_http_to_blocked_host_gets_block_page_never_contacted(gateway):
    before = gateway.internet.contacted("www.gambling.test")
    result = gateway.client.curl("http://www.gambling.test/")
    assert result.status == 403 and BLOCKED in result.body, result
    assert gateway.settled("www.gambling.test") == before
    record = gateway.records("www.gambling.test")
    assert record and (record[-1]["profile"], record[-1]["list"]) == ("learner", "gambling")


def test_plain_http_to_allowed_host_served_and_url_rules_apply(gateway):
    before = gateway.internet.contacted("news.test")
    result = gateway.client.curl("http://news.test/teaching")
    assert result.status == 200 and '"site": "news.test"' in result.body, result
    assert gateway.settled("news.test", wait=0) == before + 1
    # The same host's blocked page: decided on the path, before any connection.
    result = gateway.client.curl("http://news.test/adult-section")
    assert result.status == 403 and BLOCKED in result.body, result
    assert gateway.settled("news.test") == before + 1


# -- 2. HTTPS, by SNI -------------------------------------------------------------------------

def test_https_to_blocked_intercepted_host_gets_block_page_never_contacted(gateway):
    before = gateway.internet.contacted("www.gambling.test")
    result = gateway.client.curl("https://www.gambling.test/", cacert=gateway.cacert)
    assert result.status == 403 and BLOCKED in result.body, result
    assert gateway.settled("www.gambling.test") == before


def test_https_to_blocked_passthrough_host_fails_tls_never_contacted(gateway):
    """casino-bank.test is under passthrough: (not intercepted), so no page can be shown:
    the handshake fails before anything is forwarded."""
    before = gateway.internet.contacted("casino-bank.test")
    result = gateway.client.curl("https://casino-bank.test/", cacert=gateway.cacert)
    assert result.status == 0 and result.returncode == 35, result     # TLS handshake failed
    assert gateway.settled("casino-bank.test") == before
    record = gateway.records("casino-bank.test")
    assert record and record[-1]["method"] == "TLS"


def test_https_to_allowed_passthrough_host_reaches_it_unintercepted(gateway):
    """bank.test is passed through: the client sees the site's own certificate (it trusts
    only the sites' CA here, not the proxy's)."""
    before = gateway.internet.contacted("bank.test")
    result = gateway.client.curl("https://bank.test/", cacert=gateway.internet.ca)
    assert result.status == 200 and '"site": "bank.test"' in result.body, result
    assert gateway.settled("bank.test", wait=0) == before + 1


# -- 3. domain fronting -----------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["https", "http"])
def test_domain_fronting_allowed_sni_blocked_host_header_never_contacted(gateway, scheme):
    """Connected to news.test (its address, and its SNI over HTTPS), asking for a blocked
    host in the Host header: blocked, and neither site is contacted."""
    before = {site: gateway.internet.contacted(site) for site in ("news.test",
                                                                  "www.gambling.test")}
    result = gateway.client.curl(f"{scheme}://news.test/", "-H", "Host: www.gambling.test",
                                 cacert=gateway.cacert)
    assert result.status == 403 and BLOCKED in result.body, result
    time.sleep(0.5)
    assert {site: gateway.internet.contacted(site) for site in before} == before


@pytest.mark.parametrize("scheme, port", [("https", 443), ("http", 80)])
def test_allowed_name_at_blocked_site_address_never_contacted(gateway, scheme, port):
    before = gateway.internet.contacted("www.gambling.test")
    gateway.client.curl(f"{scheme}://news.test/", "--connect-to",
                        f"news.test:{port}:{INTERNET_SITES['www.gambling.test']}:{port}",
                        cacert=gateway.cacert)
    assert gateway.settled("www.gambling.test") == before


# -- 4. raw bytes on ports 80 and 443 ---------------------------------------------------------

RAW_PAYLOADS = [
    b"\r\nGET /private/x HTTP/1.1\r\nHost: doh.test\r\n\r\n",   # an empty line first: not HTTP
    b"\x00\x01 not http at all\n",                              # plain binary
]


@pytest.mark.parametrize("payload", RAW_PAYLOADS, ids=["crlf-http", "binary"])
@pytest.mark.parametrize("port", [80, 443])
@pytest.mark.parametrize("site", ["vpn.test", "doh.test"])
def test_raw_bytes_to_blocked_destination_never_relayed(gateway, site, port, payload):
    """In transparent mode the destination of bytes mitmproxy cannot parse is only the address
    the client connected to: one under deny: (vpn.test's), or one with a URL rule that raw
    bytes cannot be checked against (doh.test's), is never connected to."""
    before = gateway.internet.contacted(site)
    reply = gateway.client.exchange(INTERNET_SITES[site], port, payload)
    assert b"Error response" not in reply and b"HTTP/1." not in reply, reply[:300]
    assert gateway.settled(site) == before


def test_unnamed_raw_bytes_are_refused_even_to_an_allowed_address(gateway):
    """Raw bytes in transparent mode name nothing but the address the client chose, which no
    list speaks for (the address of a site blocked by name would pass): they are refused
    unless the address is listed under allow:."""
    before = gateway.internet.contacted("www.youtube.com")
    reply = gateway.client.exchange(INTERNET_SITES["www.youtube.com"], 80, b"\x00\x01 raw\n")
    assert b"Error response" not in reply
    assert gateway.settled("www.youtube.com") == before


def test_http_to_address_with_url_rules_decided_by_path(gateway):
    """Plain HTTP to doh.test's address (Host: the address): its URL rule applies by path."""
    before = gateway.internet.contacted("doh.test")
    assert gateway.client.curl(f"http://{DOH_IP}/private/key").status == 403
    assert gateway.settled("doh.test") == before
    result = gateway.client.curl(f"http://{DOH_IP}/public")
    assert result.status == 200 and '"site": "doh.test"' in result.body, result
    assert gateway.settled("doh.test", wait=0) == before + 1


@pytest.mark.parametrize("port", [80, 443])
def test_raw_bytes_to_address_of_host_blocked_by_name_never_relayed(gateway, port):
    before = gateway.internet.contacted("www.gambling.test")
    gateway.client.exchange(INTERNET_SITES["www.gambling.test"], port,
                            b"\r\nGET / HTTP/1.1\r\nHost: www.gambling.test\r\n\r\n")
    assert gateway.settled("www.gambling.test") == before


# -- 5. profiles by client address ------------------------------------------------------------

def test_learner_and_staff_by_client_address(gateway):
    """10.213.0.2 is a learner and 10.213.0.3 staff (clients.networks): gambling is blocked
    for the one and only logged for the other."""
    before = gateway.internet.contacted("www.gambling.test")
    learner = gateway.client.curl("http://www.gambling.test/", source=LEARNER_NS_IP)
    assert learner.status == 403 and BLOCKED in learner.body, learner
    assert gateway.settled("www.gambling.test") == before
    staff = gateway.client.curl("http://www.gambling.test/", source=STAFF_NS_IP)
    assert staff.status == 200 and '"site": "www.gambling.test"' in staff.body, staff
    assert gateway.settled("www.gambling.test", wait=0) == before + 1
    records = gateway.records("www.gambling.test", client_ip=STAFF_NS_IP)
    assert records and (records[-1]["profile"], records[-1]["action"]) == ("staff", "logged")


def test_statutory_url_blocked_for_staff_never_contacted(gateway):
    before = gateway.internet.contacted("ctiru-host.test")
    result = gateway.client.curl("http://ctiru-host.test/terror/page", source=STAFF_NS_IP)
    assert result.status == 451, result
    assert gateway.settled("ctiru-host.test") == before
    records = gateway.records("ctiru-host.test", client_ip=STAFF_NS_IP)
    assert records and (records[-1]["profile"], records[-1]["list"]) == ("staff", "ctiru")
