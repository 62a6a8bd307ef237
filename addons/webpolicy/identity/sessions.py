"""Sign-in page sessions: which person a client address is, for a while (issue #17).

A client on a network that must sign in (policy.yaml's `sign_in:`) signs in on a page the
gateway serves (proxy/signinpage.py); from then on its address is that person's until the
session ends: idle for `idle` seconds, older than `max` seconds, signed out, or replaced
when another person signs in from the same address (one person per address at a time).

The store is a small SQLite database in WAL mode, so several proxy processes (`--workers`)
share it: a session started in one is seen by all.  The file and its WAL/SHM companions are
0600 (who used which address is personal data).  Every method here blocks on the disk: the
proxy calls them in a worker thread, never on its event loop, and answers most lookups from
`cached`, a short in-process memory (CACHE_SECONDS), so a sign-out or a replacement made in
another process is seen within that time; `cached` never waits on the disk (its lock is not
held over database calls, which may wait up to BUSY_MS on another process's write).  `last seen` is written at most every TOUCH_SECONDS
per address, not on every request.

The store also keeps the random key the sign-in form's tokens are made with (`key`), shared
by every process, so a form served by one worker can be posted to another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CACHE_SECONDS = 2.0          # how stale an in-process answer may be (other processes' changes)
TOUCH_SECONDS = 30.0         # how often `seen` is written for an address in use
CACHE_SIZE = 100_000
BUSY_MS = 5000               # waiting for another process's write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    address TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    user TEXT NOT NULL,
    groups TEXT NOT NULL,
    started REAL NOT NULL,
    seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS secret (one INTEGER PRIMARY KEY CHECK (one = 1), key BLOB NOT NULL);
"""


TOKEN_SECONDS = 3600.0       # how long a sign-in form may be left open before posting


def form_token(key: bytes, address: str, purpose: str, now: float | None = None) -> str:
    """A token for one form (purpose: 'sign-in', 'sign-out') bound to the client address and
    the time it was made: a page elsewhere cannot post the gateway's form for the client
    (it cannot read the token), nor can a token be carried to another address."""
    issued = str(int(time.time() if now is None else now))
    mac = hmac.new(key, f"{purpose}|{address}|{issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def token_ok(key: bytes, address: str, purpose: str, token: str,
             now: float | None = None) -> bool:
    issued, _, mac = token.partition(".")
    if not issued.isdigit() or not mac:
        return False
    now = time.time() if now is None else now
    if not 0 <= now - int(issued) <= TOKEN_SECONDS:
        return False
    expected = form_token(key, address, purpose, int(issued)).partition(".")[2]
    return hmac.compare_digest(expected, mac)


class SessionStoreError(Exception):
    """The session database cannot be opened or used."""


@dataclass(frozen=True)
class Session:
    address: str
    id: str                    # random, new per sign-in: a replaced session is another id
    user: str
    groups: frozenset[str]
    started: float             # wall clock (time.time): shared between processes
    seen: float

    def expired(self, now: float, idle: float, longest: float) -> bool:
        return now - self.seen >= idle or now - self.started >= longest


class SessionStore:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 cache_seconds: float = CACHE_SECONDS) -> None:
        self.path = Path(path)
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()          # the cache only: never held over the disk
        self._db_lock = threading.Lock()       # the connection: one user at a time
        self._cache: dict[str, tuple[Session | None, float]] = {}   # address -> (answer, when)
        try:
            self._db = self._open()
            self.key = self._key()
        except (sqlite3.Error, OSError) as exc:
            raise SessionStoreError(f"{self.path}: cannot open the sign-in session store: "
                                    f"{exc}") from None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it: SQLite gives -wal and -shm the same mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None,
                             check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        return db

    def _key(self) -> bytes:
        """The form-token key, made by whichever process opens the store first."""
        with self._db_lock:
            self._db.execute("INSERT OR IGNORE INTO secret (one, key) VALUES (1, ?)",
                             (secrets.token_bytes(32),))
            return bytes(self._db.execute("SELECT key FROM secret").fetchone()[0])

    # -- reading ----------------------------------------------------------------------------

    def cached(self, address: str, idle: float, longest: float) -> tuple[bool, Session | None]:
        """(known, session) from memory only, never the disk: known is False when the
        database must be asked (`get`, in a worker thread)."""
        now = self._clock()
        with self._lock:
            entry = self._cache.get(address)
        if entry is None or now - entry[1] >= self._cache_seconds:
            return False, None
        session = entry[0]
        if session is not None and session.expired(now, idle, longest):
            return True, None
        return True, session

    def get(self, address: str, idle: float, longest: float) -> Session | None:
        """The live session of this address (its `seen` moved on when due); None if none.
        An expired one is deleted."""
        now = self._clock()
        with self._db_lock:
            session = self._read(address)
            if session is not None and session.expired(now, idle, longest):
                self._db.execute("DELETE FROM sessions WHERE address = ? AND id = ?",
                                 (address, session.id))
                session = None
            if session is not None and now - session.seen >= min(TOUCH_SECONDS, idle / 4):
                self._db.execute("UPDATE sessions SET seen = ? WHERE address = ? AND id = ?",
                                 (now, address, session.id))
                session = Session(session.address, session.id, session.user, session.groups,
                                  session.started, now)
        self._remember(address, session, now)
        return session

    def _read(self, address: str) -> Session | None:
        row = self._db.execute("SELECT id, user, groups, started, seen FROM sessions "
                               "WHERE address = ?", (address,)).fetchone()
        if row is None:
            return None
        return Session(address, row[0], row[1], frozenset(json.loads(row[2])), row[3], row[4])

    def _remember(self, address: str, session: Session | None, now: float) -> None:
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:       # a flood of addresses must not grow memory
                self._cache.clear()
            self._cache[address] = (session, now)

    # -- writing ----------------------------------------------------------------------------

    def start(self, address: str, user: str, groups: frozenset[str] = frozenset()) -> Session:
        """This address is now `user`'s: a session of anyone else here ends."""
        now = self._clock()
        session = Session(address, secrets.token_urlsafe(16), user, frozenset(groups), now, now)
        with self._db_lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sessions (address, id, user, groups, started, seen) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (address, session.id, user, json.dumps(sorted(session.groups)), now, now))
        self._remember(address, session, now)
        return session

    def end(self, address: str) -> bool:
        """Sign out whoever this address is; whether there was a session."""
        with self._db_lock:
            ended = self._db.execute("DELETE FROM sessions WHERE address = ?",
                                     (address,)).rowcount > 0
        self._remember(address, None, self._clock())
        return ended

    def purge(self, idle: float, longest: float) -> int:
        """Delete every expired session (a sign-in does it now and then); how many."""
        now = self._clock()
        with self._db_lock:
            return self._db.execute("DELETE FROM sessions WHERE seen <= ? OR started <= ?",
                                    (now - idle, now - longest)).rowcount

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
