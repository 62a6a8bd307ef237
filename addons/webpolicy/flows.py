"""What the webpolicy hooks read off mitmproxy's flows (once per request) and the answers they
put on them.

Kept apart from the hooks so addon.py and its companions (addon_circumvention.py,
addon_safesearch.py) share one reading of "which host is this request for".
"""

from __future__ import annotations

import copy
import re
import time

from mitmproxy import http
from mitmproxy.net.http import status_codes
from mitmproxy.proxy import mode_specs

# Modes where the client names its destination (CONNECT, SOCKS): the server address is that
# name.  In transparent-style modes it is only the IP address the client connected to.
NAMED_DESTINATION_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode,
                           mode_specs.Socks5Mode)

_HOSTS = "webpolicy_hosts"
# The usual Host header, "name" or "name:port": split here, because mitmproxy's pretty_host
# validates and IDNA-decodes it on every access (a third of this add-on's time per request).
_PLAIN_AUTHORITY = re.compile(r"([A-Za-z0-9_.-]+)(?::[0-9]{1,5})?")


def request_hosts(flow: http.HTTPFlow) -> tuple[str, str]:
    """(the Host header / :authority host, the host of the connection the client chose).

    The two differ in domain fronting (CONNECT or SNI to one host, Host header for another),
    so both are decided.  In reverse-proxy mode the connection goes where the administrator
    configured, not where the client asked, so the Host stands for both.  Every hook needs
    these and mitmproxy parses the Host header again on each `pretty_host`, so they are read
    once per request and kept on the flow.
    """
    hosts = flow.metadata.get(_HOSTS)
    if hosts is None:
        request = flow.request
        host = _requested_host(request)
        if isinstance(flow.client_conn.proxy_mode, mode_specs.ReverseMode):
            hosts = (host, host)
        else:
            hosts = (host, request.host)
        flow.metadata[_HOSTS] = hosts
    return hosts


def _requested_host(request: http.Request) -> str:
    """request.pretty_host, without its cost in the usual case; anything unusual (IPv6,
    non-ASCII, junk) is left to mitmproxy's own parsing."""
    authority = request.host_header
    if not authority:
        return request.host
    plain = _PLAIN_AUTHORITY.fullmatch(authority)
    return plain.group(1) if plain else request.pretty_host


def client_ip(flow: http.HTTPFlow) -> str:
    peername = flow.client_conn.peername
    return peername[0] if peername else ""


def connect_host(context) -> str | None:
    """The host the client asked the proxy for (CONNECT / SOCKS), if the mode has one."""
    if isinstance(context.client.proxy_mode, NAMED_DESTINATION_MODES) and context.server.address:
        return context.server.address[0]
    return None


# A checked response to clone: mitmproxy type-checks every field of a new Response (unless
# Python runs with -O), ~70 us of a blocked request's ~110 us in Response.make.  The fields
# set below have the types that check wants.
_TEMPLATE = http.Response.make(200)


def make_response(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> http.Response:
    """http.Response.make(status, body, headers) for the proxy's own answers, at a sixth of
    the cost; Content-Length is added here."""
    response = copy.copy(_TEMPLATE)
    data = response.data = copy.copy(_TEMPLATE.data)
    data.status_code = status
    data.reason = status_codes.RESPONSES.get(status, "").encode()
    data.headers = http.Headers([*headers, (b"content-length", str(len(body)).encode())])
    data.content = body
    data.timestamp_start = data.timestamp_end = time.time()
    return response
