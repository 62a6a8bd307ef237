"""The gateway's answer to a block page's "ask for this site to be reviewed" form.

The form posts to blockpage.REVIEW_PATH on the blocked site itself (the page's own origin, so
the browser sends it through the proxy like the request that was blocked).  That path is the
gateway's own on every host: it is answered here and never forwarded, whatever the host.
- `begin` (first in `requestheaders`, before signing in or deciding: the path is answered
  whoever asks) claims the flow: a GET or a body too big is answered at once; a POST is
  marked and answered in `request`, where its body is.
- `answer` checks the token (safeguarding/reviewrequests.py: made by this gateway, for this
  client, not expired), the client's rate (RATE_LIMIT per RATE_WINDOW, and one request per
  blocked reference), writes the `review_requested` record to the safeguarding log durably
  (the writer thread fsyncs it; the event loop only awaits), then says "your request was
  sent", or plainly why not.
Nothing is unblocked: the request is a record, listed in the console for IT and DSLs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable
from html import escape

from mitmproxy import http

from webpolicy.identity.logins import Throttle
from webpolicy.proxy.blockpage import REVIEW_PATH
from webpolicy.proxy.flows import client_ip, make_response
from webpolicy.proxy.gate import Gate
from webpolicy.safeguarding.events import new_event_id
from webpolicy.safeguarding.logwriter import DURABLE_TIMEOUT
from webpolicy.safeguarding.reviewrequests import (
    TOKEN_SECONDS,
    ReviewRequestError,
    request_record,
)

log = logging.getLogger("webpolicy")

FORM = "webpolicy_review_form"     # flow.metadata: a POST to answer in `request`
BODY_LIMIT = 8192                  # bytes of a posted form (token + 300 characters)
RATE_LIMIT = 5                     # requests per client address ...
RATE_WINDOW = 3600.0               # ... per hour
ASKED_SIZE = 100_000               # references remembered (one request each)

HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy",
     b"default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; "
     b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
]


class ReviewForm:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.throttle = Throttle(RATE_LIMIT, RATE_WINDOW)
        self._asked: OrderedDict[str, float] = OrderedDict()   # reference -> when asked

    @staticmethod
    def is_ours(flow: http.HTTPFlow) -> bool:
        return flow.request.path.partition("?")[0] == REVIEW_PATH

    def begin(self, flow: http.HTTPFlow) -> bool:
        """True if the flow is the review form's (answered now, or in `request`)."""
        if not self.is_ours(flow):
            return False
        request = flow.request
        if request.method != "POST":
            _page(flow, 405, "Nothing to see here",
                  "This address takes the form on a block page.")
            return True
        length = request.headers.get("content-length")
        # HTTP/2 may send a body without Content-Length: its size is checked in `answer`.
        if (length is None and not request.is_http2) or \
                (length is not None and (not length.isdigit() or int(length) > BODY_LIMIT)):
            _too_long(flow)
            return True
        request.stream = False
        flow.metadata[FORM] = True
        return True

    def answer(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """In `request`: check, record, answer.  Returns what the hook must await (the
        record's durable write) or None when the answer is ready."""
        if not flow.metadata.get(FORM) or flow.response is not None:
            return None
        client = client_ip(flow)
        body = flow.request.get_content(strict=False) or b""
        if len(body) > BODY_LIMIT:
            _too_long(flow)
            return None
        try:
            fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:                      # more fields than the form has
            _page(flow, 400, "The request could not be sent",
                  "The form was not the block page's. Go back, reload it and try again.")
            return None
        try:
            ticket = self.gate.review_tokens.ticket((fields.get("token") or [""])[0], client)
        except ReviewRequestError as exc:
            _page(flow, 403, "The request could not be sent",
                  f"{exc}. Go back to the blocked page, reload it and try again.")
            return None
        if ticket.reference in self._asked:
            _sent(flow, ticket.host, ticket.reference, again=True)
            return None
        if self.throttle.blocked(client):
            _page(flow, 429, "Too many requests",
                  "You have asked for several reviews already. Please wait an hour, or "
                  "speak to your tutor or the IT helpdesk.")
            return None
        writer = self.gate.log_writer
        if writer is None:
            _unrecorded(flow)
            return None
        self.throttle.failed(client)            # counts every request, not only failures
        self._remember(ticket.reference)
        record = request_record(new_event_id(), ticket, (fields.get("reason") or [""])[0],
                                flow.request.headers.get("user-agent", ""))
        return self._when_written(flow, writer.submit_durable(record), ticket.host,
                                  ticket.reference)

    def _remember(self, reference: str) -> None:
        now = time.monotonic()
        self._asked[reference] = now
        while self._asked and (len(self._asked) > ASKED_SIZE
                               or next(iter(self._asked.values())) < now - TOKEN_SECONDS):
            self._asked.popitem(last=False)

    async def _when_written(self, flow: http.HTTPFlow,
                            future: concurrent.futures.Future[None], host: str,
                            reference: str) -> None:
        """Awaited by mitmproxy after the hook returned, so failsafe no longer guards it: it
        answers in every case (a flow left without a response would be forwarded)."""
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), DURABLE_TIMEOUT)
            _sent(flow, host, reference)
        except Exception as exc:  # noqa: BLE001 - LogWriteError, TimeoutError, anything
            log.error("webpolicy: a review request for %s was not confirmed on disk: %r",
                      reference, exc)
            self._asked.pop(reference, None)    # let the learner try again
            _unrecorded(flow)
        finally:
            if flow.response is None:
                flow.response = make_response(503, b"", HEADERS)


def _sent(flow: http.HTTPFlow, host: str, reference: str, again: bool = False) -> None:
    first = ("You have already asked for this site to be reviewed." if again
             else "Your request was sent.")
    _page(flow, 200, "Your request was sent" if not again else "Already asked",
          f"{first} Staff will look at {escape(host)} (reference "
          f"<strong>{escape(reference)}</strong>). The site stays blocked unless they decide "
          "to change the filter; you do not need to ask again.", html=True)


def _too_long(flow: http.HTTPFlow) -> None:
    _page(flow, 413, "The request could not be sent",
          "The form was too long. Go back, shorten your reason and try again.")


def _unrecorded(flow: http.HTTPFlow) -> None:
    _page(flow, 503, "The request could not be sent",
          "The web filter could not record your request right now. Please try again in a "
          "few minutes, or tell your tutor or the IT helpdesk the reference on the block page.")


def _page(flow: http.HTTPFlow, status: int, title: str, text: str, html: bool = False) -> None:
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;'
            f'max-width:36rem;margin:10vh auto;padding:0 1rem;color:#1f2937}}</style></head>'
            f'<body><h1>{escape(title)}</h1><p id="answer">{text if html else escape(text)}</p>'
            f'</body></html>')
    flow.response = make_response(status, body.encode(), HEADERS)
