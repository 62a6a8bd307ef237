"""Safeguarding-log records for the report, log-store and HTML tests, made by the same code
the proxy uses (events.make_record) and written as its writer writes them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from webpolicy.cli import main as cli
from webpolicy.engine.decision import Decision, unavailable
from webpolicy.engine.watchlist import WatchHit
from webpolicy.lists.canonical import canonical_url
from webpolicy.safeguarding.events import RequestFacts, event_action, make_record, new_event_id
from webpolicy.safeguarding.report import Filters, select

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SELF_HARM = WatchHit("self_harm", "Self-harm", "high", "self harm")


def decision(action="block", **fields) -> Decision:
    values = dict(profile="learner", profile_reason="network 10.10.0.0/16", list="gambling",
                  category="Gambling", severity="medium", match="host", entry="bet.test",
                  policy_version="t1")
    return Decision(action, **{**values, **fields})


def make(when: dt.datetime, action="block", user="alice", ip="10.10.4.17", url="https://bet.test/x?a=1",
         search=None, watch=None, passthrough=False, **fields) -> dict:
    d = unavailable("learner", "default", "t1") if action == "fail" else decision(action, **fields)
    facts = RequestFacts(ip, user, "GET", canonical_url(url), canonical_url(url).host,
                         "Mozilla/5.0", search)
    return make_record(new_event_id(), event_action(d, passthrough, watch is not None), d, facts,
                       "Library PC 3" if ip == "10.10.4.17" else "", False, when, watch)


def week() -> list[dict]:
    """A week of varied records: every action, a statutory hit, a watchlist flag, a staff
    log-only visit, a filter failure, and a learner's crafted user name and search term."""
    return [
        make(NOW - dt.timedelta(days=6), user="alice"),
        make(NOW - dt.timedelta(days=3), user="bob", ip="10.10.4.20", list="adult",
             category="Pornography", severity="high"),
        make(NOW - dt.timedelta(days=2), user="Alice", url="https://ctiru.test/terror",
             list="ctiru", category="Terrorist content (CTIRU)", severity="critical",
             statutory=True, match="url", entry="ctiru.test/terror"),
        make(NOW - dt.timedelta(days=1), action="allow", user=None, ip="10.10.4.30",
             url="https://www.google.co.uk/search?q=how+to+self+harm", search="how to self harm",
             watch=SELF_HARM, list=None, category=None, severity=None, match=None, entry=None),
        make(NOW - dt.timedelta(hours=5), action="log", user="carol", profile="staff",
             list="social", category="Social networking", severity="low"),
        make(NOW - dt.timedelta(hours=1), action="fail", user=None, ip="10.10.9.9"),
        make(NOW - dt.timedelta(minutes=5), user="=cmd|' /C calc'!A0", ip="10.20.1.1",
             search="<script>alert('x')</script>", url="https://bet.test/<b>?q=1"),
    ]


def write_log(directory: Path, records: list[dict]) -> Path:
    """Append records to their daily files, one JSON line each, as the proxy's writer does."""
    for record in records:
        day = record["time"][:10]
        with open(directory / f"webpolicy-{day}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return directory


def ids_of(records) -> list[str]:
    return [r["id"] for r in records]


def all_records(logs: Path, **filters) -> list[dict]:
    """The records a report with these filters selects."""
    return select(logs, Filters(**filters))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`webpolicy ARGS...` in-process: exit code, stdout, stderr."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err
