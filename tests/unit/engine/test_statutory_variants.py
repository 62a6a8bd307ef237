"""Issue #15: a statutory URL entry also blocks the harmless variants of its URL.

An attacker with curl varies what servers ignore: the case of the path, a trailing dot on
the host, a trailing slash, path parameters (;jsessionid=...), PATH_INFO after a script,
percent-encoding, duplicate slashes, dot segments, the order and company of query
parameters.  Every such variant must block; over-blocking a variant is acceptable.
"""

from __future__ import annotations

import random
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.helpers import engine_from
from webpolicy.engine.decision import decide
from webpolicy.lists.canonical import canonical_url, from_parts

POLICY = """\
version: "s1"
default_profile: learner
profiles:
  learner: {block: []}
lists:
  ctiru: {statutory: true, category: Terrorist content, severity: critical, format: urls, sources: [ctiru.txt]}
  other: {category: Other, format: urls, sources: [other.txt]}
"""

# (scheme, host, path, query) of each statutory entry, as listed.
ENTRIES = [
    ("http", "evil.test", "/propaganda/video.php", "id=42&lang=en"),
    ("https", "www.hate.test", "/Forum/Thread.aspx", "t=7"),
    ("http", "ctiru-host.test", "/terror/page", ""),
    ("https", "files.test", "/dir/", ""),
    ("http", "deep.test", "/a/b/c.html", ""),
    ("http", "portal.test", "/news/index.php", "id=9"),
    ("http", "home.test", "/Default.aspx", ""),
]
CTIRU = "".join(f"{scheme}://{host}{path}{'?' + query if query else ''}\n"
                for scheme, host, path, query in ENTRIES)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return engine_from(tmp_path_factory.mktemp("statutory"), POLICY,
                       {"ctiru.txt": CTIRU, "other.txt": "other.test/x\n"})


def blocked(engine, url: str) -> bool:
    """Decided as the CLI reads a URL and as the proxy gets one (mitmproxy's parts)."""
    parsed = canonical_url(url)
    via_parts = _via_parts(url)
    return all(decide(engine, u).action == "block" and decide(engine, u).statutory
               for u in (parsed, via_parts))


def _via_parts(url: str):
    scheme, _, rest = url.partition("://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    host, target = rest[:cut], rest[cut:] or "/"
    if not target.startswith("/"):
        target = "/" + target
    host, _, port = host.partition(":")
    return from_parts(scheme, host, int(port) if port else None, target)


# --- the variants, one transformation at a time ---------------------------------------------

def _flip_case(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in text)


def _escape(rng: random.Random, text: str) -> str:
    """Percent-encode some characters (upper or lower hex, sometimes twice, or IIS's %u);
    an escape already in the text is left whole."""
    out, index = [], 0
    while index < len(text):
        c = text[index]
        if c == "%":
            length = 6 if text[index + 1:index + 2] in ("u", "U") else 3
            out.append(text[index:index + length])
            index += length
            continue
        index += 1
        if c not in "/?&=" and rng.random() < 0.3:
            code = f"%{ord(c):02x}" if rng.random() < 0.5 else f"%{ord(c):02X}"
            if rng.random() < 0.1:
                code = f"%u{ord(c):04x}"                        # IIS
            out.append(code.replace("%", "%25", 1) if rng.random() < 0.2 else code)
        else:
            out.append(c)
    return "".join(out)


def _segments(path: str) -> list[str]:
    return path.split("/")


def _path_variant(rng: random.Random, path: str, kind: str) -> str:
    parts = _segments(path)
    last = len(parts) - 1 if parts[-1] else len(parts) - 2
    if kind == "case":
        return _flip_case(rng, path)
    if kind == "slash":
        return path.rstrip("/") if path.endswith("/") and path != "/" else path + "/"
    if kind == "params":
        index = rng.randint(1, last)
        parts[index] += rng.choice([";jsessionid=ABC123", ";x", ";"])
        return "/".join(parts)
    if kind == "pathinfo":
        return path.rstrip("/") + rng.choice(["/anything", "/a/b.txt", "/", "/%2e"])
    if kind == "escape":
        return _escape(rng, path)
    if kind == "double":
        return path.replace("/", rng.choice(["//", "///"]))
    if kind == "dots":
        index = rng.randint(1, last)
        parts[index] = rng.choice(["./", "x/../", "x/..;/", "./x/../"]) + parts[index]
        return "/".join(parts)
    if kind == "trailing":
        if not unquote(unquote(parts[last])).replace("\\", "/").rpartition("/")[2].strip("."):
            return path                 # "." + "." would be a real ".." segment
        parts[last] += rng.choice([".", "%20", ".%20", "%00.jpg"])
        return "/".join(parts)
    if kind == "backslash":
        return "/" + path[1:].replace("/", "\\")
    raise AssertionError(kind)


def _query_variant(rng: random.Random, query: str, kind: str) -> str:
    items = [item for item in query.split("&") if item]
    if kind == "reorder":
        rng.shuffle(items)
    elif kind == "extra":
        items += rng.sample(["utm_source=x", "a=1", "page=2", "flag"], rng.randint(1, 3))
        rng.shuffle(items)
    elif kind == "case":
        items = [_flip_case(rng, item) for item in items]
    elif kind == "escape":
        items = [_escape(rng, item) for item in items]
    elif kind == "semicolon":
        return ";".join(items)
    return "&".join(items)


def _host_variant(rng: random.Random, host: str, kind: str) -> str:
    if kind == "case":
        return _flip_case(rng, host)
    if kind == "dot":
        return host + "."
    if kind == "www":
        return host[4:] if host.startswith("www.") else "www." + host
    if kind == "port":
        return host + rng.choice([":80", ":443", ":8080"])
    raise AssertionError(kind)


PATH_KINDS = ["case", "slash", "params", "pathinfo", "escape", "double", "dots", "trailing",
              "backslash"]
QUERY_KINDS = ["reorder", "extra", "case", "escape", "semicolon"]
HOST_KINDS = ["case", "dot", "www", "port"]


@st.composite
def variants(draw) -> str:
    scheme, host, path, query = draw(st.sampled_from(ENTRIES))
    rng = random.Random(draw(st.integers(0, 2**32)))
    for kind in sorted(draw(st.lists(st.sampled_from(HOST_KINDS), max_size=3, unique=True)),
                       key=HOST_KINDS.index):                   # the port last
        host = _host_variant(rng, host, kind)
    # Each transformation once: escaping an escaped text again would make escapes no
    # server decodes (a "%u" inside a double escape).
    for kind in draw(st.lists(st.sampled_from(PATH_KINDS), max_size=4, unique=True)):
        path = _path_variant(rng, path, kind)
    for kind in draw(st.lists(st.sampled_from(QUERY_KINDS), max_size=3, unique=True)):
        query = _query_variant(rng, query, kind)
    scheme = draw(st.sampled_from([scheme, "http", "https"]))
    return f"{scheme}://{host}{path}{'?' + query if query else ''}"


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variants())
def test_every_harmless_variant_of_a_statutory_url_blocks(engine, url):
    assert blocked(engine, url), url


@pytest.mark.parametrize("url", [
    "http://evil.test/propaganda/video.php?lang=en&id=42",
    "http://evil.test/propaganda/video.php/x?ref=1&lang=en&id=42",
    "http://evil.test/propaganda/VIDEO.PHP?ID=42&LANG=EN",
    "http://evil.test./propaganda//video.php;jsessionid=1?id=42&lang=en",
    "http://evil.test/propaganda/x/..;/video.php?id=42&lang=en",
    "http://evil.test/propaganda/x/y/..;/../video.php?id=42&lang=en",     # Tomcat reading
    "http://evil.test/propaganda/video.php/..;/x?id=42&lang=en",          # Apache PATH_INFO
    "http://evil.test/%70ropaganda/video%2ephp?id=%34%32&lang=en",
    "http://evil.test/propaganda/video.php.?id=42;lang=en",
    "http://hate.test/forum/thread.aspx?t=7",
    "http://cdn.hate.test/FORUM/thread.aspx/?t=7",
    "http://ctiru-host.test/Terror/Page/",
    "http://ctiru-host.test/terror;s=1/page",
    "http://ctiru-host.test/terror/page%00.jpg",
    "http://files.test/dir",
    "http://files.test/DIR;x/file.txt",
    "http://deep.test/a/b/c.html%20",
    "http://portal.test/news/?id=9",                    # the directory's index document
    "http://portal.test/NEWS?x=1&id=9",
    "http://home.test/",
    "http://home.test/?utm_source=x",
    "http://deep.test/a/b/c.html::$DATA",
    "http://deep.test/a/%u0062/c.html",
    "http://evil.test/propaganda/video.php?%u0069d=42&lang=en",
])
def test_known_variants_block(engine, url):
    assert blocked(engine, url), url


@pytest.mark.parametrize("url", [
    "http://evil.test/propaganda/video.php?id=43&lang=en",
    "http://evil.test/propaganda/video.php?id=42",
    "http://evil.test/propaganda/other.php?id=42&lang=en",
    "http://hate.test/forum/thread.aspx?t=70",
    "http://ctiru-host.test/terror/pages",
    "http://ctiru-host.test/terror",
    "http://files.test/dirt",
    "http://portal.test/news/other.php?id=9",         # only the index, not the directory
    "http://portal.test/news/?id=8",
    "http://home.test/about",
    "http://other.test/X",               # not statutory: paths stay case-sensitive
])
def test_other_pages_are_not_blocked(engine, url):
    assert decide(engine, canonical_url(url)).action == "allow", url


def test_the_hit_names_the_listed_entry(engine):
    decision = decide(engine, canonical_url("http://evil.test/Propaganda/video.php?lang=en&id=42"))
    assert decision.list == "ctiru" and decision.match == "url"
    assert decision.entry == "evil.test/propaganda/video.php?id=42&lang=en"
