"""failsafe.py and text.py: a hook that raises refuses what it was given instead of letting
mitmproxy forward it, and request text that is not UTF-8 can be paged and recorded."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import connection, dns, http
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from tests.unit.helpers import engine_from
from webpolicy.proxy import failsafe
from webpolicy.proxy.addon import WebPolicy
from webpolicy.safeguarding.safetext import clean_text

POLICY = """\
version: "unit"
default_profile: learner
profiles:
  learner:
    block: [gambling]
  staff:
    block: []
    on_error: allow
clients:
  networks:
    - {cidr: 10.20.0.0/16, profile: staff}
lists:
  ctiru: {statutory: true, category: Terrorist content, format: urls, sources: [ctiru.txt]}
  gambling: {category: Gambling, sources: [gambling.txt]}
"""
LISTS = {"ctiru.txt": "ctiru.example/terror/page\n", "gambling.txt": "gambling.example\n"}
LEARNER, STAFF = "10.10.0.5", "10.20.0.9"


@pytest.fixture
def addon(tmp_path) -> WebPolicy:
    policy = WebPolicy()
    policy.gate.engine = engine_from(tmp_path, POLICY, LISTS)
    return policy


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> WebPolicy:
    policy = WebPolicy()
    policy.gate.engine = engine_from(tmp_path_factory.mktemp("policy"), POLICY, LISTS)
    return policy


def boom(*args, **kwargs):
    raise RuntimeError("induced failure (test)")


def http_flow(host: str = "news.example", ip: str = STAFF,
              headers: list[tuple[bytes, bytes]] | None = None) -> http.HTTPFlow:
    request = tutils.treq(host=host, port=80, path=b"/", scheme=b"http",
                          headers=http.Headers(headers or [(b"host", host.encode())]))
    f = tflow.tflow(req=request)
    f.client_conn.peername = (ip, 50000)
    f.client_conn.proxy_mode = ProxyMode.parse("regular")
    return f


# -- a hook that raises refuses -------------------------------------------------------------

@pytest.mark.parametrize("ip", [LEARNER, STAFF])
def test_a_raising_request_hook_blocks_even_for_on_error_allow(addon, monkeypatch, ip):
    monkeypatch.setattr(addon.requests, "filter", boom)
    f = http_flow(ip=ip)
    addon.requestheaders(f)
    assert f.response is not None and f.response.status_code == 503
    assert addon.metrics.filter_errors._value.get() == 1


def test_when_even_the_block_page_fails_the_fixed_answer_is_sent(addon, monkeypatch):
    monkeypatch.setattr(addon.requests, "filter", boom)
    monkeypatch.setattr(addon.gate, "refuse_request", boom)
    f = http_flow()
    addon.requestheaders(f)
    assert f.response.status_code == failsafe.FALLBACK_STATUS
    assert f.response.content == failsafe.FALLBACK_BODY


def test_a_raising_connect_refuses_the_tunnel(addon, monkeypatch):
    monkeypatch.setattr(addon.connections, "http_connect", boom)
    f = tflow.tflow(req=tutils.treq(method=b"CONNECT", host="news.example", port=443,
                                    path=b"", scheme=b"", authority=b"news.example:443"))
    addon.http_connect(f)
    assert f.response.status_code >= 400


def test_a_raising_server_connect_refuses_the_connection(addon, monkeypatch):
    monkeypatch.setattr(addon.chokepoint, "refusal", boom)
    server = connection.Server(address=("news.example", 80))
    addon.server_connect(server_hooks.ServerConnectionHookData(client=tflow.tclient_conn(),
                                                               server=server))
    assert server.error


def test_a_raising_tcp_hook_refuses_its_connection_and_client(addon, monkeypatch):
    monkeypatch.setattr(addon.connections, "tcp_start", boom)
    f = tflow.ttcpflow()
    addon.tcp_start(f)
    assert f.error is not None                     # killed
    later = connection.Server(address=("news.example", 80))
    addon.server_connect(server_hooks.ServerConnectionHookData(client=f.client_conn,
                                                               server=later))
    assert later.error


def test_a_raising_tls_hook_refuses_the_client(addon, monkeypatch):
    monkeypatch.setattr(addon.connections, "tls_clienthello", boom)
    client = tflow.tclient_conn()
    server = connection.Server(address=("news.example", 443))
    hello = _client_hello_data(client)
    addon.tls_clienthello(hello)
    addon.server_connect(server_hooks.ServerConnectionHookData(client=client, server=server))
    assert server.error


def _client_hello_data(client: connection.Client):
    from mitmproxy import tls
    from mitmproxy.proxy.context import Context
    from mitmproxy.test import taddons

    with taddons.context() as tctx:
        context = Context(client, tctx.options)
    return tls.ClientHelloData(context, None)          # type: ignore[arg-type]


def test_a_raising_socks5_login_is_invalid(addon, monkeypatch):
    monkeypatch.setattr(addon.connections, "socks5_auth", boom)
    data = modes.Socks5AuthData(tflow.tclient_conn(), "alice", "secret", True)
    addon.socks5_auth(data)
    assert data.valid is False


def test_a_raising_dns_hook_answers_servfail(addon, monkeypatch):
    monkeypatch.setattr(addon.circumvention, "dns_request", boom)
    f = tflow.tdnsflow()
    addon.dns_request(f)
    assert f.response.response_code == dns.response_codes.SERVFAIL


# -- the root cause: request bytes that are not UTF-8 ---------------------------------------

def test_non_utf8_host_gets_the_block_page_not_an_exception(addon, monkeypatch):
    """One byte that is not UTF-8 in Host used to make the block page raise."""
    monkeypatch.setattr(failsafe, "refuse", boom)          # any raise fails the test
    f = http_flow("gambling.example", LEARNER,
                  [(b"host", b"gambling.example\xff"), (b"accept", b"text/html"),
                   (b"user-agent", b"agent\xfe\x01")])
    addon.requestheaders(f)
    assert f.response.status_code == 403                   # the URL's host is decided
    assert addon.metrics.filter_errors._value.get() == 0


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=st.binary(min_size=1, max_size=40), path=st.binary(max_size=40),
       agent=st.binary(max_size=30), auth=st.binary(max_size=30),
       accept=st.sampled_from([b"text/html", b"*/*"]),
       ip=st.sampled_from([LEARNER, STAFF]))
def test_any_request_bytes_are_answered_or_decided_never_raise(shared, monkeypatch, host, path,
                                                               agent, auth, accept, ip):
    monkeypatch.setattr(failsafe, "refuse", boom)
    f = http_flow("gambling.example", ip, [(b"host", host), (b"accept", accept),
                                           (b"user-agent", agent), (b"authorization", auth)])
    f.request.data.path = b"/" + path
    shared.requestheaders(f)
    if f.response is not None:
        assert f.response.status_code >= 400
    elif ip == LEARNER:
        # gambling.example is the connection host: blocked unless the choke point refuses it
        server = connection.Server(address=("gambling.example", 80))
        shared.server_connect(server_hooks.ServerConnectionHookData(client=f.client_conn,
                                                                    server=server))
        assert server.error


@given(st.text())
def test_request_text_is_made_encodable_and_one_line(text):
    """What the block page and the records use (safeguarding/safetext.py)."""
    shown = clean_text(text, limit=None)
    shown.encode("utf-8")
    assert "\n" not in shown and "\r" not in shown
    assert clean_text(shown, limit=None) == shown


def test_request_text_shows_what_was_hidden():
    assert clean_text("a\udcffb\x01c", limit=None) == "a\\xffb\\x01c"
    assert clean_text("plain") == "plain"


# -- each consumer of request text, on its own ---------------------------------------------

@given(host=st.text(max_size=30), agent=st.text(max_size=30),
       statutory=st.booleans(), accept=st.sampled_from(["text/html", ""]))
def test_the_block_page_renders_any_text(host, agent, statutory, accept):
    """Lone surrogates (st.text makes them) in the address used to make render() raise."""
    from webpolicy.engine.decision import Decision
    from webpolicy.policy.model import BlockPageSettings
    from webpolicy.proxy import blockpage

    decision = Decision("block", "learner", "default", "ctiru" if statutory else "gambling",
                        "Category", "high", statutory)
    page = blockpage.render(decision, "WP-TEST", f"http://{host}/", host, BlockPageSettings(),
                            accept)
    page.body.decode("utf-8")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=st.text(max_size=30), agent=st.text(max_size=30), user=st.text(max_size=10))
def test_a_record_of_any_text_can_be_written(shared, host, agent, user):
    """The log writer encodes each record as UTF-8 JSON: it must never meet a surrogate."""
    import json

    from webpolicy.engine.decision import Decision
    from webpolicy.safeguarding.events import RequestFacts

    written: list[dict] = []
    shared.gate.log_writer = type("Writer", (), {"write": staticmethod(written.append)})()
    try:
        decision = Decision("block", "learner", "default", "gambling", "Gambling", "medium")
        shared.gate.record(decision, RequestFacts("10.10.0.5", user, "GET", None, host, agent))
    finally:
        shared.gate.log_writer = None
    line = json.dumps(written[0], ensure_ascii=False)
    line.encode("utf-8")
    assert "\n" not in line and "\r" not in line
