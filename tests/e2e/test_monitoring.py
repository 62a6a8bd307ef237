"""The monitoring kit with the real things: promtool, a real Prometheus scraping a real mitmdump.

- promtool checks monitoring/prometheus.yml and the alert rules, and runs the rules' unit tests
  (each alert rule must have a firing and a quiet case);
- the alert rules and the Grafana dashboard may only name metrics the gateway exports;
- a Prometheus server on loopback scrapes the proxy while blocked requests go through it, and
  the counts, the statutory alert and every dashboard query are read back through its HTTP API;
- no exported label carries anything but configuration-derived values (never a user, IP, host
  or URL);
- the endpoint starts and stops with the proxy, follows metrics.listen on reload, and a port in
  use stops mitmdump with a message naming the address.

promtool and prometheus come from Debian's `prometheus` package (scripts/install-system-deps.sh):
these tests fail, not skip, without them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from webpolicy.engine import circumvention
from webpolicy.monitoring.metrics import LOGIN_RESULTS, Metrics
from webpolicy.monitoring.workers import WorkerState, gateway_registry
from webpolicy.policy.model import load_policy

from .conftest import LEARNER_IP, POLICY, STAFF_IP, UNKNOWN_IP
from .prometheus import CONFIG, MONITORING, RULES, Prometheus, tool
from .proxy import Proxy, free_port, htpasswd

RULE_TESTS = MONITORING / "tests" / "webpolicy.rules.test.yml"
DASHBOARD = MONITORING / "grafana" / "webpolicy-dashboard.json"

# Every label name the gateway may export, and nothing else.
ALLOWED_LABELS = {"profile", "action", "list", "category", "result", "channel", "stage", "le",
                  "version", "mitmproxy", "implementation", "major", "minor", "patchlevel",
                  "statutory"}
LOCAL_CATEGORIES = {"Blocked by local policy", "Allowed by local policy"}
# Circumvention refusals count as blocks of the pseudo-list "connect", one category per rule.
CIRCUMVENTION_CATEGORIES = {circumvention.Violation(rule, "").category for rule in
                            (circumvention.IP_LITERAL, circumvention.PORT,
                             circumvention.SNI_MISMATCH)}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120)


# -- the kit, checked by promtool ---------------------------------------------------------------

def test_promtool_accepts_the_scrape_config_and_the_rules():
    checked = promtool("check", "config", str(CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_promtool_unit_tests_pass():
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_rule_has_a_firing_and_a_quiet_unit_test():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']}: no test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']}: no test where it is quiet"
    required = {"WebpolicyStatutoryBlock", "WebpolicyPolicyReloadFailing", "WebpolicyListEmpty",
                "WebpolicyFailingClosed", "WebpolicyDown"}
    assert required <= {rule["alert"] for rule in alert_rules()}
    assert all(rule["labels"]["severity"] in ("critical", "warning") for rule in alert_rules())


# -- rules and dashboard name only real metrics ---------------------------------------------------

def exported_series_names() -> set[str]:
    """Every series name the gateway can export, from its registry, and, run as workers, from
    the supervisor's (monitoring/workers.py)."""
    names = set()
    with tempfile.TemporaryDirectory() as empty:
        supervisor = gateway_registry(Path(empty), lambda: [WorkerState(0, os.getpid(), 0)],
                                      lambda: [])
        families = [*Metrics().registry.collect(), *supervisor.collect()]
    for family in families:
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                    "info": ["_info"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def dashboard_expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def test_rules_and_dashboard_use_only_metrics_the_gateway_exports():
    exported = exported_series_names()
    dashboard = json.loads(DASHBOARD.read_text())
    texts = [rule["expr"] for rule in alert_rules()] + dashboard_expressions(dashboard)
    used = {name for text in texts for name in re.findall(r"\b(?:webpolicy|process)_[a-z_]+", text)}
    assert used, "no metric names found"
    assert used <= exported, f"not exported by the gateway: {used - exported}"


def test_dashboard_has_the_panels_and_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    assert {"Blocks per category", "Decisions per second", "Decision latency", "List sizes",
            "Reload status", "Policy version", "Statutory blocks"} <= titles
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    latency = next(p for p in panels if p["title"] == "Decision latency")
    assert {"0.5", "0.9", "0.99"} <= {re.search(r"histogram_quantile\(([\d.]+)", t["expr"])[1]
                                      for t in latency["targets"]}


# -- a real Prometheus scraping a real proxy ------------------------------------------------------


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator:
    started: list[Prometheus] = []

    def start(proxy: Proxy) -> Prometheus:
        directory = tmp_path / f"prometheus-{len(started)}"
        directory.mkdir()
        server = Prometheus(directory, f"127.0.0.1:{proxy.metrics_port}")
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def by(label: str, result: dict[tuple, float]) -> dict[str, float]:
    return {dict(labels).get(label, ""): value for labels, value in result.items()}


def test_prometheus_scrapes_the_gateway_counts_and_fires_the_statutory_alert(make_proxy,
                                                                              prometheus_for):
    proxy = make_proxy()
    prom = prometheus_for(proxy)
    up = prom.wait_for('up{job="webpolicy"}', lambda r: list(r.values()) == [1.0])
    assert list(up.values()) == [1.0], prom.output()
    # A zero sample before the first hit, so increase() sees it (as in production).
    zero = prom.wait_for("webpolicy_statutory_blocks_total", lambda r: len(r) == 2)
    assert set(zero.values()) == {0.0}

    learner = [("http://www.gambling.test/", 403)] * 3 + [("https://adult.test/", 403)] * 2 + [
        ("http://news.test/adult-section/x", 403), ("http://ctiru-host.test/terror/page", 451),
        ("http://social.test/", 200), ("http://news.test/", 200), ("http://news.test/", 200)]
    staff = [("http://www.gambling.test/", 200), ("http://ctiru-host.test/terror/page", 451)]
    for requests, client_ip in ((learner, LEARNER_IP), (staff, STAFF_IP)):
        for url, status in requests:
            assert proxy.curl(url, client_ip=client_ip).status == status, url

    blocks = prom.wait_for('sum by (category) (webpolicy_blocks_total{job="webpolicy"})',
                           lambda r: sum(r.values()) >= 8)
    assert by("category", blocks) == {"Gambling": 3, "Pornography": 3,
                                      "Terrorist content (CTIRU)": 2}
    assert by("profile", prom.query("sum by (profile) (webpolicy_statutory_blocks_total)")) == {
        "learner": 1, "staff": 1}
    logged = prom.query("sum by (profile, list) (webpolicy_logged_visits_total) > 0")
    assert {(dict(k)["profile"], dict(k)["list"]): v for k, v in logged.items()} == {
        ("learner", "social"): 1, ("staff", "gambling"): 1}
    actions = by("action", prom.query(
        'sum by (action) (webpolicy_requests_total{profile="learner"})'))
    assert actions == {"block": 7, "log": 1, "allow": 2}
    decided = prom.query("sum(webpolicy_decision_seconds_count)")
    assert list(decided.values()) == [12]
    assert by("version", prom.query("webpolicy_policy_info")) == {"e2e-1": 1}

    firing = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(firing) < 2:
        firing = [a["labels"] for a in prom.api("alerts")["alerts"]
                  if a["labels"]["alertname"] == "WebpolicyStatutoryBlock"
                  and a["state"] == "firing"]
        time.sleep(0.5)
    assert {(a["profile"], a["list"], a["severity"]) for a in firing} == {
        ("learner", "ctiru", "critical"), ("staff", "ctiru", "critical")}
    others = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]
              if a["state"] == "firing"}
    assert others == {"WebpolicyStatutoryBlock"}, others   # a healthy gateway fires nothing else

    check_dashboard_queries(prom)
    assert_bounded_labels(scrape(proxy), proxy,
                          private=[LEARNER_IP, STAFF_IP, "gambling.test", "adult.test",
                                   "ctiru-host", "/terror", "news.test", "social.test"])


def check_dashboard_queries(prom: Prometheus) -> None:
    """Every dashboard query is valid PromQL, and the main panels have data."""
    dashboard = json.loads(DASHBOARD.read_text())
    for expr in dashboard_expressions(dashboard):
        concrete = (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
                    .replace("$instance", ".*"))
        prom.query(concrete)                              # raises unless status is success
    panels = {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}
    for title in ("Blocks per category", "Decisions per second", "Decision latency",
                  "List sizes", "Reload status", "Policy version", "Statutory blocks"):
        expr = panels[title]["targets"][0]["expr"]
        concrete = (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
                    .replace("$instance", ".*"))
        result = prom.wait_for(concrete, lambda r: bool(r), timeout=15)
        assert result, f"{title}: no data for {concrete}"


# -- labels --------------------------------------------------------------------------------------

def scrape(proxy: Proxy) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.metrics_port}/metrics",
                                timeout=5) as response:
        return response.read().decode()


def assert_bounded_labels(text: str, proxy: Proxy, private: list[str]) -> None:
    """Label names from a fixed set; values from the policy and fixed vocabularies only."""
    policy = load_policy(proxy.policy_path)
    allowed_values = {
        "profile": set(policy.profiles),
        "list": set(policy.lists) | {"deny", "allow", circumvention.LIST},
        "category": ({s.category for s in policy.lists.values()} | LOCAL_CATEGORIES
                     | CIRCUMVENTION_CATEGORIES | {s.category for s in policy.watchlist.values()}),
        "action": {"allow", "log", "block"},
        "result": {"success", "failure", "sent", "retry", "failed", "suppressed", "dropped",
                   *LOGIN_RESULTS},
        "channel": {"email", "webhook"},
        "stage": {"connect", "tls", "tcp"},
        "statutory": {"true", "false"},
    }
    versions = {"webpolicy_policy_info": policy.version,
                "webpolicy_build_info": metadata.version("webpolicy"),
                "python_info": platform.python_version()}
    seen = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                seen.add(name)
                assert name in ALLOWED_LABELS, f"{sample.name}: label {name}={value!r}"
                assert not any(p in value for p in private), f"{sample.name}: {name}={value!r}"
                if name in allowed_values:
                    assert value in allowed_values[name], f"{sample.name}: {name}={value!r}"
                elif name == "le":
                    float(value)
                elif name == "version":
                    assert value == versions[sample.name], f"{sample.name}: {value!r}"
                elif name == "mitmproxy":
                    assert value == metadata.version("mitmproxy")
                else:
                    assert sample.name == "python_info", f"{sample.name}: {name}"
    assert {"profile", "list", "category", "action", "result", "stage"} <= seen


def test_no_label_carries_a_user_address_host_or_url(make_proxy, tmp_path):
    """Users, client addresses, hosts and URLs (with queries) pass through; none is a label."""
    users = htpasswd(tmp_path, {"alice": "secret", "jsmith": "pw-jsmith"})
    proxy = make_proxy(options={"proxyauth": f"@{users}"})
    traffic = [("alice:secret", STAFF_IP), ("jsmith:pw-jsmith", LEARNER_IP),
               ("jsmith:pw-jsmith", UNKNOWN_IP)]
    urls = ["http://www.gambling.test/?user=jsmith&q=odds", "https://adult.test/x?y=1",
            "http://ctiru-host.test/terror/page?id=7", "http://social.test/profile/jsmith",
            "http://news.test/adult-section/", "http://news.test/", "https://casino-bank.test/"]
    for credentials, client_ip in traffic:
        for url in urls:
            proxy.curl(url, "--proxy-user", credentials, client_ip=client_ip)
    text = scrape(proxy)
    refused = [s for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "webpolicy_connections_refused_total" and s.value]
    assert refused, "the pass-through refusal was not counted"
    assert_bounded_labels(text, proxy, private=[
        "alice", "jsmith", "secret", LEARNER_IP, STAFF_IP, UNKNOWN_IP, "127.0.", ".test",
        "/terror", "/x", "odds", "id=7", "adult-section"])


# -- the endpoint's life ------------------------------------------------------------------------

def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_endpoint_follows_reloads_and_stops_with_the_proxy(make_proxy):
    proxy = make_proxy()
    assert 'webpolicy_policy_last_reload_successful 1.0' in scrape(proxy)
    policy = proxy.policy_path.read_text()

    proxy.policy_path.write_text(policy.replace("profiles:", "profiles: [broken"))
    assert wait_until(lambda: "webpolicy_policy_last_reload_successful 0.0" in scrape(proxy))
    assert 'webpolicy_policy_reloads_total{result="failure"} 1.0' in scrape(proxy)

    old_port, proxy.metrics_port = proxy.metrics_port, free_port()
    proxy.policy_path.write_text(policy.replace(f"127.0.0.1:{old_port}",
                                                f"127.0.0.1:{proxy.metrics_port}"))
    assert wait_until(lambda: listening(proxy.metrics_port)), proxy.output
    assert "webpolicy_policy_last_reload_successful 1.0" in scrape(proxy)
    assert wait_until(lambda: not listening(old_port))

    assert proxy.stop() == 0
    assert not listening(proxy.metrics_port)


def test_metrics_port_in_use_stops_mitmdump_with_a_clear_error(make_proxy):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        policy = POLICY.replace("{metrics_port}", "{busy_port}")
        with pytest.raises(RuntimeError) as raised:
            make_proxy(policy=policy, busy_port=port)
    message = str(raised.value)                # "mitmdump exited (code):" and its output
    assert message.startswith("mitmdump exited (1)"), message
    assert f"cannot serve Prometheus metrics on 127.0.0.1:{port}" in message
    assert "Address already in use" in message
    assert "Set metrics.listen in policy.yaml" in message


def test_metrics_disabled_serves_nothing(make_proxy):
    proxy = make_proxy(options={"webpolicy_metrics": "false"})
    assert proxy.curl("http://www.gambling.test/", client_ip=LEARNER_IP).status == 403
    assert not listening(proxy.metrics_port)
