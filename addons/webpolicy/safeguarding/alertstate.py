"""What the alert rules remember between records: recent blocks per person (repeat attempts)
and when each person and category last raised an alert (one alert per window).

One process keeps it in memory (MemoryState).  The workers of `webpolicy run --workers N`
share it (SharedState): a learner's connections are spread over the workers by the kernel, so
five blocked attempts may be five different workers' records, and an alert one worker sent
must suppress the same alert from another.  SharedState is a small SQLite database (WAL, one
short transaction per record) in the safeguarding log directory, since it holds who was
blocked: 0600 in that 0700 directory, and it keeps nothing older than the window.  Only the
alert thread (alerts.py) touches it, never the event loop.  If the database cannot be used
(a full disk, a lock held too long), the record is decided by this process's memory instead
and the problem reported: alerting never stops for want of the shared count.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections import deque
from pathlib import Path
from typing import Protocol

FILE_NAME = ".alert-state.sqlite"
BUSY_TIMEOUT = 5.0            # seconds to wait for another worker's transaction
PURGE_EVERY = 500             # records between deletions of rows older than the window
MEMORY_LIMIT = 10000          # people remembered in memory before old windows are dropped


class RepeatState(Protocol):
    def block(self, who: str, now: float, window: float, threshold: int) -> int:
        """Count one blocked attempt; the number within `window` if it reached `threshold`
        (and the count starts again), else 0."""
        ...

    def claim(self, who: str, category: str, now: float, window: float) -> bool:
        """True (and remember `now`) unless an alert for who and category was sent within
        `window`."""
        ...


class MemoryState:
    """One process's memory: the default."""

    def __init__(self) -> None:
        self._blocks: dict[str, deque[float]] = {}
        self._last_sent: dict[tuple[str, str], float] = {}

    def block(self, who: str, now: float, window: float, threshold: int) -> int:
        times = self._blocks.setdefault(who, deque())
        times.append(now)
        while times and now - times[0] > window:
            times.popleft()
        if len(times) >= threshold:
            count = len(times)
            times.clear()
            return count
        return 0

    def claim(self, who: str, category: str, now: float, window: float) -> bool:
        last = self._last_sent.get((who, category))
        if last is not None and now - last < window:
            return False
        self._last_sent[(who, category)] = now
        self._forget_old(now, window)
        return True

    def _forget_old(self, now: float, window: float) -> None:
        """Keep the state bounded: drop windows that have passed."""
        if len(self._last_sent) > MEMORY_LIMIT:
            self._last_sent = {k: t for k, t in self._last_sent.items() if now - t < window}
        if len(self._blocks) > MEMORY_LIMIT:
            self._blocks = {k: q for k, q in self._blocks.items() if q and now - q[-1] < window}


class SharedState:
    """The workers' shared memory of blocks and alerts, in SQLite at `path`.  `now` must be
    wall-clock time (time.time()): the database outlives a process, and a reboot."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._fallback = MemoryState()
        self._since_purge = 0
        self._last_report = 0.0

    def block(self, who: str, now: float, window: float, threshold: int) -> int:
        def counted(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM blocks WHERE who = ? AND at < ?", (who, now - window))
            db.execute("INSERT INTO blocks (who, at) VALUES (?, ?)", (who, now))
            (count,) = db.execute("SELECT COUNT(*) FROM blocks WHERE who = ?", (who,)).fetchone()
            if count < threshold:
                return 0
            db.execute("DELETE FROM blocks WHERE who = ?", (who,))
            return count
        return self._transaction(counted, lambda: self._fallback.block(who, now, window,
                                                                       threshold), now, window)

    def claim(self, who: str, category: str, now: float, window: float) -> bool:
        def claimed(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT at FROM sent WHERE who = ? AND category = ?",
                             (who, category)).fetchone()
            if row is not None and now - row[0] < window:
                return False
            db.execute("INSERT OR REPLACE INTO sent (who, category, at) VALUES (?, ?, ?)",
                       (who, category, now))
            return True
        return self._transaction(claimed, lambda: self._fallback.claim(who, category, now,
                                                                       window), now, window)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _transaction(self, work, fallback, now: float, window: float):
        try:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")             # one writer at a time: counts add up
            try:
                result = work(db)
                self._purge(db, now, window)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return result
        except (sqlite3.Error, OSError) as exc:
            self._report(exc)
            self.close()                              # open again next time
            return fallback()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)   # 0600 before SQLite
            os.close(fd)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")   # a power cut may forget a count: fine
            db.execute("CREATE TABLE IF NOT EXISTS blocks (who TEXT NOT NULL, at REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS blocks_who ON blocks (who)")
            db.execute("CREATE TABLE IF NOT EXISTS sent (who TEXT NOT NULL, category TEXT NOT "
                       "NULL, at REAL NOT NULL, PRIMARY KEY (who, category))")
            for suffix in ("-wal", "-shm"):           # SQLite makes them like the database
                try:
                    os.chmod(f"{self.path}{suffix}", 0o600)
                except FileNotFoundError:
                    pass
            self._db = db
        return self._db

    def _purge(self, db: sqlite3.Connection, now: float, window: float) -> None:
        self._since_purge += 1
        if self._since_purge >= PURGE_EVERY:
            self._since_purge = 0
            db.execute("DELETE FROM blocks WHERE at < ?", (now - window,))
            db.execute("DELETE FROM sent WHERE at < ?", (now - window,))

    def _report(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_report >= 10 or self._last_report == 0:
            print(f"webpolicy: the workers' shared alert state {self.path} cannot be used "
                  f"({exc}); this worker counts repeat attempts alone meanwhile",
                  file=sys.stderr)
            self._last_report = now
