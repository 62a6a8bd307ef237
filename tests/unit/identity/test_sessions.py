"""sessions.py: sign-in page sessions per client address, in SQLite shared between processes.

Timeouts (idle, maximum), replacement by another person's sign-in, sign-out, two stores on
one file (two `--workers` processes) seeing each other's changes, 0600 files, form tokens."""

from __future__ import annotations

import os
import stat

import pytest
from webpolicy.identity.sessions import (
    TOKEN_SECONDS,
    SessionStore,
    SessionStoreError,
    form_token,
    token_ok,
)

IDLE, MAX = 1800.0, 8 * 3600.0


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path, clock) -> SessionStore:
    s = SessionStore(tmp_path / "state" / "sessions.sqlite3", clock=clock)
    yield s
    s.close()


def test_a_started_session_is_found_with_its_person_and_groups(store):
    assert store.get("10.30.0.7", IDLE, MAX) is None
    store.start("10.30.0.7", "ava", frozenset({"cn=learners,dc=test"}))
    found = store.get("10.30.0.7", IDLE, MAX)
    assert (found.user, found.groups) == ("ava", frozenset({"cn=learners,dc=test"}))
    assert store.get("10.30.0.8", IDLE, MAX) is None


def test_an_idle_session_ends_and_one_in_use_does_not(store, clock):
    store.start("10.30.0.7", "ava")
    for _ in range(10):                     # in use every 20 minutes: kept alive
        clock.now += 1200
        assert store.get("10.30.0.7", IDLE, MAX) is not None
    clock.now += IDLE                       # then left alone for the idle time
    assert store.get("10.30.0.7", IDLE, MAX) is None
    clock.now -= IDLE                       # gone from the database, not only hidden
    assert store.get("10.30.0.7", IDLE, MAX) is None


def test_a_session_ends_at_its_maximum_length_however_busy(store, clock):
    store.start("10.30.0.7", "ava")
    while clock.now + 600 < 1_000_000.0 + MAX:
        clock.now += 600
        assert store.get("10.30.0.7", IDLE, MAX) is not None
    clock.now = 1_000_000.0 + MAX
    assert store.get("10.30.0.7", IDLE, MAX) is None


def test_another_sign_in_from_the_address_replaces_the_first_person(store):
    first = store.start("10.30.0.7", "ava", frozenset({"cn=staff,dc=test"}))
    second = store.start("10.30.0.7", "ben")
    found = store.get("10.30.0.7", IDLE, MAX)
    assert (found.user, found.groups, found.id) == ("ben", frozenset(), second.id)
    assert first.id != second.id


def test_sign_out_ends_the_session(store):
    store.start("10.30.0.7", "ava")
    assert store.end("10.30.0.7") is True
    assert store.get("10.30.0.7", IDLE, MAX) is None
    assert store.end("10.30.0.7") is False


def test_two_stores_on_one_file_see_each_others_sessions(tmp_path, clock):
    """Two proxy processes (--workers): a sign-in in one is seen by the other, and so are a
    replacement and a sign-out, once the other's short cache has moved on."""
    path = tmp_path / "sessions.sqlite3"
    one, two = SessionStore(path, clock=clock), SessionStore(path, clock=clock)
    try:
        assert two.get("10.30.0.7", IDLE, MAX) is None
        one.start("10.30.0.7", "ava")
        assert two.cached("10.30.0.7", IDLE, MAX) == (True, None)     # its memory: 2 s
        clock.now += 2.0
        assert two.cached("10.30.0.7", IDLE, MAX) == (False, None)
        assert two.get("10.30.0.7", IDLE, MAX).user == "ava"
        two.start("10.30.0.7", "ben")
        clock.now += 2.0
        assert one.get("10.30.0.7", IDLE, MAX).user == "ben"
        one.end("10.30.0.7")
        clock.now += 2.0
        assert two.get("10.30.0.7", IDLE, MAX) is None
        assert one.key == two.key                 # a form from one posts to the other
    finally:
        one.close()
        two.close()


def test_sessions_outlive_the_process(tmp_path, clock):
    path = tmp_path / "sessions.sqlite3"
    first = SessionStore(path, clock=clock)
    first.start("10.30.0.7", "ava")
    key = first.key
    first.close()
    again = SessionStore(path, clock=clock)
    assert again.get("10.30.0.7", IDLE, MAX).user == "ava"
    assert again.key == key
    again.close()


def test_the_memory_answers_without_the_disk_and_expires_what_it_holds(store, clock):
    assert store.cached("10.30.0.7", IDLE, MAX) == (False, None)
    store.start("10.30.0.7", "ava")
    known, session = store.cached("10.30.0.7", IDLE, MAX)
    assert known and session.user == "ava"
    assert store.cached("10.30.0.7", 1.0, MAX)[1] is not None
    clock.now += 1.0                   # still in memory, but past a 1-second idle time
    assert store.cached("10.30.0.7", 1.0, MAX) == (True, None)


def test_purge_deletes_only_expired_sessions(store, clock):
    store.start("10.30.0.7", "ava")
    clock.now += IDLE + 1
    store.start("10.30.0.8", "ben")
    assert store.purge(IDLE, MAX) == 1
    assert store.get("10.30.0.8", IDLE, MAX).user == "ben"


def test_the_files_are_for_the_proxy_account_only(store):
    store.start("10.30.0.7", "ava")
    for path in store.path.parent.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert {p.name for p in store.path.parent.iterdir()} >= {"sessions.sqlite3",
                                                              "sessions.sqlite3-wal"}
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_a_store_that_cannot_be_opened_says_where(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SessionStoreError, match="file/sessions.sqlite3"):
        SessionStore(blocker / "sessions.sqlite3")


def test_form_tokens_are_bound_to_address_purpose_and_time():
    key, other = os.urandom(32), os.urandom(32)
    token = form_token(key, "10.30.0.7", "sign-in", now=1000)
    assert token_ok(key, "10.30.0.7", "sign-in", token, now=1000 + TOKEN_SECONDS)
    assert not token_ok(key, "10.30.0.7", "sign-in", token, now=1001 + TOKEN_SECONDS)
    assert not token_ok(key, "10.30.0.8", "sign-in", token, now=1000)
    assert not token_ok(key, "10.30.0.7", "sign-out", token, now=1000)
    assert not token_ok(other, "10.30.0.7", "sign-in", token, now=1000)
    assert not token_ok(key, "10.30.0.7", "sign-in", "", now=1000)
    assert not token_ok(key, "10.30.0.7", "sign-in", "999." + token.partition(".")[2],
                        now=1000)
