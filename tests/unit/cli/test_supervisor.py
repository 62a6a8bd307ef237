"""The supervisor of `webpolicy run --workers N` (cli/supervisor.py): starting, restarting with
backoff, giving up, forwarding signals and stopping; with fake processes and a fake clock
where timing is the point, and with real child processes where signals are."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from webpolicy.cli import main as cli
from webpolicy.cli import supervisor as sup
from webpolicy.cli.supervisor import GIVE_UP_AFTER, RESTART_DELAYS, STABLE_SECONDS, Supervisor


class FakeProcess:
    pids = iter(range(1000, 10**6))

    def __init__(self, command, env) -> None:
        self.command, self.env = command, env
        self.pid = next(self.pids)
        self.returncode: int | None = None
        self.signals: list[int] = []
        self.ignores_term = False

    def poll(self):
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)
        if signum == signal.SIGTERM and not self.ignores_term:
            self.returncode = -signal.SIGTERM

    def wait(self, timeout=None):
        if self.returncode is None:
            raise subprocess.TimeoutExpired("worker", timeout)
        return self.returncode

    def kill(self) -> None:
        self.returncode = -signal.SIGKILL


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    spawned: list[FakeProcess] = []
    dead: list[int] = []
    clock = Clock()

    def spawn(command, env):
        spawned.append(FakeProcess(command, env))
        return spawned[-1]

    supervisor = Supervisor(["mitmdump", "-s", "x"], 3, {"KEEP": "1"}, spawn=spawn, clock=clock,
                            on_death=dead.append)
    return supervisor, spawned, dead, clock


def test_each_worker_is_started_with_its_number(world):
    supervisor, spawned, _, _ = world
    supervisor.start()
    assert [p.env[sup.WORKER_ENV] for p in spawned] == ["0", "1", "2"]
    assert {p.env[sup.WORKERS_ENV] for p in spawned} == {"3"}
    assert all(p.env["KEEP"] == "1" and p.command == ["mitmdump", "-s", "x"] for p in spawned)
    assert [s.pid for s in supervisor.states()] == [p.pid for p in spawned]


def test_a_dead_worker_is_restarted_after_a_delay_and_counted(world, capsys):
    supervisor, spawned, dead, clock = world
    supervisor.start()
    victim = spawned[1]
    victim.returncode = -signal.SIGKILL
    clock.now += 1
    supervisor.check()
    assert dead == [victim.pid]
    assert supervisor.states()[1].pid is None                      # waiting
    assert f"worker 1 (pid {victim.pid}) was killed by SIGKILL" in capsys.readouterr().err
    clock.now += RESTART_DELAYS[0] - 0.01
    supervisor.check()
    assert len(spawned) == 3                                       # not yet
    clock.now += 0.02
    supervisor.check()
    assert len(spawned) == 4 and spawned[3].env[sup.WORKER_ENV] == "1"
    assert [s.restarts for s in supervisor.states()] == [0, 1, 0]
    assert supervisor.states()[1].pid == spawned[3].pid


def test_the_delay_grows_while_a_worker_keeps_dying_and_resets_once_it_served(world):
    supervisor, spawned, _, clock = world
    supervisor.start()
    delays = []
    for _ in range(3):
        spawned[-1 if len(spawned) > 3 else 2].returncode = 1
        supervisor.check()
        delays.append(supervisor.slots[2].due - clock.now)
        clock.now = supervisor.slots[2].due
        supervisor.check()
    assert delays == list(RESTART_DELAYS[:3])
    clock.now += STABLE_SECONDS + 1                                # this one served a while
    spawned[-1].returncode = 1
    supervisor.check()
    assert supervisor.slots[2].due - clock.now == RESTART_DELAYS[0]


def test_a_worker_that_keeps_dying_at_once_stops_the_gateway(world):
    supervisor, spawned, _, clock = world
    supervisor.start()
    with pytest.raises(sup.SupervisorError, match="giving up"):
        for _ in range(GIVE_UP_AFTER):
            spawned[-1 if len(spawned) > 3 else 0].returncode = 2
            supervisor.check()
            clock.now = supervisor.slots[0].due or clock.now
            supervisor.check()


def test_signals_go_to_every_live_worker(world):
    supervisor, spawned, _, _ = world
    supervisor.start()
    spawned[0].returncode = 0
    supervisor.signal_all(signal.SIGHUP)
    assert [p.signals for p in spawned] == [[], [signal.SIGHUP], [signal.SIGHUP]]


def test_stop_terminates_all_and_kills_one_that_lingers(world, capsys):
    supervisor, spawned, dead, _ = world
    supervisor.start()
    spawned[2].ignores_term = True
    supervisor.stop(timeout=0)
    assert all(p.signals == [signal.SIGTERM] for p in spawned)
    assert spawned[2].returncode == -signal.SIGKILL
    assert sorted(dead) == sorted(p.pid for p in spawned)
    assert "did not stop" in capsys.readouterr().err
    supervisor.check()
    assert len(spawned) == 3                                       # nothing restarted


def test_real_workers_get_sighup_and_sigterm(tmp_path: Path):
    """Real processes: the supervisor's signals arrive (a worker writes what it got)."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "out = open(sys.argv[1] + os.environ['WEBPOLICY_WORKER'], 'a', buffering=1)\n"
        "signal.signal(signal.SIGHUP, lambda *a: out.write('hup\\n'))\n"
        "signal.signal(signal.SIGTERM, lambda *a: (out.write('term\\n'), sys.exit(0)))\n"
        "out.write('up\\n')\n"
        "while True: time.sleep(0.05)\n")
    supervisor = Supervisor([sys.executable, str(script), str(tmp_path / "w")], 2, {})
    supervisor.start()
    files = [tmp_path / "w0", tmp_path / "w1"]
    _wait(lambda: all(f.exists() and "up" in f.read_text() for f in files))
    supervisor.signal_all(signal.SIGHUP)
    _wait(lambda: all("hup" in f.read_text() for f in files))
    supervisor.stop(timeout=10)
    assert [f.read_text().split() for f in files] == [["up", "hup", "term"]] * 2
    assert all(s.pid is None for s in supervisor.states())


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_exit_descriptions():
    assert sup.describe_exit(-9) == "was killed by SIGKILL"
    assert sup.describe_exit(3) == "exited with status 3"


def test_worker_environment_names_match_the_proxy_side():
    from webpolicy.proxy import reuseport
    assert (sup.WORKER_ENV, sup.WORKERS_ENV, sup.FORM_KEY_ENV) == (
        reuseport.WORKER_ENV, reuseport.WORKERS_ENV, reuseport.FORM_KEY_ENV)


def test_every_worker_and_a_restarted_one_share_the_review_form_key(world, monkeypatch):
    supervisor, spawned, _, clock = world
    supervisor.start()
    spawned[1].returncode = 1
    clock.now += 1
    supervisor.check()
    clock.now += RESTART_DELAYS[0] + 1
    supervisor.check()
    keys = {p.env[sup.FORM_KEY_ENV] for p in spawned}
    assert len(spawned) == 4 and len(keys) == 1
    from webpolicy.proxy import reuseport
    monkeypatch.setenv(reuseport.WORKER_ENV, "1")
    monkeypatch.setenv(reuseport.FORM_KEY_ENV, keys.pop())
    assert reuseport.form_key() == bytes.fromhex(spawned[0].env[sup.FORM_KEY_ENV])
    monkeypatch.delenv(reuseport.WORKER_ENV)
    assert reuseport.form_key() is None                # outside worker mode: its own key


@pytest.mark.parametrize("text", ["0", "-1", "many"])
def test_workers_must_be_a_positive_number(text, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--workers", text])
    assert "is not a number of workers" in capsys.readouterr().err


def test_workers_refuse_an_ephemeral_listen_port_and_udp_listeners():
    assert "fixed --listen-port" in cli._workers_problem(["--listen-port", "0"])
    assert cli._workers_problem(["--listen-port", "3128", "--set", "x=0"]) is None
    assert cli._workers_problem(["--mode", "regular", "--mode", "transparent@8081"]) is None
    problem = cli._workers_problem(["--mode", "regular", "--mode", "dns@5353"])
    assert "--mode dns@5353 listens on UDP" in problem and "--workers 1" in problem


def test_the_metrics_option_reaches_the_supervisor():
    assert cli._metrics_option(["--set", "webpolicy_metrics=false"]) is False
    assert cli._metrics_option(["--set", "webpolicy_metrics=true"]) is True
    assert cli._metrics_option([]) is True


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_endpoint_follows_the_policy_file_and_keeps_its_place_on_a_broken_edit(tmp_path):
    from prometheus_client import CollectorRegistry

    from tests.unit.helpers import policy_yaml, write_policy
    from webpolicy.monitoring.metrics import Endpoint
    from webpolicy.policy.model import load_policy

    def policy_text(port: int) -> str:
        return policy_yaml(learner={"block": ["gambling"]}, staff={"block": []},
                           lists=["gambling"], extra=f'metrics: {{listen: "127.0.0.1:{port}"}}\n')

    first, second = _free_port(), _free_port()
    path = write_policy(tmp_path, policy_text(first), {"gambling.txt": "bet.test\n"})
    follower = sup.MetricsFollower(load_policy(path), Endpoint(CollectorRegistry()), True)
    try:
        follower.apply()
        assert follower.endpoint.address == ("127.0.0.1", first)
        path.write_text(policy_text(second) + "\n# edited\n")
        follower.check()
        assert follower.endpoint.address == ("127.0.0.1", second)
        path.write_text("profiles: [not, a, policy\n")
        follower.check(forced=True)                                # as on SIGHUP
        assert follower.endpoint.address == ("127.0.0.1", second)
    finally:
        follower.endpoint.stop()
    off = sup.MetricsFollower(load_policy(write_policy(tmp_path / "off", policy_text(first),
                                                       {"gambling.txt": "bet.test\n"})),
                              Endpoint(CollectorRegistry()), False)
    off.apply()
    assert off.endpoint.address is None
