"""UrlIndex: exact host and path-prefix rules, matched at segment boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webpolicy.lists import urlindex
from webpolicy.lists.urlindex import UrlIndex, _prefix_matches


def index(*rules: tuple[str, str, int]) -> UrlIndex:
    built = UrlIndex()
    for host, prefix, bits in rules:
        built.add(host, prefix, bits)
    return built


def found(idx: UrlIndex, host: str, target: str) -> set[tuple[str, int, str]]:
    return {tuple(hit) for hit in idx.match(host, target)}


def test_host_rule_matches_host_and_subdomains_only():
    idx = index(("bad.com", "/", 1))
    assert found(idx, "bad.com", "/") == {("bad.com", 1, "host")}
    assert found(idx, "a.b.bad.com", "/x") == {("bad.com", 1, "host")}
    assert found(idx, "notbad.com", "/") == set()
    assert found(idx, "bad.com.evil", "/") == set()


def test_path_prefix_at_segment_boundary():
    idx = index(("a.com", "/bad", 2))
    for target in ("/bad", "/bad/x", "/bad?x=1", "/bad;jsessionid=1"):
        assert found(idx, "a.com", target) == {("a.com/bad", 2, "url")}, target
    for target in ("/badge", "/", "/ba", "/other/bad"):
        assert found(idx, "a.com", target) == set(), target


def test_query_entries_match_their_own_parameters():
    idx = index(("forum.com", "/viewtopic.php?t=123", 4))
    assert found(idx, "forum.com", "/viewtopic.php?t=123")
    assert found(idx, "forum.com", "/viewtopic.php?t=123&start=20")
    assert not found(idx, "forum.com", "/viewtopic.php?t=1234")
    assert not found(idx, "forum.com", "/viewtopic.php?t=12")


def test_bits_of_the_same_rule_are_merged_and_counted_once():
    idx = index(("a.com", "/x", 1), ("a.com", "/x", 4))
    assert len(idx) == 1
    assert found(idx, "a.com", "/x") == {("a.com/x", 5, "url")}


def test_host_with_many_rules_is_matched_by_cutting_the_path():
    idx = index(*[("big.com", f"/page{i}", 1) for i in range(5000)], ("big.com", "/", 2))
    assert found(idx, "big.com", "/page4999/x") == {("big.com/page4999", 1, "url"),
                                                    ("big.com", 2, "host")}
    assert found(idx, "big.com", "/page49999") == {("big.com", 2, "host")}


def test_ip_literal_host_matches_itself_only():
    idx = index(("192.0.2.7", "/", 1))
    assert found(idx, "192.0.2.7", "/")
    assert not found(idx, "192.0.2.70", "/")
    assert not found(idx, "7.0.2.7", "/")


segment = st.sampled_from(["a", "b", "ab", "x1"])
paths = st.lists(segment, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
targets = st.tuples(paths, st.sampled_from(["", "?q=1", "/", "?q=1&r=2"])).map("".join)


@given(st.lists(paths, min_size=1, max_size=30), targets)
def test_cutting_agrees_with_testing_every_rule(prefixes, target):
    """The two lookup strategies (few rules: test each; many: cut the path) agree."""
    idx = index(*[("h.com", p, 1) for p in prefixes])
    expected = {("h.com" + p, 1, "url") for p in set(prefixes) if p != "/"
                and _prefix_matches(p, target)}
    many = {hit for hit in found(idx, "h.com", target) if hit[2] == "url"}
    saved = urlindex._FEW
    try:
        urlindex._FEW = 0                     # force the cutting strategy
        cut = {hit for hit in found(idx, "h.com", target) if hit[2] == "url"}
    finally:
        urlindex._FEW = saved
    assert many == expected
    assert cut == expected


rules = st.lists(st.tuples(st.sampled_from(["h.com", "a.h.com", "x.org"]),
                           st.one_of(st.just(""), paths), st.sampled_from([1, 2, 4, 6])),
                 max_size=30)


@given(rules, st.sampled_from(["h.com", "a.h.com", "b.a.h.com", "x.org"]), targets)
def test_add_many_builds_the_index_add_builds(rules, host, target):
    one_by_one = index(*rules)
    at_once = UrlIndex()
    at_once.add_many(rules)
    assert len(at_once) == len(one_by_one)
    assert sorted(at_once.entries()) == sorted(one_by_one.entries())
    assert found(at_once, host, target) == found(one_by_one, host, target)


def test_release_frees_in_batches_and_then_fails_closed():
    index = UrlIndex()
    for i in range(5000):
        index.add(f"h{i}.example", f"/p{i}", 1)
    pauses = []
    index.release(lambda: pauses.append(1), batch=1000)
    assert len(pauses) == 5                       # 5 batches of hosts' rules
    with pytest.raises(RuntimeError, match="released"):
        index.match("h1.example", "/p1")


# --- issue #15: a URL entry with a query matches whatever the order of its parameters ------

def test_query_entry_matches_its_parameters_in_any_order_among_others():
    idx = index(("site.test", "/page?id=5&x=1", 1))
    for target in ("/page?id=5&x=1", "/page?x=1&id=5", "/page?x=1&foo=2&id=5",
                   "/page?foo=2&id=5&bar&x=1", "/page/extra?x=1&id=5", "/page;s=1?id=5&x=1"):
        assert found(idx, "site.test", target), target
    for target in ("/page?id=5", "/page?x=1", "/page?id=50&x=1", "/page", "/pages?id=5&x=1",
                   "/other?id=5&x=1"):
        assert not found(idx, "site.test", target), target


def test_a_parameter_without_a_value_and_plus_for_space_are_one_parameter():
    idx = index(("site.test", "/s?flag&q=a+b", 1))
    assert found(idx, "site.test", "/s?q=a%20b&flag=")


def test_query_entries_are_found_on_a_host_with_many_rules():
    idx = index(*[("big.test", f"/page{i}", 1) for i in range(50)],
                ("big.test", "/view?id=7&t=2", 2))
    assert found(idx, "big.test", "/view?t=2&z=0&id=7") == {("big.test/view?id=7&t=2", 2, "url")}
    assert not found(idx, "big.test", "/view?t=2&id=8")


param = st.sampled_from(["id=5", "x=1", "t=abc", "page=2", "flag"])
extra = st.sampled_from(["foo=2", "utm_source=x", "id=6", "x=", "z"])


@given(st.lists(param, min_size=1, max_size=4, unique=True), st.lists(extra, max_size=4),
       st.randoms(use_true_random=False), st.sampled_from(["", "/more", "/a/b"]))
def test_query_entry_matches_any_order_and_any_extra_parameters(required, others, rng, tail):
    """Property: every shuffle of the entry's parameters with any others added matches;
    removing one of them never does (unless an added one puts it back)."""
    idx = index(("site.test", "/page.php?" + "&".join(required), 1))
    params = required + others
    rng.shuffle(params)
    assert found(idx, "site.test", f"/page.php{tail}?" + "&".join(params))
    missing = required[0]
    kept = [p for p in params if p != missing]
    if missing not in others:
        assert not found(idx, "site.test", "/page.php?" + "&".join(kept))


@given(st.text(alphabet="/aB.;%20\\x~-", max_size=30).map(lambda t: "/" + t))
def test_the_fast_loose_form_agrees_with_the_full_one(path):
    """loose_path's shortcut for plain paths gives what the full normalisation gives."""
    from webpolicy.lists.canonical import canonical_path
    path = canonical_path(path)
    if urlindex._is_plain(path):
        saved = urlindex._is_plain
        try:
            urlindex._is_plain = lambda p: False
            full = urlindex.loose_paths(path)
        finally:
            urlindex._is_plain = saved
        assert urlindex.loose_paths(path) == full


def test_loose_paths_read_a_tomcat_parent_both_ways():
    assert urlindex.loose_paths("/Forum/x/x/..;/../Thread.aspx") == (
        "/forum/x/x/thread.aspx", "/forum/thread.aspx")
    assert urlindex.loose_paths("/secret/page.php/..;/x") == (
        "/secret/page.php/..;/x", "/secret/x")
    assert urlindex.loose_paths("/a/b/") == ("/a/b",)
    assert urlindex.loose_paths("/x/;s=1/../p") == ("/x/p", "/p")
    assert urlindex.loose_paths("/page/;jsessionid=1") == ("/page/;jsessionid=1", "/page")
