"""Event records: what the safeguarding log, the block page and alerts say about one event.

One record per block, log-only, flagged, fail-closed or refused pass-through event.  The record
`id` is the reference shown on the block page, so a learner's screenshot leads a DSL straight
to the record.  The field list is versioned (`schema`) and documented in docs/event-record.md.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from webpolicy.engine.decision import Decision
from webpolicy.lists.canonical import CanonicalURL

if TYPE_CHECKING:
    from webpolicy.engine.watchlist import WatchHit

SCHEMA_VERSION = 1

# Crockford-style alphabet: no I, L, O, U, so a reference read out over the phone is unambiguous.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Who asked for what, as the proxy saw it."""

    client_ip: str
    user: str | None
    method: str
    url: CanonicalURL | None
    host: str
    user_agent: str = ""
    search_term: str | None = None


def new_event_id() -> str:
    """A short, unguessable reference such as WP-7K3M9Q2XTB (50 bits)."""
    n = secrets.randbits(50)
    chars = [_ALPHABET[(n >> shift) & 31] for shift in range(45, -1, -5)]
    return "WP-" + "".join(chars)


def event_action(decision: Decision, passthrough: bool = False, flagged: bool = False) -> str:
    """The record's `action`: blocked / logged / flagged / failed_closed / refused_passthrough."""
    if decision.failed_closed:
        return "failed_closed"
    if decision.blocked:
        return "refused_passthrough" if passthrough else "blocked"
    if flagged and decision.action == "allow":
        return "flagged"
    return "logged"


def display_url(url: CanonicalURL | None, host: str, keep_query: bool) -> str:
    """The URL as recorded: query strings redacted unless the policy keeps them."""
    if url is None:
        return host
    text = str(url)
    if url.query and not keep_query:
        text = text[: len(text) - len(url.query)] + "[redacted]"
    return text


def identified_by(user: str | None) -> str:
    """How the person was known: "kerberos" (a ticket, single sign-on), "login" (a password:
    the directory, or mitmproxy's --proxyauth), "session" (the sign-in page), "network" (no one signed in: the address)."""
    if not user:
        return "network"
    return getattr(user, "method", "login")


def make_record(event_id: str, action: str, decision: Decision, facts: RequestFacts,
                device: str = "", keep_query: bool = False,
                when: dt.datetime | None = None, watch: WatchHit | None = None) -> dict:
    """The record; a `flagged` one (allowed, but the search matched the watchlist) describes
    the watchlist hit in list/category/severity/match/entry, so reports filter it like a block.

    The User-Agent, URL and login are as the client sent them (possibly lone surrogates,
    controls, megabytes): the writer and the alert worker clean them (safetext.py) on their
    own threads, which keeps that cost (about 12 us a record) off the event loop."""
    when = when or dt.datetime.now(dt.UTC)
    record = {
        "schema": SCHEMA_VERSION,
        "id": event_id,
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "client_ip": facts.client_ip,
        "user": str(facts.user) if facts.user is not None else None,   # a plain name
        "identified_by": identified_by(facts.user),
        "device": device or None,
        "profile": decision.profile,
        "profile_reason": decision.profile_reason,
        "action": action,
        "method": facts.method,
        "url": display_url(facts.url, facts.host, keep_query),
        "host": facts.url.host if facts.url else facts.host,
        "search_term": facts.search_term,
        "list": decision.list,
        "category": decision.category,
        "severity": decision.severity,
        "statutory": decision.statutory,
        "match": decision.match,
        "entry": decision.entry,
        "user_agent": facts.user_agent or None,
        "policy_version": decision.policy_version,
        "watchlist": None,
    }
    if watch is not None:
        record["watchlist"] = {"list": watch.list, "category": watch.category,
                               "severity": watch.severity, "term": watch.term}
        if action == "flagged":
            record.update(list=watch.list, category=watch.category, severity=watch.severity,
                          statutory=False, match="search_term", entry=watch.term)
    return record
