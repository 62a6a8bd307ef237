"""Filters, times, the terminal table, CSV and JSON writers, and the record's JSON Schema."""

from __future__ import annotations

import datetime as dt
import io
import json

import jsonschema
import pytest

from tests.unit.eventlog import NOW, all_records, ids_of, make
from tests.unit.helpers import ADDONS, REPO
from webpolicy.safeguarding.logstore import ReadStats, read_records
from webpolicy.safeguarding.report import (
    Filters,
    parse_when,
    select,
    write_csv,
    write_json,
    write_sites,
    write_table,
)

SCHEMA = json.loads((ADDONS / "webpolicy/safeguarding/"
                     "event-record.schema.json").read_text())


# -- the record and its schema ------------------------------------------------------------


def test_every_kind_of_record_matches_the_schema(logs):
    records = list(read_records(logs))
    records.append(make(NOW, passthrough=True))
    assert {r["action"] for r in records} == {"blocked", "flagged", "logged", "failed_closed",
                                              "refused_passthrough"}
    validator = jsonschema.Draft202012Validator(SCHEMA,
                                                format_checker=jsonschema.FormatChecker())
    for record in records:
        validator.validate(record)


def test_schema_rejects_drift():
    record = make(NOW)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**record, "surprise": 1}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**record, "action": "allowed"}, SCHEMA)


def test_documentation_covers_every_field():
    doc = (REPO / "docs/event-record.md").read_text()
    for name in SCHEMA["properties"]:
        assert f"`{name}`" in doc, name


def test_flagged_record_describes_the_watchlist_hit(logs):
    flagged = all_records(logs, actions=("flagged",))[0]
    assert flagged["search_term"] == "how to self harm"
    assert (flagged["list"], flagged["category"], flagged["severity"], flagged["match"],
            flagged["entry"]) == ("self_harm", "Self-harm", "high", "search_term", "self harm")
    assert flagged["url"].endswith("?[redacted]")


# -- times and filters --------------------------------------------------------------------


def test_parse_when():
    assert parse_when("7d", now=NOW) == NOW - dt.timedelta(days=7)
    assert parse_when("12h", now=NOW) == NOW - dt.timedelta(hours=12)
    assert parse_when("2w", now=NOW) == NOW - dt.timedelta(weeks=2)
    start = parse_when("2026-11-01")
    end = parse_when("2026-11-01", end=True)
    assert end - start == dt.timedelta(days=1) and start.tzinfo is not None
    assert parse_when("2026-11-01T14:30").hour == 14
    with pytest.raises(ValueError, match="7d"):
        parse_when("last tuesday")


def test_filters(logs):
    assert len(all_records(logs)) == 7
    assert len(all_records(logs, user="ALICE")) == 2                   # not case-sensitive
    assert len(all_records(logs, client="10.10.4.17")) == 3
    assert len(all_records(logs, client="10.10.0.0/16")) == 6
    assert len(all_records(logs, profile="staff")) == 1
    assert len(all_records(logs, category="ctiru")) == 1
    assert len(all_records(logs, category="self-harm")) == 1           # the watchlist category
    assert {r["severity"] for r in all_records(logs, severity="high")} == {"high", "critical"}
    assert len(all_records(logs, actions=("blocked", "failed_closed"))) == 5
    assert len(all_records(logs, since=NOW - dt.timedelta(days=2, minutes=1))) == 5
    assert len(all_records(logs, until=NOW - dt.timedelta(days=2, minutes=1))) == 2
    first = all_records(logs)[0]["id"]
    assert ids_of(all_records(logs, ids=(first,))) == [first]


def test_records_are_oldest_first_and_bad_lines_skipped(logs):
    day = (NOW - dt.timedelta(days=1)).date().isoformat()
    with open(logs / f"webpolicy-{day}.jsonl", "a") as handle:
        handle.write('{"cut short by a full disk\n[1,2]\n\n')
    stats = ReadStats()
    records = select(logs, Filters(), stats=stats)
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
    assert stats.bad_lines == 2


# -- outputs ------------------------------------------------------------------------------


def test_terminal_table(logs):
    out = io.StringIO()
    records = select(logs, Filters())
    write_table(records, {}, out, width=120)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["When", "Reference", "Action"]
    assert len(lines) == 8 and all(len(line) <= 120 for line in lines)
    assert 'search "how to self harm"' in out.getvalue()
    assert "Library PC 3 (10.10.4.17)" not in out.getvalue()     # alice has a login
    assert "10.10.9.9" in out.getvalue()


def test_sites_table_under_the_terminal_report(logs):
    out = io.StringIO()
    write_sites(select(logs, Filters()), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "" and lines[1].split()[:4] == ["Sites", "most", "tried", "Blocked"]
    rows = [line.split() for line in lines[2:]]
    # bet.test: alice, bob and the crafted name (the filter failure and the staff log-only
    # visit on the same site are not attempts); the statutory host; the flagged search.
    assert rows == [["bet.test", "3", "0", "3", "Gambling"],
                    ["ctiru.test", "(statutory)", "1", "0", "1", "Terrorist", "content",
                     "(CTIRU)"],
                    ["google.co.uk", "0", "1", "1", "Self-harm"]]
    empty = io.StringIO()
    write_sites(all_records(logs, actions=("logged",)), empty)
    assert empty.getvalue() == ""


def test_json_writer_is_valid_json_with_unicode():
    out = io.StringIO()
    write_json([{"id": "WP-1", "user": "zoë"}], {}, out)
    assert json.loads(out.getvalue())[0]["user"] == "zoë"


def test_csv_writer_handles_missing_fields():
    out = io.StringIO()
    write_csv([{"id": "WP-1"}], {}, out)
    assert out.getvalue().splitlines()[1].startswith("WP-1,,,")
