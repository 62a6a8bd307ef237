"""The search engines the gateway knows, and which host serves what: one table.

Two features read it.  Safe search (safesearch.py) forces an engine's strict mode on the hosts
where the engine honours it; search terms (searchterms.py) reads what people type on the hosts
where the engine takes searches and suggestions.  The two host sets overlap but differ (Google's
suggestion hosts take no `safe=active`; YouTube's API hosts carry no typed terms), so every host
says which it serves.  "Search engine" here is never the policy `Engine` (engine.py).

Asked for every request, so the common case (no search engine) is one dict lookup and two
substring tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GOOGLE, BING, DUCKDUCKGO, YOUTUBE, YAHOO, ECOSIA = (
    "google", "bing", "duckduckgo", "youtube", "yahoo", "ecosia")

# https://www.google.com/supported_domains: every country domain of Google Search.
_GOOGLE_SUFFIXES = """
com ac ad ae com.af com.ag com.ai al am co.ao com.ar as at com.au az ba com.bd be bf bg com.bh
bi bj com.bn com.bo com.br bs bt co.bw by com.bz ca com.kh cc cd cf cat cg ch ci co.ck cl cm cn
com.co co.cr com.cu cv com.cy cz de dj dk dm com.do dz com.ec ee com.eg es com.et fi com.fj fm
fr ga ge gf gg com.gh com.gi gl gm gp gr com.gt gy com.hk hn hr ht hu co.id iq ie co.il im
co.in io is it je com.jm jo co.jp co.ke ki kg co.kr com.kw kz la com.lb com.lc li lk co.ls lt
lu lv com.ly co.ma md me mg mk ml com.mm mn ms com.mt mu mv mw com.mx com.my co.mz com.na ne
com.nf com.ng com.ni nl no com.np nr nu co.nz com.om com.pk com.pa com.pe com.ph pl com.pg pn
com.pr ps pt com.py com.qa ro rs ru rw com.sa com.sb sc se com.sg sh si sk com.sl sn sm so st
sr com.sv td tg co.th com.tj tk tl tm to tn com.tr tt com.tw co.tz com.ua co.ug co.uk com.uy
co.uz com.vc co.ve vg co.vi com.vn vu ws co.za co.zm co.zw
""".split()
GOOGLE_HOSTS = frozenset(f"{prefix}google.{suffix}" for suffix in _GOOGLE_SUFFIXES
                         for prefix in ("", "www."))
# https://support.google.com/a/answer/6214622: where the YouTube-Restrict header counts.
YOUTUBE_HOSTS = frozenset({"www.youtube.com", "m.youtube.com", "youtubei.googleapis.com",
                           "youtube.googleapis.com", "www.youtube-nocookie.com", "youtube.com"})
BING_HOSTS = frozenset({"bing.com", "www.bing.com", "cn.bing.com"})
DUCKDUCKGO_HOST = "duckduckgo.com"


@dataclass(frozen=True, slots=True)
class SearchHost:
    """What one host of a search engine serves."""

    engine: str                 # GOOGLE, BING, ...
    safe_search: bool = False   # the engine's strict mode can be forced on this host
    terms: str | None = None    # the term rules that apply here (searchterms.py): "search" for
                                # the engine's search pages, "suggest" for a suggestions-only host


def _table() -> dict[str, SearchHost]:
    table: dict[str, SearchHost] = {}

    def add(hosts, engine: str, safe_search: bool = False, terms: str | None = None) -> None:
        for host in hosts:
            old = table.get(host)
            table[host] = SearchHost(engine, safe_search or (old is not None and old.safe_search),
                                     terms or (old.terms if old else None))

    add(GOOGLE_HOSTS, GOOGLE, safe_search=True, terms="search")
    add(["suggestqueries.google.com", "clients1.google.com"], GOOGLE, terms="suggest")
    add(BING_HOSTS, BING, safe_search=True, terms="search")
    add([DUCKDUCKGO_HOST, "www.duckduckgo.com", "html.duckduckgo.com", "lite.duckduckgo.com",
         "start.duckduckgo.com", "links.duckduckgo.com"], DUCKDUCKGO, safe_search=True,
        terms="search")
    add(YOUTUBE_HOSTS, YOUTUBE, safe_search=True)
    add(["www.youtube.com", "youtube.com", "m.youtube.com", "music.youtube.com",
         "suggestqueries-clients6.youtube.com"], YOUTUBE, terms="search")
    add(["search.yahoo.com", "ff.search.yahoo.com", "sugg.search.yahoo.net"], YAHOO, terms="search")
    add(["www.ecosia.org", "ecosia.org"], ECOSIA, terms="search")
    add(["ac.ecosia.org"], ECOSIA, terms="suggest")
    return table


_HOSTS = _table()
# Hosts outside the table that still belong to an engine:
_DUCKDUCKGO_SUBDOMAIN = "." + DUCKDUCKGO_HOST                  # safe search: any subdomain
_GOOGLE_SEARCH_HOST = re.compile(r"(?:www\.)?google\.(?:com?\.)?[a-z]{2,3}")   # terms only
_YAHOO_SEARCH_SUFFIX = ".search.yahoo.com"                      # uk.search, images.search...
_DUCKDUCKGO_SUBDOMAIN_HOST = SearchHost(DUCKDUCKGO, safe_search=True)
_GOOGLE_OTHER_COUNTRY = SearchHost(GOOGLE, terms="search")
_YAHOO_OTHER = SearchHost(YAHOO, terms="search")


def search_host(host: str) -> SearchHost | None:
    """What a canonical host serves as a search engine, if anything."""
    found = _HOSTS.get(host)
    if found is not None:
        return found
    if "google." in host and _GOOGLE_SEARCH_HOST.fullmatch(host):
        return _GOOGLE_OTHER_COUNTRY
    if host.endswith(_YAHOO_SEARCH_SUFFIX):
        return _YAHOO_OTHER
    if host.endswith(_DUCKDUCKGO_SUBDOMAIN):
        return _DUCKDUCKGO_SUBDOMAIN_HOST
    return None
