"""Sites most tried: blocked and flagged attempts grouped by registrable domain, for reports.

A DSL thinks in sites ("bet365"), not hosts: `www.bet365.com`, `mobile.bet365.com` and
`sports.bet365.com` are one site tried three times.  The registrable domain comes from the
Public Suffix List through tldextract, and only here: filtering decides on exact hosts and
their parents (domainindex.py) and never needs it.

tldextract's default fetches the suffix list over the network, with no timeout, on first use;
a report run on an offline gateway must not hang or leak, so the extractor is built once with
its bundled snapshot only (`suffix_list_urls=()`) and no disk cache (`cache_dir=None`).  Private
suffixes (`github.io`, `blogspot.com`) count as suffixes, as browsers do for site boundaries:
`one.github.io` and `another.github.io` are different people's sites, not one.

Statutory entries (CTIRU, IWF) are grouped by their exact host and never folded into the
domain: as on the block page, a statutory hit is described by its host only, and one listed
host must not brand a whole shared domain.  IP-literal hosts stay as they are.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from dataclasses import dataclass, field

import tldextract

ATTEMPTS = ("blocked", "refused_passthrough", "flagged")
"""What counts as trying a site: a block, a refused connection, a flagged search.  Not
`logged` (it was allowed) nor `failed_closed` (the filter failed; it says nothing of the site)."""


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    """Built once; its first lookup loads the bundled suffix list (about 20 ms)."""
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                 include_psl_private_domains=True)


@functools.lru_cache(maxsize=65536)
def site_of(host: str) -> str:
    """The registrable domain of a canonical host (`www.bbc.co.uk` -> `bbc.co.uk`).

    An IP literal is its own site.  A host under a suffix the list does not know (`.test`,
    `.internal`) follows the list's default rule `*`: its last two labels.  A bare suffix or
    a single label (`co.uk`, `printer`) is returned unchanged."""
    host = host.strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    parts = _extractor()(host)
    if parts.domain and parts.suffix:
        return f"{parts.domain}.{parts.suffix}"
    labels = host.split(".")
    if not parts.suffix and len(labels) >= 2 and all(labels[-2:]):
        return ".".join(labels[-2:])
    return host


@dataclass
class Site:
    """Attempts on one site (or, for a statutory entry, one host)."""

    name: str
    statutory: bool = False
    blocked: int = 0
    flagged: int = 0
    people: set[str] = field(default_factory=set)
    categories: Counter = field(default_factory=Counter)
    last: str = ""                          # the latest record's `time` (ISO 8601, UTC)

    @property
    def attempts(self) -> int:
        return self.blocked + self.flagged

    @property
    def category(self) -> str:
        """The category most of the attempts fell in."""
        return self.categories.most_common(1)[0][0] if self.categories else ""


def most_tried(records: list[dict], limit: int | None = 15) -> list[Site]:
    """Sites by attempts, most first (ties: more people, then name); `limit=None` for all."""
    sites: dict[tuple[str, bool], Site] = {}
    for record in records:
        host = str(record.get("host") or "")
        if record.get("action") not in ATTEMPTS or not host:
            continue
        statutory = bool(record.get("statutory"))
        name = host if statutory else site_of(host)
        site = sites.setdefault((name, statutory), Site(name, statutory))
        _count(site, record)
    ranked = sorted(sites.values(), key=lambda s: (-s.attempts, -len(s.people), s.name))
    return ranked if limit is None else ranked[:limit]


def _count(site: Site, record: dict) -> None:
    if record.get("action") == "flagged":
        site.flagged += 1
    else:
        site.blocked += 1
    person = str(record.get("user") or "").casefold() or str(record.get("client_ip") or "")
    site.people.add(person)
    site.categories[record.get("category") or "(none)"] += 1
    site.last = max(site.last, str(record.get("time") or ""))
