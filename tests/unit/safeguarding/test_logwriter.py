"""The log writer: daily files, 0600/0700, on disk within a second, retention, write errors
counted and never raised, a drain on SIGTERM, and erase-safe appends."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from tests.unit.helpers import ADDONS
from webpolicy.safeguarding.logstore import Person, ReviewStore, erase, log_file_name, log_files
from webpolicy.safeguarding.logwriter import LogWriter

DAY = dt.datetime(2026, 11, 25, 23, 59, 59, tzinfo=dt.UTC)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def wait_for(condition, timeout=5.0) -> float | None:
    """Seconds until condition() held, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.01)
    return None


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_record_on_disk_within_a_second_with_private_permissions(tmp_path):
    directory = tmp_path / "logs"
    log = LogWriter(directory, 30, clock=Clock(DAY))
    try:
        log.write({"id": "WP-1", "user": "zoë"})
        path = directory / "webpolicy-2026-11-25.jsonl"
        took = wait_for(lambda: path.exists() and path.read_text())
        assert took is not None and took < 1.0
        assert lines(path) == [{"id": "WP-1", "user": "zoë"}]
        assert directory.stat().st_mode & 0o777 == 0o700
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        log.close()


def test_existing_directory_and_file_are_tightened(tmp_path):
    directory = tmp_path / "logs"
    directory.mkdir(mode=0o755)
    path = directory / log_file_name(DAY.date())
    path.write_text("")
    path.chmod(0o644)
    log = LogWriter(directory, 30, clock=Clock(DAY))
    log.write({"id": "WP-1"})
    log.close()
    assert directory.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600


def test_one_file_per_utc_day(tmp_path):
    clock = Clock(DAY)
    log = LogWriter(tmp_path, 30, clock=clock)
    log.write({"id": "WP-1"})
    assert wait_for(lambda: (tmp_path / "webpolicy-2026-11-25.jsonl").exists())
    clock.now = DAY + dt.timedelta(seconds=2)             # past midnight UTC
    log.write({"id": "WP-2"})
    log.close()
    assert [d.isoformat() for d, _ in log_files(tmp_path)] == ["2026-11-25", "2026-11-26"]
    assert lines(tmp_path / "webpolicy-2026-11-26.jsonl") == [{"id": "WP-2"}]


def test_close_drains_everything_queued(tmp_path):
    log = LogWriter(tmp_path, 30, clock=Clock(DAY))
    for i in range(5000):
        log.write({"id": f"WP-{i}"})
    log.close()
    assert len(lines(tmp_path / log_file_name(DAY.date()))) == 5000


def test_retention_deletes_older_files_and_their_reviews(tmp_path):
    today = DAY.date()
    for age in (0, 1, 30, 31, 200):
        (tmp_path / log_file_name(today - dt.timedelta(days=age))).write_text("{}\n")
    (tmp_path / "notes.txt").write_text("not a log file")
    old_time = f"{today - dt.timedelta(days=40)}T10:00:00.000Z"
    ReviewStore(tmp_path).add([{"id": "WP-OLD", "time": old_time},
                               {"id": "WP-NEW", "time": f"{today}T10:00:00.000Z"}], "seen", "dsl")
    log = LogWriter(tmp_path, 30, clock=Clock(DAY))
    log.write({"id": "WP-1"})                              # opening the day's file purges
    log.close()
    ages = sorted((today - d).days for d, _ in log_files(tmp_path))
    assert ages == [0, 1, 30]
    assert (tmp_path / "notes.txt").exists()
    assert set(ReviewStore(tmp_path).load()) == {"WP-NEW"}


def test_write_errors_are_counted_reported_and_never_raised(tmp_path, capfd):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be")
    errors = []
    log = LogWriter(blocker / "logs", 30, on_error=errors.append, clock=Clock(DAY))
    for i in range(3):
        log.write({"id": f"WP-{i}"})                       # never raises
    assert wait_for(lambda: log.write_errors == 3)
    assert len(errors) == 3
    # The disk comes back: logging resumes without a restart.
    blocker.unlink()
    log.write({"id": "WP-back"})
    log.close()
    assert lines(blocker / "logs" / log_file_name(DAY.date())) == [{"id": "WP-back"}]
    err = capfd.readouterr().err
    assert "cannot write the safeguarding log" in err
    assert err.count("cannot write") == 1                 # rate-limited, not once per record


def test_a_file_replaced_by_erase_is_reopened_not_written_to_the_unlinked_copy(tmp_path):
    log = LogWriter(tmp_path, 30, clock=Clock(DAY))
    path = tmp_path / log_file_name(DAY.date())
    try:
        log.write({"id": "WP-A", "user": "alice"})
        log.write({"id": "WP-B", "user": "bob"})
        assert wait_for(lambda: path.exists() and len(lines(path)) == 2)
        inode = path.stat().st_ino
        removed, _ = erase(tmp_path, Person(user="alice"))
        assert removed == {path: 1} and path.stat().st_ino != inode
        log.write({"id": "WP-C", "user": "carol"})
        assert wait_for(lambda: len(lines(path)) == 2)
        assert [r["id"] for r in lines(path)] == ["WP-B", "WP-C"]
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        log.close()


def test_erase_while_writing_loses_nothing_of_anyone_else(tmp_path):
    log = LogWriter(tmp_path, 30, clock=Clock(DAY))
    stop = threading.Event()
    written = []

    def writer():
        i = 0
        while not stop.is_set():
            user = "alice" if i % 3 == 0 else "bob"
            log.write({"id": f"WP-{i}", "user": user})
            written.append((f"WP-{i}", user))
            i += 1
            time.sleep(0.0005)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)
    for _ in range(5):
        erase(tmp_path, Person(user="alice"))
        time.sleep(0.1)
    stop.set()
    thread.join()
    log.close()
    on_disk = [r["id"] for r in lines(tmp_path / log_file_name(DAY.date()))]
    bobs = [i for i, user in written if user == "bob"]
    assert set(bobs) <= set(on_disk)                     # nobody else's record was lost
    assert len(on_disk) == len(set(on_disk))              # and none written twice


SIGTERM_SCRIPT = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from webpolicy.safeguarding.logwriter import LogWriter
    log = LogWriter(Path(sys.argv[1]), 30)
    def stop(*_):
        log.close()
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    for i in range(20000):
        log.write({"id": f"WP-{i}"})
    print("queued", flush=True)
    while True:             # not signal.pause(): a SIGTERM landing just before it is lost
        time.sleep(0.05)
""")


def test_sigterm_drains_the_queue(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ADDONS)})
    assert process.stdout.readline().strip() == "queued"
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    files = log_files(tmp_path)
    assert sum(len(lines(path)) for _, path in files) == 20000


def _worker_writes(directory: str, worker: int, count: int, start) -> None:
    """One worker of `webpolicy run --workers N`: its own LogWriter on the shared directory,
    records with new references, long enough (~6 KB) that an unlocked or split write would
    show as a torn line; a durable record every 50, as statutory blocks are."""
    from webpolicy.safeguarding.events import new_event_id
    log = LogWriter(Path(directory), 30)
    start.wait()
    for n in range(count):
        item = {"id": new_event_id(), "worker": worker, "n": n, "user_agent": "x" * 6000}
        if n % 50 == 0:
            log.submit_durable(item)
        else:
            log.write(item)
        if n % 100 == 0:
            time.sleep(0.01)                     # several flushes, interleaved with the other's
    log.close()


def test_two_workers_write_one_log_without_torn_lines_or_shared_references(tmp_path):
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    count = 1500
    workers = [context.Process(target=_worker_writes, args=(str(tmp_path), w, count, start))
               for w in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    (path,) = tmp_path.glob("webpolicy-*.jsonl")
    records = lines(path)                        # every line is whole JSON, or this raises
    assert len(records) == 2 * count
    for worker in range(2):
        assert sorted(r["n"] for r in records if r["worker"] == worker) == list(range(count))
    assert len({r["id"] for r in records}) == 2 * count
    interleaved = sum(1 for a, b in itertools.pairwise(records) if a["worker"] != b["worker"])
    assert interleaved > 1, "the two writers never wrote at the same time: the test proves nothing"
