"""circumvention.py: the connection rules, the canaries, and the shipped lists and policy."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.unit.helpers import REPO, learner_policy_with
from webpolicy.engine.circumvention import (
    CANARY,
    connect_violation,
    ip_literal_violation,
    is_canary,
    is_canonical_ip,
    is_dns_canary,
    is_ip_literal,
    refusal,
    sni_violation,
)
from webpolicy.engine.decision import decide
from webpolicy.engine.engine import build_engine
from webpolicy.lists.canonical import canonical_host, canonical_url
from webpolicy.policy.model import ConnectRules, PolicyError, load_policy

LEARNER = ConnectRules(block_ip_literals=True, allowed_ports=(443,))
OPEN = ConnectRules()


@pytest.mark.parametrize("host", ["203.0.113.9", "0xcb.0.0x71.9", "3405803785", "0313.0.0161.011",
                                  "[2001:db8::1]", "2001:db8::1", "::ffff:203.0.113.9",
                                  "127.0.0.1", "10.1.2.3"])
def test_ip_literals_in_every_spelling(host):
    assert is_ip_literal(host)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.example", "203-0-113-9.example",
                                  "localhost", "", "exa mple"])
def test_names_are_not_ip_literals(host):
    assert not is_ip_literal(host)


@settings(max_examples=2000)
@given(st.text(alphabet="0123456789abcdefxX.-:[]%\uff10\u3002 \t\n", min_size=1, max_size=20))
@example("0 ")
@example("127.0.0.1\n")
@example("127.0.0.\t1")
@example(" 0x7f.1")
def test_fast_path_agrees_with_full_parse(host):
    """is_ip_literal skips the full parse for names; it must never skip an address."""
    try:
        full = bool(ipaddress.ip_address(canonical_host(host)))
    except ValueError:
        full = False
    assert is_ip_literal(host) == full


@settings(max_examples=2000)
@given(st.one_of(st.text(alphabet="0123456789abcdefxX.-:[]%\uff10\u3002", min_size=1, max_size=20),
                 st.text(min_size=1, max_size=12)))
def test_canonical_ip_test_agrees_on_canonical_hosts(host):
    """The request path tests hosts the decision has canonicalised with is_canonical_ip."""
    try:
        canonical = canonical_host(host)
    except ValueError:
        return
    assert is_canonical_ip(canonical) == is_ip_literal(host)


def test_connect_to_ip_literal():
    found = connect_violation("0xcb.0.0x71.9", 443, LEARNER)
    assert (found.rule, found.entry) == ("ip_literal", "203.0.113.9:443")
    assert found.category == "Connection to an IP address instead of a site name"
    ipv6 = connect_violation("[2001:db8::1]", 443, LEARNER)
    assert ipv6.entry == "[2001:db8::1]:443"


def test_connect_rules_off_allow_everything():
    assert connect_violation("203.0.113.9", 8443, OPEN) is None
    assert ip_literal_violation("203.0.113.9", OPEN) is None


@pytest.mark.parametrize("port,refused", [(443, False), (80, True), (8443, True), (1194, True),
                                          (22, True)])
def test_ports(port, refused):
    found = connect_violation("example.com", port, LEARNER)
    assert (found is not None) == refused
    if found:
        assert (found.rule, found.entry) == ("port", f"example.com:{port}")


def test_empty_port_list_means_any_port():
    assert connect_violation("example.com", 8443, ConnectRules(block_ip_literals=True)) is None


@pytest.mark.parametrize("connect,sni", [("bank.example", "bank.example"),
                                         ("Bank.Example", "bank.example."),
                                         ("bank.example", None), ("bank.example", "")])
def test_same_name_or_no_sni_is_not_a_mismatch(connect, sni):
    assert sni_violation(connect, sni) is None


@pytest.mark.parametrize("connect,sni", [("bank.example", "other.example"),
                                         ("203.0.113.9", "bank.example"),
                                         ("bank.example", "www.bank.example")])
def test_sni_mismatch(connect, sni):
    found = sni_violation(connect, sni)
    assert found.rule == "sni_mismatch" and found.entry == f"{connect} -> {sni}"


def test_canaries():
    assert is_canary(CANARY) and not is_canary("www.use-application-dns.net")
    for name in ("use-application-dns.net", "use-application-dns.net.", "MASK.icloud.com",
                 "mask-h2.icloud.com"):
        assert is_dns_canary(name)
    assert not is_dns_canary("icloud.com") and not is_dns_canary("example.com")


def test_refusal_is_a_logged_block():
    decision = refusal(connect_violation("203.0.113.9", 443, LEARNER), "learner",
                       "network 10.10.0.0/16", "v1")
    assert decision.blocked and not decision.statutory and not decision.error
    assert (decision.list, decision.match, decision.entry) == ("connect", "ip_literal",
                                                               "203.0.113.9:443")
    assert decision.as_dict()["category"] == "Connection to an IP address instead of a site name"


# -- the connect schema ---------------------------------------------------------------------

def load(tmp_path: Path, connect: str):
    return learner_policy_with(tmp_path, "connect", connect)


def test_schema_reads_connect(tmp_path):
    rules = load(tmp_path, "{block_ip_literals: true, allowed_ports: [443, 8443]}")
    assert rules.profiles["learner"].connect == ConnectRules(True, (443, 8443))


@pytest.mark.parametrize("bad,message", [("{allowed_ports: [0]}", "allowed_ports"),
                                         ("{allowed_ports: [https]}", "allowed_ports"),
                                         ("{allowed_ports: 443}", "allowed_ports"),
                                         ("{block_ip_literal: true}", "block_ip_literals")])
def test_schema_errors_name_file_and_line(tmp_path, bad, message):
    with pytest.raises(PolicyError) as error:
        load(tmp_path, bad)
    text = str(error.value)
    assert f"{tmp_path / 'policy.yaml'}:6:" in text and message in text


# -- what ships -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    return build_engine(load_policy(REPO / "policy.yaml"))


def test_shipped_policy_turns_everything_on_for_learners(shipped):
    learner = shipped.policy.profiles["learner"]
    assert learner.safe_search.enforce and learner.safe_search.youtube == "moderate"
    assert learner.connect == ConnectRules(block_ip_literals=True, allowed_ports=(443,))
    assert {"vpn", "proxies", "doh", "remote_control", "residential_proxies",
            "unsafe_search"} <= set(learner.block)
    staff = shipped.policy.profiles["staff"]
    assert not staff.safe_search.enforce and staff.connect == ConnectRules()


@pytest.mark.parametrize("url,learner,staff", [
    ("https://nordvpn.com/download", "block", "log"),
    ("https://dns.google/dns-query", "block", "log"),
    ("https://mask.icloud.com/", "block", "log"),
    ("https://hidemyass.com/", "block", "log"),
    ("https://anydesk.com/", "block", "allow"),
    ("https://search.yahoo.com/search?p=x", "block", "allow"),
    ("https://uk.search.yahoo.com/search?p=x", "block", "allow"),
    ("https://www.google.co.uk/search?q=x", "allow", "allow"),
    ("https://duckduckgo.com/?q=x", "allow", "allow"),
])
def test_shipped_lists_decide(shipped, url, learner, staff):
    canonical = canonical_url(url)
    assert decide(shipped, canonical, profile="learner").action == learner
    assert decide(shipped, canonical, profile="staff").action == staff


def test_shipped_circumvention_lists_load_and_stay_small(shipped):
    for name in ("vpn", "proxies", "doh", "remote_control", "residential_proxies",
                 "unsafe_search"):
        status = shipped.status[name]
        assert status.entries > 20 and not status.failed_sources and status.skipped == 0, name
    assert shipped.status["proxies"].entries > 100_000       # the whole UT1 list, gzipped
    files = [p for p in (REPO / "blocklists" / "circumvention").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    for category in ("vpn", "doh", "remote-control", "residential-proxies", "redirector"):
        note = (REPO / "blocklists" / "circumvention" / category / "SOURCE").read_text()
        assert "CC BY-SA 4.0" in note                        # the licence's attribution


def test_search_engines_list_never_names_an_enforced_engine():
    from webpolicy.engine.safesearch import engine_for
    from webpolicy.lists.formats import parse_source
    parsed = parse_source(REPO / "blocklists" / "circumvention" / "search-engines.txt")
    assert parsed.domains and not [d for d in parsed.domains if engine_for(d)]
