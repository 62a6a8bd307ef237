"""The watchlist: worrying search terms (self-harm, extremism ...) matched for every profile.

A DSL wants "suicide" to catch "Suicide", "SUICIDE" and "suïcide" but not "suicidesquad"
trailers or a word that merely contains a term: so both the terms and the searched text are
reduced to words (Unicode compatibility form, accents removed, case-folded, anything that is
not a letter or digit is a word break) and a term matches a whole run of words.  "self-harm",
"self harm" and "Self  Harm" are the same two words.  A term ending in `*` matches any word
that starts with it ("suicid*" matches "suicidal" and "suicide").

Compiled once per policy into a dict keyed by phrase, so matching costs a few dict lookups per
word of the search, however many terms there are.

Terms files: UTF-8 text, one term or phrase per line; blank lines and lines starting with `#`
are ignored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from webpolicy.policy.model import WatchlistSpec
from webpolicy.policy.severity import SEVERITY_RANK
from webpolicy.policy.yamlnodes import Problem

MAX_WORDS = 64                 # words of a search that are looked at; search terms are short
_WORD = re.compile(r"[^\W_]+")   # letters and digits; "_" breaks words too


@dataclass(frozen=True, slots=True)
class WatchHit:
    """One watchlist term found in a search."""

    list: str                  # the watchlist's name in policy.yaml
    category: str
    severity: str
    term: str                  # the term as written in the list

    @property
    def rank(self) -> int:
        return SEVERITY_RANK.get(self.severity, 0)


def words(text: str) -> list[str]:
    """Case- and accent-insensitive words: "Self-HARM, Suïcide" -> ["self", "harm", "suicide"]."""
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WORD.findall(text.casefold())


class Watchlist:
    """Compiled terms of every watchlist in the policy; immutable once built."""

    def __init__(self) -> None:
        self._phrases: dict[str, WatchHit] = {}         # "self harm" -> hit
        self._starts: dict[str, int] = {}               # first word -> longest phrase (words)
        self._prefixes: list[tuple[tuple[str, ...], str, WatchHit]] = []   # "thinspo*"
        self._prefix_heads: tuple[str, ...] = ()        # what a prefix term's first word starts with
        self.problems: list[Problem] = []

    def __len__(self) -> int:
        return len(self._phrases) + len(self._prefixes)

    def counts(self) -> dict[str, int]:
        """Terms in force per watchlist name (for `webpolicy validate`)."""
        hits = list(self._phrases.values()) + [hit for _, _, hit in self._prefixes]
        counted: dict[str, int] = {}
        for hit in hits:
            counted[hit.list] = counted.get(hit.list, 0) + 1
        return counted

    @classmethod
    def compile(cls, specs: Iterable[WatchlistSpec], origin: str = "policy.yaml") -> "Watchlist":
        """Read every term (inline and from files); unreadable files become warnings."""
        watchlist = cls()
        for spec in specs:
            for term, where, line in _terms_of(spec, origin, watchlist.problems):
                watchlist._add(spec, term, where, line)
        return watchlist

    def _add(self, spec: WatchlistSpec, term: str, where: str, line: int | None) -> None:
        prefix = term.endswith("*")
        parts = words(term.rstrip("*"))
        if not parts:
            self.problems.append(Problem(where, line, f"watchlist.{spec.name}: term '{term}' has "
                                         "no letters or digits; ignored", warning=True))
            return
        hit = WatchHit(spec.name, spec.category, spec.severity, term)
        if prefix:
            self._prefixes.append((tuple(parts[:-1]), parts[-1], hit))
            self._prefix_heads = tuple({*self._prefix_heads, parts[0]})
            return
        key = " ".join(parts)
        known = self._phrases.get(key)
        if known is None or hit.rank > known.rank:   # the same term in two lists: most severe
            self._phrases[key] = hit
        self._starts[parts[0]] = max(self._starts.get(parts[0], 0), len(parts))

    def matches(self, text: str) -> list[WatchHit]:
        """Every term found in `text`, most severe first (then longest first).

        Cost: one dict lookup per word of the search, more only where a word starts a term.
        """
        if not text or not self:
            return []
        found = words(text)[:MAX_WORDS]
        hits: dict[str, WatchHit] = {}
        for start, word in enumerate(found):
            longest = self._starts.get(word)
            if longest:
                for end in range(start + 1, min(start + longest, len(found)) + 1):
                    hit = self._phrases.get(" ".join(found[start:end]))
                    if hit is not None:
                        hits[hit.term] = hit
            if self._prefix_heads and word.startswith(self._prefix_heads):
                self._match_prefixes(found, start, hits)
        return sorted(hits.values(), key=lambda h: (-h.rank, -len(h.term)))

    def _match_prefixes(self, found: list[str], start: int, hits: dict[str, WatchHit]) -> None:
        for lead, prefix, hit in self._prefixes:
            end = start + len(lead)
            if (end < len(found) and found[end].startswith(prefix)
                    and tuple(found[start:end]) == lead):
                hits[hit.term] = hit

    def match(self, text: str) -> WatchHit | None:
        """The most severe term found, or None."""
        hits = self.matches(text)
        return hits[0] if hits else None


def _terms_of(spec: WatchlistSpec, origin: str,
              problems: list[Problem]) -> Iterable[tuple[str, str, int | None]]:
    for term in spec.terms:
        yield term.strip(), origin, None
    for source in spec.sources:
        try:
            text = Path(source).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(origin, None, f"watchlist.{spec.name}: cannot read terms "
                                    f"file {source}: {exc}", warning=True))
            continue
        for number, line in enumerate(text.splitlines(), 1):
            term = line.strip()
            if term and not term.startswith("#"):
                yield term, str(source), number


class RecentHits:
    """Suppress repeats of one flagged suggestion: a search typed one key at a time hits the
    watchlist on every keystroke after the term is complete.  Bounded; not thread-safe (used on
    the event loop only)."""

    def __init__(self, seconds: float = 60.0, size: int = 4096):
        self.seconds = seconds
        self.size = size
        self._seen: dict[tuple, float] = {}

    def repeated(self, key: tuple, now: float) -> bool:
        last = self._seen.get(key)
        if last is not None and now - last < self.seconds:
            return True
        if len(self._seen) >= self.size:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.seconds}
            if len(self._seen) >= self.size:
                self._seen.clear()
        self._seen[key] = now
        return False
