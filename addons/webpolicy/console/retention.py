"""Retention and erasure in the console's database, as in the log, even when nobody looks.

Ingest already drops what the log lost (a daily file deleted by retention, a file rewritten
by `webpolicy erase`), but ingest runs on page requests: an idle console would keep expired or
erased records in its database for as long as nobody opened a page.  So the console process
runs `Upkeep` on a thread of its own every few minutes, and `webpolicy erase` brings the
database in line at once (cli/console.py `sync_console`).

Retention is the policy's `logging.retention_days`, with the writer's rule (logwriter.py):
a day's records go once the day is older than today minus retention_days, whether or not
the proxy has deleted the file yet (it does so only when it next writes).  The access log
names learners ("user bob"), so its entries expire with the same period.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

from django.db import close_old_connections, connections

from webpolicy.console.ingest import ingest_if_due
from webpolicy.console.models import AccessLog, Event
from webpolicy.safeguarding.logstore import FILE_PREFIX, FILE_SUFFIX

log = logging.getLogger(__name__)
UPKEEP_SECONDS = 300.0


def _file_day(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name.removeprefix(FILE_PREFIX).removesuffix(FILE_SUFFIX))
    except ValueError:
        return None


def purge_expired(retention_days: int, today: dt.date | None = None) -> tuple[int, int]:
    """Delete the index's records of days past retention (with their cases, notes and
    answers) and older access-log entries.  Returns (events, access-log entries) removed."""
    today = today or dt.datetime.now(dt.UTC).date()
    cutoff = today - dt.timedelta(days=retention_days)
    names = Event.objects.values_list("source_file", flat=True).distinct()
    expired = [name for name in names if (day := _file_day(name)) is not None and day < cutoff]
    events = 0
    if expired:
        events = Event.objects.filter(source_file__in=expired).delete()[1].get("console.Event", 0)
    start = dt.datetime.combine(cutoff, dt.time(), tzinfo=dt.UTC)
    accesses = AccessLog.objects.filter(time__lt=start).delete()[0]
    return events, accesses


def upkeep(log_dirs: list[Path], retention_days: int | None) -> None:
    """One round: follow the logs (ingest), then apply retention (one period for every
    gateway: the policy's, so a day expires in every directory at once)."""
    ingest_if_due(log_dirs, interval=0.0)
    if retention_days:
        purge_expired(retention_days)


class Upkeep:
    """`upkeep` every UPKEEP_SECONDS on a daemon thread of the console process."""

    def __init__(self, log_dirs: list[Path], retention_days: int | None,
                 every: float = UPKEEP_SECONDS) -> None:
        self.log_dirs, self.retention_days, self.every = list(log_dirs), retention_days, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webpolicy-console-upkeep",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                close_old_connections()
                upkeep(self.log_dirs, self.retention_days)
            except Exception:            # the thread must outlive a bad round
                log.exception("console upkeep (ingest, retention) failed")
            finally:
                connections.close_all()
