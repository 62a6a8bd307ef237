"""What the proxy remembers of logins: checked passwords for a while, failures per address.

The directory is asked once per person per `directory.cache_minutes`, not once per request:
plain HTTP repeats the login on every request, and a directory round trip (or a bcrypt-style
check) per request is what made mitmproxy's own proxyauth manage 18 requests a second.  The
cache keeps a keyed digest of the password (HMAC-SHA256 under a key made at start and never
stored), never the password, so a memory dump does not hand out passwords.

Failures are counted per client address: past `limit` failures in `window` seconds, that
address is refused without asking anyone (cache or directory) until the window has moved on,
so neither the directory nor the cache can be used to guess passwords at speed.

While the directory cannot be asked, an entry past its period is still found by `stale` for
STALE_SECONDS more: signin.py lets a person whose profile says on_error: allow (staff) keep
working on a password the directory accepted before; learners fail closed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

Clock = Callable[[], float]
# How long after its cache period a checked password may still be used while the directory
# is down, by profiles with on_error: allow only (a stale answer: the person may have left).
STALE_SECONDS = 12 * 3600.0
T = TypeVar("T")


class LoginCache(Generic[T]):
    """user -> (keyed digest of the password, what the directory said, expiry)."""

    def __init__(self, seconds: float, size: int = 50_000, clock: Clock = time.monotonic):
        self.seconds = seconds
        self.size = size
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, tuple[bytes, T, float]] = OrderedDict()

    def _digest(self, user: str, password: str) -> bytes:
        text = f"{user}\0{password}".encode("utf-8", "surrogateescape")
        return hmac.new(self._key, text, hashlib.sha256).digest()

    def get(self, user: str, password: str) -> T | None:
        """What was found for this user with this password, while it is fresh; else None (a
        different password is a miss, never a refusal: it may be a new password)."""
        return self._lookup(user, password, 0.0)

    def stale(self, user: str, password: str) -> T | None:
        """What was found for this user with this password up to STALE_SECONDS after it
        stopped being fresh: only for when the directory cannot be asked (signin.py lets a
        profile with on_error: allow keep working on it; every other profile fails closed)."""
        return self._lookup(user, password, STALE_SECONDS)

    def _lookup(self, user: str, password: str, grace: float) -> T | None:
        entry = self._entries.get(user)
        if entry is None:
            return None
        digest, value, expires = entry
        now = self._clock()
        if now >= expires + STALE_SECONDS:
            self._entries.pop(user, None)
            return None
        if now >= expires + grace:
            return None
        if not hmac.compare_digest(digest, self._digest(user, password)):
            return None
        self._entries.move_to_end(user)
        return value

    def put(self, user: str, password: str, value: T) -> None:
        if self.seconds <= 0:
            return
        self._entries[user] = (self._digest(user, password), value, self._clock() + self.seconds)
        self._entries.move_to_end(user)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, user: str) -> None:
        self._entries.pop(user, None)

    def clear(self) -> None:
        self._entries.clear()


class Throttle:
    """Failed logins per client address: at `limit` failures within `window` seconds, the
    address is held back until the oldest of them is older than the window."""

    def __init__(self, limit: int = 10, window: float = 60.0, size: int = 100_000,
                 clock: Clock = time.monotonic):
        self.limit = limit
        self.window = window
        self.size = size
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def blocked(self, address: str) -> bool:
        times = self._recent(address, self._clock())
        return times is not None and len(times) >= self.limit

    def failed(self, address: str) -> None:
        now = self._clock()
        times = self._recent(address, now)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.limit)
        times.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > self.size:     # a flood of addresses must not grow memory
            self._failures.popitem(last=False)
