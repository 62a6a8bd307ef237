"""`webpolicy selftest` against the real gateway, for every profile of the test policy: each
list's reserved name is decided as the policy says, and a policy that says otherwise than the
running gateway is reported as a failure (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from .conftest import LEARNER_IP, STAFF_IP

pytestmark = pytest.mark.e2e


def selftest(proxy, policy, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webpolicy.cli.main", "selftest", "--proxy",
                           f"127.0.0.1:{proxy.port}", "--policy", str(policy), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("client, profile, expected", [
    (LEARNER_IP, "learner", {"ctiru": "block", "adult": "block", "gambling": "block",
                             "social": "log"}),
    (STAFF_IP, "staff", {"ctiru": "block", "adult": "log", "gambling": "log", "social": "allow"}),
])
def test_every_list_is_decided_as_the_policy_says(proxy, sites, client, profile, expected):
    contacted = sites.log.connections.copy()
    done = selftest(proxy, proxy.policy_path, "--source", client, "--profile", profile)
    assert done.returncode == 0, done.stdout + done.stderr
    for name, action in expected.items():
        assert any(line.split()[:2] == ["ok", name] and f"got {action}" in line
                   for line in done.stdout.splitlines()), (name, done.stdout)
    kept = json.loads((proxy.policy_path.parent / "selftest-last.json").read_text())
    assert kept["failed"] == 0 and kept["passed"] == len(expected)
    assert sites.log.connections == contacted, "a test request left the gateway"


def test_a_difference_and_a_wrong_profile_are_failures(proxy, tmp_path):
    stricter = tmp_path / "policy.yaml"
    text = proxy.policy_path.read_text().replace("    log: [social]\n", "    block: [social]\n", 1)
    assert text != proxy.policy_path.read_text()
    stricter.write_text(text.replace("    block: [ctiru, adult, gambling]\n", "", 1))
    for path in proxy.policy_path.parent.glob("lists"):
        (tmp_path / "lists").symlink_to(path)
    done = selftest(proxy, stricter, "--source", LEARNER_IP)
    assert done.returncode == 1
    assert any(line.split()[:2] == ["FAIL", "social"] and "expected block" in line
               and "got log" in line for line in done.stdout.splitlines()), done.stdout
    wrong = selftest(proxy, proxy.policy_path, "--source", LEARNER_IP, "--profile", "staff")
    assert wrong.returncode == 1 and "not staff" in wrong.stdout


def statutory_blocks(proxy) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.metrics_port}/metrics",
                                timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("webpolicy_statutory_blocks_total{"))


def test_test_requests_are_logged_but_not_counted(proxy):
    before = statutory_blocks(proxy)
    done = selftest(proxy, proxy.policy_path, "--source", LEARNER_IP)
    assert done.returncode == 0, done.stdout
    records = proxy.records(1, lambda r: r["host"] == "ctiru.selftest.webpolicy.invalid")
    assert records and records[0]["action"] == "blocked"
    assert statutory_blocks(proxy) == before, "a self-test counted as a statutory block"
