"""Reading the safeguarding log, the reviews store, and the locked atomic rewrite erase uses.
(Erase end to end is in cli/test_report.py; erase racing the writer in test_logwriter.py.)"""

from __future__ import annotations

import datetime as dt
import os

from tests.unit.eventlog import NOW, make, write_log
from webpolicy.safeguarding.logstore import (
    Person,
    ReadStats,
    ReviewStore,
    read_records,
    rewrite_locked,
    same_ip,
)


def test_read_records_opens_only_the_days_asked_for(tmp_path):
    write_log(tmp_path, [make(NOW - dt.timedelta(days=n)) for n in range(5)])
    stats = ReadStats()
    found = list(read_records(tmp_path, since=NOW - dt.timedelta(days=1, hours=1),
                              until=NOW, stats=stats))
    assert stats.files == 2 and len(found) == 2          # the files of 24 and 25 Nov only
    assert len(list(read_records(tmp_path))) == 5


def test_review_store_appends_privately_and_skips_damaged_lines(tmp_path):
    store = ReviewStore(tmp_path)
    record = make(NOW)
    assert store.add([record], "Spoke to learner", "dsl", now=NOW) == 1
    with open(store.path, "a") as handle:
        handle.write('{"id": cut short\n{"no id": 1}\n')
    store.add([record], "Parents told", "dsl")
    assert store.path.stat().st_mode & 0o777 == 0o600
    notes = store.load()[record["id"]]
    assert [n.note for n in notes] == ["Spoke to learner", "Parents told"]
    assert notes[0].time == "2026-11-25T12:00:00Z" and notes[0].record_time == record["time"]
    assert store.add([], "nothing", "dsl") == 0


def test_a_reopened_line_makes_the_record_unreviewed_until_reviewed_again(tmp_path):
    store = ReviewStore(tmp_path)
    record, other = make(NOW), make(NOW)
    other["id"] = "WP-OTHER00001"
    store.add([record, other], "Closed (No concern)", "dsl", now=NOW)
    store.add([record], "Reopened (In progress)", "dsl", reopened=True)
    assert record["id"] not in store.load() and other["id"] in store.load()
    assert '"reopened": true' in store.path.read_text()        # the history stays in the file
    store.add([record], "Closed (Referred)", "dsl")
    assert [n.note for n in store.load()[record["id"]]] == ["Closed (Referred)"]


def test_rewrite_locked_replaces_only_when_something_goes(tmp_path):
    path = tmp_path / "webpolicy-2026-11-25.jsonl"
    path.write_bytes(b"keep 1\ndrop\n\nkeep 2\n")
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    assert rewrite_locked(path, lambda line: True) == (4, 0)
    assert path.stat().st_ino == inode                       # untouched: not even rewritten
    assert rewrite_locked(path, lambda line: not line.startswith(b"drop")) == (3, 1)
    assert path.read_bytes() == b"keep 1\n\nkeep 2\n"
    assert path.stat().st_ino != inode and path.stat().st_mode & 0o777 == 0o600


def test_same_ip_and_person():
    assert same_ip("10.10.4.17", "10.10.4.17") and same_ip("10.10.4.17", "10.10.0.0/16")
    assert same_ip("2001:db8::0001", "2001:db8::1")           # compared as addresses
    assert not same_ip("10.20.1.1", "10.10.0.0/16") and not same_ip(None, "10.10.4.17")
    assert same_ip("not-an-ip", "not-an-ip")
    record = make(NOW, user="Alice", ip="10.10.4.17")
    assert Person(user="alice").matches(record) and Person(client="10.10.4.0/24").matches(record)
    assert Person(ids=(record["id"],)).matches(record)
    assert not Person(user="bob", client="10.20.1.1").matches(record)
