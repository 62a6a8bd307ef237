"""The one search-engine table: which host serves safe search, typed terms, or both."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webpolicy.engine import safesearch, searchterms
from webpolicy.engine.searchengines import GOOGLE_HOSTS, SearchHost, search_host


@pytest.mark.parametrize("host, engine, safe, terms", [
    ("www.google.co.uk", "google", True, "search"),
    ("google.de", "google", True, "search"),
    ("www.google.co.zz", "google", False, "search"),          # not Google's list: terms only
    ("suggestqueries.google.com", "google", False, "suggest"),
    ("www.bing.com", "bing", True, "search"),
    ("duckduckgo.com", "duckduckgo", True, "search"),
    ("html.duckduckgo.com", "duckduckgo", True, "search"),
    ("anything.duckduckgo.com", "duckduckgo", True, None),    # safe search on every subdomain
    ("www.youtube.com", "youtube", True, "search"),
    ("youtubei.googleapis.com", "youtube", True, None),        # the app's API: header only
    ("music.youtube.com", "youtube", False, "search"),
    ("uk.search.yahoo.com", "yahoo", False, "search"),
    ("ac.ecosia.org", "ecosia", False, "suggest"),
])
def test_what_each_host_serves(host, engine, safe, terms):
    assert search_host(host) == SearchHost(engine, safe, terms)


@pytest.mark.parametrize("host", ["example.org", "google.evil.com", "notduckduckgo.com",
                                  "fonts.googleapis.com", "mail.google.com", ""])
def test_not_a_search_engine(host):
    assert search_host(host) is None


def test_every_google_country_domain_is_forced_safe():
    assert all(search_host(h) == SearchHost("google", True, "search") for h in GOOGLE_HOSTS)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", max_size=40))
def test_both_features_read_the_same_table(host):
    """Safe search applies where the table says so, terms are read where it says so."""
    found = search_host(host)
    assert (safesearch.engine_for(host) is not None) == bool(found and found.safe_search)
    assert (searchterms.engine_for(host) is not None) == bool(found and found.terms)
    if found and found.safe_search:
        assert safesearch.engine_for(host) == found.engine
    if found and found.terms:
        assert searchterms.engine_for(host).name == found.engine
