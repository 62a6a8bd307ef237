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
once.  The Refresher is the proxy's background thread that fetches what is due.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import ssl
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path

import httpx

from webpolicy.lists.formats import SourceError, parse_source
from webpolicy.policy.model import SOURCES_DIR_ENV, PolicyError, RemoteSource, load_policy

log = logging.getLogger("webpolicy")

TIMEOUT = 30.0                  # seconds without progress (connect, each read) before giving up
DEADLINE = 900.0                # seconds for a whole download, however it trickles in
MAX_BYTES = 2 << 30             # decompressed; a bigger "list" is refused (a gzip bomb?)
RETRY_AFTER = 300.0             # after a failure, try again this soon (or at the next refresh)
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


def next_due(source: RemoteSource, state: SourceState) -> float:
    """When the source should next be fetched (Unix time): at once if never tried; its
    refresh interval after the last attempt; RETRY_AFTER, if sooner, after a failure or
    while it has no good copy."""
    if state.last_attempt is None:
        return 0.0
    failing = state.failures or not source.path.exists()
    return state.last_attempt + (min(source.refresh, RETRY_AFTER) if failing else source.refresh)


def due(source: RemoteSource, state: SourceState, now: float | None = None) -> bool:
    return (time.time() if now is None else now) >= next_due(source, state)


# -- fetching ------------------------------------------------------------------------------

def fetch(source: RemoteSource, *, force: bool = False, accept_shrink: bool = False,
          timeout: float = TIMEOUT) -> Outcome:
    """Download one source now, check it, and replace its last good copy if it passes.

    Never raises for what the network or the provider does: the Outcome says what happened,
    and the sidecar records it.  `force`: no conditional GET (download even if unchanged).
    `accept_shrink`: take a download that lost more entries than max_shrink allows."""
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
            stale.unlink(missing_ok=True)          # left by a process killed mid-download
        state = read_state(source)
        started = time.time()
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
        except Exception as exc:  # noqa: BLE001 - e.g. httpx.InvalidURL: still an outcome
            result, message = FAILED, f"{type(exc).__name__}: {exc}"
        if result in GOOD:
            state.last_success, state.last_error, state.failures = started, "", 0
        else:
            state.last_error, state.failures = message, state.failures + 1
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
    if source.path.exists():
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


def _save(response: httpx.Response, temporary: Path) -> tuple[str, str, int]:
    """Stream the body into `temporary`, decompressed; check it arrived whole.  Returns the
    sha256 of the file as served (after any Content-Encoding), of its text, and its size."""
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
                        follow_redirects=True, max_redirects=5,
                        event_hooks={"request": [_https_only]})


def _https_only(request: httpx.Request) -> None:
    """Every request, redirects included (httpx drops the token on a redirect elsewhere)."""
    if request.url.scheme != "https":
        raise _Failed(f"redirected to {request.url.scheme}:// ({request.url.host}); list "
                      "sources are downloaded over HTTPS only")


def _describe(exc: BaseException) -> str:
    """A one-line reason for a failed download (no token, no traceback)."""
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the connection broke off: {exc}"
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
              timeout: float = TIMEOUT, stop: threading.Event | None = None) -> list[Outcome]:
    """Fetch every source that is due (every one with `force`), one after the other."""
    outcomes = []
    for source in sources:
        if stop is not None and stop.is_set():
            break
        if force or due(source, read_state(source)):
            outcomes.append(fetch(source, force=force, timeout=timeout))
    return outcomes


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
                outcomes = fetch_due(sources, timeout=self.timeout, stop=self._stop)
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

    def __call__(self) -> list[RemoteSource]:
        try:
            st = os.stat(self.path)
            seen = (st.st_mtime_ns, st.st_size)
        except OSError:
            return self._sources
        if seen != self._seen:
            try:
                self._sources = load_policy(self.path).remote_sources()
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
