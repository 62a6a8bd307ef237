"""listformats: every list format, the bad-line accounting, and real UT1 data.

The fast path (a whole-file scan that takes clean lines without per-line Python) must give
exactly what canonical_host gives line by line; the property tests hold it to that.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.helpers import ADDONS, UT1
from webpolicy.lists import formats as listformats
from webpolicy.lists.canonical import canonical_host
from webpolicy.lists.domainindex import is_ip_literal
from webpolicy.lists.formats import FORMATS, ParsedSource, SourceError, parse_source

needs_ut1 = pytest.mark.skipif(not (UT1 / "gambling").is_dir(),
                               reason="no UT1 snapshot beside the repo")


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def entries(result: ParsedSource) -> int:
    return len(result.domains) + len(result.urls)


# --- plain domain lists -------------------------------------------------------------------

def test_domains_are_canonicalised(tmp_path):
    path = write(tmp_path, "d.txt", "\n".join([
        "# a comment", "! also a comment", "", "   ",
        "example.com",
        "WWW.Example.ORG.",                   # upper case, trailing dot
        "bücher.de",                          # IDN -> punycode
        "a..b.example.net",                   # empty label collapsed, as for requests
        "0x7f.1",                             # IPv4 in a browser-accepted form
        "192.168.1.10",
        "[2001:DB8::1]",
        "2001:db8:0:0:0:0:0:2",
        "tracker.example.com # trailing comment",
        "under_score.example.com",            # browsers accept it, so must a list
    ]) + "\n")
    result = parse_source(path)
    assert result.format == "domains"
    # Hosts (dotted names, as bytes) first, then the others (IP literals, single labels).
    assert result.hosts == [b"example.com", b"www.example.org", b"xn--bcher-kva.de",
                            b"a.b.example.net", b"tracker.example.com", b"under_score.example.com"]
    assert result.others == ["127.0.0.1", "192.168.1.10", "2001:db8::1", "2001:db8::2"]
    assert result.domains == [name.decode() for name in result.hosts] + result.others
    assert result.lines == 14
    assert result.skipped == 0 and result.skipped_examples == []
    assert result.urls == [] and result.expressions == []


def test_bad_lines_are_skipped_counted_and_located(tmp_path):
    long_host = ".".join(["a" * 60] * 5)                # 304 characters
    path = write(tmp_path, "bad.txt", "\n".join([
        "good.example.com",                   # 1
        "exa mple.com",                       # 2 whitespace
        "-",                                  # 3 single label
        "http://",                            # 4 no host
        long_host,                            # 5 over-long
        "com",                                # 6 a whole TLD by mistake
        "good2.example.com",                  # 7
        "ads.*.example.com",                  # 8 wildcard in the middle
        "a" * 64 + ".example.com",            # 9 label over 63
        "bad<host>.com",                      # 10 forbidden character
    ]))
    result = parse_source(path)
    assert result.domains == ["good.example.com", "good2.example.com"]
    assert result.skipped == 8
    assert len(result.skipped_examples) == 5
    assert [e.split(": ", 1)[0] for e in result.skipped_examples] == [
        f"{path}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "whitespace" in result.skipped_examples[0]
    assert "whole top-level domain" in result.skipped_examples[1]
    assert "no host" in result.skipped_examples[2]
    assert "longer than 253" in result.skipped_examples[3]
    assert "*.com" in result.skipped_examples[4]


def test_bom_crlf_and_no_final_newline(tmp_path):
    path = write(tmp_path, "win.txt",
                 "\ufeffone.example.com\r\n# c\r\ntwo.example.com\r\nthree.example.com")
    result = parse_source(path)
    assert result.domains == ["one.example.com", "two.example.com", "three.example.com"]
    assert result.lines == 4 and result.skipped == 0


def test_utf16_export(tmp_path):
    path = write(tmp_path, "u16.txt", "one.example.com\r\ntwo.example.com\r\n".encode("utf-16"))
    assert parse_source(path).domains == ["one.example.com", "two.example.com"]


@pytest.mark.parametrize("name", ["list.txt.gz", "list.txt"])   # by suffix, and by magic bytes
def test_gzip(tmp_path, name):
    path = write(tmp_path, name, gzip.compress(b"# gz\nzipped.example.com\nWWW.ZIPPED.NET\n"))
    result = parse_source(path)
    assert result.domains == ["zipped.example.com", "www.zipped.net"]
    assert result.lines == 3


def test_latin1_line_is_skipped_not_fatal(tmp_path):
    path = write(tmp_path, "l1.txt", b"ok.example.com\ncaf\xe9.fr\nfine.example.com # caf\xe9\n")
    result = parse_source(path)
    assert result.domains == ["ok.example.com", "fine.example.com"]
    assert result.skipped == 1
    assert result.skipped_examples == [f"{path}:2: 'café.fr': not valid UTF-8"]


def test_only_the_first_five_examples_are_kept(tmp_path):
    path = write(tmp_path, "many.txt", "bad host\n" * 12 + "ok.example.com\n")
    result = parse_source(path)
    assert result.skipped == 12 and len(result.skipped_examples) == 5
    assert result.domains == ["ok.example.com"]


def test_clean_lists_never_call_canonical_host(tmp_path, monkeypatch):
    """The speed contract: clean lines take the bulk path, not canonical_host one by one."""
    calls = []
    monkeypatch.setattr(listformats, "canonical_host", lambda h: calls.append(h) or h)
    lines = [f"host{i}.example{i % 7}.co.uk" for i in range(20_000)] + ["10.1.2.3"]
    path = write(tmp_path, "clean.txt", "\n".join(lines) + "\n")
    result = parse_source(path)
    assert result.domains == lines and calls == []


# --- wildcard -----------------------------------------------------------------------------

def test_wildcards_mean_the_domain_and_its_subdomains(tmp_path):
    path = write(tmp_path, "w.txt", "*.example.com\n.example.org\n*.XXX\nplain.example.net\n")
    result = parse_source(path)
    assert result.format == "wildcard"
    assert result.domains == ["example.com", "example.org", "plain.example.net", "xxx"]
    assert result.others == ["xxx"]
    assert parse_source(path, "wildcard").domains == result.domains
    assert parse_source(path, "domains").format == "domains"


# --- hosts files --------------------------------------------------------------------------

HOSTS = """\
# StevenBlack-style hosts file
127.0.0.1 localhost
127.0.0.1 localhost.localdomain
255.255.255.255 broadcasthost
::1 localhost ip6-localhost ip6-loopback
fe80::1%lo0 localhost
0.0.0.0 0.0.0.0
0.0.0.0 ads.example.com
0.0.0.0 a.example b.example\tC.Example   # several names on one line
127.0.0.1 tracker.example.net
:: v6block.example.org
"""


def test_hosts_file(tmp_path):
    path = write(tmp_path, "hosts", HOSTS)
    result = parse_source(path)
    assert result.format == "hosts"
    assert result.domains == ["ads.example.com", "a.example", "b.example", "c.example",
                              "tracker.example.net", "v6block.example.org"]
    assert result.skipped == 0
    assert parse_source(path, "hosts").domains == result.domains


def test_hosts_bad_lines_and_bare_names(tmp_path):
    path = write(tmp_path, "hosts", "0.0.0.0 ok.example.com\nbare.example.com\n"
                                    "999.1.1.1 x.example.com\n0.0.0.0 printer ok2.example.com\n"
                                    "10.0.0.1\n")
    result = parse_source(path, "hosts")
    assert result.domains == ["ok.example.com", "bare.example.com", "ok2.example.com"]
    assert result.skipped == 3
    assert result.skipped_examples[0].startswith(f"{path}:3: ")
    assert "not a hosts line" in result.skipped_examples[0]
    assert result.skipped_examples[1].startswith(f"{path}:4: 'printer'")
    assert result.skipped_examples[2] == f"{path}:5: '10.0.0.1': an address without a name"


# --- adblock ------------------------------------------------------------------------------

ADBLOCK = """\
[Adblock Plus 2.0]
! Title: test list
||ads.example.com^
||Tracker.Example.NET^$important
||whole.example.org^|
||third.example.com^$third-party
@@||allowed.example.com^
##.banner
example.com##.sidebar-ad
example.com#@#.not-an-ad
/banner[0-9]+\\.gif/
||paths.example.com/ads/
||wild*.example.com^
|https://anchor.example.com/
plain.example.com
||ip.example^$script,domain=foo.com
||192.168.0.1^
"""


def test_adblock_domain_rules(tmp_path):
    path = write(tmp_path, "easylist.txt", ADBLOCK)
    result = parse_source(path)
    assert result.format == "adblock"
    assert result.domains == ["ads.example.com", "tracker.example.net", "whole.example.org",
                              "192.168.0.1"]
    assert result.skipped == 11
    reasons = " | ".join(result.skipped_examples)
    for reason in ("narrow the rule", "exception rule", "element-hiding rule"):
        assert reason in reasons
    assert result.skipped_examples[0].startswith(f"{path}:6: ")


def test_adblock_without_header_is_detected(tmp_path):
    path = write(tmp_path, "dns.txt", "! AdGuard DNS style\n||one.example^\n||two.example^\n")
    result = parse_source(path)
    assert result.format == "adblock" and result.domains == ["one.example", "two.example"]


# --- URL lists (CTIRU / IWF style) --------------------------------------------------------

def test_url_list(tmp_path):
    path = write(tmp_path, "ctiru.txt", "\n".join([
        "# CTIRU-style list",
        "ctiru-test.webpolicy.invalid/statutory-test-page",
        "http://Bad.Example.com/Forum/viewtopic.php?t=123#post5",
        "https://bad.example.net/a/./b/../c/",
        "whole-site.example.org/",
        "whole-site2.example.org",
        "http://port.example.com:8080/x",
        "http://",
        "*.wild.example.com/dir",
    ]) + "\n")
    result = parse_source(path)
    assert result.format == "urls"
    assert result.urls == [("ctiru-test.webpolicy.invalid", "/statutory-test-page"),
                           ("bad.example.com", "/Forum/viewtopic.php?t=123"),
                           ("bad.example.net", "/a/c/"),
                           ("port.example.com", "/x"),
                           ("wild.example.com", "/dir")]
    assert result.domains == ["whole-site.example.org", "whole-site2.example.org"]
    assert result.skipped == 1 and result.skipped_examples[0].startswith(f"{path}:8: ")
    assert parse_source(path, "urls").urls == result.urls


def test_a_domain_list_refuses_paths(tmp_path):
    path = write(tmp_path, "d.txt",
                 "ok.example.com\nhttp://site.example.com/\nsite.example.net/page\n")
    result = parse_source(path, "domains")
    assert result.domains == ["ok.example.com", "site.example.com"]
    assert result.skipped == 1 and "use format urls" in result.skipped_examples[0]


# --- UT1 directories ----------------------------------------------------------------------

def test_ut1_directory(tmp_path):
    category = tmp_path / "adult"
    category.mkdir()
    write(category, "domains", "porn.example.com\nBAD HOST\n1.2.3.4\n")
    write(category, "urls", "host.example.net/adult/\nhost.example.org\n")
    write(category, "expressions", "(porn|xxx)\n\n")
    write(category, "usage", "black\n")
    result = parse_source(category)
    assert result.format == "ut1" and result.path == str(category)
    assert result.domains == ["porn.example.com", "host.example.org", "1.2.3.4"]
    assert result.urls == [("host.example.net", "/adult/")]
    assert result.expressions == ["(porn|xxx)"]
    assert result.lines == 3 + 2 + 2
    assert result.skipped_examples == [f"{category / 'domains'}:2: 'BAD HOST': contains whitespace"]
    assert parse_source(category, "ut1").domains == result.domains


def test_ut1_directory_with_only_urls_or_gzip(tmp_path):
    category = tmp_path / "c"
    category.mkdir()
    write(category, "urls.gz", gzip.compress(b"only.example.com/x\n"))
    assert parse_source(category).urls == [("only.example.com", "/x")]


def test_ut1_directory_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="neither 'domains' nor 'urls'"):
        parse_source(empty)
    (empty / "adult").mkdir()
    write(empty / "adult", "domains", "x.example.com\n")
    with pytest.raises(SourceError, match="name a category directory"):
        parse_source(empty)
    with pytest.raises(SourceError, match="is a directory"):
        parse_source(empty / "adult", "domains")
    with pytest.raises(SourceError, match="needs a UT1 category directory"):
        parse_source(empty / "adult" / "domains", "ut1")


# --- errors -------------------------------------------------------------------------------

def test_missing_source(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(SourceError) as info:
        parse_source(missing)
    assert info.value.path == str(missing)
    assert str(info.value) == f"{missing}: no such file or directory"


def test_unknown_format_and_binary_and_bad_gzip(tmp_path):
    path = write(tmp_path, "x.txt", "a.example.com\n")
    with pytest.raises(SourceError, match="unknown list format"):
        parse_source(path, "csv")
    with pytest.raises(SourceError, match="binary data"):
        parse_source(write(tmp_path, "x.bin", b"\0\0\0\1tar"))
    with pytest.raises(SourceError, match="bad gzip"):
        parse_source(write(tmp_path, "x.gz", gzip.compress(b"a.example.com\n")[:12]))


def _parse_as_nobody(path: Path) -> subprocess.CompletedProcess:
    """parse_source in a child process that has dropped to `nobody` after its imports: root
    reads anything, and CI runs as root."""
    code = ("import os, sys\nfrom webpolicy.lists.formats import SourceError, parse_source\n"
            "os.setgid(65534)\nos.setuid(65534)\n"
            "try:\n    parse_source(sys.argv[1])\nexcept SourceError as exc:\n"
            "    print(exc)\n    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ADDONS)})


@pytest.fixture
def open_directory():
    """A directory anyone may enter (pytest's tmp_path is inside a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="webpolicy-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def assert_cannot_read(path: Path) -> None:
    """parse_source says "cannot read", as this account or, for root, as nobody."""
    if os.geteuid() != 0:
        with pytest.raises(SourceError, match="cannot read"):
            parse_source(path)
        return
    done = _parse_as_nobody(path)
    assert done.returncode == 3, done.stderr
    assert "cannot read" in done.stdout


def test_unreadable_source(open_directory):
    path = write(open_directory, "secret.txt", "a.example.com\n")
    path.chmod(0)
    assert_cannot_read(path)


def test_source_behind_a_closed_directory(open_directory):
    """A path the proxy's account cannot even look at is a source error, not a crash."""
    closed = open_directory / "closed"
    closed.mkdir()
    path = write(closed, "list.txt", "a.example.com\n")
    closed.chmod(0o700 if os.geteuid() == 0 else 0)    # 0700: root's, so nobody cannot enter
    assert_cannot_read(path)


def test_empty_file_is_not_an_error(tmp_path):
    result = parse_source(write(tmp_path, "empty.txt", ""))
    assert (result.lines, result.skipped, result.domains, result.format) == (0, 0, [], "domains")


def test_formats_constant():
    assert FORMATS == ("auto", "domains", "hosts", "wildcard", "adblock", "ut1", "urls")


# --- the fast path agrees with canonical_host ---------------------------------------------

line_text = st.text(alphabet="ab0-.9xZ_ /*é~%A", max_size=12) | st.sampled_from(
    ["a.com", "x-y.net", "a.com/", "a.com/x", "a.com/X/y/", "a.com//x", "a.com/./x", "a.com/a%41",
     "a.com/x--y", "a.com/~u/B_c-d", "A.com/x", "a.b/x?q", "a.com:80/x", "a.com/x#f", "1.2.3.4", "01.2.3.4", "a--b.com", "-a.com", "a.b-", ".a.com",
     "a..com", "com", "a.0x1", "a.1b", "a" * 70 + ".com", "", "# c", "A.COM",
     "a" * 63 + ".com", "a" * 30 + "-" + "b" * 40 + ".com",
     ".".join(["a" * 63] * 3 + ["b" * 57]) + ".com", ".".join(["a" * 63] * 3 + ["b" * 58]) + ".com"])


@pytest.mark.parametrize("name", [
    "a" * 64 + ".com", "a" * 30 + "-" + "b" * 40 + ".com",
    ".".join(["a" * 63] * 3 + ["b" * 58]) + ".com",             # 254 characters
])
def test_bulk_scan_finds_long_labels_and_names(name):
    lines = ["first.example", name, "last.example"]
    data = [line.encode() for line in lines]
    assert 1 in listformats._suspect_lines(b"\n".join(data) + b"\n", data)


@settings(max_examples=400, deadline=None)
@given(st.lists(line_text, max_size=30), st.booleans())
def test_bulk_scan_only_passes_fast_path_lines(lines, final_newline):
    data = ("\n".join(lines) + ("\n" if final_newline and lines else "")).encode()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    suspects = set(listformats._suspect_lines(data, lines))
    for index, line in enumerate(lines):
        if index not in suspects:
            assert listformats._FAST_HOST.fullmatch(line.decode()), (index, line)


@settings(max_examples=300, deadline=None)
@given(st.lists(line_text, max_size=30), st.booleans())
def test_bulk_parse_equals_line_by_line_canonicalisation(lines, allow_paths):
    """The bulk scan, the fast URL path and the line-by-line parser agree, for URL lists
    (paths allowed) and domain lists (a path is a skipped line)."""
    text = "\n".join(lines) + "\n"
    lines = text.split("\n")[:-1]
    result = ParsedSource("mem", "auto")
    listformats._parse_plain(text.encode(), [line.encode() for line in lines], result, "mem",
                             allow_paths=allow_paths)
    expected, skipped = Counter(), 0
    for line in lines:
        try:
            entry = listformats._plain_entry(line, allow_paths, set())
        except listformats._Bad:
            skipped += 1
            continue
        if entry is not None:
            expected[entry] += 1
    got = Counter((d, None) for d in result.domains) + Counter(result.urls)
    assert got == expected and result.skipped == skipped
    assert_hosts_keep_the_index_promise(result)


def assert_hosts_keep_the_index_promise(result: ParsedSource) -> None:
    """DomainIndex.build_runs takes bytes names unchecked: ASCII, dotted, no IP literal."""
    for host in result.hosts:
        assert host.isascii() and b"." in host and not is_ip_literal(host.decode()), host
    for name in result.others:
        assert "." not in name or is_ip_literal(name), name


hosts_line = st.builds(lambda a, n: f"{a}{n}", st.sampled_from(
    ["0.0.0.0 ", "127.0.0.1 ", "::1 ", "", "# ", "1.2.3.4\t"]), line_text) | st.sampled_from(
    ["127.0.0.1 localhost.localdomain", "0.0.0.0 localhost.localdomain x.com",
     "0.0.0.0 a.com b.com"])


@settings(max_examples=300, deadline=None)
@given(st.lists(hosts_line, max_size=30))
def test_bulk_hosts_parse_equals_line_by_line(lines):
    text = "\n".join(lines) + "\n"
    lines = text.split("\n")[:-1]
    result = ParsedSource("mem", "hosts")
    listformats._parse_hosts([line.encode() for line in lines], result, "mem")
    expected = ParsedSource("mem", "hosts")
    for index, line in enumerate(lines):
        try:
            listformats._hosts_line(line, expected)
        except listformats._Bad as exc:
            expected.skip("mem", index + 1, str(exc))
    assert result == expected
    assert_hosts_keep_the_index_promise(result)


@given(st.from_regex(listformats._FAST_HOST, fullmatch=True)
       | st.from_regex(listformats._FAST_IPV4, fullmatch=True))
def test_fast_path_hosts_are_already_canonical(host):
    assert canonical_host(host) == host


# --- real UT1 data ------------------------------------------------------------------------

def count_lines(path: Path) -> tuple[int, int]:
    """(lines, non-blank lines) as wc -l would count them (plus an unterminated last line)."""
    lines = path.read_bytes().splitlines()
    return len(lines), sum(1 for line in lines if line.strip())


def ut1_counts(category: Path) -> tuple[int, int]:
    total = nonblank = 0
    for name in ("domains", "urls"):
        if (category / name).is_file():
            t, n = count_lines(category / name)
            total, nonblank = total + t, nonblank + n
    if (category / "expressions").is_file():
        total += count_lines(category / "expressions")[0]
    return total, nonblank


@needs_ut1
@pytest.mark.parametrize("name, domain, url", [
    ("gambling", "bet365.com", ("astrolabio.net", "/casino/")),
    ("vpn", "nordvpn.com", None),
    ("doh", "dns.google", ("nixnet.xyz", "/dns/")),
    ("remote-control", "teamviewer.com", None),
    ("redirector", "0------------0-------------0.0n-line.biz", ("100fm6.com", "/proxy")),
    ("adult", None, ("020sextoy.com", "/sk")),                  # domains absent in the snapshot
])
def test_real_ut1_categories(name, domain, url):
    category = UT1 / name
    result = parse_source(category)
    total, nonblank = ut1_counts(category)
    assert result.format == "ut1"
    assert result.lines == total
    assert entries(result) == nonblank - result.skipped
    assert result.skipped == 0, result.skipped_examples
    if domain:
        assert domain in result.domains
    if url:
        assert url in result.urls


@needs_ut1
def test_real_ut1_files_parse_as_plain_lists():
    result = parse_source(UT1 / "gambling" / "domains")
    assert result.format == "domains"
    assert len(result.domains) == count_lines(UT1 / "gambling" / "domains")[1]
    assert {"bet365.com", "pokerstars.com", "williamhill.com"} <= set(result.domains)
    urls = parse_source(UT1 / "adult" / "urls")
    assert urls.format == "urls" and ("020sextoy.com", "/sk") in urls.urls


# --------------------------------------------------------------------------- split parsing


def _pieces(path: Path, fmt: str, cut: float = 0.5) -> ParsedSource:
    """parse_source in two pieces, put together as the list compiler does; the hosts of
    the second piece appended (the compiler indexes them from the other process)."""
    first, second = parse_source(path, fmt, part=(0, cut)), parse_source(path, fmt, part=(cut, 1))
    first.add_piece(second.summary())
    first.elsewhere -= len(second.hosts)
    first.hosts += second.hosts
    return first


@settings(max_examples=150, deadline=None)
@given(st.lists(line_text, max_size=40), st.sampled_from(["auto", "domains", "urls"]),
       st.booleans(), st.sampled_from([0.01, 0.3, 0.5, 0.62, 0.99]))
def test_two_pieces_parse_as_the_whole(tmp_path_factory, lines, fmt, crlf, cut):
    path = tmp_path_factory.mktemp("split") / "list.txt"
    path.write_bytes(("\r\n" if crlf else "\n").join(["# a list", *lines, "last.example"])
                     .encode())
    whole = parse_source(path, fmt)
    if not listformats.splits(path, fmt):
        assert whole.format in ("hosts", "adblock")
        return
    pieced = _pieces(path, fmt, cut)
    assert pieced.domains == whole.domains and pieced.urls == whole.urls
    assert (pieced.lines, pieced.skipped, pieced.format) == \
        (whole.lines, whole.skipped, whole.format)
    assert pieced.skipped_examples == whole.skipped_examples       # file:line as in the whole
    assert pieced.entries == whole.entries


def test_split_line_numbers_count_from_the_file_start(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("".join(f"site{i}.example\n" for i in range(1000)) + "exa mple.com\n")
    second = parse_source(path, "domains", part=(0.5, 1))
    assert second.skipped_examples == [f"{path}:1001: 'exa mple.com': contains whitespace"]
    assert parse_source(path, "domains").skipped_examples == second.skipped_examples
    assert len(parse_source(path, "domains", part=(0, 0.5)).domains) + len(second.domains) == 1000


def test_ut1_category_splits_its_domains_file(tmp_path):
    category = tmp_path / "adult"
    category.mkdir()
    (category / "domains").write_text("".join(f"d{i}.example\n" for i in range(500)))
    (category / "urls").write_text("u.example/path\n")
    (category / "expressions").write_text("(porn|xxx)\n")
    assert listformats.splits(category, "ut1") and listformats.splits(category, "auto")
    whole, pieced = parse_source(category, "ut1"), _pieces(category, "ut1")
    assert pieced.domains == whole.domains and pieced.urls == whole.urls == [("u.example", "/path")]
    assert pieced.expressions == whole.expressions and pieced.lines == whole.lines
    assert pieced.format == "ut1"


@pytest.mark.parametrize("text, fmt", [
    ("0.0.0.0 a.example\n0.0.0.0 b.example\n", "auto"),      # hosts: parsed whole
    ("||a.example^\n||b.example^\n", "auto"),                  # adblock
    ("a.example\n", "hosts"),
])
def test_hosts_and_adblock_lists_are_not_split(tmp_path, text, fmt):
    path = tmp_path / "list.txt"
    path.write_text(text)
    assert not listformats.splits(path, fmt)
    with pytest.raises(SourceError, match="split"):
        parse_source(path, fmt, part=(0.5, 1))


@pytest.mark.parametrize("part", [(0.5, 0.5), (0.6, 0.4), (-0.1, 0.5), (0.5, 1.1)])
def test_a_part_must_be_a_span_of_the_file(tmp_path, part):
    path = tmp_path / "list.txt"
    path.write_text("a.example\n")
    with pytest.raises(ValueError, match="part"):
        parse_source(path, "domains", part=part)


# --- issue #15: a missing expected part of a UT1 category is a failed source ---------------

def test_ut1_part_named_by_the_import_note_is_expected(tmp_path):
    """scripts/import_ut1.py's SOURCE note names the files it copied: one missing (a
    category losing `domains` mid-update) fails the source, naming the file."""
    category = tmp_path / "adult"
    category.mkdir()
    write(category, "SOURCE", "UT1 blacklists\n\nFiles: domains (2 lines), urls (1 lines), "
                              "copied unmodified (one domain, or host/path, per line).\n")
    write(category, "domains", "a.test\nb.test\n")
    write(category, "urls", "c.test/x\n")
    assert parse_source(category).parts == ["domains", "urls"]
    (category / "domains").unlink()
    with pytest.raises(SourceError) as info:
        parse_source(category)
    assert info.value.path == str(category / "domains")
    assert "missing" in info.value.message and "SOURCE" in info.value.message


def test_ut1_part_present_at_the_last_load_is_expected(tmp_path):
    category = tmp_path / "adult"
    category.mkdir()
    write(category, "urls", "c.test/x\n")
    assert parse_source(category).parts == ["urls"]
    with pytest.raises(SourceError, match="missing.*last load") as info:
        parse_source(category, expect=("domains", "urls"))
    assert info.value.path == str(category / "domains")
    write(category, "domains", "")           # an empty file: removed on purpose upstream
    assert parse_source(category, expect=("domains", "urls")).urls == [("c.test", "/x")]
