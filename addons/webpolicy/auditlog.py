"""The safeguarding log: one JSON line per block, log-only, flagged or fail-closed event.

Records are personal data about young people, so files are 0600 in a 0700 directory and are
deleted after `retention_days`.  Writing never happens on the proxy's event loop: the hook puts
the record on a queue and a writer thread appends it, flushing at least once a second.  A full
disk never stops filtering: write errors are counted and reported on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

SCHEMA_VERSION = 1
FILE_PREFIX = "webpolicy-"
FILE_SUFFIX = ".jsonl"
FLUSH_SECONDS = 0.5
_FILE_DATE = re.compile(rf"^{FILE_PREFIX}(\d{{4}}-\d{{2}}-\d{{2}}){re.escape(FILE_SUFFIX)}$")
_STOP = object()


def log_file_name(day: dt.date) -> str:
    return f"{FILE_PREFIX}{day.isoformat()}{FILE_SUFFIX}"


def log_files(directory: Path) -> list[tuple[dt.date, Path]]:
    """The daily log files in a directory, oldest first."""
    found = []
    if not directory.is_dir():
        return found
    for path in directory.iterdir():
        m = _FILE_DATE.match(path.name)
        if m:
            found.append((dt.date.fromisoformat(m.group(1)), path))
    return sorted(found)


class AuditLog:
    """Queue + writer thread appending JSON lines to one file per UTC day."""

    def __init__(self, directory: Path, retention_days: int,
                 on_error: Callable[[Exception], None] | None = None):
        self.directory = Path(directory)
        self.retention_days = retention_days
        self.on_error = on_error
        self.write_errors = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="webpolicy-audit", daemon=True)
        self._file = None
        self._day: dt.date | None = None
        self._thread.start()

    def write(self, record: dict) -> None:
        """Called on the event loop: never blocks."""
        self._queue.put(record)

    def close(self, timeout: float = 10.0) -> None:
        """Drain the queue and close the file (on shutdown / SIGTERM)."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=FLUSH_SECONDS)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush_and_close()
                return
            if item is not None:
                self._append(item)
            if time.monotonic() - last_flush >= FLUSH_SECONDS or item is None:
                self._flush()
                last_flush = time.monotonic()

    def _append(self, record: dict) -> None:
        try:
            handle = self._handle_for(dt.datetime.now(dt.UTC).date())
            handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        except Exception as exc:  # noqa: BLE001 - a disk problem must not stop filtering
            self._failed(exc)

    def _handle_for(self, day: dt.date):
        if self._file is None or day != self._day:
            self._flush_and_close()
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            path = self.directory / log_file_name(day)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(fd, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
            self._day = day
            self.purge_expired()
        return self._file

    def _flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)

    def _flush_and_close(self) -> None:
        if self._file is not None:
            self._flush()
            try:
                self._file.close()
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
            self._file = None

    def _failed(self, exc: Exception) -> None:
        self.write_errors += 1
        print(f"webpolicy: cannot write the safeguarding log in {self.directory}: {exc}",
              file=sys.stderr)
        if self.on_error:
            self.on_error(exc)

    def purge_expired(self, today: dt.date | None = None) -> list[Path]:
        """Delete daily files older than the retention period; returns what was deleted."""
        today = today or dt.datetime.now(dt.UTC).date()
        cutoff = today - dt.timedelta(days=self.retention_days)
        removed = []
        for day, path in log_files(self.directory):
            if day < cutoff:
                try:
                    path.unlink()
                    removed.append(path)
                except OSError as exc:
                    self._failed(exc)
        return removed
