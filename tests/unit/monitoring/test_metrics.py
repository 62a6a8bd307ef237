"""metrics.py: names and labels, counting decisions, zero series for alerts, the endpoint."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.helpers import LIST_SPECS, REPO, policy_yaml
from webpolicy.engine.decision import Decision, decide, unavailable
from webpolicy.engine.engine import build_engine
from webpolicy.lists.canonical import canonical_url
from webpolicy.monitoring.metrics import Metrics
from webpolicy.policy.model import load_policy

# A URL source never downloaded: a failed source (its last good copy is missing).
SOCIAL = ("{category: Social networking, severity: low, "
          "sources: [social.txt, {url: 'https://lists.example/social.txt', refresh: 1h}]}")
POLICY = policy_yaml(
    version="m1",
    learner={"block": ["adult", "gambling"], "log": ["social"]},
    staff={"block": [], "log": ["adult"], "on_error": "allow"},
    users={"alice": "staff"},
    lists={**{name: LIST_SPECS[name] for name in ("ctiru", "adult", "gambling")},
           "social": SOCIAL},
    extra="deny: [denied.test]\n"
          "watchlist:\n  selfharm: {category: Self-harm, terms: [hurt myself]}\n"
          'alerts:\n  webhook: {url: "http://127.0.0.1:9/hook"}\n')

LISTS = {
    "ctiru.txt": "evil.test/propaganda\n",
    "adult.txt": "adult.test\nnot a domain!\n",
    "gambling.txt": "gambling.test\nbet.test\n",
    "social.txt": "social.test\n",
}

# The documented metric families (README "Monitoring"), as Prometheus sees them.
DOCUMENTED = {
    "webpolicy_requests_total", "webpolicy_decision_seconds", "webpolicy_blocks_total",
    "webpolicy_statutory_blocks_total", "webpolicy_logged_visits_total",
    "webpolicy_fail_closed_total", "webpolicy_fail_open_total", "webpolicy_filter_errors_total",
    "webpolicy_proxy_logins_total",
    "webpolicy_connections_refused_total", "webpolicy_list_entries",
    "webpolicy_list_skipped_lines", "webpolicy_list_available", "webpolicy_list_failed_sources",
    "webpolicy_list_load_failures_total", "webpolicy_policy_reloads_total",
    "webpolicy_policy_last_reload_successful",
    "webpolicy_policy_last_reload_success_timestamp_seconds", "webpolicy_policy_info",
    "webpolicy_build_info", "webpolicy_log_write_errors_total", "webpolicy_alerts_total",
    "webpolicy_watchlist_hits_total", "webpolicy_list_source_last_success_timestamp_seconds",
    "webpolicy_list_source_age_seconds", "webpolicy_list_source_max_age_seconds",
    "webpolicy_list_source_failing", "webpolicy_list_source_refresh_failures_total",
    "webpolicy_list_source_consecutive_failures",
    "webpolicy_list_source_next_attempt_timestamp_seconds",
}


def make_engine(directory: Path, policy: str = POLICY, lists: dict[str, str] | None = None):
    for name, text in (LISTS if lists is None else lists).items():
        (directory / name).write_text(text)
    (directory / "policy.yaml").write_text(policy)
    return build_engine(load_policy(directory / "policy.yaml"))


@pytest.fixture
def engine(tmp_path: Path):
    return make_engine(tmp_path)


@pytest.fixture
def metrics(engine) -> Metrics:
    m = Metrics()
    m.policy_loaded(engine)
    return m


def samples(metrics: Metrics) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, as Prometheus would parse it."""
    text = generate_latest(metrics.registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: Metrics, name: str, **labels) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_names_follow_prometheus_conventions(metrics):
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    names = {s.name for f in families.values() for s in f.samples}
    ours = {n for n in names if n.startswith("webpolicy_")}
    exposed = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
               for n in ours}
    assert DOCUMENTED <= exposed, DOCUMENTED - exposed
    assert exposed <= DOCUMENTED, f"undocumented metrics: {exposed - DOCUMENTED}"
    for family in families.values():
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
    assert not any(n.endswith("_created") for n in names), "created series double the count"
    assert "process_resident_memory_bytes" in names and "process_cpu_seconds_total" in names


def test_every_metric_is_explained_in_the_readme():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Monitoring\n", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in DOCUMENTED if f"`{name}`" not in section]
    assert not missing


def test_policy_load_sets_list_gauges_reload_status_and_version(metrics):
    assert value(metrics, "webpolicy_list_entries", list="adult") == 1
    assert value(metrics, "webpolicy_list_skipped_lines", list="adult") == 1
    assert value(metrics, "webpolicy_list_entries", list="gambling") == 2
    assert value(metrics, "webpolicy_list_available", list="social") == 1
    assert value(metrics, "webpolicy_list_failed_sources", list="social") == 1
    assert value(metrics, "webpolicy_list_failed_sources", list="adult") == 0
    assert value(metrics, "webpolicy_list_load_failures_total", list="social") == 1
    assert value(metrics, "webpolicy_policy_reloads_total", result="success") == 1
    assert value(metrics, "webpolicy_policy_reloads_total", result="failure") == 0
    assert value(metrics, "webpolicy_policy_last_reload_successful") == 1
    assert value(metrics, "webpolicy_policy_last_reload_success_timestamp_seconds") > 1.7e9
    assert value(metrics, "webpolicy_policy_info", version="m1") == 1


def test_every_series_an_alert_watches_exists_at_zero_before_any_event(metrics):
    """increase() needs a sample from before the first event, or the first hit goes unseen."""
    for profile in ("learner", "staff"):
        assert value(metrics, "webpolicy_statutory_blocks_total", profile=profile, list="ctiru",
                     category="Terrorist content") == 0
        for action in ("allow", "log", "block"):
            assert value(metrics, "webpolicy_requests_total", profile=profile, action=action) == 0
        assert value(metrics, "webpolicy_blocks_total", profile=profile, list="deny",
                     category="Blocked by local policy") == 0
    assert value(metrics, "webpolicy_blocks_total", profile="learner", list="gambling",
                 category="Gambling") == 0
    assert value(metrics, "webpolicy_blocks_total", profile="staff", list="gambling",
                 category="Gambling") is None            # staff never block gambling
    assert value(metrics, "webpolicy_logged_visits_total", profile="staff", list="adult",
                 category="Pornography") == 0
    assert value(metrics, "webpolicy_fail_closed_total", profile="learner") == 0
    assert value(metrics, "webpolicy_fail_open_total", profile="staff") == 0
    assert value(metrics, "webpolicy_watchlist_hits_total", category="Self-harm") == 0
    for result in ("sent", "failed", "dropped"):
        assert value(metrics, "webpolicy_alerts_total", channel="webhook", result=result) == 0
    assert value(metrics, "webpolicy_alerts_total", channel="email", result="failed") is None


def test_events_are_counted_by_what_happened(engine, metrics):
    def event(url: str, **who) -> Decision:
        decision = decide(engine, canonical_url(url), **who)
        metrics.event(decision)
        return decision

    assert event("http://evil.test/propaganda/1", client_ip="10.20.0.9").statutory
    event("http://www.gambling.test/")
    event("http://bet.test/")
    event("http://social.test/")
    event("http://denied.test/")
    event("http://news.test/")                                   # plain allow: not an event
    metrics.event(unavailable("learner", "default", "m1", "block"))
    metrics.event(unavailable("staff", "user", "m1", "allow"))

    assert value(metrics, "webpolicy_statutory_blocks_total", profile="staff", list="ctiru",
                 category="Terrorist content") == 1
    assert value(metrics, "webpolicy_blocks_total", profile="staff", list="ctiru",
                 category="Terrorist content") == 1
    assert value(metrics, "webpolicy_blocks_total", profile="learner", list="gambling",
                 category="Gambling") == 2
    assert value(metrics, "webpolicy_blocks_total", profile="learner", list="deny",
                 category="Blocked by local policy") == 1
    assert value(metrics, "webpolicy_statutory_blocks_total", profile="learner", list="ctiru",
                 category="Terrorist content") == 0
    assert value(metrics, "webpolicy_logged_visits_total", profile="learner", list="social",
                 category="Social networking") == 1
    assert value(metrics, "webpolicy_fail_closed_total", profile="learner") == 1
    assert value(metrics, "webpolicy_fail_open_total", profile="staff") == 1
    total_blocks = sum(v for (n, _), v in samples(metrics).items()
                       if n == "webpolicy_blocks_total")
    assert total_blocks == 4


def test_observe_counts_requests_and_latency(metrics):
    for _ in range(3):
        metrics.observe("learner", "block", 12e-6)
    metrics.observe("staff", "allow", 0.2)
    assert value(metrics, "webpolicy_requests_total", profile="learner", action="block") == 3
    assert value(metrics, "webpolicy_decision_seconds_count") == 4
    assert value(metrics, "webpolicy_decision_seconds_bucket", le="2.5e-05") == 3
    assert value(metrics, "webpolicy_decision_seconds_bucket", le="0.1") == 3
    assert value(metrics, "webpolicy_decision_seconds_bucket", le="0.5") == 4


def test_connections_refused_by_stage(metrics):
    metrics.connection_refused("learner", "tls")
    assert value(metrics, "webpolicy_connections_refused_total", profile="learner",
                 stage="tls") == 1
    assert value(metrics, "webpolicy_connections_refused_total", profile="learner",
                 stage="connect") == 0


def test_refused_reload_sets_status_and_a_good_one_clears_it(engine, metrics):
    metrics.reload_failed()
    assert value(metrics, "webpolicy_policy_last_reload_successful") == 0
    assert value(metrics, "webpolicy_policy_reloads_total", result="failure") == 1
    metrics.policy_loaded(engine)
    assert value(metrics, "webpolicy_policy_last_reload_successful") == 1
    assert value(metrics, "webpolicy_policy_reloads_total", result="success") == 2


def test_a_list_removed_from_the_policy_leaves_no_stale_gauges(tmp_path, metrics):
    smaller = POLICY.replace(f"  social: {SOCIAL}\n", "")
    smaller = smaller.replace("    log: [social]\n", "    log: []\n")
    metrics.policy_loaded(make_engine(tmp_path, smaller))
    assert value(metrics, "webpolicy_list_entries", list="social") is None
    assert value(metrics, "webpolicy_list_available", list="social") is None
    assert value(metrics, "webpolicy_list_entries", list="adult") == 1


def test_an_unavailable_list_shows_as_unavailable_with_zero_entries(tmp_path):
    lists = {**LISTS, "gambling.txt": "# nothing yet\n"}
    m = Metrics()
    m.policy_loaded(make_engine(tmp_path, lists=lists))
    assert value(m, "webpolicy_list_entries", list="gambling") == 0
    assert value(m, "webpolicy_list_available", list="gambling") == 0


def test_label_values_never_carry_users_addresses_hosts_or_urls(engine, metrics):
    private = ["alice", "10.20.0.9", "10.1.2.3", "evil.test", "gambling.test", "bet.test",
               "social.test", "/propaganda", "hurt myself"]
    for url in ("http://evil.test/propaganda/x?q=1", "http://bet.test/a", "http://social.test/"):
        for who in ({"user": "alice"}, {"client_ip": "10.20.0.9"}, {"client_ip": "10.1.2.3"}):
            decision = decide(engine, canonical_url(url), **who)
            metrics.observe(decision.profile, decision.action, 1e-5)
            metrics.event(decision)
    values = {v for (_, labels) in samples(metrics) for _, v in labels}
    leaked = [v for v in values for p in private if p in v]
    assert not leaked


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_serves_moves_and_stops(metrics):
    first, second = _free_port(), _free_port()
    metrics.serve("127.0.0.1", first)
    try:
        assert 'webpolicy_policy_info{version="m1"} 1.0' in _get(first)
        metrics.serve("127.0.0.1", first)                 # same address: nothing changes
        assert "webpolicy_requests_total" in _get(first)
        metrics.serve("127.0.0.1", second)                # metrics.listen edited
        assert "webpolicy_requests_total" in _get(second)
        with pytest.raises(OSError):
            _get(first)
    finally:
        metrics.stop()
    with pytest.raises(OSError):
        _get(second)
    assert metrics.address is None


def test_a_port_in_use_is_a_clear_error(metrics):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError) as raised:
            metrics.serve("127.0.0.1", port)
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "in use" in message and "metrics.listen" in message
    assert metrics.address is None


def test_url_sources_show_freshness_per_list_and_count_failures(tmp_path):
    """Labels are list names (and statutory), never URLs; the age grows while scraped."""
    from webpolicy.lists.remote import Outcome, SourceState
    from webpolicy.policy.model import RemoteSource

    engine = make_engine(tmp_path, POLICY)
    metrics = Metrics()
    metrics.policy_loaded(engine)
    assert value(metrics, "webpolicy_list_source_refresh_failures_total", list="social") == 0
    assert value(metrics, "webpolicy_list_source_age_seconds", list="social",
                 statutory="false") == float("inf"), "never downloaded, seen at load"
    assert value(metrics, "webpolicy_list_source_max_age_seconds", list="social",
                 statutory="false") == 4 * 3600
    assert value(metrics, "webpolicy_list_source_refresh_failures_total", list="adult") is None

    now = time.time()
    a = RemoteSource(list="social", url="https://lists.example/a", path=tmp_path / "a.txt",
                     max_age=7200)
    b = RemoteSource(list="social", url="https://lists.example/b", path=tmp_path / "b.txt",
                     max_age=3600)
    c = RemoteSource(list="ctiru", url="https://lists.example/c", path=tmp_path / "c.txt",
                     statutory=True, max_age=86400)
    states = [(a, SourceState(last_success=now - 100)),
              (b, SourceState(last_success=now - 1000, failures=2, last_error="HTTP 500",
                              last_attempt=now - 10, next_attempt=now + 50)),
              (c, SourceState())]
    failed = Outcome(b, "failed", "HTTP 500", states[1][1])
    refused = Outcome(b, "refused", "90% lost", states[1][1])
    metrics.list_sources(states, [failed, refused, Outcome(a, "updated", "", states[0][1])])
    assert value(metrics, "webpolicy_list_source_last_success_timestamp_seconds",
                 list="social") == pytest.approx(now - 1000)
    assert 1000 <= value(metrics, "webpolicy_list_source_age_seconds", list="social",
                         statutory="false") < 1060
    assert value(metrics, "webpolicy_list_source_max_age_seconds", list="social",
                 statutory="false") == 3600
    assert value(metrics, "webpolicy_list_source_failing", list="social") == 1
    assert value(metrics, "webpolicy_list_source_refresh_failures_total", list="social") == 2
    assert value(metrics, "webpolicy_list_source_consecutive_failures", list="social") == 2
    assert value(metrics, "webpolicy_list_source_consecutive_failures", list="ctiru") == 0
    assert value(metrics, "webpolicy_list_source_next_attempt_timestamp_seconds",
                 list="ctiru") == 0, "never tried: due at once"
    assert value(metrics, "webpolicy_list_source_age_seconds", list="ctiru",
                 statutory="true") == float("inf")
    assert value(metrics, "webpolicy_list_source_last_success_timestamp_seconds",
                 list="ctiru") == 0
    text = generate_latest(metrics.registry).decode()
    assert "lists.example" not in text
    metrics.list_sources([(a, SourceState(last_success=now))], [])
    assert value(metrics, "webpolicy_list_source_failing", list="ctiru") is None
