"""HTTP requests: decide each one on every host it names, record it, block it.

Plain HTTP, intercepted HTTPS, HTTP/2 and WebSocket upgrades all arrive at `requestheaders`
before any upstream connection (the add-on runs mitmproxy with `connection_strategy=lazy`).
A request names two hosts: the Host header (or :authority) and the host of the connection
the client chose (CONNECT, SNI).  Both are decided and the stricter answer wins, so an
allowed CONNECT host carrying a blocked Host header (domain fronting) is blocked.  Searches
on the big engines are matched against the watchlist and recorded when they hit.
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

from mitmproxy import http

from webpolicy.engine import searchterms
from webpolicy.engine.decision import ACTION_RANK, NO_POLICY, Decision, decide
from webpolicy.engine.engine import Engine, is_selftest_host
from webpolicy.engine.watchlist import RecentHits, WatchHit, Watchlist
from webpolicy.lists.canonical import CanonicalURL, from_parts
from webpolicy.proxy import chokepoint
from webpolicy.proxy.flows import client_ip, make_response, request_hosts
from webpolicy.proxy.gate import Gate
from webpolicy.safeguarding.events import RequestFacts

log = logging.getLogger("webpolicy")


class Filtered(NamedTuple):
    """What deciding one request came to."""

    decision: Decision
    seconds: float                           # identifying the client and deciding
    hosts: tuple[str, ...] | None            # the canonical hosts decided


class RequestFilter:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.watchlist = Watchlist()              # compiled with each policy, swapped whole
        self._recent_hits = RecentHits()          # flagged suggestions, one per keystroke

    def filter(self, flow: http.HTTPFlow) -> Filtered:
        """The decision, its record and the block page.  Returns the decision and how long
        it took (the add-on counts the request once the stages have run: a stage may still
        refuse it) and the canonical hosts decided (None if none could be), so the stages
        need not parse them again."""
        gate = self.gate
        started = time.perf_counter()
        client = client_ip(flow)
        user = gate.user(flow)
        decision, url, host, decided_hosts = self._decide(flow, client, user)
        filtered = Filtered(decision, time.perf_counter() - started, decided_hosts)
        search, watch = self._search(flow, url) if url is not None and url.query else (None, None)
        if decision.action == "allow" and not decision.error:
            if watch is None or self._repeated_suggestion(search, watch, client, user):
                if url is not None and is_selftest_host(url.host):
                    _answer_selftest(flow, decision)
                return filtered
        facts = RequestFacts(client, user, flow.request.method, url, host,
                             flow.request.headers.get("user-agent", ""),
                             search.term if search else None)
        event_id = gate.record(decision, facts, watch=watch)
        if decision.blocked:
            gate.block(flow, decision, event_id, url, host)
        if url is not None and is_selftest_host(url.host):
            _answer_selftest(flow, decision)
        return filtered

    def _decide(self, flow: http.HTTPFlow, client: str, user: str | None
                ) -> tuple[Decision, CanonicalURL | None, str, tuple[str, ...] | None]:
        """Decide on the host actually requested (Host / :authority) and the connection's
        host.  Returns the decision, the URL it was made on, the host it names (as sent),
        and the canonical hosts decided."""
        engine = self.gate.engine
        host, connection_host = request_hosts(flow)
        if engine is None:
            return NO_POLICY, None, host, None
        try:
            return self._decide_names(engine, flow, host, connection_host, client, user)
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            return self.gate.failure(engine, client, user, exc), None, host, None

    def _decide_names(self, engine: Engine, flow: http.HTTPFlow, host: str,
                      connection_host: str, client: str, user: str | None
                      ) -> tuple[Decision, CanonicalURL | None, str, tuple[str, ...] | None]:
        """Every name that can be read is decided first, so statutory and deny rules apply
        even beside a name that cannot (garbage in Host next to an absolute URL); the
        profile's on_error only applies after that, and only if nothing read blocked.  The
        stricter decision wins; a name that mitmproxy would resolve to another name than the
        filter reads, or that writes the gateway itself, is refused (chokepoint.py)."""
        request = flow.request
        if connection_host == host:               # nearly every request: one name
            try:
                url = from_parts(request.scheme, host, request.port, request.path)
            except ValueError as exc:
                return self.gate.failure(engine, client, user, exc), None, host, None
            decision = (self._name_rule(engine, host, url.host, request.port, True, client, user)
                        or decide(engine, url, client, user))
            return decision, url, host, (url.host,)
        best: tuple[Decision, CanonicalURL | None, str] | None = None
        decided: list[str] = []
        unreadable: ValueError | None = None
        for name in (host, connection_host):
            try:
                url = from_parts(request.scheme, name, request.port, request.path)
            except ValueError as exc:
                unreadable = exc
                continue
            decided.append(url.host)
            if best is not None and best[0].blocked:
                continue                       # already refused: one block is enough
            decision = (self._name_rule(engine, name, url.host, request.port,
                                        name == connection_host, client, user)
                        or decide(engine, url, client, user))
            if best is None or _stricter(decision, best[0]):
                best = (decision, url, name)
        if unreadable is not None and (best is None or not best[0].blocked):
            failure = self.gate.failure(engine, client, user, unreadable)
            if best is None or _stricter(failure, best[0]) or best[0].action == failure.action:
                best = (failure, best[1] if best else None, best[2] if best else host)
        assert best is not None
        return best[0], best[1], best[2], tuple(decided) or None

    def _name_rule(self, engine: Engine, name: str, host: str, port: int, connected: bool,
                   client: str, user: str | None) -> Decision | None:
        """The choke point's rules for a name, applied here too so the client gets the block
        page rather than a connection error: one meaning per name, and (for the name the
        connection goes to) never the gateway itself unless listed under `allow:`."""
        if name.isascii() and (not connected or _plain_name(host)):
            return None                        # ~0.2 us: no IDN, not an address, not localhost
        rule, entry = None, ""
        mismatch = chokepoint.idna_mismatch(name)
        if mismatch is not None:
            rule, entry = chokepoint.IDNA_MISMATCH, mismatch
        elif connected and chokepoint.is_own_address(name, port, engine,
                                                     self.gate.own_networks):
            allowed = decide(engine, CanonicalURL("", host, None, "/", ""), client, user)
            if allowed.list == "allow":
                return None
            rule, entry = chokepoint.OWN_ADDRESS, f"{host}:{port}"
        if rule is None:
            return None
        rules, reason = engine.identify(user, client)
        return chokepoint.refusal(rule, entry, rules.profile.name, reason, engine.version)

    def _search(self, flow: http.HTTPFlow, url: CanonicalURL
                ) -> tuple[searchterms.SearchTerm | None, WatchHit | None]:
        """The search term (raw query: canonical form unescapes %26) and its watchlist hit.
        Monitoring only: an error here is logged and never changes the decision."""
        if searchterms.engine_for(url.host) is None:     # nearly every request: ~0.1 us
            return None, None
        try:
            search = searchterms.extract(url.host, url.path, flow.request.path.partition("?")[2])
            return (search, self.watchlist.match(search.term)) if search else (None, None)
        except Exception as exc:  # noqa: BLE001
            log.warning("webpolicy: search term extraction failed: %r", exc)
            return None, None

    def _repeated_suggestion(self, search: searchterms.SearchTerm, watch: WatchHit,
                             client: str, user: str | None) -> bool:
        return search.suggestion and self._recent_hits.repeated(
            (client, user, watch.term), time.monotonic())


def _plain_name(host: str) -> bool:
    """A canonical host that is a name and not localhost: its last character is a letter
    (a canonical IPv4 address ends with a digit) and it holds no ':' (IPv6)."""
    return host[-1:].isalpha() and ":" not in host and not host.endswith("localhost")


def _stricter(a: Decision, b: Decision) -> bool:
    return ACTION_RANK[a.action] > ACTION_RANK[b.action]


def _answer_selftest(flow: http.HTTPFlow, decision: Decision) -> None:
    """`webpolicy selftest` asked about a list's reserved name (engine.selftest_host): say
    what was decided, on the block page if it blocked, or on a small answer of the gateway's
    own if it did not (the name is .invalid: nothing upstream is ever asked)."""
    if flow.response is None:
        flow.response = make_response(200, b"webpolicy selftest: not blocked\n", [
            (b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")])
    headers = flow.response.headers
    headers["X-Webpolicy-Action"] = decision.action
    headers["X-Webpolicy-Profile"] = decision.profile
    headers["X-Webpolicy-List"] = decision.list or ""
