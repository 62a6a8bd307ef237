"""addon_circumvention.py on mitmproxy's own test flows: the canary, IP-literal requests in
explicit and transparent modes, and the DNS-mode NXDOMAIN."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import dns, http
from mitmproxy.net.dns import classes, response_codes, types
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from tests.unit.helpers import engine_from, policy_yaml
from webpolicy.proxy.addon import WebPolicy
from webpolicy.proxy.stages.circumvention import Circumvention

POLICY = policy_yaml(
    learner={"block": ["adult"], "connect": "{block_ip_literals: true, allowed_ports: [443]}"},
    staff={"block": [], "on_error": "allow"},
    lists={"adult": "{category: Pornography, sources: [adult.txt]}"},
    extra="allow: [192.0.2.10]\n")


@pytest.fixture(params=["alone", "after the decision"])
def addon(tmp_path: Path, request) -> Circumvention | WebPolicy:
    """The companion on its own (reading the hosts itself), and as WebPolicy runs it: after
    the decision, on the canonical hosts the decision read."""
    policy = WebPolicy()
    policy.gate.engine = engine_from(tmp_path, POLICY, {"adult.txt": "adult.example\n"})
    return Circumvention(policy.gate) if request.param == "alone" else policy


def flow(host: str, host_header: str | None = None, client_ip: str = "10.10.0.5",
         mode: str = "regular") -> http.HTTPFlow:
    request = tutils.treq(host=host, port=80, path=b"/", scheme=b"http",
                          headers=http.Headers([(b"host", (host_header or host).encode())]))
    f = tflow.tflow(req=request)
    f.client_conn.peername = (client_ip, 50000)
    f.client_conn.proxy_mode = ProxyMode.parse(mode)
    return f


@pytest.mark.parametrize("client_ip", ["10.10.0.5", "10.20.0.9"])
def test_canary_answered_for_everyone(addon, client_ip):
    f = flow("use-application-dns.net", client_ip=client_ip)
    addon.requestheaders(f)
    assert f.response.status_code == 502
    assert f.response.headers["X-Webpolicy-Canary"] == "nxdomain"
    assert b"DNS-over-HTTPS off" in f.response.content


def test_canary_does_not_replace_a_block(addon):
    f = flow("use-application-dns.net")
    f.response = http.Response.make(403, b"blocked")
    addon.requestheaders(f)
    assert f.response.status_code == 403


@pytest.mark.parametrize("host,host_header", [("203.0.113.9", None),
                                              ("203.0.113.9", "news.example"),
                                              ("news.example", "203.0.113.9"),
                                              ("0xcb.0.0x71.9", None)])
def test_ip_literal_request_blocked_for_learner(addon, host, host_header):
    f = flow(host, host_header)
    addon.requestheaders(f)
    assert f.response is not None and f.response.status_code == 403
    assert b"Connection to an IP address" in f.response.content


def test_ip_literal_allowed_for_staff_and_when_listed(addon):
    staff = flow("203.0.113.9", client_ip="10.20.0.9")
    listed = flow("192.0.2.10")
    for f in (staff, listed):
        addon.requestheaders(f)
        assert f.response is None


def test_transparent_mode_judges_the_host_header_only(addon):
    """In transparent mode request.host is always the IP the client connected to."""
    named = flow("203.0.113.9", "news.example", mode="transparent")
    bare = flow("203.0.113.9", "203.0.113.9", mode="transparent")
    addon.requestheaders(named)
    addon.requestheaders(bare)
    assert named.response is None
    assert bare.response is not None and bare.response.status_code == 403


def dns_flow(name: str) -> dns.DNSFlow:
    request = dns.DNSMessage(
        timestamp=None, id=7, query=True, op_code=0, authoritative_answer=False,
        truncation=False, recursion_desired=True, recursion_available=False, reserved=0,
        response_code=response_codes.NOERROR, questions=[dns.Question(name, types.A, classes.IN)],
        answers=[], authorities=[], additionals=[])
    return tflow.tdnsflow(req=request)


@pytest.mark.parametrize("name", ["use-application-dns.net", "mask.icloud.com",
                                  "mask-h2.icloud.com"])
def test_dns_canaries_nxdomain(addon, name):
    f = dns_flow(name)
    addon.dns_request(f)
    assert f.response.response_code == response_codes.NXDOMAIN and f.response.id == 7


def test_other_dns_questions_resolved_as_usual(addon):
    f = dns_flow("www.example.org")
    addon.dns_request(f)
    assert f.response is None
