"""List sources given as URLs: download, check, and keep the last good copy.

policy.yaml may name a list source as `{url: https://..., refresh: 6h}` (policy/model.py's
RemoteSource).  The list is compiled from a local file, the source's *last good copy*, like
any other source; this module is the only writer of that file.  A download replaces it only
once it has passed every check:

- complete: status 200, as many bytes as Content-Length said, gzip (as a Content-Encoding
  or as the file itself) decompressed to its end;
- the published checksum, when `sha256_url` names one (of the file as served, or of the
  decompressed text);
- a list, not an error page: not HTML, parseable in the list's format (lists/formats.py) with
  at least one entry and no more bad lines than good ones;
- not shrunk: a download that lost more than `max_shrink` of the last good copy's entries
  (default: half) is refused, unless the admin accepts it (`webpolicy update --accept-shrink`).

The copy is replaced atomically (a temporary file in the same directory, renamed, 0644), so
the proxy's reloader, which watches every file `Policy.files()` names, sees one change and
reloads.  A download that fails or is refused changes nothing but the sidecar: the last good
copy stays in force.  Without any good copy (never fetched) the source is a failed source and
the engine fails closed for the profiles that block the list, as for a missing file.

Beside each copy `<name>.txt`, a JSON sidecar `<name>.json` (SourceState) keeps the last
success, the last attempt, the last error, the entry count and the validators for a
conditional GET (ETag, Last-Modified).  It never holds the bearer token.  A lock file
`<name>.lock` keeps the proxy's Refresher and `webpolicy update` from fetching one source at
once.  The Refresher is the proxy's background thread that fetches what is due, a few sources
at a time (`downloads.parallel`), on threads of its own, never on mitmproxy's event loop.

A `{ut1: ..., categories: [...]}` source is fetched the same way, one archive or one archive
per category; lists/ut1.py takes the categories out and keeps them as UT1 directories (its
copy is a directory of categories), with the same checks per category.  Each archive is also
checked against the MD5 sum UT1 publishes for it (MD5SUM.LST beside it, else `<archive>.md5`):
a mismatch is refused; a sum that is not published is a warning in the outcome, or, with
`checksum: required`, a refusal.  The sums are fetched only for an archive that was downloaded.

A source that keeps failing is retried with exponential backoff (backoff(): from a minute,
doubling, capped at its refresh interval or 6 h, or at 5 minutes while it has no good copy at
all, with jitter so that gateways do not retry in step); the sidecar keeps when the next
attempt is due (`webpolicy lists` shows it).  Downloads go out directly unless the source (or
`downloads:`) names an outbound proxy, or `env`, which takes HTTPS_PROXY and NO_PROXY from the
environment: the environment is not read otherwise, so `webpolicy update` in an admin's shell
fetches the way the proxy's own thread does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
import ssl
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from webpolicy.lists import ut1
from webpolicy.lists.formats import SourceError, parse_source
from webpolicy.policy.model import (
    CHECKSUM_REQUIRED,
    DEFAULT_PARALLEL,
    PROXY_ENV,
    SOURCES_DIR_ENV,
    PolicyError,
    RemoteSource,
    load_policy,
)

log = logging.getLogger("webpolicy")

TIMEOUT = 30.0                  # seconds without progress (connect, each read) before giving up
DEADLINE = 900.0                # seconds for a whole download, however it trickles in
MAX_BYTES = 2 << 30             # decompressed; a bigger "list" is refused (a gzip bomb?)
RETRY_AFTER = 300.0             # the longest wait between attempts while there is no good copy
BACKOFF_FIRST = 60.0            # after a first failure, try again this soon (or at the refresh)
BACKOFF_CAP = 6 * 3600.0        # the longest wait between attempts of a failing source
CHUNK = 1 << 16
HTML_START = re.compile(rb"\s*(<!doctype\s+html|<html|<head|<body|<\?xml|<!--)", re.IGNORECASE)
SHA256 = re.compile(r"\b[0-9a-fA-F]{64}\b")

# What an attempt came to (Outcome.result).
UPDATED = "updated"             # a new copy passed every check and replaced the last good one
UNCHANGED = "unchanged"         # 304 Not Modified, or the same bytes as the last good copy
REFUSED = "refused"             # downloaded, but failed a check: the last good copy stays
FAILED = "failed"               # not downloaded (network, TLS, HTTP status, timeout)
BUSY = "busy"                   # another process is fetching this source right now
GOOD = (UPDATED, UNCHANGED)


@dataclass
class SourceState:
    """The sidecar of one URL source: what the last attempts came to."""

    url: str = ""
    list: str = ""
    last_success: float | None = None    # Unix time a download was last accepted (or a 304)
    last_change: float | None = None     # when the last good copy was last replaced
    last_attempt: float | None = None
    last_error: str = ""                 # why the last attempt failed; "" after a success
    failures: int = 0                    # failed or refused attempts since the last success
    entries: int = 0                     # in the last good copy
    sha256: str = ""                     # of the last good copy's text
    etag: str = ""
    last_modified: str = ""
    next_attempt: float | None = None    # after a failure: when to try again (backoff)
    categories: dict[str, int] = field(default_factory=dict)   # UT1: entries per category
    validators: dict[str, list[str]] = field(default_factory=dict)  # UT1: URL -> ETag, L-M

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the last success; None if there never was one."""
        if self.last_success is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.last_success)


@dataclass
class Outcome:
    """What one attempt came to, for the log, the metrics and `webpolicy update`."""

    source: RemoteSource
    result: str                          # UPDATED | UNCHANGED | REFUSED | FAILED | BUSY
    message: str
    state: SourceState

    @property
    def ok(self) -> bool:
        return self.result in GOOD

    def __str__(self) -> str:
        return f"lists.{self.source.list}: {self.source.url}: {self.result}: {self.message}"


class _Failed(Exception):
    """The download did not happen or did not complete."""


class _Refused(Exception):
    """The download completed but is not a list this source may be replaced with."""


# -- state ---------------------------------------------------------------------------------

def sidecar_path(source: RemoteSource) -> Path:
    return source.path.with_suffix(".json")


def read_state(source: RemoteSource) -> SourceState:
    """The sidecar, or an empty state (never fetched, or a sidecar that cannot be read)."""
    try:
        data = json.loads(sidecar_path(source).read_text())
        known = {f.name for f in fields(SourceState)}
        state = SourceState(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        state = SourceState()
    if state.url and state.url != source.url:     # a copy of another URL: never this one's
        state = SourceState()
    state.url, state.list = source.url, source.list
    return state


def _write_state(source: RemoteSource, state: SourceState) -> None:
    _replace(sidecar_path(source), json.dumps(asdict(state), indent=1).encode() + b"\n")


def has_copy(source: RemoteSource) -> bool:
    """Whether the source has a last good copy (for UT1: every category has one)."""
    if source.is_ut1:
        return ut1.has_copy(source.path, source.ut1_categories)
    return source.path.exists()


def backoff(failures: int, source: RemoteSource, have_copy: bool,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `failures`-th failure in a row: BACKOFF_FIRST (or the
    refresh interval, if shorter), doubling each time, capped at the refresh interval or
    BACKOFF_CAP (RETRY_AFTER while there is no good copy: then the list is failing closed);
    then jittered down by up to half ("equal jitter"), so that many gateways behind one
    provider's outage do not all come back at the same second."""
    first = min(source.refresh, BACKOFF_FIRST)
    cap = max(first, min(source.refresh, BACKOFF_CAP if have_copy else RETRY_AFTER))
    delay = min(cap, first * 2.0 ** min(max(failures, 1) - 1, 32))
    return delay * (0.5 + 0.5 * rand())


def next_due(source: RemoteSource, state: SourceState) -> float:
    """When the source should next be fetched (Unix time): at once if never tried; after a
    failure, when its backoff said; else its refresh interval after the last attempt
    (RETRY_AFTER, if sooner, while it has no good copy)."""
    if state.last_attempt is None:
        return 0.0
    if state.failures and state.next_attempt is not None:
        return state.next_attempt
    failing = state.failures or not has_copy(source)
    return state.last_attempt + (min(source.refresh, RETRY_AFTER) if failing else source.refresh)


def due(source: RemoteSource, state: SourceState, now: float | None = None) -> bool:
    return (time.time() if now is None else now) >= next_due(source, state)


# -- fetching ------------------------------------------------------------------------------

def fetch(source: RemoteSource, *, force: bool = False, accept_shrink: bool = False,
          timeout: float = TIMEOUT, clock: Callable[[], float] = time.time,
          rand: Callable[[], float] = random.random) -> Outcome:
    """Download one source now, check it, and replace its last good copy if it passes.

    Never raises for what the network or the provider does: the Outcome says what happened,
    and the sidecar records it (with the next attempt's time after a failure: `clock` and
    `rand` are the time and the jitter, replaceable in tests).  `force`: no conditional GET
    (download even if unchanged).  `accept_shrink`: take a download that lost more entries
    than max_shrink allows."""
    try:
        source.path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(source.path.with_suffix(".lock"), "a")
    except OSError as exc:
        message = (f"cannot write in {source.path.parent}: {exc.strerror or exc} (the "
                   f"{SOURCES_DIR_ENV} environment variable moves the copies)")
        log.error("webpolicy: lists.%s: %s: %s", source.list, source.url, message)
        return Outcome(source, FAILED, message, read_state(source))
    with lock, _locked(lock) as locked:
        if not locked:
            return Outcome(source, BUSY, "another process is fetching it now", read_state(source))
        for stale in source.path.parent.glob(f".{source.path.stem}.*.tmp"):
            if stale.is_dir():                     # left by a process killed mid-download
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        state = read_state(source)
        started = clock()
        state.last_attempt = started
        try:
            result, message = _download(source, state, force, accept_shrink, timeout)
        except _Refused as exc:
            result, message = REFUSED, str(exc)
        except _Failed as exc:
            result, message = FAILED, str(exc)
        except httpx.TimeoutException:
            result, message = FAILED, f"timed out (no progress for {timeout:g} s)"
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            result, message = FAILED, _describe(exc)
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) \
                    and (through := outbound_proxy(source)):
                message += f" (through the outbound proxy {through})"
        except Exception as exc:  # noqa: BLE001 - e.g. httpx.InvalidURL: still an outcome
            result, message = FAILED, f"{type(exc).__name__}: {exc}"
        if result in GOOD:
            state.last_success, state.last_error, state.failures = started, "", 0
            state.next_attempt = None
        else:
            state.last_error, state.failures = message, state.failures + 1
            state.next_attempt = started + backoff(state.failures, source, has_copy(source),
                                                   rand)
            message += _kept(source, state)
        try:
            _write_state(source, state)
        except OSError as exc:
            log.error("webpolicy: lists.%s: cannot write %s: %s", source.list,
                      sidecar_path(source), exc)
    outcome = Outcome(source, result, message, state)
    if outcome.ok:
        log.info("webpolicy: %s", outcome)
    else:
        log.warning("webpolicy: %s", outcome)
    return outcome


def _kept(source: RemoteSource, state: SourceState) -> str:
    if has_copy(source):
        return f"; the last good copy ({state.entries:,} entries) stays in force"
    return "; there is no good copy yet, so profiles that block the list fail closed"


def _download(source: RemoteSource, state: SourceState, force: bool, accept_shrink: bool,
              timeout: float) -> tuple[str, str]:
    if not source.url.lower().startswith("https://"):
        raise _Failed("only https:// URLs are fetched")
    headers = {"Accept-Encoding": "gzip", "User-Agent": f"webpolicy/{_version()}"}
    if source.token_env:
        token = os.environ.get(source.token_env, "")
        if not token:
            raise _Failed(f"the environment variable {source.token_env} (token_env) is not set")
        headers["Authorization"] = f"Bearer {token}"
    if source.is_ut1:
        with _client(source, timeout) as client:
            return _download_ut1(client, source, state, headers, force, accept_shrink)
    have_copy = source.path.exists()
    if have_copy and not force:
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
    with _client(source, timeout) as client:
        with client.stream("GET", source.url, headers=headers) as response:
            if response.status_code == 304 and have_copy:
                return UNCHANGED, "not modified since the last download"
            if response.status_code != 200:
                raise _Failed(f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
            with _temporary(source.path) as temporary:
                served, text, size = _save(response, temporary)
                expected = _checksum(client, source) if source.sha256_url else None
                etag = response.headers.get("ETag", "")
                modified = response.headers.get("Last-Modified", "")
                html = "text/html" in response.headers.get("Content-Type", "").lower()
                return _accept(source, state, temporary, served, text, size, expected, html,
                               accept_shrink, etag, modified)


def _download_ut1(client: httpx.Client, source: RemoteSource, state: SourceState,
                  headers: dict[str, str], force: bool, accept_shrink: bool) -> tuple[str, str]:
    """The archive (or one per category), each whole and gunzipped into a work directory;
    then lists/ut1.py takes the categories out, checks them, and puts them in force."""
    have_copy = has_copy(source)
    fetched: list[tuple[Path, tuple[str, ...], str]] = []
    validators = dict(state.validators)
    sums = _Sums(client, source, headers)
    with tempfile.TemporaryDirectory(dir=source.path.parent, prefix=f".{source.path.stem}.",
                                     suffix=".tmp") as work:
        for number, (url, categories) in enumerate(ut1.downloads(source.url,
                                                                 source.ut1_categories)):
            ask = dict(headers)
            etag, modified = (validators.get(url) or ["", ""])[:2]
            if have_copy and not force:
                ask.update({k: v for k, v in (("If-None-Match", etag),
                                              ("If-Modified-Since", modified)) if v})
            with client.stream("GET", url, headers=ask) as response:
                if response.status_code == 304 and have_copy:
                    continue
                if response.status_code != 200:
                    raise _Failed(f"{_shown(url)}: HTTP {response.status_code} "
                                  f"{response.reason_phrase}".rstrip())
                if "text/html" in response.headers.get("Content-Type", "").lower():
                    raise _Refused(f"{_shown(url)}: an HTML page, not a UT1 archive")
                archive = Path(work) / f"{number}.tar"
                md5 = hashlib.md5(usedforsecurity=False)
                _save(response, archive, also=md5)
                sums.check(url, md5.hexdigest())
                validators[url] = [response.headers.get("ETag", ""),
                                   response.headers.get("Last-Modified", "")]
                fetched.append((archive, categories, url))
        if not fetched:
            return UNCHANGED, "not modified since the last download"
        staged: list[ut1.Staged] = []
        try:
            for archive, categories, url in fetched:
                staged += ut1.stage(source.path, archive, categories, label=_shown(url),
                                    url=_shown(url), when=time.time(), max_bytes=MAX_BYTES)
            ut1.check(source.path, staged, state.categories, source.max_shrink, accept_shrink)
        except ut1.UT1Error as exc:
            ut1.discard(staged)
            raise _Refused(str(exc)) from None
        ut1.install(source.path, staged)
    before = state.entries
    state.validators = validators
    state.categories = {**state.categories, **{s.category: s.entries for s in staged}}
    state.categories = {c: state.categories.get(c, 0) for c in source.ut1_categories}
    state.entries = sum(state.categories.values())
    state.last_change = time.time()
    counts = ", ".join(f"{s.category} {s.entries:,}" for s in staged)
    change = f" (was {before:,})" if before else ""
    return UPDATED, f"{state.entries:,} entries{change}: {counts}{sums.summary()}"


class _Sums:
    """UT1's published MD5 sums for one update: each sums file fetched at most once."""

    def __init__(self, client: httpx.Client, source: RemoteSource,
                 headers: dict[str, str]) -> None:
        self.client, self.source, self.headers = client, source, headers
        self.files: dict[str, str | None] = {}        # URL -> its text (None: not published)
        self.checked: list[str] = []
        self.unchecked: list[str] = []

    def check(self, url: str, actual: str) -> None:
        """_Refused if the archive at `url` does not match its published MD5 (or, with
        `checksum: required`, has none); without a sum it is noted for the outcome."""
        name = ut1.archive_name(url)
        listing, single = ut1.sum_urls(url)
        expected, where = ut1.published_md5(self._text(listing) or "", name), listing
        if expected is None:
            expected = ut1.published_md5(self._text(single) or "", name, bare=True)
            where = single
        if expected is None:
            if self.source.checksum == CHECKSUM_REQUIRED:
                raise _Refused(f"{_shown(url)}: no published MD5 sum ({name} is in neither "
                               f"{_shown(listing)} nor {_shown(single)}), and checksum: "
                               "required refuses an archive that cannot be checked")
            self.unchecked.append(name)
            log.warning("webpolicy: lists.%s: %s: no published MD5 sum (looked in %s and %s); "
                        "taken unchecked (checksum: required would refuse it)",
                        self.source.list, _shown(url), _shown(listing), _shown(single))
            return
        if actual != expected:
            raise _Refused(f"{_shown(url)}: MD5 {actual} does not match the sum {expected} "
                           f"published in {_shown(where)}: the archive is corrupt or cut short "
                           "(or the mirror is midway through an update)")
        self.checked.append(name)

    def _text(self, url: str) -> str | None:
        if url not in self.files:
            response = self.client.get(url, headers=self.headers)
            html = "text/html" in response.headers.get("Content-Type", "").lower()
            ok = response.status_code == 200 and not html
            self.files[url] = response.text[:1 << 20] if ok else None
        return self.files[url]

    def summary(self) -> str:
        parts = []
        if self.checked:
            parts.append(f"MD5 checked ({', '.join(self.checked)})")
        if self.unchecked:
            parts.append(f"no published MD5 for {', '.join(self.unchecked)}: not checked")
        return f"; {'; '.join(parts)}" if parts else ""


def _shown(url: str) -> str:
    """A URL for messages and notes: without any query (a provider may put a key there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _accept(source: RemoteSource, state: SourceState, temporary: Path, served: str, text: str,
            size: int, expected: str | None, html: bool, accept_shrink: bool, etag: str,
            modified: str) -> tuple[str, str]:
    """Check a complete download; replace the last good copy with it if it passes."""
    if expected is not None and expected not in (served, text):
        raise _Refused(f"sha256 {served} does not match the published checksum {expected}")
    with temporary.open("rb") as file:
        head = file.read(1024)
    if html or HTML_START.match(head):
        raise _Refused("an HTML page, not a list (a login or error page?)")
    try:
        parsed = parse_source(temporary, source.format)
    except SourceError as exc:
        raise _Refused(f"not a {source.format} list: {exc.message}") from None
    if parsed.entries == 0:
        raise _Refused(f"no entries ({parsed.lines:,} lines)")
    if parsed.skipped > parsed.entries:
        raise _Refused(f"more bad lines ({parsed.skipped:,}) than entries "
                       f"({parsed.entries:,}), e.g. {parsed.skipped_examples[0]}")
    before = _last_entries(source, state)
    if before and parsed.entries < before * (1 - source.max_shrink) and not accept_shrink:
        lost = 1 - parsed.entries / before
        raise _Refused(f"{parsed.entries:,} entries where the last good copy has {before:,}: "
                       f"{lost:.0%} lost, more than max_shrink {source.max_shrink:g} allows "
                       "(`webpolicy update --accept-shrink` takes it)")
    state.etag, state.last_modified = etag, modified
    state.entries = parsed.entries
    if text == state.sha256 and source.path.exists():
        return UNCHANGED, f"{parsed.entries:,} entries, the same as the last good copy"
    os.chmod(temporary, 0o644)
    os.replace(temporary, source.path)
    _sync_directory(source.path.parent)
    state.last_change, state.sha256 = time.time(), text
    change = f" (was {before:,})" if before else ""
    return UPDATED, f"{parsed.entries:,} entries{change}, {size:,} bytes"


def _last_entries(source: RemoteSource, state: SourceState) -> int:
    """Entries of the last good copy: the sidecar's count, else the copy read again."""
    if not source.path.exists():
        return 0
    if state.entries:
        return state.entries
    try:
        return parse_source(source.path, source.format).entries
    except SourceError:
        return 0


def _save(response: httpx.Response, temporary: Path,
          also: hashlib._Hash | None = None) -> tuple[str, str, int]:
    """Stream the body into `temporary`, decompressed; check it arrived whole.  Returns the
    sha256 of the file as served (after any Content-Encoding), of its text, and its size.
    `also`: another hash (e.g. UT1's MD5) fed the file as served."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", ""):
        raise _Refused(f"Content-Encoding {encoding} is not supported (only gzip)")
    length = response.headers.get("Content-Length")
    transport = _Gunzip("the response") if encoding in ("gzip", "x-gzip") else None
    served_hash, text_hash = hashlib.sha256(), hashlib.sha256()
    unpack: _Gunzip | None = None
    first = True
    received = size = 0
    deadline = time.monotonic() + DEADLINE
    with temporary.open("wb") as out:
        for raw in response.iter_raw(CHUNK):
            received += len(raw)
            data = transport.feed(raw) if transport else raw
            if first and data:
                first = False
                if data[:2] == b"\x1f\x8b":            # a .gz file, whatever it is called
                    unpack = _Gunzip("the file")
            served_hash.update(data)
            if also is not None:
                also.update(data)
            text = unpack.feed(data) if unpack else data
            size += len(text)
            if size > MAX_BYTES:
                raise _Refused(f"more than {MAX_BYTES >> 20} MB decompressed")
            text_hash.update(text)
            out.write(text)
            if time.monotonic() > deadline:
                raise _Failed(f"took longer than {DEADLINE:g} s")
        if length is not None and length.isdigit() and received != int(length):
            raise _Failed(f"incomplete: {received:,} of {int(length):,} bytes")
        for decoder in (transport, unpack):
            if decoder:
                decoder.finish()
        out.flush()
        os.fsync(out.fileno())
    if first:
        raise _Refused("an empty response")
    return served_hash.hexdigest(), text_hash.hexdigest(), size


class _Gunzip:
    """Streaming gzip decompression that notices a stream cut short (and several members)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._d = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> bytes:
        out = []
        try:
            while data:
                out.append(self._d.decompress(data))
                if not self._d.eof:
                    break
                data = self._d.unused_data
                if data:
                    self._d = zlib.decompressobj(wbits=31)    # the next gzip member
        except zlib.error as exc:
            raise _Refused(f"bad gzip data in {self.what}: {exc}") from None
        return b"".join(out)

    def finish(self) -> None:
        if not self._d.eof:
            raise _Refused(f"gzip data in {self.what} ends early (truncated download)")


def _checksum(client: httpx.Client, source: RemoteSource) -> str:
    """The published sha256: the first 64 hex digits of sha256_url's body."""
    response = client.get(source.sha256_url)
    if response.status_code != 200:
        raise _Failed(f"checksum {source.sha256_url}: HTTP {response.status_code}")
    found = SHA256.search(response.text[:4096])
    if not found:
        raise _Refused(f"checksum {source.sha256_url}: no sha256 in it")
    return found.group(0).lower()


def _client(source: RemoteSource, timeout: float) -> httpx.Client:
    """An HTTPS client: the system's CAs, or the provider's own `ca`; its client certificate."""
    for option, path in (("ca", source.ca), ("client_cert", source.client_cert),
                         ("client_key", source.client_key)):
        if path is not None and not path.is_file():
            raise _Failed(f"{option}: {path}: no such file")
    context = ssl.create_default_context(cafile=str(source.ca) if source.ca else None)
    if source.client_cert:
        context.load_cert_chain(str(source.client_cert),
                                str(source.client_key) if source.client_key else None)
    return httpx.Client(verify=context, timeout=httpx.Timeout(timeout), trust_env=False,
                        proxy=outbound_proxy(source), follow_redirects=True, max_redirects=5,
                        event_hooks={"request": [_https_only]})


def outbound_proxy(source: RemoteSource) -> str | None:
    """The proxy a download goes through: the one named, or with `env` the environment's
    HTTPS_PROXY (unless NO_PROXY names the host), else None (directly).  Redirects to
    another host go the same way."""
    if source.proxy != PROXY_ENV:
        return source.proxy or None
    host = urlsplit(source.url).hostname or ""
    if urllib.request.proxy_bypass_environment(host):
        return None
    return urllib.request.getproxies_environment().get("https") or None


def _https_only(request: httpx.Request) -> None:
    """Every request, redirects included (httpx drops the token on a redirect elsewhere)."""
    if request.url.scheme != "https":
        raise _Failed(f"redirected to {request.url.scheme}:// ({request.url.host}); list "
                      "sources are downloaded over HTTPS only")


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failed download (no token, no traceback)."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the connection broke off: {exc}"
    if isinstance(exc, httpx.ProxyError):
        return f"the outbound proxy refused or failed: {exc}"
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(exc):
            return f"TLS: the server's certificate is not trusted ({exc}); `ca:` names a CA file"
        return f"cannot connect: {exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


# -- files ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` (so a rename replaces it atomically), removed unless
    it was renamed."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _replace(path: Path, data: bytes) -> None:
    with _temporary(path) as temporary:
        temporary.write_bytes(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(lock) -> Iterator[bool]:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        yield False
        return
    try:
        yield True
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def _version() -> str:
    try:
        return metadata.version("webpolicy")
    except metadata.PackageNotFoundError:
        return "dev"


# -- on a schedule -------------------------------------------------------------------------

def fetch_due(sources: list[RemoteSource], *, force: bool = False,
              timeout: float = TIMEOUT, stop: threading.Event | None = None,
              parallel: int = DEFAULT_PARALLEL) -> list[Outcome]:
    """Fetch every source that is due (every one with `force`), up to `parallel` at once,
    on threads of this call's own; outcomes in the sources' order."""
    chosen = [s for s in sources if force or due(s, read_state(s))]
    return fetch_all(chosen, parallel=parallel, stop=stop, force=force, timeout=timeout)


def fetch_all(sources: list[RemoteSource], *, parallel: int = DEFAULT_PARALLEL,
              stop: threading.Event | None = None, **options) -> list[Outcome]:
    """fetch(source, **options) for each source, at most `parallel` at a time (a worker
    that finds `stop` set starts no more); outcomes in the sources' order."""
    if not sources:
        return []

    def one(source: RemoteSource) -> Outcome | None:
        if stop is not None and stop.is_set():
            return None
        return fetch(source, **options)

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(sources))),
                            thread_name_prefix="webpolicy-fetch") as pool:
        return [outcome for outcome in pool.map(one, sources) if outcome is not None]


Report = Callable[[list[tuple[RemoteSource, SourceState]], list[Outcome]], None]


class Refresher:
    """The proxy's background thread: fetches each URL source when it is due.

    `sources` is asked on every pass (the policy in force may have changed); `report` is
    given every source's state and the outcomes of the pass (for the metrics).  Never runs
    on mitmproxy's event loop: a download may take minutes.  A replaced copy reaches the
    proxy through its reloader, which watches the file."""

    def __init__(self, sources: Callable[[], list[RemoteSource]], report: Report | None = None,
                 timeout: float = TIMEOUT) -> None:
        self.sources = sources
        self.report = report
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webpolicy-refresh", daemon=True)

    def start(self) -> Refresher:
        self._thread.start()
        return self

    def stop(self, wait: float = 2.0) -> None:
        """Stop; a download in flight is abandoned at exit (its temporary file is removed
        by the next attempt's cleanup, or stays as a harmless dot-file)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=wait)

    def _run(self) -> None:
        while not self._stop.is_set():
            sources: list[RemoteSource] = []
            try:
                sources = self.sources()
                outcomes = fetch_due(sources, timeout=self.timeout, stop=self._stop,
                                     parallel=getattr(self.sources, "parallel",
                                                      DEFAULT_PARALLEL))
                if self.report is not None:
                    self.report([(s, read_state(s)) for s in sources], outcomes)
            except Exception:  # noqa: BLE001 - the thread must outlive one bad pass
                log.exception("webpolicy: refreshing the list sources failed")
            self._stop.wait(tick(sources))


class PolicySources:
    """The URL sources policy.yaml names now, for the Refresher: read again when the file
    changes (a stat per pass).  A policy that does not validate keeps the sources last read,
    but one that only lacks a list's copy validates here (the lists are read later, by the
    engine): so a statutory URL source added to a running proxy, whose reload is refused
    until its first copy exists, is downloaded, and the reload then succeeds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._sources: list[RemoteSource] = []
        self.parallel = DEFAULT_PARALLEL            # downloads.parallel, as last read

    def __call__(self) -> list[RemoteSource]:
        try:
            st = os.stat(self.path)
            seen = (st.st_mtime_ns, st.st_size)
        except OSError:
            return self._sources
        if seen != self._seen:
            try:
                policy = load_policy(self.path)
                self._sources = policy.remote_sources()
                self.parallel = policy.downloads.parallel
            except PolicyError:
                pass                        # the reloader reports it; keep what was read
            self._seen = seen
        return self._sources


def tick(sources: list[RemoteSource]) -> float:
    """How often the Refresher looks: every 5 seconds (a quarter of the shortest refresh if
    less, at least 1 s), so a source added to policy.yaml is fetched within seconds.  A look
    costs a stat of policy.yaml and a small JSON read per source."""
    shortest = min((s.refresh for s in sources), default=20.0)
    return min(5.0, max(1.0, shortest / 4))
