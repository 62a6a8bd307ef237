"""The safeguarding log: one JSON line per block, log-only, flagged or fail-closed event.

Records are personal data about young people, so files are 0600 in a 0700 directory and are
deleted after `retention_days`.  Writing never happens on the proxy's event loop: the hook
appends the record to a deque, and a writer thread takes what has gathered every FLUSH_SECONDS
and appends it to the file.  The writer is not woken per record: a thread that wants the GIL
for every blocked request makes the busy event loop hand the GIL over, and wait to get it back,
that often.  A full disk never stops filtering: write errors are counted and reported on
stderr.

Each flush is one append under an exclusive flock, the lock `webpolicy erase` takes while it
replaces a file, and the writer reopens a file that was replaced.  `close()` (SIGTERM, via
mitmproxy's `done`) writes what has gathered; a kill -9 loses what was not yet written: the
records of the last FLUSH_SECONDS to one second (more only if the disk was already failing).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from webpolicy.safeguarding.logstore import log_file_name, log_files, purge_reviews

FLUSH_SECONDS = 0.5


class LogWriter:
    """Records gathered on the event loop, appended as JSON lines to one file per UTC day by a
    writer thread."""

    def __init__(self, directory: Path, retention_days: int,
                 on_error: Callable[[Exception], None] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self.directory = Path(directory)
        self.retention_days = retention_days
        self.on_error = on_error
        self.clock = clock                   # UTC now; tests move it across midnight
        self.write_errors = 0
        self._pending: deque[dict] = deque()  # append and popleft are atomic: no lock needed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webpolicy-audit", daemon=True)
        self._fd: int | None = None
        self._day: dt.date | None = None
        self._lines: list[bytes] = []        # encoded, waiting for the next flush
        self._last_report = 0.0              # stderr reports are rate-limited
        self._unreported = 0
        self._thread.start()

    def write(self, record: dict) -> None:
        """Called on the event loop: never blocks, never wakes the writer."""
        self._pending.append(record)

    def close(self, timeout: float = 10.0) -> None:
        """Write what has gathered and close the file (on shutdown / SIGTERM)."""
        self._stop.set()
        self._thread.join(timeout)

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(FLUSH_SECONDS)
            pending = self._pending
            while pending:                       # only this thread takes from the left
                self._append(pending.popleft())
            if stopping:
                self._flush_and_close()
                return
            self._flush()

    def _append(self, record: dict) -> None:
        try:
            day = self.clock().date()
            if day != self._day:
                self._flush()                    # yesterday's lines go to yesterday's file
                self._day = day
                self._open(day)
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
            self._lines.append(line.encode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - a disk problem must not stop filtering
            self._failed(exc)

    @property
    def path(self) -> Path | None:
        return self.directory / log_file_name(self._day) if self._day else None

    def _open(self, day: dt.date) -> None:
        """Open the day's file (0600 in a 0700 directory) and purge expired days."""
        self._close_fd()
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._fd = os.open(self.directory / log_file_name(day),
                           os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self.purge_expired(day)

    def _flush(self) -> None:
        """Write the waiting lines with one append, under the file lock `erase` also takes.

        If `webpolicy erase` replaced the file since it was opened, the new file is opened
        first, so no record is appended to an unlinked copy.
        """
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            if self._fd is None or self._replaced():
                self._open(self._day or self.clock().date())
            data = b"".join(lines)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if self._replaced():
                    self._open(self._day)
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                while data:
                    data = data[os.write(self._fd, data):]
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, len(lines))
            self._close_fd()                     # reopen (and retry the disk) next time

    def _replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except OSError:
            return True

    def _flush_and_close(self) -> None:
        self._flush()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _failed(self, exc: Exception, records: int = 1) -> None:
        """Count every lost record; tell stderr at most every 10 s, so a full disk does not
        also flood the console."""
        self.write_errors += records
        self._unreported += records
        now = time.monotonic()
        if now - self._last_report >= 10 or self._last_report == 0:
            print(f"webpolicy: cannot write the safeguarding log in {self.directory}: {exc} "
                  f"({self._unreported} record(s) lost)", file=sys.stderr)
            self._last_report, self._unreported = now, 0
        if self.on_error:
            for _ in range(records):
                self.on_error(exc)

    def purge_expired(self, today: dt.date | None = None) -> list[Path]:
        """Delete daily files older than the retention period; returns what was deleted."""
        today = today or self.clock().date()
        cutoff = today - dt.timedelta(days=self.retention_days)
        removed = []
        for day, path in log_files(self.directory):
            if day < cutoff:
                try:
                    path.unlink()
                    removed.append(path)
                except OSError as exc:
                    self._failed(exc, records=0)
        try:
            purge_reviews(self.directory, cutoff)    # notes about purged records go too
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, records=0)
        return removed
