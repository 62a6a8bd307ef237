"""Prometheus metrics for the gateway, and the HTTP endpoint Prometheus scrapes.

Label values come only from bounded, configuration-derived sets (profile, list, category,
action, result, channel, stage): never a user, IP, host or URL, which would be personal data and
an unbounded series count.  A private registry keeps a reload of the add-on from tripping over
metrics registered by the previous instance.

Every series an alert rule watches is created at zero when the policy loads: `increase()` needs
a sample before the first event, or the first statutory hit after a restart would go unseen.
Names follow Prometheus conventions: prometheus-client adds `_total` to counters, durations are
in seconds, gauges name their unit.  monitoring/ holds the alert rules and dashboard that read
them; README.md ("Monitoring") says what each one means.

Workers (`webpolicy run --workers N`, docs/architecture.md "Workers"): each worker process
writes its counters into prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR, set
by the supervisor) and serves nothing; the supervisor serves one endpoint that sums them
(monitoring/workers.py).  Every gauge says how workers combine (`multiprocess_mode`, ignored by
a single process): live workers only, the lowest of a "1 if good" flag, the highest of a size.
Custom collectors are not read from those files, so a worker counts requests with
prometheus-client's Counter and Histogram instead of RequestStats (about ten times the cost:
a lock and an mmap write per value, still under 1% of a request), and the policy version is a
gauge instead of an Info.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from webpolicy.lists.remote import next_due, read_state

if TYPE_CHECKING:
    from webpolicy.engine.decision import Decision
    from webpolicy.engine.engine import Engine
    from webpolicy.lists.remote import Outcome, SourceState
    from webpolicy.policy.model import RemoteSource

log = logging.getLogger("webpolicy")

# The text format would add a `<name>_created` series beside every counter and histogram
# series, doubling the series count for a timestamp Prometheus 2 does not use.
disable_created_metrics()

ACTIONS = ("allow", "log", "block")
RELOAD_RESULTS = ("success", "failure")
# What became of a safeguarding alert (alerts.py): delivered, retrying, given up, not sent as a
# repeat within the window, or dropped (queue full, shutdown).  The rules watch failed|dropped.
ALERT_RESULTS = ("sent", "retry", "failed", "suppressed", "dropped")
REFUSAL_STAGES = ("connect", "tls", "tcp")  # where a connection that never became HTTP was refused

# A decision takes 5-30 us; the upper buckets catch event-loop stalls (a reload holding the GIL).
LATENCY_BUCKETS = (2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3, 0.025, 0.1, 0.5)


LOGIN_RESULTS = ("ok", "cached", "refused", "throttled", "unavailable", "kerberos",
                 "kerberos_refused", "stale")


class Metrics:
    """All webpolicy metrics on one private registry, plus the endpoint serving it.
    `shared`: a worker's, written to the multiprocess files the supervisor serves."""

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.registry = r = CollectorRegistry(auto_describe=True)
        if not shared:                     # a worker's would not reach the files
            ProcessCollector(registry=r)   # CPU, memory, open files: mitmdump runs on one core
            PlatformCollector(registry=r)
        self._traffic_metrics(r)
        self._list_metrics(r)
        self._policy_metrics(r)
        self._safeguarding_metrics(r)
        if not shared:                     # the supervisor shows the build of the workers
            Info("webpolicy_build", "The webpolicy and mitmproxy versions running.",
                 registry=r).info(build_labels())
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)
        self._lists: set[str] = set()
        self._event_counters: dict[tuple, tuple] = {}   # see _event_children
        self.endpoint = Endpoint(self.registry)

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the endpoint listens, if it does."""
        return self.endpoint.address

    def _traffic_metrics(self, r: CollectorRegistry) -> None:
        self.requests = SharedRequestStats(r) if self.shared else RequestStats(LATENCY_BUCKETS)
        if not self.shared:
            r.register(self.requests)
        self.blocks = Counter("webpolicy_blocks", "Requests and connections blocked by a list "
                              "(or the local deny rules), by profile, list and category.",
                              ["profile", "list", "category"], registry=r)
        self.statutory_blocks = Counter("webpolicy_statutory_blocks", "Blocks by a statutory "
                                        "list (CTIRU/IWF style); also counted in blocks.",
                                        ["profile", "list", "category"], registry=r)
        self.logged = Counter("webpolicy_logged_visits", "Visits allowed but recorded in the "
                              "safeguarding log because the list is log-only for the profile.",
                              ["profile", "list", "category"], registry=r)
        self.fail_closed = Counter("webpolicy_fail_closed", "Requests and connections refused "
                                   "because the filter could not decide (on_error: block).",
                                   ["profile"], registry=r)
        self.fail_open = Counter("webpolicy_fail_open", "Requests let through unfiltered, and "
                                 "logged, because the filter could not decide (on_error: allow).",
                                 ["profile"], registry=r)
        self.filter_errors = Counter("webpolicy_filter_errors", "Exceptions raised while "
                                     "deciding (each fails closed, or open and logged for "
                                     "on_error: allow profiles).", registry=r)
        self.connections_refused = Counter("webpolicy_connections_refused", "Connections "
                                           "refused before any HTTP request, by profile and "
                                           "stage (connect: CONNECT to a pass-through host, "
                                           "tls: by SNI, tcp: raw TCP in a tunnel).",
                                           ["profile", "stage"], registry=r)
        self.proxy_logins = Counter("webpolicy_proxy_logins", "Proxy logins checked against "
                                    "the directory, by result: ok (the directory said yes), "
                                    "cached (the same password within directory.cache_minutes, "
                                    "or a connection signed in by Kerberos), "
                                    "refused (wrong password, unknown or disabled account, no "
                                    "login), throttled (too many failures from the address), "
                                    "unavailable (the directory could not be asked: refused, "
                                    "fail closed), kerberos (a ticket checked: single sign-on), "
                                    "kerberos_refused (a Negotiate token refused), stale (the "
                                    "directory could not be asked, and a password it accepted "
                                    "earlier "
                                    "let an on_error: allow person in).", ["result"],
                                    registry=r)
        for result in LOGIN_RESULTS:
            self.proxy_logins.labels(result)

    def _list_metrics(self, r: CollectorRegistry) -> None:
        self.list_entries = Gauge("webpolicy_list_entries", "Entries loaded per list.", ["list"],
                                  registry=r, multiprocess_mode="livemax")
        self.list_skipped = Gauge("webpolicy_list_skipped_lines", "Lines skipped as invalid per "
                                  "list at the last load.", ["list"], registry=r,
                                  multiprocess_mode="livemax")
        self.list_available = Gauge("webpolicy_list_available", "1 if the list loaded, 0 if it "
                                    "could not (profiles that block it then fail closed).",
                                    ["list"], registry=r, multiprocess_mode="livemin")
        self.list_failed_sources = Gauge("webpolicy_list_failed_sources", "Sources of the list "
                                         "that were missing, unreadable or empty at the last "
                                         "load.", ["list"], registry=r,
                                         multiprocess_mode="livemax")
        self.list_load_failures = Counter("webpolicy_list_load_failures", "Source load failures "
                                          "per list, added up over every policy load.", ["list"],
                                          registry=r)
        # URL sources (lists/remote.py): labelled by list name, never by URL.
        self.source_freshness = SourceFreshness()
        r.register(self.source_freshness)
        self.source_refresh_failures = Counter(
            "webpolicy_list_source_refresh_failures", "Downloads of a list's URL sources that "
            "failed or were refused (the last good copy stayed in force).", ["list"], registry=r)

    def _policy_metrics(self, r: CollectorRegistry) -> None:
        self.reloads = Counter("webpolicy_policy_reloads", "Policy loads and reloads by result "
                               "(success, failure).", ["result"], registry=r)
        self.last_reload_ok = Gauge("webpolicy_policy_last_reload_successful", "1 if the last "
                                    "load or reload of the policy succeeded, 0 if it was refused "
                                    "(the previous policy stays in force).", registry=r,
                                    multiprocess_mode="livemin")
        self.last_reload = Gauge("webpolicy_policy_last_reload_success_timestamp_seconds",
                                 "When the policy in force was loaded (Unix time).", registry=r,
                                 multiprocess_mode="livemin")
        if self.shared:                    # an Info is not shared; 1 per version in force
            self.policy_info = PolicyVersionGauge(r)
        else:
            self.policy_info = Info("webpolicy_policy", "The version of the policy in force.",
                                    registry=r)

    def _safeguarding_metrics(self, r: CollectorRegistry) -> None:
        self.log_write_errors = Counter("webpolicy_log_write_errors", "Safeguarding log records "
                                        "that could not be written.", registry=r)
        # Used by the safeguarding alerts: channel email or webhook, result in ALERT_RESULTS.
        self.alerts = Counter("webpolicy_alerts", "Safeguarding alerts by channel (email, "
                              "webhook) and result (sent, retry, failed, suppressed, dropped).",
                              ["channel", "result"], registry=r)
        self.watchlist_hits = Counter("webpolicy_watchlist_hits", "Searches matching the search "
                                      "watchlist, by category.", ["category"], registry=r)

    # -- per request ----------------------------------------------------------------------

    def observe(self, profile: str, action: str, seconds: float) -> None:
        """Per request (see RequestStats)."""
        self.requests.observe(profile, action, seconds)

    def event(self, decision: Decision) -> None:
        """Count a decision that goes to the safeguarding log (not a plain allow)."""
        if decision.error:
            counter = self.fail_closed if decision.blocked else self.fail_open
            counter.labels(decision.profile).inc()
            return
        if decision.list is None or decision.action == "allow":
            return
        key = (decision.action, decision.statutory, decision.profile, decision.list,
               decision.category or "")
        counters = self._event_counters.get(key) or self._event_children(key)
        for counter in counters:
            counter.inc()

    def _event_children(self, key: tuple) -> tuple:
        """The labelled counters one kind of event adds to, found once: labels() validates
        and looks its arguments up under a lock, a third of a blocked request's record."""
        action, statutory, *labels = key
        if action == "log":
            counters = (self.logged.labels(*labels),)
        else:
            counters = (self.blocks.labels(*labels),)
            if statutory:
                counters += (self.statutory_blocks.labels(*labels),)
        self._event_counters[key] = counters
        return counters

    def connection_refused(self, profile: str, stage: str) -> None:
        self.connections_refused.labels(profile, stage).inc()

    # -- policy loads ---------------------------------------------------------------------

    def policy_loaded(self, engine: Engine) -> None:
        """A policy is in force: record the reload, list sizes and zero series for alerts."""
        self.reloads.labels("success").inc()
        self.last_reload_ok.set(1)
        self.last_reload.set(time.time())
        self.policy_info.info({"version": engine.version})
        self._list_status(engine)
        self._zero_series(engine)
        # The policy's URL sources as their sidecars say (a few small files), until the
        # Refresher's next report.
        self.source_freshness.update([(s, read_state(s)) for s in engine.policy.remote_sources()])

    def list_sources(self, states: list[tuple[RemoteSource, SourceState]],
                     outcomes: list[Outcome]) -> None:
        """The Refresher's report (lists/remote.py): every URL source's state, and what the
        downloads of its last pass came to."""
        self.source_freshness.update(states)
        for outcome in outcomes:
            if outcome.result in ("failed", "refused"):
                self.source_refresh_failures.labels(outcome.source.list).inc()

    def reload_failed(self) -> None:
        self.reloads.labels("failure").inc()
        self.last_reload_ok.set(0)

    def _list_status(self, engine: Engine) -> None:
        for name, status in engine.status.items():
            self.list_entries.labels(name).set(status.entries)
            self.list_skipped.labels(name).set(status.skipped)
            self.list_available.labels(name).set(1 if status.available else 0)
            self.list_failed_sources.labels(name).set(len(status.failed_sources))
            self.list_load_failures.labels(name).inc(len(status.failed_sources))
        for gone in self._lists - engine.status.keys() if not self.shared else ():
            # a list removed from the policy (a worker cannot remove a shared series: it
            # stays, with its last values, until the gateway restarts)
            for gauge in (self.list_entries, self.list_skipped, self.list_available,
                          self.list_failed_sources):
                gauge.remove(gone)
        self._lists = set(engine.status)

    def _zero_series(self, engine: Engine) -> None:
        """Create, at zero, every series the policy can produce (labels() alone does that)."""
        policy = engine.policy
        specs = {spec.name: spec for spec in engine.list_specs}
        statutory = [s.name for s in engine.list_specs if s.statutory]
        local = ["deny"] if policy.deny else []
        for name, profile in policy.profiles.items():
            for action in ACTIONS:
                self.requests.add_series(name, action)
            for list_name in dict.fromkeys([*statutory, *local, *profile.block]):
                self.blocks.labels(name, list_name, specs[list_name].category)
            for list_name in statutory:
                self.statutory_blocks.labels(name, list_name, specs[list_name].category)
            for list_name in profile.log:
                self.logged.labels(name, list_name, specs[list_name].category)
            (self.fail_closed if profile.blocks else self.fail_open).labels(name)
            for stage in REFUSAL_STAGES:
                self.connections_refused.labels(name, stage)
        for spec in policy.lists.values():
            if spec.remote:
                self.source_refresh_failures.labels(spec.name)
        for spec in policy.watchlist.values():
            self.watchlist_hits.labels(spec.category)
        alerts = policy.alerts
        for channel, configured in (("email", alerts.email), ("webhook", alerts.webhook)):
            if configured:
                for result in ALERT_RESULTS:
                    self.alerts.labels(channel, result)

    # -- the endpoint ---------------------------------------------------------------------

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on host:port (see Endpoint.serve)."""
        self.endpoint.serve(host, port)

    def stop(self) -> None:
        self.endpoint.stop()


class Endpoint:
    """The HTTP endpoint Prometheus scrapes, serving one registry from its own thread."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server = None
        self._thread = None
        self.address: tuple[str, int] | None = None   # where it listens, if it does

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on host:port, moving the endpoint if it listens elsewhere.

        Raises OSError naming the address and what to change when it cannot bind (a port
        already in use, a privileged port, an address this machine does not have).
        """
        if self.address == (host, port):
            return
        self.stop()
        try:
            self._server, self._thread = start_http_server(port, addr=host,
                                                           registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve Prometheus metrics on {_show(host, port)}: "
                          f"{exc.strerror or exc}. Set metrics.listen in policy.yaml to a free "
                          "host:port, or metrics.enabled: false") from exc
        self.address = (host, port)
        log.info("webpolicy: Prometheus metrics at http://%s/metrics",
                 _show(host, self._server.server_address[1]))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = self._thread = None
        self.address = None


class SharedRequestStats:
    """RequestStats' two series with prometheus-client's own types, which a worker writes to
    the multiprocess files (a custom collector's numbers would not reach them)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counter = Counter("webpolicy_requests", "HTTP requests decided, by profile and "
                                "action (allow, log, block).", ["profile", "action"],
                                registry=registry)
        self._latency = Histogram("webpolicy_decision_seconds", "Time to identify the client "
                                  "and decide one HTTP request.", buckets=LATENCY_BUCKETS,
                                  registry=registry)
        self._children: dict[tuple[str, str], Counter] = {}

    def add_series(self, profile: str, action: str) -> None:
        self._child(profile, action)

    def observe(self, profile: str, action: str, seconds: float) -> None:
        (self._children.get((profile, action)) or self._child(profile, action)).inc()
        self._latency.observe(seconds)

    def _child(self, profile: str, action: str) -> Counter:
        child = self._children[(profile, action)] = self._counter.labels(profile, action)
        return child


class PolicyVersionGauge:
    """webpolicy_policy_info{version} as a gauge workers share: 1 for each version some live
    worker has in force, 0 for a version replaced (during a reload both may show 1)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._gauge = Gauge("webpolicy_policy_info", "The version of the policy in force.",
                            ["version"], registry=registry, multiprocess_mode="livemax")
        self._current: str | None = None

    def info(self, labels: dict[str, str]) -> None:
        version = labels["version"]
        if self._current is not None and self._current != version:
            self._gauge.labels(self._current).set(0)
        self._gauge.labels(version).set(1)
        self._current = version


def build_labels() -> dict[str, str]:
    """webpolicy_build_info's labels."""
    return {"version": _version("webpolicy"), "mitmproxy": _version("mitmproxy")}


class RequestStats(Collector):
    """webpolicy_requests_total and webpolicy_decision_seconds, the two series every request
    updates, kept as plain numbers and turned into metric families only when scraped.

    prometheus-client's Counter.inc and Histogram.observe take a lock each, and the histogram
    walks its buckets in Python: together ~2 us per request, against ~0.3 us here.  Only the
    event loop thread writes; a scrape (another thread) reads copies, so at worst it sees one
    request in the count and not yet in the sum, which the next scrape puts right.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._bounds = buckets
        self._counts: dict[tuple[str, str], int] = {}
        self._buckets = [0] * (len(buckets) + 1)       # per bucket, not cumulative; last: +Inf
        self._sum = 0.0

    def add_series(self, profile: str, action: str) -> None:
        """Show the series at zero before its first request (alert rules need a sample)."""
        self._counts.setdefault((profile, action), 0)

    def observe(self, profile: str, action: str, seconds: float) -> None:
        key = (profile, action)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        self._buckets[bisect_left(self._bounds, seconds)] += 1     # le: seconds <= bound
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("webpolicy_requests", "HTTP requests decided, by profile "
                                       "and action (allow, log, block).",
                                       labels=["profile", "action"])
        for (profile, action), count in list(self._counts.items()):
            requests.add_metric([profile, action], count)
        yield requests
        cumulative, total = [], 0
        for bound, count in zip((*map(str, self._bounds), "+Inf"), list(self._buckets)):
            total += count
            cumulative.append((bound, total))
        latency = HistogramMetricFamily("webpolicy_decision_seconds", "Time to identify the "
                                        "client and decide one HTTP request.")
        latency.add_metric([], cumulative, sum_value=self._sum)
        yield latency


class SourceFreshness(Collector):
    """How current each list with URL sources is, computed when scraped (the age grows
    between downloads).  Per list, over its URL sources: the oldest last success, its age
    (+Inf if a source never downloaded), the age at which the list counts as stale (the
    smallest max_age), how many sources' last attempt failed or was refused, the most
    failures in a row of any (the backoff grows with it) and the soonest next attempt."""

    def __init__(self) -> None:
        self._lists: dict[str, tuple[bool, float | None, float, int, int, float]] = {}

    def update(self, states: list[tuple[RemoteSource, SourceState]]) -> None:
        lists: dict[str, tuple[bool, float | None, float, int, int, float]] = {}
        for source, state in states:
            statutory, oldest, max_age, failing, in_a_row, soonest = lists.get(
                source.list, (source.statutory, float("inf"), float("inf"), 0, 0,
                              float("inf")))
            success = state.last_success
            if oldest is not None:
                oldest = None if success is None else min(oldest, success)
            lists[source.list] = (statutory, oldest, min(max_age, source.max_age),
                                  failing + (1 if state.failures else 0),
                                  max(in_a_row, state.failures),
                                  min(soonest, next_due(source, state)))
        self._lists = lists

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        success = GaugeMetricFamily(
            "webpolicy_list_source_last_success_timestamp_seconds", "When the oldest of the "
            "list's URL sources last downloaded successfully (Unix time; 0: never).",
            labels=["list"])
        age = GaugeMetricFamily(
            "webpolicy_list_source_age_seconds", "Seconds since the oldest of the list's URL "
            "sources last downloaded successfully (+Inf: never).", labels=["list", "statutory"])
        max_age = GaugeMetricFamily(
            "webpolicy_list_source_max_age_seconds", "Older than this the list is stale "
            "(max_age in policy.yaml).", labels=["list", "statutory"])
        failing = GaugeMetricFamily(
            "webpolicy_list_source_failing", "URL sources of the list whose last download "
            "failed or was refused.", labels=["list"])
        in_a_row = GaugeMetricFamily(
            "webpolicy_list_source_consecutive_failures", "The most failed or refused "
            "downloads in a row of any of the list's URL sources (the retry backoff grows "
            "with it; 0 after a success).", labels=["list"])
        next_attempt = GaugeMetricFamily(
            "webpolicy_list_source_next_attempt_timestamp_seconds", "When the next download "
            "of the list's URL sources is due (Unix time; after failures, the backoff's).",
            labels=["list"])
        for name, (statutory, oldest, limit, failed, row, soonest) in list(self._lists.items()):
            flag = "true" if statutory else "false"
            success.add_metric([name], oldest or 0.0)
            age.add_metric([name, flag], float("inf") if oldest is None else max(0.0, now - oldest))
            max_age.add_metric([name, flag], limit)
            failing.add_metric([name], failed)
            in_a_row.add_metric([name], row)
            next_attempt.add_metric([name], soonest)
        yield from (success, age, max_age, failing, in_a_row, next_attempt)


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"
