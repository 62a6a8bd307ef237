"""Hot reload: notice a changed policy.yaml or list file, rebuild off the event loop, swap.

A background thread polls the files the policy depends on (stat only, cheap) and rebuilds when
their signature changes or a reload is requested (SIGHUP).  The new Engine is handed over whole
with one callback, so a request sees either the old policy or the new one, never a mixture; a
broken edit reports its problems and the last good policy stays in force.

The heavy part of a rebuild, the big lists, runs in a worker process (compiler.py), so this
thread mostly waits.  What it still does in Python runs with short GIL slices (below).  The
old Engine holds no reference cycle, and its one big Python structure, the URL entries, is
freed piecemeal after a grace period (Engine.release): freed at once, 50k entries would stop
the proxy for several ms.  Its domain index is an mmap: unmapping costs well under a ms.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from webpolicy.engine.engine import Engine
from webpolicy.policy.model import Policy, PolicyError

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]
# After a swap, the old engine is dismantled only once no hook can still be using it: hooks
# are synchronous and take microseconds, so a second is a wide margin.
RELEASE_GRACE = 1.0
# A file first named by the policy just built, modified this long before the build started
# or later, may have changed while the build read it: it is checked again (a spare rebuild
# at worst).  Covers file systems with coarse timestamps.
MTIME_SLACK_NS = 2_000_000_000
UNKNOWN = -2                # a signature entry that never equals a file's: check it again


def file_signature(paths: list[Path]) -> Signature:
    """(path, mtime_ns, size) of every file, and of the files inside list directories."""
    items = []
    for path in paths:
        targets = sorted(path.iterdir()) if path.is_dir() else [path]
        for target in targets:
            try:
                st = os.stat(target)
                items.append((str(target), st.st_mtime_ns, st.st_size))
            except OSError:
                items.append((str(target), -1, -1))
    return tuple(items)


def signature_as_built(watched: list[Path], before: Signature, started: int) -> Signature:
    """The signature of `watched` as a build that started at `started` (time.time_ns()) with
    the files at `before` read them.

    Taking the signature after the build instead (as this module once did) took a save
    made while the build ran, typically while its lists compiled, for one already loaded:
    that save was never loaded and the metrics said the reload had succeeded (issue #15).
    A file in `before` keeps its entry from then; a file the build named for the first time
    keeps its entry unless it was modified around or after the start; a file of `before`
    that has gone from a watched directory is kept as UNKNOWN.  Every entry that may not be
    what the build read is UNKNOWN, which no file's signature equals: the next check rebuilds.
    """
    known = {item[0]: item for item in before}
    after = file_signature(watched)
    seen = {item[0] for item in after}
    items = []
    for item in after:
        path = item[0]
        if path in known:
            items.append(known[path])
        elif item[1] >= started - MTIME_SLACK_NS:
            items.append((path, UNKNOWN, UNKNOWN))
        else:
            items.append(item)
    roots = [str(path) for path in watched]
    for path in known:
        if path not in seen and any(path == root or path.startswith(root + os.sep)
                                    for root in roots):
            items.append((path, UNKNOWN, UNKNOWN))
    return tuple(items)


class Reloader:
    def __init__(self, policy_path: Path, build: Callable[[Path], Engine],
                 on_success: Callable[[Engine], Engine | None],
                 on_failure: Callable[[PolicyError | Exception], None],
                 interval: float = 2.0):
        self.policy_path = policy_path
        self.build = build
        self.on_success = on_success
        self.on_failure = on_failure
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._forced = False
        self._signature: Signature = ()
        self._watched: list[Path] = [policy_path]
        self._thread = threading.Thread(target=self._run, name="webpolicy-reload", daemon=True)

    def start(self, policy: Policy | None) -> None:
        self._watched = policy.files() if policy else [self.policy_path]
        self._signature = file_signature(self._watched)
        self._thread.start()

    def request(self) -> None:
        """Reload now even if nothing seems changed (SIGHUP); safe from any thread."""
        self._forced = True
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval if self.interval > 0 else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._check()

    def _check(self) -> None:
        forced, self._forced = self._forced, False
        current = file_signature(self._watched)
        if not forced and current == self._signature:
            return
        self._signature = current
        started = time.time_ns()
        with _short_gil_slices():
            try:
                engine = self.build(self.policy_path)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the last good policy
                self.on_failure(exc)
                return
            # Watch what the new policy names, as it was when the build read it: a file
            # saved during the build (the policy again, a list) is a change still to load.
            self._watched = engine.policy.files()
            self._signature = signature_as_built(self._watched, current, started)
            if self._signature != file_signature(self._watched):
                self._wake.set()            # look again at once, even with polling off
            old = self.on_success(engine)   # the swap; it returns the engine replaced
            del engine
            if old is not None:
                time.sleep(RELEASE_GRACE)
                old.release()


@contextmanager
def _short_gil_slices(seconds: float = 0.0005) -> Iterator[None]:
    """Shorten the interpreter's switch interval while this thread works.

    The big lists are compiled in another process, but reading its result, building the
    small exact index and installing the engine is still Python work in this thread.  While
    it runs, the event loop thread waits up to the switch interval (5 ms by default) each
    time it wants the GIL back, and one proxied request wants it after every socket
    operation: several 5 ms waits add up to a 20-30 ms stall.  With 0.5 ms slices it is a
    few ms at worst.  Process-wide, but only for the seconds a reload takes.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
