"""signinpage.py in the add-on's hooks, in process, with the directory replaced by a fake
(tests/e2e/test_signinpage.py drives the real page in Chromium against slapd).

Before sign-in a covered client gets the page (HTTPS) or a redirect to it (plain HTTP), and
statutory and block rules still apply first; the form needs its token; a right password
starts a session that names the person in records (identified_by: session); a wrong one is
counted and throttled; sign-out and a second person end the session; the password reaches
no metadata, record or upstream."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils
from webpolicy.identity.directory import DirectoryUnavailable, SignedInUser
from webpolicy.proxy import signinpage
from webpolicy.proxy.addon import WebPolicy
from webpolicy.proxy.gate import SIGNED_IN_USER

from tests.unit.helpers import engine_from

POLICY = """\
version: "unit"
default_profile: learner
profiles:
  learner: {block: [ctiru, gambling]}
  staff: {block: [ctiru], on_error: allow}
clients:
  groups:
    - {group: "cn=staff,dc=test", profile: staff}
directory: {url: "ldap://127.0.0.1:1", base_dn: "dc=test", cache_minutes: 5}
sign_in: {networks: [10.30.0.0/16], idle: 30m, max: 8h}
logging: {directory: logs}
lists:
  ctiru: {statutory: true, category: Terrorist content, severity: critical, format: urls, sources: [ctiru.txt]}
  gambling: {category: Gambling, sources: [gambling.txt]}
"""
LISTS = {"ctiru.txt": "ctiru.example/terror/page\n", "gambling.txt": "gambling.example\n"}
PC = "10.30.0.7"


class FakeDirectory:
    def __init__(self, answer=None):
        self.asked: list[tuple[str, str]] = []
        self.answer = answer

    def check(self, user: str, password: str):
        self.asked.append((user, threading.current_thread().name))
        if self.answer is not None:
            raise self.answer
        if password == "right":
            return SignedInUser(user, {"cn=staff,dc=test"} if user == "sam" else set())
        return None


@pytest.fixture
def addon(tmp_path: Path):
    policy = WebPolicy()
    engine = engine_from(tmp_path, POLICY, LISTS)
    policy.signinpage.install(engine.policy)
    policy._install(engine)                        # the engine and its log writer
    policy.signin.settings()                       # builds the real client; replace it
    policy.directory = FakeDirectory()
    policy.signin._directory = policy.directory
    yield policy
    policy.done()


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((tmp_path / "logs").glob("*.jsonl"))
            for line in f.read_text().splitlines()]


def flow(url: str = "https://news.example/story?id=3", ip: str = PC, method: str = "GET",
         form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
         client=None) -> http.HTTPFlow:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    content = urllib.parse.urlencode(form).encode() if form is not None else b""
    req = tutils.treq(host=parts.hostname, port=port, scheme=parts.scheme.encode(),
                      path=(parts.path + ("?" + parts.query if parts.query else "")).encode(),
                      method=method.encode(), content=content,
                      headers=http.Headers([(b"host", parts.netloc.encode()),
                                            (b"accept", b"text/html"),
                                            *((k.encode(), v.encode())
                                              for k, v in (headers or {}).items())]))
    f = tflow.tflow(req=req)
    if client is not None:
        f.client_conn = client
    else:
        f.client_conn.peername = (ip, 50000)
        f.client_conn.proxy_mode = ProxyMode.parse("regular")
    return f


def run(addon: WebPolicy, f: http.HTTPFlow) -> http.HTTPFlow:
    """requestheaders then, if nothing answered, request: as mitmproxy calls them."""
    async def both():
        waiting = addon.requestheaders(f)
        if waiting is not None:
            await waiting
        if f.response is None:
            waiting = addon.request(f)
            if waiting is not None:
                await waiting
    asyncio.run(both())
    return f


def token(page: bytes) -> str:
    text = page.decode()
    start = text.index('name="token" value="') + len('name="token" value="')
    return text[start:text.index('"', start)]


def sign_in(addon: WebPolicy, user: str, password: str, ip: str = PC,
            target: str = "https://news.example/story?id=3") -> http.HTTPFlow:
    page = run(addon, flow(target, ip=ip))
    return run(addon, flow("https://news.example/.webpolicy/sign-in", ip=ip, method="POST",
                           form={"token": token(page.response.content), "next": target,
                                 "username": user, "password": password}))


def test_an_unknown_client_gets_the_sign_in_page_instead_of_the_page(addon):
    f = run(addon, flow())
    assert f.response.status_code == 511
    page = f.response.content
    assert b'action="/.webpolicy/sign-in"' in page and b'type="password"' in page
    assert b'name="next" value="https://news.example/story?id=3"' in page
    headers = f.response.headers
    assert headers["cache-control"] == "no-store"
    assert "script" not in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["content-security-policy"].endswith(
        "form-action 'self' http://news.example:* https://news.example:*")
    assert addon.directory.asked == []


def test_plain_http_is_redirected_to_the_page_over_https(addon):
    f = run(addon, flow("http://news.example/a?b=1"))
    assert f.response.status_code == 302
    assert f.response.headers["location"] == (
        "https://news.example/.webpolicy/sign-in?next=http%3A%2F%2Fnews.example%2Fa%3Fb%3D1")
    again = run(addon, flow("http://news.example/.webpolicy/sign-in?next=http://news.example/"))
    assert again.response.headers["location"].startswith("https://news.example/.webpolicy/")
    post = run(addon, flow("http://news.example/.webpolicy/sign-in", method="POST",
                           form={"username": "sam", "password": "right"}))
    assert post.response.status_code == 400 and addon.directory.asked == []


@pytest.mark.parametrize("url, status", [
    ("https://ctiru.example/terror/page", 451),        # statutory: the block page, recorded
    ("http://gambling.example/", 403),                 # the unknown client's profile blocks
])
def test_block_rules_apply_before_sign_in(addon, tmp_path, url, status):
    f = run(addon, flow(url))
    assert f.response.status_code == status
    assert b"sign-in" not in f.response.content
    addon.done()
    (record,) = records(tmp_path)
    assert record["user"] is None and record["identified_by"] == "network"


def test_a_right_password_starts_a_session_named_in_records(addon, tmp_path):
    f = sign_in(addon, "sam", "right")
    assert f.response.status_code == 303
    assert f.response.headers["location"] == "https://news.example/story?id=3"
    assert "right" not in repr(f.metadata) and f.request.content == b""
    assert addon.directory.asked[0][1].startswith("webpolicy-directory")   # off the loop
    after = run(addon, flow("https://gambling.example/"))
    assert after.response is None                           # sam is staff: allowed
    assert after.metadata[SIGNED_IN_USER] == SignedInUser("sam", {"cn=staff,dc=test"})
    assert after.metadata[SIGNED_IN_USER].method == "session"
    blocked = run(addon, flow("https://ctiru.example/terror/page"))
    assert blocked.response.status_code == 451
    assert b'href="/.webpolicy/sign-out"' in blocked.response.content     # the way out
    addon.done()
    (record,) = records(tmp_path)
    assert (record["user"], record["identified_by"]) == ("sam", "session")
    assert record["profile_reason"] == "group cn=staff,dc=test"


def test_a_wrong_password_is_refused_counted_and_throttled(addon):
    f = sign_in(addon, "sam", "guess")
    assert f.response.status_code == 403
    assert b"not accepted" in f.response.content and b"guess" not in f.response.content
    assert b'value="sam"' in f.response.content             # the name is kept, not the password
    for _ in range(9):
        sign_in(addon, "sam", "guess")
    asked = len(addon.directory.asked)
    f = sign_in(addon, "sam", "right")
    assert f.response.status_code == 429 and len(addon.directory.asked) == asked
    assert sign_in(addon, "sam", "right", ip="10.30.0.8").response.status_code == 303


@pytest.mark.parametrize("change", ["no token", "other address", "cross-site"])
def test_the_form_needs_its_token_from_this_address(addon, change):
    page = run(addon, flow(ip="10.30.0.8" if change == "other address" else PC))
    form = {"token": token(page.response.content), "username": "sam", "password": "right"}
    headers = {}
    if change == "no token":
        form["token"] = ""
    if change == "cross-site":
        headers = {"sec-fetch-site": "cross-site", "origin": "https://evil.example"}
    f = run(addon, flow("https://news.example/.webpolicy/sign-in", method="POST", form=form,
                        headers=headers))
    assert f.response.status_code == 403 and b"expired" in f.response.content
    assert addon.directory.asked == []


def test_sign_out_ends_the_session(addon):
    sign_in(addon, "sam", "right")
    page = run(addon, flow("https://news.example/.webpolicy/sign-out"))
    assert b"Signed in as <b>sam</b>" in page.response.content
    out = run(addon, flow("https://news.example/.webpolicy/sign-out", method="POST",
                          form={"token": token(page.response.content)}))
    assert out.response.status_code == 200 and b"signed out" in out.response.content
    assert run(addon, flow("https://gambling.example/")).response.status_code == 403
    assert run(addon, flow()).response.status_code == 511


def test_a_second_person_replaces_the_first(addon):
    sign_in(addon, "sam", "right")
    page = run(addon, flow("https://news.example/.webpolicy/sign-in"))
    assert b"sam is signed in on this device" in page.response.content
    out_form = run(addon, flow("https://news.example/.webpolicy/sign-out")).response.content
    wrong = run(addon, flow("https://news.example/.webpolicy/sign-in", method="POST",
                            form={"token": token(out_form), "username": "pat",
                                  "password": "right"}))
    assert wrong.response.status_code == 403                # a sign-out token cannot sign in
    f = run(addon, flow("https://news.example/.webpolicy/sign-in", method="POST",
                        form={"token": token(page.response.content), "username": "pat",
                              "password": "right"}))
    assert f.response.status_code == 303
    after = run(addon, flow("https://gambling.example/"))
    assert str(after.metadata[SIGNED_IN_USER]) == "pat"
    assert after.response.status_code == 403                # pat is a learner


def test_a_directory_that_cannot_be_asked_says_so(addon):
    addon.directory.answer = DirectoryUnavailable("down")
    f = sign_in(addon, "pat", "right")
    assert f.response.status_code == 503 and b"cannot check sign-ins" in f.response.content


def test_clients_elsewhere_still_use_proxy_logins(addon):
    f = run(addon, flow("http://news.example/", ip="10.1.0.5"))
    assert f.response.status_code == 407


def test_a_transparent_client_must_sign_in(addon):
    f = flow()
    f.client_conn.proxy_mode = ProxyMode.parse("transparent")
    f.client_conn.peername = ("192.0.2.9", 50000)
    assert run(addon, f).response.status_code == 511


def test_a_sign_in_form_that_raises_is_refused_not_forwarded(addon, monkeypatch):
    page = run(addon, flow())
    def broken(*args):
        raise RuntimeError("boom")
    monkeypatch.setattr(addon.signin, "check", broken)
    f = run(addon, flow("https://news.example/.webpolicy/sign-in", method="POST",
                        form={"token": token(page.response.content), "username": "sam",
                              "password": "right"}))
    assert f.response.status_code == 503
    assert b"right" not in f.response.content and f.request.content == b""


def test_next_never_leaves_the_host():
    request = tutils.treq(host="news.example", port=443, scheme=b"https")
    assert signinpage._next("https://evil.example/", request) == "https://news.example/"
    assert signinpage._next("javascript:alert(1)", request) == "https://news.example/"
    assert signinpage._next("https://news.example/a", request) == "https://news.example/a"


def test_a_tunnel_opened_in_a_session_forgets_the_person_at_sign_out(addon, tmp_path):
    sign_in(addon, "sam", "right")
    connect = flow("https://news.example/", method="CONNECT")
    asyncio.run(_hook(addon.http_connect, connect))
    assert connect.response is None and str(addon.gate.users[connect.client_conn.id]) == "sam"
    assert not addon.signinpage.waiting(connect.client_conn)
    addon.signinpage.store.end(PC)
    inside = run(addon, flow("https://ctiru.example/terror/page", client=connect.client_conn))
    assert inside.response.status_code == 451
    assert connect.client_conn.id not in addon.gate.users
    assert addon.signinpage.waiting(connect.client_conn)     # new handshakes: intercepted
    addon.done()
    (record,) = records(tmp_path)
    assert (record["user"], record["identified_by"]) == (None, "network")


def test_a_large_form_is_refused_before_its_body_is_read(addon):
    f = flow("https://news.example/.webpolicy/sign-in", method="POST",
             headers={"content-length": "100000"})
    addon.requestheaders(f)
    assert f.response.status_code == 413


async def _hook(hook, f):
    waiting = hook(f)
    if waiting is not None:
        await waiting


def _as_mitmproxy(addon: WebPolicy, f: http.HTTPFlow, hook: str = "requestheaders"
                  ) -> http.HTTPFlow:
    """One hook as mitmproxy runs it: an exception raised by the awaitable it returns is
    logged ("Addon error") and the flow goes on, forwarded: so none may escape."""
    async def once():
        waiting = getattr(addon, hook)(f)
        if waiting is not None:
            try:
                await waiting
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"{hook}'s awaitable raised (mitmproxy would forward): {exc!r}")
    asyncio.run(once())
    return f


@pytest.mark.parametrize("url", ["https://news.example/story",
                                 "https://news.example/.webpolicy/sign-in",
                                 "https://news.example/.webpolicy/sign-out",
                                 "https://ctiru.example/.webpolicy/sign-in"])
@pytest.mark.parametrize("method", ["GET", "CONNECT"])
def test_a_session_store_that_fails_in_its_thread_refuses(addon, monkeypatch, url, method):
    """The database asked in a thread (a cold cache) raises after the hook returned, where
    failsafe no longer guards: the flow must still be refused, never go on unidentified
    (it used to: mitmproxy logged the error and forwarded a reserved path upstream)."""
    def broken(*args):
        raise signinpage.SessionStoreError("database is locked")
    monkeypatch.setattr(addon.signinpage.store, "get", broken)
    hook = "http_connect" if method == "CONNECT" else "requestheaders"
    f = _as_mitmproxy(addon, flow(url, method=method), hook)
    assert f.response is not None and f.response.status_code >= 400
    assert f.response.status_code != 511            # not the sign-in page: an error


@pytest.mark.parametrize("body", [
    b"&".join(b"f%d=x" % i for i in range(50)),                  # more fields than the form
    b"token=\xff\xfe&username=\xc0\x80&password=\xed\xa0\x80",    # not UTF-8, surrogates
    b"\x00" * 4000,
])
def test_an_odd_sign_in_form_is_refused_plainly_not_counted_as_a_filter_error(addon, body):
    """A learner's crafted POST is the learner's error (400/403), not the filter's: it must
    not raise into failsafe, where it counted in webpolicy_filter_errors (an alert for the
    operators, at will) and answered 'the web filter could not check this request'."""
    before = addon.gate.metrics.filter_errors._value.get()
    f = flow("https://news.example/.webpolicy/sign-in", method="POST")
    f.request.content = body
    f.request.headers["content-length"] = str(len(body))
    _as_mitmproxy(addon, f)
    assert f.response is None                                 # the body is read first
    _as_mitmproxy(addon, f, "request")
    assert f.response.status_code in (400, 403) and f.request.content == b""
    assert addon.gate.metrics.filter_errors._value.get() == before


SCRIPT = {"sec-fetch-mode": "cors", "sec-fetch-dest": "empty", "sec-fetch-site": "same-origin"}


@pytest.mark.parametrize("path", ["/.webpolicy/sign-in", "/.webpolicy/sign-out"])
def test_a_websites_script_cannot_read_who_is_signed_in_nor_get_a_token(addon, path):
    """The reserved paths are answered on every host, so they share each website's origin:
    a script on any site a signed-in learner visits could fetch its own origin's sign-in
    page, read the person's name ("sam is signed in on this device"), take the form's token
    and sign the learner out or in as someone else.  Only a navigation gets the pages."""
    sign_in(addon, "sam", "right")
    f = run(addon, flow(f"https://anysite.example{path}", headers=SCRIPT))
    assert f.response is not None and f.response.status_code == 403
    assert b"sam" not in f.response.content and b'name="token"' not in f.response.content
    # a real navigation still gets them
    page = run(addon, flow(f"https://anysite.example{path}",
                           headers={"sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}))
    assert b"sam" in page.response.content and b'name="token"' in page.response.content


def test_a_websites_script_cannot_post_the_forms(addon):
    sign_in(addon, "sam", "right")
    page = run(addon, flow("https://anysite.example/.webpolicy/sign-out"))
    out = run(addon, flow("https://anysite.example/.webpolicy/sign-out", method="POST",
                          form={"token": token(page.response.content)},
                          headers={**SCRIPT, "origin": "https://anysite.example"}))
    assert out.response.status_code == 403
    assert str(run(addon, flow("https://gambling.example/")).metadata[SIGNED_IN_USER]) == "sam"


def test_a_block_page_fetched_by_script_does_not_name_the_person(addon):
    sign_in(addon, "pat", "right")
    f = run(addon, flow("https://gambling.example/x", headers=SCRIPT))
    assert f.response.status_code == 403 and b"pat" not in f.response.content
    f = run(addon, flow("https://gambling.example/x"))
    assert f.response.status_code == 403 and b"Signed in as pat" in f.response.content


def _raw_tcp_refused(addon: WebPolicy, client, host: str = "news.example") -> bool:
    """Raw bytes in a tunnel (tcp_start, then the choke point's server_connect)."""
    from mitmproxy import connection
    from mitmproxy.proxy import server_hooks
    tcp = tflow.ttcpflow()
    tcp.client_conn = client
    tcp.server_conn = connection.Server(address=(host, 443))
    _as_mitmproxy(addon, tcp, "tcp_start")
    data = server_hooks.ServerConnectionHookData(client=client, server=tcp.server_conn)
    async def connect():
        waiting = addon.server_connect(data)
        if waiting is not None:
            await waiting
    asyncio.run(connect())
    return data.server.error is not None


def test_raw_tcp_in_a_tunnel_waits_for_sign_in(addon, tmp_path):
    """Nothing upstream before sign-in: a tunnel's raw bytes (not HTTP, so no sign-in page)
    used to be decided as the client's network profile and relayed."""
    connect = flow("https://news.example/", method="CONNECT")
    _as_mitmproxy(addon, connect, "http_connect")
    assert connect.response is None                      # intercepted: HTTP gets the page
    assert _raw_tcp_refused(addon, connect.client_conn)
    sign_in(addon, "pat", "right")
    addon.signinpage.store._cache.clear()                 # the database is asked
    connect = flow("https://news.example/", method="CONNECT")
    _as_mitmproxy(addon, connect, "http_connect")
    assert not _raw_tcp_refused(addon, connect.client_conn)
