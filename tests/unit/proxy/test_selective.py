"""Selective TLS inspection (issue #19) in the add-on's tls_clienthello, in-process: which
handshakes are passed through (`ignore_connection`) and which are intercepted, for learner and
staff, and a property: a connection is passed through only if every path on every name it
involves is allowed (not blocked, not logged) for that client."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import tls
from mitmproxy.addons import proxyauth, proxyserver
from mitmproxy.test import taddons

from tests.unit.engine.test_selective import LEARNER_IP, LISTS, STAFF_IP, make_policy
from tests.unit.helpers import engine_from, write_policy
from tests.unit.proxy.builders import client_hello, hello_data
from webpolicy.engine.decision import decide
from webpolicy.lists.canonical import canonical_url
from webpolicy.proxy.addon import WebPolicy
from webpolicy.proxy.connections import uninspected

LOGGING = "logging: {directory: logs, retention_days: 30}\nmetrics: {enabled: false}\n"


def start(tmp_path: Path, policy: str, **options):
    webpolicy = WebPolicy()
    path = write_policy(tmp_path, policy, LISTS)
    tctx = taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), webpolicy)
    tctx.__enter__()
    tctx.configure(webpolicy, webpolicy_policy=str(path),
                   webpolicy_cache_dir=str(tmp_path / "cache"), webpolicy_metrics=False,
                   **options)
    return webpolicy, tctx


@pytest.fixture
def addon(tmp_path: Path):
    webpolicy, tctx = start(tmp_path, make_policy(extra=LOGGING))
    yield webpolicy
    webpolicy.done()
    tctx.__exit__(None, None, None)


def hello(host: str, client: str, sni: str | None = "same", mode: str = "regular"):
    data = hello_data(host, client, mode=mode, sni=host if sni == "same" else sni)
    if sni is None:
        data = tls.ClientHelloData(data.context, client_hello(None))
    return data


def passed(addon, data: tls.ClientHelloData) -> bool:
    addon.tls_clienthello(data)
    refused = data.context.client.id in addon.connections._refuse
    assert not (refused and data.ignore_connection)
    return data.ignore_connection


@pytest.mark.parametrize("host, learner, staff", [
    ("fine.example", True, True),
    ("adult.example", False, False),       # learner: blocked (block page); staff: logged
    ("social.example", False, True),       # learner: logged only
    ("ctiru.example", False, False),       # statutory URL rules under the host
    ("news.example", False, False),        # a deny of one page: its URL entry still blocks
    ("www.google.com", False, True),       # safe search forced for learners only
    ("x.cloudfront.net", False, False),    # fronting
    ("cdn.front.example", False, False),   # fronting, from policy.yaml
    ("use-application-dns.net", False, False),    # the DoH canary: answered here
    ("192.0.2.7", False, False),           # an address, not a name
])
def test_which_connections_pass_through(addon, host, learner, staff):
    assert passed(addon, hello(host, LEARNER_IP)) is learner
    assert passed(addon, hello(host, STAFF_IP)) is staff


def test_a_blocked_host_is_intercepted_not_refused_so_the_learner_gets_the_block_page(addon):
    data = hello("adult.example", LEARNER_IP)
    assert not passed(addon, data)
    assert data.context.client.id not in addon.connections._refuse


@pytest.mark.parametrize("sni", [None, "other.example"])
def test_no_sni_or_another_sni_is_intercepted(addon, sni):
    assert not passed(addon, hello("fine.example", STAFF_IP, sni=sni))


def test_an_sni_naming_a_blocked_host_behind_an_allowed_connect_is_refused(addon):
    data = hello("fine.example", LEARNER_IP, sni="adult.example")
    assert not passed(addon, data)
    assert data.context.client.id in addon.connections._refuse


@pytest.mark.parametrize("mode", ["transparent", "reverse:https://fine.example:443"])
def test_transparent_and_reverse_modes_are_always_intercepted(addon, mode):
    assert not passed(addon, hello("fine.example", STAFF_IP, mode=mode))


def test_a_users_login_picks_the_profile(addon):
    data = hello("social.example", STAFF_IP)            # a staff network, a learner's login
    addon.gate.users[data.context.client.id] = "lena"
    assert not passed(addon, data)


def test_passthrough_hosts_are_unchanged(addon):
    assert passed(addon, hello("bank.example", LEARNER_IP))


def test_inspect_all_passes_nothing_through(tmp_path):
    webpolicy, tctx = start(tmp_path, make_policy(tls="", extra=LOGGING))
    try:
        assert not passed(webpolicy, hello("fine.example", STAFF_IP))
        assert passed(webpolicy, hello("bank.example", STAFF_IP))     # passthrough: as before
    finally:
        webpolicy.done()
        tctx.__exit__(None, None, None)


def test_when_users_must_log_in_only_once_the_login_is_known(tmp_path):
    (tmp_path / "htpasswd").write_text("lena:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n")
    webpolicy, tctx = start(tmp_path, make_policy(extra=LOGGING),
                            proxyauth=f"@{tmp_path / 'htpasswd'}")
    try:
        assert not passed(webpolicy, hello("fine.example", STAFF_IP))    # login not known
        data = hello("fine.example", STAFF_IP)
        webpolicy.gate.users[data.context.client.id] = "lena"
        assert passed(webpolicy, data)
    finally:
        webpolicy.done()
        tctx.__exit__(None, None, None)


def test_an_error_intercepts(addon):
    addon.gate.engine.release()                          # any lookup now raises
    assert not uninspected(hello("fine.example", STAFF_IP), addon.gate.engine, None)


# -- the property ---------------------------------------------------------------------------

NAMES = ["fine.example", "adult.example", "www.adult.example", "social.example",
         "ctiru.example", "whole-host.example", "news.example", "example.org",
         "allowed.example", "bank.example", "www.google.com", "duckduckgo.com",
         "x.cloudfront.net", "cdn.front.example", "use-application-dns.net"]
PATHS = ["/", "/terror/page", "/terror/page/x", "/bad-page", "/teaching/", "/teaching/a",
         "/x?q=1", "/search?q=hurt"]
ENTRY = st.sampled_from(["adult.example", "social.example", "fine.example", "www.google.com",
                         "fine.example/secret/", "news.example/bad-page", "x.example"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adult=st.lists(ENTRY, max_size=3), social=st.lists(ENTRY, max_size=3),
       extra_allow=st.lists(ENTRY, max_size=2), cases=st.lists(st.tuples(
           st.sampled_from(NAMES), st.sampled_from(NAMES + [None]),
           st.sampled_from([LEARNER_IP, STAFF_IP]), st.sampled_from([None, "lena"])),
           min_size=1, max_size=8))
def test_passed_through_only_if_every_path_on_every_name_is_allowed(adult, social, extra_allow,
                                                                    cases):
    lists = dict(LISTS, **{"adult.txt": "\n".join(["adult.example", *adult]) + "\n",
                           "social.txt": "\n".join(["social.example", *social]) + "\n"})
    policy = make_policy().replace("allow: [example.org/teaching/, allowed.example]",
                                   "allow: [" + ", ".join(["example.org/teaching/",
                                                           *extra_allow]) + "]")
    with tempfile.TemporaryDirectory() as directory:
        engine = engine_from(Path(directory), policy, lists)
    for connect, sni, client, user in cases:
        data = hello_data(connect, client, sni=sni or connect)
        if not uninspected(data, engine, user):
            continue
        for name in {connect, sni or connect}:
            for path in PATHS:
                decision = decide(engine, canonical_url(f"https://{name}{path}"), client, user)
                assert decision.action == "allow", (name, path, client, user, decision)


SIGN_IN = ("directory: {url: 'ldap://127.0.0.1:1', base_dn: 'dc=test'}\n"
           "sign_in: {networks: [10.10.0.0/16]}\n")


@pytest.mark.parametrize("host", ["fine.example", "bank.example"])
def test_a_client_that_must_sign_in_is_intercepted_until_it_has(tmp_path, host):
    """A sign-in network's client without a session must get the sign-in page: neither
    selective inspection nor a passthrough host may hand its TLS on unseen (CONNECT to the
    bank, then talk to it without ever signing in)."""
    webpolicy, tctx = start(tmp_path, make_policy(extra=LOGGING + SIGN_IN))
    try:
        assert webpolicy.signinpage.covers(hello(host, LEARNER_IP).context.client)
        assert not passed(webpolicy, hello(host, LEARNER_IP))
        webpolicy.signinpage.store.start(LEARNER_IP, "lena")          # signed in: as before
        assert passed(webpolicy, hello(host, LEARNER_IP))
    finally:
        webpolicy.done()
        tctx.__exit__(None, None, None)
