"""WebPolicy in-process, on mitmproxy's own test helpers (taddons, tflow): the add-on's rules
without root or a real proxy.  Loading the policy through mitmproxy's options, identity (login,
network, default), domain fronting, the order of the stages, failing closed, and the CONNECT
and TLS hooks.  The end-to-end tests (tests/e2e) run the same rules through a real mitmdump."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from mitmproxy import ctx, http, tls
from mitmproxy.addons import proxyauth, proxyserver
from mitmproxy.exceptions import OptionsError
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow, tutils

from tests.unit.helpers import STAFF_NETWORK, policy_yaml, write_policy
from tests.unit.proxy.builders import hello_data
from webpolicy.policy import history
from webpolicy.policy.model import PolicyError, load_policy
from webpolicy.proxy.addon import WebPolicy
from webpolicy.safeguarding.logwriter import LogDirectoryError

STAFF_IP, LEARNER_IP, UNKNOWN_IP = "10.20.0.9", "10.10.0.5", "192.0.2.77"

POLICY = policy_yaml(
    version="unit-addon",
    learner={"block": ["ctiru", "adult"], "log": ["social"], "safe_search": "{enforce: true}",
             "connect": "{block_ip_literals: true, allowed_ports: [443]}"},
    staff={"block": ["ctiru"], "log": ["adult"], "on_error": "allow"},
    users={"alice": "staff"},
    networks=[STAFF_NETWORK, ("10.10.0.0/16", "learner")],
    lists=["ctiru", "adult", "social"],
    extra="passthrough: [bank.example, adult-bank.example]\n"
          "logging: {directory: logs, retention_days: 30}\n"
          "metrics: {enabled: false}\n")
LISTS = {"ctiru.txt": "ctiru.example/terror/page\n",
         "adult.txt": "adult.example\nadult-bank.example\n",
         "social.txt": "social.example\n"}


@pytest.fixture
def addon(tmp_path: Path):
    """WebPolicy loaded the way mitmdump loads it: options, then configure."""
    path = write_policy(tmp_path, POLICY, LISTS)
    webpolicy = WebPolicy()
    # mitmproxy's own add-ons that define the options WebPolicy reads (connection_strategy,
    # proxyauth); they are not started.
    with taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), webpolicy) as tctx:
        tctx.configure(webpolicy, webpolicy_policy=str(path),
                       webpolicy_cache_dir=str(tmp_path / "cache"), webpolicy_metrics=False)
        yield webpolicy
        webpolicy.done()


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((tmp_path / "logs").glob("*.jsonl"))
            for line in f.read_text().splitlines()]


def request(host: str, path: str = "/", *, client: str = LEARNER_IP, host_header: str | None = None,
            scheme: str = "https", user: str | None = None) -> http.HTTPFlow:
    """A request as mitmproxy hands it over: `host` is where the connection goes (CONNECT or
    SNI), `host_header` what the request names (domain fronting when they differ)."""
    req = tutils.treq(host=host, port=443 if scheme == "https" else 80, path=path.encode(),
                      scheme=scheme.encode(),
                      headers=http.Headers([(b"host", (host_header or host).encode())]))
    flow = tflow.tflow(req=req)
    flow.client_conn.peername = (client, 50000)
    flow.client_conn.proxy_mode = ProxyMode.parse("regular")
    if user:
        flow.metadata["proxyauth"] = (user, "secret")
    return flow


def test_the_policy_loads_through_mitmproxys_options(addon):
    assert addon.gate.engine.version == "unit-addon"


@pytest.mark.parametrize("client, user, blocked", [
    (LEARNER_IP, None, True),          # network: learner
    (UNKNOWN_IP, None, True),          # unknown clients are learners (default_profile)
    (STAFF_IP, None, False),           # network: staff (adult is log-only)
    (UNKNOWN_IP, "alice", False),      # login: staff, whatever the address
])
def test_identity_chooses_the_profile(addon, client, user, blocked):
    flow = request("adult.example", client=client, user=user)
    addon.requestheaders(flow)
    assert (flow.response is not None) is blocked
    if blocked:
        assert flow.response.status_code == 403


def test_statutory_blocks_everyone(addon, tmp_path):
    flow = request("ctiru.example", "/terror/page", client=STAFF_IP, user="alice")
    addon.requestheaders(flow)
    assert flow.response.status_code in (403, 451)
    addon.done()
    (record,) = records(tmp_path)
    assert record["statutory"] is True and record["user"] == "alice"


@pytest.mark.parametrize("connection_host, host_header", [
    ("allowed.example", "adult.example"),   # allowed CONNECT/SNI, blocked Host: fronting
    ("adult.example", "allowed.example"),   # blocked connection, allowed Host
])
def test_domain_fronting_is_blocked_either_way(addon, connection_host, host_header):
    flow = request(connection_host, host_header=host_header)
    addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 403


def test_an_allowed_request_goes_on_untouched(addon):
    flow = request("allowed.example", "/page?q=1")
    addon.requestheaders(flow)
    assert flow.response is None and flow.request.path == "/page?q=1"


def test_a_log_only_visit_is_recorded_and_allowed(addon, tmp_path):
    flow = request("social.example")
    addon.requestheaders(flow)
    assert flow.response is None
    addon.done()
    assert [r["action"] for r in records(tmp_path)] == ["logged"]


def test_stages_run_after_the_decision_and_never_touch_a_blocked_flow(addon):
    allowed = request("www.google.co.uk", "/search?q=x&safe=off")
    addon.requestheaders(allowed)
    assert allowed.response is None and "safe=active" in allowed.request.path
    blocked = request("www.google.co.uk", "/search?q=x", host_header="adult.example")
    addon.requestheaders(blocked)
    assert blocked.response.status_code == 403 and "safe=active" not in blocked.request.path


def test_the_circumvention_stage_refuses_an_ip_literal(addon):
    flow = request("198.51.100.7", scheme="http")
    addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 403


def test_a_proxyauth_answer_is_never_overwritten(addon):
    flow = request("adult.example")
    flow.response = http.Response.make(407)
    addon.requestheaders(flow)
    assert flow.response.status_code == 407


def test_no_policy_fails_closed(addon):
    addon.gate.engine = None
    flow = request("allowed.example")
    addon.requestheaders(flow)
    assert flow.response is not None and flow.response.status_code == 503


def test_an_engine_error_fails_closed_for_learners_and_open_for_staff(addon, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("induced")
    monkeypatch.setattr("webpolicy.proxy.requests.decide", broken)
    learner, staff = request("allowed.example"), request("allowed.example", client=STAFF_IP)
    addon.requestheaders(learner)
    addon.requestheaders(staff)
    assert learner.response.status_code == 503
    assert staff.response is None


def connect(host: str, port: int = 443, client: str = LEARNER_IP) -> http.HTTPFlow:
    flow = tflow.tflow(req=tutils.treq(method=b"CONNECT", host=host, port=port, path=b"",
                                       scheme=b"", authority=f"{host}:{port}".encode()))
    flow.client_conn.peername = (client, 50000)
    flow.client_conn.proxy_mode = ProxyMode.parse("regular")
    return flow


@pytest.mark.parametrize("host, port, refused", [
    ("adult-bank.example", 443, True),     # a blocked pass-through host: refused at CONNECT
    ("bank.example", 443, False),          # an allowed pass-through host
    ("adult.example", 443, False),         # intercepted: each request inside is decided
    ("allowed.example", 8443, True),       # a port the learner profile does not allow
    ("198.51.100.7", 443, True),           # an IP literal
])
def test_connect(addon, host, port, refused):
    flow = connect(host, port)
    addon.http_connect(flow)
    assert (flow.response is not None) is refused


def test_tls_to_a_blocked_passthrough_host_is_refused(addon):
    data = hello_data("adult-bank.example", LEARNER_IP, sni="adult-bank.example")
    addon.tls_clienthello(data)
    assert not data.ignore_connection
    tls_data = tls.TlsData(data.context.client, data.context)
    addon.tls_start_client(tls_data)
    assert tls_data.ssl_conn is not None          # a context without a certificate: refused


def test_tls_to_an_allowed_passthrough_host_is_passed_through(addon):
    data = hello_data("bank.example", LEARNER_IP, sni="bank.example")
    addon.tls_clienthello(data)
    assert data.ignore_connection


def test_an_sni_naming_another_host_than_a_passthrough_connect_is_refused(addon):
    data = hello_data("bank.example", LEARNER_IP, sni="adult.example")
    addon.tls_clienthello(data)
    assert not data.ignore_connection
    tls_data = tls.TlsData(data.context.client, data.context)
    addon.tls_start_client(tls_data)
    assert tls_data.ssl_conn is not None


def test_the_proxy_records_what_it_accepted_and_refused_in_the_policy_history(addon, tmp_path):
    policy = tmp_path / "policy.yaml"
    (start,) = history.read(policy)
    assert (start.event, start.how, start.version) == ("accepted", "start", "unit-addon")
    assert start.lists == {"adult": [None, 2], "ctiru": [None, 1], "social": [None, 1]}
    policy.write_text(policy.read_text().replace("default_profile: learner",
                                                 "default_profile: nobody"))
    with pytest.raises(PolicyError) as refused:
        load_policy(policy)
    addon._reload_failed(refused.value)            # what the reloader calls
    last = list(history.read(policy))[-1]
    assert (last.event, last.how) == ("refused", "reload")
    assert any("default_profile" in problem for problem in last.problems)


def test_a_statutory_block_page_waits_for_its_record_on_disk(addon, tmp_path):
    """requestheaders hands mitmproxy an awaitable for a statutory block: the record is
    written and fsync'd before the page goes out.  An ordinary block waits for nothing."""
    ordinary = request("adult.example")
    assert addon.requestheaders(ordinary) is None and ordinary.response.status_code == 403
    statutory = request("ctiru.example", "/terror/page")
    waiting = addon.requestheaders(statutory)
    assert waiting is not None
    asyncio.run(waiting)
    reference = statutory.response.headers["x-webpolicy-reference"]
    assert reference in "".join(f.read_text() for f in (tmp_path / "logs").glob("*.jsonl"))


def test_the_proxy_will_not_start_without_a_usable_log_directory(tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    path = write_policy(tmp_path, POLICY.replace("directory: logs", "directory: not-a-directory"),
                        LISTS)
    webpolicy = WebPolicy()
    with taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), webpolicy) as tctx:
        with pytest.raises(OptionsError, match="safeguarding log directory"):
            tctx.configure(webpolicy, webpolicy_policy=str(path),
                           webpolicy_cache_dir=str(tmp_path / "cache"), webpolicy_metrics=False)


def test_a_reload_that_moves_the_log_somewhere_unusable_is_refused(addon, tmp_path):
    (tmp_path / "blocker").write_text("")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy.read_text().replace("directory: logs", "directory: blocker/logs"))
    with pytest.raises(LogDirectoryError):
        addon._load_for_reload(policy, None)          # what the reloader's thread builds
    assert addon.gate.engine.policy.logging.directory == tmp_path / "logs"


@pytest.mark.parametrize("name, client, action, status", [
    ("adult", LEARNER_IP, "block", 403),
    ("social", LEARNER_IP, "log", 200),
    ("adult", STAFF_IP, "log", 200),
    ("social", STAFF_IP, "allow", 200),
    ("ctiru", STAFF_IP, "block", 451),
])
def test_selftest_names_are_answered_by_the_gateway(addon, name, client, action, status):
    """Every list holds its reserved name; the gateway says what it decided, and never asks
    upstream (the choke point finds no mark for it)."""
    flow = request(f"{name}.selftest.webpolicy.invalid", "/webpolicy-selftest", client=client,
                   scheme="http")
    addon.requestheaders(flow)
    assert flow.response.status_code == status
    assert flow.response.headers["X-Webpolicy-Action"] == action
    assert flow.response.headers["X-Webpolicy-List"] == (name if action != "allow" else "")


def test_selftest_requests_are_neither_counted_nor_alerted(addon):
    offered = []
    addon.gate.alerter = type("Alerter", (), {"offer": lambda self, r: offered.append(r)})()
    before = addon.metrics.statutory_blocks.labels("learner", "ctiru",
                                                   "Terrorist content")._value.get()
    addon.requestheaders(request("ctiru.selftest.webpolicy.invalid", "/x", scheme="http"))
    after = addon.metrics.statutory_blocks.labels("learner", "ctiru",
                                                  "Terrorist content")._value.get()
    assert offered == [] and after == before
    addon.requestheaders(request("ctiru.example", "/terror/page", scheme="http"))
    assert len(offered) == 1, "a real statutory block is still alerted"
    addon.gate.alerter = None


# -- configuration traps (issue #15): refused with what to do instead ------------------------

def configured(tmp_path, **options):
    path = write_policy(tmp_path, POLICY, LISTS)
    webpolicy = WebPolicy()
    with taddons.context(proxyserver.Proxyserver(), proxyauth.ProxyAuth(), webpolicy) as tctx:
        tctx.configure(webpolicy, webpolicy_cache_dir=str(tmp_path / "cache"),
                       webpolicy_metrics=False, **options)
        tctx.configure(webpolicy, webpolicy_policy=str(path))
        return webpolicy


def test_any_password_with_named_users_is_refused(tmp_path):
    """--proxyauth any with clients.users: anyone could type alice and be staff."""
    with pytest.raises(OptionsError, match="proxyauth any accepts any password"):
        configured(tmp_path, proxyauth="any")


def test_any_password_set_later_is_refused_too(addon):
    with pytest.raises(OptionsError, match="clients.users"):
        ctx.options.update(proxyauth="any")


def test_streaming_large_bodies_is_refused(tmp_path):
    with pytest.raises(OptionsError, match="stream_large_bodies is not supported"):
        configured(tmp_path, stream_large_bodies="1m")


def test_a_sighup_while_starting_is_held_not_fatal(tmp_path):
    """Python's default for SIGHUP ends the process; from load() on it is held, and replayed
    as a reload once the proxy runs."""
    previous = signal.getsignal(signal.SIGHUP)
    try:
        webpolicy = configured(tmp_path)
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, previous)
        os.kill(os.getpid(), signal.SIGHUP)
        assert webpolicy._sighup_held
    finally:
        signal.signal(signal.SIGHUP, previous)


def requests_counted(addon) -> dict[tuple[str, str], float]:
    family = next(iter(addon.metrics.requests.collect()))
    return {(s.labels["profile"], s.labels["action"]): s.value for s in family.samples}


def test_a_request_a_stage_refuses_is_counted_as_blocked(addon):
    """Issue #19, in passing: an IP-literal request the circumvention stage refuses was
    counted as webpolicy_requests_total{action="allow"}."""
    addon.requestheaders(request("198.51.100.7", scheme="http"))
    addon.requestheaders(request("allowed.example"))
    counted = requests_counted(addon)
    assert counted.get(("learner", "block")) == 1
    assert counted.get(("learner", "allow")) == 1
