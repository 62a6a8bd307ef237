"""addon_safesearch.py on mitmproxy's own test flows: applied to allowed flows only, per
profile, and failing closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from tests.unit.helpers import engine_from, policy_yaml
from webpolicy.proxy.addon import WebPolicy
from webpolicy.proxy.stages.safesearch import SafeSearch

POLICY = policy_yaml(
    learner={"block": ["adult"], "safe_search": "{enforce: true, youtube: moderate}"},
    staff={"block": [], "on_error": "allow"},
    lists={"adult": "{category: Pornography, sources: [adult.txt]}"})


@pytest.fixture
def policy(tmp_path: Path) -> WebPolicy:
    webpolicy = WebPolicy()
    webpolicy.gate.engine = engine_from(tmp_path, POLICY, {"adult.txt": "adult.example\n"})
    return webpolicy


def flow(host: str, path: str, client_ip: str = "10.10.0.5", method: str = "GET",
         headers: tuple = (), content: bytes = b"", scheme: str = "https") -> http.HTTPFlow:
    request = tutils.treq(host=host, port=443 if scheme == "https" else 80, path=path.encode(),
                          scheme=scheme.encode(), method=method.encode(), content=content,
                          headers=http.Headers([(b"host", host.encode()),
                                                *((k.encode(), v.encode()) for k, v in headers)]))
    f = tflow.tflow(req=request)
    f.client_conn.peername = (client_ip, 50000)
    return f


def test_learner_search_rewritten(policy):
    f = flow("www.google.co.uk", "/search?q=x&safe=off")
    SafeSearch(policy.gate).requestheaders(f)
    assert f.request.path == "/search?q=x&safe=active&ssui=on"
    assert f.response is None


def test_staff_untouched(policy):
    f = flow("www.google.co.uk", "/search?q=x&safe=off", client_ip="10.20.0.9")
    SafeSearch(policy.gate).requestheaders(f)
    assert f.request.path == "/search?q=x&safe=off"


def test_flow_with_a_response_is_never_touched(policy):
    f = flow("www.google.co.uk", "/search?q=x&safe=off")
    f.response = http.Response.make(403, b"blocked")
    SafeSearch(policy.gate).requestheaders(f)
    SafeSearch(policy.gate).request(f)
    assert f.request.path == "/search?q=x&safe=off"
    assert f.response.status_code == 403


def test_headers_and_cookies_applied(policy):
    f = flow("www.bing.com", "/search?q=x",
             headers=(("cookie", "MUID=1; SRCHHPGUSR=ADLT=OFF&X=1"), ("prefer", "wait=5")))
    SafeSearch(policy.gate).requestheaders(f)
    assert f.request.path == "/search?q=x&adlt=strict"
    assert f.request.cookies["SRCHHPGUSR"] == "X=1&ADLT=STRICT"
    assert f.request.cookies["MUID"] == "1"
    assert f.request.headers["prefer"] == "wait=5, safe"


def test_youtube_header(policy):
    f = flow("www.youtube.com", "/watch?v=1")
    SafeSearch(policy.gate).requestheaders(f)
    assert f.request.headers["YouTube-Restrict"] == "Moderate"


def test_host_header_decides_the_engine(policy):
    """A request to another address carrying a search engine's Host is still rewritten."""
    f = flow("www.google.com", "/search?q=x&safe=off")
    f.request.host = "203.0.113.7"
    f.request.headers["host"] = "www.google.com"
    SafeSearch(policy.gate).requestheaders(f)
    assert f.request.path.endswith("safe=active&ssui=on")


@pytest.mark.parametrize("content_type,body,expected", [
    ("application/x-www-form-urlencoded", b"q=x&kp=-2", b"q=x&kp=1"),
    ("application/json", b'{"kp": -2}', b'{"kp": -2}'),
])
def test_duckduckgo_form(policy, content_type, body, expected):
    f = flow("html.duckduckgo.com", "/html/", method="POST", content=body,
             headers=(("content-type", content_type),))
    addon = SafeSearch(policy.gate)
    addon.requestheaders(f)
    addon.request(f)
    assert f.request.content == expected
    assert f.request.path == "/html/?kp=1"


def test_an_error_fails_closed_for_a_learner(policy, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr("webpolicy.engine.safesearch.rewrite", broken)
    f = flow("www.google.co.uk", "/search?q=x&safe=off")
    SafeSearch(policy.gate).requestheaders(f)
    assert f.response is not None and f.response.status_code == 503
    assert f.request.path == "/search?q=x&safe=off"


def test_an_error_is_logged_not_blocked_for_on_error_allow(policy, monkeypatch):
    monkeypatch.setattr("webpolicy.engine.safesearch.rewrite",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    f = flow("www.google.co.uk", "/search?q=x", client_ip="10.20.0.9")
    SafeSearch(policy.gate).requestheaders(f)
    assert f.response is None      # staff: on_error allow; the error is recorded, not enforced


def test_no_policy_loaded_leaves_flow_to_webpolicy(policy):
    policy.gate.engine = None
    f = flow("www.google.co.uk", "/search?q=x&safe=off")
    SafeSearch(policy.gate).requestheaders(f)
    assert f.response is None and f.request.path == "/search?q=x&safe=off"
