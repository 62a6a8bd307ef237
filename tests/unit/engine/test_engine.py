"""Engine.match: the per-host memo gives what the indexes give, stays bounded, and a
released engine still fails closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.helpers import engine_from
from webpolicy.engine import engine as engine_module
from webpolicy.engine.engine import ListHit, _add_hits

POLICY = """\
version: "t1"
default_profile: learner
profiles:
  learner:
    block: [adult, ctiru, pages]
lists:
  ctiru: {statutory: true, category: Terrorist content, severity: critical, format: urls, sources: [ctiru.txt]}
  adult: {category: Pornography, severity: high, sources: [adult.txt]}
  pages: {category: Pages, severity: medium, format: urls, sources: [pages.txt]}
"""

LISTS = {
    "ctiru.txt": "a.test/x\nb.a.test/\nc.test\n",
    "adult.txt": "a.test\nb.test\nc.test\n",
    "pages.txt": "a.test/x/y\nb.a.test/?q=1\n",
}

LABELS = ["a", "b", "c", "d"]
hosts = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4).map(
    lambda labels: ".".join(labels) + ".test")
targets = st.sampled_from(["/", "/x", "/x/", "/x/y", "/x/yz", "/?q=1", "/?q=12", "/y"])


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return engine_from(tmp_path_factory.mktemp("engine"), POLICY, LISTS)


def unmemoised(engine, host: str, target: str) -> list[ListHit]:
    hits: list[ListHit] = []
    for name, bits in engine.domains.match(host):
        _add_hits(hits, bits, "host", name)
    for entry, bits, kind in engine.exact.match(host, target):
        _add_hits(hits, bits, kind, entry)
    return hits


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lookups=st.lists(st.tuples(hosts, targets), min_size=1, max_size=12))
def test_memoised_lookups_give_what_the_indexes_give(engine, lookups):
    """Several targets on one host: the memo keeps what depends on the host alone."""
    for host, target in lookups:
        assert list(engine.match(host, target)) == unmemoised(engine, host, target)


def test_the_memo_sees_listed_hosts_and_url_rules(engine):
    assert engine.match("b.a.test", "/?q=1") == engine.match("b.a.test", "/?q=1")
    kinds = {hit.kind for hit in engine.match("b.a.test", "/?q=1")}
    assert kinds == {"host", "url"}
    assert not engine.match("d.test", "/x")


def test_the_memo_is_bounded(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(engine_module, "HOST_FACTS_SIZE", 5)
    engine = engine_from(tmp_path, POLICY, LISTS)
    for i in range(20):
        engine.match(f"h{i}.a.test", "/x")
        assert engine.host_facts.cache_info().currsize <= 5
    assert list(engine.match("h3.a.test", "/x")) == unmemoised(engine, "h3.a.test", "/x")


def test_a_released_engine_fails_closed_even_for_a_host_it_has_seen(tmp_path: Path):
    engine = engine_from(tmp_path, POLICY, LISTS)
    assert engine.match("b.a.test", "/")
    engine.release()
    with pytest.raises(Exception):
        engine.match("b.a.test", "/")
