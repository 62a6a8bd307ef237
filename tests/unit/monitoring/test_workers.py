"""The supervisor's endpoint (monitoring/workers.py) over real worker processes writing
prometheus-client's multiprocess files: one scrape gives the totals of every worker, a dead
worker's counts stay in them and its live gauges go, and every documented family is there."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.monitoring.test_metrics import DOCUMENTED, make_engine
from webpolicy.monitoring.workers import (
    WorkerState,
    WorkerStats,
    cpu_seconds,
    gateway_registry,
    worker_gone,
)
from webpolicy.policy.model import load_policy

WORKER_FAMILIES = {"webpolicy_workers", "webpolicy_workers_running",
                   "webpolicy_worker_restarts_total", "webpolicy_worker_cpu_seconds_total"}


def _worker(directory: str, requests: int, reload_fails: bool, ready, stop) -> None:
    """A worker's metrics, as WebPolicy keeps them: the policy loaded, some requests decided,
    one blocked event; then alive until told to stop (its live gauges count meanwhile)."""
    from webpolicy.engine.decision import decide
    from webpolicy.lists.canonical import canonical_url
    from webpolicy.monitoring.metrics import Metrics
    engine = make_engine(Path(directory))
    metrics = Metrics(shared=True)
    metrics.policy_loaded(engine)
    for _ in range(requests):
        metrics.observe("learner", "allow", 2e-5)
    metrics.event(decide(engine, canonical_url("http://gambling.test/"), profile="learner"))
    if reload_fails:
        metrics.reload_failed()
    ready.put((reload_fails, os.getpid()))
    stop.wait(30)


def families(registry) -> dict[str, dict[frozenset, float]]:
    found: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


@pytest.fixture
def shared_dir(tmp_path, monkeypatch):
    directory = tmp_path / "metrics"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))   # what the workers inherit
    return directory


def test_one_scrape_sums_every_worker(tmp_path, shared_dir):
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    workers = []
    for number, (requests, fails) in enumerate([(7, False), (5, True)]):
        directory = tmp_path / f"w{number}"
        directory.mkdir()
        workers.append(context.Process(target=_worker,
                                       args=(str(directory), requests, fails, ready, stop)))
        workers[-1].start()
    started = dict(ready.get(timeout=60) for _ in workers)     # reload failed? -> pid
    pids = [started[False], started[True]]
    states = [WorkerState(n, pid, 0) for n, pid in enumerate(pids)]
    sources = load_policy(tmp_path / "w0" / "policy.yaml").remote_sources()
    registry = gateway_registry(shared_dir, lambda: states, lambda: sources)
    try:
        seen = families(registry)
        allow = frozenset({("profile", "learner"), ("action", "allow")})
        assert seen["webpolicy_requests_total"][allow] == 12
        assert seen["webpolicy_decision_seconds_count"][frozenset()] == 12
        gambling = frozenset({("profile", "learner"), ("list", "gambling"),
                              ("category", "Gambling")})
        assert seen["webpolicy_blocks_total"][gambling] == 2
        # one worker's reload was refused: the gateway's flag says so (the lowest)
        assert seen["webpolicy_policy_last_reload_successful"][frozenset()] == 0
        assert seen["webpolicy_list_entries"][frozenset({("list", "gambling")})] == 2
        assert seen["webpolicy_workers"][frozenset()] == 2
        missing = (DOCUMENTED | WORKER_FAMILIES) - {_family(name) for name in seen}
        assert not missing, missing
        # the worker whose reload failed dies: its counts stay, its live gauges go
        stop.set()
        for worker in workers:
            worker.join(30)
        worker_gone(shared_dir, pids[1])
        seen = families(registry)
        assert seen["webpolicy_requests_total"][allow] == 12
        assert seen["webpolicy_policy_last_reload_successful"][frozenset()] == 1
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)


def _family(sample: str) -> str:
    for suffix in ("_bucket", "_count", "_sum"):
        if sample.startswith("webpolicy_decision_seconds") and sample.endswith(suffix):
            return sample.removesuffix(suffix)
    return sample


def test_worker_stats_show_restarts_and_cpu_of_the_running_ones():
    stats = WorkerStats(lambda: [WorkerState(0, os.getpid(), 2), WorkerState(1, None, 5)])
    found = {(s.name, tuple(s.labels.items())): s.value
             for m in stats.collect() for s in m.samples}
    assert found[("webpolicy_workers", ())] == 2
    assert found[("webpolicy_workers_running", ())] == 1
    assert found[("webpolicy_worker_restarts_total", (("worker", "1"),))] == 5
    assert found[("webpolicy_worker_cpu_seconds_total", (("worker", "0"),))] > 0
    assert ("webpolicy_worker_cpu_seconds_total", (("worker", "1"),)) not in found
    assert cpu_seconds(2**22 + 12345) is None
