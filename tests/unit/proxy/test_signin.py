"""signin.py: directory logins in the add-on's hooks, with the directory replaced by a fake
(tests/e2e/test_directory.py runs a real one).  The header never goes on; the password is
in no metadata; the directory is asked in a worker thread, once per cache period; a
directory that cannot be asked refuses; a hook failing after the wait still fails closed."""

from __future__ import annotations

import asyncio
import base64
import threading

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from tests.unit.helpers import engine_from
from webpolicy.identity.directory import DirectoryUnavailable, SignedInUser
from webpolicy.proxy.addon import WebPolicy
from webpolicy.proxy.gate import SIGNED_IN_USER

POLICY = """\
version: "unit"
default_profile: learner
profiles:
  learner: {block: [gambling]}
  staff: {block: [], on_error: allow}
clients:
  groups:
    - {group: "cn=staff,dc=test", profile: staff}
directory: {url: "ldap://127.0.0.1:1", base_dn: "dc=test", cache_minutes: 5}
lists:
  gambling: {category: Gambling, sources: [gambling.txt]}
"""
LISTS = {"gambling.txt": "gambling.example\n"}


class FakeDirectory:
    def __init__(self, answer=None):
        self.asked: list[tuple[str, str, str]] = []
        self.answer = answer

    def check(self, user: str, password: str):
        self.asked.append((user, password, threading.current_thread().name))
        if isinstance(self.answer, Exception):
            raise self.answer
        if password == "right":
            return SignedInUser(user, {"cn=staff,dc=test"} if user == "sam" else set())
        return None


@pytest.fixture
def addon(tmp_path) -> WebPolicy:
    policy = WebPolicy()
    policy.gate.engine = engine_from(tmp_path, POLICY, LISTS)
    return policy


def fake(addon: WebPolicy, answer=None) -> FakeDirectory:
    addon.signin.settings()                       # builds the real client; replace it
    directory = FakeDirectory(answer)
    addon.signin._directory = directory
    return directory


def flow(host: str = "gambling.example", login: str | None = None, ip: str = "10.1.0.5",
         method: str = "GET") -> http.HTTPFlow:
    f = tflow.tflow()
    f.client_conn.peername = (ip, 50000)
    f.client_conn.proxy_mode = ProxyMode.parse("regular")
    f.request = tutils.treq(host=host, port=80, path=b"/", scheme=b"http", method=method.encode())
    if login is not None:
        f.request.headers["Proxy-Authorization"] = \
            "Basic " + base64.b64encode(login.encode()).decode()
    return f


def run(hook, f: http.HTTPFlow) -> None:
    waiting = hook(f)
    if waiting is not None:
        asyncio.run(waiting)


def test_no_login_is_asked_for(addon):
    directory = fake(addon)
    f = flow()
    run(addon.requestheaders, f)
    assert f.response.status_code == 407
    assert f.response.headers["proxy-authenticate"].startswith('Basic realm="Web filter"')
    assert directory.asked == []


def test_a_right_login_is_checked_in_a_thread_once_then_cached(addon):
    directory = fake(addon)
    for _ in range(3):
        f = flow(login="sam:right")
        run(addon.requestheaders, f)
        assert f.response is None                                   # staff: allowed
        assert "proxy-authorization" not in f.request.headers      # never goes on
        assert f.metadata[SIGNED_IN_USER] == SignedInUser("sam", {"cn=staff,dc=test"})
        assert "right" not in repr(f.metadata)
    assert len(directory.asked) == 1
    assert directory.asked[0][2].startswith("webpolicy-directory")  # not the event loop
    learner = flow(login="pat:right")
    run(addon.requestheaders, learner)
    assert learner.response.status_code == 403                      # pat: the default profile


def test_a_wrong_password_is_refused_and_failures_throttle(addon):
    directory = fake(addon)
    for _ in range(10):
        f = flow(login="sam:guess", ip="10.1.0.9")
        run(addon.requestheaders, f)
        assert f.response.status_code == 407
    asked = len(directory.asked)
    f = flow(login="sam:right", ip="10.1.0.9")
    run(addon.requestheaders, f)
    assert f.response.status_code == 407 and len(directory.asked) == asked   # not asked
    f = flow(login="sam:right", ip="10.1.0.10")
    run(addon.requestheaders, f)
    assert f.response is None


def test_an_unreachable_directory_fails_closed(addon):
    fake(addon, DirectoryUnavailable("down"))
    f = flow(host="news.example", login="sam:right")
    run(addon.requestheaders, f)
    assert f.response.status_code == 503
    assert b"cannot check sign-ins" in f.response.content


def test_a_tunnel_keeps_its_login_for_the_requests_inside(addon):
    fake(addon)
    connect = flow(login="sam:right", method="CONNECT")
    run(addon.http_connect, connect)
    assert connect.response is None
    assert str(addon.gate.users[connect.client_conn.id]) == "sam"
    inside = flow()                                  # no header inside an intercepted tunnel
    inside.client_conn = connect.client_conn
    run(addon.requestheaders, inside)
    assert inside.response is None and str(inside.metadata[SIGNED_IN_USER]) == "sam"
    addon.client_disconnected(connect.client_conn)
    again = flow()
    again.client_conn = connect.client_conn
    run(addon.requestheaders, again)
    assert again.response.status_code == 407


def test_a_hook_failing_after_the_wait_still_fails_closed(addon, monkeypatch):
    fake(addon)
    monkeypatch.setattr(addon.requests, "filter", lambda f: 1 / 0)
    f = flow(host="news.example", login="sam:right")
    run(addon.requestheaders, f)
    assert f.response is not None and f.response.status_code >= 500


def test_without_a_directory_nothing_is_asked(tmp_path):
    addon = WebPolicy()
    addon.gate.engine = engine_from(tmp_path, POLICY.replace(
        'directory: {url: "ldap://127.0.0.1:1", base_dn: "dc=test", cache_minutes: 5}\n', ""),
        LISTS)
    f = flow(host="news.example")
    assert addon.requestheaders(f) is None and f.response is None


@pytest.mark.parametrize("user, allowed", [("sam", True), ("pat", False)])
def test_while_the_directory_is_down_only_on_error_allow_keeps_a_checked_password(
        addon, user, allowed):
    """Staff (on_error: allow) keep working on a password the directory accepted within
    logins.STALE_SECONDS; learners fail closed; a different password is never accepted."""
    from webpolicy.identity.logins import STALE_SECONDS, LoginCache
    now = [0.0]
    directory = fake(addon)
    addon.signin.cache = LoginCache(300, clock=lambda: now[0])
    run(addon.requestheaders, flow(host="news.example", login=f"{user}:right"))
    directory.answer = DirectoryUnavailable("down")
    now[0] = 301.0                                       # the cache period is over
    f = flow(host="news.example", login=f"{user}:right")
    run(addon.requestheaders, f)
    assert (f.response is None) is allowed
    if not allowed:
        assert f.response.status_code == 503
    other = flow(host="news.example", login=f"{user}:other")
    run(addon.requestheaders, other)
    assert other.response.status_code == 503
    now[0] = 300 + STALE_SECONDS                          # too long ago: fail closed
    late = flow(host="news.example", login=f"{user}:right")
    run(addon.requestheaders, late)
    assert late.response.status_code == 503


def test_an_htpasswd_file_goes_through_the_same_cache(tmp_path, monkeypatch):
    """directory: {htpasswd: FILE}: a bcrypt check in the login thread, once per person per
    cache period, not on every request (mitmproxy's --proxyauth checks every request)."""
    import bcrypt

    from webpolicy.identity import htpasswd
    (tmp_path / "htpasswd").write_text(
        "pat:" + bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode() + "\n")
    addon = WebPolicy()
    addon.gate.engine = engine_from(tmp_path, POLICY.replace(
        'directory: {url: "ldap://127.0.0.1:1", base_dn: "dc=test", cache_minutes: 5}',
        "directory: {htpasswd: htpasswd, cache_minutes: 5}"), LISTS)
    checks: list[str] = []
    real = htpasswd.bcrypt.checkpw
    monkeypatch.setattr(htpasswd.bcrypt, "checkpw", lambda password, hashed: (
        checks.append(threading.current_thread().name), real(password, hashed))[1])
    for _ in range(3):
        f = flow(host="news.example", login="pat:right")
        run(addon.requestheaders, f)
        assert f.response is None and str(f.metadata[SIGNED_IN_USER]) == "pat"
    assert len(checks) == 1 and checks[0].startswith("webpolicy-directory")
    wrong = flow(host="news.example", login="pat:wrong")
    run(addon.requestheaders, wrong)
    assert wrong.response.status_code == 407


@pytest.mark.parametrize("workers, limit", [(1, 10), (2, 5), (3, 4), (16, 1)])
def test_workers_share_the_failed_login_limit(monkeypatch, workers, limit):
    """With `webpolicy run --workers N` each worker allows its share of the failures, so an
    address's connections, spread over the workers, get about one limit in all."""
    if workers > 1:
        monkeypatch.setenv("WEBPOLICY_WORKER", "0")
        monkeypatch.setenv("WEBPOLICY_WORKERS", str(workers))
    assert WebPolicy().signin.throttle.limit == limit
