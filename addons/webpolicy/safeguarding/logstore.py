"""The safeguarding log and its reviews on disk, as the report and erase commands see them.

The daily files are evidence, so nothing here edits them except `erase`, which exists for
data-protection requests and replaces a day's file atomically under the same lock the proxy's
writer takes.  Reviews ("seen, dealt with, note") live beside the log in `reviews.jsonl`, one
JSON line per review, 0600 like the log; the proxy never writes them.  The writer itself is
logwriter.py: this module owns the layout on disk, reads, and rewrites on request.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from webpolicy.safeguarding.safetext import clean_value, conform

# The layout on disk, which the writer (logwriter.py) follows: one file per UTC day.
FILE_PREFIX = "webpolicy-"
FILE_SUFFIX = ".jsonl"
REVIEWS_FILE = "reviews.jsonl"
_FILE_DATE = re.compile(rf"^{FILE_PREFIX}(\d{{4}}-\d{{2}}-\d{{2}}){re.escape(FILE_SUFFIX)}$")


def log_file_name(day: dt.date) -> str:
    return f"{FILE_PREFIX}{day.isoformat()}{FILE_SUFFIX}"


def log_files(directory: Path) -> list[tuple[dt.date, Path]]:
    """The daily log files in a directory, oldest first."""
    found = []
    if not directory.is_dir():
        return found
    for path in directory.iterdir():
        m = _FILE_DATE.match(path.name)
        if m:
            found.append((dt.date.fromisoformat(m.group(1)), path))
    return sorted(found)


# -- reading ------------------------------------------------------------------------------


def record_time(record: dict) -> dt.datetime | None:
    """The record's aware time, or None for a record too damaged to place in time."""
    try:
        return dt.datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class ReadStats:
    """What reading skipped, so a report can say so instead of silently showing less."""

    files: int = 0
    bad_lines: int = 0


def read_records(directory: Path, since: dt.datetime | None = None,
                 until: dt.datetime | None = None,
                 stats: ReadStats | None = None) -> Iterator[dict]:
    """Records from the daily files (UTC days) that can hold times in [since, until)."""
    stats = stats if stats is not None else ReadStats()
    first = since.astimezone(dt.UTC).date() if since else None
    last = until.astimezone(dt.UTC).date() if until else None
    for day, path in log_files(directory):
        if (first and day < first) or (last and day > last):
            continue
        stats.files += 1
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    stats.bad_lines += 1        # e.g. a line cut short by a full disk
                    continue
                if isinstance(record, dict):
                    yield conform(record)       # any line: readers rely on the shape
                else:
                    stats.bad_lines += 1


def same_ip(value, wanted: str) -> bool:
    """Whether a record's client address is `wanted` (an address, or a network in CIDR)."""
    if not value:
        return False
    try:
        if "/" in wanted:
            return ipaddress.ip_address(value) in ipaddress.ip_network(wanted, strict=False)
        return ipaddress.ip_address(value) == ipaddress.ip_address(wanted)
    except ValueError:
        return str(value) == wanted


# -- reviews ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    id: str
    time: str
    by: str
    note: str
    record_time: str = ""


class ReviewStore:
    """reviews.jsonl beside the log: appended by `webpolicy review` and the console, never by
    the proxy.  A line with `"reopened": true` (a case reopened in the console) makes the
    record unreviewed again: `load()` drops the reviews before it, which stay in the file."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / REVIEWS_FILE

    def load(self) -> dict[str, list[Review]]:
        reviews: dict[str, list[Review]] = defaultdict(list)
        if not self.path.exists():
            return reviews
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
                if data.get("reopened") is True:
                    reviews.pop(data["id"], None)
                    continue
                reviews[data["id"]].append(Review(data["id"], data.get("time", ""),
                                                  data.get("by", ""), data.get("note", ""),
                                                  data.get("record_time", "")))
            except (ValueError, KeyError, TypeError):
                continue
        return reviews

    def add(self, records: Iterable[dict], note: str, by: str,
            now: dt.datetime | None = None, reopened: bool = False) -> int:
        """Append one review line per record; `reopened` marks the records unreviewed again."""
        stamp = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
        extra = {"reopened": True} if reopened else {}
        lines = [json.dumps(clean_value({"id": r["id"], "time": stamp, "by": by, "note": note,
                                         "record_time": r.get("time", ""), **extra}, limit=None),
                            ensure_ascii=False) + "\n"
                 for r in records]                # a note typed with any bytes still encodes
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, "".join(lines).encode("utf-8"))
        finally:
            os.close(fd)
        return len(lines)

    def remove(self, keep) -> int:
        """Rewrite the store keeping only lines for which keep(data) is true."""
        if not self.path.exists():
            return 0
        removed = 0

        def keep_line(line: bytes) -> bool:
            nonlocal removed
            try:
                kept = keep(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                kept = True
            removed += not kept
            return kept

        rewrite_locked(self.path, keep_line)
        return removed


def purge_reviews(directory: Path, cutoff: dt.date) -> int:
    """Drop reviews of records older than the retention cutoff (the records are gone)."""
    def keep(data: dict) -> bool:
        when = record_time({"time": data.get("record_time", "")})
        return when is None or when.astimezone(dt.UTC).date() >= cutoff
    return ReviewStore(directory).remove(keep)


# -- atomic rewrite (erase) ---------------------------------------------------------------


def rewrite_locked(path: Path, keep) -> tuple[int, int]:
    """Rewrite `path` without the lines keep() rejects: temp file (0600) + rename, under an
    exclusive flock, the lock the proxy's log writer takes before appending.  Returns
    (lines kept, lines dropped); the file is untouched when nothing is dropped."""
    while True:
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:                         # replaced while we waited: lock the new one
                continue
            with os.fdopen(os.dup(fd), "rb") as handle:
                lines = handle.read().splitlines(keepends=True)
            kept = [line for line in lines if not line.strip() or keep(line)]
            dropped = len(lines) - len(kept)
            if dropped:
                _replace(path, b"".join(kept))
            return len(kept), dropped
        finally:
            os.close(fd)                         # releases the lock


def _replace(path: Path, data: bytes) -> None:
    """Write `data` beside `path` and rename it over: readers see the old or the new file,
    never half of one, and a crash leaves the old file whole."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass
class Person:
    """Whose records `erase` removes (any given criterion matches)."""

    user: str | None = None
    client: str | None = None
    ids: tuple[str, ...] = ()

    def matches(self, record: dict) -> bool:
        if self.user and str(record.get("user") or "").casefold() == self.user.casefold():
            return True
        if self.client and same_ip(record.get("client_ip"), self.client):
            return True
        return bool(self.ids) and record.get("id") in self.ids


def erase(directory: Path, person: Person, dry_run: bool = False) -> tuple[dict[Path, int], int]:
    """Remove a person's records from every daily file and their reviews.
    Returns ({file: records removed}, reviews removed)."""
    removed: dict[Path, int] = {}
    ids: set[str] = set()

    def keep(line: bytes) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return True                          # unreadable lines are kept, never guessed at
        if isinstance(record, dict) and person.matches(record):
            ids.add(str(record.get("id")))
            return False
        return True

    for _, path in log_files(directory):
        if dry_run:
            count = sum(1 for line in path.read_bytes().splitlines() if line.strip() and not keep(line))
        else:
            count = rewrite_locked(path, keep)[1]
        if count:
            removed[path] = count
    reviews = 0
    store = ReviewStore(directory)
    if dry_run:
        reviews = sum(1 for rid, items in store.load().items() if rid in ids for _ in items)
    elif ids:
        reviews = store.remove(lambda data: data.get("id") not in ids)
    return removed, reviews
