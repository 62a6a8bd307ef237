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

from mitmproxy import http

from webpolicy.engine import searchterms
from webpolicy.engine.decision import ACTION_RANK, NO_POLICY, Decision, decide
from webpolicy.engine.watchlist import RecentHits, WatchHit, Watchlist
from webpolicy.lists.canonical import CanonicalURL, from_parts
from webpolicy.proxy.flows import client_ip, request_hosts
from webpolicy.proxy.gate import Gate
from webpolicy.safeguarding.events import RequestFacts

log = logging.getLogger("webpolicy")


class RequestFilter:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.watchlist = Watchlist()              # compiled with each policy, swapped whole
        self._recent_hits = RecentHits()          # flagged suggestions, one per keystroke

    def filter(self, flow: http.HTTPFlow) -> tuple[str, ...] | None:
        """The decision, its record and the block page; returns the canonical hosts decided
        (None if none could be), so the stages need not parse them again."""
        gate = self.gate
        started = time.perf_counter()
        client = client_ip(flow)
        user = gate.user(flow)
        decision, url, host, decided_hosts = self._decide(flow, client, user)
        gate.metrics.observe(decision.profile, decision.action, time.perf_counter() - started)
        search, watch = self._search(flow, url) if url is not None and url.query else (None, None)
        if decision.action == "allow" and not decision.error:
            if watch is None or self._repeated_suggestion(search, watch, client, user):
                return decided_hosts
        facts = RequestFacts(client, user, flow.request.method, url, host,
                             flow.request.headers.get("user-agent", ""),
                             search.term if search else None)
        event_id = gate.record(decision, facts, watch=watch)
        if decision.blocked:
            gate.block(flow, decision, event_id, url, host)
        return decided_hosts

    def _decide(self, flow: http.HTTPFlow, client: str, user: str | None
                ) -> tuple[Decision, CanonicalURL | None, str, tuple[str, ...] | None]:
        """Decide on the host actually requested (Host / :authority) and the connection's
        host.  Returns the decision, the URL it was made on, the Host as sent, and the
        canonical hosts decided."""
        engine = self.gate.engine
        request = flow.request
        host, connection_host = request_hosts(flow)
        if engine is None:
            return NO_POLICY, None, host, None
        try:
            url = from_parts(request.scheme, host, request.port, request.path)
            decision = decide(engine, url, client, user)
            if connection_host == host:
                return decision, url, host, (url.host,)
            other = from_parts(request.scheme, connection_host, request.port, request.path)
            decided = (url.host, other.host)
            if other.host != url.host and not decision.blocked:
                second = decide(engine, other, client, user)
                if _stricter(second, decision):
                    decision, url = second, other
            return decision, url, host, decided
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            return self.gate.failure(engine, client, user, exc), None, host, None

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


def _stricter(a: Decision, b: Decision) -> bool:
    return ACTION_RANK[a.action] > ACTION_RANK[b.action]
