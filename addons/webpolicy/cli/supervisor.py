"""`webpolicy run --workers N`: N mitmdump processes behind one listening address.

The workers share the proxy's listening address through SO_REUSEPORT (proxy/reuseport.py):
the kernel gives each new client connection to one of them, and the worker accepts the
client's own connection, so its address (identity by network) is the peer address as ever.
This process, the supervisor, is in no request path.  It
  * starts the N workers (WEBPOLICY_WORKER=0..N-1 in their environment), the same mitmdump
    command each, and restarts one that dies, after a delay that grows while it keeps dying
    quickly (RESTART_DELAYS), counted in webpolicy_worker_restarts_total and logged; a worker
    that dies GIVE_UP_AFTER times in a row without serving STABLE_SECONDS stops the gateway
    (exit 1: a broken option or policy is not retried for ever);
  * forwards SIGHUP (reload) to every worker, and on SIGTERM or SIGINT stops them all and
    exits (a worker still running after STOP_TIMEOUT is killed; should this process die
    without doing so, the kernel tells each worker to stop: proxy/worker.py);
  * serves the one Prometheus endpoint (monitoring/workers.py), where policy.yaml's
    metrics.listen says, following the policy file as the workers do.
What else is shared and how (lists, the log, alerts): docs/architecture.md, "Workers".
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from webpolicy.monitoring.metrics import Endpoint
from webpolicy.monitoring.workers import WorkerState, gateway_registry, worker_gone
from webpolicy.policy.model import Policy, PolicyError, load_policy

RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)   # seconds, per consecutive quick death
STABLE_SECONDS = 60.0        # a worker that served this long starts its delays again
GIVE_UP_AFTER = 5            # quick deaths in a row of one worker: stop the gateway
STOP_TIMEOUT = 15.0          # seconds workers get to finish after SIGTERM
POLL_SECONDS = 0.25          # how often dead workers and the policy file are checked
WORKER_ENV = "WEBPOLICY_WORKER"
WORKERS_ENV = "WEBPOLICY_WORKERS"
FORM_KEY_ENV = "WEBPOLICY_FORM_KEY"


class SupervisorError(Exception):
    """The workers cannot be started or kept running."""


@dataclass
class Slot:
    """One worker number: the process in it now, and its history."""

    number: int
    process: subprocess.Popen | None = None
    started: float = 0.0
    quick_deaths: int = 0        # in a row, each within STABLE_SECONDS of its start
    restarts: int = 0
    due: float | None = None     # when to start it again, while it is dead


def say(message: str) -> None:
    print(f"webpolicy run: {message}", file=sys.stderr, flush=True)


class Supervisor:
    """Start, watch and stop the workers; no signals or endpoint here (see run())."""

    def __init__(self, command: Sequence[str], workers: int, env: dict[str, str], *,
                 spawn: Callable[..., subprocess.Popen] = subprocess.Popen,
                 clock: Callable[[], float] = time.monotonic,
                 on_death: Callable[[int], None] = lambda pid: None) -> None:
        if workers < 1:
            raise SupervisorError(f"--workers must be at least 1, not {workers}")
        self.command = list(command)
        self.env = env
        self.spawn = spawn
        self.clock = clock
        self.on_death = on_death            # pid of a worker that exited (metrics files)
        self.slots = [Slot(number) for number in range(workers)]
        # One key for the block pages' review-form tokens, the same in every worker and in a
        # restarted one: the kernel may hand the form's POST to another worker than the one
        # that served the page, which must accept its token (reuseport.form_key).
        self.form_key = secrets.token_hex(32)

    def start(self) -> None:
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: Slot) -> None:
        env = dict(self.env, **{WORKER_ENV: str(slot.number), WORKERS_ENV: str(len(self.slots)),
                                FORM_KEY_ENV: self.form_key})
        try:
            slot.process = self.spawn(self.command, env=env)
        except OSError as exc:
            raise SupervisorError(f"cannot start worker {slot.number}: {exc}") from None
        slot.started, slot.due = self.clock(), None

    def check(self) -> None:
        """Reap workers that exited and start those whose delay has passed.  Raises
        SupervisorError when one keeps dying (GIVE_UP_AFTER)."""
        now = self.clock()
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is not None:
                self._died(slot, now)
            if slot.process is None and slot.due is not None and now >= slot.due:
                slot.restarts += 1
                self._start(slot)

    def _died(self, slot: Slot, now: float) -> None:
        process, slot.process = slot.process, None
        self.on_death(process.pid)
        lived = now - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if lived < STABLE_SECONDS else 1
        how = describe_exit(process.returncode)
        if slot.quick_deaths >= GIVE_UP_AFTER:
            raise SupervisorError(f"worker {slot.number} (pid {process.pid}) {how}, "
                                  f"{slot.quick_deaths} times in a row within "
                                  f"{STABLE_SECONDS:.0f} s of starting: giving up (see its "
                                  "messages above)")
        delay = RESTART_DELAYS[min(slot.quick_deaths, len(RESTART_DELAYS)) - 1]
        slot.due = now + delay
        say(f"worker {slot.number} (pid {process.pid}) {how} after {lived:.1f} s; "
            f"restarting it in {delay:g} s (restart {slot.restarts + 1})")

    def signal_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                try:
                    slot.process.send_signal(signum)
                except ProcessLookupError:
                    pass

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to every worker, then wait; kill what is left after `timeout`."""
        for slot in self.slots:
            slot.due = None
        self.signal_all(signal.SIGTERM)
        deadline = self.clock() + timeout
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                slot.process.wait(max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                say(f"worker {slot.number} (pid {slot.process.pid}) did not stop in "
                    f"{timeout:g} s: killing it")
                slot.process.kill()
                slot.process.wait()
            self.on_death(slot.process.pid)
            slot.process = None

    def states(self) -> list[WorkerState]:
        return [WorkerState(s.number, s.process.pid if s.process else None, s.restarts)
                for s in self.slots]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class MetricsFollower:
    """Serve the gateway's metrics where the policy says, moving the endpoint when the policy
    file changes or on SIGHUP (a policy that does not load keeps the endpoint as it is, like
    the workers keep the policy in force)."""

    def __init__(self, policy: Policy, endpoint: Endpoint, enabled: bool) -> None:
        self.policy = policy
        self.endpoint = endpoint
        self.enabled = enabled
        self._stamp = _stamp(policy.path)

    def apply(self) -> None:
        settings = self.policy.metrics
        try:
            if self.enabled and settings.enabled:
                self.endpoint.serve(settings.host, settings.port)
            else:
                self.endpoint.stop()
        except OSError as exc:
            say(str(exc))

    def check(self, forced: bool = False) -> None:
        stamp = _stamp(self.policy.path)
        if stamp == self._stamp and not forced:
            return
        self._stamp = stamp
        try:
            self.policy = load_policy(self.policy.path)
        except PolicyError:
            return                          # the workers report it
        self.apply()

    def sources(self):
        return self.policy.remote_sources()


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return 0, 0


def shared_metrics_directory() -> Path:
    """An empty private directory for the workers' metrics files: in RAM (/dev/shm) where
    there is one, as prometheus-client advises, since every count is a write to it."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="webpolicy-metrics-", dir=base))


def run(command: Sequence[str], workers: int, policy: Policy, metrics_enabled: bool) -> int:
    """Supervise `workers` copies of `command` until SIGTERM/SIGINT; the exit status."""
    directory = shared_metrics_directory()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
    supervisor = Supervisor(command, workers, env,
                            on_death=lambda pid: worker_gone(directory, pid))
    endpoint = Endpoint(gateway_registry(directory, supervisor.states, lambda: follower.sources()))
    follower = MetricsFollower(policy, endpoint, metrics_enabled)
    wake = threading.Event()
    received: list[int] = []

    def handler(signum, frame) -> None:
        received.append(signum)
        wake.set()

    previous = {sig: signal.signal(sig, handler)
                for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        supervisor.start()
        follower.apply()
        say(f"{workers} workers started (pids {', '.join(str(s.pid) for s in supervisor.states())})")
        return _loop(supervisor, follower, wake, received)
    except SupervisorError as exc:
        say(str(exc))
        supervisor.stop()
        return 1
    finally:
        endpoint.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)
        shutil.rmtree(directory, ignore_errors=True)


def _loop(supervisor: Supervisor, follower: MetricsFollower, wake: threading.Event,
          received: list[int]) -> int:
    while True:
        wake.wait(POLL_SECONDS)
        wake.clear()
        while received:
            signum = received.pop(0)
            if signum == signal.SIGHUP:
                say("SIGHUP: every worker reloads the policy")
                supervisor.signal_all(signal.SIGHUP)
                follower.check(forced=True)
            else:
                say(f"{signal.Signals(signum).name}: stopping the workers")
                supervisor.stop()
                return 0
        supervisor.check()
        follower.check()
