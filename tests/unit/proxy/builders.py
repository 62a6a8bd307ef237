"""mitmproxy objects the proxy tests share: a real ClientHello and the data of its hook."""

from __future__ import annotations

import ssl

import pytest
from mitmproxy import connection, options, tls
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.proxy.mode_specs import ProxyMode


def client_hello(sni: str | None) -> tls.ClientHello:
    """A real ClientHello, from Python's own TLS client (sni None: one without SNI)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    context.check_hostname = sni is not None
    tls_client = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls_client.do_handshake()
    return parse_client_hello(outgoing.read())


def hello_data(host: str, client_ip: str, mode: str = "regular",
               sni: str | None = None) -> tls.ClientHelloData:
    client = connection.Client(peername=(client_ip, 50000), sockname=("127.0.0.1", 8080),
                               proxy_mode=ProxyMode.parse(mode))
    context = Context(client, options.Options())
    context.server.address = (host, 443)
    context.server.tls = True
    return tls.ClientHelloData(context, client_hello(sni or host))
