"""Search terms from the six engines and their suggestion endpoints; nothing from other hosts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webpolicy.engine.searchterms import MAX_TERM_CHARS, engine_for, extract
from webpolicy.lists.canonical import canonical_url


def term_of(url: str, raw_query: str | None = None):
    parsed = canonical_url(url)
    query = raw_query if raw_query is not None else url.partition("?")[2]
    return extract(parsed.host, parsed.path, query)


@pytest.mark.parametrize("url, engine, term, suggestion", [
    ("https://www.google.co.uk/search?q=how+to+revise&hl=en", "google", "how to revise", False),
    ("https://www.google.com/search?hl=en&q=caf%C3%A9+society", "google", "café society", False),
    ("https://google.de/search?q=x+y", "google", "x y", False),
    ("https://www.google.com.au/webhp?q=koala", "google", "koala", False),
    ("https://www.google.co.uk/search?tbm=isch&q=cats", "google", "cats", False),
    ("https://www.google.co.uk/complete/search?q=how+to+k&client=gws-wiz", "google", "how to k", True),
    ("https://suggestqueries.google.com/complete/search?client=youtube&ds=yt&q=music",
     "google", "music", True),
    ("https://www.bing.com/search?q=weather+leeds&form=QBLH", "bing", "weather leeds", False),
    ("https://www.bing.com/images/search?q=maps", "bing", "maps", False),
    ("https://www.bing.com/AS/Suggestions?pt=page.home&qry=how+to&cp=6", "bing", "how to", True),
    ("https://www.bing.com/osjson.aspx?query=abc", "bing", "abc", True),
    ("https://duckduckgo.com/?q=privacy&t=h_", "duckduckgo", "privacy", False),
    ("https://html.duckduckgo.com/html/?q=lite+search", "duckduckgo", "lite search", False),
    ("https://duckduckgo.com/ac/?q=partial&kl=wt-wt", "duckduckgo", "partial", True),
    ("https://www.youtube.com/results?search_query=minecraft+tutorial", "youtube",
     "minecraft tutorial", False),
    ("https://m.youtube.com/results?search_query=news", "youtube", "news", False),
    ("https://suggestqueries-clients6.youtube.com/complete/search?client=youtube&q=mine",
     "youtube", "mine", True),
    ("https://search.yahoo.com/search?p=uk+news&fr=yfp", "yahoo", "uk news", False),
    ("https://uk.search.yahoo.com/search?p=football", "yahoo", "football", False),
    ("https://images.search.yahoo.com/search/images?p=dogs", "yahoo", "dogs", False),
    ("https://search.yahoo.com/sugg/gossip/gossip-us-ura?command=foo&output=sd1", "yahoo", "foo",
     True),
    ("https://www.ecosia.org/search?method=index&q=trees", "ecosia", "trees", False),
    ("https://ac.ecosia.org/autocomplete?q=tre&type=list", "ecosia", "tre", True),
])
def test_engines_and_suggestions(url, engine, term, suggestion):
    found = term_of(url)
    assert found is not None, url
    assert (found.engine, found.term, found.suggestion) == (engine, term, suggestion)


@pytest.mark.parametrize("url", [
    "https://news.test/search?q=anything",            # not a search engine
    "https://www.google.co.uk/url?q=https://example.com/",   # a redirect, not a search
    "https://www.google.co.uk/maps/place?q=x",
    "https://www.google.co.uk/search",                 # no query
    "https://www.google.co.uk/search?hl=en",           # no term
    "https://www.google.co.uk/search?q=+++",           # only spaces
    "https://googleco.uk/search?q=x",                  # look-alike host
    "https://google.evil.test/search?q=x",
    "https://www.youtube.com/watch?v=abc&q=nope",
    "https://docs.google.com/search?q=x",             # Google Docs is not web search
])
def test_not_searches(url):
    assert term_of(url) is None


def test_raw_query_keeps_escaped_ampersand_and_plus():
    # Canonicalisation unescapes %26/%2B; the add-on passes the raw query for this reason.
    assert term_of("https://www.google.com/search?q=fish+%26+chips+c%2B%2B").term == \
        "fish & chips c++"


def test_whitespace_and_control_characters_collapsed():
    assert term_of("https://www.bing.com/search?q=%20a%09%0Ab%00%20%20c%20").term == "a b c"


def test_long_terms_are_capped():
    found = term_of("https://www.google.com/search?q=" + "a" * 1000)
    assert len(found.term) == MAX_TERM_CHARS


def test_bad_percent_encoding_does_not_raise():
    assert term_of("https://www.google.com/search?q=%E0%A4%A").term


def test_fast_reject_of_ordinary_hosts():
    for host in ("www.example.com", "cdn.jsdelivr.net", "fonts.googleapis.com", "google.com.evil.test"):
        assert engine_for(host) is None, host


@given(st.text(max_size=60), st.text(max_size=60))
def test_never_raises(path, query):
    found = extract("www.google.com", "/" + path, query)
    assert found is None or (found.term and len(found.term) <= MAX_TERM_CHARS)
