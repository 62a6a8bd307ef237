"""decide(): precedence, profiles, identity, statutory rules and failing closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.helpers import STAFF_NETWORK, engine_from, policy_yaml
from webpolicy.engine.decision import allows_every_path, decide
from webpolicy.lists.canonical import canonical_url
from webpolicy.policy.model import PolicyError

POLICY = policy_yaml(
    version="t1",
    learner={"block": ["adult", "gambling"], "log": ["social"]},
    staff={"block": [], "log": ["adult", "gambling"], "on_error": "allow"},
    users={"alice": "staff"},
    networks=[STAFF_NETWORK, ("10.0.0.0/8", "learner")],
    lists=["ctiru", "adult", "gambling", "social"],
    extra="allow: [example.org/teaching/, allowed.gambling.test]\n"
          "deny: [denied.test, news.test/bad-page]\n")

LISTS = {
    "ctiru.txt": "evil.test/propaganda\nwhole-host.test\n",
    "adult.txt": "adult.test\nboth.test\n",
    "gambling.txt": "gambling.test\nboth.test\nexample.org\n",
    "social.txt": "social.test\nsocial-adult.test\n",
}


@pytest.fixture
def engine(tmp_path: Path):
    return make_engine(tmp_path)


def make_engine(tmp_path: Path, policy: str = POLICY, lists: dict | None = None):
    return engine_from(tmp_path, policy, LISTS if lists is None else lists)


def check(engine, url, **who):
    return decide(engine, canonical_url(url), **who)


def test_learner_blocked_staff_logged(engine):
    learner = check(engine, "http://www.gambling.test/x", client_ip="10.10.1.1")
    assert (learner.action, learner.profile, learner.list) == ("block", "learner", "gambling")
    assert learner.profile_reason == "network 10.0.0.0/8"
    assert (learner.match, learner.entry) == ("host", "gambling.test")
    staff = check(engine, "http://www.gambling.test/x", client_ip="10.20.3.4")
    assert (staff.action, staff.profile, staff.profile_reason) == ("log", "staff", "network 10.20.0.0/16")


def test_user_beats_network_and_unknown_is_default(engine):
    assert check(engine, "http://gambling.test/", user="alice", client_ip="10.10.1.1").action == "log"
    unknown = check(engine, "http://gambling.test/", client_ip="192.0.2.1")
    assert (unknown.profile, unknown.profile_reason, unknown.action) == ("learner", "default", "block")
    assert check(engine, "http://gambling.test/", user="mallory").profile == "learner"


def test_statutory_blocks_everyone_at_url_level(engine):
    for ip in ("10.20.0.1", "10.10.0.1"):
        d = check(engine, "https://evil.test/propaganda/part2?x=1", client_ip=ip)
        assert (d.action, d.statutory, d.match, d.severity) == ("block", True, "url", "critical")
        assert d.entry == "evil.test/propaganda"
    assert check(engine, "https://evil.test/propagandas", client_ip="10.10.0.1").action == "allow"
    assert check(engine, "https://evil.test/other", client_ip="10.20.0.1").action == "allow"
    assert check(engine, "https://sub.whole-host.test/", client_ip="10.20.0.1").statutory


def test_path_prefix_at_segment_boundary(engine):
    """Statutory paths match case-insensitively (issue #15: over-blocking a statutory URL's
    variant is acceptable, missing it is not); other lists' paths stay case-sensitive."""
    for path, action in [("/propaganda", "block"), ("/propaganda/x", "block"),
                         ("/propaganda?x", "block"), ("/propagandas", "allow"),
                         ("/PROPAGANDA", "block")]:
        assert check(engine, "http://evil.test" + path).action == action, path
    assert check(engine, "http://news.test/BAD-PAGE").action == "allow"


def test_local_deny_and_allow(engine):
    assert check(engine, "http://denied.test/", user="alice").list == "deny"
    assert check(engine, "http://denied.test/", user="alice").action == "block"
    assert check(engine, "http://news.test/bad-page/1").action == "block"
    assert check(engine, "http://news.test/good-page").action == "allow"
    allowed = check(engine, "http://example.org/teaching/unit1")
    assert (allowed.action, allowed.list) == ("allow", "allow")
    assert check(engine, "http://example.org/other").action == "block"
    assert check(engine, "http://allowed.gambling.test/").action == "allow"


def test_strictest_action_then_severity(engine):
    d = check(engine, "http://both.test/")
    assert (d.action, d.list) == ("block", "adult")          # high beats medium
    staff = check(engine, "http://both.test/", user="alice")
    assert (staff.action, staff.list) == ("log", "adult")


def test_log_only_for_learner(engine):
    d = check(engine, "http://social.test/feed")
    assert (d.action, d.category, d.severity) == ("log", "Social networking", "low")


def test_canonical_forms_match(engine):
    for url in ["http://WWW.Gambling.TEST./", "http://www.gambling.test:80/",
                "http://user@www.gambling.test/", "http://good.test@www.gambling.test/",
                "http://www.gambl%69ng.test/", "https://www.gambling.test:443/a/../b"]:
        assert check(engine, url).action == "block", url


def test_decision_fields(engine):
    fields = check(engine, "http://adult.test/").as_dict()
    assert list(fields) == ["action", "profile", "profile_reason", "list", "category",
                            "severity", "statutory", "match", "entry", "policy_version"]
    assert fields["policy_version"] == "t1"


def test_forced_profile(engine):
    d = decide(engine, canonical_url("http://adult.test/"), profile="staff")
    assert (d.profile, d.profile_reason, d.action) == ("staff", "requested", "log")


def test_missing_list_fails_closed_for_blocking_profile_only(tmp_path):
    lists = dict(LISTS)
    del lists["gambling.txt"]
    engine = make_engine(tmp_path, lists=lists)
    learner = check(engine, "http://news.test/")
    assert learner.failed_closed and learner.action == "block"
    staff = check(engine, "http://news.test/", user="alice")      # on_error: allow
    assert (staff.action, staff.error) == ("allow", False)
    assert not engine.status["gambling"].available
    assert any("gambling.txt" in str(w) for w in engine.warnings)


def test_missing_statutory_source_is_an_error(tmp_path):
    lists = dict(LISTS)
    del lists["ctiru.txt"]
    with pytest.raises(PolicyError) as info:
        make_engine(tmp_path, lists=lists)
    assert any("ctiru" in str(p) and not p.warning for p in info.value.problems)


def test_allow_rule_cannot_open_a_statutory_entry(tmp_path):
    policy = POLICY.replace("allow: [example.org/teaching/", "allow: [evil.test/, example.org/teaching/")
    with pytest.raises(PolicyError) as info:
        make_engine(tmp_path, policy=policy)
    assert any("statutory" in str(p) and "policy.yaml:" in str(p) for p in info.value.problems)


def test_ip_literal_entries(tmp_path):
    lists = dict(LISTS, **{"gambling.txt": "192.0.2.7\n2001:db8::1\n"})
    engine = make_engine(tmp_path, lists=lists)
    for url in ["http://192.0.2.7/", "http://3221225991/", "http://0xC0.0.2.7/",
                "http://[2001:DB8:0::1]/"]:
        assert check(engine, url).action == "block", url
    assert check(engine, "http://192.0.2.8/").action == "allow"


@pytest.mark.parametrize("host, who, expected", [
    ("news.example", {}, True),                            # in no list
    ("adult.test", {}, False),                             # blocked for learners
    ("adult.test", {"user": "alice"}, True),               # only logged for staff
    ("www.adult.test", {"user": "alice"}, True),
    ("allowed.gambling.test", {}, False),                  # local rules are URL rules
    ("whole-host.test", {"user": "alice"}, False),         # statutory host: everyone
    ("evil.test", {"user": "alice"}, False),               # statutory URL under the host
    ("news.test", {"user": "alice"}, False),               # a local deny of one page
    ("example.org", {"user": "alice"}, False),             # a local allow of one prefix
    ("denied.test", {"user": "alice"}, False),
])
def test_allows_every_path(engine, host, who, expected):
    assert allows_every_path(engine, host, **who) is expected


def test_allows_every_path_never_when_a_profile_fails_closed_or_uses_expressions(tmp_path):
    lists = dict(LISTS)
    del lists["gambling.txt"]
    assert not allows_every_path(make_engine(tmp_path / "a", lists=lists), "news.example")
    policy = POLICY.replace("adult: {category: Pornography, severity: high, sources: [adult.txt]}",
                            "adult: {category: Pornography, severity: high, format: ut1, "
                            "expressions: true, sources: [adult]}")
    lists = dict(LISTS, **{"adult/domains": "adult.test\n", "adult/expressions": "(porn|xxx)\n"})
    engine = make_engine(tmp_path / "b", policy=policy, lists=lists)
    assert check(engine, "http://news.example/xxx").blocked
    assert not allows_every_path(engine, "news.example")


def test_allows_every_path_fails_on_a_released_engine(engine):
    engine.release()
    with pytest.raises(Exception):
        allows_every_path(engine, "news.example")


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory):
    return make_engine(tmp_path_factory.mktemp("every-path"))


HOSTS = ["news.example", "adult.test", "www.adult.test", "allowed.gambling.test",
         "whole-host.test", "evil.test", "www.evil.test", "news.test", "example.org",
         "denied.test", "social.test", "both.test"]


@settings(max_examples=300, deadline=None)
@given(host=st.sampled_from(HOSTS), user=st.sampled_from([None, "alice"]),
       path=st.sampled_from(["/", "/propaganda", "/propaganda/x", "/bad-page", "/teaching/",
                             "/teaching/a", "/x"]),
       query=st.sampled_from(["", "q=1"]))
def test_allows_every_path_is_never_wrong(shared_engine, host, user, path, query):
    """Whenever the early connection is allowed, no request to the host is blocked; and on a
    host without URL rules (where the path cannot matter) it is refused only when decide()
    blocks, so the shortcut reads the tiers as decide() does."""
    engine = shared_engine
    url = f"http://{host}{path}" + (f"?{query}" if query else "")
    blocked = check(engine, url, user=user).blocked
    if allows_every_path(engine, host, user=user):
        assert not blocked, url
    elif not engine.host_facts(host)[1]:
        assert blocked, url

