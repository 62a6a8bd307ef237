"""Exact host and host/path-prefix rules: URL lists (CTIRU/IWF style) and local rules.

These lists are small (thousands, not millions) and some are statutory, so entries are kept
as exact strings: a statutory hit is never a hash coincidence.  Bits say which lists hold an
entry, so one walk over the host's labels answers for every such list at once.

A path entry matches at a segment boundary: "/bad" matches "/bad", "/bad/x" and "/bad?x" but
not "/badge".  Rather than testing every entry of a host (a CTIRU list may hold thousands of
URLs on one host), a lookup cuts the request's own path at its boundaries and looks each cut
up in a dict: the cost follows the length of the path, not the size of the list.

An entry with a query ("/page?id=5&x=1") is a path prefix plus a set of parameters: it
matches a request under that path holding every one of them, in any order and among any
others ("/page/x?x=1&foo=2&id=5"), because a server reads its parameters by name.  Matching
the query as a string prefix let a reordered or padded query through (issue #15).

Loose rules (statutory lists) are keyed and matched in a loose form (loose_paths, _params
with loose=True) that erases what servers commonly ignore: the case of the path and of
the parameters, path parameters (";jsessionid=..."), Windows' trailing dots and spaces and
"::$DATA", IIS's "%uXXXX", a trailing slash, a NUL and what follows it, a "www." on a URL
entry's host.  A segment such as "..;" is read both as a name (browsers, Apache) and as a
parent (Tomcat), and an entry naming a directory's index document ("/dir/index.php") also
matches the directory itself.  Over-blocking a variant of a statutory URL is acceptable;
missing it is not (tests/unit/engine/test_statutory_variants.py generates variants).  The
entries' forms are worked out when they are added; a lookup pays only on hosts that have
rules (the engine memoises them per host), and for the loose form only on hosts with loose
rules (a plain path takes a shortcut).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple
from urllib.parse import unquote, unquote_to_bytes

# Characters at which a path prefix may end: "/bad" matches "/bad/x" and "/bad;x".
_BOUNDARY_RE = re.compile(r"[/?&;]")
_HOST = "/"                  # the prefix of a whole-host rule (the host and its subdomains)
_BOUNDARY = frozenset("/?&;")
_FEW = 8                     # up to this many rules on a host, testing each is cheaper
_LOOSE_PARAM_SPLIT = re.compile(r"[&;]")    # some servers (and CGI) take ";" between params
_IIS_ESCAPE = re.compile(r"%[uU]([0-9a-fA-F]{4})")
# Documents servers answer a directory with (Apache DirectoryIndex, IIS default documents).
_INDEX_DOCUMENT = re.compile(r"(?:index|default)\.(?:html?|shtml|php[0-9]?|aspx?|jsp|cfm|cgi|pl)")

Params = frozenset[str]      # "name=value" items of a query, normalised (see _params)


class UrlHit(NamedTuple):
    entry: str          # the entry as canonicalised: "host" or "host/path[?params]"
    bits: int
    kind: str           # "host" (whole host and subdomains) or "url" (a path prefix)


class HostRules:
    """One host's rules in one table (strict or loose), as the lookup wants them."""

    __slots__ = ("whole", "paths", "queries", "longest", "exact")

    def __init__(self) -> None:
        self.whole = 0                                  # bits of whole-host rules
        self.paths: dict[str, int] = {}                 # path prefix -> bits
        self.queries: dict[str, dict[Params, int]] = {}  # path prefix -> {params -> bits}
        self.longest = 0                                # longest path prefix
        # Loose only: a directory whose index document is listed ("/dir" for "/dir/index.php"
        # serves the same page); the path must equal it, not only start with it.
        self.exact: dict[str, dict[Params, int]] | None = None

    def add_exact(self, path: str, params: Params, bits: int) -> None:
        """A rule matching this path itself (in its loose form), under the same parameters."""
        if self.exact is None:
            self.exact = {}
        rules = self.exact.setdefault(path, {})
        rules[params] = rules.get(params, 0) | bits

    def add(self, path: str, params: Params, bits: int) -> bool:
        """Add one rule; True if it is new (not only more bits on an existing rule)."""
        if path == _HOST and not params:
            new = not self.whole
            self.whole |= bits
            return new
        if len(path) > self.longest:
            self.longest = len(path)
        if params:
            rules = self.queries.setdefault(path, {})
            old = rules.get(params, 0)
            rules[params] = old | bits
            return not old
        old = self.paths.get(path, 0)
        self.paths[path] = old | bits
        return not old

    def __len__(self) -> int:
        return bool(self.whole) + len(self.paths) + sum(map(len, self.queries.values()))

    def entries(self, host: str) -> Iterator[tuple[str, str, int]]:
        if self.whole:
            yield host, _HOST, self.whole
        for path, bits in self.paths.items():
            yield host, path, bits
        for path, rules in self.queries.items():
            for params, bits in rules.items():
                yield host, _with_query(path, params), bits

    def match(self, host: str, path: str, query: str, loose: bool,
              hits: list[UrlHit]) -> None:
        """Append the hits of these rules for one request (path in this table's form).
        The startswith tests are inlined: this runs per request on hosts with rules."""
        if self.whole:
            hits.append(UrlHit(host, self.whole, "host"))
        if self.exact:
            rules = self.exact.get(path)
            if rules:
                _match_params(host, path, rules, query, loose, hits)
        paths, queries = self.paths, self.queries
        if not paths and not queries:
            return
        if len(paths) + len(queries) <= _FEW:
            for prefix, bits in paths.items():
                if path.startswith(prefix) and (len(path) == len(prefix) or prefix[-1] in
                                                _BOUNDARY or path[len(prefix)] in _BOUNDARY):
                    hits.append(UrlHit(host + prefix, bits, "url"))
            for prefix, rules in queries.items():
                if path.startswith(prefix) and (len(path) == len(prefix) or prefix[-1] in
                                                _BOUNDARY or path[len(prefix)] in _BOUNDARY):
                    _match_params(host, prefix, rules, query, loose, hits)
            return
        for cut in _cuts(path, self.longest):
            bits = paths.get(cut)
            if bits:
                hits.append(UrlHit(host + cut, bits, "url"))
            rules = queries.get(cut)
            if rules:
                _match_params(host, cut, rules, query, loose, hits)


def _match_params(host: str, path: str, rules: dict[Params, int], query: str, loose: bool,
                  hits: list[UrlHit]) -> None:
    """The query rules under one matched path whose parameters the request all has (the
    request's parameters are parsed only here: a path under a query rule matched)."""
    have = _params(query, loose)
    for required, bits in rules.items():
        if required <= have:
            hits.append(UrlHit(host + _with_query(path, required), bits, "url"))


def _with_query(path: str, params: Params) -> str:
    return f"{path}?{'&'.join(sorted(params))}" if params else path


# (host or parent, its rules, whether they are loose), for each of a host's names with rules.
RuleHosts = tuple[tuple[str, HostRules, bool], ...]


class _Released(dict):
    """What a released index holds: any lookup raises, so a caller fails closed."""

    def __bool__(self) -> bool:
        return True

    def get(self, *args: object) -> None:
        raise RuntimeError("lookup in a released UrlIndex")


class UrlIndex:
    """host -> rules, walked from the full host towards its parents; two tables: strict
    rules (URL lists, local rules) and loose rules (statutory lists)."""

    def __init__(self) -> None:
        self._strict: dict[str, HostRules] = {}
        self._loose: dict[str, HostRules] = {}
        self._count = 0

    def add(self, host: str, prefix: str, bits: int, loose: bool = False) -> None:
        """Add a rule; prefix "/" (or "") means the whole host and its subdomains.  A prefix
        may hold "?query": its parameters must all be present, in any order.  `loose`:
        match the harmless variants of the entry too (statutory lists)."""
        self.add_many(((host, prefix, bits),), loose)

    def add_many(self, rules: Iterable[tuple[str, str, int]], loose: bool = False) -> None:
        """add() for each (host, prefix, bits), in one call: the compiled URL entries are
        added this way at every start and reload (50k entries: ~40% less time than add())."""
        table = self._loose if loose else self._strict
        added = 0
        for host, prefix, bits in rules:
            path, _, query = (prefix or _HOST).partition("?")
            params = _params(query, loose)
            if loose:
                path = loose_path(path)
                if path != _HOST or params:
                    host = loose_host(host)
            rules_of_host = table.get(host)
            if rules_of_host is None:
                rules_of_host = table[host] = HostRules()
            added += rules_of_host.add(path, params, bits)
            if loose:
                directory = _index_directory(path)
                if directory is not None:
                    rules_of_host.add_exact(directory, params, bits)
        self._count += added

    def __len__(self) -> int:
        return self._count

    def release(self, pause: Callable[[], None], batch: int = 2000) -> None:
        """Free the rules a batch at a time, calling pause() between batches: for an index
        nothing uses any more (a replaced engine's, see reloader.py).  Freeing 50k rules at
        once is one deallocation of several ms that no thread switch can interrupt, so the
        proxy would serve no one meanwhile.  A lookup after this raises (fail closed)."""
        tables = (self._strict, self._loose)
        self._strict = self._loose = _Released()
        for table in tables:
            while table:
                for _ in range(min(batch, len(table))):
                    table.popitem()
                pause()

    def entries(self) -> Iterator[tuple[str, str, int]]:
        """Every (host, prefix[?params], bits), loose ones in their loose form: for
        validation, never on the request path."""
        for table in (self._strict, self._loose):
            for host, rules in table.items():
                yield from rules.entries(host)

    def match(self, host: str, target: str) -> list[UrlHit]:
        """Every rule matching `host` and `target` (path, plus "?query" when there is one)."""
        return self.match_at(self.rule_hosts(host), target)

    def rule_hosts(self, host: str) -> RuleHosts:
        """The host and those of its parents that have rules, with their rules: what a
        lookup needs of the host alone, which the engine keeps per host (see Engine.match).

        Walks the host and its parents in place.  An IP-literal host needs no special case:
        canonical domain entries never end in a numeric label, so its "parents" match nothing.
        """
        strict, loose = self._strict, self._loose
        if not strict and not loose:
            return ()
        found: RuleHosts = ()
        suffix, start = host, 0
        while True:
            rules = strict.get(suffix)
            if rules:
                found += ((suffix, rules, False),)
            if loose:
                rules = loose.get(suffix)
                if rules:
                    found += ((suffix, rules, True),)
            dot = host.find(".", start)
            if dot < 0:
                return found
            start = dot + 1
            suffix = host[start:]

    def match_at(self, rule_hosts: RuleHosts, target: str) -> list[UrlHit]:
        """The rules of rule_hosts(host) that match `target` (path[?query], canonical)."""
        hits: list[UrlHit] = []
        path, _, query = target.partition("?")
        forms: tuple[str, ...] = ()
        for suffix, rules, is_loose in rule_hosts:
            if not is_loose:
                rules.match(suffix, path, query, False, hits)
                continue
            forms = forms or _loose_forms(path)
            if len(forms) == 1:
                rules.match(suffix, forms[0], query, True, hits)
            else:
                found: list[UrlHit] = []
                for form in forms:
                    rules.match(suffix, form, query, True, found)
                hits.extend(dict.fromkeys(found))
        return hits


def _prefix_matches(prefix: str, target: str) -> bool:
    if not target.startswith(prefix):
        return False
    return (len(target) == len(prefix) or prefix[-1] in _BOUNDARY
            or target[len(prefix)] in _BOUNDARY)


def _cuts(target: str, longest: int) -> dict[str, None]:
    """The prefixes of `target` that end at a segment boundary, up to `longest` characters:
    "/a/b;q" -> "/a/b;q", "/", "/a", "/a/", "/a/b", "/a/b;"."""
    cuts = dict.fromkeys([target] if len(target) <= longest else [])
    head = target[: longest + 1]
    for found in _BOUNDARY_RE.finditer(head):
        end = found.start()
        cuts[head[:end]] = None
        cuts[head[: end + 1]] = None
    return cuts


# --------------------------------------------------------------------------- normal forms

def _params(query: str, loose: bool) -> Params:
    """The parameters of a canonical query as "name=value" items.  "+" is a space (form
    encoding) and "name" is "name=", as servers read them.  Loose: decoded, NFKC, lower
    case, ";" also separates, and a name's dots and spaces are "_" (as PHP reads them)."""
    if not query:
        return frozenset()
    if not loose:
        items = query.replace("+", "%20").split("&")
        return frozenset(item if "=" in item else item + "=" for item in items if item)
    text = _iis_unescape(unquote(query.replace("+", " "), errors="surrogateescape"))
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return frozenset(_loose_param(item) for item in _LOOSE_PARAM_SPLIT.split(text.lower())
                     if item.strip())


def _loose_param(item: str) -> str:
    name, _, value = item.partition("=")
    return f"{name.strip().replace('.', '_').replace(' ', '_')}={value.strip()}"


def loose_path(path: str) -> str:
    """The form in which a statutory path and its harmless variants are equal.

    `path` is canonical (canonical.canonical_path: fully decoded, then escaped once), so one
    unquote gives the bytes the server sees.  Then, as servers commonly do: cut at a NUL,
    IIS's "%uXXXX", NFKC and lower case, drop each segment's path parameters
    (";jsessionid=...") and Windows' trailing dots and spaces and "::$DATA", no trailing "/":
    "/Dir;s=1/Page.PHP./" -> "/dir/page.php".  A segment that is ".." only once so
    stripped ("..;", ".. ") is a name here; see loose_paths for the other reading.
    """
    return _loose_forms(path)[0]


def loose_paths(path: str) -> tuple[str, ...]:
    """loose_path, and when it differs, the reading where a stripped ".." ("..;" as Tomcat
    reads it, ".. " as Windows does) is the parent: "/x/..;/page" is a name under /x to
    Apache (PATH_INFO of /x if /x is a script) and "/page" to Tomcat, so a request matches
    if either form does.  canonical_path keeps a ".." after such a segment unresolved, so
    both readings can be made here."""
    return _loose_forms(path)


def _loose_forms(path: str) -> tuple[str, ...]:
    if _is_plain(path):                     # the usual request: only case and a final "/"
        lowered = path.lower()
        return (lowered.rstrip("/") or "/",)
    text = unquote_to_bytes(path).decode("utf-8", "surrogateescape")
    text = _iis_unescape(text.partition("\x00")[0]).replace("\\", "/")
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    kept: list[str] = []
    parent: list[str] | None = None         # the other reading, once it differs
    for segment in text.lower().split("/"):
        if segment == "..":                 # kept by canonical_path after a "..;": a parent
            for form in (kept, parent):
                if form:
                    form.pop()
            continue
        base = segment.partition(";")[0].rstrip(" ")
        if base in ("..", ".", "") and segment:  # "..;x", ".;x", ";x", ".. ": a name here,
            if parent is None:                   # a parent, "." or nothing there
                parent = list(kept)
            if parent and base == "..":
                parent.pop()
            kept.append(segment)            # a placeholder no entry's segment equals
            continue
        stripped = base.partition("::$")[0].rstrip(". ")       # Windows: "page.asp::$DATA"
        if stripped:
            kept.append(stripped)
            if parent is not None:
                parent.append(stripped)
    first = "/" + "/".join(kept)
    if parent is None:
        return (first,)
    second = "/" + "/".join(parent)
    return (first,) if second == first else (first, second)


def _iis_unescape(text: str) -> str:
    """IIS's own escapes, "%u0070" for "p": canonical_path leaves them as text."""
    if "%u" not in text and "%U" not in text:
        return text
    return _IIS_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _index_directory(path: str) -> str | None:
    """"/dir" for a loose path naming a directory's index document ("/dir/index.php"): a
    server answers "/dir/" with that page, so a statutory entry for it covers "/dir" too
    (but not the rest of the directory).  None for any other path."""
    directory, _, name = path.rpartition("/")
    if _INDEX_DOCUMENT.fullmatch(name):
        return directory or "/"
    return None


def _is_plain(path: str) -> bool:
    """A canonical path whose loose form is its lower case without a final "/": no escape
    (so no space, NUL or non-ASCII), no path parameter, backslash or dot-ended segment."""
    return ("%" not in path and ";" not in path and "\\" not in path and "./" not in path
            and ":" not in path and path[-1:] != ".")


def loose_host(host: str) -> str:
    """A URL entry's host without "www.": "www.site.test/page" is served at site.test/page
    too.  The rule then also covers the other subdomains of site.test (over-blocking a
    statutory URL's variant is acceptable).  Whole-host entries keep their host."""
    if host.startswith("www.") and "." in host[4:]:
        return host[4:]
    return host


def host_suffixes(host: str) -> list[str]:
    """The host and each parent domain ("a.b.c" -> a.b.c, b.c, c)."""
    suffixes = [host]
    start = host.find(".")
    while start != -1:
        suffixes.append(host[start + 1:])
        start = host.find(".", start + 1)
    return suffixes
