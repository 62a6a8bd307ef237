"""Proxy logins checked against a real OpenLDAP directory (slapd on loopback), through real
mitmdump and curl: the group a login is in (nested groups too) chooses its profile; a wrong
password, no login, a disabled account are refused with 407; a directory that cannot be
reached refuses (503, fail closed) except for a login checked within cache_minutes, and for
staff (on_error: allow) a password it accepted within the last hours; the password reaches
no upstream, log or record."""

from __future__ import annotations

import time
import urllib.request

import pytest

from .conftest import LISTS
from .ldapserver import GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, LdapServer, group_dn

POLICY = """\
version: "e2e-directory"
default_profile: learner
profiles:
  learner:
    block: [ctiru, adult, gambling]
  staff:
    block: [ctiru]
    log: [gambling]
    on_error: allow
clients:
  groups:
    - {{group: "cn=staff, ou=groups, dc=test", profile: staff}}
directory:
  url: {ldap_url}
  base_dn: ou=people,dc=test
  user_filter: "(&(objectClass=inetOrgPerson)(uid={{user}})(!(employeeType=disabled)))"
  bind_dn: {service_dn}
  bind_password_env: WEBPOLICY_TEST_LDAP_PASSWORD
  group_base_dn: ou=groups,dc=test
  cache_minutes: {cache_minutes}
  timeout_seconds: 2
  realm: Test College
lists:
  ctiru: {{statutory: true, category: Terrorist content (CTIRU), severity: critical, format: urls, sources: [lists/ctiru.txt]}}
  adult: {{category: Pornography, severity: high, format: ut1, sources: [lists/adult]}}
  gambling: {{category: Gambling, severity: medium, format: domains, sources: [lists/gambling.txt]}}
  social: {{category: Social networking, severity: low, format: domains, sources: [lists/social.txt]}}
logging: {{directory: logs, retention_days: 30}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
"""
assert LISTS                        # the standard test lists are written with the policy
GAMBLING = "http://www.gambling.test/"
STAFF_GROUP = group_dn("staff")


@pytest.fixture
def directory_proxy(make_proxy, ldap, monkeypatch):
    monkeypatch.setenv("WEBPOLICY_TEST_LDAP_PASSWORD", SERVICE_PASSWORD)

    def start(cache_minutes: float = 5):
        return make_proxy(policy=POLICY, ldap_url=ldap.url, service_dn=SERVICE_DN,
                          cache_minutes=cache_minutes)
    return start


def login(name: str, password: str | None = None) -> tuple[str, str]:
    return "--proxy-user", f"{name}:{PEOPLE[name][0] if password is None else password}"


def logins_metric(proxy, result: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.metrics_port}/metrics",
                                timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'webpolicy_proxy_logins_total{{result="{result}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no webpolicy_proxy_logins_total for {result}")


def test_the_group_of_a_login_chooses_its_profile(directory_proxy, ldap, sites):
    assert "cn=heads" in GROUPS["staff"] and PEOPLE["nina"][1] == ["heads"]
    proxy = directory_proxy()
    # staff, by direct membership and through a nested group: gambling is only logged
    for name in ("sam", "nina"):
        for url in (GAMBLING, "https://www.gambling.test/"):
            result = proxy.curl(url, *login(name))
            assert result.status == 200, (name, url, result)
    # a learner (a group no rule names): the default profile, blocked
    assert proxy.curl(GAMBLING, *login("pat")).status == 403
    assert proxy.curl("https://www.gambling.test/", *login("pat")).status == 403
    records = proxy.records(wait_for=6)
    by_user = {(r["user"], r["action"]) for r in records}
    assert {("sam", "logged"), ("nina", "logged"), ("pat", "blocked")} <= by_user, by_user
    reasons = {r["user"]: (r["profile"], r["profile_reason"]) for r in records}
    assert reasons["nina"] == ("staff", f"group {STAFF_GROUP}")
    assert reasons["pat"] == ("learner", "default")
    # the login never reaches the site, the log or the records
    seen = sites.log.requests_to("www.gambling.test")
    assert seen and all("proxy-authorization" not in r.headers for r in seen)
    written = proxy.output + "".join(p.read_text() for p in proxy.log_dir.glob("*.jsonl"))
    for password, _groups in PEOPLE.values():
        assert password not in written
    assert SERVICE_PASSWORD not in written
    assert logins_metric(proxy, "ok") >= 3


def test_no_login_a_wrong_password_and_a_disabled_account_get_407(directory_proxy):
    proxy = directory_proxy()
    for args in ((), login("sam", "not-the-password"), login("dora"),
                 login("nobody", "x"), ("--proxy-user", "sam:")):
        result = proxy.curl(GAMBLING, *args, "-D", "-")
        assert result.status == 407, (args, result)
        assert 'proxy-authenticate: basic realm="test college"' in result.body.lower()
    # a tunnel is refused the same way, before any upstream connection
    refused = proxy.curl("https://www.gambling.test/", *login("sam", "wrong"))
    assert refused.status != 200 and "407" in refused.stderr
    assert proxy.curl(GAMBLING, *login("sam")).status == 200


def test_failed_logins_are_throttled_per_address(directory_proxy):
    proxy = directory_proxy()
    for _ in range(10):
        assert proxy.curl(GAMBLING, *login("sam", "guess"), client_ip="127.0.0.5").status == 407
    # now even the right password is held back from that address, not from another
    assert proxy.curl(GAMBLING, *login("sam"), client_ip="127.0.0.5").status == 407
    assert proxy.curl(GAMBLING, *login("sam"), client_ip="127.0.0.6").status == 200
    assert logins_metric(proxy, "throttled") >= 1


def test_directory_down_fails_closed_per_profile(directory_proxy, ldap):
    """slapd stopped: a login checked within cache_minutes holds; after that, learners fail
    closed with a page that says why, while staff (on_error: allow) keep working on the
    password the directory accepted earlier; nobody new gets in."""
    proxy = directory_proxy(cache_minutes=0.1)            # 6 seconds
    assert proxy.curl(GAMBLING, *login("sam")).status == 200
    assert proxy.curl("http://news.test/", *login("pat")).status == 200
    signed_in = time.monotonic()
    ldap.stop()
    # the same person with the same password: from the cache, the directory is not asked
    assert proxy.curl(GAMBLING, *login("sam")).status == 200
    assert proxy.curl("https://www.gambling.test/", *login("sam")).status == 200
    assert proxy.curl("http://news.test/", *login("pat")).status == 200
    # anyone else, or another password, cannot be checked: refused, and said so
    down = proxy.curl(GAMBLING, *login("nina"))
    assert down.status == 503 and "cannot check sign-ins" in down.body
    assert proxy.curl(GAMBLING, *login("sam", "other")).status == 503
    assert "503" in proxy.curl("https://www.gambling.test/", *login("nina")).stderr
    # once the cache period is over: the learner fails closed, staff per on_error (allow)
    time.sleep(max(0.0, signed_in + 6.5 - time.monotonic()))
    learner = proxy.curl("http://news.test/", *login("pat"))
    assert learner.status == 503 and "cannot check sign-ins" in learner.body
    assert proxy.curl(GAMBLING, *login("sam")).status == 200
    assert proxy.curl(GAMBLING, *login("sam", "other")).status == 503
    assert logins_metric(proxy, "unavailable") >= 4
    assert logins_metric(proxy, "stale") >= 1
    ldap.start()
    assert proxy.curl("http://news.test/", *login("pat")).status == 200


def test_check_asks_the_directory_for_the_groups(ldap, tmp_path, monkeypatch):
    """`webpolicy check --user` decides with the groups the directory has for the user."""
    import json
    import subprocess
    import sys

    from .conftest import write_policy
    monkeypatch.setenv("WEBPOLICY_TEST_LDAP_PASSWORD", SERVICE_PASSWORD)
    path, _ = write_policy(tmp_path, POLICY, ldap_url=ldap.url, service_dn=SERVICE_DN,
                           cache_minutes=1)

    def check(user: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "webpolicy.cli.main", "check",
                               "http://www.gambling.test/", "--policy", str(path), "--user", user,
                               "--json"], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout)
    assert check("nina")["profile_reason"] == f"group {STAFF_GROUP}"      # nested
    assert check("pat")["profile_reason"] == "default"
    ldap.stop()
    assert check("nina")["profile_reason"] == "default"                    # warned, no groups


@pytest.mark.parametrize("how", ["ldaps", "start_tls"])
def test_the_directory_over_tls_checks_the_certificate(tmp_path, how):
    """LDAPS and StartTLS with `ca:` against the real slapd: a login checks; with another CA
    the connection is refused and the directory counts as unavailable (fail closed)."""
    from webpolicy.identity.directory import Directory, DirectoryUnavailable
    from webpolicy.policy.model import DirectorySettings

    from .ldapserver import make_tls
    server = LdapServer.create(tmp_path / "ldap", tls=True).start()
    try:
        # by name: ldap3 matches the certificate's DNS names, not IP addresses
        url = (server.ldaps_url if how == "ldaps" else server.url).replace("127.0.0.1",
                                                                          "localhost")
        settings = DirectorySettings(
            url=url, start_tls=how == "start_tls", ca=server.ca, base_dn="ou=people,dc=test",
            bind_dn=SERVICE_DN, bind_password_env="PW", group_base_dn="ou=groups,dc=test")
        directory = Directory(settings, environ={"PW": SERVICE_PASSWORD})
        assert directory.check("nina", PEOPLE["nina"][0]).groups >= {STAFF_GROUP}
        assert directory.check("nina", "wrong") is None
        other_ca = make_tls(tmp_path)[0]
        untrusted = Directory(DirectorySettings(**{**settings.__dict__, "ca": other_ca}),
                              environ={"PW": SERVICE_PASSWORD})
        with pytest.raises(DirectoryUnavailable):
            untrusted.check("nina", PEOPLE["nina"][0])
    finally:
        server.stop()
