"""Search terms typed into the big search engines, read from the request URL.

DfE's monitoring standard asks for "the search term" alongside who and when, and a watchlist of
worrying terms is only useful if terms are seen as they are typed: so the engines' suggestion
(autocomplete) endpoints count too, marked `suggestion=True` because one search produces a
request per keystroke.

This runs on every intercepted request, so the common case (not a search engine) is one dict
lookup and two substring tests.  Only GET query strings are read: searches sent in a POST body
(DuckDuckGo's HTML and Lite pages when JavaScript is off, YouTube's in-app API) are not seen.

`extract` takes the canonical host and path but preferably the *raw* query string:
canonicalisation unescapes %26 and %2B, which would cut "fish & chips" short.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from webpolicy.engine.searchengines import search_host

MAX_TERM_CHARS = 200          # enough for any real search; bounds what a record can carry


@dataclass(frozen=True, slots=True)
class SearchTerm:
    engine: str               # "google", "bing", "duckduckgo", "youtube", "yahoo", "ecosia"
    term: str                 # whitespace-collapsed, at most MAX_TERM_CHARS
    suggestion: bool          # from an autocomplete endpoint (one request per keystroke)


@dataclass(frozen=True, slots=True)
class _Rule:
    params: tuple[str, ...]   # query parameters holding the term, first present wins
    suggestion: bool = False


@dataclass(frozen=True, slots=True)
class _Engine:
    name: str
    paths: dict[str, _Rule]   # lower-case path -> rule
    any_path: _Rule | None = None

    def rule(self, path: str) -> _Rule | None:
        rule = self.paths.get(path) or self.paths.get(path.lower())
        if rule is None and path.endswith("/") and len(path) > 1:
            rule = self.paths.get(path.rstrip("/").lower())
        return rule or self.any_path


_Q = _Rule(("q",))
_SUGGEST_Q = _Rule(("q",), suggestion=True)

GOOGLE = _Engine("google", {
    "/search": _Q, "/webhp": _Q, "/images": _Q,
    "/complete/search": _SUGGEST_Q, "/s": _SUGGEST_Q,
})
# suggestqueries.google.com serves Google's and YouTube's suggestions (client=youtube).
GOOGLE_SUGGEST = _Engine("google", {"/complete/search": _SUGGEST_Q})
BING = _Engine("bing", {
    "/search": _Q, "/images/search": _Q, "/videos/search": _Q, "/news/search": _Q,
    "/shop": _Q, "/maps": _Q,
    "/as/suggestions": _Rule(("qry", "q"), suggestion=True),
    "/osjson.aspx": _Rule(("query", "q"), suggestion=True),
    "/qbox": _Rule(("query", "q"), suggestion=True),
})
DUCKDUCKGO = _Engine("duckduckgo", {"/ac": _SUGGEST_Q}, any_path=_Q)
YOUTUBE = _Engine("youtube", {
    "/results": _Rule(("search_query", "q")), "/search": _Q,
    "/complete/search": _SUGGEST_Q,
})
YAHOO = _Engine("yahoo", {
    "/search": _Rule(("p", "q")), "/search/images": _Rule(("p",)),
    "/search/video": _Rule(("p",)), "/search/news": _Rule(("p",)),
    "/sugg/gossip/gossip-us-ura": _Rule(("command",), suggestion=True),
    "/gossip": _Rule(("command",), suggestion=True),
    "/sg": _Rule(("command",), suggestion=True),
})
ECOSIA = _Engine("ecosia", {"/search": _Q, "/images": _Q, "/videos": _Q, "/news": _Q})
ECOSIA_SUGGEST = _Engine("ecosia", {"/autocomplete": _SUGGEST_Q, "/": _SUGGEST_Q})

# The term rules per (search engine, what the host serves): searchengines.py says which host
# serves what.
_RULES: dict[tuple[str, str], _Engine] = {
    ("google", "search"): GOOGLE, ("google", "suggest"): GOOGLE_SUGGEST,
    ("bing", "search"): BING, ("duckduckgo", "search"): DUCKDUCKGO,
    ("youtube", "search"): YOUTUBE, ("yahoo", "search"): YAHOO,
    ("ecosia", "search"): ECOSIA, ("ecosia", "suggest"): ECOSIA_SUGGEST,
}
_SPACE = re.compile(r"\s+")


def engine_for(host: str) -> _Engine | None:
    """The search engine whose terms are read on this canonical host, if any (cheap for
    other hosts)."""
    found = search_host(host)
    if found is None or found.terms is None:
        return None
    return _RULES[found.engine, found.terms]


def extract(host: str, path: str, query: str) -> SearchTerm | None:
    """The search term of a search or suggestion request; None for anything else."""
    if not query:
        return None
    engine = engine_for(host)
    if engine is None:
        return None
    rule = engine.rule(path)
    if rule is None:
        return None
    for param in rule.params:
        term = clean(_param(query, param))
        if term:
            return SearchTerm(engine.name, term, rule.suggestion)
    return None


def _param(query: str, name: str) -> str:
    """The first value of one parameter (parse_qsl decodes every parameter: 3x slower)."""
    prefix = name + "="
    for part in query.split("&"):
        if part.startswith(prefix):
            return unquote_plus(part[len(prefix):], errors="replace")
    return ""


def clean(text: str) -> str:
    """Collapse whitespace and control characters; cap the length."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    return _SPACE.sub(" ", text).strip()[:MAX_TERM_CHARS]
