"""The login cache and the failed-login throttle (identity/logins.py)."""

from __future__ import annotations

from webpolicy.identity.logins import LoginCache, Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_checked_password_is_remembered_until_it_expires():
    clock = Clock()
    cache = LoginCache(60, clock=clock)
    cache.put("alice", "right", "ALICE")
    assert cache.get("alice", "right") == "ALICE"
    clock.now += 59
    assert cache.get("alice", "right") == "ALICE"
    clock.now += 1
    assert cache.get("alice", "right") is None          # expired: the directory is asked again


def test_another_password_is_a_miss_not_an_answer():
    cache = LoginCache(60)
    cache.put("alice", "right", "ALICE")
    assert cache.get("alice", "wrong") is None
    assert cache.get("alice", "right\0") is None
    assert cache.get("bob", "right") is None
    assert cache.get("alice", "right") == "ALICE"       # a miss does not evict


def test_the_password_is_not_kept():
    cache = LoginCache(60)
    cache.put("alice", "hunter2-secret", "ALICE")
    assert "hunter2-secret" not in repr(cache._entries)
    assert all(b"hunter2" not in digest for digest, _v, _e in cache._entries.values())


def test_a_cache_of_zero_minutes_remembers_nothing():
    cache = LoginCache(0)
    cache.put("alice", "right", "ALICE")
    assert cache.get("alice", "right") is None


def test_the_cache_is_bounded_dropping_the_least_recently_used():
    cache = LoginCache(60, size=2)
    cache.put("a", "p", 1)
    cache.put("b", "p", 2)
    assert cache.get("a", "p") == 1                     # a is now the most recently used
    cache.put("c", "p", 3)
    assert cache.get("b", "p") is None
    assert cache.get("a", "p") == 1 and cache.get("c", "p") == 3


def test_two_caches_digest_differently():
    one, two = LoginCache(60), LoginCache(60)
    assert one._digest("alice", "pw") != two._digest("alice", "pw")


def test_failures_throttle_an_address_until_the_window_moves_on():
    clock = Clock()
    throttle = Throttle(limit=3, window=60, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.5")
        clock.now += 1
    assert not throttle.blocked("10.0.0.5")
    throttle.failed("10.0.0.5")
    assert throttle.blocked("10.0.0.5")
    assert not throttle.blocked("10.0.0.6")             # per address
    clock.now += 58                                     # the first failure is 60 s old
    assert not throttle.blocked("10.0.0.5")


def test_the_throttle_forgets_old_failures_and_is_bounded():
    clock = Clock()
    throttle = Throttle(limit=2, window=10, size=3, clock=clock)
    throttle.failed("a")
    clock.now += 11
    throttle.failed("a")
    assert not throttle.blocked("a")                    # one recent failure only
    for address in ("b", "c", "d", "e"):
        throttle.failed(address)
    assert len(throttle._failures) == 3


def test_a_stale_entry_is_found_only_by_stale_and_only_for_a_while():
    from webpolicy.identity.logins import STALE_SECONDS
    now = [0.0]
    cache = LoginCache(60, clock=lambda: now[0])
    cache.put("sam", "right", "answer")
    now[0] = 60.0
    assert cache.get("sam", "right") is None
    assert cache.stale("sam", "right") == "answer"
    assert cache.stale("sam", "wrong") is None
    now[0] = 60.0 + STALE_SECONDS
    assert cache.stale("sam", "right") is None
