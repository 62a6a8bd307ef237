"""Prometheus metrics for the gateway.

Label values come only from bounded, configuration-derived sets (profile, list, category,
action, result, channel): never a user, IP, host or URL, which would be personal data and an
unbounded series count.  A private registry keeps a reload of the add-on from tripping over
metrics registered by the previous instance.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

# Decisions take microseconds; the buckets reach up to the stall a reload must never cause.
LATENCY_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3, 0.02, 0.1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("webpolicy_requests", "Requests decided, by profile and action.",
                                ["profile", "action"], registry=r)
        self.blocks = Counter("webpolicy_blocks", "Blocked requests by profile, list and category.",
                              ["profile", "list", "category"], registry=r)
        self.decision_seconds = Histogram("webpolicy_decision_seconds",
                                          "Time to decide one request.", buckets=LATENCY_BUCKETS,
                                          registry=r)
        self.fail_closed = Counter("webpolicy_fail_closed",
                                   "Requests refused because the filter could not decide.",
                                   ["profile"], registry=r)
        self.filter_errors = Counter("webpolicy_filter_errors",
                                     "Errors while deciding (each fails closed or, for profiles "
                                     "with on_error: allow, is logged).", registry=r)
        self.list_entries = Gauge("webpolicy_list_entries", "Entries loaded per list.", ["list"],
                                  registry=r)
        self.list_skipped = Gauge("webpolicy_list_skipped_lines",
                                  "Lines skipped as invalid per list.", ["list"], registry=r)
        self.list_available = Gauge("webpolicy_list_available",
                                    "1 if the list loaded, 0 if it could not be.", ["list"],
                                    registry=r)
        self.list_load_failures = Counter("webpolicy_list_load_failures",
                                          "Sources of a list that failed to load.", ["list"],
                                          registry=r)
        self.reloads = Counter("webpolicy_policy_reloads", "Policy loads and reloads by result.",
                               ["result"], registry=r)
        self.last_reload = Gauge("webpolicy_policy_last_reload_success_timestamp_seconds",
                                 "When the policy in force was loaded.", registry=r)
        self.policy_info = Info("webpolicy_policy", "The policy version in force.", registry=r)
        self.log_write_errors = Counter("webpolicy_log_write_errors",
                                        "Safeguarding log records that could not be written.",
                                        registry=r)
        self.alerts = Counter("webpolicy_alerts", "Alerts by channel and result.",
                              ["channel", "result"], registry=r)
        self.watchlist_hits = Counter("webpolicy_watchlist_hits",
                                      "Search terms matching the watchlist, by category.",
                                      ["category"], registry=r)
        self.passthrough_refused = Counter("webpolicy_connections_refused",
                                           "Connections refused before any HTTP request "
                                           "(pass-through, CONNECT rules).", ["profile", "reason"],
                                           registry=r)
        self._request_children: dict[tuple[str, str], Counter] = {}
        self._server = None

    def observe(self, profile: str, action: str, seconds: float) -> None:
        """Per request: cached label children keep this to about a microsecond."""
        child = self._request_children.get((profile, action))
        if child is None:
            child = self._request_children[(profile, action)] = self.requests.labels(profile, action)
        child.inc()
        self.decision_seconds.observe(seconds)

    def policy_loaded(self, engine, result: str = "success") -> None:
        self.reloads.labels(result).inc()
        self.last_reload.set(time.time())
        self.policy_info.info({"version": engine.version})
        for name, status in engine.status.items():
            self.list_entries.labels(name).set(status.entries)
            self.list_skipped.labels(name).set(status.skipped)
            self.list_available.labels(name).set(1 if status.available else 0)
            if status.failed_sources:
                self.list_load_failures.labels(name).inc(len(status.failed_sources))

    def serve(self, host: str, port: int) -> None:
        """Start the /metrics endpoint; a port in use raises OSError with a clear message."""
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
