"""flows.py on mitmproxy's own test flows: which hosts a request is decided on, per mode, and
the Host header read without pretty_host's cost but with its answer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.net.check import is_valid_host
from mitmproxy.options import Options
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from webpolicy.proxy.flows import (
    NAMED_DESTINATION_MODES,
    client_ip,
    early_connect_hosts,
    make_response,
    names_destination,
    request_hosts,
)


def flow(connection_host: str, host_header: str | None, mode: str = "regular",
         http_version: str = "HTTP/1.1") -> http.HTTPFlow:
    headers = [] if host_header is None else [(b"host", host_header.encode("utf-8",
                                                                           "surrogateescape"))]
    request = tutils.treq(host=connection_host, port=80, path=b"/", scheme=b"http",
                          headers=http.Headers(headers), http_version=http_version.encode())
    f = tflow.tflow(req=request)
    f.client_conn.proxy_mode = ProxyMode.parse(mode)
    return f


def test_host_header_and_connection_host():
    assert request_hosts(flow("203.0.113.9", "blocked.example:8080")) == \
        ("blocked.example", "203.0.113.9")


def test_transparent_mode_keeps_the_address_connected_to():
    assert request_hosts(flow("203.0.113.9", "site.example", mode="transparent")) == \
        ("site.example", "203.0.113.9")


def test_reverse_mode_upstream_is_configuration_not_a_client_choice():
    f = flow("127.0.0.1", "site.example", mode="reverse:http://127.0.0.1:8080")
    assert request_hosts(f) == ("site.example", "site.example")


def test_no_host_header_falls_back_to_the_connection_host():
    assert request_hosts(flow("site.example", None)) == ("site.example", "site.example")


@pytest.mark.parametrize("authority", [
    "[2001:db8::1]:8080", "[::ffff:127.0.0.1]", "ÉXAMPLE.com:80", "bücher.de",
    "a b.example", "evil.example:80:80", "evil.example@good.example", "x.example:",
    "xn--bcher-kva.example", "EXAMPLE.COM.:443", "",
])
def test_unusual_host_headers_read_as_mitmproxy_reads_them(authority):
    f = flow("upstream.example", authority)
    assert request_hosts(f)[0] == flow("upstream.example", authority).request.pretty_host


@given(st.from_regex(r"[A-Za-z0-9_.-]{1,70}(:[0-9]{1,5})?", fullmatch=True))
def test_plain_host_headers_as_pretty_host(authority):
    """Where mitmproxy accepts the host, the fast path gives its answer exactly; where it
    does not, mitmproxy returns the whole header (port included) and the fast path the host
    part: the name the client asked for either way, and canonicalisation judges it next."""
    expected = flow("upstream.example", authority).request.pretty_host
    host = request_hosts(flow("upstream.example", authority))[0]
    name, _, port = authority.partition(":")
    if is_valid_host(name) and (not port or int(port) <= 65535):
        assert host == expected
    else:
        assert host == name


def test_http2_authority_is_the_host():
    f = flow("upstream.example", None, http_version="HTTP/2.0")
    f.request.authority = "site.example:443"
    assert request_hosts(f)[0] == "site.example"


def test_hosts_are_read_once_per_flow():
    f = flow("203.0.113.9", "first.example")
    first = request_hosts(f)
    f.request.headers["host"] = "second.example"      # e.g. a later rewrite
    assert request_hosts(f) is first


def test_client_ip():
    f = flow("site.example", "site.example")
    f.client_conn.peername = ("10.0.0.7", 50000)
    assert client_ip(f) == "10.0.0.7"
    f.client_conn.peername = None
    assert client_ip(f) == ""


@pytest.mark.parametrize("status", [403, 451, 503])
def test_make_response_equals_mitmproxys_own(status):
    """The cloned response is what Response.make builds: same fields, checked types."""
    body = "Blocked: é".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"x-webpolicy-reference", b"WP-1")]
    ours = make_response(status, body, headers)
    theirs = http.Response.make(status, body, dict((k.decode(), v.decode()) for k, v in headers))
    assert ours.status_code == theirs.status_code and ours.reason == theirs.reason
    assert ours.http_version == theirs.http_version
    assert ours.content == theirs.content == body
    assert list(ours.headers.fields) == list(theirs.headers.fields)
    assert ours.timestamp_start and ours.timestamp_end
    http.ResponseData.__post_init__(ours.data)        # mitmproxy's own type check passes


def test_make_response_never_shares_state():
    first = make_response(403, b"one", [])
    second = make_response(503, b"two", [])
    first.headers["x-test"] = "1"
    assert "x-test" not in second.headers and second.content == b"two"
    assert first.data is not second.data


@pytest.mark.parametrize("spec", ["regular", "upstream:http://127.0.0.1:3128", "socks5",
                                  "transparent", "reverse:http://127.0.0.1:8080", "dns",
                                  "wireguard", "local"])
def test_names_destination_agrees_with_isinstance(spec):
    mode = ProxyMode.parse(spec)
    assert names_destination(mode) == isinstance(mode, NAMED_DESTINATION_MODES)


@pytest.mark.parametrize("fields", [
    [(b"Host", b"a.example")], [(b"HOST", b"a.example:81")],
    [(b"host", b"a.example"), (b"host", b"b.example")],        # repeated: mitmproxy folds
    [(b"host", b"\xff\xfe.example")],                          # not UTF-8
    [(b"x-host", b"a.example"), (b"hostx", b"b.example")],     # not the Host header
    [],
])
def test_host_header_read_as_mitmproxy_reads_it(fields):
    f = flow("upstream.example", None)
    f.request.headers = http.Headers(fields)
    assert request_hosts(f)[0] == f.request.pretty_host


@pytest.mark.parametrize("mode, address, sni, expected", [
    ("regular", "Site.Example.", None, ("site.example",)),    # CONNECT names the host
    ("regular", "site.example", "site.example", ("site.example",)),
    ("socks5", "site.example", None, ("site.example",)),
    ("regular", "203.0.113.9", None, None),                    # an address names no site
    ("regular", "[2001:db8::1]", None, None),
    ("regular", "3221225991", None, None),                     # 192.0.2.7, spelt as a number
    ("transparent", "203.0.113.9", "site.example", None),      # the client picked the address
    ("wireguard", "203.0.113.9", "site.example", None),
    # reverse proxy: the configured upstream, and the SNI mitmproxy may pass on to it
    ("reverse:https://127.0.0.1:8443", "127.0.0.1", None, ("127.0.0.1",)),
    ("reverse:https://127.0.0.1:8443", "127.0.0.1", "127.0.0.1", ("127.0.0.1",)),
    ("reverse:https://front.example", "front.example", "site.example",
     ("front.example", "site.example")),
    ("reverse:https://front.example", "front.example", "203.0.113.9", None),
])
def test_early_connect_hosts(mode, address, sni, expected):
    assert early_connect_hosts(_context(mode, (address, 443)), sni) == expected


def test_early_connect_hosts_without_an_address():
    assert early_connect_hosts(_context("regular", None), None) is None


def _context(mode: str, address: tuple[str, int] | None) -> Context:
    client = tflow.tclient_conn()
    client.proxy_mode = ProxyMode.parse(mode)
    context = Context(client, Options())
    context.server.address = address
    return context
