"""The one fixture that starts the proxy, shared by every end-to-end test.

`sites` starts the upstream HTTP/HTTPS servers once per session; `proxy` is a mitmdump with the
standard test policy (below) shared by tests that only read; `make_proxy` starts a private one
for tests that edit the policy, kill the proxy or need other mitmdump options.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .ldapserver import LdapServer
from .proxy import Proxy, free_port
from .sites import Sites

STAFF_IP = "127.0.0.2"
LEARNER_IP = "127.0.0.3"
UNKNOWN_IP = "127.0.0.4"

LISTS = {
    "lists/ctiru.txt": "# CTIRU-style URL list (test entries only)\nctiru-host.test/terror/page\n",
    "lists/adult/domains": "adult.test\n",
    "lists/adult/urls": "news.test/adult-section\n",
    "lists/gambling.txt": "www.gambling.test\ncasino-bank.test\nunresolvable-casino.test\n",
    "lists/social.txt": "social.test\n",
}

POLICY = """\
version: "e2e-1"
default_profile: learner
profiles:
  learner:
    block: [ctiru, adult, gambling]
    log: [social]
  staff:
    block: [ctiru]
    log: [adult, gambling]
    on_error: allow
clients:
  users: {{alice: staff}}
  networks:
    - {{cidr: {staff_ip}/32, profile: staff}}
    - {{cidr: {learner_ip}/32, profile: learner}}
lists:
  ctiru: {{statutory: true, category: Terrorist content (CTIRU), severity: critical, format: urls, sources: [lists/ctiru.txt]}}
  adult: {{category: Pornography, severity: high, format: ut1, sources: [lists/adult]}}
  gambling: {{category: Gambling, severity: medium, format: domains, sources: [lists/gambling.txt]}}
  social: {{category: Social networking, severity: low, format: domains, sources: [lists/social.txt]}}
allow: [example.org/teaching/]
deny: []
passthrough: [bank.test, casino-bank.test]
block_page:
  organisation: E2E Test College
  contact: the test helpdesk
  review_url: https://helpdesk.example/review
logging: {{directory: logs, retention_days: 30}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
"""


def needs_root() -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("end-to-end tests need root and unshare (sites bind ports 80/443 on "
                    "127.0.1.x; the proxy resolves them through a private /etc/hosts)")


@pytest.fixture(scope="session")
def sites(tmp_path_factory) -> Iterator[Sites]:
    needs_root()
    running = Sites(tmp_path_factory.mktemp("sites"))
    yield running
    running.stop()


def write_policy(directory: Path, policy: str | None = None, lists: dict[str, str] | None = None,
                 **values) -> tuple[Path, int]:
    """Write a policy and its lists into `directory`; returns (policy path, metrics port)."""
    metrics_port = free_port()
    for relative, text in {**LISTS, **(lists or {})}.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    text = (policy or POLICY).format(staff_ip=STAFF_IP, learner_ip=LEARNER_IP,
                                     metrics_port=metrics_port, **values)
    path = directory / "policy.yaml"
    path.write_text(text)
    return path, metrics_port


@pytest.fixture
def make_proxy(sites: Sites, tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(policy: str | None = None, lists: dict[str, str] | None = None,
              extra_args: list[str] | None = None, options: dict[str, str] | None = None,
              name: str = "proxy", **values) -> Proxy:
        directory = tmp_path / name
        directory.mkdir()
        policy_path, metrics_port = write_policy(directory, policy, lists, **values)
        proxy = Proxy(directory, policy_path, free_port(), metrics_port, sites.hosts_file(),
                      sites.ca, extra_args or [], options or {})
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="session")
def proxy(sites: Sites, tmp_path_factory) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("shared-proxy")
    policy_path, metrics_port = write_policy(directory)
    running = Proxy(directory, policy_path, free_port(), metrics_port, sites.hosts_file(),
                    sites.ca).start()
    yield running
    running.stop()


@pytest.fixture
def ldap(tmp_path) -> Iterator[LdapServer]:
    """A real slapd on loopback with the fixture directory (ldapserver.py), for one test."""
    server = LdapServer.create(tmp_path / "ldap").start()
    yield server
    server.stop()
