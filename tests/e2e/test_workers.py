"""`webpolicy run --workers 2`: two mitmdump workers behind one listening address
(SO_REUSEPORT), supervised by `webpolicy run` (cli/supervisor.py), with real curl from
distinct loopback source addresses.

Each client's request is decided by its own profile whichever worker takes it (the client
address survives the kernel's balancing); both workers serve; one scrape of the supervisor's
endpoint adds up every worker's counts; a policy edit and a SIGHUP to the supervisor reach
both; a killed worker loses nothing the other can serve, and is restarted and counted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import LEARNER_IP, STAFF_IP, write_policy
from .proxy import WorkersProxy, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ADDON = Path(__file__).with_name("worker_addon.py")
ROUNDS = 16          # connections per check: all on one worker by chance is 1 in 2**15


@pytest.fixture(scope="module")
def gateway(sites, tmp_path_factory) -> Iterator[WorkersProxy]:
    directory = tmp_path_factory.mktemp("workers")
    policy_path, metrics_port = write_policy(directory)
    running = WorkersProxy(directory, policy_path, free_port(), metrics_port,
                           sites.hosts_file(), sites.ca, ["-s", str(ADDON)]).start()
    yield running
    assert running.stop() == 0, running.output[-3000:]


def served_by(result) -> int:
    for line in result.body.splitlines():
        if line.lower().startswith("x-test-worker-pid:"):
            return int(line.split(":", 1)[1])
    raise AssertionError(f"no worker header in:\n{result.body[:500]}")


def worker_pids(gateway: WorkersProxy, rounds: int = ROUNDS) -> set[int]:
    """The pids that served `rounds` new connections (each curl is one)."""
    pids = set()
    for n in range(rounds):
        result = gateway.curl(f"http://news.test/which-{n}", "-i", client_ip=STAFF_IP)
        assert result.status == 200, result.stderr
        pids.add(served_by(result))
    return pids


def requests_total(gateway: WorkersProxy) -> dict[tuple[str, str], float]:
    return {(dict(labels)["profile"], dict(labels)["action"]): value
            for (name, labels), value in gateway.metrics().items()
            if name == "webpolicy_requests_total"}


def test_both_workers_serve_and_each_client_gets_its_profile(gateway):
    assert len(worker_pids(gateway)) == 2
    learner_pids, staff_pids = set(), set()
    for n in range(ROUNDS):
        learner = gateway.curl(f"http://www.gambling.test/l{n}", "-i", client_ip=LEARNER_IP)
        assert learner.status == 403 and "Gambling" in learner.body
        staff = gateway.curl(f"http://www.gambling.test/s{n}", "-i", client_ip=STAFF_IP)
        assert staff.status == 200
        learner_pids.add(served_by(learner))
        staff_pids.add(served_by(staff))
    # both workers decided for both addresses, and each decided by the address's profile
    assert len(learner_pids) == 2 and len(staff_pids) == 2
    records = gateway.records(2 * ROUNDS, lambda r: r["host"] == "www.gambling.test")
    assert len(records) == 2 * ROUNDS
    assert {(r["client_ip"], r["profile"], r["action"]) for r in records} == {
        (LEARNER_IP, "learner", "blocked"), (STAFF_IP, "staff", "logged")}
    assert len({r["id"] for r in records}) == 2 * ROUNDS          # unique references


def test_one_scrape_gives_the_totals_of_both_workers(gateway):
    before = requests_total(gateway)
    for n in range(ROUNDS):
        assert gateway.curl(f"http://adult.test/m{n}", client_ip=LEARNER_IP).status == 403
        assert gateway.curl(f"http://news.test/m{n}", client_ip=STAFF_IP).status == 200
    after = requests_total(gateway)
    changed = {key: after[key] - before.get(key, 0) for key in after
               if after[key] != before.get(key, 0)}
    assert changed == {("learner", "block"): ROUNDS, ("staff", "allow"): ROUNDS}
    metrics = gateway.metrics()
    assert metrics[("webpolicy_workers_running", frozenset())] == 2


def test_a_policy_edit_and_a_sighup_reach_both_workers(gateway):
    text = gateway.policy_path.read_text()
    gateway.policy_path.write_text(text.replace('version: "e2e-1"', 'version: "e2e-2"')
                                   .replace("deny: []", "deny: [news.test]"))
    deadline = time.monotonic() + 30
    while gateway.output.count("webpolicy: policy e2e-2 in force") < 2:
        assert time.monotonic() < deadline, gateway.output[-3000:]
        time.sleep(0.1)
    for n in range(ROUNDS):
        assert gateway.curl(f"http://news.test/r{n}", client_ip=STAFF_IP).status == 403
    metrics = gateway.metrics()
    assert metrics[("webpolicy_policy_info", frozenset({("version", "e2e-2")}))] == 1
    assert metrics[("webpolicy_policy_info", frozenset({("version", "e2e-1")}))] == 0
    successes = ("webpolicy_policy_reloads_total", frozenset({("result", "success")}))
    before = metrics[successes]
    os.kill(gateway.process.pid, signal.SIGHUP)      # the supervisor, as systemctl reload does
    deadline = time.monotonic() + 30
    while gateway.metrics()[successes] < before + 2:
        assert time.monotonic() < deadline, gateway.output[-3000:]
        time.sleep(0.1)
    restored = gateway.output.count("webpolicy: policy e2e-1 in force")
    gateway.policy_path.write_text(text)              # back, for the tests after this one
    deadline = time.monotonic() + 30
    while gateway.output.count("webpolicy: policy e2e-1 in force") < restored + 2:   # both
        assert time.monotonic() < deadline, gateway.output[-3000:]
        time.sleep(0.1)
    while gateway.curl("http://news.test/back", client_ip=STAFF_IP).status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_killed_worker_loses_nothing_the_other_can_serve_and_is_restarted(gateway):
    pids = worker_pids(gateway)
    assert len(pids) == 2
    victim, survivor = sorted(pids)
    os.kill(victim, signal.SIGKILL)
    # Dead once the supervisor has reaped it: only then are its sockets closed (the process
    # shows as a zombie earlier, while its other threads are still exiting).  Until then the
    # kernel may still give it a connection, which is reset: net.ipv4.tcp_migrate_req=1 hands
    # those to the other worker instead (docs/deployment.md).
    deadline = time.monotonic() + 10
    while f"(pid {victim}) was killed by SIGKILL" not in gateway.output:
        assert time.monotonic() < deadline, gateway.output[-3000:]
        time.sleep(0.01)
    for n in range(ROUNDS):                           # at once: the survivor takes them all
        result = gateway.curl(f"http://news.test/after-kill-{n}", "-i", client_ip=STAFF_IP)
        assert result.status == 200, (n, result.stderr)
    deadline = time.monotonic() + 60
    while True:
        metrics = gateway.metrics()
        restarts = sum(v for (name, _), v in metrics.items()
                       if name == "webpolicy_worker_restarts_total")
        if restarts == 1 and metrics[("webpolicy_workers_running", frozenset())] == 2 \
                and gateway.output.count("webpolicy: filtering with policy") >= 3:
            break
        assert time.monotonic() < deadline, gateway.output[-3000:]
        time.sleep(0.2)
    now = worker_pids(gateway)
    assert survivor in now and victim not in now and len(now) == 2

