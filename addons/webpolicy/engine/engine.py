"""Compile a validated Policy and the contents of its lists into an Engine.

The Engine is immutable once built (its per-host memo only remembers what the indexes
answered): the proxy swaps a whole new one in on reload, so a request always sees one
consistent policy.  Everything that can be worked out before a request arrives
(which lists a profile blocks, as bit masks; the compiled regular expressions) is worked out here.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import NamedTuple

import yaml

from webpolicy.engine import selective
from webpolicy.lists.canonical import canonical_url
from webpolicy.lists.compiler import (
    CompiledList,
    CompiledLists,
    CompileError,
    ListCache,
    ListJob,
    ListStatus,
    compile_lists,
    read_list,
)
from webpolicy.lists.domainindex import DomainIndex
from webpolicy.lists.urlindex import RuleHosts, UrlIndex, host_suffixes, loose_path
from webpolicy.policy.model import ListSpec, Policy, PolicyError, Profile, Rule, load_policy
from webpolicy.policy.yamlnodes import Problem, load_document

log = logging.getLogger("webpolicy")

SELFTEST_SUFFIX = ".selftest.webpolicy.invalid"   # see selftest_host

# Pseudo-lists for the local rules in policy.yaml; they share the bit space with real lists.
DENY = "deny"
ALLOW = "allow"


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


HOST_FACTS_SIZE = 16384

# A host's domain-list hits, and its names that have URL rules (see UrlIndex.rule_hosts).
HostFacts = tuple[tuple[ListHit, ...], RuleHosts]


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
        # Not a bound method: the Engine must hold no reference cycle, so that the old one is
        # freed the moment a reload drops it, never left to the cyclic GC (see reloader.py).
        self.identify = lru_cache(maxsize=8192)(partial(_identify, policy, self.profiles,
                                                        self._networks))
        # decision.py's memo of the "nothing matched" answer per (profile, reason): the
        # common case then builds no object at all.
        self.allow_decisions: dict[tuple[str, str], object] = {}
        # What the lists say of a host alone, per canonical host: learners visit the same
        # few hundred hosts over and over, and each lookup of a big mapped index costs a
        # few cache and TLB misses per label.  Not a bound method either (see identify).
        self.host_facts: Callable[[str], HostFacts] = lru_cache(maxsize=HOST_FACTS_SIZE)(
            partial(_host_facts, domains, exact, _selftest_names(self.list_ids)))
        # Selective TLS inspection's per-host part (engine/selective.py), memoised likewise:
        # it is asked once per new TLS connection.
        self.tls_kind: Callable[[str], str] = lru_cache(maxsize=HOST_FACTS_SIZE)(
            partial(_tls_kind, selective.fronting_suffixes(policy.tls.fronting),
                    self.host_facts))

    def _profile_rules(self, profile: Profile) -> ProfileRules:
        block = _mask(self.list_ids[n] for n in profile.block) | self.statutory_mask | self.deny_bit
        log = _mask(self.list_ids[n] for n in profile.log)
        used = [n for n in profile.block + profile.log] + [s.name for s in self.list_specs if s.statutory]
        unavailable = [n for n in used if n in self.status and not self.status[n].available]
        expression_mask = _mask(i for i in self.expressions if (block | log) >> i & 1)
        return ProfileRules(profile, block, log, expression_mask,
                            fails_closed=bool(unavailable) and profile.blocks)

    def match(self, host: str, target: str, expression_mask: int = 0) -> Sequence[ListHit]:
        """Every list entry matching a canonical host and target (path[?query])."""
        host_hits, rule_hosts = self.host_facts(host)
        if not rule_hosts and not expression_mask:
            return host_hits                # nearly every request: no copy
        hits = list(host_hits)
        if rule_hosts:
            for entry, bits, kind in self.exact.match_at(rule_hosts, target):
                _add_hits(hits, bits, kind, entry)
        if expression_mask:
            url_text = host + target
            for list_id, pattern in self.expressions.items():
                if expression_mask >> list_id & 1:
                    found = pattern.search(url_text)
                    if found:
                        hits.append(ListHit(list_id, "expression", found.group(0)))
        return hits

    def release(self) -> None:
        """Free the big Python structures piecemeal, letting the event loop run between
        batches, once this engine has been replaced (see UrlIndex.release); the domain index
        is a mapping and unmaps in well under a ms."""
        self.identify.cache_clear()
        self.host_facts.cache_clear()     # so that a lookup now raises (fails closed)
        self.tls_kind.cache_clear()
        self.exact.release(_yield_gil)

    def is_passthrough(self, host: str) -> bool:
        return bool(self.passthrough.match(host, "/"))

    def device(self, client_ip: str | None) -> str:
        return self.policy.devices.get(client_ip or "", "")


def _host_facts(domains: DomainIndex, exact: UrlIndex, selftest: dict[str, int],
                host: str) -> HostFacts:
    hits: list[ListHit] = []
    for name, bits in domains.match(host):
        _add_hits(hits, bits, "host", name)
    if host.endswith(SELFTEST_SUFFIX):               # once per host: the result is memoised
        list_id = selftest.get(host)
        if list_id is not None:
            hits.append(ListHit(list_id, "host", host))
    return tuple(hits), exact.rule_hosts(host)


def _tls_kind(fronting: frozenset[str], host_facts: Callable[[str], HostFacts],
              host: str) -> str:
    return selective.host_kind(host, fronting, bool(host_facts(host)[1]),
                               host.endswith(SELFTEST_SUFFIX))


def selftest_host(list_name: str) -> str:
    """The reserved name every list holds, whatever its sources say, so that `webpolicy
    selftest` can ask the running gateway what it does with each list: `<list>.selftest.
    webpolicy.invalid` (.invalid never resolves, so nothing outside is ever asked)."""
    return f"{list_name}{SELFTEST_SUFFIX}"


def is_selftest_host(host: str) -> bool:
    return host.endswith(SELFTEST_SUFFIX)


def _selftest_names(list_ids: dict[str, int]) -> dict[str, int]:
    return {selftest_host(name): list_id for name, list_id in list_ids.items()
            if name not in (DENY, ALLOW)}


def _identify(policy: Policy, profiles: dict[str, ProfileRules],
              networks: list[tuple[object, str, str]], user: str | None,
              client_ip: str | None) -> tuple[ProfileRules, str]:
    """user -> profile, else the user's first listed directory group, else client IP -> first
    matching network, else the default.  A user signed in through the directory is a name
    that carries its groups (identity/directory.py's `SignedInUser`, a str): read here with
    getattr, so every caller that passes a user name passes its groups untouched."""
    if user:
        name = str(user)
        if name in policy.users:
            return profiles[policy.users[name]], "user"
        groups = getattr(user, "groups", None)
        if groups:
            for rule in policy.groups:
                if rule.group in groups:
                    return profiles[rule.profile], f"group {rule.group}"
    if client_ip:
        try:
            address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            address = None
        if address is not None:
            if address.version == 6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            for network, profile, reason in networks:
                if address in network:
                    return profiles[profile], reason
    return profiles[policy.default_profile], "default"


ListCompiler = Callable[[list[ListJob]], CompiledLists]


def build_engine(policy: Policy, compile: ListCompiler = compile_lists,
                 pause: Callable[[], None] | None = None, complete: bool = False) -> Engine:
    """Read every list the policy names; raise PolicyError if a statutory list cannot be used,
    or, when `complete` (a reload, `webpolicy validate`), if any list has a failed source.

    Non-statutory lists, which may hold millions of entries, go through `compile`: by default
    compile_lists() in this process (CLI, tests); the proxy passes a ListCache's compile, which
    runs a worker process and maps its result (compiler.py).  Statutory lists are read here,
    exactly.  `pause` is called between chunks of the Python-side work that grows with the
    lists (the URL entries), so that a reload thread can let the event loop run.

    Why `complete` on a reload: a source that fails (deleted, unreadable, a UT1 category
    missing a file mid-update) would otherwise load as a smaller list, or an unavailable
    one that fails closed.  Refusing the reload keeps the last good policy and its lists in
    force, with the reason logged and counted.  At a cold start there is nothing to keep:
    the list is unavailable and the profiles using it fail closed.
    """
    specs = list(policy.lists.values()) + [_local_spec(DENY), _local_spec(ALLOW)]
    if len(specs) > 64:
        raise PolicyError([Problem(str(policy.path), None,
                                   f"lists: {len(specs) - 2} lists; at most 62 are supported")])
    problems: list[Problem] = []
    status: dict[str, ListStatus] = {}
    exact = UrlIndex()
    expressions: dict[int, re.Pattern] = {}
    jobs = [_job(spec, list_id) for list_id, spec in enumerate(specs[:-2]) if not spec.statutory]
    compiled = compile(jobs)
    for list_id, spec in enumerate(specs[:-2]):
        if spec.statutory:
            item = _read_statutory(spec, 1 << list_id, exact)
        else:
            item = compiled.lists[spec.name]
        status[spec.name] = item.status
        _report_list(spec, item, policy, problems, complete)
        if spec.expressions:
            pattern = _compile_expressions(item.expressions, problems)
            if pattern is not None:
                expressions[list_id] = pattern
    _add_rules(exact, policy.deny, 1 << (len(specs) - 2), policy, problems)
    _add_rules(exact, policy.allow, 1 << (len(specs) - 1), policy, problems)
    passthrough = UrlIndex()
    _add_rules(passthrough, policy.passthrough, 1, policy, problems, hosts_only=True)
    # Before the lists' URL entries join the index: only statutory entries matter here.
    _check_allow_against_statutory(policy, specs, exact, problems)
    if any(not p.warning for p in problems):
        raise PolicyError(problems)
    for chunk in compiled.url_chunks():
        exact.add_many(chunk)
        if pause is not None:
            pause()
    return Engine(policy, specs, compiled.index, exact, passthrough, expressions, status,
                  problems)


def load_engine(path: Path, cache: ListCache | None = None, reload: bool = False,
                complete: bool = False) -> Engine:
    """policy.yaml -> Engine, the big lists compiled by a worker process into `cache`.
    A reload (and `complete`) refuses a policy with a failed source (see build_engine).

    At start-up a worker that cannot run falls back to compiling in this process (slower,
    but nothing is being served yet); on a reload (`reload`, from the reloader's thread) its
    failure refuses the reload, so the last good policy stays in force, and the worker runs
    at a lower priority while this thread yields the GIL between chunks of its own work.
    """
    policy = load_policy(path)
    complete = complete or reload
    if cache is None:
        return build_engine(policy, complete=complete)

    def compile(jobs: list[ListJob]) -> CompiledLists:
        try:
            return cache.compile(jobs, background=reload)
        except CompileError as exc:
            if reload:
                raise
            log.warning("webpolicy: %s; compiling the lists in the proxy process", exc)
            return compile_lists(jobs)

    return build_engine(policy, compile, pause=_yield_gil if reload else None, complete=complete)


def _yield_gil() -> None:
    """Let the event loop run.  A chunk of URL entries is ~1 ms of work; sleeping as long
    after each leaves a busy proxy most of the CPU while a reload builds its index (the
    build takes ~0.1 s longer per 50k entries)."""
    time.sleep(0.001)


def _job(spec: ListSpec, list_id: int) -> ListJob:
    return ListJob(spec.name, 1 << list_id, spec.format, tuple(str(s) for s in spec.sources),
                   spec.expressions, spec.statutory)


def _read_statutory(spec: ListSpec, bit: int, exact: UrlIndex) -> CompiledList:
    """A statutory list, read in-process into the exact index: a hit is never a hash
    coincidence, and such lists are small (thousands of entries).  Its rules are loose:
    they also match the harmless variants of each URL (see urlindex.loose_path)."""
    contents = read_list(_job(spec, bit.bit_length() - 1))
    for source in contents.sources:
        exact.add_many(((domain, "/", bit) for domain in source.domains), loose=True)
        exact.add_many(((host, prefix, bit) for host, prefix in source.urls), loose=True)
    expressions = [(s.path, s.expressions) for s in contents.sources
                   if spec.expressions and s.expressions]
    return CompiledList(contents.status, contents.messages, expressions)


def _report_list(spec: ListSpec, item: CompiledList, policy: Policy,
                 problems: list[Problem], complete: bool = False) -> None:
    """Statutory lists must load: their problems are errors; others are warnings, but when
    `complete` a failed source is an error too.  Each at the line naming its source."""
    failed = complete and bool(item.status.failed_sources)
    lines = _source_lines(policy, spec) if item.messages else {}
    for message in item.messages:
        line = _message_line(spec, message, lines)
        problems.append(Problem(str(policy.path), line, _name_url_source(spec, message),
                                warning=not (spec.statutory or failed)))
    if item.status.skipped:
        problems.append(Problem(str(policy.path), spec.line, f"lists.{spec.name}: skipped "
                                f"{item.status.skipped} bad lines, e.g. "
                                f"{item.status.skipped_examples[0]}", warning=True))


def _name_url_source(spec: ListSpec, message: str) -> str:
    """A message about a URL source's last good copy names the URL, not the copy's hashed
    path, and says what to do when there is no copy yet."""
    for source in spec.remote:
        for copy in source.copies():
            head = f"lists.{spec.name}: source {copy}"
            rest = message[len(head):]
            if not message.startswith(head) or rest[:1] not in (":", " ", ""):
                continue
            what = f"{source.url} (UT1 category {copy.name})" if source.is_ut1 else source.url
            if rest == ": no such file or directory":
                return (f"lists.{spec.name}: source {what}: no good copy yet (never "
                        f"downloaded, or every download refused): run `webpolicy update`; "
                        f"the copy is kept at {copy}")
            return f"lists.{spec.name}: source {what} (copy {copy}){rest}"
    return message


def _source_lines(policy: Policy, spec: ListSpec) -> dict[str, int]:
    """str(source) -> the policy line naming it, read again from the YAML (the model keeps
    only the list's line); {} if that fails.  Only when a list has something to report."""
    try:
        root, _ = load_document(policy.path)
        lists = _mapping_value(root, "lists")
        sources = _mapping_value(_mapping_value(lists, spec.name), "sources")
    except Exception:  # noqa: BLE001 - a line number is a nicety; the message still goes out
        return {}
    items = sources.value if isinstance(sources, yaml.SequenceNode) else [sources]
    return {str(path): node.start_mark.line + 1
            for path, node in zip(spec.sources, items) if isinstance(node, yaml.Node)}


def _mapping_value(node: object, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if getattr(key_node, "value", None) == key:
                return value
    return None


def _message_line(spec: ListSpec, message: str, lines: dict[str, int]) -> int | None:
    """The line of the source a message is about ("lists.x: source <path>..."), else the
    list's line."""
    head = f"lists.{spec.name}: source "
    named = [source for source in lines if message.startswith(head + source)]
    return lines[max(named, key=len)] if named else spec.line


def _compile_expressions(sources: list[tuple[str, list[str]]],
                         problems: list[Problem]) -> re.Pattern | None:
    """One pattern for a list's UT1 expressions ((source path, expressions) pairs)."""
    patterns = []
    for path, source_expressions in sources:
        for expression in source_expressions:
            try:
                re.compile(expression)
            except re.error as exc:
                problems.append(Problem(path, None, f"bad expression '{expression[:60]}': "
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
    either path is a prefix of the other, the rule's path taken in the entries' loose form.
    """
    statutory = _mask(i for i, s in enumerate(specs) if s.statutory)
    entries = [(h, p, b) for h, p, b in exact.entries() if b & statutory]
    for rule in policy.allow:
        try:
            url = canonical_url(rule.text)
        except ValueError:
            continue
        path = loose_path(url.path)
        for host, prefix, bits in entries:
            if _overlap(url.host, path, host, prefix.partition("?")[0]):
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


__all__ = ["Engine", "ListStatus", "ListHit", "ProfileRules", "build_engine", "load_engine",
           "host_suffixes", "DENY", "ALLOW", "SELFTEST_SUFFIX", "selftest_host",
           "is_selftest_host"]
