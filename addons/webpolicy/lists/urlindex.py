"""Exact host and host/path-prefix rules: URL lists (CTIRU/IWF style) and local rules.

These lists are small (thousands, not millions) and some are statutory, so entries are kept
as exact strings: a statutory hit is never a hash coincidence.  Bits say which lists hold an
entry, so one walk over the host's labels answers for every such list at once.

A path entry matches at a segment boundary: "/bad" matches "/bad", "/bad/x" and "/bad?x" but
not "/badge".  Rather than testing every entry of a host (a CTIRU list may hold thousands of
URLs on one host), a lookup cuts the request's own path at its boundaries and looks each cut
up in a dict: the cost follows the length of the path, not the size of the list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

# Characters at which a path prefix may end: "/bad" matches "/bad/x" and "/bad?x".
_BOUNDARY_RE = re.compile(r"[/?&;]")
_HOST = "/"                  # the prefix of a whole-host rule (the host and its subdomains)
_BOUNDARY = frozenset("/?&;")
_FEW = 8                     # up to this many rules on a host, testing each is cheaper


class UrlHit(NamedTuple):
    entry: str          # the entry as canonicalised: "host" or "host/path"
    bits: int
    kind: str           # "host" (whole host and subdomains) or "url" (a path prefix)


# (host or parent, its rules by prefix), for each of a host's names that has rules.
RuleHosts = tuple[tuple[str, dict[str, int]], ...]


class _Released(dict):
    """What a released index holds: any lookup raises, so a caller fails closed."""

    def __bool__(self) -> bool:
        return True

    def get(self, *args: object) -> None:
        raise RuntimeError("lookup in a released UrlIndex")


class UrlIndex:
    """host -> {path prefix -> bits}, walked from the full host towards its parents."""

    def __init__(self) -> None:
        self._rules: dict[str, dict[str, int]] = {}
        self._longest: dict[str, int] = {}        # longest path prefix per host
        self._count = 0

    def add(self, host: str, prefix: str, bits: int) -> None:
        """Add a rule; prefix "/" (or "") means the whole host and its subdomains."""
        prefix = prefix or _HOST
        prefixes = self._rules.setdefault(host, {})
        if prefix not in prefixes:
            self._count += 1
        prefixes[prefix] = prefixes.get(prefix, 0) | bits
        self._longest[host] = max(self._longest.get(host, 0), len(prefix))

    def add_many(self, rules: Iterable[tuple[str, str, int]]) -> None:
        """add() for each (host, prefix, bits), in one call: the compiled URL entries are
        added this way at every start and reload (50k entries: ~40% less time than add())."""
        table, longest = self._rules, self._longest
        added = 0
        for host, prefix, bits in rules:
            prefix = prefix or _HOST
            prefixes = table.get(host)
            if prefixes is None:
                prefixes = table[host] = {}
            old = prefixes.get(prefix)
            if old is None:
                added += 1
                prefixes[prefix] = bits
                if len(prefix) > longest.get(host, 0):
                    longest[host] = len(prefix)
            else:
                prefixes[prefix] = old | bits
        self._count += added

    def __len__(self) -> int:
        return self._count

    def release(self, pause: Callable[[], None], batch: int = 2000) -> None:
        """Free the rules a batch at a time, calling pause() between batches: for an index
        nothing uses any more (a replaced engine's, see reloader.py).  Freeing 50k rules at
        once is one deallocation of several ms that no thread switch can interrupt, so the
        proxy would serve no one meanwhile.  A lookup after this raises (fail closed)."""
        rules, longest = self._rules, self._longest
        self._rules = self._longest = _Released()
        for table in (rules, longest):
            while table:
                for _ in range(min(batch, len(table))):
                    table.popitem()
                pause()

    def entries(self) -> Iterator[tuple[str, str, int]]:
        """Every (host, prefix, bits): for validation, never on the request path."""
        for host, prefixes in self._rules.items():
            for prefix, bits in prefixes.items():
                yield host, prefix, bits

    def match(self, host: str, target: str) -> list[UrlHit]:
        """Every rule matching `host` and `target` (path, plus "?query" when there is one)."""
        return self.match_at(self.rule_hosts(host), target)

    def rule_hosts(self, host: str) -> RuleHosts:
        """The host and those of its parents that have rules, with their rules: what a
        lookup needs of the host alone, which the engine keeps per host (see Engine.match).

        Walks the host and its parents in place.  An IP-literal host needs no special case:
        canonical domain entries never end in a numeric label, so its "parents" match nothing.
        """
        rules = self._rules
        if not rules:
            return ()
        found: RuleHosts = ()
        suffix, start = host, 0
        while True:
            prefixes = rules.get(suffix)
            if prefixes:
                found += ((suffix, prefixes),)
            dot = host.find(".", start)
            if dot < 0:
                return found
            start = dot + 1
            suffix = host[start:]

    def match_at(self, rule_hosts: RuleHosts, target: str) -> list[UrlHit]:
        """The rules of rule_hosts(host) that match `target`."""
        hits: list[UrlHit] = []
        for suffix, prefixes in rule_hosts:
            self._match_host(suffix, prefixes, target, hits)
        return hits

    def _match_host(self, host: str, prefixes: dict[str, int], target: str,
                    hits: list[UrlHit]) -> None:
        whole = prefixes.get(_HOST)
        if whole:
            hits.append(UrlHit(host, whole, "host"))
            if len(prefixes) == 1:
                return
        if len(prefixes) <= _FEW:
            for prefix, bits in prefixes.items():
                if prefix != _HOST and _prefix_matches(prefix, target):
                    hits.append(UrlHit(host + prefix, bits, "url"))
            return
        for cut in _cuts(target, self._longest[host]):
            bits = prefixes.get(cut)
            if bits and cut != _HOST:
                hits.append(UrlHit(host + cut, bits, "url"))


def _prefix_matches(prefix: str, target: str) -> bool:
    if not target.startswith(prefix):
        return False
    return (len(target) == len(prefix) or prefix[-1] in _BOUNDARY
            or target[len(prefix)] in _BOUNDARY)


def _cuts(target: str, longest: int) -> dict[str, None]:
    """The prefixes of `target` that end at a segment boundary, up to `longest` characters:
    "/a/b?q" -> "/a/b?q", "/", "/a", "/a/", "/a/b", "/a/b?"."""
    cuts = dict.fromkeys([target] if len(target) <= longest else [])
    head = target[: longest + 1]
    for found in _BOUNDARY_RE.finditer(head):
        end = found.start()
        cuts[head[:end]] = None
        cuts[head[: end + 1]] = None
    return cuts


def host_suffixes(host: str) -> list[str]:
    """The host and each parent domain ("a.b.c" -> a.b.c, b.c, c)."""
    suffixes = [host]
    start = host.find(".")
    while start != -1:
        suffixes.append(host[start + 1:])
        start = host.find(".", start + 1)
    return suffixes
