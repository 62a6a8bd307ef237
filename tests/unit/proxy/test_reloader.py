"""The reload thread: rebuilds on a change, keeps the last good engine on failure, works with
short GIL slices, and an engine it drops is freed at once (no reference cycle)."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from pathlib import Path

from tests.unit.helpers import write_policy
from webpolicy.engine.engine import build_engine
from webpolicy.policy.model import PolicyError, load_policy
from webpolicy.proxy.reloader import Reloader

POLICY = """\
version: "r1"
default_profile: learner
profiles:
  learner: {block: [adult]}
lists:
  adult: {category: Adult, sources: [adult.txt]}
"""


def reloader_for(path: Path, build=None):
    done = threading.Event()
    results: list[object] = []

    def record(result) -> None:
        results.append(result)
        done.set()

    reloader = Reloader(path, build or (lambda p: build_engine(load_policy(p))), record, record,
                        interval=0)
    return reloader, results, done


def test_a_change_rebuilds_with_short_gil_slices_then_restores_them(tmp_path):
    path = write_policy(tmp_path, POLICY, {"adult.txt": "adult.test\n"})
    seen: list[float] = []

    def build(p: Path):
        seen.append(sys.getswitchinterval())
        return build_engine(load_policy(p))

    before = sys.getswitchinterval()
    reloader, results, done = reloader_for(path, build)
    reloader.start(load_policy(path))
    (tmp_path / "adult.txt").write_text("adult.test\nmore.test\n")
    reloader.request()
    assert done.wait(10)
    reloader.stop()
    assert seen == [0.0005]
    assert sys.getswitchinterval() == before
    assert results[0].domains.match("more.test") == [("more.test", 1)]


def test_a_broken_edit_is_reported_and_slices_are_restored(tmp_path):
    path = write_policy(tmp_path, POLICY, {"adult.txt": "adult.test\n"})
    before = sys.getswitchinterval()
    reloader, results, done = reloader_for(path)
    reloader.start(load_policy(path))
    path.write_text(POLICY.replace("block: [adult]", "block: [nosuchlist]"))
    reloader.request()
    assert done.wait(10)
    reloader.stop()
    assert isinstance(results[0], PolicyError)
    assert sys.getswitchinterval() == before


def test_a_dropped_engine_is_freed_without_the_cyclic_gc(tmp_path):
    """A cycle would leave the old engine (its URL index, its mapped domain index) to the
    cyclic GC: freed late, and by a full collection every request in flight waits out."""
    path = write_policy(tmp_path, POLICY, {"adult.txt": "adult.test\n"})
    engine = build_engine(load_policy(path))
    engine.identify(None, "10.0.0.1")
    gone = weakref.ref(engine)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del engine
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()


def test_the_replaced_engine_is_released_after_a_grace_period(tmp_path, monkeypatch):
    """The engine the swap returns is dismantled piecemeal, and only after the grace period
    (a hook may still be using it for a few microseconds); a lookup in it then fails closed."""
    from webpolicy.proxy import reloader as reloader_module
    monkeypatch.setattr(reloader_module, "RELEASE_GRACE", 0.2)
    path = write_policy(tmp_path, POLICY, {"adult.txt": "adult.test\n"})
    old = build_engine(load_policy(path))
    old.exact.add("url.test", "/x", 1)
    swapped = threading.Event()

    def on_success(engine):
        swapped.set()
        return old

    reloader = Reloader(path, lambda p: build_engine(load_policy(p)), on_success,
                        lambda exc: None, interval=0)
    reloader.start(load_policy(path))
    reloader.request()
    assert swapped.wait(10)
    assert old.exact.match("url.test", "/x")          # still whole within the grace period
    deadline = threading.Event()
    for _ in range(100):
        try:
            old.exact.match("url.test", "/x")
        except RuntimeError:
            break
        deadline.wait(0.05)
    else:
        raise AssertionError("the old engine was not released")
    reloader.stop()
