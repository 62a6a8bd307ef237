"""The policy history: append-only, one entry per real change, with who, a diff and list sizes."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from webpolicy.policy import history


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text('version: "1"\nallow: []\n')
    return path


def entries(policy: Path) -> list[history.Change]:
    return list(history.read(policy))


def test_first_accepted_entry_has_the_whole_file_as_its_diff(policy):
    change = history.record(policy, "accepted", "itadmin", "start", version="1",
                            lists={"adult": [None, 12]})
    assert change is not None
    (stored,) = entries(policy)
    assert stored == change
    assert stored.sha256 == history.digest(policy.read_bytes())
    assert '+version: "1"' in stored.diff and stored.lists == {"adult": [None, 12]}
    assert stat.S_IMODE(history.history_path(policy).stat().st_mode) == 0o600


def test_the_same_file_is_recorded_once(policy):
    assert history.record(policy, "applied", "itadmin", "apply") is not None
    assert history.record(policy, "accepted", "root", "reload") is None     # the proxy, after
    assert len(entries(policy)) == 1


def test_a_change_records_its_diff_against_the_last_accepted(policy):
    history.record(policy, "accepted", "itadmin", "start")
    policy.write_text('version: "2"\nallow: [example.org]\n')
    change = history.record(policy, "accepted", "itadmin", "reload", version="2")
    assert '-version: "1"' in change.diff and '+version: "2"' in change.diff
    assert "+allow: [example.org]" in change.diff
    assert [c.version for c in entries(policy)] == ["", "2"]


def test_refused_changes_are_recorded_once_each_and_do_not_become_the_base(policy):
    history.record(policy, "accepted", "itadmin", "start")
    good = policy.read_bytes()
    policy.write_text("version: [broken\n")
    first = history.record(policy, "refused", "itadmin", "reload", problems=["policy.yaml:1: x"])
    assert first is not None and first.problems == ["policy.yaml:1: x"]
    assert history.record(policy, "refused", "itadmin", "reload") is None   # the same edit
    policy.write_bytes(good + b"deny: []\n")
    accepted = history.record(policy, "accepted", "itadmin", "reload")
    assert "+deny: []" in accepted.diff and "broken" not in accepted.diff
    assert [c.event for c in entries(policy)] == ["accepted", "refused", "accepted"]


def test_list_changes_only_names_lists_that_changed():
    assert history.list_changes({"a": 1, "b": 2, "gone": 3}, {"a": 1, "b": 5, "new": 4}) == {
        "b": [2, 5], "gone": [3, None], "new": [None, 4]}
    assert history.list_changes(None, None) == {}


def test_since_and_unreadable_lines(policy):
    history.record(policy, "accepted", "itadmin", "start")
    with history.history_path(policy).open("a") as handle:
        handle.write("not json\n")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert len(entries(policy)) == 1
    assert list(history.read(policy, since=later)) == []


def test_a_history_that_cannot_be_written_is_a_history_error(policy):
    history.history_path(policy).mkdir()          # even root cannot append to a directory
    with pytest.raises(history.HistoryError, match="cannot write"):
        history.record(policy, "accepted", "itadmin", "start")


def test_an_unknown_event_is_a_programming_error(policy):
    with pytest.raises(ValueError):
        history.record(policy, "deleted", "x", "apply")


def test_entries_are_one_json_object_per_line(policy):
    history.record(policy, "accepted", "itadmin", "start")
    (line,) = history.history_path(policy).read_text().splitlines()
    assert set(json.loads(line)) == {"time", "event", "by", "how", "policy", "sha256", "version",
                                     "diff", "lists", "problems"}


def _record_many(path: str, versions: int, barrier) -> None:
    """One worker of `webpolicy run --workers N`: records each version the moment the others
    do, as workers reloading the same edit do."""
    policy = Path(path)
    for n in range(versions):
        barrier.wait(30)
        history.record(policy, "accepted", "admin", "reload", version=str(n),
                       text=f"version: '{n}'\n".encode())


def test_workers_recording_the_same_change_at_once_record_it_once(policy):
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    workers = [context.Process(target=_record_many, args=(str(policy), 20, barrier))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert [change.version for change in entries(policy)] == [str(n) for n in range(20)]
