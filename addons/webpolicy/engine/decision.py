"""decide(): for this client and this URL, block, log or allow, and why.

Precedence: statutory lists > local deny > local allow > category lists; among category lists
the strictest action wins (block > log), then the highest severity.  Knows nothing of mitmproxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from webpolicy.engine import selective
from webpolicy.engine.engine import Engine, ListHit, ProfileRules
from webpolicy.lists.canonical import CanonicalURL
from webpolicy.policy.model import Profile
from webpolicy.policy.severity import SEVERITY_RANK

ACTION_RANK = {"allow": 0, "log": 1, "block": 2}
FILTER_UNAVAILABLE = "Filter unavailable"


class Decision(NamedTuple):
    """One answer of the filter.  A NamedTuple: immutable and cheap to build per request."""

    action: str                 # "allow" | "log" | "block"
    profile: str
    profile_reason: str         # "user" | "group <dn>" | "network 10.10.0.0/16" | "default"
    list: str | None = None     # list name; "deny"/"allow" for the local rules
    category: str | None = None
    severity: str | None = None
    statutory: bool = False
    match: str | None = None    # "host" | "url" | "expression"
    entry: str | None = None    # the list entry that matched
    policy_version: str = ""
    error: bool = False         # the filter could not decide; `action` is the profile's on_error

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    @property
    def failed_closed(self) -> bool:
        return self.error and self.action == "block"

    def as_dict(self) -> dict:
        """The documented decision fields (CLI --json, log records)."""
        fields = self._asdict()
        fields.pop("error")
        return fields


def decide(engine: Engine, url: CanonicalURL, client_ip: str | None = None,
           user: str | None = None, profile: str | None = None) -> Decision:
    """`profile` forces a profile (the CLI's --profile); otherwise identity picks it."""
    if profile is not None:
        rules, reason = engine.profiles[profile], "requested"
    else:
        rules, reason = engine.identify(user, client_ip)
    if rules.fails_closed:
        return unavailable(rules.profile.name, reason, engine.version, rules.profile.on_error)
    target = f"{url.path}?{url.query}" if url.query else url.path
    hits = engine.match(url.host, target, rules.expression_mask)
    if not hits:
        return _allowed(engine, rules, reason)
    return _judge(engine, rules, reason, hits)


def allows_every_path(engine: Engine, host: str, client_ip: str | None = None,
                      user: str | None = None) -> bool:
    """Whether no request to this canonical host can be blocked for this client, whatever
    its path or query: only then may the upstream be connected before the first request is
    decided (a blocked site is never contacted).  False whenever that is not certain: URL
    rules under the host, lists of expressions, a profile failing closed.  A log-only hit
    allows: each request is still decided, and logged, on its own."""
    rules, _ = engine.identify(user, client_ip)
    if rules.fails_closed or rules.expression_mask:
        return False
    host_hits, rule_hosts = engine.host_facts(host)
    if rule_hosts:
        return False
    return _host_action(engine, rules, host_hits) != "block"


def may_pass_through(engine: Engine, host: str, client_ip: str | None = None,
                     user: str | None = None) -> bool:
    """Whether, with `tls: {inspect: selective}`, a TLS connection to this canonical host may
    be passed through uninspected for this client: every path allowed (allows_every_path),
    nothing logged either (a log-only hit is recorded per request, which needs the request),
    and nothing else that needs the content (engine/selective.py: fronting hosts, the
    selftest names, search engines where the profile forces safe search or a watchlist
    reads search terms).  False whenever that is not certain.  The caller checks what only
    it can see: the names the connection involves, the DoH canary, whether the login is known."""
    kind = engine.tls_kind(host)
    if kind == selective.INSPECT:
        return False
    rules, _ = engine.identify(user, client_ip)
    if rules.fails_closed or rules.expression_mask:
        return False
    if kind == selective.SEARCH and (_needs_search(rules.profile) or engine.policy.watchlist):
        return False
    host_hits, rule_hosts = engine.host_facts(host)
    return not rule_hosts and _host_action(engine, rules, host_hits) == "allow"


def _needs_search(profile: Profile) -> bool:
    """The profile changes or reads requests to search engines (safe search)."""
    return profile.safe_search.enforce or profile.safe_search.youtube != "off"


def _host_action(engine: Engine, rules: ProfileRules, host_hits: Sequence[ListHit]) -> str:
    """What the host's own list hits make of any request to it: the tier decides, as in
    _judge ("allow" when nothing this profile uses matched)."""
    tier = max((_tier(engine, rules, 1 << hit.list_id) for hit in host_hits), default=0)
    return _TIER_ACTION.get(tier, "allow")


def _allowed(engine: Engine, rules: ProfileRules, reason: str) -> Decision:
    key = (rules.profile.name, reason)
    decision = engine.allow_decisions.get(key)
    if decision is None:
        decision = engine.allow_decisions[key] = Decision(
            "allow", rules.profile.name, reason, policy_version=engine.version)
    return decision


# Precedence tiers: statutory > local deny > local allow > category block > category log.
_STATUTORY, _DENY, _ALLOW, _BLOCK, _LOG = 5, 4, 3, 2, 1
_TIER_ACTION = {_STATUTORY: "block", _DENY: "block", _ALLOW: "allow", _BLOCK: "block",
                _LOG: "log"}


def _judge(engine: Engine, rules: ProfileRules, reason: str, hits: Sequence[ListHit]) -> Decision:
    """One pass over the hits: the highest tier wins, then the highest severity."""
    specs = engine.list_specs
    best, best_key = None, (0, 0)
    for hit in hits:
        tier = _tier(engine, rules, 1 << hit.list_id)
        if tier:
            key = (tier, SEVERITY_RANK[specs[hit.list_id].severity])
            if key > best_key:
                best, best_key = hit, key
    if best is None:
        return _allowed(engine, rules, reason)
    return _decision(_TIER_ACTION[best_key[0]], engine, rules, reason, best)


def _tier(engine: Engine, rules: ProfileRules, bit: int) -> int:
    if bit & engine.statutory_mask:
        return _STATUTORY
    if bit & engine.deny_bit:
        return _DENY
    if bit & engine.allow_bit:
        return _ALLOW
    if bit & rules.block_mask:
        return _BLOCK
    return _LOG if bit & rules.log_mask else 0


def _decision(action: str, engine: Engine, rules: ProfileRules, reason: str,
              hit: ListHit) -> Decision:
    spec = engine.list_specs[hit.list_id]
    # Positional: measurably cheaper than keywords on this per-request path.
    return Decision(action, rules.profile.name, reason, spec.name, spec.category, spec.severity,
                    spec.statutory, hit.kind, hit.entry, engine.version)


def unavailable(profile: str, reason: str, version: str, on_error: str = "block") -> Decision:
    """The filter could not decide: block (fail closed) unless the profile chose on_error: allow."""
    action = "block" if on_error == "block" else "log"
    return Decision(action, profile, reason, category=FILTER_UNAVAILABLE, severity="high",
                    policy_version=version, error=True)


# No policy is loaded (yet): nobody is identified and everything fails closed.
NO_POLICY = unavailable("unknown", "default", "none")
