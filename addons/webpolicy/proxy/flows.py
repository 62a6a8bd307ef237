"""What the webpolicy hooks read off mitmproxy's flows (once per request) and the answers they
put on them.

Kept apart from the hooks so addon.py and its companions (addon_circumvention.py,
addon_safesearch.py) share one reading of "which host is this request for".
"""

from __future__ import annotations

import re
import time

from mitmproxy import http
from mitmproxy.net.http import status_codes
from mitmproxy.proxy import mode_specs

from webpolicy.lists.canonical import canonical_host
from webpolicy.lists.domainindex import is_ip_literal

# Modes where the client names its destination (CONNECT, SOCKS): the server address is that
# name.  In transparent-style modes it is only the IP address the client connected to.
NAMED_DESTINATION_MODES = (mode_specs.RegularMode, mode_specs.UpstreamMode,
                           mode_specs.Socks5Mode)


def names_destination(mode: mode_specs.ProxyMode) -> bool:
    """Whether clients in this mode name their destination.  Exact types: isinstance() with
    mitmproxy's mode classes (ABCs) costs ~1 us per request when false, and they have no
    subclasses."""
    return type(mode) in NAMED_DESTINATION_MODES

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
        if type(flow.client_conn.proxy_mode) is mode_specs.ReverseMode:    # see names_destination
            hosts = (host, host)
        else:
            hosts = (host, request.host)
        flow.metadata[_HOSTS] = hosts
    return hosts


def _requested_host(request: http.Request) -> str:
    """request.pretty_host, without its cost in the usual case; anything unusual (IPv6,
    non-ASCII, junk) is left to mitmproxy's own parsing."""
    authority = _host_header(request)
    if not authority:
        return request.host
    plain = _PLAIN_AUTHORITY.fullmatch(authority)
    return plain.group(1) if plain else request.pretty_host


def _host_header(request: http.Request) -> str | None:
    """request.host_header: for HTTP/1 the Host header, found with one pass over the raw
    fields (mitmproxy's lookup decodes every field name on every access)."""
    if request.data.http_version != b"HTTP/1.1" and request.data.http_version != b"HTTP/1.0":
        return request.host_header                 # HTTP/2 and 3: the :authority
    found = None
    for name, value in request.data.headers.fields:
        if len(name) == 4 and name.lower() == b"host":
            if found is not None:
                return request.host_header         # repeated: mitmproxy joins them
            found = value
    return None if found is None else found.decode("utf-8", "surrogateescape")


def client_ip(flow: http.HTTPFlow) -> str:
    peername = flow.client_conn.peername
    return peername[0] if peername else ""


def connect_host(context) -> str | None:
    """The host the client asked the proxy for (CONNECT / SOCKS), if the mode has one."""
    if names_destination(context.client.proxy_mode) and context.server.address:
        return context.server.address[0]
    return None


def early_connect_hosts(context, sni: str | None) -> tuple[str, ...] | None:
    """The canonical hosts that an upstream connection opened before any request would
    reach or name, when they are what gets decided; None when that cannot be said.

    - CONNECT or SOCKS: the name the client asked for (its SNI, if any, must be the same
      name: the caller refuses a mismatch first).  Never an IP address: an address says
      nothing of the site behind it, so nothing may open before a request names one.
    - Reverse proxy: the upstream the administrator configured (an address is allowed here:
      the client did not choose it), and the client's SNI too, which mitmproxy passes on
      upstream with `keep_host_header`, unless it is that same upstream.
    - Transparent modes: None; the client picked the address.
    """
    address = context.server.address
    if not address:
        return None
    if type(context.client.proxy_mode) is mode_specs.ReverseMode:     # see names_destination
        upstream = canonical_host(address[0])
        if not sni:
            return (upstream,)
        named = canonical_host(sni)
        if named == upstream:
            return (upstream,)
        return None if is_ip_literal(named) else (upstream, named)
    host = connect_host(context)
    if host is None:
        return None
    host = canonical_host(host)
    return None if is_ip_literal(host) else (host,)


def selective_names(context, sni: str | None) -> tuple[str, ...] | None:
    """The canonical names a TLS connection involves when selective inspection may pass it
    through (issue #19); None when it must be intercepted whatever they are.

    Only CONNECT or SOCKS, where the proxy resolves the name itself, and only with an SNI
    that names that same host: without SNI the server's answer cannot be tied to a name,
    and a different SNI is a second name (decided by intercepting).  Never transparent
    modes: the client chose the address, and an allowed SNI in front of another site's
    address would reach that site unseen (intercepted, its Host header is decided).  Never
    reverse mode: the administrator's own upstream.  Raises ValueError for a name that
    cannot be read (the caller intercepts).
    """
    host = connect_host(context)
    if not sni or host is None:
        return None
    named = canonical_host(sni)
    return (named,) if canonical_host(host) == named else None


# A checked response to clone: mitmproxy type-checks every field of a new Response (unless
# Python runs with -O), ~70 us of a blocked request's ~110 us in Response.make.  The fields
# set below have the types that check wants.
_TEMPLATE = http.Response.make(200)


def _shallow_copy[T](obj: T) -> T:
    """copy.copy for a plain object (no __slots__, no __copy__), without its generic
    __reduce_ex__ round trip (~2 us a copy against ~0.25)."""
    clone = object.__new__(type(obj))
    clone.__dict__.update(obj.__dict__)
    return clone


def make_response(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> http.Response:
    """http.Response.make(status, body, headers) for the proxy's own answers, at a sixth of
    the cost; Content-Length is added here."""
    response = _shallow_copy(_TEMPLATE)
    data = response.data = _shallow_copy(_TEMPLATE.data)
    data.status_code = status
    data.reason = status_codes.RESPONSES.get(status, "").encode()
    data.headers = http.Headers([*headers, (b"content-length", str(len(body)).encode())])
    data.content = body
    data.timestamp_start = data.timestamp_end = time.time()
    return response
