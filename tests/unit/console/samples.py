"""Sample safeguarding log records for the console's tests (schema 1, as the proxy writes)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

def record(ref: str, minutes_ago: int = 5, **fields) -> dict:
    """A full record; `fields` override the defaults (a blocked gambling visit by bob)."""
    # From the time of the call, not of the import: a long test run must not age the samples
    # out of the windows the tests filter by ("since=15m").
    when = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=minutes_ago)
    base = {
        "schema": 1, "id": ref, "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "client_ip": "10.10.4.17", "user": "bob", "device": "Library PC 3",
        "profile": "learner", "profile_reason": "network 10.10.0.0/16", "action": "blocked",
        "method": "GET", "url": "https://www.gambling.test/", "host": "www.gambling.test",
        "search_term": None, "list": "gambling", "category": "Gambling", "severity": "medium",
        "statutory": False, "match": "host", "entry": "gambling.test", "user_agent": "Mozilla/5.0",
        "policy_version": "test-1", "watchlist": None,
    }
    base.update(fields)
    return base


def statutory(ref: str, **fields) -> dict:
    return record(ref, url="https://ctiru-host.test/terror/page", host="ctiru-host.test",
                  list="ctiru", category="Terrorist content (CTIRU)", severity="critical",
                  statutory=True, match="url", entry="ctiru-host.test/terror/page", **fields)


def flagged(ref: str, **fields) -> dict:
    watch = {"list": "self_harm", "category": "Self-harm", "severity": "high", "term": "self harm"}
    return record(ref, action="flagged", url="https://www.google.co.uk/search?[redacted]",
                  host="www.google.co.uk", search_term="how to self harm", list="self_harm",
                  category="Self-harm", severity="high", match="search_term", entry="self harm",
                  watchlist=watch, **fields)


def fault(ref: str, **fields) -> dict:
    return record(ref, action="failed_closed", list=None, category="Filter unavailable",
                  severity=None, match=None, entry=None, search_term="secret search", **fields)


def review_request(ref: str, request_for: str, reason: str | None = "for my project",
                   **fields) -> dict:
    """A learner's request that the site of `request_for` be reviewed (reviewform.py)."""
    return record(ref, action="review_requested", method="POST", url="www.gambling.test",
                  severity=None, match=None, entry=None, request_for=request_for,
                  reason=reason, **fields)


def write(directory: Path, *records: dict) -> Path:
    """Append records to their UTC day's file, as the proxy's writer does."""
    directory.mkdir(parents=True, exist_ok=True)
    path = None
    for item in records:
        day = item["time"][:10]
        path = directory / f"webpolicy-{day}.jsonl"
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(item) + "\n")
    return path
