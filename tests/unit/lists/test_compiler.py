"""The list compiler: cache key, reuse, corruption, the worker process, and what stays exact.

The worker is run for real (`python -m webpolicy.lists.compiler` in a subprocess), as the proxy runs
it; with two CPUs it reads lists and hashes names in two processes, so the tests that compare
its result with the in-process build also cover those paths.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.helpers import ADDONS, REPO, write_policy
from webpolicy.engine.decision import decide
from webpolicy.engine.engine import build_engine, load_engine
from webpolicy.lists import compiler
from webpolicy.lists.canonical import canonical_url
from webpolicy.lists.compiler import (
    CompileError,
    ListCache,
    ListJob,
    cache_key,
    compile_lists,
    open_cache,
    prepare_directory,
)
from webpolicy.lists.domainindex import DomainIndex, hash_half, hash_part
from webpolicy.policy.model import PolicyError, load_policy


@pytest.fixture
def lists(tmp_path: Path) -> Path:
    d = tmp_path / "lists"
    (d / "ut1").mkdir(parents=True)
    (d / "big.txt").write_text("big.test\nwww.other.test\n10.1.2.3\n")
    (d / "ut1" / "domains").write_text("ut1.test\n")
    (d / "ut1" / "urls").write_text("news.test/bad/page\n")
    return d


def jobs_for(d: Path) -> list[ListJob]:
    return [ListJob("big", 1 << 1, "domains", (str(d / "big.txt"),)),
            ListJob("ut1", 1 << 2, "ut1", (str(d / "ut1"),), expressions=True)]


@pytest.fixture
def cache(tmp_path: Path) -> ListCache:
    return ListCache(prepare_directory(tmp_path / "cache"))


@pytest.fixture
def worker_runs(monkeypatch) -> list[list[str]]:
    """The worker command lines run (each is still run for real)."""
    runs: list[list[str]] = []
    real = subprocess.run

    def spy(command, *args, **kwargs):
        runs.append(command)
        return real(command, *args, **kwargs)

    monkeypatch.setattr(compiler.subprocess, "run", spy)
    return runs


def touch_later(path: Path) -> None:
    """A new mtime even on file systems with coarse timestamps."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# --------------------------------------------------------------------------- the key


def test_key_is_stable_while_nothing_changes(lists):
    assert cache_key(jobs_for(lists)) == cache_key(jobs_for(lists))


@pytest.mark.parametrize("change", ["edit file", "touch file", "replace file",
                                    "new file in directory", "edit file in directory",
                                    "delete source"])
def test_key_changes_when_a_source_changes(lists, change):
    before = cache_key(jobs_for(lists))
    if change == "edit file":
        (lists / "big.txt").write_text("big.test\nwww.other.test\n10.1.2.3\nmore.test\n")
    elif change == "touch file":
        touch_later(lists / "big.txt")
    elif change == "replace file":          # same size, same mtime: a new inode
        text, st = (lists / "big.txt").read_text(), (lists / "big.txt").stat()
        (lists / "new.txt").write_text(text)
        os.utime(lists / "new.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(lists / "new.txt", lists / "big.txt")
    elif change == "new file in directory":
        (lists / "ut1" / "expressions").write_text("porn\n")
    elif change == "edit file in directory":
        (lists / "ut1" / "domains").write_text("ut1.test\nut2.test\n")
    else:
        (lists / "big.txt").unlink()
    assert cache_key(jobs_for(lists)) != before


def test_key_changes_with_what_the_lists_mean(lists):
    base = jobs_for(lists)
    other_bit = [ListJob("big", 1 << 5, "domains", base[0].sources), base[1]]
    other_format = [ListJob("big", 1 << 1, "hosts", base[0].sources), base[1]]
    other_name = [ListJob("large", 1 << 1, "domains", base[0].sources), base[1]]
    no_expressions = [base[0], ListJob("ut1", 1 << 2, "ut1", base[1].sources)]
    keys = {cache_key(jobs) for jobs in (base, other_bit, other_format, other_name,
                                         no_expressions, base[::-1])}
    assert len(keys) == 6


def test_key_changes_with_the_code(lists, monkeypatch):
    before = cache_key(jobs_for(lists))
    monkeypatch.setattr(compiler, "_code_fingerprint", lambda: "another release")
    assert cache_key(jobs_for(lists)) != before


# --------------------------------------------------------------------------- the cache


def test_worker_compiles_once_and_the_cache_is_reused(lists, cache, worker_runs):
    first = cache.compile(jobs_for(lists))
    assert len(worker_runs) == 1 and worker_runs[0][1:3] == ["-m", "webpolicy.lists.compiler"]
    again = cache.compile(jobs_for(lists))
    assert len(worker_runs) == 1, "an unchanged policy must start from the cache"
    for compiled in (first, again):
        assert compiled.index.match("a.big.test") == [("big.test", 1 << 1)]
        assert compiled.index.match("10.1.2.3") == [("10.1.2.3", 1 << 1)]
        assert compiled.index.match("www.ut1.test") == [("ut1.test", 1 << 2)]
        assert [e for chunk in compiled.url_chunks() for e in chunk] == \
            [("news.test", "/bad/page", 1 << 2)]
        assert compiled.lists["big"].status.entries == 3
        assert compiled.lists["ut1"].status.entries == 2
    names = {p.name for p in cache.directory.iterdir()}
    key = cache_key(jobs_for(lists))
    assert {f"{key}.wpidx", f"{key}.urls", f"{key}.json"} <= names


def test_an_edited_source_is_compiled_again(lists, cache, worker_runs):
    cache.compile(jobs_for(lists))
    (lists / "big.txt").write_text("changed.test\n")
    compiled = cache.compile(jobs_for(lists))
    assert len(worker_runs) == 2
    assert compiled.index.match("changed.test") == [("changed.test", 1 << 1)]
    assert compiled.index.match("big.test") == ()


@pytest.mark.parametrize("part", [".wpidx", ".json", ".urls"])
@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete"])
def test_a_corrupt_cache_file_is_compiled_again(lists, cache, worker_runs, part, damage, caplog):
    cache.compile(jobs_for(lists))
    path = cache.directory / f"{cache_key(jobs_for(lists))}{part}"
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x20
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    with caplog.at_level(logging.WARNING):
        compiled = cache.compile(jobs_for(lists))
    assert len(worker_runs) == 2, "a damaged set must be rebuilt, not used"
    assert compiled.index.match("www.big.test") == [("big.test", 1 << 1)]
    assert [e for chunk in compiled.url_chunks() for e in chunk] == \
        [("news.test", "/bad/page", 1 << 2)]
    if not (part == ".json" and damage == "delete"):   # a missing sidecar is simply absent
        assert "compiling again" in caplog.text


def test_old_sets_are_pruned(lists, cache):
    keys = []
    for i in range(4):
        (lists / "big.txt").write_text(f"v{i}.test\n")
        cache.compile(jobs_for(lists))
        keys.append(cache_key(jobs_for(lists)))
        time.sleep(0.02)                      # distinct sidecar mtimes
    stems = {p.name.partition(".")[0] for p in cache.directory.iterdir()
             if not p.name.startswith(".")}
    assert stems == set(keys[-compiler.KEEP:])


def test_a_failing_worker_raises_compile_error(lists, cache, monkeypatch):
    monkeypatch.setattr(compiler.sys, "executable", "/bin/false")
    with pytest.raises(CompileError, match="exit 1"):
        cache.compile(jobs_for(lists))


def test_worker_result_equals_the_in_process_build(tmp_path, cache):
    """Big enough for the worker's two processes (compile_in_two)."""
    rng = random.Random(5)
    names = {f"{rng.getrandbits(40):x}.{rng.choice(['com', 'net', 'co.uk'])}"
             for _ in range(90_000)}
    names = sorted(names)
    subs = [f"www{i}.{n}" for i, n in enumerate(names[:60_000:2])]
    ips = [f"10.0.{i // 256}.{i % 256}" for i in range(300)]
    a, b = names[:70_000] + subs + ips, names[60_000:] + ["single"]
    (tmp_path / "a.txt").write_text("\n".join(a) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(b) + "\n")
    jobs = [ListJob("a", 1, "domains", (str(tmp_path / "a.txt"),)),
            ListJob("b", 2, "domains", (str(tmp_path / "b.txt"),))]
    assert compiler._total_size(jobs) >= compiler.PARALLEL_BYTES
    assert compiler._big_source(jobs)[:2] == (jobs[0], str(tmp_path / "a.txt"))   # split
    worker, local = cache.compile(jobs), compile_lists(jobs)
    assert worker.lists["a"].status == local.lists["a"].status
    assert worker.lists["b"].status == local.lists["b"].status
    assert local.lists["b"].status.skipped == 1          # "single": not a domain name
    worker, local = worker.index, local.index
    assert len(worker) == len(local) == len(set(names) | set(subs) | set(ips))
    hosts = [f"x.{n}" for n in names[::7]] + [f"y.{s}" for s in subs[::5]] + ips[::3]
    hosts += [f"{rng.getrandbits(40):x}.com" for _ in range(2000)] + ["single", "q.single"]
    for host in hosts:
        assert worker.match(host) == local.match(host), host


# --------------------------------------------------------------------------- the engine


STATUTORY_POLICY = """\
version: "s1"
default_profile: learner
profiles:
  learner: {block: [adult]}
lists:
  ctiru: {statutory: true, category: CTIRU, severity: critical, format: domains, sources: [ctiru.txt]}
  adult: {category: Adult, sources: [adult.txt]}
"""


def test_statutory_lists_never_come_from_the_hashed_index(tmp_path):
    path = write_policy(tmp_path, STATUTORY_POLICY,
                        {"ctiru.txt": "terror.test\n", "adult.txt": "adult.test\n"})
    seen: list[list[ListJob]] = []

    def spy(jobs):
        seen.append(jobs)
        return compile_lists(jobs)

    engine = build_engine(load_policy(path), spy)
    assert [job.name for job in seen[0]] == ["adult"]
    assert engine.domains.match("www.terror.test") == ()
    assert engine.domains.match("www.adult.test") == [("adult.test", 1 << 1)]
    decision = decide(engine, canonical_url("http://www.terror.test/"))
    assert decision.blocked and decision.statutory and decision.entry == "terror.test"


def test_engine_from_the_worker_decides_like_the_in_process_one(tmp_path, cache):
    path = write_policy(tmp_path, STATUTORY_POLICY.replace(
        "adult: {category: Adult, sources: [adult.txt]}",
        "adult: {category: Adult, format: ut1, expressions: true, sources: [adult]}"),
        {"ctiru.txt": "terror.test\n", "adult/domains": "adult.test\nbad line!\n",
         "adult/urls": "news.test/adult\n", "adult/expressions": "(porn|xxx)\n"})
    local, mapped = build_engine(load_policy(path)), load_engine(path, cache)
    for url in ("http://adult.test/", "http://news.test/adult/x", "http://news.test/ok",
                "http://site.test/xxx-page", "http://www.terror.test/", "http://fine.test/"):
        a, b = (decide(e, canonical_url(url)) for e in (local, mapped))
        assert a == b, url
    assert [str(w) for w in local.warnings] == [str(w) for w in mapped.warnings]
    assert any("skipped 1 bad lines" in str(w) for w in mapped.warnings)
    assert mapped.status["adult"] == local.status["adult"]


def test_reload_refuses_when_the_worker_fails_but_startup_compiles_in_process(
        tmp_path, cache, monkeypatch, caplog):
    path = write_policy(tmp_path, STATUTORY_POLICY,
                        {"ctiru.txt": "terror.test\n", "adult.txt": "adult.test\n"})
    monkeypatch.setattr(compiler.sys, "executable", "/bin/false")
    with pytest.raises(CompileError):
        load_engine(path, cache, reload=True)
    with caplog.at_level(logging.WARNING):
        engine = load_engine(path, cache)
    assert "compiling the lists in the proxy process" in caplog.text
    assert engine.domains.match("adult.test") == [("adult.test", 1 << 1)]


def test_reload_yields_between_url_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(compiler, "URL_CHUNK", 10)
    urls = "".join(f"u{i}.test/p{i}\n" for i in range(95))
    path = write_policy(tmp_path, STATUTORY_POLICY.replace("sources: [adult.txt]",
                                                           "format: urls, sources: [adult.txt]"),
                        {"ctiru.txt": "terror.test\n", "adult.txt": urls})
    pauses = []
    cache = ListCache(prepare_directory(tmp_path / "cache"))
    engine = build_engine(load_policy(path), cache.compile, pause=lambda: pauses.append(1))
    assert len(pauses) > 2, "the URL entries must be built in chunks, pausing between them"
    assert decide(engine, canonical_url("http://u94.test/p94/x")).blocked


# --------------------------------------------------------------------------- the directory


def test_default_directory_is_in_the_confdir(tmp_path):
    cache = open_cache("", str(tmp_path / "confdir"))
    assert cache.directory == tmp_path / "confdir" / "webpolicy-cache"
    assert cache.directory.stat().st_mode & 0o022 == 0


def test_unusable_directory_falls_back_to_a_private_temporary_one(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        cache = open_cache(str(blocker / "cache"), str(tmp_path))
    assert "cannot use" in caplog.text
    assert cache.directory.is_dir() and cache.directory.stat().st_mode & 0o077 == 0


def test_world_writable_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(OSError, match="world-writable"):
        prepare_directory(shared)


def test_build_runs_equals_build():
    entries = [("a.com", 1), ("b.a.com", 1), ("1.2.3.4", 2), ("a.com", 2), ("xyz", 4)]
    runs = [(["a.com", "b.a.com"], 1), (["1.2.3.4", "a.com"], 2), ([], 8), (["xyz"], 4)]
    built, from_runs = DomainIndex.build(entries), DomainIndex.build_runs(runs)
    for host in ("a.com", "c.b.a.com", "1.2.3.4", "q.xyz", "xyz", "b.com"):
        assert built.match(host) == from_runs.match(host)


def test_other_part_indexes_like_one_build():
    """A piece hashed by another process (hash_part: its hosts, as bytes) is indexed as a
    last run of its mask; the piece's IP literals and single labels come over in its
    summary and are indexed here, with the others of that list."""
    theirs_others = ["10.0.0.2", "solo", "::1"]
    mine = [(["a.com", "b.a.com", "10.0.0.1"], 1), (["x.net"], 2), (theirs_others, 4)]
    theirs = [b"c.a.com", b"deep.x.net", b"a.com"]
    built = DomainIndex.build_runs([*mine, (theirs, 4)])
    split = DomainIndex.build_runs(mine, other_part=lambda: (4, hash_part(theirs)))
    assert len(split) == len(built)
    for host in ("a.com", "q.c.a.com", "10.0.0.1", "10.0.0.2", "x.10.0.0.2", "solo", "w.solo",
                 "::1", "deep.x.net", "z.x.net", "com", "nope.org"):
        assert split.match(host) == built.match(host), host


@pytest.mark.parametrize("count", [0, 1, 2, 7])
def test_other_half_indexes_like_one_build(count):
    """Every other name hashed by another process (hash_half) gives the same index."""
    runs = [([f"h{i}.a.com".encode() for i in range(count)], 1), (["10.0.0.1", "solo"], 2),
            ([b"b.net", b"c.net"], 4)]
    built = DomainIndex.build_runs(runs)
    halves = DomainIndex.build_runs(runs, other_half=lambda: hash_half(runs, 1))
    assert halves._buffer == built._buffer


def test_big_source_is_split_only_when_it_holds_most_of_the_text(tmp_path):
    big, small, hosts = tmp_path / "big.txt", tmp_path / "small.txt", tmp_path / "hosts.txt"
    big.write_text("a.example\n" * 700)
    small.write_text("b.example\n" * 300)
    hosts.write_text("0.0.0.0 c.example\n" * 2000)
    job = lambda name, bit, source, fmt="domains", **kw: ListJob(name, bit, fmt, (str(source),), **kw)  # noqa: E731
    assert compiler._big_source([job("a", 1, big), job("b", 2, small)]) == \
        (job("a", 1, big), str(big), compiler._cut_for(big.stat().st_size, small.stat().st_size))
    assert compiler._big_source([job("a", 1, small), job("b", 2, small)]) is None
    assert compiler._big_source([job("a", 1, hosts, "auto"), job("b", 2, small)]) is None
    assert compiler._big_source([job("a", 1, big, statutory=True)]) is None


def test_the_process_that_reads_the_other_lists_takes_less_of_the_big_one():
    big = 100 * compiler.NUMPY_BYTES
    assert compiler._cut_for(big, 0) == 0.5 - compiler.NUMPY_BYTES / (2 * big)
    assert compiler._cut_for(big, big // 100) == \
        0.5 - (compiler.OTHER_WEIGHT * big / 100 + compiler.NUMPY_BYTES) / (2 * big)
    assert compiler._cut_for(big, big) == 0.25                   # never less than a quarter
    assert compiler._cut_for(1000, 0) == 0.25 and compiler._cut_for(0, 0) == 0.5


def test_two_processes_interleave_when_no_file_dominates(tmp_path):
    run_isolated("""
import sys
from pathlib import Path
from tests.unit.lists.test_compiler import _two_process_jobs
from webpolicy.lists import compiler
tmp = Path(sys.argv[1])
jobs = _two_process_jobs(tmp)
(tmp / "more.txt").write_text((tmp / "many.txt").read_text().replace(".example", ".test"))
jobs.append(compiler.ListJob("more", 8, "domains", (str(tmp / "more.txt"),)))
assert compiler._big_source(jobs) is None
both, one = compiler.compile_in_two(jobs), compiler.compile_lists(jobs)
assert len(both.index) == len(one.index)
for host in ["x.10.9.8.7", "10.9.8.7", "www.a.few.test", "nope.example"] + [
        f"w.{line}" for line in (tmp / "more.txt").read_text().split()[:3000:7]]:
    assert both.index.match(host) == one.index.match(host), host
""", tmp_path)


def test_two_processes_split_a_ut1_category(tmp_path):
    """UT1's adult category is one big `domains` file beside `urls` and `expressions`: the
    domains are split between the processes; counts, skipped lines and URL entries add up."""
    run_isolated("""
import sys
from pathlib import Path
from webpolicy.lists import compiler
tmp = Path(sys.argv[1])
adult = tmp / "adult"
adult.mkdir()
names = [f"site{i}.example" for i in range(60_000)]
names[45_000] = "exa mple.com"                      # a bad line in the second half
(adult / "domains").write_text("\\n".join(names) + "\\n")
(adult / "urls").write_text("u.example/path\\n")
(adult / "expressions").write_text("(porn|xxx)\\n")
(tmp / "small.txt").write_text("small.example\\n")
jobs = [compiler.ListJob("adult", 1, "ut1", (str(adult),), expressions=True),
        compiler.ListJob("small", 2, "domains", (str(tmp / "small.txt"),))]
assert compiler._big_source(jobs)[:2] == (jobs[0], str(adult))
both, one = compiler.compile_in_two(jobs), compiler.compile_lists(jobs)
assert both.lists["adult"].status == one.lists["adult"].status
status = both.lists["adult"].status
assert status.entries == 60_000 and status.skipped == 1, status
assert status.skipped_examples[0].startswith(f"{adult / 'domains'}:45001:"), status
assert both.lists["adult"].expressions == one.lists["adult"].expressions
assert [u for chunk in both.url_chunks() for u in chunk] == [("u.example", "/path", 1)]
for host in ["site0.example", "w.site59999.example", "site45000.example", "small.example"]:
    assert both.index.match(host) == one.index.match(host), host
""", tmp_path)


def _two_process_jobs(tmp_path: Path) -> list[ListJob]:
    rng = random.Random(9)
    names = [f"{rng.getrandbits(48):x}.example" for _ in range(80_000)]
    (tmp_path / "many.txt").write_text("\n".join(names + ["10.9.8.7"]) + "\n")
    (tmp_path / "few.txt").write_text("a.few.test\nwww.b.few.test\n")
    return [ListJob("many", 1, "domains", (str(tmp_path / "many.txt"),)),
            ListJob("few", 4, "domains", (str(tmp_path / "few.txt"),))]


def run_isolated(code: str, tmp_path: Path) -> None:
    """Run `code` in a fresh interpreter: compile_in_two forks, which is only safe in a
    process without other threads (the worker; not pytest's, which other tests leave some
    in)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ADDONS), str(REPO)]))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def test_two_processes_build_the_same_index(tmp_path):
    run_isolated("""
import sys
from pathlib import Path
from tests.unit.lists.test_compiler import _two_process_jobs
from webpolicy.lists import compiler
tmp = Path(sys.argv[1])
jobs = _two_process_jobs(tmp)
both, one = compiler.compile_in_two(jobs), compiler.compile_lists(jobs)
assert len(both.index) == len(one.index) == 80_003, (len(both.index), len(one.index))
hosts = ["x.10.9.8.7", "10.9.8.7", "www.a.few.test", "c.b.few.test", "nope.example"]
hosts += [f"w.{line}" for line in (tmp / "many.txt").read_text().split()[:3000:7]]
for host in hosts:
    assert both.index.match(host) == one.index.match(host), host
assert both.index.match("www.a.few.test") == [("a.few.test", 4)]
""", tmp_path)


def test_two_processes_notice_a_source_changing_under_them(tmp_path):
    run_isolated("""
import sys
from pathlib import Path
from tests.unit.lists.test_compiler import _two_process_jobs
from webpolicy.lists import compiler
jobs = _two_process_jobs(Path(sys.argv[1]))
keys = iter(["before", "after"])
compiler.cache_key = lambda jobs: next(keys)
try:
    compiler.compile_in_two(jobs)
except compiler.SourcesChanged:
    pass
else:
    raise AssertionError("a changed source went unnoticed")
""", tmp_path)


# --------------------------------------------------------------------------- issue #15


UT1_POLICY = """\
version: "u1"
default_profile: learner
profiles:
  learner: {block: [adult, other]}
lists:
  ctiru: {statutory: true, category: CTIRU, severity: critical, format: domains, sources: [ctiru.txt]}
  adult: {category: Adult, format: ut1, sources: [adult]}
  other: {category: Other, sources: [other.txt]}
"""


def test_a_ut1_category_losing_a_file_is_a_failed_source_not_a_smaller_list(tmp_path, cache):
    """The cache remembers which files each UT1 category had: on a reload the category
    without its `domains` is a failed source (the reload is refused: the last good policy
    and its lists stay), and at a cold start the list is unavailable (fails closed)."""
    path = write_policy(tmp_path, UT1_POLICY, {
        "ctiru.txt": "terror.test\n", "adult/domains": "adult.test\n",
        "adult/urls": "news.test/adult\n", "other.txt": "other.test\n"})
    good = load_engine(path, cache)
    assert good.status["adult"].available and good.status["adult"].entries == 2
    (tmp_path / "adult" / "domains").unlink()
    with pytest.raises(PolicyError) as info:
        load_engine(path, cache, reload=True)
    assert str(tmp_path / "adult" / "domains") in str(info.value)
    assert "missing" in str(info.value)
    cold = load_engine(path, ListCache(cache.directory))
    assert not cold.status["adult"].available
    assert decide(cold, canonical_url("http://news.test/adult")).failed_closed
    assert decide(cold, canonical_url("http://fine.test/")).failed_closed


def test_the_expectation_outlives_failed_compiles(tmp_path, cache):
    """Failed compiles carry the expectation forward, so pruning the last good set (KEEP)
    does not make the smaller category acceptable."""
    path = write_policy(tmp_path, UT1_POLICY, {
        "ctiru.txt": "terror.test\n", "adult/domains": "adult.test\n",
        "adult/urls": "news.test/adult\n", "other.txt": "other.test\n"})
    load_engine(path, cache)
    (tmp_path / "adult" / "domains").unlink()
    for n in range(compiler.KEEP + 1):
        (tmp_path / "other.txt").write_text(f"other.test\nmore{n}.test\n")
        touch_later(tmp_path / "other.txt")
        engine = load_engine(path, cache)
        assert not engine.status["adult"].available, n


def test_reload_refuses_any_failed_source(tmp_path, cache):
    path = write_policy(tmp_path, UT1_POLICY, {
        "ctiru.txt": "terror.test\n", "adult/domains": "adult.test\n",
        "adult/urls": "news.test/adult\n", "other.txt": "other.test\n"})
    load_engine(path, cache)
    (tmp_path / "other.txt").unlink()
    with pytest.raises(PolicyError, match="other.txt"):
        load_engine(path, cache, reload=True)
    assert not load_engine(path, cache).status["other"].available


def test_a_category_missing_an_expected_file_is_not_split_between_two_processes(tmp_path):
    """The split's first part would fail in read_list with the second process still
    running; such a source is compiled unsplit, and fails there."""
    category = tmp_path / "adult"
    category.mkdir()
    (category / "domains").write_text("".join(f"d{i}.test\n" for i in range(2000)))
    (category / "urls").write_text("u.test/x\n")
    job = ListJob("adult", 1 << 1, "ut1", (str(category),),
                  expect=((str(category), ("domains", "urls")),))
    assert compiler._big_source([job]) is not None
    (category / "urls").unlink()
    assert compiler._big_source([job]) is None
    compiled = compiler.compile_in_two([job])
    assert compiled.lists["adult"].status.failed_sources == [str(category)]
    assert "urls" in compiled.lists["adult"].messages[0]


def test_workers_starting_together_compile_once(lists, cache, caplog):
    """The workers of `webpolicy run --workers N` start at once, each asking for the same
    lists: one compiles, the others wait for its lock and map what it wrote."""
    import threading
    caplog.set_level(logging.INFO, logger="webpolicy.lists.compiler")
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.compile(jobs_for(lists))))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lists compiled in" in m for m in messages) == 1, messages
    assert sum("already compiled by another process" in m for m in messages) == 2, messages
    assert len(list(cache.directory.glob("*.wpidx"))) == 1
