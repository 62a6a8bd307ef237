"""Incremental ingest of the JSONL log (and reviews.jsonl) into the console's index.

One console can follow several gateways' log directories (`console.log_dirs`, or
`webpolicy console --log-dir A --log-dir B`; docs/scaling.md).  Each directory is followed on
its own: per-file state is keyed by directory and file name (both gateways write
safeguarding-2026-12-07.jsonl), each event remembers its directory (so a closed case's review
goes beside its own log), and a file gone or rewritten in one directory touches only that
directory's records.  References are unique across gateways (50 random bits each), so the
index's unique reference holds for all of them.  A configured directory that does not exist
(a share not mounted yet) is skipped with a warning, not taken for an empty log: its
records and cases stay until it is back.

The proxy appends to today's file; the console remembers how far it read each file (offset
and inode) and reads only what is new, complete lines only (a line being written is picked up
next time).  A file whose inode changed or that shrank was rewritten by `webpolicy erase`: it
is re-read whole and the records no longer in it are dropped, with their cases.  A file gone
(retention) takes its records with it.  So the console never shows what the log no longer has.

Ingest runs on requests, at most once a second (IngestMiddleware): records reach the inbox
within a second or two of the proxy writing them, and an idle console does no work.

Speed (a first start may find a million records: docs/benchmarks.md): new lines are read in
chunks of a few megabytes, each chunk parsed once with the standard json module and written
with one `INSERT ... ON CONFLICT (reference) DO NOTHING` executemany (on PostgreSQL, COPY),
committed with the file's new offset; the next chunk is parsed in a second thread meanwhile.  No model instances and no
query per record; the stored `record` is the log line itself, so nothing is serialised again.
A re-read (an interrupted ingest, a rewritten file) inserts nothing twice: the reference is
unique.  Each chunk commits on its own, so case work is never blocked for long by a backlog.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.db import connection, transaction

from webpolicy.console.models import Case, Event, IngestState, Note
from webpolicy.engine.decision import FILTER_UNAVAILABLE
from webpolicy.policy.severity import SEVERITY_RANK
from webpolicy.safeguarding.logstore import REVIEWS_FILE, log_files, record_time

log = logging.getLogger(__name__)
CHUNK = 8 << 20                          # bytes of log read, parsed and committed at a time
BATCH = 500                              # references per DELETE ... IN (...)
STATUTORY_PRIORITY = 9
ANALYZE_AFTER = 50_000                   # records added in one ingest: refresh the statistics
HIGH = SEVERITY_RANK["high"]
# The index row, in this order (models.Event; `record` is the JSON text of the log line).
COLUMNS = ("reference", "time", "user", "client_ip", "device", "profile", "action", "list",
           "category", "watch_category", "severity", "severity_rank", "statutory", "priority",
           "fault", "host", "url", "search_term", "record", "source_file", "source_dir")
NUL_ESCAPE = b"\\u0000"                 # PostgreSQL's text and jsonb cannot hold U+0000


@dataclass
class IngestResult:
    added: int = 0
    removed: int = 0
    reviews: int = 0
    bad_lines: int = 0


def is_fault(record: dict) -> bool:
    """A filter fault, the only kind of event the `it` role sees: refused because the filter
    could not decide (failed_closed), or let through and logged for the same reason (a profile
    with on_error: allow, recorded as `logged` in category "Filter unavailable")."""
    if record.get("action") == "failed_closed":
        return True
    return record.get("category") == FILTER_UNAVAILABLE and not record.get("list")


def priority(record: dict) -> int:
    """The inbox order: statutory first, then critical, then high (list or watchlist term);
    everything else ranks equal and sorts by time."""
    if record.get("statutory"):
        return STATUTORY_PRIORITY
    watch = record.get("watchlist") or {}
    rank = max(SEVERITY_RANK.get(str(record.get("severity")), 0),
               SEVERITY_RANK.get(str(watch.get("severity")), 0))
    return rank if rank >= HIGH else 0


def _text(value, limit: int) -> str:
    if type(value) is str:                   # nearly always: no conversion, a cheap slice
        return value[:limit]
    return "" if value is None else str(value)[:limit]


def _utc(text) -> dt.datetime | None:
    """The record's time, aware (naive times are UTC, as the proxy writes them)."""
    if type(text) is str and len(text) == 24 and text[-1] == "Z":   # 2026-12-07T03:55:11.123Z
        try:
            return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)
        except ValueError:
            return None
    when = record_time({"time": text})
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when


def _without_nul(value):
    """The record with U+0000 taken out of every text (a URL or search can carry one)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def directory_key(directory: Path | str) -> str:
    """How a log directory is named in the index: absolute, so `logs` and /srv/gw/logs agree."""
    return str(Path(directory).resolve())


def configured_directories() -> list[Path]:
    """The log directories this console follows (settings.py), the first one first."""
    from django.conf import settings
    return [Path(d) for d in settings.WEBPOLICY_LOG_DIRS]


def event_row(record: dict, text: str, source: str, directory: str = "") -> tuple | None:
    """The index row (COLUMNS) for a record whose JSON text is `text`, read from file `source`
    in log directory `directory`, or None for a record without a reference or a time."""
    get = record.get
    reference = get("id")
    when = _utc(get("time")) if reference else None
    if when is None:
        return None
    watch = get("watchlist") or {}
    if type(watch) is not dict:
        watch = {}
    severity = get("severity")
    return (
        _text(reference, 32), when, _text(get("user"), 200), _text(get("client_ip"), 64),
        _text(get("device"), 200), _text(get("profile"), 100), _text(get("action"), 32),
        _text(get("list"), 100), _text(get("category"), 200),
        _text(watch.get("category"), 200), _text(severity, 16),
        SEVERITY_RANK.get(severity, 0) if type(severity) is str else 0,
        bool(get("statutory")), priority(record), is_fault(record), _text(get("host"), 300),
        _text(get("url"), 4000), _text(get("search_term"), 1000), text, source, directory)


def _rows(data: bytes, source: str, directory: str, result: IngestResult) -> list[tuple]:
    """Index rows for the complete lines in `data`; damaged lines are counted, not fatal."""
    rows = []
    loads = json.loads
    for line in data.split(b"\n"):
        if not line or line.isspace():
            continue
        try:
            record = loads(line)
            text = line.decode("utf-8")
        except ValueError:                   # not JSON, or not UTF-8 (UnicodeError)
            result.bad_lines += 1
            continue
        if not isinstance(record, dict):
            result.bad_lines += 1
            continue
        if NUL_ESCAPE in line:
            record = _without_nul(record)
            text = json.dumps(record)
        row = event_row(record, text, source, directory)
        if row is not None:
            rows.append(row)
    return rows


class _Writer:
    """Inserts index rows, skipping references already indexed; returns how many were new."""

    def __init__(self):
        ops = connection.ops
        self.table = ops.quote_name(Event._meta.db_table)
        self.columns = ", ".join(ops.quote_name(c) for c in COLUMNS)
        self.postgresql = connection.vendor == "postgresql"

    def insert(self, rows: list[tuple]) -> int:
        if not rows:
            return 0
        if self.postgresql:
            return self._copy(rows)
        # SQLite keeps times as UTC text, the way Django writes them (str() of a naive time)
        rows = [(r[0], str(r[1].astimezone(dt.UTC).replace(tzinfo=None)), *r[2:]) for r in rows]
        marks = ", ".join(["%s"] * len(COLUMNS))
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {self.table} ({self.columns}) VALUES ({marks}) "
                               "ON CONFLICT (reference) DO NOTHING", rows)
            return cursor.rowcount

    def _copy(self, rows: list[tuple]) -> int:
        """PostgreSQL: COPY straight into the table (new records, nearly always); if one is
        already there (a re-read), COPY into a temporary table and INSERT ... ON CONFLICT."""
        import psycopg
        try:
            with (transaction.atomic(), connection.cursor() as cursor,   # a savepoint
                  cursor.cursor.copy(f"COPY {self.table} ({self.columns}) FROM STDIN") as copy):
                for row in rows:
                    copy.write_row(row)
            return len(rows)
        except psycopg.errors.UniqueViolation:
            pass
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS console_event_new ON COMMIT "
                           f"DELETE ROWS AS SELECT {self.columns} FROM {self.table} WITH NO DATA")
            with cursor.cursor.copy(f"COPY console_event_new ({self.columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(f"INSERT INTO {self.table} ({self.columns}) SELECT {self.columns} "
                           "FROM console_event_new ON CONFLICT (reference) DO NOTHING")
            added = cursor.rowcount
            cursor.execute("DELETE FROM console_event_new")
            return added


def _delete_events(events, result: IngestResult) -> None:
    """Drop index rows with their cases and notes: three statements, no model instances."""
    Note.objects.filter(case__event__in=events).delete()
    Case.objects.filter(event__in=events).delete()
    # Event rows now have nothing depending on them: one DELETE, without Django first
    # loading each row (and its record) to look for cascades.
    result.removed += events._raw_delete(events.db)


def _ingest_file(name: str, path: Path, state: IngestState, result: IngestResult) -> None:
    directory = state.directory
    info = os.stat(path)
    rewritten = bool(state.inode) and (state.inode != info.st_ino or info.st_size < state.offset)
    start = 0 if rewritten else state.offset
    if info.st_size == start and not rewritten and state.inode == info.st_ino:
        return
    state.inode = info.st_ino
    writer = _Writer()
    with open(path, "rb") as handle:
        handle.seek(start)
        if rewritten:                        # erased records leave the index with their cases
            with transaction.atomic():       # all at once: never half an erasure
                kept: set[str] = set()
                offset = start
                for data in _chunks(handle):
                    rows = _rows(data, name, directory, result)
                    kept.update(r[0] for r in rows)
                    result.added += writer.insert(rows)
                    offset += len(data)
                gone = [pk for pk, ref in Event.objects.filter(source_file=name,
                                                               source_dir=directory)
                        .values_list("pk", "reference") if ref not in kept]
                for first in range(0, len(gone), BATCH):
                    _delete_events(Event.objects.filter(pk__in=gone[first:first + BATCH]), result)
                state.offset = offset
                state.save()
            return
        offset = start
        for rows, length in _parsed(handle, name, directory, result):   # chunk, its length
            with transaction.atomic():
                result.added += writer.insert(rows)
                offset += length
                state.offset = offset
                state.save()
        if state.pk is None:                 # a new, still empty file: remember its inode
            state.save()


def _parsed(handle, name: str, directory: str, result: IngestResult):
    """(rows, bytes) of each chunk, in order; the next chunk is parsed in a second thread
    while the caller writes this one.  The database does its part (index upkeep, COPY on the
    server) without holding Python's lock, so on two cores parsing and writing overlap."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="webpolicy-ingest") as pool:
        pending = None
        for data in _chunks(handle):
            parsing = (pool.submit(_rows, data, name, directory, result), len(data))
            if pending is not None:
                yield pending[0].result(), pending[1]
            pending = parsing
        if pending is not None:
            yield pending[0].result(), pending[1]


def _chunks(handle):
    """Complete lines, a few megabytes at a time; a line still being written is left for
    next time (its bytes are not counted in the offset)."""
    carry = b""
    while chunk := handle.read(CHUNK):
        data = carry + chunk
        end = data.rfind(b"\n") + 1
        carry = data[end:]
        if end:
            yield data[:end]


def review_key(data: dict) -> str:
    return f"{data.get('time', '')}|{data.get('by', '')}|{data.get('note', '')}"[:600]


def _status_after(data: dict, case: Case) -> str:
    """A review closes the case; a `reopened` line reopens a closed one (logstore.py)."""
    if data.get("reopened") is True:
        return Case.Status.IN_PROGRESS if case.status == Case.Status.CLOSED else case.status
    return Case.Status.CLOSED


def _ingest_reviews(directory: Path, key: str, result: IngestResult) -> None:
    """reviews.jsonl lines (`webpolicy review`) become notes on closed cases (a `reopened`
    line reopens it); lines the console wrote itself are recognised by their key and not
    imported twice."""
    path = directory / REVIEWS_FILE
    if not path.exists():
        return
    state, _ = IngestState.objects.get_or_create(directory=key, name=REVIEWS_FILE)
    info = os.stat(path)
    if (state.inode and state.inode != info.st_ino) or info.st_size < state.offset:
        state.offset = 0                     # rewritten (erasure): keys keep it idempotent
    if info.st_size == state.offset:
        return
    state.inode = info.st_ino
    with open(path, "rb") as handle:
        handle.seek(state.offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    offset = state.offset + end
    with transaction.atomic():
        for review in _reviews(data[:end], result):
            key = review_key(review)
            event = Event.objects.filter(reference=str(review.get("id", ""))).first()
            if event is None or Note.objects.filter(case__event=event, review_key=key).exists():
                continue
            case, _ = Case.objects.get_or_create(event=event)
            wanted = _status_after(review, case)
            if case.status != wanted:
                case.status = wanted
                case.save()
            when = record_time({"time": review.get("time", "")}) or dt.datetime.now(dt.UTC)
            Note.objects.create(case=case, author=str(review.get("by", "")), time=when,
                                text=str(review.get("note", "")), source="cli", review_key=key)
            result.reviews += 1
        state.offset = offset
        state.save()


def _reviews(data: bytes, result: IngestResult) -> list[dict]:
    found = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            review = json.loads(line)
        except ValueError:
            result.bad_lines += 1
            continue
        if isinstance(review, dict):
            found.append(review)
        else:
            result.bad_lines += 1
    return found


def _as_list(directories: Path | str | list) -> list[Path]:
    if isinstance(directories, (str, Path)):
        return [Path(directories)]
    return list(dict.fromkeys(Path(d) for d in directories))


def _adopt_legacy(directories: list[Path]) -> None:
    """State and events from before several directories (migration 0004) have no directory:
    they came from the one directory that console followed, which is the configured
    directory holding a file of the same name and inode (else the first).  Once adopted,
    nothing is left without a directory, so this costs one small query afterwards."""
    legacy = list(IngestState.objects.filter(directory=""))
    if not legacy:
        return
    target = directories[0]
    for directory in directories:
        if any(_same_file(directory / state.name, state.inode) for state in legacy):
            target = directory
            break
    key = directory_key(target)
    with transaction.atomic():
        taken = set(IngestState.objects.filter(directory=key).values_list("name", flat=True))
        IngestState.objects.filter(directory="", name__in=taken).delete()
        IngestState.objects.filter(directory="").update(directory=key)
        Event.objects.filter(source_dir__isnull=True).update(source_dir=key)
    log.info("adopted the index of the earlier single log directory into %s", key)


def _same_file(path: Path, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _ingest_directory(directory: Path, result: IngestResult) -> None:
    key = directory_key(directory)
    if not directory.is_dir():               # not mounted, not synced yet: not an empty log
        log.warning("log directory %s is missing: its records stay as they were", directory)
        return
    present = {path.name: path for _, path in log_files(directory)}
    states = {state.name: state for state in IngestState.objects.filter(directory=key)}
    gone = [name for name in states if name not in present and name != REVIEWS_FILE]
    if gone:                                 # by name, so the index on source_file is used
        with transaction.atomic():
            _delete_events(Event.objects.filter(source_file__in=gone, source_dir=key), result)
            IngestState.objects.filter(directory=key, name__in=gone).delete()
    for name, path in present.items():
        try:
            _ingest_file(name, path, states.get(name) or IngestState(directory=key, name=name),
                         result)
        except FileNotFoundError:            # removed by retention while we looked
            continue
    _ingest_reviews(directory, key, result)


def ingest(directories: Path | str | list) -> IngestResult:
    """Bring the index up to date with one log directory or several (one per gateway).
    Directories not named are left as they are (`webpolicy erase --log-dir B` syncs B only)."""
    directories = _as_list(directories)
    result = IngestResult()
    if directories:
        _adopt_legacy(directories)
    for directory in directories:
        _ingest_directory(directory, result)
    if result.added >= ANALYZE_AFTER and connection.vendor == "postgresql":
        # fresh statistics at once after a backlog, not when autovacuum next looks: the
        # planner's choice of index for the pages depends on them
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(Event._meta.db_table)}")
    return result


_lock = threading.Lock()
_last = 0.0


def ingest_if_due(directories: Path | list, interval: float = 1.0) -> IngestResult | None:
    """Ingest unless another thread is at it or it ran less than `interval` seconds ago."""
    global _last
    if not _lock.acquire(blocking=False):
        return None
    try:
        if time.monotonic() - _last < interval:
            return None
        result = ingest(directories)
        _last = time.monotonic()
        if result.bad_lines:
            log.warning("skipped %d unreadable log line(s)", result.bad_lines)
        return result
    finally:
        _lock.release()


def reset_throttle() -> None:
    """Make the next ingest_if_due() run (tests, and after the console writes a review)."""
    global _last
    _last = 0.0
