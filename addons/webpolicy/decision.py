"""decide(): for this client and this URL, block, log or allow, and why.

Precedence: statutory lists > local deny > local allow > category lists; among category lists
the strictest action wins (block > log), then the highest severity.  Knows nothing of mitmproxy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .canonical import CanonicalURL
from .engine import SEVERITY_RANK, Engine, ListHit, ProfileRules

ACTION_RANK = {"allow": 0, "log": 1, "block": 2}
FILTER_UNAVAILABLE = "Filter unavailable"


@dataclass(frozen=True, slots=True)
class Decision:
    action: str                 # "allow" | "log" | "block"
    profile: str
    profile_reason: str         # "user" | "network 10.10.0.0/16" | "default"
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
        fields = asdict(self)
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
    hits = engine.match(url.host, target, url.host + target, rules.expression_mask)
    if not hits:
        return Decision("allow", rules.profile.name, reason, policy_version=engine.version)
    return _judge(engine, rules, reason, hits)


def _judge(engine: Engine, rules: ProfileRules, reason: str, hits: list[ListHit]) -> Decision:
    specs = engine.list_specs
    statutory = [h for h in hits if engine.statutory_mask >> h.list_id & 1]
    if statutory:
        return _decision("block", engine, rules, reason, _most_severe(specs, statutory))
    for local_bit, action in ((engine.deny_bit, "block"), (engine.allow_bit, "allow")):
        local = [h for h in hits if local_bit >> h.list_id & 1]
        if local:
            return _decision(action, engine, rules, reason, local[0])
    best, best_key = None, (0, 0)
    for hit in hits:
        action = _action(rules, hit.list_id)
        key = (ACTION_RANK[action], SEVERITY_RANK[specs[hit.list_id].severity])
        if action != "allow" and key > best_key:
            best, best_key = hit, key
    if best is None:
        return Decision("allow", rules.profile.name, reason, policy_version=engine.version)
    return _decision(_action(rules, best.list_id), engine, rules, reason, best)


def _action(rules: ProfileRules, list_id: int) -> str:
    if rules.block_mask >> list_id & 1:
        return "block"
    if rules.log_mask >> list_id & 1:
        return "log"
    return "allow"


def _most_severe(specs, hits: list[ListHit]) -> ListHit:
    return max(hits, key=lambda h: SEVERITY_RANK[specs[h.list_id].severity])


def _decision(action: str, engine: Engine, rules: ProfileRules, reason: str,
              hit: ListHit) -> Decision:
    spec = engine.list_specs[hit.list_id]
    return Decision(action, rules.profile.name, reason, list=spec.name, category=spec.category,
                    severity=spec.severity, statutory=spec.statutory, match=hit.kind,
                    entry=hit.entry, policy_version=engine.version)


def unavailable(profile: str, reason: str, version: str, on_error: str = "block") -> Decision:
    """The filter could not decide: block (fail closed) unless the profile chose on_error: allow."""
    action = "block" if on_error == "block" else "log"
    return Decision(action, profile, reason, category=FILTER_UNAVAILABLE, severity="high",
                    policy_version=version, error=True)
