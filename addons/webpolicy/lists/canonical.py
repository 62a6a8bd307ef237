"""URL and host canonicalisation, so that list matching is never naive.

A blocklist entry and a request must reduce to the same string however the URL was written:
"http://WWW.Example.COM.:80/a/./b/../c", "www.example.com/a/c" and
"http://%77ww.example.com/a//c#top" are one page.  The rules follow Google Safe Browsing's
URL canonicalisation (https://developers.google.com/safe-browsing/v4/urls-hashing), with the
host parsed the way browsers do (the WHATWG URL standard): numeric IPv4 forms, IDNA (UTS #46,
non-transitional) and which characters a host may hold.

Deliberate differences from Safe Browsing, each needed by the CanonicalURL contract:
  * a non-default port is kept (Safe Browsing drops every port);
  * the query has no "?" and an empty query equals no query;
  * a "?" inside the path is escaped as %3F, so str() re-parses to the same URL;
  * a host holding a character browsers refuse (space, "#", "%", "/" ...) is a ValueError,
    not an escaped host: no browser can send a request for it.

The module is self-contained (stdlib plus the `idna` package that mitmproxy depends on).
`from_parts` is on the per-request path and has a fast path for the usual canonical input.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import quote_from_bytes, unquote_to_bytes

import idna

__all__ = ["CanonicalURL", "canonical_host", "canonical_path", "canonical_url", "from_parts"]

# Schemes whose URLs the WHATWG parser treats as hierarchical with a host ("special"):
# a backslash is a path separator there.  A URL without a scheme is read like http.
_SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp", "file"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_FAST_SCHEMES = {"http": 80, "https": 443}

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# After "name:", text that makes "name" a host rather than a scheme: "localhost:8080/x".
_PORT_THEN_PATH_RE = re.compile(r"[0-9]*(?:[/?\\]|\Z)")

# A host that is already canonical: lower-case ASCII labels, no empty label, and a last
# label that is not a number (a numeric last label means IPv4 and needs normalising).
_PLAIN_HOST_RE = re.compile(r"(?:[a-z0-9_-]+\.)*(?![0-9]+\Z|0x[0-9a-f]*\Z)[a-z0-9_-]+")

# WHATWG "forbidden domain code points" (checked after decoding and IDNA mapping).
_FORBIDDEN_HOST_RE = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")
_FULLWIDTH_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_C0_AND_SPACE = "".join(map(chr, range(0x21)))

# Safe Browsing escapes bytes <= 0x20, >= 0x7f, "#" and "%"; everything else printable stays.
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "#%")
_PATH_SAFE = _QUERY_SAFE.replace("?", "")

# from_parts remembers the canonical form of the hosts it has seen: requests repeat hosts far
# more than paths.  Bounded by emptying it when full, so unique junk hosts cannot grow it.
_HOST_CACHE: dict[str, str] = {}
_HOST_CACHE_SIZE = 16384

_IPV4_DECIMAL_RE = re.compile(r"[0-9]+")
_IPV4_OCTAL_RE = re.compile(r"0[0-7]+")
_IPV4_HEX_RE = re.compile(r"0x[0-9a-f]*")


class CanonicalURL(NamedTuple):
    """A canonical URL: equal objects (and equal str()) mean the same resource to a filter.

    A NamedTuple rather than a frozen dataclass: one is built per request, and a tuple is
    immutable and several times cheaper to construct.
    """

    scheme: str          # "http", "https", ... or "" when the input had none
    host: str            # canonical host (see canonical_host); IPv6 without brackets
    port: int | None     # None when absent or the scheme's default
    path: str            # canonical path, always starts with "/"
    query: str           # canonical query without "?" ("" when none); fragment dropped

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        if self.scheme:
            prefix = f"{self.scheme}://"
        elif port and host in _SPECIAL_SCHEMES:
            prefix = "//"     # "http:8080/" would re-parse as an http URL for host 8080
        else:
            prefix = ""
        return f"{prefix}{host}{port}{self.path}{query}"

    @property
    def host_path(self) -> str:
        """"host/path": the key URL lists (CTIRU/IWF style) match on and logs display."""
        return self.host + self.path


# --------------------------------------------------------------------------- percent coding

def _drop_tab_newline(text: str) -> str:
    """Browsers delete tab, CR and LF anywhere in a URL (str.translate is 50x slower here)."""
    if "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\t", "").replace("\n", "").replace("\r", "")
    return text


def _needs_no_escaping(text: str) -> bool:
    """True when percent normalisation would leave text as it is.

    Printable ASCII other than space, "%" and "#".  Plain str tests: on the per-request path
    they beat a regular expression.
    """
    return (text.isascii() and text.isprintable() and " " not in text and "%" not in text
            and "#" not in text)


def _has_plain_segments(path: str) -> bool:
    """True when a path starts with "/" and has no backslash, empty or dot segment."""
    return path[:1] == "/" and "\\" not in path and "/." not in path and "//" not in path


def _to_bytes(text: str) -> bytes:
    """UTF-8 bytes of text; mitmproxy hands over undecodable request bytes as surrogates."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:      # a surrogate that did not come from surrogateescape
        return text.encode("utf-8", "surrogatepass")


def _unquote_fully(data: bytes) -> bytes:
    """Percent-decode until nothing changes: "%2525" and "%25" must both reach "%"."""
    while b"%" in data:
        decoded = unquote_to_bytes(data)
        if decoded == data:
            break
        data = decoded
    return data


# --------------------------------------------------------------------------- host

def is_plain_name(host: str) -> bool:
    """A host that canonical_host returns unchanged and that is not an IP address: lower-case
    labels of letters, digits, '-' and '_', the last not a number (WHATWG would read IPv4).
    Anything else (case, spaces, escapes, trailing dots, IDN, numbers) needs canonical_host."""
    return _PLAIN_HOST_RE.fullmatch(host) is not None


def canonical_host(host: str) -> str:
    """Canonical form of a host name or IP literal; ValueError (saying why) if it is invalid.

    Lower-case, percent-decoded, no empty labels or trailing dot, IDN labels as punycode,
    IPv4 in any browser-accepted form as a dotted quad, IPv6 compressed without brackets.
    """
    if _PLAIN_HOST_RE.fullmatch(host):
        return host
    text = _drop_tab_newline(host).strip()
    try:
        text = _unquote_fully(_to_bytes(text)).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"invalid host {host!r}: percent-escapes are not UTF-8") from None
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"invalid host {host!r}: '[' without a closing ']'")
        return _canonical_ipv6(text[1:-1], host)
    if text.count(":") == 1:
        raise ValueError(f"invalid host {host!r}: a port is not part of a host name")
    if ":" in text:
        return _canonical_ipv6(text, host)
    return _canonical_domain(text, host)


def _canonical_domain(text: str, original: str) -> str:
    """A domain name or an IPv4 address (WHATWG: a numeric last label means IPv4)."""
    if text.isascii():
        text = text.lower()
    else:
        text = text.translate(_FULLWIDTH_DOTS)
        try:
            text = idna.uts46_remap(text, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise ValueError(f"invalid host {original!r}: {exc}") from None
    labels = [label for label in text.split(".") if label]
    if not labels:
        raise ValueError(f"invalid host {original!r}: empty host name")
    bad = _FORBIDDEN_HOST_RE.search(text)
    if bad:
        raise ValueError(f"invalid host {original!r}: {bad.group()!r} is not allowed in a host "
                         "name")
    last = labels[-1]
    if _IPV4_DECIMAL_RE.fullmatch(last) or _IPV4_HEX_RE.fullmatch(last):
        return _canonical_ipv4(labels, original)
    return ".".join(label if label.isascii() else _punycode(label) for label in labels)


def _punycode(label: str) -> str:
    """ACE form of an already UTS #46-mapped label.

    Plain punycode rather than idna.alabel(): the strict IDNA2008 checks would reject labels
    that browsers accept (symbols, emoji), and a filter must not refuse what a browser sends.
    """
    return "xn--" + label.encode("punycode").decode("ascii")


def _canonical_ipv4(labels: list[str], original: str) -> str:
    """Dotted quad from the browser forms: 3232235777, 0300.0250.0.1, 0xC0A80001, 127.1."""
    if len(labels) > 4:
        raise ValueError(f"invalid host {original!r}: an IPv4 address has at most 4 parts")
    numbers = [_ipv4_number(label, original) for label in labels]
    for number in numbers[:-1]:
        if number > 255:
            raise ValueError(f"invalid host {original!r}: IPv4 part {number} is above 255")
    if numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"invalid host {original!r}: IPv4 address out of range")
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return str(ipaddress.IPv4Address(value))


def _ipv4_number(label: str, original: str) -> int:
    """One IPv4 part: "0x" prefix is hex, a leading zero octal, otherwise decimal."""
    if _IPV4_HEX_RE.fullmatch(label):
        return int(label[2:] or "0", 16)
    if _IPV4_OCTAL_RE.fullmatch(label):
        return int(label, 8)
    if _IPV4_DECIMAL_RE.fullmatch(label) and (label == "0" or label[0] != "0"):
        if len(label) > 10:         # beyond any valid part; also avoids int()'s digit limit
            raise ValueError(f"invalid host {original!r}: IPv4 address out of range")
        return int(label)
    raise ValueError(f"invalid host {original!r}: a host ending in a number must be an IPv4 "
                     f"address, and {label!r} is not an IPv4 number")


def _canonical_ipv6(text: str, original: str) -> str:
    """Compressed lower-case IPv6 (RFC 5952), formatted here so it never varies by Python."""
    if "%" in text:
        raise ValueError(f"invalid host {original!r}: IPv6 zone identifiers are not supported")
    try:
        value = int(ipaddress.IPv6Address(text))
    except ValueError as exc:
        raise ValueError(f"invalid host {original!r}: not an IPv6 address ({exc})") from None
    if value >> 32 == 0xFFFF:
        # IPv4-mapped (::ffff:1.2.3.4) reaches the IPv4 host: match it as that host.
        return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    hextets = [(value >> shift) & 0xFFFF for shift in range(112, -1, -16)]
    start, length = _longest_zero_run(hextets)
    words = [f"{word:x}" for word in hextets]
    if length < 2:
        return ":".join(words)
    return ":".join(words[:start]) + "::" + ":".join(words[start + length:])


def _longest_zero_run(hextets: list[int]) -> tuple[int, int]:
    """(start, length) of the first longest run of zero hextets."""
    best_start, best_length, start = 0, 0, None
    for index, word in enumerate(hextets + [1]):
        if word == 0:
            start = index if start is None else start
        elif start is not None:
            if index - start > best_length:
                best_start, best_length = start, index - start
            start = None
    return best_start, best_length


# --------------------------------------------------------------------------- path and query

def canonical_path(path: str, *, special: bool = True) -> str:
    """Canonical path (no query: a "?" here is data and becomes %3F).

    Fully percent-decoded, then "." and ".." resolved, runs of "/" collapsed (a trailing "/"
    kept), and re-escaped the Safe Browsing way.  `special` (http-like schemes, the default)
    makes a backslash a path separator, as browsers do.
    """
    if _has_plain_segments(path) and "?" not in path and _needs_no_escaping(path):
        return path
    data = _unquote_fully(_to_bytes(_drop_tab_newline(path)))
    if special:
        data = data.replace(b"\\", b"/")
    segments = data.split(b"/")
    kept: list[bytes] = []
    for segment in segments:
        if segment == b"..":
            if kept and _is_parent_like(kept[-1]):
                kept.append(segment)        # see _is_parent_like
            elif kept:
                kept.pop()
        elif segment and segment != b".":
            kept.append(segment)
    trailing = segments[-1] in (b"", b".", b"..")
    joined = b"/" + b"/".join(kept) + (b"/" if trailing and kept else b"")
    return quote_from_bytes(joined, safe=_PATH_SAFE)


def _is_parent_like(segment: bytes) -> bool:
    """A segment some servers read as a name and others as "..", "." or nothing: "..;x",
    ".;x", ";x" (Tomcat drops path parameters first), ".. " (Windows drops trailing
    spaces), or a ".." kept after one.

    A ".." after such a segment is kept rather than resolved: resolving it as a browser does
    ("/x/..;/../page" -> "/x/page") would erase the reading Tomcat makes ("/page"), and a
    statutory entry's variants are matched under both (urlindex.loose_paths; issue #15).
    Browsers resolve such paths before sending them: only a crafted request holds one.
    """
    return segment.partition(b";")[0].rstrip(b" ") in (b"..", b".", b"")


def _canonical_query(query: str) -> str:
    """Same percent normalisation as the path; parameters are never reordered or decoded away."""
    if _needs_no_escaping(query):
        return query
    return quote_from_bytes(_unquote_fully(_to_bytes(_drop_tab_newline(query))), safe=_QUERY_SAFE)


# --------------------------------------------------------------------------- whole URLs

def canonical_url(url: str) -> CanonicalURL:
    """Parse and canonicalise a URL with or without a scheme; ValueError when it has no host.

    Accepts "http://u@h:80/a/../b?q#f", "h/p", "h" and "//h/p".  Userinfo is dropped
    (http://good.com@bad.com/ is bad.com) and, for http-like schemes, a backslash ends the
    host (http://bad.com\\@good.com/ is bad.com), as in browsers.
    """
    text = _drop_tab_newline(url).strip(_C0_AND_SPACE).partition("#")[0]
    scheme, special, text = _split_scheme(text, url)
    if special:
        text = text.lstrip("/\\")
        end = _find_any(text, "/\\?")
    else:
        text = text[2:]                 # non-special schemes are only accepted with "//"
        end = _find_any(text, "/?")
    authority, target = text[:end], text[end:]
    host_text, port_text = _split_port(authority.rpartition("@")[2], url)
    if not host_text:
        raise ValueError(f"invalid URL {url!r}: no host")
    path, _, query = target.partition("?")
    return CanonicalURL(scheme, canonical_host(host_text), _parse_port(port_text, scheme, url),
                    canonical_path(path, special=special), _canonical_query(query))


def _split_scheme(text: str, url: str) -> tuple[str, bool, str]:
    """(scheme, special, rest).  "example.com:8080/x" has a port, not a scheme."""
    match = _SCHEME_RE.match(text)
    if match:
        name, rest = match.group(1).lower(), text[match.end():]
        if name == "file" and (not rest.startswith("//") or rest[2:3] in ("/", "\\")):
            raise ValueError(f"invalid URL {url!r}: a file URL without a host names no web site")
        if name in _SPECIAL_SCHEMES:
            return name, True, rest
        if rest.startswith("//"):
            return name, False, rest
        ipv6 = text[:_find_any(text, "/\\?")].count(":") > 1      # "fe80::1/x", "ab:c::1"
        if not (ipv6 or _PORT_THEN_PATH_RE.match(rest)):
            raise ValueError(f"invalid URL {url!r}: a {name!r} URL without '//' has no host")
    return "", True, text


def _find_any(text: str, chars: str) -> int:
    """Index of the first of `chars` in text, or len(text)."""
    positions = [i for i in map(text.find, chars) if i >= 0]
    return min(positions) if positions else len(text)


def _split_port(hostport: str, url: str) -> tuple[str, str]:
    """("host", "port") from "host:port", "[v6]:port" or a bare unbracketed IPv6 address."""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ValueError(f"invalid URL {url!r}: '[' without a closing ']'")
        host, after = hostport[:close + 1], hostport[close + 1:]
        if after and not after.startswith(":"):
            raise ValueError(f"invalid URL {url!r}: unexpected {after!r} after the IPv6 address")
        return host, after[1:]
    if hostport.count(":") > 1:
        return hostport, ""
    host, _, port = hostport.partition(":")
    return host, port


def _parse_port(text: str, scheme: str, url: str) -> int | None:
    """Port number, or None when empty or the scheme's default."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 5:
        raise ValueError(f"invalid URL {url!r}: bad port {text!r}")
    return _check_port(int(text), scheme, url)


def _check_port(port: int, scheme: str, where: str) -> int | None:
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid URL {where!r}: port {port} is out of range")
    return None if _DEFAULT_PORTS.get(scheme) == port else port


def from_parts(scheme: str, host: str, port: int | None, path: str) -> CanonicalURL:
    """CanonicalURL from an already-split request (mitmproxy's scheme, host, port, path).

    `path` is the request target and may include "?query".  The result equals
    canonical_url(f"{scheme}://{host}:{port}{path}").  This runs for every request: hosts
    come from a cache, and an http(s) target whose path is already canonical skips the
    decoding work (only a query with escapes in it is normalised).
    """
    canonical = _HOST_CACHE.get(host) or _remember_host(host)
    default = _FAST_SCHEMES.get(scheme)
    target, _, query = path.partition("?")
    if (default is not None and _has_plain_segments(target)
            and (port is None or port == default or 0 <= port <= 65535)):
        kept_port = None if port == default else port
        if _needs_no_escaping(path):            # the whole target: the usual request
            return CanonicalURL(scheme, canonical, kept_port, target, query)
        if _needs_no_escaping(target) and "#" not in query:
            # The query ends the URL, so canonical_url would have stripped its trailing junk.
            query = _canonical_query(query.rstrip(_C0_AND_SPACE))
            return CanonicalURL(scheme, canonical, kept_port, target, query)
    return _from_parts_general(scheme, canonical, port, path)


def _remember_host(host: str) -> str:
    """canonical_host(host), cached for from_parts (invalid hosts are not cached)."""
    canonical = canonical_host(host)
    if len(_HOST_CACHE) >= _HOST_CACHE_SIZE:
        _HOST_CACHE.clear()
    _HOST_CACHE[host] = canonical
    return canonical


def _from_parts_general(scheme: str, host: str, port: int | None, path: str) -> CanonicalURL:
    """from_parts for any input, given the canonical host: canonical_url's rules per part."""
    scheme = scheme.lower()
    if scheme and not _SCHEME_RE.fullmatch(scheme + ":"):
        raise ValueError(f"invalid scheme {scheme!r}")
    special = not scheme or scheme in _SPECIAL_SCHEMES
    target = _drop_tab_newline(path).rstrip(_C0_AND_SPACE).partition("#")[0]
    raw_path, _, query = target.partition("?")
    where = f"{scheme}://{host}{path}"
    return CanonicalURL(scheme, host, None if port is None else _check_port(port, scheme, where),
                    canonical_path(raw_path, special=special), _canonical_query(query))
