"""Worker mode: every worker's proxy listener binds with SO_REUSEPORT, so N mitmdump
processes share one listening address and the kernel spreads new connections over them.

Why SO_REUSEPORT (docs/architecture.md, "Workers"): the kernel hashes each new connection to
one of the sockets bound to the address, so no process sits in the request path (a balancer
in Python would be the bottleneck it is meant to remove), and the worker accepts the client's
own connection: the client address that identity by network depends on is the peer address,
unchanged.  A worker that dies closes its socket and the kernel stops choosing it.  Linux
only lets processes of the same effective user join a reuse-port group, so another account
cannot bind the port to take a share of the connections.

mitmproxy 12 binds its TCP listeners with `asyncio.start_server(handler, host, port)` in
`mitmproxy.proxy.mode_servers.AsyncioServerInstance.listen`, with no way to pass
`reuse_port`.  install(), called by worker.py before mitmproxy starts, gives that one module an asyncio whose start_server adds
reuse_port=True, nothing else changes; it checks first that mitmproxy still binds that way
and raises ReusePortError if not, and verify() checks, once the servers are up, that every
listening socket really has the option (a worker refuses to run otherwise).  UDP listeners
(modes dns and wireguard, and the HTTP/3 side of reverse:https) bind in mitmproxy_rs, which
has no such option: `webpolicy run` refuses them with more than one worker (unshareable_modes).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import socket
import types

from mitmproxy.proxy import mode_servers

WORKER_ENV = "WEBPOLICY_WORKER"         # set by the supervisor (cli/supervisor.py): 0 .. N-1
WORKERS_ENV = "WEBPOLICY_WORKERS"       # how many there are
FORM_KEY_ENV = "WEBPOLICY_FORM_KEY"     # the review forms' token key, shared (64 hex digits)
_BIND_CALL = "asyncio.start_server(self.handle_stream, host, port)"


class ReusePortError(RuntimeError):
    """mitmproxy no longer binds as this module expects, or a listener lacks SO_REUSEPORT."""


def worker_number() -> int | None:
    """This process's worker number, or None outside worker mode (`--workers 1`)."""
    text = os.environ.get(WORKER_ENV, "")
    return int(text) if text.isdigit() else None


def worker_count() -> int:
    """How many workers the gateway runs (1 outside worker mode)."""
    text = os.environ.get(WORKERS_ENV, "")
    return int(text) if text.isdigit() and worker_number() is not None else 1


def form_key() -> bytes | None:
    """The key every worker signs and checks the block pages' review-form tokens with (the
    supervisor's, so a form served by one worker can be posted to another); None outside
    worker mode, where the process makes its own."""
    text = os.environ.get(FORM_KEY_ENV, "")
    if worker_number() is None or len(text) != 64:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


class _ReusePortAsyncio(types.ModuleType):
    """asyncio as mode_servers sees it: the same module but for start_server."""

    def __init__(self) -> None:
        super().__init__("asyncio")
        self.start_server = functools.partial(asyncio.start_server, reuse_port=True)

    def __getattr__(self, name: str):
        return getattr(asyncio, name)


def install() -> None:
    """Make mitmproxy's TCP listeners bind with SO_REUSEPORT (idempotent: mitmproxy reloads
    the entry script when it changes).  Raises ReusePortError if mitmproxy's code is not
    what this was written against: a worker that bound without the option would either fail
    with EADDRINUSE or, worse, be the only one the kernel gives connections to."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ReusePortError("this platform has no SO_REUSEPORT: run with --workers 1")
    if isinstance(mode_servers.asyncio, _ReusePortAsyncio):
        return
    if mode_servers.asyncio is not asyncio:
        raise ReusePortError("mitmproxy.proxy.mode_servers does not use asyncio as expected")
    try:
        source = inspect.getsource(mode_servers.AsyncioServerInstance.listen)
    except (AttributeError, OSError, TypeError) as exc:
        raise ReusePortError(f"cannot read mitmproxy's listen(): {exc}") from None
    if _BIND_CALL not in source:
        raise ReusePortError(
            "mitmproxy's AsyncioServerInstance.listen no longer binds with "
            f"`{_BIND_CALL}`: webpolicy's worker mode must be updated for this mitmproxy "
            "version; run with --workers 1 meanwhile")
    mode_servers.asyncio = _ReusePortAsyncio()


def unshareable_modes(modes: list[str]) -> list[str]:
    """The `--mode` specs among `modes` that listen on UDP too (dns, wireguard, and
    reverse:https for HTTP/3, among others): a UDP listener cannot be shared by the workers,
    so a second worker would fail to bind it."""
    found = []
    for spec in modes:
        try:
            protocol = mode_servers.mode_specs.ProxyMode.parse(spec).transport_protocol
        except ValueError:
            continue                  # mitmdump says what is wrong with it
        if protocol != "tcp":
            found.append(spec)
    return found


def listening_sockets(proxyserver) -> list[socket.socket]:
    """The TCP sockets mitmproxy's proxyserver add-on listens on."""
    found = []
    for instance in proxyserver.servers:
        servers = getattr(instance, "_servers", None)
        if servers is None:
            raise ReusePortError(f"cannot see the sockets of mitmproxy's {instance!r}")
        for server in servers:
            if isinstance(server, asyncio.Server):
                found.extend(server.sockets)
    return found


def verify(proxyserver) -> int:
    """Raise ReusePortError unless every listening TCP socket has SO_REUSEPORT; returns how
    many were checked."""
    sockets = listening_sockets(proxyserver)
    for sock in sockets:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            raise ReusePortError(f"the listener on {sock.getsockname()} was bound without "
                                 "SO_REUSEPORT: the workers would not share it")
    return len(sockets)
