"""Safe search through real mitmdump: what each engine's stand-in upstream actually received."""

from __future__ import annotations

import uuid

import pytest

from .conftest import LEARNER_IP, STAFF_IP, write_policy
from .proxy import Proxy, free_port

pytestmark = pytest.mark.e2e

STRICT_IP = "127.0.0.5"

POLICY = """\
version: "e2e-safesearch"
default_profile: learner
profiles:
  learner:
    block: [adult]
    safe_search: {{enforce: true, youtube: moderate}}
  strict:
    block: [adult]
    safe_search: {{enforce: true, youtube: strict}}
  staff:
    block: []
    on_error: allow
clients:
  networks:
    - {{cidr: {staff_ip}/32, profile: staff}}
    - {{cidr: {learner_ip}/32, profile: learner}}
    - {{cidr: {strict_ip}/32, profile: strict}}
lists:
  ctiru: {{statutory: true, category: Terrorist content (CTIRU), severity: critical, format: urls, sources: [lists/ctiru.txt]}}
  adult: {{category: Pornography, severity: high, format: ut1, sources: [lists/adult]}}
deny: [www.google.com/blocked-search]
logging: {{directory: logs, retention_days: 30}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
"""


@pytest.fixture(scope="module")
def ss_proxy(sites, tmp_path_factory):
    """One private proxy for the module: these tests only read."""
    directory = tmp_path_factory.mktemp("safesearch-proxy")
    policy_path, metrics_port = write_policy(directory, POLICY, strict_ip=STRICT_IP)
    proxy = Proxy(directory, policy_path, free_port(), metrics_port, sites.hosts_file(),
                  sites.ca).start()
    yield proxy
    proxy.stop()


def seen(sites, site: str, marker: str):
    """The one request `site` received whose path carries `marker`."""
    found = [r for r in sites.log.requests_to(site) if marker in r.path]
    assert len(found) == 1, f"{site} received {len(found)} requests with {marker}"
    return found[0]


def marker() -> str:
    return uuid.uuid4().hex[:12]


def query(path: str) -> list[str]:
    return path.partition("?")[2].split("&")


# -- Google ---------------------------------------------------------------------------------

@pytest.mark.parametrize("site,scheme", [("www.google.co.uk", "https"),
                                         ("www.google.com", "https"),
                                         ("www.google.com", "http")])
def test_google_search_forced_safe_for_learner(ss_proxy, sites, site, scheme):
    m = marker()
    result = ss_proxy.curl(f"{scheme}://{site}/search?q={m}+cats&safe=off&SAFE=images",
                           client_ip=LEARNER_IP)
    assert result.status == 200, result.stderr
    params = query(seen(sites, site, m).path)
    assert params == [f"q={m}+cats", "safe=active", "ssui=on"]


def test_google_non_search_path_untouched(ss_proxy, sites):
    m = marker()
    assert ss_proxy.curl(f"https://www.google.co.uk/maps/{m}?safe=off",
                         client_ip=LEARNER_IP).status == 200
    assert seen(sites, "www.google.co.uk", m).path == f"/maps/{m}?safe=off"


def test_google_untouched_for_staff(ss_proxy, sites):
    m = marker()
    assert ss_proxy.curl(f"https://www.google.co.uk/search?q={m}&safe=off",
                         client_ip=STAFF_IP).status == 200
    assert seen(sites, "www.google.co.uk", m).path == f"/search?q={m}&safe=off"


def test_blocked_search_is_not_rewritten_and_never_sent(ss_proxy, sites):
    before = sites.log.contacted("www.google.com")
    result = ss_proxy.curl("https://www.google.com/blocked-search?q=x&safe=off", "-i",
                           client_ip=LEARNER_IP)
    assert result.status == 403
    assert "Blocked by local policy" in result.body
    assert sites.log.contacted("www.google.com") == before


def test_http2_search_rewritten(ss_proxy, sites):
    m = marker()
    result = ss_proxy.curl(f"https://www.google.com/search?q={m}&safe=off", "--http2",
                           client_ip=LEARNER_IP)
    assert result.status == 200
    assert query(seen(sites, "www.google.com", m).path)[-2:] == ["safe=active", "ssui=on"]


# -- Bing -----------------------------------------------------------------------------------

def test_bing_strict_parameter_cookie_and_prefer_header(ss_proxy, sites):
    m = marker()
    result = ss_proxy.curl(f"https://www.bing.com/search?q={m}&adlt=off",
                           "-H", "Cookie: SRCHHPGUSR=SRCHLANG=en&ADLT=OFF&DPR=1.0; MUID=abc",
                           "-H", "Prefer: return=minimal", client_ip=LEARNER_IP)
    assert result.status == 200
    request = seen(sites, "www.bing.com", m)
    assert query(request.path) == [f"q={m}", "adlt=strict"]
    assert "SRCHHPGUSR=SRCHLANG=en&DPR=1.0&ADLT=STRICT" in request.headers["cookie"]
    assert "MUID=abc" in request.headers["cookie"]
    assert request.headers["prefer"] == "return=minimal, safe"


def test_bing_without_cookie_gets_one(ss_proxy, sites):
    m = marker()
    assert ss_proxy.curl(f"http://www.bing.com/images/search?q={m}",
                         client_ip=LEARNER_IP).status == 200
    request = seen(sites, "www.bing.com", m)
    assert request.headers["cookie"] == "SRCHHPGUSR=ADLT=STRICT"
    assert request.headers["prefer"] == "safe"


# -- DuckDuckGo -----------------------------------------------------------------------------

def test_duckduckgo_kp_cookie_and_safeoff_bang(ss_proxy, sites):
    m = marker()
    result = ss_proxy.curl(f"https://duckduckgo.com/?q={m}+%21safeoff&kp=-2",
                           "-H", "Cookie: p=-2; l=uk-en", client_ip=LEARNER_IP)
    assert result.status == 200
    request = seen(sites, "duckduckgo.com", m)
    assert query(request.path) == [f"q={m}", "kp=1"]
    assert "p=1" in request.headers["cookie"].split("; ")
    assert "l=uk-en" in request.headers["cookie"]


def test_duckduckgo_form_post_forced(ss_proxy, sites):
    m = marker()
    result = ss_proxy.curl(f"https://duckduckgo.com/html/{m}", "--data", "q=x&kp=-2",
                           client_ip=LEARNER_IP)
    assert result.status == 200
    request = seen(sites, "duckduckgo.com", m)
    # The site does not keep bodies; the length shows the form was rewritten to q=x&kp=1.
    assert request.headers["content-length"] == str(len("q=x&kp=1"))


# -- YouTube --------------------------------------------------------------------------------

@pytest.mark.parametrize("client_ip,sent,expected", [
    (LEARNER_IP, None, "Moderate"),
    (LEARNER_IP, "Off", "Moderate"),
    (LEARNER_IP, "Strict", "Strict"),          # a stricter client setting is kept
    (STRICT_IP, None, "Strict"),
    (STRICT_IP, "Moderate", "Strict"),
    (STRICT_IP, "strict", "strict"),
    (STAFF_IP, None, None),                    # off: no header added
    (STAFF_IP, "Off", "Off"),                  # ... and the client's left alone
])
def test_youtube_restrict_modes(ss_proxy, sites, client_ip, sent, expected):
    m = marker()
    args = ["-H", f"YouTube-Restrict: {sent}"] if sent else []
    assert ss_proxy.curl(f"https://www.youtube.com/results?search_query={m}", *args,
                         client_ip=client_ip).status == 200
    assert seen(sites, "www.youtube.com", m).headers.get("youtube-restrict") == expected
