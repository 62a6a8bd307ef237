"""The metrics of a gateway run as workers (`webpolicy run --workers N`): one endpoint, served
by the supervisor, whose numbers are the whole gateway's.

Each worker writes its counters and gauges into prometheus-client's multiprocess files in one
directory (PROMETHEUS_MULTIPROC_DIR, which the supervisor creates empty at start and removes
at exit); MultiProcessCollector sums the counters of every worker that ever ran since, a dead
one's included, so a total never goes down when a worker is restarted, and combines gauges as
each says (metrics.py).  Beside them the supervisor's own: how many workers run, how often one
was restarted, each one's CPU time (`worker` is a number below N: bounded, not personal data),
the build, and how current the list sources are (read from their sidecars when scraped, as a
single process does; only worker 0 downloads them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from webpolicy.lists.remote import read_state
from webpolicy.monitoring.metrics import SourceFreshness, build_labels

if TYPE_CHECKING:
    from webpolicy.policy.model import RemoteSource

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class WorkerState:
    """One worker slot as the supervisor sees it."""

    number: int
    pid: int | None            # None while it waits to be restarted
    restarts: int


class WorkerStats(Collector):
    """webpolicy_workers, webpolicy_workers_running, webpolicy_worker_restarts_total and
    webpolicy_worker_cpu_seconds_total, from the supervisor's view at scrape time."""

    def __init__(self, workers: Callable[[], list[WorkerState]]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        states = self._workers()
        configured = GaugeMetricFamily("webpolicy_workers", "Worker processes the gateway runs "
                                       "(webpolicy run --workers).")
        configured.add_metric([], len(states))
        running = GaugeMetricFamily("webpolicy_workers_running", "Worker processes running now "
                                    "(fewer while a dead one waits to be restarted).")
        running.add_metric([], sum(1 for s in states if s.pid is not None))
        restarts = CounterMetricFamily("webpolicy_worker_restarts", "Workers restarted after "
                                       "they died, by worker number.", labels=["worker"])
        cpu = CounterMetricFamily("webpolicy_worker_cpu_seconds", "CPU time (user + system) of "
                                  "the worker process running now, by worker number.",
                                  labels=["worker"])
        for state in states:
            restarts.add_metric([str(state.number)], state.restarts)
            seconds = cpu_seconds(state.pid) if state.pid is not None else None
            if seconds is not None:
                cpu.add_metric([str(state.number)], seconds)
        yield from (configured, running, restarts, cpu)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc (None if it has gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()      # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class SourceStates(Collector):
    """How current the policy's URL list sources are, read from their sidecars when scraped."""

    def __init__(self, sources: Callable[[], list[RemoteSource]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        freshness = SourceFreshness()
        freshness.update([(source, read_state(source)) for source in self._sources()])
        yield from freshness.collect()


def gateway_registry(directory: Path, workers: Callable[[], list[WorkerState]],
                     sources: Callable[[], list[RemoteSource]]) -> CollectorRegistry:
    """The registry the supervisor serves: every worker's files, and its own view."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    registry.register(WorkerStats(workers))
    registry.register(SourceStates(sources))
    Info("webpolicy_build", "The webpolicy and mitmproxy versions running.",
         registry=registry).info(build_labels())
    return registry


def worker_gone(directory: Path, pid: int) -> None:
    """A worker died: its gauges of the `live*` kinds no longer count (its counters do)."""
    mark_process_dead(pid, str(directory))
