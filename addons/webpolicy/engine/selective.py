"""Selective TLS inspection (issue #19): what of a host, whatever the client, rules out
passing its TLS connections through uninspected.

With `tls: {inspect: selective}` a connection is passed through only when nothing needs its
content.  Part of that depends on the client (its profile's lists, safe search: see
decision.may_pass_through); the part here does not, so the Engine memoises it per host
(`Engine.tls_kind`) and a new connection costs one dict lookup for it:

- a host under one that can front for other sites (a CDN or an application platform: the
  name says nothing of the site behind it, and one connection may carry requests for many);
- a host with URL rules under it (a path must be seen to be decided);
- the gateway's own `webpolicy selftest` names (answered by the gateway, never upstream);
- anything but a plain lower-case DNS name (an address, an IDN, localhost: the choke point's
  rules for those are enforced with a block page only when intercepted);
- a search-engine host is passed through only where the client's profile neither forces safe
  search nor has a watchlist read its search terms (SEARCH: the caller decides).

Knows nothing of mitmproxy, nor of the Engine (engine.py builds its memo from this).
"""

from __future__ import annotations

from collections.abc import Iterable

from webpolicy.engine.searchengines import search_host
from webpolicy.lists.canonical import is_plain_name

# Hosts whose subdomains anyone can put a site behind (a CDN distribution, an app on a
# platform), or whose edge serves many sites on one connection.  Passing one through would
# let a learner reach any site hosted there unseen.  policy.yaml's tls.fronting adds more.
DEFAULT_FRONTING: tuple[str, ...] = (
    "cloudfront.net", "akamaihd.net", "akamaized.net", "akamaiedge.net", "edgekey.net",
    "edgesuite.net", "fastly.net", "fastlylb.net", "azureedge.net", "azurefd.net",
    "azurewebsites.net", "trafficmanager.net", "windows.net", "googleusercontent.com",
    "appspot.com", "googleapis.com", "cloudfunctions.net", "run.app", "web.app",
    "firebaseapp.com", "workers.dev", "pages.dev", "herokuapp.com", "netlify.app",
    "vercel.app", "github.io", "githubusercontent.com", "amazonaws.com", "cdn77.org",
    "b-cdn.net", "cloudflare.net", "ngrok.io", "ngrok-free.app",
)

INSPECT = "inspect"     # never passed through
SEARCH = "search"       # a search-engine host: passed through only if the profile needs nothing
OPEN = "open"           # passed through if the client's lists allow every path


def fronting_suffixes(extra: Iterable[str] = ()) -> frozenset[str]:
    """The shipped fronting hosts and the policy's own (already lower-case names)."""
    return frozenset(DEFAULT_FRONTING) | frozenset(extra)


def is_fronting(host: str, suffixes: frozenset[str]) -> bool:
    """Whether a canonical host is one of `suffixes` or under one."""
    if host in suffixes:
        return True
    start = host.find(".")
    while start != -1:
        if host[start + 1:] in suffixes:
            return True
        start = host.find(".", start + 1)
    return False


def host_kind(host: str, suffixes: frozenset[str], has_url_rules: bool,
              selftest: bool) -> str:
    """INSPECT, SEARCH or OPEN for a canonical host (see the module's docstring)."""
    if (has_url_rules or selftest or not is_plain_name(host) or host == "localhost"
            or host.endswith(".localhost") or is_fronting(host, suffixes)):
        return INSPECT
    return SEARCH if search_host(host) is not None else OPEN
