"""Compile a validated Policy and the contents of its lists into an Engine.

The Engine is immutable once built: the proxy swaps a whole new one in on reload, so a request
always sees one consistent policy.  Everything that can be worked out before a request arrives
(which lists a profile blocks, as bit masks; the compiled regular expressions) is worked out here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from .canonical import canonical_url
from .domainindex import DomainIndex
from .listformats import ParsedSource, SourceError, parse_source
from .policy import ListSpec, Policy, PolicyError, Profile, Rule
from .urlindex import UrlIndex, host_suffixes
from .yamlnodes import Problem

SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}

# Pseudo-lists for the local rules in policy.yaml; they share the bit space with real lists.
DENY = "deny"
ALLOW = "allow"


@dataclass
class ListStatus:
    """What loading one list produced: shown by `validate`, exported as metrics."""

    name: str
    entries: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    failed_sources: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.entries > 0 or not self.failed_sources


@dataclass(frozen=True, slots=True)
class ProfileRules:
    profile: Profile
    block_mask: int
    log_mask: int
    expression_mask: int        # lists this profile uses that opted into regular expressions
    fails_closed: bool          # a list it uses could not be loaded and on_error is block


class ListHit(NamedTuple):
    list_id: int
    kind: str                   # "host" | "url" | "expression"
    entry: str


class Engine:
    """Everything decide() reads, built once per policy load."""

    def __init__(self, policy: Policy, list_specs: list[ListSpec], domains: DomainIndex,
                 exact: UrlIndex, passthrough: UrlIndex, expressions: dict[int, re.Pattern],
                 status: dict[str, ListStatus], warnings: list[Problem]):
        self.policy = policy
        self.version = policy.version
        self.list_specs = list_specs
        self.list_ids = {spec.name: i for i, spec in enumerate(list_specs)}
        self.domains = domains
        self.exact = exact
        self.passthrough = passthrough
        self.expressions = expressions
        self.status = status
        self.warnings = warnings
        self.deny_bit = 1 << self.list_ids[DENY]
        self.allow_bit = 1 << self.list_ids[ALLOW]
        self.statutory_mask = _mask(i for i, s in enumerate(list_specs) if s.statutory)
        self.profiles = {name: self._profile_rules(p) for name, p in policy.profiles.items()}
        self._networks = [(rule.network, rule.profile, f"network {rule.network}")
                          for rule in policy.networks]
        self.identify = lru_cache(maxsize=8192)(self._identify)
        # decision.py's memo of the "nothing matched" answer per (profile, reason): the
        # common case then builds no object at all.
        self.allow_decisions: dict[tuple[str, str], object] = {}

    def _profile_rules(self, profile: Profile) -> ProfileRules:
        block = _mask(self.list_ids[n] for n in profile.block) | self.statutory_mask | self.deny_bit
        log = _mask(self.list_ids[n] for n in profile.log)
        used = [n for n in profile.block + profile.log] + [s.name for s in self.list_specs if s.statutory]
        unavailable = [n for n in used if n in self.status and not self.status[n].available]
        expression_mask = _mask(i for i in self.expressions if (block | log) >> i & 1)
        return ProfileRules(profile, block, log, expression_mask,
                            fails_closed=bool(unavailable) and profile.blocks)

    def _identify(self, user: str | None, client_ip: str | None) -> tuple[ProfileRules, str]:
        """user -> profile, else client IP -> first matching network, else the default."""
        policy = self.policy
        if user and user in policy.users:
            return self.profiles[policy.users[user]], "user"
        if client_ip:
            try:
                address = ipaddress.ip_address(client_ip.split("%", 1)[0])
            except ValueError:
                address = None
            if address is not None:
                if address.version == 6 and address.ipv4_mapped:
                    address = address.ipv4_mapped
                for network, profile, reason in self._networks:
                    if address in network:
                        return self.profiles[profile], reason
        return self.profiles[policy.default_profile], "default"

    def match(self, host: str, target: str, expression_mask: int = 0) -> list[ListHit]:
        """Every list entry matching a canonical host and target (path[?query])."""
        hits = []
        for name, bits in self.domains.match(host):
            _add_hits(hits, bits, "host", name)
        for entry, bits, kind in self.exact.match(host, target):
            _add_hits(hits, bits, kind, entry)
        if expression_mask:
            url_text = host + target
            for list_id, pattern in self.expressions.items():
                if expression_mask >> list_id & 1:
                    found = pattern.search(url_text)
                    if found:
                        hits.append(ListHit(list_id, "expression", found.group(0)))
        return hits

    def is_passthrough(self, host: str) -> bool:
        return bool(self.passthrough.match(host, "/"))

    def device(self, client_ip: str | None) -> str:
        return self.policy.devices.get(client_ip or "", "")


def build_engine(policy: Policy) -> Engine:
    """Read every list the policy names; raise PolicyError if a statutory list cannot be used."""
    specs = list(policy.lists.values()) + [_local_spec(DENY), _local_spec(ALLOW)]
    if len(specs) > 64:
        raise PolicyError([Problem(str(policy.path), None,
                                   f"lists: {len(specs) - 2} lists; at most 62 are supported")])
    problems: list[Problem] = []
    status: dict[str, ListStatus] = {}
    domain_entries: list[tuple[str, int]] = []
    exact = UrlIndex()
    expressions: dict[int, re.Pattern] = {}
    for list_id, spec in enumerate(specs[:-2]):
        bit = 1 << list_id
        status[spec.name], parsed = _load_list(spec, policy, problems)
        for source in parsed:
            if spec.statutory:
                for domain in source.domains:
                    exact.add(domain, "/", bit)
            else:
                domain_entries.extend((domain, bit) for domain in source.domains)
            for host, prefix in source.urls:
                exact.add(host, prefix, bit)
        if spec.expressions:
            pattern = _compile_expressions(spec, parsed, problems)
            if pattern is not None:
                expressions[list_id] = pattern
    _add_rules(exact, policy.deny, 1 << (len(specs) - 2), policy, problems)
    _add_rules(exact, policy.allow, 1 << (len(specs) - 1), policy, problems)
    passthrough = UrlIndex()
    _add_rules(passthrough, policy.passthrough, 1, policy, problems, hosts_only=True)
    _check_allow_against_statutory(policy, specs, exact, problems)
    if any(not p.warning for p in problems):
        raise PolicyError(problems)
    return Engine(policy, specs, DomainIndex.build(domain_entries), exact, passthrough,
                  expressions, status, problems)


def _load_list(spec: ListSpec, policy: Policy,
               problems: list[Problem]) -> tuple[ListStatus, list[ParsedSource]]:
    status = ListStatus(spec.name)
    parsed = []
    report = _error_reporter(spec, policy, problems)
    for source in spec.sources:
        try:
            result = parse_source(source, spec.format)
        except SourceError as exc:
            status.failed_sources.append(str(source))
            report(f"lists.{spec.name}: source {exc}")
            continue
        parsed.append(result)
        status.entries += len(result.domains) + len(result.urls)
        status.skipped += result.skipped
        status.skipped_examples.extend(result.skipped_examples[: 5 - len(status.skipped_examples)])
        if not result.domains and not result.urls:
            report(f"lists.{spec.name}: source {source} yields no entries")
    if status.skipped:
        problems.append(Problem(str(policy.path), spec.line, f"lists.{spec.name}: skipped "
                                f"{status.skipped} bad lines, e.g. {status.skipped_examples[0]}",
                                warning=True))
    if status.entries == 0 and not spec.statutory and not status.failed_sources:
        status.failed_sources.append("(no entries)")
    return status, parsed


def _error_reporter(spec: ListSpec, policy: Policy, problems: list[Problem]):
    """Statutory lists must load: their problems are errors; others are warnings."""
    def report(message: str) -> None:
        problems.append(Problem(str(policy.path), spec.line, message, warning=not spec.statutory))
    return report


def _compile_expressions(spec: ListSpec, parsed: list[ParsedSource],
                         problems: list[Problem]) -> re.Pattern | None:
    patterns = []
    for source in parsed:
        for expression in source.expressions:
            try:
                re.compile(expression)
            except re.error as exc:
                problems.append(Problem(source.path, None, f"bad expression '{expression[:60]}': "
                                        f"{exc}", warning=True))
                continue
            patterns.append(f"(?:{expression})")
    return re.compile("|".join(patterns), re.IGNORECASE) if patterns else None


def _add_rules(index: UrlIndex, rules: tuple[Rule, ...], bit: int, policy: Policy,
               problems: list[Problem], hosts_only: bool = False) -> None:
    for rule in rules:
        try:
            url = canonical_url(rule.text)
        except ValueError as exc:
            problems.append(Problem(str(policy.path), rule.line, f"'{rule.text}': {exc}"))
            continue
        if hosts_only and url.path != "/":
            problems.append(Problem(str(policy.path), rule.line,
                                    f"'{rule.text}': passthrough takes host names, not paths"))
            continue
        index.add(url.host, f"{url.path}?{url.query}" if url.query else url.path, bit)


def _check_allow_against_statutory(policy: Policy, specs: list[ListSpec], exact: UrlIndex,
                                   problems: list[Problem]) -> None:
    """An allow rule may never open a statutory entry: reject the policy that tries.

    At run time statutory hits win anyway; this tells the admin the rule cannot do what they
    meant.  An allow rule and an entry overlap when either host is the other or its parent and
    either path is a prefix of the other.
    """
    statutory = _mask(i for i, s in enumerate(specs) if s.statutory)
    entries = [(h, p, b) for h, p, b in exact.entries() if b & statutory]
    for rule in policy.allow:
        try:
            url = canonical_url(rule.text)
        except ValueError:
            continue
        for host, prefix, bits in entries:
            if _overlap(url.host, url.path, host, prefix):
                names = ", ".join(specs[i].name for i in _bit_ids(bits & statutory))
                problems.append(Problem(str(policy.path), rule.line,
                                        f"allow: '{rule.text}' overlaps an entry of the statutory "
                                        f"list {names}; statutory lists cannot be overridden"))
                break


def _overlap(host_a: str, path_a: str, host_b: str, path_b: str) -> bool:
    hosts = host_a in host_suffixes(host_b) or host_b in host_suffixes(host_a)
    return hosts and (path_a.startswith(path_b) or path_b.startswith(path_a))


def _local_spec(name: str) -> ListSpec:
    category = "Blocked by local policy" if name == DENY else "Allowed by local policy"
    return ListSpec(name=name, category=category, severity="medium", format="urls", sources=())


def _mask(ids) -> int:
    mask = 0
    for i in ids:
        mask |= 1 << i
    return mask


def _add_hits(hits: list[ListHit], bits: int, kind: str, entry: str) -> None:
    if bits & (bits - 1) == 0:                  # one list: the usual case
        hits.append(ListHit(bits.bit_length() - 1, kind, entry))
    else:
        hits.extend(ListHit(i, kind, entry) for i in _bit_ids(bits))


def _bit_ids(bits: int) -> list[int]:
    ids = []
    while bits:
        low = bits & -bits
        ids.append(low.bit_length() - 1)
        bits ^= low
    return ids


__all__ = ["Engine", "ListStatus", "ListHit", "ProfileRules", "build_engine", "SEVERITY_RANK",
           "host_suffixes", "DENY", "ALLOW"]
