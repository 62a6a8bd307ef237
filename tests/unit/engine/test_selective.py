"""Selective TLS inspection (issue #19) in the engine: the `tls:` section of policy.yaml,
the hosts that can front for others, and decision.may_pass_through for learner and staff."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.helpers import STAFF_NETWORK, engine_from, policy_from, policy_yaml
from tests.unit.policy.test_schema import errors
from webpolicy.engine import selective
from webpolicy.engine.decision import allows_every_path, may_pass_through
from webpolicy.engine.engine import selftest_host
from webpolicy.policy.model import PolicyError, TlsSettings

STAFF_IP, LEARNER_IP = "10.20.0.9", "10.10.0.5"
TLS = "tls: {inspect: selective, fronting: [Front.Example, '*.wild.example']}\n"
EXTRA = ("allow: [example.org/teaching/, allowed.example]\n"
         "deny: [news.example/bad-page]\n"
         "passthrough: [bank.example]\n")
LISTS = {"ctiru.txt": "ctiru.example/terror/page\nwhole-host.example\n",
         "adult.txt": "adult.example\nallowed.example\n",
         "social.txt": "social.example\n"}


def make_policy(tls: str = TLS, extra: str = "", learner_search: str = "{enforce: true}",
                staff_search: str = "{enforce: false}") -> str:
    return policy_yaml(
        learner={"block": ["ctiru", "adult"], "log": ["social"], "safe_search": learner_search},
        staff={"block": ["ctiru"], "log": ["adult"], "on_error": "allow",
               "safe_search": staff_search},
        users={"lena": "learner"},
        networks=[STAFF_NETWORK, ("10.10.0.0/16", "learner")],
        lists=["ctiru", "adult", "social"], extra=EXTRA + tls + extra)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return engine_from(tmp_path_factory.mktemp("selective"), make_policy(), LISTS)


# -- policy.yaml ------------------------------------------------------------------------------

def test_the_default_is_to_inspect_everything(tmp_path):
    policy = policy_from(tmp_path, make_policy(tls=""), LISTS)
    assert policy.tls == TlsSettings() and not policy.tls.selective


def test_the_tls_section_is_read(tmp_path):
    policy = policy_from(tmp_path, make_policy(), LISTS)
    assert policy.tls.selective
    assert policy.tls.fronting == ("front.example", "wild.example")


@pytest.mark.parametrize("tls, message", [
    ("tls: {inspect: some}\n", "tls.inspect: 'some' is not one of all, selective"),
    ("tls: {inspect: selective, fronting: [bad name]}\n", "tls.fronting: 'bad name'"),
    ("tls: {inspect: selective, fronting: [localhost]}\n", "tls.fronting: 'localhost'"),
    ("tls: {inspec: selective}\n", "inspec"),
])
def test_mistakes_in_the_tls_section_are_refused(tmp_path, tls, message):
    with pytest.raises(PolicyError) as refused:
        policy_from(tmp_path, make_policy(tls=tls), LISTS)
    assert message in str(refused.value)


# -- hosts, whatever the client -----------------------------------------------------------------

@pytest.mark.parametrize("host, fronting", [
    ("cloudfront.net", True), ("d111.cloudfront.net", True), ("x.akamaihd.net", True),
    ("a.b.fastly.net", True), ("x.azureedge.net", True), ("x.googleusercontent.com", True),
    ("x.appspot.com", True), ("x.workers.dev", True), ("x.herokuapp.com", True),
    ("notcloudfront.net", False), ("cloudfront.net.example", False), ("news.example", False),
])
def test_shipped_fronting_hosts_and_their_subdomains(host, fronting):
    assert selective.is_fronting(host, selective.fronting_suffixes()) is fronting


@pytest.mark.parametrize("host, kind", [
    ("fine.example", selective.OPEN),
    ("news.example", selective.INSPECT),                     # a deny: entry under the host
    ("www.google.com", selective.SEARCH),
    ("www.google.co.uk", selective.SEARCH),
    ("duckduckgo.com", selective.SEARCH),
    ("suggestqueries.google.com", selective.SEARCH),       # search terms only
    ("www.youtube.com", selective.SEARCH),
    ("cdn.front.example", selective.INSPECT),               # the policy's fronting hosts
    ("x.wild.example", selective.INSPECT),
    ("d1.cloudfront.net", selective.INSPECT),
    ("ctiru.example", selective.INSPECT),                    # URL rules under the host
    ("example.org", selective.INSPECT),
    ("192.0.2.7", selective.INSPECT),                        # not a name
    ("localhost", selective.INSPECT),
    ("a.localhost", selective.INSPECT),
    (selftest_host("adult"), selective.INSPECT),             # answered by the gateway
])
def test_the_host_kind_is_memoised_per_host(engine, host, kind):
    assert engine.tls_kind(host) == kind
    assert engine.tls_kind(host) == kind
    assert engine.tls_kind.cache_info().hits >= 1


# -- per client ---------------------------------------------------------------------------------

@pytest.mark.parametrize("host, learner, staff", [
    ("fine.example", True, True),             # in no list
    ("bank.example", True, True),             # a passthrough: host (decided elsewhere anyway)
    ("adult.example", False, False),          # learner: blocked; staff: logged only
    ("www.adult.example", False, False),
    ("social.example", False, True),          # learner: logged only; staff: no list
    ("allowed.example", False, False),        # allow: entries are URL rules, even a host
    ("whole-host.example", False, False),     # statutory host
    ("ctiru.example", False, False),          # a statutory URL under the host
    ("news.example", False, False),           # a local deny of one page
    ("example.org", False, False),            # a local allow of one prefix: URL rules
    ("www.google.com", False, True),          # learner forces safe search; staff does not
    ("duckduckgo.com", False, True),
    ("x.cloudfront.net", False, False),       # can front for any site
    ("cdn.front.example", False, False),
])
def test_may_pass_through_for_learner_and_staff(engine, host, learner, staff):
    assert may_pass_through(engine, host, LEARNER_IP) is learner
    assert may_pass_through(engine, host, STAFF_IP) is staff
    assert may_pass_through(engine, host, STAFF_IP, "lena") is learner     # a learner's login


def test_search_engines_are_inspected_for_everyone_when_a_watchlist_exists(tmp_path):
    watch = "watchlist:\n  selfharm: {category: Self-harm, terms: [hurt myself]}\n"
    engine = engine_from(tmp_path, make_policy(extra=watch), LISTS)
    assert not may_pass_through(engine, "www.google.com", STAFF_IP)
    assert may_pass_through(engine, "fine.example", STAFF_IP)


def test_any_safe_search_setting_keeps_every_search_engine_inspected(tmp_path):
    """Deliberately coarse: YouTube-Restrict alone keeps Bing inspected too."""
    engine = engine_from(tmp_path, make_policy(staff_search="{youtube: moderate}"), LISTS)
    assert not may_pass_through(engine, "www.youtube.com", STAFF_IP)
    assert not may_pass_through(engine, "www.bing.com", STAFF_IP)
    assert may_pass_through(engine, "fine.example", STAFF_IP)


def test_never_when_a_profile_fails_closed(tmp_path):
    lists = dict(LISTS)
    del lists["social.txt"]                    # a list the learner uses cannot be read
    engine = engine_from(tmp_path, make_policy(), lists)
    assert not may_pass_through(engine, "fine.example", LEARNER_IP)
    assert may_pass_through(engine, "fine.example", STAFF_IP)     # on_error: allow


def test_never_for_a_profile_with_expressions(tmp_path):
    policy = make_policy().replace(
        "adult: {category: Pornography, severity: high, sources: [adult.txt]}",
        "adult: {category: Pornography, severity: high, format: ut1, expressions: true, "
        "sources: [adult]}")
    lists = dict(LISTS, **{"adult/domains": "adult.example\n", "adult/expressions": "xxx\n"})
    engine = engine_from(tmp_path, policy, lists)
    assert not may_pass_through(engine, "fine.example", LEARNER_IP)
    assert not may_pass_through(engine, "fine.example", STAFF_IP)   # staff logs adult


def test_a_released_engine_raises_rather_than_allows(tmp_path):
    engine = engine_from(tmp_path, make_policy(), LISTS)
    engine.release()
    with pytest.raises(Exception):
        may_pass_through(engine, "fine.example", LEARNER_IP)


@pytest.mark.parametrize("host", ["fine.example", "adult.example", "social.example",
                                  "ctiru.example", "www.google.com", "x.cloudfront.net"])
@pytest.mark.parametrize("client", [LEARNER_IP, STAFF_IP])
def test_passing_through_implies_every_path_allowed(engine, host, client):
    if may_pass_through(engine, host, client):
        assert allows_every_path(engine, host, client)


def test_the_schema_accepts_the_tls_section_and_refuses_mistakes():
    policy = yaml.safe_load(make_policy())
    assert errors(policy) == []
    policy["tls"]["inspect"] = "some"
    assert any("is not one of" in message for message in errors(policy))
    policy["tls"] = {"inspect": "all", "fronts": []}
    assert any("Additional properties" in message for message in errors(policy))
