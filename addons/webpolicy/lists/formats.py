"""Parse blocklist sources into canonical host and host/path-prefix entries.

Supported formats (see FORMATS): plain domain lists, hosts files, `*.domain` wildcard lists,
adblock `||domain^` rules, URL lists (CTIRU/IWF style `host/path`), and UT1 category
directories (`domains`, `urls`, `expressions`).  Entries come out in the canonical forms of
canonical.py, so a list entry and a request are compared like with like.

Real lists are big (UT1 adult is ~4.5M lines), so the common case -- an already clean,
lower-case domain per line -- never reaches Python code per line: the file is scanned as
bytes, undecoded, and a whole-file scan in C (bytes.translate, bytes.find) finds the few lines
that might not be canonical; the clean runs between them are taken as list slices of bytes
(ParsedSource.hosts, which the index hashes as they are), and only those few lines are decoded
and go through canonical_host.  About 0.4 us a line on the (slow) VM of docs/benchmarks.md,
most of it bytes.translate and bytes.split; decoding every line to str first cost ~2x.

Bad lines are skipped and counted, never fatal: whether a list that yields nothing is an error
is the caller's decision (statutory lists fail, others warn).  Only a source that cannot be
read at all raises SourceError, and so does a UT1 category missing a file it is expected to
have (named by its import note, or read at the last load): a source that loses a part
mid-update is a failed source, never a smaller list.
"""

from __future__ import annotations

import gzip
import ipaddress
import re
import string
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

from webpolicy.lists.canonical import canonical_host, canonical_url
from webpolicy.lists.domainindex import is_ip_literal

FORMATS = ("auto", "domains", "hosts", "wildcard", "adblock", "ut1", "urls")
MAX_EXAMPLES = 5
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
UT1_FILES = ("domains", "urls", "expressions")
UT1_NOTE = "SOURCE"              # scripts/import_ut1.py's note: "Files: domains (N lines), ..."
_NOTE_FILES = re.compile(r"^Files:(.*)$", re.M)
_NOTE_FILE = re.compile(r"\b(domains|urls|expressions) \(")

# An already-canonical host: lower-case LDH labels of 1..63 characters, no "--" anywhere (rare
# outside "xn--", and it keeps the whole-file scan to one rule: no two adjacent separators),
# and a last label starting with a letter (so nothing IPv4-like, e.g. "1.2.3.4" or "0x7f.1").
# Every string this matches is its own canonical_host(): a unit test holds canonical.py to that.
_FAST_HOST = re.compile(
    r"(?!.*--)(?=.{1,253}\Z)"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
)
# An already-canonical URL entry without a scheme: a _FAST_HOST, then a path of plain
# segments (letters, digits, "_", "~", "-": no ".", "%" or "//"), and no "--" anywhere; such
# a line is what canonical_url would make of it (a unit test holds this).  URL lists (CTIRU,
# UT1 urls) are mostly such lines, and canonical_url costs ~15 us a line.
_FAST_URL = re.compile(
    r"(?!.*--)(?=[^/]{1,253}/)"
    r"((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?)"
    r"(/(?:[A-Za-z0-9_~-]+/)*[A-Za-z0-9_~-]*)"
)
# A canonical dotted-quad IPv4 address (no leading zeros): UT1 lists hold tens of thousands.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_FAST_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# Byte classes for the whole-file scan (_suspect_lines): letters -> "a", digits -> "0",
# ".", "-" and newline as themselves, anything else -> "!".
_CLASS_TABLE = bytes(
    ord("a") if c in string.ascii_lowercase else ord("0") if c in string.digits
    else b if c in ".-\n" else ord("!")
    for b, c in ((b, chr(b)) for b in range(256))
)
# Separators (".", "-", newline) -> ".", the rest -> "a": ".." is then any two adjacent
# separators -- an empty label, a label starting or ending with "-", "--", a line starting or
# ending with "." or "-", or an empty line -- found with one C-speed bytes.find.
_SEPARATOR_TABLE = bytes(ord(".") if chr(b) in ".-\n" else ord("a") for b in range(256))
# A last label starting with a digit: IPv4-like ("1.2.3.4", "a.0x7f"), not a domain.
_DIGIT_LAST_LABEL = re.compile(rb"\.0[a0-]*(?=\n)")
_MAX_FAST_LINE = 63             # longer lines may hold a label over 63: check them one by one
# Every byte but newline -> "x": a run of _MAX_FAST_LINE + 1 of them is a long line.
_LENGTH_TABLE = bytes(b if b == 10 else ord("x") for b in range(256))
# " # comment" after an entry.  A "#" with no space before it is left alone: it may be a URL
# fragment ("a.com/x#y") or part of an adblock rule ("a.com##.ad"), and those say why they fail.
_TRAILING_COMMENT = re.compile(r"[ \t]+#.*")
_WHITESPACE = re.compile(r"\s")
# "||example.com^", optionally "|" (end anchor) and "$options".  No "*", "/" or "^" inside the
# host part: such rules match more (or other) than one domain and its subdomains.
_ADBLOCK_DOMAIN = re.compile(r"\|\|([^/^$|*]+)\^\|?(?:\$(.*))?")
# Options that do not narrow a rule below "every request to this domain": $important only
# raises priority, $all/$document/$doc cover the whole site.  Anything else ($third-party,
# $script, $domain=..., $dnstype=...) means the author blocked a subset; blocking the whole
# domain would over-block (think `||google.com^$third-party`), so such rules are skipped.
_ADBLOCK_WHOLE_DOMAIN_OPTIONS = frozenset({"important", "all", "document", "doc"})
_ADBLOCK_COSMETIC = ("##", "#@#", "#?#", "#$#", "#%#")
# Names hosts files map for the machine itself, not blocking entries.
_HOSTS_LOCAL_NAMES = frozenset({
    "localhost", "localhost.localdomain", "local", "broadcasthost", "localdomain",
    "0.0.0.0", "127.0.0.1", "::", "::1", "0:0:0:0:0:0:0:0", "0:0:0:0:0:0:0:1",
})
_HOSTS_DOTTED_LOCAL_NAMES = ("localhost.localdomain",)
_HOSTS_PREFIXES = ("0.0.0.0 ", "127.0.0.1 ")
_SAMPLE_LINES = 500
_SPLIT_FORMATS = ("auto", "domains", "wildcard", "urls")


class SourceError(Exception):
    """A list source that cannot be read at all (missing, unreadable, not a list)."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


@dataclass
class ParsedSource:
    path: str
    format: str                       # the format used (detected or explicit)
    # Domain entries, canonical, in two kinds.  hosts: names with a dot that are not IP
    # literals, as ASCII bytes -- the bulk of a big list, cut from the file undecoded and
    # hashed by the index as they are.  others: IP literals and single labels (a wildcard
    # TLD), which the index checks one by one; few.
    hosts: list[bytes] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    urls: list[tuple[str, str]] = field(default_factory=list)  # (host, path[?query] prefix)
    expressions: list[str] = field(default_factory=list)  # UT1 regexes, compiled by the caller
    lines: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)  # first 5 "file:line: reason"
    elsewhere: int = 0                # hosts of this source that another process parsed
    parts: list[str] = field(default_factory=list)  # UT1 files read ("domains", "urls", ...)

    @property
    def domains(self) -> list[str]:
        """Every domain entry as str, hosts first: for small lists (statutory ones, the CLI,
        tests).  The list compiler indexes hosts and others as they are."""
        return [*map(bytes.decode, self.hosts), *self.others]

    @property
    def entries(self) -> int:
        return len(self.hosts) + len(self.others) + self.elsewhere + len(self.urls)

    def add_host(self, host: str) -> None:
        """A canonical host, into the kind it belongs to."""
        if "." in host and not is_ip_literal(host):
            self.hosts.append(host.encode())
        else:
            self.others.append(host)

    def summary(self) -> dict:
        """What another process needs of this piece but its hosts (see add_piece)."""
        return {"format": self.format, "hosts": len(self.hosts), "others": self.others,
                "urls": self.urls, "lines": self.lines, "skipped": self.skipped,
                "skipped_examples": self.skipped_examples}

    def add_piece(self, later: dict) -> None:
        """Count in the summary() of the piece after this one, whose hosts are indexed by
        the process that parsed it (its others and URL entries are taken here)."""
        self.elsewhere += later["hosts"]
        self.others.extend(later["others"])
        self.urls.extend(map(tuple, later["urls"]))
        self.lines += later["lines"]
        self.skipped += later["skipped"]
        room = MAX_EXAMPLES - len(self.skipped_examples)
        self.skipped_examples.extend(later["skipped_examples"][:max(room, 0)])
        formats = {self.format, later["format"]}
        self.format = next((f for f in ("urls", "wildcard", "domains") if f in formats),
                           self.format)

    def skip(self, file: str, lineno: int, reason: str) -> None:
        """Count a bad entry; keep the first few so the admin can find and fix them."""
        self.skipped += 1
        if len(self.skipped_examples) < MAX_EXAMPLES:
            self.skipped_examples.append(f"{file}:{lineno}: {reason}")


class _Bad(ValueError):
    """One entry is unusable; the message says why (it becomes a skipped example)."""


Part = tuple[float, float]
WHOLE: Part = (0.0, 1.0)


def parse_source(path: str | Path, fmt: str = "auto", part: Part = WHOLE,
                 expect: Iterable[str] = ()) -> ParsedSource:
    """Parse one list source (a file, or a UT1 category directory) in format `fmt`.

    `expect`: files of a UT1 category that must be there (those it had at the last load,
    see compiler.ListCache); one missing is a SourceError naming it.

    `part` (start, end), fractions of the file's bytes, parses only the lines that begin in
    that span of a plain list file, or of a UT1 category's `domains` file (its other files
    go with the part that starts at 0), so that processes can share one big list
    (compiler.py): parts that meet at the same fraction cut at the same line end.  Line
    numbers still count from the file's start; ParsedSource.add_piece() puts the parts'
    counts together.  Only sources for which splits() is true can be split.
    """
    if part != WHOLE:
        if not 0 <= part[0] < part[1] <= 1:
            raise ValueError(f"part {part!r}: not 0 <= start < end <= 1")
        return _parse_piece(Path(path), fmt, part, expect)
    p = Path(path)
    if fmt not in FORMATS:
        raise SourceError(p, f"unknown list format {fmt!r} (expected one of {', '.join(FORMATS)})")
    try:
        is_dir = p.is_dir()
    except OSError as exc:               # a directory on the way cannot be entered
        raise SourceError(p, f"cannot read: {exc.strerror or exc}") from None
    if is_dir:
        if fmt not in ("auto", "ut1"):
            raise SourceError(p, f"is a directory; format {fmt} needs a file")
        return _parse_ut1(p, WHOLE, expect)
    if fmt == "ut1":
        raise SourceError(p, "format ut1 needs a UT1 category directory (holding domains/urls)")
    data = read_data(p)
    result = ParsedSource(str(p), fmt)
    kind = _detect(_decoded_lines(data)) if fmt == "auto" else fmt
    if kind in ("hosts", "adblock"):
        result.format = kind
    if kind == "hosts":
        lines = _split_lines(data)
        result.lines = len(lines)
        _parse_hosts(lines, result, str(p))
    elif kind == "adblock":
        lines = _text_lines(data)
        result.lines = len(lines)
        _parse_adblock(lines, result, str(p))
    else:
        _parse_plain_piece(p, data, result, WHOLE, allow_paths=kind in ("urls", "auto"))
    return result


def splits(path: str | Path, fmt: str) -> bool:
    """Whether parse_source(path, fmt, part) splits this source: a plain list file (not hosts
    or adblock; an `auto` file is detected from its head, the same way in every process), or
    a UT1 category directory, whose `domains` file is split."""
    p = Path(path)
    if p.is_dir():
        return fmt in ("auto", "ut1") and _ut1_file(p, "domains") is not None
    if fmt not in _SPLIT_FORMATS or not p.is_file():
        return False
    if fmt != "auto":
        return True
    try:
        return _detect(_decoded_lines(read_data(p))) == "auto"
    except SourceError:
        return False


def _parse_piece(path: Path, fmt: str, part: Part, expect: Iterable[str] = ()) -> ParsedSource:
    if path.is_dir():
        if _ut1_file(path, "domains") is None:
            raise SourceError(path, "only a UT1 category with a domains file is split")
        return _parse_ut1(path, part, expect)
    data = read_data(path)
    if fmt not in _SPLIT_FORMATS or (fmt == "auto" and _detect(_decoded_lines(data)) != "auto"):
        raise SourceError(path, "only plain domain, wildcard or URL lists are split")
    result = ParsedSource(str(path), fmt)
    _parse_plain_piece(path, data, result, part, allow_paths=fmt in ("urls", "auto"))
    return result


def _parse_plain_piece(file: Path, data: bytes, result: ParsedSource, part: Part,
                       allow_paths: bool) -> None:
    """The lines of data that begin in `part` of it, into result."""
    start, end = (_cut(data, fraction) for fraction in part)
    piece = data if (start, end) == (0, len(data)) else data[start:end]
    lines = _split_lines(piece)
    result.lines += len(lines)
    _parse_plain(piece, lines, result, str(file), allow_paths,
                 first_line=data.count(b"\n", 0, start))


def _cut(data: bytes, fraction: float) -> int:
    """Where a part ending (or beginning) at `fraction` of data ends: the start of the line
    after the one holding that byte; 0 and the end for the fractions 0 and 1."""
    if fraction <= 0:
        return 0
    position = min(int(len(data) * fraction), len(data))
    end = data.find(b"\n", position)
    return len(data) if end == -1 or fraction >= 1 else end + 1


def _split_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _decoded_lines(data: bytes) -> Iterator[str]:
    """The lines from the start, decoded one at a time: _detect reads only as many as it
    needs (it stops after _SAMPLE_LINES entries), and every process splitting a file sees
    the same ones."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end == -1 else end
        yield data[start:end].decode("utf-8", "surrogateescape")
        start = end + 1


# --- reading ------------------------------------------------------------------------------

def read_data(path: Path) -> bytes:
    """The file's bytes with "\n" line ends: gzip, BOM, UTF-16 (re-encoded as UTF-8), CRLF.
    Not decoded: plain lists are scanned as bytes, and only their odd lines decoded."""
    data = _read_bytes(path)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):        # Windows "Unicode" (UTF-16) export
        try:
            return _normalise_ends(data.decode("utf-16").encode("utf-8"))
        except UnicodeDecodeError as exc:
            raise SourceError(path, f"not valid utf-16: {exc.reason}") from None
    if b"\0" in data[:4096]:
        raise SourceError(path, "binary data, not a text list (an archive? extract it first)")
    return _normalise_ends(data.removeprefix(b"\xef\xbb\xbf"))


def _normalise_ends(data: bytes) -> bytes:
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data


def _text_lines(data: bytes) -> list[str]:
    """read_data()'s bytes as lines of text, for the formats read line by line in Python.

    Bytes that are not UTF-8 are kept as lone surrogates ("surrogateescape"), so one bad line
    is skipped and reported (see _clean) instead of the whole list failing to load.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(path, "no such file or directory") from None
    except OSError as exc:
        raise SourceError(path, f"cannot read: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":                      # gzip magic, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(path, f"bad gzip data: {exc}") from None
    return data


# --- format detection ---------------------------------------------------------------------

def _detect(lines: list[str]) -> str:
    """Guess hosts / adblock / plain from the first few hundred entries.

    Plain covers domains, wildcard and URL lists: one tolerant parser reads all three, and the
    reported format is settled by what it found (see _parse_plain).
    """
    adblock = hosts = total = 0
    for line in lines:
        s = line.strip()
        if not s:
            continue
        if s.startswith("[adblock") or s.startswith("[Adblock"):
            return "adblock"
        if s[0] == "!" or (s[0] == "#" and not s.startswith(_ADBLOCK_COSMETIC)):
            continue
        total += 1
        if _looks_adblock(s):
            adblock += 1
        elif _looks_hosts(s):
            hosts += 1
        if total >= _SAMPLE_LINES:
            break
    if total and adblock * 2 >= total:
        return "adblock"
    if total and hosts * 2 >= total:
        return "hosts"
    return "auto"


def _looks_adblock(s: str) -> bool:
    return (s.startswith(("||", "|", "@@")) or s.endswith("^")
            or any(marker in s for marker in _ADBLOCK_COSMETIC) or "^$" in s)


def _looks_hosts(s: str) -> bool:
    parts = s.split(None, 2)
    return len(parts) >= 2 and _is_ip(parts[0])


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


# --- plain lists: domains, wildcard, urls -------------------------------------------------

def _parse_plain(data: bytes, lines: list[bytes], result: ParsedSource, file: str,
                 allow_paths: bool, first_line: int = 0) -> None:
    """Domain, wildcard and URL lines; clean domains are taken in bulk, as bytes.

    With allow_paths false (format domains/wildcard) a line with a real path is skipped rather
    than silently widened to the whole host or narrowed to a URL the admin did not ask for.
    """
    saw: set[str] = set()
    for index in _take_clean(lines, _suspect_lines(data, lines), result.hosts):
        line = lines[index].decode("utf-8", "surrogateescape")
        if _FAST_IPV4.fullmatch(line):                    # tens of thousands in UT1 lists
            result.others.append(line)
            continue
        if allow_paths and (url := _FAST_URL.fullmatch(line)) and url[2] != "/":
            saw.add("url")
            result.urls.append((url[1], url[2]))
            continue
        try:
            entry = _plain_entry(line, allow_paths, saw)
        except _Bad as exc:
            result.skip(file, first_line + index + 1, str(exc))
            continue
        if entry is not None:
            host, prefix = entry
            if prefix is None:
                result.add_host(host)
            else:
                result.urls.append((host, prefix))
    if result.format == "auto":
        result.format = "urls" if "url" in saw else "wildcard" if "wildcard" in saw else "domains"


def _take_clean(candidates: list[bytes], suspects: Iterable[int],
                hosts: list[bytes]) -> Iterator[int]:
    """Yield each suspect index in order, first adding the clean run before it to hosts.

    The clean runs are copied as list slices, not line by line.
    """
    start = 0
    for index in suspects:
        if index > start:
            hosts.extend(candidates[start:index])
        start = index + 1
        yield index
    hosts.extend(candidates[start:])


def _suspect_lines(data: bytes, lines: list[bytes]) -> list[int]:
    """Sorted indices of the lines (of data) that may not be already-canonical hosts.

    Every line not returned matches _FAST_HOST (a unit test holds this).  The checks run over
    the whole file at C speed -- bytes.translate, bytes.find, one simple regex -- so a clean
    line costs no Python code at all; per-line regex matching would cost ~0.5 us a line.
    Bytes outside ASCII fall in the "!" class, so such lines are suspects.  The first and
    last lines are always returned: the scans look for line boundaries.
    """
    if not lines:
        return []
    classes = data.translate(_CLASS_TABLE)
    found = {0, len(lines) - 1}
    found.update(_line_numbers(classes, _first_per_line(classes, b"!")))
    separators = classes.translate(_SEPARATOR_TABLE)
    found.update(_line_numbers(classes, _pairs(_find_all(separators, b".."))))
    del separators                                           # lists can be 100 MB
    found.update(_line_numbers(classes, (m.end() for m in _DIGIT_LAST_LABEL.finditer(classes))))
    dots = classes.translate(None, b"a0-!")                  # only "." and newline are left
    found.update(_line_numbers(dots, (i + 1 for i in _find_all(dots, b"\n\n"))))
    del dots
    lengths = classes.translate(_LENGTH_TABLE)
    found.update(_line_numbers(lengths, _first_per_line(lengths, b"x" * (_MAX_FAST_LINE + 1))))
    return sorted(found)


def _find_all(buffer: bytes, needle: bytes) -> Iterator[int]:
    index = buffer.find(needle)
    while index != -1:
        yield index
        index = buffer.find(needle, index + 1)


def _first_per_line(buffer: bytes, needle: bytes) -> Iterator[int]:
    """Like _find_all, but one hit per line: a URL list has many "/" and one line each."""
    index = buffer.find(needle)
    while index != -1:
        yield index
        end = buffer.find(b"\n", index)
        if end == -1:
            return
        index = buffer.find(needle, end + 1)


def _pairs(positions: Iterable[int]) -> Iterator[int]:
    """Both characters of a two-character find: they may lie on either side of a newline."""
    for position in positions:
        yield position
        yield position + 1


def _line_numbers(buffer: bytes, positions: Iterable[int]) -> Iterator[int]:
    """The 0-based line of each (ascending) position: the newlines before it, counted in C."""
    line = last = 0
    for position in positions:
        line += buffer.count(b"\n", last, position)
        last = position
        yield line


def _plain_entry(line: str, allow_paths: bool, saw: set[str]) -> tuple[str, str | None] | None:
    """One plain-list line -> (host, None) for a domain, (host, prefix) for a URL, None if blank."""
    s = _entry_text(line)
    if s is None:
        return None
    if _WHITESPACE.search(s):
        raise _Bad(f"{_show(s)}: contains whitespace")
    wildcard = s.startswith(("*.", "."))
    if wildcard:                  # "*.a.com" and ".a.com" mean what "a.com" means: a + subdomains
        saw.add("wildcard")
        s = s[2:] if s[0] == "*" else s[1:]
    if _is_url_syntax(s):
        saw.add("url")
        host, prefix = _url_entry(s)
        if prefix is not None and not allow_paths:
            raise _Bad(f"{_show(s)}: a URL with a path in a domain list (use format urls)")
        return host, prefix
    return _host_entry(s, allow_tld=wildcard), None


def _entry_text(line: str) -> str | None:
    """The entry part of a line: None for blank and comment lines; _Bad if it is not UTF-8."""
    s = line.strip()
    if not s or s[0] in "#!":
        return None
    return _clean(s)


def _clean(s: str) -> str:
    """Drop a trailing " # comment"; _Bad if the entry holds bytes that were not UTF-8."""
    if " #" in s or "\t#" in s:
        s = _TRAILING_COMMENT.sub("", s, count=1)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        shown = s.encode("utf-8", "surrogateescape").decode("latin-1")
        raise _Bad(f"{_show(shown)}: not valid UTF-8") from None
    return s


def _is_url_syntax(s: str) -> bool:
    """Has a scheme, path, query or port, so canonical_url (not canonical_host) must read it."""
    if "/" in s or "?" in s:
        return True
    if ":" not in s:
        return False
    if s.startswith("[") and s.endswith("]"):                # bracketed IPv6 literal
        return False
    return s.count(":") == 1                                 # host:port; 2+ colons is IPv6


def _url_entry(s: str) -> tuple[str, str | None]:
    """A URL line -> (host, None) if it names a whole site, else (host, "path[?query]").

    The query is kept in the prefix because decision.py matches prefixes against
    "path?query": a CTIRU entry for one forum thread must not block the whole forum.
    """
    try:
        url = canonical_url(s)
    except ValueError as exc:
        raise _Bad(f"{_show(s)}: bad URL: {exc}") from None
    host = _checked_host(url.host, s, allow_tld=False)
    prefix = f"{url.path}?{url.query}" if url.query else url.path
    return host, (None if prefix == "/" else prefix)


def _host_entry(s: str, allow_tld: bool = False) -> str:
    if _FAST_HOST.fullmatch(s) or _FAST_IPV4.fullmatch(s):
        return s
    try:
        host = canonical_host(s)
    except ValueError as exc:
        raise _Bad(f"{_show(s)}: bad host: {exc}") from None
    return _checked_host(host, s, allow_tld)


def _checked_host(host: str, original: str, allow_tld: bool) -> str:
    """Reject what canonicalisation allows but a list entry must not be.

    canonical_host follows browsers, which check no lengths and let "*" through; an entry
    that no DNS name can equal would never match, so it is reported instead.  A bare single
    label ("com") would block a whole top-level domain: almost always a mistake, so it needs
    the explicit wildcard spelling "*.com" (or ".com").
    """
    if not host:
        raise _Bad(f"{_show(original)}: empty host")
    if len(host) > MAX_HOST_LENGTH:
        raise _Bad(f"{_show(original)}: host longer than {MAX_HOST_LENGTH} characters")
    if "*" in host:
        raise _Bad(f"{_show(original)}: a wildcard is only allowed as a leading '*.'")
    if ":" not in host and max(map(len, host.split("."))) > MAX_LABEL_LENGTH:
        raise _Bad(f"{_show(original)}: a label longer than {MAX_LABEL_LENGTH} characters")
    if "." not in host and ":" not in host and not allow_tld:
        raise _Bad(f"{_show(original)}: a single label would block a whole top-level domain "
                   f"(write *.{host} if that is meant)")
    return host


def _show(s: str, limit: int = 80) -> str:
    return repr(s if len(s) <= limit else s[:limit] + "...")


# --- hosts files --------------------------------------------------------------------------

def _parse_hosts(lines: list[bytes], result: ParsedSource, file: str) -> None:
    """`<address> <name> [<name>...]` lines; every name (whatever the address) is blocked.

    The usual "0.0.0.0 name" line is taken in bulk: the address is cut off each line in C and
    the rest goes through the domain-list scan.  So a bare domain line is accepted as well,
    which is what such a line in a hosts list means.
    """
    names = lines
    for prefix in _HOSTS_PREFIXES:
        names = list(map(bytes.removeprefix, names, repeat(prefix.encode())))
    data = b"\n".join(names) + b"\n"
    suspects = sorted({*_suspect_lines(data, names),   # "localhost.localdomain" looks clean
                       *_lines_equal_to(data, _HOSTS_DOTTED_LOCAL_NAMES)})
    for index in _take_clean(names, suspects, result.hosts):
        try:
            _hosts_line(lines[index].decode("utf-8", "surrogateescape"), result)
        except _Bad as exc:
            result.skip(file, index + 1, str(exc))


def _hosts_line(line: str, result: ParsedSource) -> None:
    s = _entry_text(line)
    if s is None:
        return
    first, *names = s.split()
    if not names and _is_ip(first):
        raise _Bad(f"{_show(s)}: an address without a name")
    if not names:
        names = [first]                                   # a bare domain line
    elif not _is_ip(first):
        raise _Bad(f"{_show(s)}: not a hosts line ('<address> <name>...')")
    bad = []
    for name in names:
        lowered = name.lower()
        if lowered in _HOSTS_LOCAL_NAMES or lowered.startswith("ip6-"):
            continue
        try:
            result.add_host(_host_entry(lowered))
        except _Bad as exc:
            bad.append(str(exc))
    if bad:
        raise _Bad("; ".join(bad))


def _lines_equal_to(data: bytes, names: Iterable[str]) -> Iterator[int]:
    """Indices of the lines of data (which ends with a newline) that are exactly one of names."""
    padded = b"\n" + data
    for name in names:
        needle = b"\n" + name.encode() + b"\n"
        index = padded.find(needle)
        while index != -1:
            yield padded.count(b"\n", 0, index)
            index = padded.find(needle, index + 1)


# --- adblock ------------------------------------------------------------------------------

def _parse_adblock(lines: list[str], result: ParsedSource, file: str) -> None:
    """Take `||domain^` rules that block a whole domain; skip and count every other rule."""
    for lineno, line in enumerate(lines, 1):
        try:
            host = _adblock_entry(line)
        except _Bad as exc:
            result.skip(file, lineno, str(exc))
            continue
        if host is not None:
            result.add_host(host)


def _adblock_entry(line: str) -> str | None:
    s = line.strip()
    if not s or s[0] == "!" or s[0] == "[":                # comment or "[Adblock Plus 2.0]"
        return None
    if s[0] == "#" and not s.startswith(_ADBLOCK_COSMETIC):
        return None
    s = _clean(s)
    match = _ADBLOCK_DOMAIN.fullmatch(s)
    if match is None:
        raise _Bad(f"{_show(s)}: {_adblock_reason(s)}")
    options = match.group(2)
    if options is not None:
        names = {o.strip().lower() for o in options.split(",")}
        if not names <= _ADBLOCK_WHOLE_DOMAIN_OPTIONS:
            raise _Bad(f"{_show(s)}: options narrow the rule below a whole-domain block")
    return _host_entry(match.group(1).lower())


def _adblock_reason(s: str) -> str:
    """Name the kind of rule that was skipped, so the count in the report makes sense."""
    if s.startswith("@@"):
        return "exception rule (not supported)"
    if any(marker in s for marker in _ADBLOCK_COSMETIC):
        return "element-hiding rule (not supported)"
    if len(s) > 1 and s[0] == "/" and s.rstrip("|").endswith("/"):
        return "regular-expression rule (not supported)"
    if s.startswith("||") and ("/" in s or "*" in s):
        return "rule with a path or wildcard (only ||domain^ is supported)"
    return "not a ||domain^ rule"


# --- UT1 category directories -------------------------------------------------------------

def _parse_ut1(directory: Path, part: Part = WHOLE, expect: Iterable[str] = ()) -> ParsedSource:
    """A UT1 category: `domains` and/or `urls` (either may be absent), optional `expressions`.
    `part` of the `domains` file; the other files go with the part that starts at 0.
    A file the category is expected to have (_check_expected) must be there."""
    found = {name: _ut1_file(directory, name) for name in UT1_FILES}
    if found["domains"] is None and found["urls"] is None:
        raise SourceError(directory, _not_ut1_message(directory))
    _check_expected(directory, found, expect)
    result = ParsedSource(str(directory), "ut1")
    result.parts = [name for name in UT1_FILES if found[name] is not None]
    if found["domains"] is not None:
        _parse_plain_piece(found["domains"], read_data(found["domains"]), result, part,
                           allow_paths=True)
    if part[0] == 0:
        if found["urls"] is not None:
            _parse_plain_piece(found["urls"], read_data(found["urls"]), result, WHOLE,
                               allow_paths=True)
        if found["expressions"] is not None:
            _parse_expressions(found["expressions"], result)
    return result


def _check_expected(directory: Path, found: dict[str, Path | None],
                    expect: Iterable[str]) -> None:
    """SourceError for the first expected file that is missing (see missing_part)."""
    missing = _missing(directory, found, expect)
    if missing is not None:
        name, why = missing
        raise SourceError(directory / name,
                          f"missing ({why}): the list is not loaded smaller; restore the file, "
                          "or create it empty if it was removed upstream on purpose")


def missing_part(directory: str | Path, expect: Iterable[str] = ()) -> str | None:
    """The first file a UT1 category is expected to have and lacks, else None.

    UT1 categories differ (malware and phishing have no `domains`), so no file is required
    as such; one is expected when the category's import note names it, or when the category
    had it at the last load (`expect`).  Without this, a category caught mid-update with only
    its `urls` left loaded as a much smaller list, silently (issue #15).
    """
    directory = Path(directory)
    found = {name: _ut1_file(directory, name) for name in UT1_FILES}
    missing = _missing(directory, found, expect)
    return None if missing is None else missing[0]


def _missing(directory: Path, found: dict[str, Path | None],
             expect: Iterable[str]) -> tuple[str, str] | None:
    noted = _noted_files(directory)
    expect = set(expect)
    for name in UT1_FILES:
        if found[name] is not None:
            continue
        if name in noted:
            return name, f"its {UT1_NOTE} note lists it"
        if name in expect:
            return name, "the category had it at the last load"
    return None


def _noted_files(directory: Path) -> set[str]:
    """The files named on the "Files:" line of scripts/import_ut1.py's SOURCE note."""
    try:
        text = (directory / UT1_NOTE).read_text("utf-8", "replace")
    except OSError:
        return set()
    line = _NOTE_FILES.search(text)
    return set(_NOTE_FILE.findall(line.group(1))) if line else set()


def _ut1_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _not_ut1_message(directory: Path) -> str:
    try:
        children = [child for child in directory.iterdir() if child.is_dir()]
    except OSError as exc:
        return f"cannot read directory: {exc.strerror or exc}"
    if any((child / "domains").is_file() for child in children):
        return ("holds UT1 categories, not one: name a category directory "
                "(e.g. .../adult) or import them with scripts/import_ut1.py")
    return "directory holds neither 'domains' nor 'urls' (not a UT1 category)"


def _parse_expressions(file: Path, result: ParsedSource) -> None:
    """Keep the regexes verbatim: the caller compiles (and reports) them if the list opts in."""
    lines = _text_lines(read_data(file))
    result.lines += len(lines)
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s[0] == "#":
            continue
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            result.skip(str(file), lineno, "expression is not valid UTF-8")
            continue
        result.expressions.append(s)


__all__ = ["FORMATS", "ParsedSource", "SourceError", "missing_part", "parse_source"]
