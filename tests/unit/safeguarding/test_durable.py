"""Issue #15: statutory and critical records are on disk (fsync'd) before the block page goes,
and waiting for that never blocks the proxy's event loop.

`LogWriter.submit_durable` returns a concurrent Future; `write_durable` awaits it from a hook.
These tests use the real writer thread, real files and (for the loop) a real asyncio loop;
fsync is wrapped only to slow it down or to count it.  They failed before: the writer had no
durable path, and a record reached the disk up to FLUSH_SECONDS later, unsynced.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest

from webpolicy.safeguarding import logwriter
from webpolicy.safeguarding.logstore import log_file_name
from webpolicy.safeguarding.logwriter import (
    FLUSH_SECONDS,
    LogDirectoryError,
    LogWriteError,
    LogWriter,
    must_be_durable,
    preflight,
)

DAY = dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC)


def clock():
    return DAY


def ids_on_disk(directory: Path) -> list[str]:
    path = directory / log_file_name(DAY.date())
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines() if line]


@pytest.fixture
def fsyncs(monkeypatch):
    """Every fsync the writer makes, as (fd is a directory, when)."""
    calls: list[tuple[bool, float]] = []
    real = os.fsync

    def counting(fd):
        calls.append((os.path.isdir(f"/proc/self/fd/{fd}"), time.monotonic()))
        real(fd)

    monkeypatch.setattr(logwriter.os, "fsync", counting)
    return calls


def test_statutory_and_critical_records_are_the_durable_ones():
    assert must_be_durable({"statutory": True, "severity": "critical"})
    assert must_be_durable({"statutory": False, "severity": "critical"})
    assert must_be_durable({"statutory": True, "severity": "high"})
    assert not must_be_durable({"statutory": False, "severity": "high"})
    assert not must_be_durable({})


def test_the_future_resolves_only_once_the_record_and_earlier_ones_are_synced(tmp_path, fsyncs):
    log = LogWriter(tmp_path, 30, clock=clock)
    try:
        log.write({"id": "WP-EARLIER"})
        started = time.monotonic()
        future = log.submit_durable({"id": "WP-STATUTORY", "statutory": True})
        future.result(timeout=5)
        took = time.monotonic() - started
        assert ids_on_disk(tmp_path) == ["WP-EARLIER", "WP-STATUTORY"]
        assert took < FLUSH_SECONDS / 2, "the writer is woken, not left to its next flush"
        assert [is_dir for is_dir, _ in fsyncs] == [False, True]   # the file, then its directory
        log.write({"id": "WP-ORDINARY"})
        log.submit_durable({"id": "WP-CRITICAL"}).result(timeout=5)
        assert [is_dir for is_dir, _ in fsyncs] == [False, True, False]   # directory once
    finally:
        log.close()


def test_ordinary_records_are_not_synced(tmp_path, fsyncs):
    log = LogWriter(tmp_path, 30, clock=clock)
    for i in range(50):
        log.write({"id": f"WP-{i}"})
    log.close()
    assert len(ids_on_disk(tmp_path)) == 50 and fsyncs == []


def test_awaiting_a_durable_write_leaves_the_event_loop_free(tmp_path, monkeypatch):
    """fsync is made to take 300 ms (a slow disk): the hook that awaits waits that long, while
    the same loop keeps serving (a ticker standing in for other flows never stalls)."""
    real = os.fsync

    def slow_fsync(fd):
        time.sleep(0.3)
        real(fd)

    monkeypatch.setattr(logwriter.os, "fsync", slow_fsync)
    log = LogWriter(tmp_path, 30, clock=clock)

    async def main() -> tuple[float, list[float], list[str]]:
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await log.write_durable({"id": "WP-STATUTORY", "statutory": True})
        waited = time.monotonic() - started
        on_disk = ids_on_disk(tmp_path)                 # as the block page would be sent
        stop.set()
        await task
        return waited, [t for t in ticks if t >= started], on_disk

    try:
        waited, ticks_while_waiting, on_disk = asyncio.run(main())
    finally:
        log.close()
    assert on_disk == ["WP-STATUTORY"]
    assert waited >= 0.3
    assert len(ticks_while_waiting) >= 20, "the loop ran other work while the hook waited"
    gaps = [b - a for a, b in zip(ticks_while_waiting, ticks_while_waiting[1:])]
    assert max(gaps) < 0.1, f"the loop stalled for {max(gaps):.3f} s"


def test_a_disk_failure_fails_the_durable_write_quickly_and_is_counted(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("where the log directory should be")
    errors = []
    log = LogWriter(blocker / "logs", 30, on_error=errors.append, clock=clock)

    async def main():
        with pytest.raises(LogWriteError):
            await log.write_durable({"id": "WP-1", "statutory": True}, timeout=5)

    started = time.monotonic()
    try:
        asyncio.run(main())
    finally:
        log.close()
    assert time.monotonic() - started < 2
    assert log.write_errors == 1 and len(errors) == 1


def test_a_stuck_disk_times_out_the_wait_but_the_record_is_still_written(tmp_path, monkeypatch):
    real = os.fsync

    def stuck_fsync(fd):
        time.sleep(1.0)
        real(fd)

    monkeypatch.setattr(logwriter.os, "fsync", stuck_fsync)
    log = LogWriter(tmp_path, 30, clock=clock)

    async def main():
        with pytest.raises(TimeoutError):
            await log.write_durable({"id": "WP-SLOW", "statutory": True}, timeout=0.2)

    try:
        asyncio.run(main())
    finally:
        log.close()
    assert ids_on_disk(tmp_path) == ["WP-SLOW"]


def test_after_close_a_durable_write_fails_at_once(tmp_path):
    log = LogWriter(tmp_path, 30, clock=clock)
    log.close()
    future = log.submit_durable({"id": "WP-LATE"})
    with pytest.raises(LogWriteError):
        future.result(timeout=1)


def test_preflight_creates_a_private_directory_and_refuses_an_unusable_one(tmp_path):
    good = tmp_path / "var" / "logs"
    preflight(good, DAY.date())
    assert good.stat().st_mode & 0o777 == 0o700
    assert not (good / log_file_name(DAY.date())).exists(), "no empty day's file left behind"
    (good / log_file_name(DAY.date())).write_text('{"id": "WP-1"}\n')
    preflight(good, DAY.date())                     # an existing day's file is opened, kept
    assert (good / log_file_name(DAY.date())).read_text() == '{"id": "WP-1"}\n'
    (good / log_file_name(DAY.date())).unlink()
    (good / log_file_name(DAY.date())).mkdir()      # even root cannot append to a directory
    with pytest.raises(LogDirectoryError, match="cannot be used"):
        preflight(good, DAY.date())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LogDirectoryError, match="cannot be used"):
        preflight(blocker, DAY.date())
    with pytest.raises(LogDirectoryError):
        preflight(blocker / "logs", DAY.date())


def test_a_record_handed_over_as_the_writer_stops_is_still_written(tmp_path):
    log = LogWriter(tmp_path, 30, clock=clock)
    log._stop.set()                                  # the writer is finishing ...
    log._wake.set()
    log._thread.join(5)
    item = logwriter._Durable({"id": "WP-RACE"})     # ... when a hook hands one over,
    log._pending.append(item)                        # past submit_durable's closed check
    log.close()
    assert ids_on_disk(tmp_path) == ["WP-RACE"]
    item.future.result(timeout=0)                    # and the hook waiting for it goes on
