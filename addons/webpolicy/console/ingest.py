"""Incremental ingest of the JSONL log (and reviews.jsonl) into the console's index.

The proxy appends to today's file; the console remembers how far it read each file (offset
and inode) and reads only what is new, complete lines only (a line being written is picked up
next time).  A file whose inode changed or that shrank was rewritten by `webpolicy erase`: it
is re-read whole and the records no longer in it are dropped, with their cases.  A file gone
(retention) takes its records with it.  So the console never shows what the log no longer has.

Ingest runs on requests, at most once a second (IngestMiddleware): records reach the inbox
within a second or two of the proxy writing them, and an idle console does no work.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from webpolicy.console.models import Case, Event, IngestState, Note
from webpolicy.engine.decision import FILTER_UNAVAILABLE
from webpolicy.policy.severity import SEVERITY_RANK
from webpolicy.safeguarding.logstore import REVIEWS_FILE, log_files, record_time

log = logging.getLogger(__name__)
BATCH = 500
STATUTORY_PRIORITY = 9


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
    return rank if rank >= SEVERITY_RANK["high"] else 0


def _text(value, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


def event_from(record: dict, source: str) -> Event | None:
    """The index row for a record, or None for a record without a reference or a time."""
    when = record_time(record)
    reference = record.get("id")
    if when is None or not reference:
        return None
    watch = record.get("watchlist") or {}
    return Event(
        reference=_text(reference, 32), time=when, user=_text(record.get("user"), 200),
        client_ip=_text(record.get("client_ip"), 64), device=_text(record.get("device"), 200),
        profile=_text(record.get("profile"), 100), action=_text(record.get("action"), 32),
        list=_text(record.get("list"), 100), category=_text(record.get("category"), 200),
        watch_category=_text(watch.get("category"), 200),
        severity=_text(record.get("severity"), 16),
        severity_rank=SEVERITY_RANK.get(str(record.get("severity")), 0),
        statutory=bool(record.get("statutory")), priority=priority(record),
        fault=is_fault(record), host=_text(record.get("host"), 300),
        url=_text(record.get("url"), 4000), search_term=_text(record.get("search_term"), 1000),
        record=record, source_file=source)


def _new_lines(path: Path, state: IngestState) -> tuple[list[bytes], int, bool]:
    """(complete new lines, offset after them, whether the file was rewritten)."""
    info = os.stat(path)
    rewritten = bool(state.inode) and (state.inode != info.st_ino or info.st_size < state.offset)
    start = 0 if rewritten else state.offset
    if info.st_size == start and not rewritten:
        return [], start, False
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read()
    end = data.rfind(b"\n") + 1              # a line still being written waits for next time
    state.inode = info.st_ino
    return data[:end].splitlines(), start + end, rewritten


def _parse(lines: list[bytes], result: IngestResult) -> list[dict]:
    records = []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            result.bad_lines += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            result.bad_lines += 1
    return records


def _ingest_file(name: str, path: Path, state: IngestState, result: IngestResult) -> None:
    lines, offset, rewritten = _new_lines(path, state)
    if not lines and not rewritten and offset == state.offset:
        return
    records = _parse(lines, result)
    events = [e for e in (event_from(r, name) for r in records) if e is not None]
    with transaction.atomic():
        if rewritten:                        # erased records leave the index with their cases
            kept = {e.reference for e in events}
            gone = [pk for pk, ref in Event.objects.filter(source_file=name)
                    .values_list("pk", "reference") if ref not in kept]
            for start in range(0, len(gone), BATCH):
                result.removed += Event.objects.filter(pk__in=gone[start:start + BATCH]).delete()[1].get("console.Event", 0)
        before = Event.objects.count()
        for start in range(0, len(events), BATCH):
            Event.objects.bulk_create(events[start:start + BATCH], ignore_conflicts=True)
        result.added += Event.objects.count() - before
        state.offset = offset
        state.save()


def review_key(data: dict) -> str:
    return f"{data.get('time', '')}|{data.get('by', '')}|{data.get('note', '')}"[:600]


def _status_after(data: dict, case: Case) -> str:
    """A review closes the case; a `reopened` line reopens a closed one (logstore.py)."""
    if data.get("reopened") is True:
        return Case.Status.IN_PROGRESS if case.status == Case.Status.CLOSED else case.status
    return Case.Status.CLOSED


def _ingest_reviews(directory: Path, result: IngestResult) -> None:
    """reviews.jsonl lines (`webpolicy review`) become notes on closed cases (a `reopened`
    line reopens it); lines the console wrote itself are recognised by their key and not
    imported twice."""
    path = directory / REVIEWS_FILE
    if not path.exists():
        return
    state, _ = IngestState.objects.get_or_create(name=REVIEWS_FILE)
    lines, offset, _ = _new_lines(path, state)
    with transaction.atomic():
        for data in _parse(lines, result):
            key = review_key(data)
            event = Event.objects.filter(reference=str(data.get("id", ""))).first()
            if event is None or Note.objects.filter(case__event=event, review_key=key).exists():
                continue
            case, _ = Case.objects.get_or_create(event=event)
            wanted = _status_after(data, case)
            if case.status != wanted:
                case.status = wanted
                case.save()
            when = record_time({"time": data.get("time", "")}) or dt.datetime.now(dt.UTC)
            Note.objects.create(case=case, author=str(data.get("by", "")), time=when,
                                text=str(data.get("note", "")), source="cli", review_key=key)
            result.reviews += 1
        state.offset = offset
        state.save()


def ingest(directory: Path) -> IngestResult:
    """Bring the index up to date with the log directory."""
    result = IngestResult()
    present = {path.name: path for _, path in log_files(Path(directory))}
    states = {state.name: state for state in IngestState.objects.all()}   # one query, not 90
    gone = [name for name in states if name not in present and name != REVIEWS_FILE]
    if gone:                                 # by name, so the index on source_file is used
        result.removed += Event.objects.filter(source_file__in=gone).delete()[1].get("console.Event", 0)
        IngestState.objects.filter(name__in=gone).delete()
    for name, path in present.items():
        try:
            _ingest_file(name, path, states.get(name) or IngestState(name=name), result)
        except FileNotFoundError:            # removed by retention while we looked
            continue
    _ingest_reviews(Path(directory), result)
    return result


_lock = threading.Lock()
_last = 0.0


def ingest_if_due(directory: Path, interval: float = 1.0) -> IngestResult | None:
    """Ingest unless another thread is at it or it ran less than `interval` seconds ago."""
    global _last
    if not _lock.acquire(blocking=False):
        return None
    try:
        if time.monotonic() - _last < interval:
            return None
        result = ingest(directory)
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
