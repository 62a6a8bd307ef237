"""Exact host and host/path-prefix rules: URL lists (CTIRU/IWF style) and local rules.

These lists are small (thousands, not millions) and some are statutory, so entries are kept
as exact strings: a statutory hit is never a hash coincidence.  Bits say which lists hold an
entry, so one walk over the host's labels answers for every such list at once.
"""

from __future__ import annotations

from typing import NamedTuple

# Characters after which a path prefix ends at a segment boundary: "/bad" matches "/bad/x" and
# "/bad?x" but not "/badge".
_BOUNDARY = frozenset("/?&;")


class UrlHit(NamedTuple):
    entry: str          # the entry as canonicalised: "host" or "host/path"
    bits: int
    kind: str           # "host" (whole host and subdomains) or "url" (a path prefix)


class UrlIndex:
    """host -> [(path prefix, bits, entry)], walked from the full host towards its parents."""

    def __init__(self) -> None:
        self._rules: dict[str, list[tuple[str, int, str]]] = {}
        self._count = 0

    def add(self, host: str, prefix: str, bits: int) -> None:
        """Add a rule; prefix "/" (or "") means the whole host and its subdomains."""
        prefix = prefix or "/"
        rules = self._rules.setdefault(host, [])
        entry = host if prefix == "/" else host + prefix
        for i, (existing, existing_bits, _) in enumerate(rules):
            if existing == prefix:
                rules[i] = (prefix, existing_bits | bits, entry)
                return
        rules.append((prefix, bits, entry))
        rules.sort(key=lambda rule: len(rule[0]))
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def entries(self):
        """Every (host, prefix, bits): for validation, never on the request path."""
        for host, rules in self._rules.items():
            for prefix, bits, _ in rules:
                yield host, prefix, bits

    def match(self, host: str, target: str) -> list[UrlHit]:
        """Every rule matching `host` and `target` (path, plus "?query" when there is one).

        Walks the host and its parents in place.  An IP-literal host needs no special case:
        canonical domain entries never end in a numeric label, so its "parents" match nothing.
        """
        rules = self._rules
        hits: list[UrlHit] = []
        if not rules:
            return hits
        suffix, start = host, 0
        while True:
            candidates = rules.get(suffix)
            if candidates:
                for prefix, bits, entry in candidates:
                    if prefix == "/":
                        hits.append(UrlHit(entry, bits, "host"))
                    elif _prefix_matches(prefix, target):
                        hits.append(UrlHit(entry, bits, "url"))
            dot = host.find(".", start)
            if dot < 0:
                return hits
            start = dot + 1
            suffix = host[start:]


def _prefix_matches(prefix: str, target: str) -> bool:
    if not target.startswith(prefix):
        return False
    return (len(target) == len(prefix) or prefix[-1] in _BOUNDARY
            or target[len(prefix)] in _BOUNDARY)


def host_suffixes(host: str) -> list[str]:
    """The host and each parent domain ("a.b.c" -> a.b.c, b.c, c); an IP literal only itself."""
    if ":" in host or (host[-1:].isdigit() and host.replace(".", "").isdigit()):
        return [host]
    suffixes = [host]
    start = host.find(".")
    while start != -1:
        suffixes.append(host[start + 1:])
        start = host.find(".", start + 1)
    return suffixes
