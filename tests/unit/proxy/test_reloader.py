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


def reloader_held_at_r2(path: Path, interval: float):
    """A Reloader whose build of version r2 waits (its lists are still compiling) until `finish`
    is set; `building` says r2's build has started, `newest` that r3 was installed."""
    building, finish, newest = threading.Event(), threading.Event(), threading.Event()
    installed: list[str] = []

    def build(p: Path):
        engine = build_engine(load_policy(p))
        if engine.version == "r2":
            building.set()
            assert finish.wait(10)
        return engine

    def on_success(engine):
        installed.append(engine.version)
        if engine.version == "r3":
            newest.set()

    reloader = Reloader(path, build, on_success, lambda exc: None, interval=interval)
    return reloader, installed, (building, finish, newest)


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


def test_a_save_made_while_the_previous_save_builds_is_loaded_too(tmp_path):
    """Issue #15: policy r2 is saved, its build is slow (its lists compiling), and r3 is
    saved meanwhile.  r2's build must not take r3's file state as its own: r3 is loaded
    after it, and the last engine installed is r3."""
    path = write_policy(tmp_path, POLICY, {"adult.txt": "adult.test\n"})
    reloader, installed, (building, finish, newest) = reloader_held_at_r2(path, interval=0.05)
    reloader.start(load_policy(path))
    path.write_text(POLICY.replace('"r1"', '"r2"'))
    assert building.wait(10)
    path.write_text(POLICY.replace('"r1"', '"r3"') + "# the newer save\n")
    finish.set()
    try:
        assert newest.wait(10), f"r3 never loaded; installed: {installed}"
    finally:
        reloader.stop()
    assert installed[-1] == "r3"


def test_a_sighup_during_a_build_rebuilds_after_it(tmp_path):
    """With polling off (SIGHUP only) a request made while a build runs is not lost."""
    path = write_policy(tmp_path, POLICY, {"adult.txt": "adult.test\n"})
    reloader, installed, (building, finish, newest) = reloader_held_at_r2(path, interval=0)
    reloader.start(load_policy(path))
    path.write_text(POLICY.replace('"r1"', '"r2"'))
    reloader.request()
    assert building.wait(10)
    path.write_text(POLICY.replace('"r1"', '"r3"'))
    reloader.request()
    finish.set()
    try:
        assert newest.wait(10), f"r3 never loaded; installed: {installed}"
    finally:
        reloader.stop()
    assert installed == ["r2", "r3"]


def test_the_signature_as_built_distrusts_what_may_have_changed_during_the_build(tmp_path):
    """A file the build named for the first time and touched since the build started, and a
    file gone from a watched directory, are entries no signature equals (check again);
    a file the build knew keeps the entry it had before the build."""
    import time as time_module

    from webpolicy.proxy.reloader import UNKNOWN, file_signature, signature_as_built
    policy, category = tmp_path / "policy.yaml", tmp_path / "adult"
    category.mkdir()
    policy.write_text("v1")
    (category / "domains").write_text("a.test\n")
    before = file_signature([policy, category])
    started = time_module.time_ns()
    policy.write_text("v2 saved during the build")
    (category / "domains").unlink()
    (category / "urls").write_text("a.test/x\n")
    fresh = tmp_path / "new.txt"
    fresh.write_text("b.test\n")
    built = dict((item[0], item[1:]) for item in
                 signature_as_built([policy, category, fresh], before, started))
    assert built[str(policy)] == dict((i[0], i[1:]) for i in before)[str(policy)]
    assert built[str(category / "domains")] == (UNKNOWN, UNKNOWN)
    assert built[str(category / "urls")] == (UNKNOWN, UNKNOWN)
    assert built[str(fresh)] == (UNKNOWN, UNKNOWN)
    assert set(built.items()).isdisjoint(
        (i[0], i[1:]) for i in file_signature([policy, category, fresh]))
