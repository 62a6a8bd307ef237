"""Circumvention through real mitmdump: VPN/DoH lists, IP literals, odd ports, SNI that
disagrees with CONNECT, and Firefox's DoH canary (over HTTP and over DNS)."""

from __future__ import annotations

import socket
import subprocess

import pytest
from mitmproxy import dns
from mitmproxy.net.dns import classes, response_codes, types

from .conftest import LEARNER_IP, STAFF_IP, write_policy
from .proxy import Proxy, free_port

pytestmark = pytest.mark.e2e

LISTS = {
    "lists/vpn.txt": "vpn.test\n",
    "lists/doh.txt": "doh.test\n",
}

POLICY = """\
version: "e2e-circumvention"
default_profile: learner
profiles:
  learner:
    block: [adult, vpn, doh]
    connect: {{block_ip_literals: true, allowed_ports: [443]}}
  staff:
    block: []
    log: [vpn]
    on_error: allow
clients:
  networks:
    - {{cidr: {staff_ip}/32, profile: staff}}
    - {{cidr: {learner_ip}/32, profile: learner}}
lists:
  ctiru: {{statutory: true, category: Terrorist content (CTIRU), severity: critical, format: urls, sources: [lists/ctiru.txt]}}
  adult: {{category: Pornography, severity: high, format: ut1, sources: [lists/adult]}}
  vpn: {{category: VPN services, severity: medium, format: domains, sources: [lists/vpn.txt]}}
  doh: {{category: Encrypted DNS resolvers, severity: medium, format: domains, sources: [lists/doh.txt]}}
allow: [127.0.1.8]
passthrough: [bank.test]
logging: {{directory: logs, retention_days: 30}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
"""

NEWS_IP = "127.0.1.1"           # news.test
ALLOWED_IP = "127.0.1.8"        # example.org, listed under allow:


@pytest.fixture(scope="module")
def dns_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cv_proxy(sites, tmp_path_factory, dns_port):
    """A private proxy running the regular (explicit) mode and mitmproxy's DNS mode."""
    directory = tmp_path_factory.mktemp("circumvention-proxy")
    policy_path, metrics_port = write_policy(directory, POLICY, LISTS)
    proxy = Proxy(directory, policy_path, free_port(), metrics_port, sites.hosts_file(),
                  sites.ca, ["--mode", "regular", "--mode", f"dns@{dns_port}"],
                  {"ssl_insecure": "true"})          # staff may reach bare IPs: no name to verify
    yield proxy.start()
    proxy.stop()


def refused_at_connect(result) -> bool:
    return "CONNECT tunnel failed, response 403" in result.stderr


def last_record(proxy, **fields):
    records = proxy.records(1, lambda r: all(r.get(k) == v for k, v in fields.items()))
    assert records, f"no safeguarding record with {fields}"
    return records[-1]


# -- VPN and DoH lists ----------------------------------------------------------------------

@pytest.mark.parametrize("site", ["vpn.test", "doh.test"])
def test_vpn_and_doh_blocked_for_learner_never_contacted(cv_proxy, sites, site):
    before = sites.log.contacted(site)
    result = cv_proxy.curl(f"https://{site}/dns-query", client_ip=LEARNER_IP)
    assert result.status == 403
    assert sites.log.contacted(site) == before


def test_vpn_allowed_and_logged_for_staff_doh_allowed(cv_proxy, sites):
    assert cv_proxy.curl("https://vpn.test/staff-download", client_ip=STAFF_IP).status == 200
    record = last_record(cv_proxy, host="vpn.test", profile="staff")
    assert record["action"] == "logged" and record["list"] == "vpn"
    assert cv_proxy.curl("https://doh.test/dns-query?dns=AAAB", client_ip=STAFF_IP).status == 200
    assert sites.log.requests_to("doh.test")[-1].path == "/dns-query?dns=AAAB"


# -- IP literals ----------------------------------------------------------------------------

@pytest.mark.parametrize("address", [NEWS_IP, "0x7f.0x0.0x1.0x1", "2130706689"])
def test_ip_literal_connect_refused_for_learner(cv_proxy, sites, address):
    """Any spelling of the address (hex, a single decimal number) is the same literal."""
    before = sites.log.contacted("news.test")
    result = cv_proxy.curl(f"https://{address}/", client_ip=LEARNER_IP)
    assert refused_at_connect(result), result.stderr
    assert sites.log.contacted("news.test") == before
    record = last_record(cv_proxy, method="CONNECT", host=f"{NEWS_IP}:443")
    assert (record["action"], record["list"], record["match"]) == ("blocked", "connect",
                                                                   "ip_literal")


def test_ip_literal_plain_http_blocked_for_learner(cv_proxy, sites):
    before = sites.log.contacted("news.test")
    result = cv_proxy.curl(f"http://{NEWS_IP}/page", "-H", "Host: news.test",
                           "-H", "Accept: text/html", client_ip=LEARNER_IP)
    assert result.status == 403
    assert "Connection to an IP address instead of a site name" in result.body
    assert sites.log.contacted("news.test") == before


def test_ip_literal_allowed_for_staff(cv_proxy, sites):
    assert cv_proxy.curl(f"http://{NEWS_IP}/staff-ip", client_ip=STAFF_IP).status == 200
    result = cv_proxy.curl(f"https://{NEWS_IP}/staff-ip-tls", client_ip=STAFF_IP)
    assert result.status == 200, result.stderr
    assert sites.log.requests_to("news.test")[-1].path == "/staff-ip-tls"


def test_ip_literal_listed_under_allow_is_usable(cv_proxy, sites):
    assert cv_proxy.curl(f"http://{ALLOWED_IP}/intranet", client_ip=LEARNER_IP).status == 200
    result = cv_proxy.curl(f"https://{ALLOWED_IP}/intranet-tls", client_ip=LEARNER_IP)
    assert not refused_at_connect(result)
    assert result.status == 200, result.stderr


# -- ports ----------------------------------------------------------------------------------

def test_odd_port_connect_refused_for_learner(cv_proxy):
    result = cv_proxy.curl("https://news.test:8443/", client_ip=LEARNER_IP)
    assert refused_at_connect(result), result.stderr
    record = last_record(cv_proxy, method="CONNECT", host="news.test:8443")
    assert record["match"] == "port"
    assert record["category"] == "Connection to a port that is not allowed"


def test_odd_port_not_refused_for_staff(cv_proxy):
    # Staff have no port rule: the tunnel opens, and the upstream (nothing on 8443) fails.
    result = cv_proxy.curl("https://news.test:8443/", client_ip=STAFF_IP)
    assert not refused_at_connect(result)
    assert result.status == 502


def test_port_443_allowed_for_learner(cv_proxy):
    assert cv_proxy.curl("https://news.test:443/ok", client_ip=LEARNER_IP).status == 200


# -- SNI and CONNECT host -------------------------------------------------------------------

def s_client(proxy, connect: str, servername: str) -> subprocess.CompletedProcess:
    """A TLS handshake through a CONNECT tunnel to `connect`, naming `servername` in SNI."""
    return subprocess.run(
        ["openssl", "s_client", "-proxy", f"127.0.0.1:{proxy.port}", "-connect", connect,
         "-servername", servername, "-brief"],
        input="", capture_output=True, text=True, timeout=20)


def test_sni_mismatch_on_passthrough_refused(cv_proxy, sites):
    before = sites.log.contacted("bank.test")
    done = s_client(cv_proxy, "bank.test:443", "news.test")
    assert "CONNECTION ESTABLISHED" not in done.stderr
    assert sites.log.contacted("bank.test") == before
    record = last_record(cv_proxy, method="TLS", host="news.test")
    assert record["match"] == "sni_mismatch" and record["entry"] == "bank.test -> news.test"


def test_sni_claiming_passthrough_host_refused(cv_proxy, sites):
    """Naming a pass-through host in SNI must not buy an unseen tunnel elsewhere."""
    before = sites.log.contacted("news.test")
    done = s_client(cv_proxy, "news.test:443", "bank.test")
    assert "CONNECTION ESTABLISHED" not in done.stderr
    assert sites.log.contacted("news.test") == before


def test_matching_sni_on_passthrough_passes(cv_proxy):
    done = s_client(cv_proxy, "bank.test:443", "bank.test")
    assert "CONNECTION ESTABLISHED" in done.stderr, done.stderr
    assert "test sites" in done.stdout + done.stderr     # the site's own certificate


def test_curl_connect_to_other_host_refused(cv_proxy, sites):
    """curl --connect-to: CONNECT goes to bank.test while SNI and Host say news.test."""
    before = sites.log.contacted("bank.test")
    result = cv_proxy.curl("https://news.test/", "--connect-to", "news.test:443:bank.test:443",
                           client_ip=STAFF_IP)
    assert result.status == 0 and result.returncode != 0
    assert sites.log.contacted("bank.test") == before


def test_intercepted_tunnel_with_blocked_sni_refused(cv_proxy, sites):
    before = sites.log.contacted("news.test")
    done = s_client(cv_proxy, "news.test:443", "vpn.test")
    assert "CONNECTION ESTABLISHED" not in done.stderr
    assert sites.log.contacted("news.test") == before
    record = last_record(cv_proxy, method="TLS", host="vpn.test")
    assert record["list"] == "vpn"


# -- Firefox's DoH canary -------------------------------------------------------------------

@pytest.mark.parametrize("scheme,client_ip", [("https", LEARNER_IP), ("http", LEARNER_IP),
                                              ("https", STAFF_IP)])
def test_canary_answered_locally(cv_proxy, sites, scheme, client_ip):
    before = sites.log.contacted("use-application-dns.net")
    result = cv_proxy.curl(f"{scheme}://use-application-dns.net/", "-i", client_ip=client_ip)
    assert result.status == 502
    assert "x-webpolicy-canary: nxdomain" in result.body.lower()
    assert "keeps DNS-over-HTTPS off" in result.body
    assert sites.log.contacted("use-application-dns.net") == before


def dns_query(port: int, name: str) -> dns.DNSMessage:
    query = dns.DNSMessage(
        timestamp=None, id=4242, query=True, op_code=0, authoritative_answer=False,
        truncation=False, recursion_desired=True, recursion_available=False, reserved=0,
        response_code=response_codes.NOERROR,
        questions=[dns.Question(name, types.A, classes.IN)],
        answers=[], authorities=[], additionals=[])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(query.packed, ("127.0.0.1", port))
        return dns.DNSMessage.unpack(s.recv(4096))


@pytest.mark.parametrize("name", ["use-application-dns.net", "mask.icloud.com",
                                  "mask-h2.icloud.com"])
def test_dns_mode_answers_canaries_nxdomain(cv_proxy, dns_port, name):
    answer = dns_query(dns_port, name)
    assert answer.id == 4242
    assert answer.response_code == response_codes.NXDOMAIN
    assert not answer.answers


def test_dns_mode_resolves_other_names(cv_proxy, dns_port):
    answer = dns_query(dns_port, "news.test")
    assert answer.response_code == response_codes.NOERROR
    assert [str(a.ipv4_address) for a in answer.answers] == [NEWS_IP]
