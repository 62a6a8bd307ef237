"""Selective TLS inspection (issue #19) through real mitmdump and curl: with
`tls: {inspect: selective}` an allowed site nothing needs to see is reached with its own
certificate (curl trusts the sites' CA, not the proxy's), while blocked, logged and URL-rule
sites, and an SNI other than the CONNECT host, are still intercepted; `inspect: all` intercepts
everything as before.

In the standard test policy, social.test is logged for learners and in no list for staff;
adult.test is blocked for learners and logged for staff; news.test has a URL entry
(news.test/adult-section, blocked for learners); doh.test and vpn.test are in no list at all."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import LEARNER_IP, POLICY, STAFF_IP, write_policy
from .proxy import Proxy, free_port

pytestmark = pytest.mark.e2e

SELECTIVE = POLICY + "tls: {{inspect: selective}}\n"
CERT_FAILURE = 60          # curl: the peer's certificate cannot be verified with the CA given


@pytest.fixture(scope="module")
def sel_proxy(sites, tmp_path_factory):
    directory = tmp_path_factory.mktemp("selective-proxy")
    policy_path, metrics_port = write_policy(directory, SELECTIVE)
    proxy = Proxy(directory, policy_path, free_port(), metrics_port, sites.hosts_file(),
                  sites.ca)
    yield proxy.start()
    proxy.stop()


def with_site_ca(proxy: Proxy, sites, url: str, client_ip: str):
    """curl trusting only the sites' own CA (the last --cacert wins)."""
    return proxy.curl(url, "--cacert", str(sites.ca), client_ip=client_ip)


def s_client(proxy: Proxy, connect: str, servername: str) -> str:
    """A TLS handshake through a CONNECT tunnel to `connect`, naming `servername` in SNI."""
    done = subprocess.run(
        ["openssl", "s_client", "-proxy", f"127.0.0.1:{proxy.port}", "-connect", connect,
         "-servername", servername, "-brief"],
        input="", capture_output=True, text=True, timeout=20)
    return done.stdout + done.stderr


def test_an_allowed_site_is_reached_with_its_own_certificate(sel_proxy, sites):
    before = sites.log.contacted("social.test")
    result = with_site_ca(sel_proxy, sites, "https://social.test/page", STAFF_IP)
    assert result.status == 200, result.stderr
    assert '"site": "social.test"' in result.body
    assert sites.log.contacted("social.test") == before + 1
    # the proxy's CA alone cannot verify the site's own certificate: nothing intercepted
    assert sel_proxy.curl("https://social.test/", client_ip=STAFF_IP).returncode == CERT_FAILURE
    assert not sel_proxy.records(0, lambda r: r["host"].startswith("social.test")
                                 and r.get("profile") == "staff")


def test_a_blocked_site_still_gets_the_block_page(sel_proxy, sites):
    before = sites.log.contacted("adult.test")
    result = sel_proxy.curl("https://adult.test/", "-H", "Accept: text/html",
                            client_ip=LEARNER_IP)
    assert result.status == 403 and "This page has been blocked" in result.body
    assert sites.log.contacted("adult.test") == before
    assert with_site_ca(sel_proxy, sites, "https://adult.test/",
                        LEARNER_IP).returncode == CERT_FAILURE


def test_a_logged_site_is_still_intercepted_and_recorded(sel_proxy, sites):
    result = sel_proxy.curl("https://social.test/logged", client_ip=LEARNER_IP)
    assert result.status == 200
    records = sel_proxy.records(
        1, lambda r: r.get("url", "").startswith("https://social.test/logged"))
    assert records and records[-1]["action"] == "logged" and records[-1]["profile"] == "learner"
    assert with_site_ca(sel_proxy, sites, "https://social.test/",
                        LEARNER_IP).returncode == CERT_FAILURE
    # staff log adult: intercepted for them too
    assert with_site_ca(sel_proxy, sites, "https://adult.test/",
                        STAFF_IP).returncode == CERT_FAILURE


def test_a_host_with_url_rules_is_intercepted_and_its_url_entry_still_blocks(sel_proxy, sites):
    assert with_site_ca(sel_proxy, sites, "https://news.test/",
                        LEARNER_IP).returncode == CERT_FAILURE
    assert sel_proxy.curl("https://news.test/", client_ip=LEARNER_IP).status == 200
    before = len(sites.log.requests_to("news.test"))
    blocked = sel_proxy.curl("https://news.test/adult-section/x", client_ip=LEARNER_IP)
    assert blocked.status == 403
    assert len(sites.log.requests_to("news.test")) == before


def test_an_sni_other_than_the_connect_host_is_intercepted_or_refused(sel_proxy, sites):
    own = s_client(sel_proxy, "doh.test:443", "doh.test")
    assert "CONNECTION ESTABLISHED" in own and "test sites" in own       # passed through
    other = s_client(sel_proxy, "doh.test:443", "vpn.test")             # both allowed
    assert "CONNECTION ESTABLISHED" in other and "test sites" not in other   # intercepted
    before = sites.log.contacted("doh.test")
    # openssl connects from 127.0.0.1, in no network: the default (learner) profile
    assert "CONNECTION ESTABLISHED" not in s_client(sel_proxy, "doh.test:443", "adult.test")
    assert sites.log.contacted("doh.test") == before


def test_inspect_all_intercepts_everything_as_before(make_proxy, sites):
    proxy = make_proxy()
    assert with_site_ca(proxy, sites, "https://social.test/", STAFF_IP).returncode == CERT_FAILURE
    assert proxy.curl("https://social.test/", client_ip=STAFF_IP).status == 200
