"""The circumvention rules that need a whole request, and the DNS canary.

CONNECT and TLS rules live in WebPolicy's own hooks (http_connect, tls_clienthello).  This
stage is called from WebPolicy's requestheaders and dns_request hooks (it is not
registered with mitmproxy itself), after the decision, and only ever touches a flow that
has no answer yet:
- a plain HTTP request (or an intercepted one in transparent mode) to an IP address is
  refused for profiles with `connect.block_ip_literals`;
- Firefox's DoH canary `use-application-dns.net` is answered locally over HTTP, and with
  NXDOMAIN when the gateway also runs mitmproxy's DNS mode (see circumvention.py for what
  an HTTP proxy can and cannot do about encrypted DNS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mitmproxy import dns, http
from mitmproxy.net.dns import response_codes

from webpolicy.engine import circumvention
from webpolicy.engine.decision import Decision
from webpolicy.proxy.flows import names_destination, request_hosts

if TYPE_CHECKING:
    from webpolicy.proxy.stages import StageHost


class Circumvention:
    def __init__(self, host: StageHost) -> None:
        self.host = host

    def requestheaders(self, flow: http.HTTPFlow, hosts: tuple[str, ...] | None = None) -> None:
        """`hosts`: the canonical (Host header, connection) hosts when the decision has them
        already (one of them when they are the same); otherwise they are read here."""
        if flow.response is not None:      # blocked, or proxyauth's 407: never touch it
            return
        try:
            names, is_ip = self._names(flow, hosts)
            if circumvention.is_canary(names[0].lower().rstrip(".")):
                flow.response = _canary_answer()
                return
            refusal = self._ip_refusal(flow, names, is_ip)
            if refusal is not None:
                self.host.refuse_request(flow, refusal)
        except Exception as exc:  # noqa: BLE001 - a raised hook would forward the request
            self.host.stage_failed(flow, exc)

    @staticmethod
    def _names(flow: http.HTTPFlow, hosts: tuple[str, ...] | None
               ) -> tuple[tuple[str, ...], Callable[[str], bool]]:
        """The hosts to check, and the IP-literal test that suits their form."""
        if hosts is not None:
            return hosts, circumvention.is_canonical_ip
        return request_hosts(flow), circumvention.is_ip_literal

    def _ip_refusal(self, flow: http.HTTPFlow, names: tuple[str, ...],
                    is_ip: Callable[[str], bool]) -> Decision | None:
        # Transparent modes: the connection's host is just the IP address connected to.
        if not names_destination(flow.client_conn.proxy_mode):
            names = names[:1]
        for name in names:
            if is_ip(name):                # cheap; the profile is asked only then
                refusal = self.host.circumvention_refusal(flow, name, None)
                if refusal is not None:
                    return refusal
        return None

    def dns_request(self, flow: dns.DNSFlow) -> None:
        """With `--mode dns`, the canaries get NXDOMAIN: the signal Firefox (and Apple's
        Private Relay) look for.  Every other question is resolved as usual."""
        if flow.response is not None:
            return
        if any(circumvention.is_dns_canary(q.name) for q in flow.request.questions):
            flow.response = flow.request.fail(response_codes.NXDOMAIN)


def _canary_answer() -> http.Response:
    return http.Response.make(circumvention.CANARY_STATUS, circumvention.CANARY_ANSWER, {
        "Content-Type": "text/plain; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Webpolicy-Canary": "nxdomain",
    })
