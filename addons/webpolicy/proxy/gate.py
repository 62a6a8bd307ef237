"""The gate: what every hook shares, and the one way a decision is made, recorded and enforced.

The add-on's hooks (requests.py, connections.py) and its stages (stages/) all decide through
one Gate, which holds the engine in force, knows who each client connection is, and turns a
decision into a safeguarding record, metrics and, when it blocks, the block page.  It imports
neither the add-on nor the stages: they are given a Gate (the stages see it only through the
narrow `StageHost` protocol in stages/__init__.py).

Every method that decides fails closed: an exception becomes the profile's `on_error`
decision (a raised hook would make mitmproxy forward the request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable

from mitmproxy import http

from webpolicy.engine import circumvention
from webpolicy.engine.decision import NO_POLICY, Decision, decide, unavailable
from webpolicy.engine.engine import Engine, is_selftest_host
from webpolicy.engine.watchlist import WatchHit
from webpolicy.lists import ut1
from webpolicy.lists.canonical import CanonicalURL, canonical_host, from_parts
from webpolicy.monitoring.metrics import Metrics
from webpolicy.policy.model import BlockPageSettings, Profile
from webpolicy.proxy import blockpage
from webpolicy.proxy.flows import client_ip, make_response, request_hosts
from webpolicy.safeguarding.alerts import Alerter
from webpolicy.safeguarding.events import RequestFacts, event_action, make_record, new_event_id
from webpolicy.safeguarding.logwriter import (
    DURABLE_TIMEOUT,
    LogWriteError,
    LogWriter,
    must_be_durable,
)
from webpolicy.safeguarding.reviewrequests import ReviewTokens, Ticket

log = logging.getLogger("webpolicy")

_DEFAULT_PAGE = BlockPageSettings()

# What "the gateway itself" is, as addresses a client may write (the `webpolicy_own_networks`
# option; the end-to-end tests narrow 127.0.0.0/8 to 127.0.0.0/24: their sites stand for the
# internet on 127.0.1.x).
DEFAULT_OWN_NETWORKS = "127.0.0.0/8,::1/128,0.0.0.0/8,::/128"
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_networks(text: str) -> Networks:
    """'127.0.0.0/8,::1/128' -> networks; ValueError names the entry that is not one."""
    networks = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"'{entry}' is not an IP network") from None
    return tuple(networks)


OWN_NETWORKS = parse_networks(DEFAULT_OWN_NETWORKS)

# flow.metadata key of the user signed in through the directory (signin.py): the name and its
# groups, never the password.
SIGNED_IN_USER = "webpolicy_user"


class Gate:
    def __init__(self, metrics: Metrics) -> None:
        self.engine: Engine | None = None          # swapped whole on reload (addon.py)
        self.metrics = metrics
        self.log_writer: LogWriter | None = None
        self.alerter: Alerter | None = None
        self.users: dict[str, str] = {}            # client connection id -> proxy-auth user
        # references of statutory/critical records not yet confirmed on disk
        self._durable: dict[str, concurrent.futures.Future[None]] = {}
        # Addresses that are the gateway itself (chokepoint.py; option webpolicy_own_networks)
        self.own_networks: Networks = OWN_NETWORKS
        # Signs the block pages' "ask for a review" forms (key in memory only; reviewform.py;
        # workers share the supervisor's: addon.py)
        self.review_tokens = ReviewTokens()
        # The sign-in page's (signinpage.py), set by the add-on: whether a client connection
        # still has to sign in (TLS hooks), and the block page's sign-out line.
        self.sign_in_waiting: Callable[[object], bool] = lambda client: False
        self.sign_out_link: Callable[[http.HTTPFlow], bytes] = lambda flow: b""

    # -- who ------------------------------------------------------------------------------

    def user(self, flow: http.HTTPFlow) -> str | None:
        signed_in = flow.metadata.get(SIGNED_IN_USER)     # a directory login (signin.py)
        if signed_in:
            return signed_in
        auth = flow.metadata.get("proxyauth")
        if auth:
            return auth[0]
        return self.users.get(flow.client_conn.id)

    def identify(self, flow: http.HTTPFlow) -> tuple[Profile, str] | None:
        """The client's profile and why; None until a policy is loaded."""
        engine = self.engine
        if engine is None:
            return None
        rules, reason = engine.identify(self.user(flow), client_ip(flow))
        return rules.profile, reason

    # -- deciding -------------------------------------------------------------------------

    def decide_host(self, host: str, client: str, user: str | None) -> Decision:
        """The decision for a bare host (a CONNECT, an SNI, a raw TCP destination)."""
        engine = self.engine
        if engine is None:
            return NO_POLICY
        try:
            return decide(engine, CanonicalURL("", canonical_host(host), None, "/", ""),
                          client, user)
        except Exception as exc:  # noqa: BLE001
            return self.failure(engine, client, user, exc)

    def failure(self, engine: Engine, client: str, user: str | None,
                exc: BaseException) -> Decision:
        """Deciding raised: the profile's on_error (fail closed for profiles that block)."""
        self.metrics.filter_errors.inc()
        # WARNING, not ERROR: mitmproxy exits on any ERROR logged while it is starting up.
        log.warning("webpolicy: cannot decide, failing closed for profiles that block: %r", exc)
        try:
            rules, reason = engine.identify(user, client)
            return unavailable(rules.profile.name, reason, engine.version, rules.profile.on_error)
        except Exception:  # noqa: BLE001
            return unavailable(engine.policy.default_profile, "default", engine.version)

    def is_passthrough(self, host: str) -> bool:
        engine = self.engine
        if engine is None:
            return False
        try:
            return engine.is_passthrough(canonical_host(host))
        except ValueError:
            return False

    def circumvention_refusal(self, flow: http.HTTPFlow, host: str,
                              port: int | None) -> Decision | None:
        """The client's connect rules for `host` (port None: a plain request, where only the
        IP-literal rule applies).  An address listed under `allow:` may be used."""
        engine = self.engine
        if engine is None:
            return None                    # nothing is allowed without a policy anyway
        client = client_ip(flow)
        user = self.user(flow)
        try:
            rules, reason = engine.identify(user, client)
            connect = rules.profile.connect
            violation = (circumvention.ip_literal_violation(host, connect) if port is None
                         else circumvention.connect_violation(host, port, connect))
            if violation is None:
                return None
            if violation.rule == circumvention.IP_LITERAL and \
                    self.decide_host(host, client, user).list == "allow":
                return None
            return circumvention.refusal(violation, rules.profile.name, reason, engine.version)
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            return self.failure(engine, client, user, exc)

    def violation_decision(self, violation: circumvention.Violation, client: str,
                           user: str | None) -> Decision:
        engine = self.engine
        if engine is None:
            return NO_POLICY
        try:
            rules, reason = engine.identify(user, client)
            return circumvention.refusal(violation, rules.profile.name, reason, engine.version)
        except Exception as exc:  # noqa: BLE001 - fail closed, never open
            return self.failure(engine, client, user, exc)

    # -- recording and enforcing ----------------------------------------------------------

    def record(self, decision: Decision, facts: RequestFacts, passthrough: bool = False,
               watch: WatchHit | None = None) -> str:
        """The safeguarding record (and alert, and metrics) of one event; its reference.
        A `webpolicy selftest` request is recorded (the log shows the test was run) but
        neither counted nor alerted: testing the filter must not page the DSLs."""
        event_id = new_event_id()
        engine = self.engine
        selftest = facts.url is not None and is_selftest_host(facts.url.host)
        if not selftest:
            self.metrics.event(decision)
        if watch is not None:
            self.metrics.watchlist_hits.labels(watch.category).inc()
        record = make_record(event_id, event_action(decision, passthrough, watch is not None),
                             decision, facts, engine.device(facts.client_ip) if engine else "",
                             engine.policy.logging.keep_query if engine else False, watch=watch)
        if self.log_writer is not None:
            if decision.blocked and must_be_durable(record):
                self._write_durable(event_id, record)
            else:
                self.log_writer.write(record)
        if self.alerter is not None and not selftest:
            self.alerter.offer(record)
        return event_id

    def _write_durable(self, event_id: str, record: dict) -> None:
        """Hand a statutory or critical record to the writer, which fsyncs it and resolves the
        future; `on_disk` lets the hook that serves the block page wait for it."""
        future = self.log_writer.submit_durable(record)
        self._durable[event_id] = future
        future.add_done_callback(lambda _done, key=event_id: self._durable.pop(key, None))

    def on_disk(self, event_id: str | None) -> Awaitable[None] | None:
        """None when nothing need be waited for; else an awaitable that returns once the
        record is written and fsync'd.  A hook returns it and mitmproxy awaits it before the
        block page goes out, serving other flows meanwhile (never blocking the loop)."""
        future = self._durable.get(event_id or "")
        if future is None or future.done():
            return None
        return self._wait_on_disk(event_id, future)

    @staticmethod
    async def _wait_on_disk(event_id: str, future: concurrent.futures.Future[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), DURABLE_TIMEOUT)
        except (LogWriteError, TimeoutError) as exc:   # filtering never waits on a failed disk
            log.error("webpolicy: record %s not confirmed on disk: %s", event_id, exc)

    def block(self, flow: http.HTTPFlow, decision: Decision, event_id: str,
              url: CanonicalURL | None, host: str) -> None:
        """Answer with the block page: the request goes no further."""
        settings = self.engine.policy.block_page if self.engine else None
        accept = flow.request.headers.get("accept", "")
        token = None
        if settings and "text/html" in accept and blockpage.offers_review(decision, settings):
            token = self.review_token(flow, decision, event_id, url.host if url else host)
        page = blockpage.render(decision, event_id, str(url) if url else host,
                                url.host if url else host, settings or _DEFAULT_PAGE,
                                accept, credit=self._credit(decision), review_token=token)
        body = page.body
        if page.content_type.startswith("text/html"):
            link = self.sign_out_link(flow)
            if link:
                body = body.replace(b"</body>", link + b"</body>", 1)
        flow.request.stream = False        # a streamed body must not reach the upstream
        flow.response = make_response(page.status, body, [
            (b"content-type", page.content_type.encode()),
            (b"cache-control", b"no-store"),
            (b"x-webpolicy-reference", event_id.encode()),
        ])

    def review_token(self, flow: http.HTTPFlow, decision: Decision, event_id: str,
                     host: str) -> str:
        """The block page form's token: this reference, site and client, as identified now."""
        client = client_ip(flow)
        engine = self.engine
        return self.review_tokens.issue(Ticket(
            event_id, client, self.user(flow), (engine.device(client) if engine else "") or None,
            decision.profile, decision.profile_reason, host, decision.list, decision.category,
            decision.policy_version, time.time()))

    def _credit(self, decision: Decision) -> str:
        """UT1's attribution (CC BY-SA 4.0) when the blocking list is downloaded from UT1."""
        spec = self.engine.policy.lists.get(decision.list or "") if self.engine else None
        if spec is not None and any(source.is_ut1 for source in spec.remote):
            return ut1.BLOCK_PAGE_CREDIT
        return ""

    def refuse_request(self, flow: http.HTTPFlow, decision: Decision) -> None:
        """Record a stage's decision and answer with the block page (or, for a profile with
        on_error: allow, only record it)."""
        request = flow.request
        host = request_hosts(flow)[0]
        try:
            url = from_parts(request.scheme, host, request.port, request.path)
        except ValueError:
            url = None
        facts = RequestFacts(client_ip(flow), self.user(flow), request.method, url, host,
                             request.headers.get("user-agent", ""))
        event_id = self.record(decision, facts)
        if decision.blocked:
            self.block(flow, decision, event_id, url, host)

    def stage_failed(self, flow: http.HTTPFlow, exc: BaseException) -> None:
        """A stage raised: fail closed for profiles that block, as for decide()."""
        engine = self.engine
        if engine is None:
            decision = NO_POLICY
        else:
            decision = self.failure(engine, client_ip(flow), self.user(flow), exc)
        self.refuse_request(flow, decision)
