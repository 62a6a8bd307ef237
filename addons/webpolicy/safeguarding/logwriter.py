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

Statutory and critical records must not be in that window: the learner is about to see the
block page, and the DSL must be able to find the reference on it.  `write_durable` (awaitable
on the event loop) and `submit_durable` (a concurrent Future) hand the record over, wake the
writer at once, and resolve only once the line is written and fsync'd (and the directory, for
a new day's file).  The loop goes on serving other flows meanwhile: only the hook that awaits
waits, typically a millisecond or two (README, "Privacy").

No record is ever dropped for its content: records are cleaned (safetext.py) as they are
encoded, so a byte that is not UTF-8 in a User-Agent is escaped, not a reason to lose the
record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from webpolicy.safeguarding.safetext import clean_record

FLUSH_SECONDS = 0.5
DURABLE_TIMEOUT = 5.0        # seconds a hook waits for a durable write before serving anyway


class LogWriteError(OSError):
    """A durable record could not be written and synced (the disk failed); it was counted."""


class LogDirectoryError(OSError):
    """The log directory cannot hold the log: the proxy must not start without one."""


def must_be_durable(record: dict) -> bool:
    """Statutory and critical events: on disk before the block page is sent."""
    return bool(record.get("statutory")) or record.get("severity") == "critical"


def encode_line(record: dict) -> bytes:
    """One JSON line in UTF-8, whatever the record holds: its text cleaned (safetext.py: a
    lone surrogate, a control character or megabytes of User-Agent are escaped and cut, on
    this thread rather than the event loop), so no record is ever lost to its content."""
    return (json.dumps(clean_record(record), ensure_ascii=False, separators=(",", ":"))
            + "\n").encode("utf-8")


def preflight(directory: Path, today: dt.date | None = None) -> None:
    """Make sure the proxy can keep the log, as the proxy's own account, before it serves:
    create the directory (0700), open the day's file for appending (0600) and close it (a
    file this made is removed again: an empty day is no file, and reports and the health
    check's "nothing logged" see none).  Raises LogDirectoryError saying what to do; a proxy
    that filters without a log would lose every record."""
    directory = Path(directory)
    today = today or dt.datetime.now(dt.UTC).date()
    path = directory / log_file_name(today)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        existed = path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)
        if not existed and path.stat().st_size == 0:
            path.unlink()
    except OSError as exc:
        raise LogDirectoryError(
            exc.errno, f"the safeguarding log directory {directory} cannot be used "
            f"({exc.strerror or exc}): create it owned by this account "
            f"(uid {os.geteuid()}) with mode 0700, or set logging.directory to one that is"
        ) from exc


class _Durable:
    """A record whose writer must fsync it and then resolve `future`."""

    __slots__ = ("record", "future")

    def __init__(self, record: dict) -> None:
        self.record = record
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()


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
        self._pending: deque[dict | _Durable] = deque()  # append/popleft are atomic: no lock
        self._stop = threading.Event()
        self._wake = threading.Event()       # set by close() and by durable records only
        self._thread = threading.Thread(target=self._run, name="webpolicy-audit", daemon=True)
        self._fd: int | None = None
        self._day: dt.date | None = None
        self._lines: list[bytes] = []        # encoded, waiting for the next flush
        self._last_report = 0.0              # stderr reports are rate-limited
        self._unreported = 0
        self._dir_synced = True              # False after creating a file: fsync the directory
        self._must_sync = False              # a durable record waits in _lines
        self._thread.start()

    def write(self, record: dict) -> None:
        """Called on the event loop: never blocks, never wakes the writer."""
        self._pending.append(record)

    def submit_durable(self, record: dict) -> concurrent.futures.Future[None]:
        """Called on the event loop: never blocks.  The Future resolves (from the writer
        thread) once the record and everything handed over before it are written and
        fsync'd, or fails with LogWriteError if the disk failed."""
        item = _Durable(record)
        if self._stop.is_set():
            item.future.set_exception(LogWriteError("the safeguarding log is closed"))
            return item.future
        self._pending.append(item)
        self._wake.set()
        return item.future

    async def write_durable(self, record: dict, timeout: float = DURABLE_TIMEOUT) -> None:
        """Await from an async hook: returns once the record is on disk (fsync'd); the event
        loop serves other flows meanwhile.  Raises LogWriteError if the disk failed and
        TimeoutError after `timeout` seconds (the record stays queued and is still written)."""
        future = self.submit_durable(record)
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what has gathered and close the file (on shutdown / SIGTERM).  A record
        handed over while the writer was finishing is written here, on the caller's thread,
        so neither it nor a hook waiting for it is left behind."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive() and self._pending:
            self._write_batch()
            self._close_fd()

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._write_batch()
            except Exception as exc:  # noqa: BLE001 - the writer thread must never die
                self._failed(exc, records=0)
            if stopping:
                self._close_fd()
                return

    def _write_batch(self) -> None:
        """Take what has gathered, write it, and sync it if a durable record is among it."""
        waiting: list[concurrent.futures.Future[None]] = []
        errors_before = self.write_errors
        pending = self._pending
        while pending:                           # only this thread takes from the left
            item = pending.popleft()
            if isinstance(item, _Durable):
                self._append(item.record)
                self._must_sync = True           # after _append: a midnight flush resets it
                if item.future.set_running_or_notify_cancel():
                    waiting.append(item.future)
            else:
                self._append(item)
        self._flush()
        failed = self.write_errors != errors_before
        for future in waiting:
            if failed:
                future.set_exception(LogWriteError(
                    f"the safeguarding log in {self.directory} could not be written"))
            else:
                future.set_result(None)

    def _append(self, record: dict) -> None:
        try:
            line = encode_line(record)
            day = self.clock().date()
            if day != self._day:
                self._flush()                    # yesterday's lines go to yesterday's file
                self._day = day
                self._open(day)
            self._lines.append(line)
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
        path = self.directory / log_file_name(day)
        self._dir_synced = self._dir_synced and path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self.purge_expired(day)

    def _flush(self) -> None:
        """Write the waiting lines with one append, under the file lock `erase` also takes;
        when a durable record is among them, fsync the file (and the directory if the file
        was created) before the lock is released, so it survives a crash or a power cut.

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
                if self._must_sync:
                    self._sync()
                    self._must_sync = False
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, len(lines))
            self._close_fd()                     # reopen (and retry the disk) next time

    def _sync(self) -> None:
        os.fsync(self._fd)
        if not self._dir_synced:
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._dir_synced = True

    def _replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except OSError:
            return True

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
