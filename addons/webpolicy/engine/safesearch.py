"""Safe search: the request changes that make a search engine return only safe results.

Given a canonical host, the request target (path and query) and the client's profile settings,
`rewrite()` says which query parameters, headers, cookies and form fields to force.  The proxy
applies them to every allowed, intercepted request, so a learner cannot switch safe search off:
whatever the browser sends, the engine receives the safe setting.  Knows nothing of mitmproxy.

What each engine documents and honours:

- **Google** (every country domain in https://www.google.com/supported_domains):
  `safe=active` (and `ssui=on`, which shows the locked setting) on search and home-page URLs,
  replacing whatever the client sent; this is what Chrome's ForceGoogleSafeSearch policy does.
  Google's network-wide lock is DNS (www.google.* as a CNAME of forcesafesearch.google.com);
  the gateway follows it automatically when its own resolver applies it (docs/circumvention.md).
- **Bing**: `adlt=strict` on every URL, `ADLT=STRICT` inside the `SRCHHPGUSR` preference
  cookie (the setting Bing keeps client-side), and the `Prefer: safe` hint (RFC 8674), which
  Bing honours.  Network-wide: www.bing.com as a CNAME of strict.bing.com.
- **DuckDuckGo**: `kp=1` on every page ("append &kp=1 to all duckduckgo.com pages"), the same
  setting as its cookie `p=1` (DuckDuckGo's cookies are its URL settings without the `k`), and
  `p=1` / `ex=-1` on the result endpoints (`/d.js`, `/i.js` ...), which carry the setting that
  way.  The `!safeoff` bang is removed from queries.  Form posts (html.duckduckgo.com) get `kp=1`.
- **YouTube**: the `YouTube-Restrict: Strict|Moderate` header on the hosts Google lists for
  it.  A stricter value already set by the client (e.g. Chrome's ForceYouTubeRestrict) is kept.

Engines with no lock a proxy can apply are not rewritten here; they are an ordinary list that
a profile blocks (blocklists/circumvention/search-engines.txt).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote_plus

from webpolicy.engine.searchengines import GOOGLE_HOSTS, YOUTUBE_HOSTS, search_host
from webpolicy.policy.model import SafeSearch

__all__ = ["Rewrite", "rewrite", "engine_for", "force_params", "GOOGLE_HOSTS", "YOUTUBE_HOSTS"]

# Search, home and settings pages (as Chrome's ForceGoogleSafeSearch), plus image/video search
# and the suggestions shown while typing.  Other paths (maps, accounts, static files) are left.
GOOGLE_PATHS = frozenset({"/", "/search", "/webhp", "/imghp", "/images", "/videohp",
                          "/complete/search", "/safesearch"})
GOOGLE_PARAMS = {"safe": "active", "ssui": "on"}

BING_PARAMS = {"adlt": "strict"}
BING_COOKIE, BING_COOKIE_FIELD = "SRCHHPGUSR", "ADLT"

DUCKDUCKGO_PARAMS = {"kp": "1"}
DUCKDUCKGO_RESULT_PARAMS = {"kp": "1", "p": "1", "ex": "-1"}   # /d.js, /i.js, /v.js, /news.js
_SAFEOFF = re.compile(r"(?i)^(?:!safeoff|safeoff!)$")

YOUTUBE_HEADER = "YouTube-Restrict"
_YOUTUBE_RANK = {"off": 0, "moderate": 1, "strict": 2}


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What to change in one request; empty fields change nothing."""

    engine: str                                   # google | bing | duckduckgo | youtube
    target: str | None = None                     # the new path?query, when it changes
    headers: tuple[tuple[str, str], ...] = ()     # set, replacing what the client sent
    cookies: tuple[tuple[str, str], ...] = ()     # set, replacing the client's value
    form: tuple[tuple[str, str], ...] = ()        # urlencoded form fields to force (POST)

    def __bool__(self) -> bool:
        return bool(self.target is not None or self.headers or self.cookies or self.form)


def engine_for(host: str) -> str | None:
    """Which search engine's safe-search rules apply to a canonical host, if any."""
    found = search_host(host)
    return found.engine if found is not None and found.safe_search else None


def rewrite(host: str, target: str, settings: SafeSearch, headers: Mapping[str, str],
            cookies: Mapping[str, str]) -> Rewrite | None:
    """The changes safe search needs for this request, or None.

    `host` is canonical; `target` is the request's path with its query; `headers` is looked
    up with lower-case names (mitmproxy's Headers is case-insensitive); `cookies` by name.
    """
    if not settings.enforce and settings.youtube == "off":
        return None
    engine = engine_for(host)
    if engine == "youtube":
        change = _youtube(settings.youtube, headers)
    elif engine is None or not settings.enforce:
        return None
    elif engine == "google":
        change = _google(target)
    elif engine == "bing":
        change = _bing(target, headers, cookies)
    else:
        change = _duckduckgo(target, cookies)
    return change or None


def _google(target: str) -> Rewrite:
    if _path(target) not in GOOGLE_PATHS:
        return Rewrite("google")
    return Rewrite("google", target=_changed(target, force_params(target, GOOGLE_PARAMS)))


def _bing(target: str, headers: Mapping[str, str], cookies: Mapping[str, str]) -> Rewrite:
    prefer = headers.get("prefer") or ""
    wanted = add_preference(prefer, "safe")
    preference = cookies.get(BING_COOKIE)
    strict = set_cookie_field(preference, BING_COOKIE_FIELD, "STRICT")
    return Rewrite(
        "bing",
        target=_changed(target, force_params(target, BING_PARAMS)),
        headers=(("Prefer", wanted),) if wanted != prefer else (),
        cookies=((BING_COOKIE, strict),) if strict != preference else (),
    )


def _duckduckgo(target: str, cookies: Mapping[str, str]) -> Rewrite:
    params = DUCKDUCKGO_RESULT_PARAMS if _path(target).endswith(".js") else DUCKDUCKGO_PARAMS
    safe = force_params(_edit_param(target, "q", _without_safeoff), params)
    return Rewrite(
        "duckduckgo",
        target=_changed(target, safe),
        cookies=(("p", "1"),) if cookies.get("p") != "1" else (),
        form=tuple(DUCKDUCKGO_PARAMS.items()),
    )


def _youtube(mode: str, headers: Mapping[str, str]) -> Rewrite:
    sent = (headers.get(YOUTUBE_HEADER.lower()) or "").strip().lower()
    if _YOUTUBE_RANK.get(sent, 0) >= _YOUTUBE_RANK[mode]:
        return Rewrite("youtube")
    return Rewrite("youtube", headers=((YOUTUBE_HEADER, mode.title()),))


# -- string helpers: edit only what must change, leave every other byte as the client sent it --

def force_params(target: str, params: Mapping[str, str]) -> str:
    """`target` with each of `params` set exactly once, at the end of the query.

    Any existing occurrence is removed first, whatever its case or percent-encoding
    (`SAFE=off`, `s%61fe=off`), so the engine cannot see a contradicting value.
    """
    path, _, query = target.partition("?")
    names = {name.lower() for name in params}
    kept = [part for part in query.split("&") if part and _name(part) not in names]
    kept += [f"{name}={value}" for name, value in params.items()]
    return f"{path}?{'&'.join(kept)}"


def _edit_param(target: str, name: str, edit) -> str:
    """Apply `edit` to the decoded value of every `name` parameter; re-encode only changes."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = query.split("&")
    for i, part in enumerate(parts):
        if _name(part) == name:
            value = unquote_plus(part.partition("=")[2])
            edited = edit(value)
            if edited != value:
                parts[i] = f"{part.partition('=')[0]}={quote_plus(edited)}"
    return f"{path}?{'&'.join(parts)}"


def _without_safeoff(query: str) -> str:
    words = query.split()
    kept = [w for w in words if not _SAFEOFF.match(w)]
    return " ".join(kept) if len(kept) != len(words) else query


def add_preference(prefer: str, token: str) -> str:
    """A `Prefer` header value that includes `token` (RFC 7240: comma-separated)."""
    present = {p.split(";")[0].split("=")[0].strip().lower() for p in prefer.split(",")}
    if token in present:
        return prefer
    return f"{prefer}, {token}" if prefer.strip() else token


def set_cookie_field(value: str | None, field: str, setting: str) -> str:
    """`field=setting` inside an `&`-separated preference cookie, keeping every other field."""
    fields = [f for f in (value or "").split("&") if f]
    kept = [f for f in fields if f.partition("=")[0].upper() != field.upper()]
    return "&".join(kept + [f"{field}={setting}"])


def _name(part: str) -> str:
    return unquote_plus(part.partition("=")[0]).lower()


def _path(target: str) -> str:
    return target.partition("?")[0]


def _changed(old: str, new: str) -> str | None:
    return new if new != old else None
