"""Tests for webpolicy.lists.canonical: Safe Browsing canonicalisation plus browser host parsing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from webpolicy.lists import canonical
from webpolicy.lists.canonical import (
    CanonicalURL,
    canonical_host,
    canonical_path,
    canonical_url,
    from_parts,
)

# --------------------------------------------------------------------------- Safe Browsing

# Google's canonicalisation examples (developers.google.com/safe-browsing/v4/urls-hashing)
# that apply unchanged.  Expected values are Google's, except that a URL given without a
# scheme keeps scheme "" (Google prints "http://") and an empty query prints no "?".
SAFE_BROWSING = [
    ("http://host/%25%32%35", "http://host/%25"),
    ("http://host/%25%32%35%25%32%35", "http://host/%25%25"),
    ("http://host/%2525252525252525", "http://host/%25"),
    ("http://host/asdf%25%32%35asd", "http://host/asdf%25asd"),
    ("http://host/%%%25%32%35asd%%", "http://host/%25%25%25asd%25%25"),
    ("http://www.google.com/", "http://www.google.com/"),
    ("http://%31%36%38%2e%31%38%38%2e%39%39%2e%32%36/%2E%73%65%63%75%72%65/"
     "%77%77%77%2E%65%62%61%79%2E%63%6F%6D/", "http://168.188.99.26/.secure/www.ebay.com/"),
    ("http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-"
     "xplmvalidateinfoswqpcmlx=hgplmcx/",
     "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-"
     "xplmvalidateinfoswqpcmlx=hgplmcx/"),
    ("http://3279880203/blah", "http://195.127.0.11/blah"),
    ("http://www.google.com/blah/..", "http://www.google.com/"),
    ("www.google.com/", "www.google.com/"),
    ("www.google.com", "www.google.com/"),
    ("http://www.evil.com/blah#frag", "http://www.evil.com/blah"),
    ("http://www.GOOgle.com/", "http://www.google.com/"),
    ("http://www.google.com.../", "http://www.google.com/"),
    ("http://www.google.com/foo\tbar\rbaz\n2", "http://www.google.com/foobarbaz2"),
    ("http://www.google.com/q?", "http://www.google.com/q"),
    ("http://www.google.com/q?r?", "http://www.google.com/q?r?"),
    ("http://www.google.com/q?r?s", "http://www.google.com/q?r?s"),
    ("http://evil.com/foo#bar#baz", "http://evil.com/foo"),
    ("http://evil.com/foo;", "http://evil.com/foo;"),
    ("http://evil.com/foo?bar;", "http://evil.com/foo?bar;"),
    ("http://notrailingslash.com", "http://notrailingslash.com/"),
    ("  http://www.google.com/  ", "http://www.google.com/"),
    ("https://www.securesite.com/", "https://www.securesite.com/"),
    ("http://host.com/ab%23cd", "http://host.com/ab%23cd"),
    ("http://host.com//twoslashes?more//slashes", "http://host.com/twoslashes?more//slashes"),
]


@pytest.mark.parametrize(("url", "expected"), SAFE_BROWSING)
def test_safe_browsing_examples(url: str, expected: str) -> None:
    assert str(canonical_url(url)) == expected


def test_safe_browsing_encoded_ip_host_and_path() -> None:
    url = canonical_url("http://%31%36%38%2e%31%38%38%2e%39%39%2e%32%36/%2E%73%65%63%75%72%65/"
                        "%77%77%77%2E%65%62%61%79%2E%63%6F%6D/")
    assert (url.host, url.path, url.query) == ("168.188.99.26", "/.secure/www.ebay.com/", "")


def test_safe_browsing_path_escaping() -> None:
    # Google's example has host "host%23.com", which no browser accepts (see the deviations).
    assert canonical_path("/%257Ea%2521b%2540c%2523d%2524e%25f%255E00%252611%252A22%252833"
                          "%252944_55%252B") == "/~a!b@c%23d$e%25f^00&11*22(33)44_55+"


def test_safe_browsing_port_is_kept_unless_default() -> None:
    # Deviation: Google drops every port; the contract keeps non-default ones.
    assert canonical_url("http://www.gotaport.com:1234/").port == 1234
    assert canonical_url("http://www.gotaport.com:80/").port is None


@pytest.mark.parametrize("url", [
    "http://host%23.com/",          # "#" in a host
    "http://\x01\x80.com/",         # control characters
    "http://%20leadingspace.com/",  # an encoded space is not whitespace to strip
    "%20leadingspace.com/",
])
def test_safe_browsing_hosts_browsers_refuse_are_errors(url: str) -> None:
    # Deviation: Google escapes these hosts; no browser can request them, so they are invalid.
    with pytest.raises(ValueError, match="invalid host"):
        canonical_url(url)


def test_whitespace_around_host_is_stripped() -> None:
    assert canonical_url("http:// leadingspace.com/").host == "leadingspace.com"
    assert canonical_host("  Example.COM \n") == "example.com"


# --------------------------------------------------------------------------- equivalence

EQUIVALENT = {
    "case": ["http://www.example.com/", "HTTP://WWW.EXAMPLE.COM/", "http://WwW.ExAmPlE.cOm/"],
    "trailing and repeated dots": ["http://www.example.com/", "http://www.example.com./",
                                   "http://.www..example...com../"],
    "default ports": ["http://example.com/a", "http://example.com:80/a", "http://example.com:/a",
                      "http://example.com:0080/a"],
    "https default port": ["https://example.com/a", "https://example.com:443/a"],
    "idn": ["http://xn--bcher-kva.de/", "http://bücher.de/", "http://BÜCHER.de/",
            "http://b%C3%BCcher.de/", "http://XN--BCHER-KVA.DE/"],
    "idn nontransitional": ["http://xn--fa-hia.de/", "http://faß.de/", "http://FAẞ.de/",
                            "http://fa%C3%9F.de/"],
    "fullwidth dots and letters": ["http://example.com/", "http://example\u3002com/",
                                   "http://example\uff0ecom/", "http://example\uff61com/",
                                   "http://\uff45xample.com/"],
    "ignored code points": ["http://google.com/", "http://goo\u00adgle.com/"],
    "percent-encoded host": ["http://example.com/", "http://%65xample.com/",
                             "http://%2565xample.com/", "http://example%2Ecom/"],
    "percent-encoded path": ["http://h/a~b/c", "http://h/a%7eb/c", "http://h/a%7Eb%2Fc",
                             "http://h/a%257Eb/c", "http://h/%61~b/c"],
    "percent-escape case": ["http://h/a%20b", "http://h/a b", "http://h/a%2520b"],
    "non-ascii path": ["http://h/caf%C3%A9", "http://h/café", "http://h/caf%c3%a9"],
    "ipv4 decimal": ["http://192.168.1.1/", "http://3232235777/"],
    "ipv4 octal": ["http://192.168.0.1/", "http://0300.0250.0.1/", "http://0300.0250.0.01/",
                   "http://000000300.0250.0.1/"],
    "ipv4 hex": ["http://192.168.0.1/", "http://0xc0.0xa8.0.1/", "http://0xC0A80001/",
                 "http://0XC0.0Xa8.0x.1/", "http://0xc0.0xa8.1/"],
    "ipv4 short": ["http://192.168.1.1/", "http://192.168.257/", "http://192.11010305/"],
    "ipv4 loopback": ["http://127.0.0.1/", "http://127.1/", "http://2130706433/",
                      "http://0x7f.1/", "http://127.0.0.1./", "http://%31%32%37.1/"],
    "ipv4 fullwidth digits": ["http://127.0.0.1/", "http://\uff11\uff12\uff17.0.0.1/"],
    "ipv6 brackets": ["http://[::1]/", "http://[0:0:0:0:0:0:0:1]/", "http://[::0001]/"],
    "ipv6 mapped": ["http://[::ffff:102:304]/", "http://[::FFFF:1.2.3.4]/",
                    "http://[0:0:0:0:0:ffff:0102:0304]:80/", "http://1.2.3.4/"],
    "userinfo": ["http://bad.com/", "http://good.com@bad.com/", "http://u:p@bad.com/",
                 "http://a@b@bad.com/", "http://@bad.com/", "http://good.com:80@bad.com/"],
    "backslash": ["http://bad.com/@good.com/", "http://bad.com\\@good.com/",
                  "http:\\\\bad.com\\@good.com\\", "http:/bad.com/@good.com/",
                  "http:bad.com/@good.com/"],
    "encoded backslash": ["http://h/a/b", "http://h/a%5Cb", "http://h/a\\b"],
    "dot segments": ["http://h/b/c", "http://h/a/../b/c", "http://h/./b/./c",
                     "http://h/../../b/c", "http://h/a/%2e%2e/b/c", "http://h/a/%2E./b/c",
                     "http://h/b/c/d/../../c"],
    "dot segments keep the slash": ["http://h/b/", "http://h/b/c/..", "http://h/b/./",
                                    "http://h/b/c/../", "http://h/b/."],
    "repeated slashes": ["http://h/a/b/", "http://h//a///b//", "http://h/a%2F%2Fb/"],
    "fragments": ["http://h/a?q", "http://h/a?q#frag", "http://h/a?q#f#g", "http://h/a?q#"],
    "empty path": ["http://h/", "http://h", "http://h?", "http://h#x"],
    "tabs and newlines": ["http://h/ab", "ht\ttp://h/a\nb", "http://\rh/a\tb"],
    "no scheme": ["example.com/a", "//example.com/a", "EXAMPLE.com/a", "example.com.//a",
                  "u@example.com/a"],
    "query escapes": ["http://h/?a=%20&b=%23", "http://h/?a= &b=%2523"],
    "query question mark": ["http://h/p?a?b", "http://h/p?a%3Fb"],
}


@pytest.mark.parametrize("name", sorted(EQUIVALENT))
def test_equivalence_classes(name: str) -> None:
    first, *others = EQUIVALENT[name]
    expected = canonical_url(first)
    for url in others:
        assert canonical_url(url) == expected, url


def test_distinct_urls_stay_distinct() -> None:
    distinct = ["http://h/a", "http://h/a/", "http://h/A", "https://h/a", "http://h:8080/a",
                "http://h/a?b", "http://h/a?B", "http://h/a%3Fb", "http://h.h/a", "http://h/a;b",
                "http://h/a?x=1&y=2", "http://h/a?y=2&x=1", "http://faß.de/",
                "http://fass.de/"]
    assert len({canonical_url(url) for url in distinct}) == len(distinct)


# --------------------------------------------------------------------------- hosts

@pytest.mark.parametrize(("host", "expected"), [
    ("www.example.com", "www.example.com"),
    ("WWW.Example.COM.", "www.example.com"),
    ("BÜCHER.de", "xn--bcher-kva.de"),
    ("☃.net", "xn--n3h.net"),
    ("münchen.DE", "xn--mnchen-3ya.de"),
    ("под.рф", "xn--d1atc.xn--p1ai"),
    ("3232235777", "192.168.1.1"),
    ("0300.0250.0.1", "192.168.0.1"),
    ("0xc0.0xa8.0.1", "192.168.0.1"),
    ("0xC0A80001", "192.168.0.1"),
    ("192.168.257", "192.168.1.1"),
    ("127.1", "127.0.0.1"),
    ("0", "0.0.0.0"),
    ("0x", "0.0.0.0"),
    ("4294967295", "255.255.255.255"),
    ("1.2.3.4", "1.2.3.4"),
    ("1.2.3.com", "1.2.3.com"),
    ("0x1g", "0x1g"),
    ("[::FFFF:1.2.3.4]", "1.2.3.4"),          # IPv4-mapped reaches the IPv4 host
    ("::FFFF:1.2.3.4", "1.2.3.4"),
    ("[2001:DB8:0:0:1:0:0:1]", "2001:db8::1:0:0:1"),
    ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"),
    ("[1:0:0:2:0:0:0:3]", "1:0:0:2::3"),
    ("[1:0:1:0:1:0:1:0]", "1:0:1:0:1:0:1:0"),
    ("[::]", "::"),
    ("%5B::1%5D", "::1"),
    ("under_score.example", "under_score.example"),
])
def test_canonical_host(host: str, expected: str) -> None:
    assert canonical_host(host) == expected
    assert canonical_host(expected) == expected


@pytest.mark.parametrize(("host", "reason"), [
    ("", "empty host"),
    ("...", "empty host"),
    ("   ", "empty host"),
    ("exa mple.com", "' ' is not allowed"),
    ("example.com/path", "'/' is not allowed"),
    ("a\\b", "'\\\\\\\\' is not allowed"),
    ("user@example.com", "'@' is not allowed"),
    ("example.com:80", "a port is not part of a host"),
    ("ex%zzample.com", "'%' is not allowed"),
    ("ex%2fample.com", "'/' is not allowed"),
    ("ex%C3ample.com", "not UTF-8"),
    ("a<b>.com", "'<' is not allowed"),
    ("a\x00b", "not allowed"),
    ("a\x7fb", "not allowed"),
    ("ex\uff0fample.com", "'/' is not allowed"),         # fullwidth solidus maps to "/"
    ("\ufffd.com", "not allowed"),
    ("256.1.1.1", "above 255"),
    ("1.2.3.256", "out of range"),
    ("1.2.65536", "out of range"),
    ("4294967296", "out of range"),
    ("1" * 5000, "out of range"),
    ("1.2.3.4.5", "at most 4 parts"),
    ("08.1.1.1", "not an IPv4 number"),
    ("example.123", "must be an IPv4"),
    ("example.0x1", "must be an IPv4"),
    ("[::1", "without a closing"),
    ("[1.2.3.4]", "not an IPv6 address"),
    ("[example.com]", "not an IPv6 address"),
    ("1:2:3", "not an IPv6 address"),
    ("fe80::1%25eth0", "zone identifiers"),
])
def test_invalid_hosts(host: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        canonical_host(host)


def test_error_message_names_the_host() -> None:
    with pytest.raises(ValueError, match=r"invalid host 'exa mple\.com'"):
        canonical_host("exa mple.com")


# --------------------------------------------------------------------------- paths

@pytest.mark.parametrize(("path", "expected"), [
    ("", "/"),
    ("/", "/"),
    ("a/b", "/a/b"),
    ("/a/b/", "/a/b/"),
    ("/a/./b/../c", "/a/c"),
    ("/../..", "/"),
    ("/a/..", "/"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("//a//b//", "/a/b/"),
    ("/a\\b\\..\\c", "/a/c"),
    ("/.well-known/x", "/.well-known/x"),
    ("/a..b/...", "/a..b/..."),
    ("/%2e%2E/a", "/a"),
    ("/a%2fb", "/a/b"),
    ("/sp ace", "/sp%20ace"),
    ("/\x00\x1f\x7f", "/%00%1F%7F"),
    ("/é", "/%C3%A9"),
    ("/%e9", "/%E9"),
    ("/a#b", "/a%23b"),
    ("/a?b", "/a%3Fb"),                 # a path never holds a literal "?"
    ("/100%", "/100%25"),
    ("/%41%42", "/AB"),
    ("/%zz%4", "/%25zz%254"),
    ("/a\tb\nc\rd", "/abcd"),
    ("/a;b=c,d", "/a;b=c,d"),
    ("/\udcff", "/%FF"),                # mitmproxy's surrogateescape for raw byte 0xff
])
def test_canonical_path(path: str, expected: str) -> None:
    assert canonical_path(path) == expected
    assert canonical_path(expected) == expected


def test_backslash_only_separates_for_http_like_schemes() -> None:
    assert canonical_path("/a\\b", special=False) == "/a\\b"
    assert canonical_url("foo://h/a\\b").path == "/a\\b"
    assert canonical_url("ws://h/a\\b").path == "/a/b"


def test_query_is_kept_in_order() -> None:
    url = canonical_url("http://h/p?b=2&a=1&a=%31&c=%2B+x#f")
    assert url.query == "b=2&a=1&a=1&c=++x"
    url = canonical_url("http://h/p?a=%41%2541&u=http://x/./y//z")
    assert url.query == "a=AA&u=http://x/./y//z"


# --------------------------------------------------------------------------- URLs

@pytest.mark.parametrize(("url", "fields"), [
    ("http://u@h:80/a/../b?q#f", ("http", "h", None, "/b", "q")),
    ("h/p", ("", "h", None, "/p", "")),
    ("h", ("", "h", None, "/", "")),
    ("//h/p", ("", "h", None, "/p", "")),
    ("example.com", ("", "example.com", None, "/", "")),
    ("example.com:8080/x", ("", "example.com", 8080, "/x", "")),
    ("example.com:80", ("", "example.com", 80, "/", "")),      # no scheme: no default port
    ("localhost:3000", ("", "localhost", 3000, "/", "")),
    ("user@host/p", ("", "host", None, "/p", "")),
    ("http:///a", ("http", "a", None, "/", "")),                # browsers skip extra slashes
    ("HTTPS://Example.com:443", ("https", "example.com", None, "/", "")),
    ("https://example.com:80/", ("https", "example.com", 80, "/", "")),
    ("http://example.com:0/", ("http", "example.com", 0, "/", "")),
    ("http://[::1]:8080/a", ("http", "::1", 8080, "/a", "")),
    ("http://[::1]/a", ("http", "::1", None, "/a", "")),
    ("2001:db8::1/p", ("", "2001:db8::1", None, "/p", "")),
    ("fe80::1/p", ("", "fe80::1", None, "/p", "")),
    ("abcd:ef::1/p", ("", "abcd:ef::1", None, "/p", "")),
    ("http://bad.com\\@good.com/", ("http", "bad.com", None, "/@good.com/", "")),
    ("http://good.com@bad.com/", ("http", "bad.com", None, "/", "")),
    ("ftp://files.example.com/pub", ("ftp", "files.example.com", None, "/pub", "")),
    ("ftp://files.example.com:21/pub", ("ftp", "files.example.com", None, "/pub", "")),
    ("wss://chat.example.com:443/s", ("wss", "chat.example.com", None, "/s", "")),
    ("git+ssh://git@example.com:2222/r.git", ("git+ssh", "example.com", 2222, "/r.git", "")),
    ("http:8080", ("http", "0.0.31.144", None, "/", "")),       # as browsers read it
    ("http://h?q", ("http", "h", None, "/", "q")),
    ("\x00 http://h/ \x1f", ("http", "h", None, "/", "")),
])
def test_canonical_url_fields(url: str, fields: tuple) -> None:
    assert tuple(canonical_url(url)) == fields


@pytest.mark.parametrize(("url", "reason"), [
    ("", "no host"),
    ("http://", "no host"),
    ("http://user@/a", "no host"),
    ("http://:80/", "no host"),
    ("mailto:someone@example.com", "without '//'"),
    ("user:pass@host/p", "without '//'"),       # without a scheme, "user:" reads as one
    ("javascript:alert(1)", "without '//'"),
    ("data:text/html,hi", "without '//'"),
    ("file:///etc/passwd", "file URL"),
    ("http://example.com:99999/", "out of range"),
    ("http://example.com:8o/", "bad port"),
    ("http://example.com:-1/", "bad port"),
    ("http://example.com:\uff18\uff10/", "bad port"),
    ("http://example.com:" + "0" * 10 + "1" * 10 + "/", "bad port"),
    ("http://[::1/", "without a closing"),
    ("http://[::1]x/", "after the IPv6"),
    ("http://exa mple.com/", "not allowed"),
    ("http://example.com%2f/", "not allowed"),
    ("http://example.123/", "IPv4"),
])
def test_invalid_urls(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        canonical_url(url)


def test_str_and_host_path() -> None:
    url = canonical_url("HTTP://Example.COM:8080/a/../b%20c?x=1#frag")
    assert str(url) == "http://example.com:8080/b%20c?x=1"
    assert url.host_path == "example.com/b%20c"
    assert str(canonical_url("example.com")) == "example.com/"
    assert canonical_url("example.com").host_path == "example.com/"
    assert str(canonical_url("http://[::1]:81/")) == "http://[::1]:81/"
    assert canonical_url("http://[::1]:81/x").host_path == "::1/x"
    assert str(CanonicalURL("", "http", 8080, "/", "")) == "//http:8080/"


def test_canonical_url_is_frozen() -> None:
    url = canonical_url("http://h/")
    with pytest.raises(AttributeError):
        url.host = "other"      # type: ignore[misc]
    assert hash(url) == hash(CanonicalURL("http", "h", None, "/", ""))


# --------------------------------------------------------------------------- from_parts

@pytest.mark.parametrize(("parts", "expected"), [
    (("http", "www.example.com", 80, "/news/article?id=3"),
     "http://www.example.com/news/article?id=3"),
    (("https", "www.example.com", 443, "/"), "https://www.example.com/"),
    (("https", "www.example.com", 8443, "/a/"), "https://www.example.com:8443/a/"),
    (("http", "www.example.com", None, "/a?"), "http://www.example.com/a"),
    (("https", "WWW.Example.com.", 443, "/a/./b/../c?q=%41"), "https://www.example.com/a/c?q=A"),
    (("http", "3232235777", 80, "/a\\b"), "http://192.168.1.1/a/b"),
    (("http", "::1", 80, "/"), "http://[::1]/"),
    (("http", "[::1]", 8080, "//x//"), "http://[::1]:8080/x/"),
    (("HTTP", "h", 80, "/"), "http://h/"),
    (("http", "h", 80, "*"), "http://h/*"),
    (("http", "h", 80, ""), "http://h/"),
    (("http", "h", 80, "/a#frag"), "http://h/a"),
    (("http", "h", 80, "/caf\u00e9 \udcff"), "http://h/caf%C3%A9%20%FF"),
    (("http", "127.0.0.1", 80, "/"), "http://127.0.0.1/"),
    (("http", "0x7f.1", 80, "/"), "http://127.0.0.1/"),
    (("http", "h", 80, "/.well-known/x"), "http://h/.well-known/x"),
    (("", "h", 80, "/"), "h:80/"),
    (("ws", "h", 80, "/a\\b"), "ws://h/a/b"),
    (("foo", "h", 80, "/a\\b"), "foo://h:80/a\\b"),
])
def test_from_parts(parts: tuple, expected: str) -> None:
    assert str(from_parts(*parts)) == expected


def test_from_parts_fast_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> CanonicalURL:
        raise AssertionError(f"slow path for {args}")
    monkeypatch.setattr(canonical, "_from_parts_general", fail)
    for parts in [("http", "www.example.com", 80, "/news/article?id=3"),
                  ("https", "www.example.com", 443, "/"),
                  ("https", "a-b.c_d.example.co.uk", 8443, "/a/b.c/?x=1&y=a.b;z=~!$'()*+,:@"),
                  ("http", "xn--bcher-kva.de", None, "/x"),
                  ("https", "BÜCHER.de", 443, "/search?q=caf%C3%A9+cr%C3%A8me&u=http://x/./"),
                  ("http", "127.1", 80, "/?q=a b\t ")]:
        assert from_parts(*parts) == canonical.canonical_url(f"{parts[0]}://{parts[1]}"
                                                             f":{parts[2] or ''}{parts[3]}")


@pytest.mark.parametrize(("parts", "reason"), [
    (("http", "", 80, "/"), "empty host"),
    (("http", "a b", 80, "/"), "not allowed"),
    (("http", "h", 70000, "/"), "out of range"),
    (("http", "h", -1, "/"), "out of range"),
    (("ht tp", "h", 80, "/"), "invalid scheme"),
])
def test_from_parts_invalid(parts: tuple, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        from_parts(*parts)


# --------------------------------------------------------------------------- properties

_TOKENS = [
    "a", "B", "z", "0", "1", "7", "9", "x", "0x", ".", "..", "-", "_", "/", "//", "\\", ":",
    "@", "?", "#", "&", "=", "%", " ", "\t", "\n", "[", "]", "::", "~", "+", ";",
    "%2e", "%2E", "%2f", "%5c", "%25", "%2525", "%41", "%3f", "%23", "%20", "%00", "%80",
    "%C3%BC", "%ZZ", "%4", "/./", "/../", "ü", "Ü", "ß", "\u3002", "\uff0e", "\u00ad", "☃",
    "\uff21", "\udcff", "\ud800", "http://", "https:", "HTTP://", "//", "xn--", "127.1",
    "0300", "3232235777", "[::1]", ":80", ":443", ":8080", "\x00", "\x7f", "\u0080", "é",
]
HTTP_LIKE = ("", "http", "https", "ws", "wss", "ftp")
url_like = st.lists(st.sampled_from(_TOKENS), max_size=24).map("".join)
any_text = st.one_of(st.text(max_size=60), url_like)


@given(any_text)
@example("http://%5B::1%5D/")
@example("//http:8080/")
@example("foo:1/")
@example("http://[abcd:ef::1]/x")
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_canonical_url_only_raises_value_error_and_is_idempotent(text: str) -> None:
    try:
        url = canonical_url(text)
    except ValueError:
        return
    assert url.path.startswith("/")
    assert url.host and url.host == url.host.lower() and url.host.isascii()
    again = canonical_url(str(url))
    assert again == url, str(url)
    assert str(again) == str(url)
    if url.scheme in HTTP_LIKE:             # elsewhere a backslash in a path is data
        assert canonical_url(url.host_path) == url._replace(scheme="", port=None,
                                                                   query="")


@given(any_text)
@settings(max_examples=1500, deadline=None)
def test_canonical_host_only_raises_value_error_and_is_idempotent(text: str) -> None:
    try:
        host = canonical_host(text)
    except ValueError:
        return
    assert canonical_host(host) == host


@given(any_text)
@settings(max_examples=800, deadline=None)
def test_canonical_path_never_fails_and_is_idempotent(text: str) -> None:
    path = canonical_path(text)
    assert path.startswith("/") and path.isascii()
    assert canonical_path(path) == path
    assert canonical_url("h" + path).path == path


_HOST_TOKENS = ["a", "B", "z", "0", "9", "x", "0x", ".", "..", "-", "_", "%2e", "%41", "%25",
                "%2525", "ü", "Ü", "\u3002", "\uff0e", "\u00ad", " ", "\t", "%20", "%2f",
                "%ZZ", "%C3", "127", "0300", "4294967295", "\u0080", "\uff21"]
_PATH_TOKENS = ["/", "//", "a", "Z", ".", "..", "/./", "/../", "\\", "?", "#", "%", "%2e",
                "%2F", "%5C", "%25", "%3F", "%23", "%41", "%zz", " ", "\t", "é", "\udcff",
                "&", "=", ";", "~", "+", "\x00", "\x7f"]


def _ipv4_forms(value: int) -> list[str]:
    quad = [value >> 24, value >> 16 & 255, value >> 8 & 255, value & 255]
    return [str(value), hex(value), ".".join(map(str, quad)),
            ".".join(map(oct, quad)).replace("0o", "0"),
            ".".join(map(hex, quad)).upper().replace("0X", "0x"), f"{quad[0]}.{value & 0xFFFFFF}"]


hosts = st.one_of(
    st.lists(st.sampled_from(_HOST_TOKENS), min_size=1, max_size=12).map("".join)
    .filter(lambda h: h.strip("\t")),
    st.integers(0, 2**32 - 1).flatmap(lambda v: st.sampled_from(_ipv4_forms(v))),
    st.ip_addresses(v=6).map(str).flatmap(lambda a: st.sampled_from([a, a.upper(), f"[{a}]"])),
)
paths = st.lists(st.sampled_from(_PATH_TOKENS), max_size=16).map(lambda ts: "/" + "".join(ts))
schemes = st.sampled_from(["http", "https", "HTTP", "ws", "wss", "ftp", "foo", ""])
ports = st.one_of(st.none(), st.sampled_from([80, 443, 21, 0, 8080, 65535]))


def _outcome(function, *args):
    try:
        return function(*args)
    except ValueError:
        return ValueError


@given(schemes, hosts, ports, paths)
@settings(max_examples=1500, deadline=None)
def test_from_parts_agrees_with_canonical_url(scheme: str, host: str, port: int | None,
                                              path: str) -> None:
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    authority = bracketed if port is None else f"{bracketed}:{port}"
    text = f"{scheme}://{authority}{path}" if scheme else f"//{authority}{path}"
    result = _outcome(from_parts, scheme, host, port, path)
    assert result == _outcome(canonical_url, text)
    if result is not ValueError:
        assert canonical_url(str(result)) == result
        if result.scheme in HTTP_LIKE:      # elsewhere a backslash in a path is data
            assert canonical_url(result.host_path).host_path == result.host_path


plain_hosts = st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True)
plain_paths = st.from_regex(r"/[!-~]{0,30}(\?[ -~\t]{0,10})?", fullmatch=True)


@given(st.sampled_from(["http", "https"]), plain_hosts, ports, plain_paths)
@settings(max_examples=1500, deadline=None)
def test_fast_path_equals_general_path(scheme: str, host: str, port: int | None,
                                       path: str) -> None:
    general = _outcome(lambda: canonical._from_parts_general(scheme, canonical_host(host), port,
                                                             path))
    assert _outcome(from_parts, scheme, host, port, path) == general


@given(st.from_regex(r"[a-z0-9_-]{1,8}(\.[a-z0-9_-]{1,8}){0,3}", fullmatch=True))
def test_plain_hosts_are_their_own_canonical_form(host: str) -> None:
    last = host.rsplit(".", 1)[-1]
    assume(not last.isdigit() and not last.startswith("0x"))
    assert canonical_host(host) == host


def test_a_parent_after_a_tomcat_parent_is_kept_for_both_readings():
    """Issue #15: "/x/..;/../page" is "/x/page" to a browser but "/page" to Tomcat; the
    canonical path keeps the ".." after a "..;" so that urlindex can make both readings."""
    assert canonical_path("/Forum/x/..;/../Thread") == "/Forum/x/..;/../Thread"
    assert canonical_path("/a/..;/b/../../c") == "/a/..;/../c"
    assert canonical_path("/a/.. /../c") == "/a/..%20/../c"
    assert canonical_path("/a/b/../c") == "/a/c"               # plain ".." as before
    assert canonical_path("/a/..;/b") == "/a/..;/b"
    assert canonical_path("/x/;s=1/../p") == "/x/;s=1/../p"    # Tomcat: /x//../p = /p
    assert canonical_path("/x/.;s/../p") == "/x/.;s/../p"
