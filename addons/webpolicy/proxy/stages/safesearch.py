"""Enforce safe search on allowed, intercepted requests, per profile.

Called from WebPolicy's requestheaders and request hooks (not registered with mitmproxy
itself), after the decision and the circumvention rules; never touches a flow that already
has a response:
a blocked request is never rewritten, and nothing here can unblock one.  The rules themselves
are in safesearch.py; this only reads the request and applies what they say.  A failure fails
closed for profiles that block, like any other filter error: an unrewritten search must not
pass for a learner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mitmproxy import http

from webpolicy.engine import safesearch
from webpolicy.lists.canonical import canonical_host
from webpolicy.proxy.flows import request_hosts

if TYPE_CHECKING:
    from webpolicy.proxy.stages import StageHost

_FORM = "webpolicy_safesearch_form"       # flow.metadata: form fields to force in `request`


class SafeSearch:
    def __init__(self, host: StageHost) -> None:
        self.host = host

    def requestheaders(self, flow: http.HTTPFlow, hosts: tuple[str, ...] | None = None) -> None:
        """Query, headers and cookies: before anything is sent, streamed bodies included.
        `hosts`: the request's canonical hosts when the decision has them already."""
        if flow.response is not None:
            return
        try:
            self._rewrite(flow, hosts)
        except Exception as exc:  # noqa: BLE001 - a raised hook would forward it unchanged
            self.host.stage_failed(flow, exc)

    def request(self, flow: http.HTTPFlow) -> None:
        """Form posts (DuckDuckGo's HTML version): the body is only here."""
        if _FORM not in flow.metadata:
            return                         # nearly every request
        fields = flow.metadata.pop(_FORM)
        if flow.response is not None or not fields or flow.request.stream:
            return                         # a streamed body has gone already (URL and cookie held)
        try:
            if "application/x-www-form-urlencoded" in flow.request.headers.get("content-type", ""):
                form = flow.request.urlencoded_form
                for name, value in fields:
                    form[name] = value
        except Exception as exc:  # noqa: BLE001
            self.host.stage_failed(flow, exc)

    def _rewrite(self, flow: http.HTTPFlow, hosts: tuple[str, ...] | None) -> None:
        request = flow.request
        if hosts is None:
            hosts = tuple(map(_canonical, request_hosts(flow)))
        hosts = [h for h in hosts if safesearch.engine_for(h)]
        if not hosts:
            return                         # not a search engine: the usual case, kept cheap
        hosts = list(dict.fromkeys(hosts))
        identity = self.host.identify(flow)
        if identity is None:
            return
        settings = identity[0].safe_search
        change = next(filter(None, (safesearch.rewrite(h, request.path, settings,
                                                       request.headers, request.cookies)
                                    for h in hosts)), None)
        if change is not None:
            _apply(flow, change)


def _apply(flow: http.HTTPFlow, change: safesearch.Rewrite) -> None:
    request = flow.request
    if change.target is not None:
        request.path = change.target
    for header, value in change.headers:
        request.headers[header] = value
    if change.cookies:
        cookies = request.cookies
        for cookie, value in change.cookies:
            cookies[cookie] = value
    if change.form:
        flow.metadata[_FORM] = change.form


def _canonical(host: str) -> str:
    try:
        return canonical_host(host)
    except ValueError:
        return ""
