"""safesearch.py: which engines, which changes, and nothing else touched."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.helpers import learner_policy_with
from webpolicy.engine.safesearch import (
    GOOGLE_HOSTS,
    YOUTUBE_HOSTS,
    add_preference,
    engine_for,
    force_params,
    rewrite,
    set_cookie_field,
)
from webpolicy.policy.model import PolicyError, SafeSearch

ON = SafeSearch(enforce=True, youtube="moderate")
STRICT = SafeSearch(enforce=True, youtube="strict")
OFF = SafeSearch()
YOUTUBE_ONLY = SafeSearch(enforce=False, youtube="moderate")


def go(host, target, settings=ON, headers=None, cookies=None):
    return rewrite(host, target, settings, headers or {}, cookies or {})


# -- which hosts ----------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["www.google.com", "google.com", "www.google.co.uk",
                                  "google.co.uk", "www.google.com.au", "www.google.cat",
                                  "www.google.de", "www.google.co.jp", "www.google.com.br"])
def test_google_country_domains(host):
    assert engine_for(host) == "google"


@pytest.mark.parametrize("host", ["mail.google.com", "maps.google.co.uk", "google.evil.com",
                                  "www.google.co.uk.evil.com", "www.google.example",
                                  "notgoogle.com", "www.google.co.zz"])
def test_not_google_search(host):
    assert engine_for(host) is None


def test_google_host_list_is_sane():
    assert len(GOOGLE_HOSTS) > 350          # ~190 domains, with and without www
    assert all(h == h.lower() and not h.endswith(".") for h in GOOGLE_HOSTS)


@pytest.mark.parametrize("host,engine", [
    ("www.bing.com", "bing"), ("bing.com", "bing"), ("cn.bing.com", "bing"),
    ("duckduckgo.com", "duckduckgo"), ("html.duckduckgo.com", "duckduckgo"),
    ("links.duckduckgo.com", "duckduckgo"), ("notduckduckgo.com", None),
    ("www.youtube.com", "youtube"), ("m.youtube.com", "youtube"),
    ("youtubei.googleapis.com", "youtube"), ("youtube.googleapis.com", "youtube"),
    ("www.youtube-nocookie.com", "youtube"), ("googleapis.com", None),
    ("fonts.googleapis.com", None), ("example.org", None),
])
def test_other_engines(host, engine):
    assert engine_for(host) == engine


def test_youtube_hosts_are_googles_list():
    assert {"www.youtube.com", "m.youtube.com", "youtubei.googleapis.com",
            "youtube.googleapis.com", "www.youtube-nocookie.com"} <= YOUTUBE_HOSTS


# -- Google ---------------------------------------------------------------------------------

def test_google_search_forced_and_other_parameters_kept_byte_for_byte():
    change = go("www.google.co.uk", "/search?q=a%20b+c&safe=off&hl=en-GB")
    assert change.engine == "google"
    assert change.target == "/search?q=a%20b+c&hl=en-GB&safe=active&ssui=on"
    assert not change.headers and not change.cookies


@pytest.mark.parametrize("sneaky", ["SAFE=off", "s%61fe=off", "Safe=images", "safe",
                                    "ssui=off", "safe=off&safe=off"])
def test_google_every_spelling_of_the_parameter_replaced(sneaky):
    change = go("www.google.com", f"/search?{sneaky}&q=x")
    assert change.target == "/search?q=x&safe=active&ssui=on"


@pytest.mark.parametrize("path", ["/", "/search", "/webhp", "/imghp", "/complete/search",
                                  "/safesearch"])
def test_google_search_and_home_paths(path):
    assert go("google.com", path).target == f"{path}?safe=active&ssui=on"


@pytest.mark.parametrize("target", ["/maps?safe=off", "/url?q=https://x&usg=abc",
                                    "/images/branding/logo.png", "/searchbyimage/x"])
def test_google_other_paths_untouched(target):
    assert go("www.google.com", target) is None


def test_google_already_safe_is_no_change():
    assert go("www.google.com", "/search?q=x&safe=active&ssui=on") is None


def test_google_untouched_when_not_enforced():
    assert go("www.google.com", "/search?q=x&safe=off", OFF) is None
    assert go("www.google.com", "/search?q=x&safe=off", YOUTUBE_ONLY) is None


# -- Bing -----------------------------------------------------------------------------------

def test_bing_parameter_cookie_and_prefer():
    change = go("www.bing.com", "/search?q=x&ADLT=off",
                headers={"prefer": "return=minimal"},
                cookies={"SRCHHPGUSR": "SRCHLANG=en&ADLT=OFF&DPR=1.0"})
    assert change.target == "/search?q=x&adlt=strict"
    assert dict(change.headers) == {"Prefer": "return=minimal, safe"}
    assert dict(change.cookies) == {"SRCHHPGUSR": "SRCHLANG=en&DPR=1.0&ADLT=STRICT"}


def test_bing_already_strict_changes_nothing():
    assert go("www.bing.com", "/search?q=x&adlt=strict", headers={"prefer": "safe"},
              cookies={"SRCHHPGUSR": "SRCHLANG=en&ADLT=STRICT"}) is None


def test_bing_without_cookie_or_query():
    change = go("bing.com", "/")
    assert change.target == "/?adlt=strict"
    assert dict(change.cookies) == {"SRCHHPGUSR": "ADLT=STRICT"}
    assert dict(change.headers) == {"Prefer": "safe"}


# -- DuckDuckGo -----------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("q=cats+%21safeoff&kp=-2", "q=cats&kp=1"),
    ("q=%21SafeOff+cats", "q=cats&kp=1"),
    ("q=safeoff%21+cats&kp=-1", "q=cats&kp=1"),
    ("q=is+safeoff+a+word", "q=is+safeoff+a+word&kp=1"),     # only the bang is removed
])
def test_duckduckgo_kp_and_safeoff_bang(query, expected):
    change = go("duckduckgo.com", f"/?{query}")
    assert change.target == f"/?{expected}"
    assert dict(change.cookies) == {"p": "1"}
    assert dict(change.form) == {"kp": "1"}


def test_duckduckgo_result_endpoints_carry_p_and_ex():
    change = go("links.duckduckgo.com", "/d.js?q=x&p=-1&ex=-2&vqd=4-1")
    assert parse_qsl(change.target.partition("?")[2]) == [
        ("q", "x"), ("vqd", "4-1"), ("kp", "1"), ("p", "1"), ("ex", "-1")]


def test_duckduckgo_cookie_already_strict():
    change = go("duckduckgo.com", "/?q=x&kp=1", cookies={"p": "1"})
    assert change.target is None and not change.cookies
    assert change.form                     # a form post still gets kp=1


# -- YouTube --------------------------------------------------------------------------------

@pytest.mark.parametrize("settings,sent,expected", [
    (ON, None, "Moderate"), (ON, "Off", "Moderate"), (ON, "garbage", "Moderate"),
    (ON, "Strict", None), (ON, "moderate", None),
    (STRICT, None, "Strict"), (STRICT, "Moderate", "Strict"), (STRICT, "STRICT", None),
    (YOUTUBE_ONLY, None, "Moderate"),
])
def test_youtube_header(settings, sent, expected):
    headers = {"youtube-restrict": sent} if sent else {}
    change = go("www.youtube.com", "/watch?v=x", settings, headers)
    if expected is None:
        assert change is None
    else:
        assert dict(change.headers) == {"YouTube-Restrict": expected}
        assert change.target is None


def test_youtube_off_adds_nothing():
    assert go("www.youtube.com", "/", SafeSearch(enforce=True, youtube="off")) is None


def test_youtube_mode_does_not_touch_search_engines():
    assert go("www.bing.com", "/search?q=x", YOUTUBE_ONLY) is None


# -- helpers --------------------------------------------------------------------------------

_part = st.text(alphabet="abcxyz019%+-._~", min_size=1, max_size=8)


@given(st.lists(st.tuples(_part, _part), max_size=6), st.sampled_from(["/", "/search"]))
def test_force_params_sets_each_once_and_keeps_the_rest_in_order(pairs, path):
    query = "&".join(f"{k}={v}" for k, v in pairs)
    target = f"{path}?{query}" if query else path
    result = force_params(target, {"safe": "active", "ssui": "on"})
    assert result.startswith(path + "?")
    parts = result.partition("?")[2].split("&")
    assert parts[-2:] == ["safe=active", "ssui=on"]
    kept = [f"{k}={v}" for k, v in pairs]
    assert parts[:-2] == [p for p in kept if _decoded_name(p) not in ("safe", "ssui")]


def _decoded_name(part: str) -> str:
    return unquote_plus(part.partition("=")[0]).lower()


def test_force_params_is_idempotent():
    once = force_params("/search?q=x&safe=off", {"safe": "active"})
    assert force_params(once, {"safe": "active"}) == once


@pytest.mark.parametrize("prefer,expected", [
    ("", "safe"), ("safe", "safe"), ("SAFE", "SAFE"), ("return=minimal", "return=minimal, safe"),
    ("respond-async, wait=10", "respond-async, wait=10, safe"), ("safe; x=1", "safe; x=1"),
])
def test_add_preference(prefer, expected):
    assert add_preference(prefer, "safe") == expected


@pytest.mark.parametrize("value,expected", [
    (None, "ADLT=STRICT"), ("", "ADLT=STRICT"), ("ADLT=OFF", "ADLT=STRICT"),
    ("A=1&adlt=off&B=2", "A=1&B=2&ADLT=STRICT"), ("A=1", "A=1&ADLT=STRICT"),
])
def test_set_cookie_field(value, expected):
    assert set_cookie_field(value, "ADLT", "STRICT") == expected


# -- the policy schema ----------------------------------------------------------------------

def load(tmp_path: Path, safe: str):
    return learner_policy_with(tmp_path, "safe_search", safe)


def test_schema_reads_safe_search(tmp_path):
    profile = load(tmp_path, "{enforce: true, youtube: strict}").profiles["learner"]
    assert profile.safe_search == SafeSearch(enforce=True, youtube="strict")


def test_schema_defaults_are_off(tmp_path):
    assert load(tmp_path, "{}").profiles["learner"].safe_search == SafeSearch(False, "off")


@pytest.mark.parametrize("bad,message", [
    ("{youtube: restricted}", "youtube"),
    ("{enforce: maybe}", "enforce"),
    ("{block_unenforceable: true}", "block_unenforceable"),     # now the unsafe_search list
])
def test_schema_errors_name_file_and_line(tmp_path, bad, message):
    with pytest.raises(PolicyError) as error:
        load(tmp_path, bad)
    text = str(error.value)
    assert f"{tmp_path / 'policy.yaml'}:6:" in text and message in text
