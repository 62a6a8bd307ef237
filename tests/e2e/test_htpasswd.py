"""Proxy logins from an htpasswd file (`directory: {htpasswd: FILE}`) through real mitmdump
and curl: bcrypt cost 10 entries (too slow for mitmproxy's own --proxyauth) checked once and
then answered from the login cache; a wrong password, an unknown person, no login get 407;
an edited file applies without a reload; a file that cannot be read refuses (503)."""

from __future__ import annotations

import bcrypt

from .test_directory import GAMBLING, logins_metric

POLICY = """\
version: "e2e-htpasswd"
default_profile: learner
profiles:
  learner: {{block: [ctiru, gambling]}}
  staff: {{block: [ctiru], log: [gambling], on_error: allow}}
clients:
  users: {{sam: staff}}
directory:
  htpasswd: {htpasswd}
  cache_minutes: 5
  realm: Test College
lists:
  ctiru: {{statutory: true, category: Terrorist content (CTIRU), severity: critical, format: urls, sources: [lists/ctiru.txt]}}
  gambling: {{category: Gambling, severity: medium, format: domains, sources: [lists/gambling.txt]}}
logging: {{directory: logs, retention_days: 30}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
"""


def entry(user: str, password: str, cost: int = 10) -> str:
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()}\n"


def test_htpasswd_logins_are_checked_once_then_cached(make_proxy, tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(entry("sam", "sam-pw") + entry("pat", "pat-pw"))
    proxy = make_proxy(policy=POLICY, htpasswd=path)
    for _ in range(3):
        assert proxy.curl(GAMBLING, "--proxy-user", "sam:sam-pw").status == 200   # staff
    assert proxy.curl(GAMBLING, "--proxy-user", "pat:pat-pw").status == 403      # learner
    assert logins_metric(proxy, "ok") == 2 and logins_metric(proxy, "cached") == 2
    for args in ((), ("--proxy-user", "sam:wrong"), ("--proxy-user", "nobody:x")):
        assert proxy.curl(GAMBLING, *args).status == 407, args
    records = proxy.records(wait_for=2)
    assert {(r["user"], r["identified_by"], r["action"]) for r in records} == {
        ("sam", "login", "logged"), ("pat", "login", "blocked")}
    # an edited file: a new person signs in without a reload
    path.write_text(path.read_text() + entry("kim", "kim-pw", 4))
    assert proxy.curl(GAMBLING, "--proxy-user", "kim:kim-pw").status == 403
    # a file that cannot be read: fail closed for anyone not in the cache
    path.unlink()
    assert proxy.curl(GAMBLING, "--proxy-user", "pat:other").status == 503
    assert proxy.curl(GAMBLING, "--proxy-user", "sam:sam-pw").status == 200     # cached
