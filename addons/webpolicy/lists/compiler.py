"""Compile a policy's big lists into a memory-mapped index, in a worker process, with a cache.

Category lists reach millions of domains (UT1's adult list alone holds ~4.5M).  Parsing and
indexing them costs seconds of CPU and, in Python objects, gigabytes of memory; done inside
the proxy it would hold the GIL for seconds (every request stalls) and leave large structures
whose freeing stalls again on the next reload.  So the proxy never builds them itself: a
worker process (``python -m webpolicy.lists.compiler``) parses every non-statutory list, builds the
DomainIndex and writes it, with a small sidecar, into a cache directory.  The proxy then only
memory-maps the index (a few ms; pages are shared with the page cache, not copied) and reads
the sidecar.  Statutory lists are small and must match exactly: engine.py reads them
in-process and they never enter the hashed index.

The cache is keyed by a hash of everything the result depends on: this module's file format,
the code that parses and indexes, and per list its name, bit, format, expression setting and
sources (path, size, mtime and inode of each file, and of each file in a list directory).
An unchanged policy starts from the cache in well under a second; any edited source gives a
new key and a fresh compile.  Files in the cache directory, per key::

    <key>.wpidx   the DomainIndex (domainindex.py's format, checksummed)
    <key>.urls    URL entries of those lists, "bits<TAB>host<TAB>path-prefix" per line
    <key>.json    the sidecar, written last (so its presence means the set is complete):
                  per list its status, problems and UT1 expressions, and the .urls checksum

The files hold only list contents (no personal data); they are 0644 in a directory that is
not world-writable.  The newest KEEP sets are kept, older ones are deleted by the worker.

compile_lists() is the same compilation in-process, without files: the CLI and unit tests
use it, and the proxy falls back to it at start-up if the worker cannot run.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import gc
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import xxhash

from webpolicy.lists.domainindex import VERSION as INDEX_VERSION
from webpolicy.lists.domainindex import DomainIndex, Run, hash_half, hash_part
from webpolicy.lists.formats import (
    MAX_EXAMPLES,
    ParsedSource,
    SourceError,
    missing_part,
    parse_source,
    splits,
)

log = logging.getLogger(__name__)

FORMAT = 1                      # of the sidecar and .urls files; part of the key
KEEP = 2                        # compiled sets kept: the one in force and the one before
WORKER_TIMEOUT = 900.0          # seconds; a 5M-entry list takes ~4 s on a 2-core VM
PARALLEL_BYTES = 1 << 20        # below this much list text, one process does it all
SPLIT_SHARE = 0.6               # one file with this share of the text is split between two
OTHER_WEIGHT = 2.0              # a byte of the other lists costs ~2x one of a clean domain list
                                # (URL and hosts lines): 0.1 against 0.05 s/MB, measured
NUMPY_BYTES = 4_000_000         # importing numpy (~0.2 s) costs what parsing ~4 MB does
URL_CHUNK = 500                 # URL entries handed over per chunk (see CompiledLists.url_chunks)
_KEY = re.compile(r"[0-9a-f]{32}")
COMPILED, REUSED = "compiled", "reused"     # what the worker did, printed before the key
_CODE = ("compiler.py", "formats.py", "canonical.py", "domainindex.py")   # beside this file
# For the worker: numpy's BLAS starts no threads (the worker forks; it never multiplies).
_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class CompileError(Exception):
    """The worker could not compile the lists (it crashed, was killed, or timed out)."""


@dataclass
class ListStatus:
    """What loading one list produced: shown by `validate`, exported as metrics."""

    name: str
    entries: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    failed_sources: list[str] = field(default_factory=list)
    # The UT1 files each directory source had (or, having failed, was expected to have):
    # kept in the cache's sidecar, it is what the next compile expects (ListCache.compile).
    parts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.entries > 0 or not self.failed_sources


@dataclass(frozen=True)
class ListJob:
    """One list to read: what the worker needs to know, nothing policy-wide."""

    name: str
    bit: int
    format: str
    sources: tuple[str, ...]
    expressions: bool = False
    statutory: bool = False
    # (source, UT1 files it must have): what it had at the last compile, see ListCache.
    expect: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass
class ListContents:
    """One list as read: its status, the problems with its sources, and what they hold."""

    status: ListStatus
    messages: list[str]                  # "lists.<name>: source ...", for the policy's report
    sources: list[ParsedSource]


@dataclass
class CompiledList:
    status: ListStatus
    messages: list[str]
    expressions: list[tuple[str, list[str]]]   # (source path, UT1 expressions), if opted in


def read_list(job: ListJob, piece: Piece | None = None) -> ListContents:
    """Parse every source of one list.  Never raises for a bad source: a source that cannot
    be read is a failed source, and whether that is an error is the caller's decision
    (statutory lists fail the policy, others only warn).  `piece`: one source is parsed in
    part here and in part by another process (compile_in_two)."""
    status = ListStatus(job.name)
    messages: list[str] = []
    parsed = []
    expected = dict(job.expect)
    for source in job.sources:
        expect = expected.get(source, ())
        try:
            if piece is not None and source == piece.source:
                result = parse_source(source, job.format, part=(0, piece.cut), expect=expect)
                result.add_piece(piece.other_summary())
            else:
                result = parse_source(source, job.format, expect=expect)
        except SourceError as exc:
            status.failed_sources.append(str(source))
            messages.append(f"lists.{job.name}: source {exc}")
            if expect:                  # still expected: a later compile must not forget it
                status.parts[source] = list(expect)
            continue
        if result.parts:
            status.parts[source] = result.parts
        parsed.append(result)
        status.entries += result.entries
        status.skipped += result.skipped
        room = MAX_EXAMPLES - len(status.skipped_examples)
        status.skipped_examples.extend(result.skipped_examples[:max(room, 0)])
        if not result.entries:
            messages.append(f"lists.{job.name}: source {source} yields no entries")
    if status.entries == 0 and not job.statutory and not status.failed_sources:
        status.failed_sources.append("(no entries)")
    return ListContents(status, messages, parsed)


class CompiledLists:
    """The compiled non-statutory lists: the domain index, per-list results, URL entries."""

    def __init__(self, index: DomainIndex, lists: dict[str, CompiledList],
                 urls: Callable[[], Iterator[list[tuple[str, str, int]]]], sources: object = None):
        self.index = index
        self.lists = lists
        self._urls = urls
        # The parsed names, kept until this object goes: the worker exits without freeing
        # millions of strings one by one (~0.3 s at 5M), and the CLI frees them later anyway.
        self._sources = sources

    def url_chunks(self) -> Iterator[list[tuple[str, str, int]]]:
        """(host, path prefix, bits) of every URL entry, in chunks of about URL_CHUNK, so
        that a caller building its index in the proxy can yield the GIL between chunks."""
        return self._urls()


@dataclass
class Piece:
    """A source parsed in part here (up to `cut`, a fraction of its bytes), the rest by
    another process: what that process found."""

    job: str
    source: str
    cut: float
    other_summary: Callable[[], dict]            # ParsedSource.summary() of its part
    other_hashes: Callable[[], tuple[int, bytes]]  # (list bit, hash_part() of its hosts)


def compile_lists(jobs: Sequence[ListJob],
                  other_half: Callable[[], bytes] | None = None,
                  piece: Piece | None = None) -> CompiledLists:
    """Read and index the lists in this process (the CLI, tests; the worker, which passes
    `other_half` or `piece`: see DomainIndex.build_runs)."""
    runs: list[Run] = []
    urls: list[tuple[str, str, int]] = []
    lists: dict[str, CompiledList] = {}
    # The list with a piece parsed elsewhere last: its summary waits for the other process,
    # which meanwhile is still parsing the bigger part of that file.
    for job in sorted(jobs, key=lambda job: piece is not None and job.name == piece.job):
        contents = read_list(job, piece if piece is not None and piece.job == job.name else None)
        expressions = []
        for source in contents.sources:
            runs += [(source.hosts, job.bit), (source.others, job.bit)]
            urls.extend((host, prefix, job.bit) for host, prefix in source.urls)
            if job.expressions and source.expressions:
                expressions.append((source.path, source.expressions))
        lists[job.name] = CompiledList(contents.status, contents.messages, expressions)
        del contents
    lists = {job.name: lists[job.name] for job in jobs}            # in the policy's order
    index = DomainIndex.build_runs(runs, other_half=other_half,
                                   other_part=piece.other_hashes if piece else None)

    def chunks() -> Iterator[list[tuple[str, str, int]]]:
        for start in range(0, len(urls), URL_CHUNK):
            yield urls[start:start + URL_CHUNK]

    return CompiledLists(index, lists, chunks, runs)


class SourcesChanged(Exception):
    """A list source changed while two processes were reading it."""


def compile_in_two(jobs: Sequence[ListJob]) -> CompiledLists:
    """compile_lists() on both CPUs, with a forked child process.  Only for a process
    without threads (the worker).  SourcesChanged if a source changed meanwhile: then the
    two processes may have read different names.

    When one plain list file holds most of the text (UT1's adult list is ~4.5M lines),
    each process parses a part of that file and hashes its own names; the child sends its
    hashes and a summary of its part (_compile_split).  This process also reads the other
    lists, so it takes the smaller part (_cut_for).  Otherwise both processes read every
    list and each hashes every other name (_compile_interleaved).  No names are copied over
    the pipe and no copy-on-write pages are touched: both were measured slower.
    """
    big = _big_source(jobs)
    if big is not None:
        return _compile_split(jobs, *big)
    return _compile_interleaved(jobs)


def _big_source(jobs: Sequence[ListJob]) -> tuple[ListJob, str, float] | None:
    """The one source worth splitting, and where: a plain list file with at least
    SPLIT_SHARE of all the bytes (below that, the other process would wait on this one's
    other lists)."""
    sizes = [(_source_size(source), job, source)
             for job in jobs if not job.statutory for source in job.sources]
    if not sizes:
        return None
    size, job, source = max(sizes, key=lambda item: item[0])
    total = sum(item[0] for item in sizes)
    if size < SPLIT_SHARE * total or not splits(source, job.format):
        return None
    if os.path.isdir(source) and missing_part(source, dict(job.expect).get(source, ())):
        return None             # it fails in read_list: no second process to stop first
    return job, source, _cut_for(size, total - size)


def _cut_for(big: int, other: int) -> float:
    """This process's part of the big file, so that both finish together: it parses the
    other lists too, which cost about OTHER_WEIGHT times as much per byte, and imports numpy
    for the index meanwhile.  Never less than a quarter (the weights are estimates)."""
    if not big:
        return 0.5
    return max(0.25, 0.5 - (OTHER_WEIGHT * other + NUMPY_BYTES) / (2 * big))


def _compile_interleaved(jobs: Sequence[ListJob]) -> CompiledLists:
    def child(out: BinaryIO) -> None:
        runs = [(names, job.bit) for job in jobs for source in read_list(job).sources
                for names in (source.hosts, source.others)]
        _send(out, hash_half(runs, 1))

    with _Forked(jobs, child) as other:
        return compile_lists(jobs, other_half=other.message)


def _compile_split(jobs: Sequence[ListJob], job: ListJob, source: str,
                   cut: float) -> CompiledLists:
    def child(out: BinaryIO) -> None:
        part = parse_source(source, job.format, part=(cut, 1))
        _send(out, json.dumps(part.summary()).encode())
        _send(out, hash_part(part.hosts))

    with _Forked(jobs, child) as other:
        import numpy  # noqa: F401 -- the index needs it; here, _cut_for counted it in
        piece = Piece(job.name, source, cut, lambda: json.loads(other.message()),
                      lambda: (job.bit, other.message()))
        return compile_lists(jobs, piece=piece)


def _send(out: BinaryIO, data: bytes) -> None:
    """One length-prefixed message, flushed: the other process may be waiting for it."""
    out.write(struct.pack("<Q", len(data)))
    out.write(data)
    out.flush()


class _Forked:
    """A forked child running `work(pipe)`, which sends length-prefixed messages.  Leaving
    the block reaps the child: normally it must have exited successfully and the sources
    must be unchanged (else RuntimeError or SourcesChanged); after an error it is killed."""

    def __init__(self, jobs: Sequence[ListJob], work: Callable[[BinaryIO], None]) -> None:
        self.jobs = jobs
        self.before = cache_key(jobs)
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child's coverage is not collected
            status = 1
            try:
                os.close(read_fd)
                with os.fdopen(write_fd, "wb") as out:
                    work(out)
                status = 0
            finally:
                os._exit(status)
        os.close(write_fd)
        self.pipe = os.fdopen(read_fd, "rb")
        self.status: int | None = None           # the child's exit status, once reaped

    def __enter__(self) -> _Forked:
        return self

    def message(self) -> bytes:
        """The child's next message; RuntimeError if it exited without sending it."""
        head = self.pipe.read(8)
        data = self.pipe.read(struct.unpack("<Q", head)[0]) if len(head) == 8 else b""
        if not data:
            raise RuntimeError(f"the list compiler's second process failed ({self._reap()})")
        return data

    def _reap(self) -> int:
        if self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]
        return self.status

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        self.pipe.close()
        if error is not None:
            if self.status is None:
                os.kill(self.pid, signal.SIGKILL)
                self._reap()
            return
        if self._reap() != 0:
            raise RuntimeError(f"the list compiler's second process failed ({self.status})")
        if cache_key(self.jobs) != self.before:
            raise SourcesChanged()


def _total_size(jobs: Sequence[ListJob]) -> int:
    return sum(_source_size(source) for job in jobs for source in job.sources)


def _source_size(source: str) -> int:
    """Bytes of a list file, or of the files of a list directory (0 if unreadable)."""
    try:
        paths = list(os.scandir(source)) if os.path.isdir(source) else [source]
        return sum(os.stat(p).st_size for p in paths)
    except OSError:
        return 0


# --------------------------------------------------------------------------- the cache key


@lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """The code that shapes the result: a new release of the parser invalidates the cache."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODE:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def _source_fingerprint(path: str) -> list:
    """(size, mtime_ns, inode) of a file, or of every file in a directory (UT1 category)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return [path, "unreadable", exc.errno]
    if not os.path.isdir(path):
        return [path, st.st_size, st.st_mtime_ns, st.st_ino]
    files = []
    try:
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                try:
                    est = entry.stat()
                    files.append([entry.name, est.st_size, est.st_mtime_ns, est.st_ino])
                except OSError as exc:
                    files.append([entry.name, "unreadable", exc.errno])
    except OSError as exc:
        return [path, "unreadable directory", exc.errno]
    return [path, "dir", files]


def cache_key(jobs: Sequence[ListJob]) -> str:
    """Hash of everything compile_lists(jobs) depends on (stat() only: no file is read).

    Not ListJob.expect: it comes from this cache's own sets, and a directory's fingerprint
    already lists its files, so a category that lost one has a new key anyway; with it, an
    unchanged policy would no longer start from the cache once its history is known."""
    material = [FORMAT, INDEX_VERSION, _code_fingerprint()]
    for job in jobs:
        material.append([job.name, job.bit, job.format, job.expressions,
                         [_source_fingerprint(str(s)) for s in job.sources]])
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- files


def save(compiled: CompiledLists, directory: Path, key: str) -> None:
    """Write the set for `key`: index, URL entries, then the sidecar that completes it."""
    compiled.index.save(directory / f"{key}.wpidx", durable=False)   # a cache: see load()
    lines = [f"{bits}\t{host}\t{prefix}\n" for chunk in compiled.url_chunks()
             for host, prefix, bits in chunk]
    data = "".join(lines).encode()
    _write_atomic(directory / f"{key}.urls", data)
    sidecar = {
        "format": FORMAT,
        "key": key,
        "urls": {"bytes": len(data), "xxh3": xxhash.xxh3_64_hexdigest(data)},
        "lists": {name: {"status": asdict(item.status), "messages": item.messages,
                         "expressions": item.expressions}
                  for name, item in compiled.lists.items()},
    }
    _write_atomic(directory / f"{key}.json", json.dumps(sidecar).encode())


def load(directory: Path, key: str) -> CompiledLists | None:
    """The set for `key`, or None if there is none.  ValueError if it is corrupt."""
    try:
        sidecar_bytes = (directory / f"{key}.json").read_bytes()
    except FileNotFoundError:
        return None
    try:
        sidecar = json.loads(sidecar_bytes)
        if sidecar.get("format") != FORMAT or sidecar.get("key") != key:
            raise ValueError("not this format or key")
        lists = {name: CompiledList(ListStatus(**item["status"]), list(item["messages"]),
                                    [(path, list(exprs)) for path, exprs in item["expressions"]])
                 for name, item in sidecar["lists"].items()}
        urls = (directory / f"{key}.urls").read_bytes()
        if len(urls) != sidecar["urls"]["bytes"] or \
                xxhash.xxh3_64_hexdigest(urls) != sidecar["urls"]["xxh3"]:
            raise ValueError("URL entries do not match their checksum")
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ValueError(f"{directory / key}.*: corrupt compiled lists ({exc})") from None
    try:
        index = DomainIndex.open(directory / f"{key}.wpidx")
    except OSError as exc:
        raise ValueError(f"{directory / key}.wpidx: {exc.strerror or exc}") from None
    try:
        os.utime(directory / f"{key}.json")    # recently used: pruned last
    except OSError:
        pass
    return CompiledLists(index, lists, lambda: _url_chunks(urls))


def _url_chunks(data: bytes) -> Iterator[list[tuple[str, str, int]]]:
    """Parse the .urls file a slice of about URL_CHUNK lines at a time: no long C call and
    no long stretch of bytecode between the caller's pauses (engine.build_engine)."""
    step = URL_CHUNK * 48                  # bytes: a line is ~30-60
    start, size = 0, len(data)
    while start < size:
        end = data.rfind(b"\n", start, start + step) + 1 or data.find(b"\n", start) + 1 or size
        chunk = []
        for line in data[start:end].decode().splitlines():
            bits, host, prefix = line.split("\t")
            chunk.append((host, prefix, int(bits)))
        yield chunk
        start = end


def remove(directory: Path, key: str) -> None:
    for suffix in (".json", ".urls", ".wpidx"):
        try:
            os.unlink(directory / f"{key}{suffix}")
        except FileNotFoundError:
            pass


def prune(directory: Path, keep: Iterable[str] = (), sets: int = KEEP) -> None:
    """Delete all but the newest `sets` compiled sets (and any in `keep`), and leftovers."""
    keep = set(keep)
    sidecars = sorted(directory.glob("*.json"), key=_mtime, reverse=True)
    live = keep | {p.stem for p in sidecars[:sets]}
    for path in directory.iterdir():
        stem = path.name.partition(".")[0]
        if path.name.startswith("."):
            if path.name != ".lock" and time.time() - _mtime(path) > 3600:
                _unlink(path)             # a temporary file a killed worker left behind
        elif path.suffix in (".json", ".urls", ".wpidx") and stem not in live:
            _unlink(path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink(Path(tmp))
        raise


def prepare_directory(directory: Path) -> Path:
    """Create the cache directory (0755: list contents only) or fail with OSError."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    if directory.stat().st_mode & 0o002:
        raise OSError(f"{directory}: world-writable; refusing to use it for the list cache")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OSError(f"{directory}: not writable")
    return directory


# --------------------------------------------------------------------------- the proxy's side


class ListCache:
    """Compiled lists for the proxy: from the cache directory, else compiled by a worker."""

    def __init__(self, directory: Path):
        self.directory = directory

    def compile(self, jobs: Sequence[ListJob], background: bool = False) -> CompiledLists:
        """The compiled lists for `jobs`.  `background` (reloads): the worker runs only on
        CPU time the proxy does not want.  Raises CompileError if the worker fails."""
        jobs = self.expecting(jobs)
        key = cache_key(jobs)
        compiled = self._load(key)
        if compiled is None:
            key = self._run_worker(jobs, key, background)
            compiled = self._load(key)
            if compiled is None:
                raise CompileError(f"the list compiler wrote no result into {self.directory}")
        return compiled

    def expecting(self, jobs: Sequence[ListJob]) -> list[ListJob]:
        """`jobs`, each expecting of its UT1 sources the files the newest compiled set that
        read them recorded (ListStatus.parts).  The cache lives on the proxy's volume, so
        this holds across reloads and restarts: a category that lost a file is a failed
        source, and the list keeps its last good contents (a reload is refused) or fails
        closed (a start), instead of loading smaller."""
        history = self._parts_history()
        return [replace(job, expect=tuple((s, tuple(history[s])) for s in job.sources
                                          if s in history))
                for job in jobs]

    def _parts_history(self) -> dict[str, list[str]]:
        """source -> UT1 files, from the sidecars, newest first (a few small JSON files)."""
        history: dict[str, list[str]] = {}
        for sidecar in sorted(self.directory.glob("*.json"), key=_mtime, reverse=True):
            try:
                lists = json.loads(sidecar.read_bytes())["lists"]
                for item in lists.values():
                    for source, parts in item["status"].get("parts", {}).items():
                        history.setdefault(source, list(parts))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue                # a corrupt set is dealt with when it is loaded
        return history

    def _load(self, key: str) -> CompiledLists | None:
        try:
            return load(self.directory, key)
        except ValueError as exc:
            log.warning("webpolicy: %s; compiling again", exc)
            remove(self.directory, key)
            return None

    def _run_worker(self, jobs: Sequence[ListJob], key: str, background: bool) -> str:
        """Run the worker; the key it compiled under (sources may have changed meanwhile)."""
        command = [sys.executable, "-m", "webpolicy.lists.compiler", "--cache-dir",
                   str(self.directory), "--key", key]
        if background:
            command.append("--background")
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, **_WORKER_ENV)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        payload = json.dumps([asdict(job) for job in jobs])
        started = time.monotonic()
        try:
            done = subprocess.run(command, input=payload, capture_output=True, text=True,
                                  env=env, timeout=WORKER_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CompileError(f"the list compiler could not run: {exc}") from None
        if done.returncode != 0:
            detail = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise CompileError(f"the list compiler failed (exit {done.returncode}): {detail}")
        words = done.stdout.split()
        if REUSED in words:
            log.info("webpolicy: lists already compiled by another process; mapped in %.1f s",
                     time.monotonic() - started)
        else:
            log.info("webpolicy: lists compiled in %.1f s", time.monotonic() - started)
        printed = words[-1:]
        return printed[0] if printed and _KEY.fullmatch(printed[0]) else key


def open_cache(directory: str, confdir: str) -> ListCache:
    """The list cache at `directory`, by default ``webpolicy-cache`` in mitmproxy's confdir
    (in the Docker image, on the /var/lib/webpolicy volume).  If it cannot be used (a
    read-only or foreign directory), a private temporary one, removed at exit, with a warning:
    filtering works the same, only every start compiles the lists again."""
    path = Path(directory or Path(confdir).expanduser() / "webpolicy-cache").expanduser()
    try:
        return ListCache(prepare_directory(path))
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="webpolicy-cache-"))
        atexit.register(shutil.rmtree, fallback, True)
        log.warning("webpolicy: cannot use %s for the list cache (%s); using %s until exit",
                    path, exc.strerror or exc, fallback)
        return ListCache(fallback)


# --------------------------------------------------------------------------- the worker


def _worker(directory: Path, key: str, jobs: list[ListJob]) -> CompiledLists | None:
    """Compile and save unless another process did; the result is returned only to be kept
    alive until the process ends (see main)."""
    prepare_directory(directory)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # another proxy may be compiling the same lists
        if (directory / f"{key}.json").exists():
            return None
        compiled = _compile(jobs)
        save(compiled, directory, key)
        prune(directory, keep=[key])
        return compiled


def _compile(jobs: list[ListJob]) -> CompiledLists:
    """Two processes when there are two CPUs and enough to do; one if a source keeps
    changing under them (the caller then compiles again: the key has changed)."""
    if (os.cpu_count() or 1) >= 2 and _total_size(jobs) >= PARALLEL_BYTES:
        for _ in range(3):
            try:
                return compile_in_two(jobs)
            except SourcesChanged:
                time.sleep(0.5)
    return compile_lists(jobs)


def _idle_priority() -> None:
    """SCHED_IDLE: the kernel runs this process (and its forked helpers) only on CPU time no
    other process wants, and preempts it at once when the proxy wakes up; a plain nice
    level still costs the proxy a few ms of scheduling delay now and then."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m webpolicy.lists.compiler",
        description="Compile list jobs (JSON on stdin) into the list cache; run by the proxy.")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--key", help="the key the caller expects (informational)")
    parser.add_argument("--background", action="store_true",
                        help="run only on CPU time nothing else wants (a reload)")
    args = parser.parse_args(argv)
    if args.background:
        _idle_priority()
    jobs = [ListJob(**{**item, "sources": tuple(item["sources"]),
                       "expect": tuple((source, tuple(parts))
                                       for source, parts in item.get("expect", ()))})
            for item in json.load(sys.stdin)]
    # The key is taken again here: a source edited since the caller's stat() is compiled as
    # it is now, under the key it has now, which is printed for the caller to load.
    key = cache_key(jobs)
    gc.disable()                 # millions of untracked strings: collections find nothing
    compiled = _worker(args.cache_dir, key, jobs)
    # Whether this process compiled, or found the set another one (a worker of the same
    # gateway) had written while it waited for the lock; the key comes last.
    print(REUSED if compiled is None else COMPILED, key, flush=True)
    if compiled is not None:
        os._exit(0)              # the caller goes on at once; no freeing of the lists first
    return 0


if __name__ == "__main__":
    sys.exit(main())
