"""The workers' listener (proxy/reuseport.py): mitmproxy's own listen() binds with SO_REUSEPORT
once install() has run, so two of them share a port; a mitmproxy that binds some other way is
refused at once; verify() finds a socket without the option."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

import pytest
from mitmproxy.proxy import mode_servers

from webpolicy.proxy import reuseport


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(mode_servers, "asyncio", asyncio)     # put back after the test
    reuseport.install()
    reuseport.install()                                       # idempotent (a script reload)
    return mode_servers.asyncio


def _instance():
    """A real RegularInstance, as mitmproxy's proxyserver makes one (never started)."""
    return mode_servers.ServerInstance.make("regular", SimpleNamespace())


def test_mitmproxys_listen_binds_with_reuse_port_and_two_share_a_port(installed):
    async def scenario():
        first = await _instance().listen("127.0.0.1", 0)
        port = first[0].sockets[0].getsockname()[1]
        second = await _instance().listen("127.0.0.1", port)   # without the option: EADDRINUSE
        sockets = [s for server in first + second for s in server.sockets]
        try:
            return [s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets], \
                {s.getsockname()[1] for s in sockets}
        finally:
            for server in first + second:
                server.close()

    options, ports = asyncio.run(scenario())
    assert options == [1, 1] and len(ports) == 1


def test_without_install_a_second_listener_cannot_bind(monkeypatch):
    """What install() changes: mitmproxy alone refuses the second bind (the test above is
    not passing by accident)."""
    monkeypatch.setattr(mode_servers, "asyncio", asyncio)

    async def scenario():
        first = await _instance().listen("127.0.0.1", 0)
        try:
            with pytest.raises(OSError):
                await _instance().listen("127.0.0.1", first[0].sockets[0].getsockname()[1])
        finally:
            first[0].close()

    asyncio.run(scenario())


def test_a_mitmproxy_that_binds_another_way_is_refused(monkeypatch):
    monkeypatch.setattr(mode_servers, "asyncio", asyncio)

    async def listen(self, host, port):          # what a future mitmproxy might do
        return [await asyncio.start_server(self.handle_stream, host=host, port=port)]

    monkeypatch.setattr(mode_servers.AsyncioServerInstance, "listen", listen)
    with pytest.raises(reuseport.ReusePortError, match="no longer binds"):
        reuseport.install()
    assert mode_servers.asyncio is asyncio


def test_verify_finds_a_socket_without_the_option():
    async def scenario():
        plain = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        shared = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, reuse_port=True)
        try:
            good = SimpleNamespace(servers=[SimpleNamespace(_servers=[shared])])
            bad = SimpleNamespace(servers=[SimpleNamespace(_servers=[shared, plain])])
            assert reuseport.verify(good) == 1
            with pytest.raises(reuseport.ReusePortError, match="without SO_REUSEPORT"):
                reuseport.verify(bad)
            with pytest.raises(reuseport.ReusePortError, match="cannot see"):
                reuseport.verify(SimpleNamespace(servers=[object()]))
        finally:
            plain.close()
            shared.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("value, number", [("0", 0), ("3", 3), ("", None), ("x", None)])
def test_worker_number(monkeypatch, value, number):
    monkeypatch.setenv(reuseport.WORKER_ENV, value)
    assert reuseport.worker_number() == number


def test_modes_with_a_udp_listener_are_found():
    modes = ["regular", "transparent", "socks5", "reverse:http://127.0.0.1:8080@9000",
             "reverse:https://example.test", "dns", "wireguard"]
    assert reuseport.unshareable_modes(modes) == ["reverse:https://example.test", "dns",
                                                  "wireguard"]
