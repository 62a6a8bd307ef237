"""Hot reload, a broken edit, fail-closed, identity by proxy login: real mitmdump."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import LEARNER_IP, STAFF_IP

pytestmark = pytest.mark.e2e


def _wait_status(proxy, url, status, client_ip=LEARNER_IP, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.curl(url, client_ip=client_ip).status == status:
            return True
        time.sleep(0.2)
    return False


def test_list_edit_is_picked_up_without_restart(make_proxy):
    proxy = make_proxy()
    assert proxy.curl("http://news.test/", client_ip=LEARNER_IP).status == 200
    gambling = proxy.directory / "lists/gambling.txt"
    gambling.write_text(gambling.read_text() + "news.test\n")
    assert _wait_status(proxy, "http://news.test/", 403), proxy.output


def test_broken_policy_edit_keeps_old_policy_enforcing(make_proxy):
    proxy = make_proxy()
    assert proxy.curl("http://www.gambling.test/", client_ip=LEARNER_IP).status == 403
    text = proxy.policy_path.read_text()
    proxy.policy_path.write_text(text.replace("block: [ctiru, adult, gambling]",
                                              "block: [ctiru, adult, gambling, nosuchlist]"))
    assert proxy.wait_for_output("reload refused"), proxy.output
    assert "unknown list 'nosuchlist'" in proxy.output
    assert "policy.yaml:" in proxy.output
    assert proxy.curl("http://www.gambling.test/", client_ip=LEARNER_IP).status == 403
    assert proxy.curl("http://news.test/", client_ip=LEARNER_IP).status == 200


def test_sighup_reloads(make_proxy):
    proxy = make_proxy(options={"webpolicy_reload_interval": "0"})
    text = proxy.policy_path.read_text()
    proxy.policy_path.write_text(text.replace('version: "e2e-1"', 'version: "e2e-2"'))
    os.kill(proxy.process.pid, signal.SIGHUP)
    assert proxy.wait_for_output("policy e2e-2 in force"), proxy.output
    assert proxy.process.poll() is None, "SIGHUP must not kill the proxy"


def test_induced_engine_error_fails_closed(make_proxy):
    proxy = make_proxy(extra_args=["-s", str(Path(__file__).with_name("fault_addon.py"))])
    learner = proxy.curl("http://explode.news.test/", "-H", "Accept: text/html",
                         client_ip=LEARNER_IP)
    assert learner.status == 503
    assert "The web filter is unavailable" in learner.body
    staff = proxy.curl("http://explode.news.test/", client_ip=STAFF_IP)
    assert staff.status != 503        # staff chose on_error: allow (the site does not resolve)
    actions = [r["action"] for r in proxy.records(wait_for=2)]
    assert "failed_closed" in actions


def test_missing_list_fails_closed_for_learners_only(make_proxy):
    proxy = make_proxy(name="missing-list")
    (proxy.directory / "lists/gambling.txt").unlink()
    proxy.stop()
    proxy.process = None
    proxy.start()
    assert proxy.curl("http://news.test/", client_ip=LEARNER_IP).status == 503
    assert proxy.curl("http://news.test/", client_ip=STAFF_IP).status == 200


def test_proxy_login_user_gets_staff_profile(make_proxy):
    proxy = make_proxy(options={"proxyauth": "alice:secret"})
    anonymous = proxy.curl("http://www.gambling.test/", client_ip=LEARNER_IP)
    assert anonymous.status == 407
    alice = proxy.curl("http://www.gambling.test/", "--proxy-user", "alice:secret",
                       client_ip=LEARNER_IP)
    assert alice.status == 200
    alice_tls = proxy.curl("https://www.gambling.test/", "--proxy-user", "alice:secret",
                           client_ip=LEARNER_IP)
    assert alice_tls.status == 200
    records = proxy.records(wait_for=2)
    assert {r["user"] for r in records} == {"alice"}
    assert all(r["profile_reason"] == "user" for r in records)
    # A header sent by the client never sets identity.
    spoof = proxy.curl("http://www.gambling.test/", "--proxy-user", "bob:secret",
                       "-H", "X-Forwarded-User: alice", client_ip=LEARNER_IP)
    assert spoof.status == 407


def test_audit_log_permissions(make_proxy):
    proxy = make_proxy()
    proxy.curl("http://www.gambling.test/", client_ip=LEARNER_IP)
    assert proxy.records(wait_for=1)
    assert proxy.log_dir.stat().st_mode & 0o777 == 0o700
    for path in proxy.log_dir.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
