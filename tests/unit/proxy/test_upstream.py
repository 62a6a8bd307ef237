"""addon_upstream.py inside a real mitmproxy Master with its default add-ons: the early
connection is asked for only where marked, after TlsConfig's own say, and undone cleanly."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest
from mitmproxy import options, tls
from mitmproxy.proxy.layers.tls import TlsClienthelloHook

from tests.unit.helpers import engine_from
from tests.unit.proxy.builders import client_hello, hello_data
from webpolicy.proxy.upstream import EarlyUpstream

POLICY = """\
version: "unit"
default_profile: learner
profiles:
  learner: {block: [adult]}
  staff: {block: [], log: [adult], on_error: allow}
clients:
  users: {lena: learner}
  networks:
    - {cidr: 10.20.0.0/16, profile: staff}
lists:
  ctiru: {statutory: true, category: Terrorist content, format: urls, sources: [ctiru.txt]}
  adult: {category: Pornography, sources: [adult.txt]}
"""
LISTS = {"adult.txt": "adult.example\n", "ctiru.txt": "news.example/terror\n"}


@pytest.fixture
def engine(tmp_path: Path):
    return engine_from(tmp_path, POLICY, LISTS)


@pytest.fixture
def master():
    with warnings.catch_warnings():    # the default add-ons import ldap3, which warns
        warnings.simplefilter("ignore", DeprecationWarning)
        from mitmproxy import addons
        from mitmproxy.master import Master

    async def make():
        m = Master(options.Options(), event_loop=asyncio.get_running_loop())
        m.addons.add(*addons.default_addons())
        m.options.update(connection_strategy="lazy")          # as WebPolicy.configure sets it
        return m
    loop = asyncio.new_event_loop()
    yield loop, loop.run_until_complete(make())
    loop.close()


def dispatch(master, data: tls.ClientHelloData) -> bool:
    loop, m = master
    loop.run_until_complete(m.addons.handle_lifecycle(TlsClienthelloHook(data)))
    return data.establish_server_tls_first


@pytest.mark.parametrize("host, client_ip, early", [
    ("fine.example", "10.0.0.5", True),
    ("adult.example", "10.0.0.5", False),       # blocked for learners
    ("adult.example", "10.20.0.5", True),       # only logged for staff
    ("news.example", "10.20.0.5", False),       # a statutory URL under the host
    ("203.0.113.9", "10.20.0.5", False),        # an address, not a name
    ("use-application-dns.net", "10.20.0.5", False),   # the DoH canary: answered here
])
def test_early_only_where_marked(master, engine, host, client_ip, early):
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    data = hello_data(host, client_ip)
    upstream.mark(data, engine, None)
    assert dispatch(master, data) is early
    assert dispatch(master, hello_data(host, client_ip)) is False    # a mark is used once


def test_lazy_whenever_the_engine_cannot_answer(master, engine):
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    engine.release()                                   # a lookup now raises
    data = hello_data("fine.example", "10.0.0.5")
    upstream.mark(data, engine, None)
    assert dispatch(master, data) is False


def test_uninstall_restores_tlsconfig_and_install_is_not_stacked(master, engine):
    tlsconfig = master[1].addons.get("tlsconfig")
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    upstream.install(master[1].addons)                 # the script loaded again
    assert vars(tlsconfig)["tls_clienthello"].__wrapped__.__func__ is \
        type(tlsconfig).tls_clienthello                # wraps the method, not a wrapper
    upstream.uninstall()
    assert "tls_clienthello" not in vars(tlsconfig)
    upstream.uninstall()                               # again: nothing to undo, no error
    data = hello_data("fine.example", "10.0.0.5")
    upstream.mark(data, engine, None)
    assert dispatch(master, data) is False             # nothing wrapped: lazy


def test_uninstall_leaves_another_wrapper_alone(master):
    tlsconfig = master[1].addons.get("tlsconfig")
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    tlsconfig.tls_clienthello = other = lambda data: None
    upstream.uninstall()
    assert vars(tlsconfig)["tls_clienthello"] is other


def test_a_mark_applies_only_to_the_handshake_it_was_made_for(master, engine):
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    first = hello_data("fine.example", "10.0.0.5")
    upstream.mark(first, engine, None)
    later = tls.ClientHelloData(first.context, client_hello("adult.example"))
    assert dispatch(master, later) is False            # same connection, another handshake
    assert dispatch(master, first) is False            # and the mark is gone


def test_a_mark_is_void_when_the_destination_changed(master, engine):
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    data = hello_data("fine.example", "10.0.0.5")
    upstream.mark(data, engine, None)
    data.context.server.address = ("adult.example", 443)
    assert dispatch(master, data) is False


@pytest.mark.parametrize("sni, early", [
    (None, True), ("fine.example", True),
    ("adult.example", False),                          # passed on upstream: decided too
])
def test_reverse_mode_decides_the_sni_it_passes_on(master, engine, sni, early):
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    data = hello_data("127.0.0.1", "10.0.0.5", mode="reverse:https://127.0.0.1:8443", sni=sni)
    if sni is None:
        data = tls.ClientHelloData(data.context, client_hello(None))
    upstream.mark(data, engine, None)
    assert dispatch(master, data) is early


def test_a_user_profile_decides(master, engine):
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    data = hello_data("adult.example", "10.20.0.5")      # a staff network ...
    upstream.mark(data, engine, "lena")                  # ... but a learner's login
    assert dispatch(master, data) is False


def test_forget(master, engine):
    upstream = EarlyUpstream()
    upstream.install(master[1].addons)
    data = hello_data("fine.example", "10.0.0.5")
    upstream.mark(data, engine, None)
    upstream.forget(data.context.client.id)
    assert dispatch(master, data) is False
