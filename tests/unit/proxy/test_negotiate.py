"""negotiate.py through signin.py: with directory.kerberos the 407 offers Negotiate before
Basic; a token is checked in a worker thread once per client connection, then the person's
groups are looked up (cached per person); a refused token or any failure is a 407 again,
never a request let through.  The ticket check is a fake here (tests/e2e/test_kerberos.py
runs a real KDC)."""

from __future__ import annotations

import base64
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.helpers import engine_from
from tests.unit.proxy.test_signin import LISTS, POLICY, flow, run
from webpolicy.identity.directory import DirectoryUnavailable, SignedInUser
from webpolicy.identity.kerberos import KerberosRefused
from webpolicy.proxy.addon import WebPolicy
from webpolicy.proxy.gate import SIGNED_IN_USER
from webpolicy.safeguarding.events import identified_by

SSO_POLICY = POLICY.replace(
    'cache_minutes: 5}', 'cache_minutes: 5, kerberos: {keytab: http.keytab, '
    'service: HTTP/gw.example, realm: TEST}}')
assert SSO_POLICY != POLICY
TOKENS = {b"sam-ticket": "sam", b"pat-ticket": "pat", b"kim-ticket": "kim"}


class FakeAcceptor:
    def __init__(self):
        self.checked: list[tuple[bytes, str]] = []

    def check(self, token: bytes) -> str:
        self.checked.append((token, threading.current_thread().name))
        if token not in TOKENS:
            raise KerberosRefused("token refused: garbage")
        return TOKENS[token]


class FakeDirectory:
    def __init__(self, answer=None):
        self.looked_up: list[str] = []
        self.answer = answer

    def lookup(self, user: str):
        self.looked_up.append(user)
        if isinstance(self.answer, Exception):
            raise self.answer
        groups = {"cn=staff,dc=test"} if user == "sam" else set()
        return None if user == "kim" else SignedInUser(user, groups)


@pytest.fixture
def addon(tmp_path) -> WebPolicy:
    policy = WebPolicy()
    policy.gate.engine = engine_from(tmp_path, SSO_POLICY, LISTS)
    policy.signin.settings()
    return policy


def fakes(addon: WebPolicy, answer=None) -> tuple[FakeAcceptor, FakeDirectory]:
    acceptor, directory = FakeAcceptor(), FakeDirectory(answer)
    addon.signin.negotiate._acceptor = acceptor
    addon.signin._directory = directory
    return acceptor, directory


def with_token(token: bytes, **kwargs):
    f = flow(**kwargs)
    f.request.headers["Proxy-Authorization"] = "Negotiate " + base64.b64encode(token).decode()
    return f


def challenges(f) -> list[str]:
    return f.response.headers.get_all("proxy-authenticate")


def test_the_407_offers_negotiate_then_basic(addon):
    fakes(addon)
    f = flow()
    run(addon.requestheaders, f)
    assert f.response.status_code == 407
    assert challenges(f)[0] == "Negotiate" and challenges(f)[1].startswith("Basic realm=")


def test_a_ticket_is_checked_in_a_thread_once_per_connection(addon):
    acceptor, directory = fakes(addon)
    first = with_token(b"sam-ticket", host="news.example")
    run(addon.requestheaders, first)
    assert first.response is None
    user = first.metadata[SIGNED_IN_USER]
    assert user == SignedInUser("sam", {"cn=staff,dc=test"}) and user.method == "kerberos"
    assert identified_by(user) == "kerberos"
    assert "proxy-authorization" not in first.request.headers
    assert acceptor.checked[0][1].startswith("webpolicy-directory")   # not the event loop
    # the same connection, with no header or the ticket again: not checked again
    for again in (flow(host="news.example"), with_token(b"sam-ticket", host="news.example")):
        again.client_conn = first.client_conn
        run(addon.requestheaders, again)
        assert again.response is None and again.metadata[SIGNED_IN_USER] == user
    assert len(acceptor.checked) == 1
    # a new connection checks its ticket; the groups come from the cache
    other = with_token(b"sam-ticket", host="news.example")
    run(addon.requestheaders, other)
    assert other.response is None
    assert len(acceptor.checked) == 2 and directory.looked_up == ["sam"]
    # gone after the client disconnects
    addon.client_disconnected(first.client_conn)
    after = flow(host="news.example")
    after.client_conn = first.client_conn
    run(addon.requestheaders, after)
    assert after.response.status_code == 407


def test_a_learner_by_ticket_gets_the_default_profile(addon):
    fakes(addon)
    f = with_token(b"pat-ticket")
    run(addon.requestheaders, f)
    assert f.response.status_code == 403


@pytest.mark.parametrize("header", ["Negotiate Z2FyYmFnZQ==", "Negotiate !!!", "Negotiate",
                                    "Negotiate " + base64.b64encode(b"kim-ticket").decode()])
def test_refused_tokens_get_both_challenges_again(addon, header):
    fakes(addon)
    f = flow(host="news.example")
    f.request.headers["Proxy-Authorization"] = header
    run(addon.requestheaders, f)
    assert f.response.status_code == 407
    assert [c.split()[0] for c in challenges(f)] == ["Negotiate", "Basic"]
    assert SIGNED_IN_USER not in f.metadata


def test_failures_fail_closed(addon, monkeypatch):
    fakes(addon, DirectoryUnavailable("down"))
    f = with_token(b"sam-ticket", host="news.example")
    run(addon.requestheaders, f)
    assert f.response.status_code == 503                     # as for Basic: fail closed
    fakes(addon)
    monkeypatch.setattr(addon.signin.negotiate._acceptor, "check", lambda token: 1 / 0)
    f = with_token(b"sam-ticket", host="news.example")
    run(addon.requestheaders, f)
    assert f.response.status_code == 407


def test_a_connect_keeps_the_ticket_for_the_tunnel(addon):
    acceptor, _ = fakes(addon)
    connect = with_token(b"sam-ticket", method="CONNECT")
    run(addon.http_connect, connect)
    assert connect.response is None and str(addon.gate.users[connect.client_conn.id]) == "sam"
    inside = flow()
    inside.client_conn = connect.client_conn
    run(addon.requestheaders, inside)
    assert inside.response is None and len(acceptor.checked) == 1


def test_basic_still_works_beside_negotiate(addon):
    _, directory = fakes(addon)
    directory.check = lambda user, password: SignedInUser(user) if password == "right" else None
    f = flow(host="news.example", login="pat:right")
    run(addon.requestheaders, f)
    assert f.response is None and identified_by(f.metadata[SIGNED_IN_USER]) == "login"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(
    st.text(max_size=300).map(lambda t: "Negotiate " + t),
    st.binary(max_size=300).map(lambda b: "Negotiate " + base64.b64encode(b).decode()),
    st.binary(max_size=100).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["Negotiate " + "A" * 200_000, "negotiate\tYWJj", " Negotiate  YWJj=",
                     "Negotiate YWJj\x00", "Basic", "Basic " + "=" * 10])))
def test_any_proxy_authorization_is_refused_or_accepted_never_raises(addon, header):
    """Whatever a client puts in the header, the hook answers (a 407) or signs in a known
    ticket's person: nothing raises inside it (which would forward the request)."""
    fakes(addon)
    f = flow(host="news.example")
    f.request.headers["Proxy-Authorization"] = header
    run(addon.requestheaders, f)
    assert (f.response is not None and f.response.status_code == 407) or \
        str(f.metadata.get(SIGNED_IN_USER)) in TOKENS.values()
    assert "proxy-authorization" not in f.request.headers
