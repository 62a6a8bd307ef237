"""A learner's request that a blocked site be reviewed: the form's token and the record.

The learner cannot be expected to reach the console (it is for staff, on loopback or the
staff network), so the gateway itself takes the request: the block page carries a form that
posts to a reserved path the proxy answers (proxy/reviewform.py) and never forwards.  What is
asked for comes from the token the proxy put in the page, not from the form: the blocked
attempt's reference, site, category and who was identified.  The token is an HMAC
(SHA-256, the standard library's `hmac`) with a key that exists only in the proxy's memory
(with `--workers N`, the supervisor's, given to every worker in its environment, so a form
served by one worker is accepted by another),
over those facts, the client address and the time it was issued; so a page elsewhere cannot
forge a request (it cannot read the token from the block page, another origin), a token
copied to another client is refused, and a token expires (TOKEN_SECONDS, or when the proxy
restarts: the learner reloads the blocked page for a new one).

The request becomes a `review_requested` record in the safeguarding log, the system of
record, with the same fields as any record (docs/event-record.md) and two more: `request_for`
(the blocked attempt's reference) and `reason` (the learner's words, optional, cleaned and
cut to REASON_LIMIT characters).  Nothing here, or anywhere, unblocks a site: IT or a DSL
answers in the console, and changing the policy stays a person's deliberate act.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
import unicodedata
from dataclasses import dataclass, fields

from webpolicy.safeguarding.events import SCHEMA_VERSION
from webpolicy.safeguarding.safetext import clean_text

REVIEW_REQUESTED = "review_requested"
TOKEN_SECONDS = 8 * 3600          # a school day: the page may stay open in a tab
REASON_LIMIT = 300                # characters of the learner's reason
TOKEN_LIMIT = 2048                # characters of a token (a host is at most 253)


class ReviewRequestError(ValueError):
    """A form the gateway refuses: a token that is not ours, another client's, or expired."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a block page's form may ask for, as the proxy knew it when it blocked."""

    reference: str            # the blocked attempt's record
    client_ip: str
    user: str | None
    device: str | None
    profile: str
    profile_reason: str
    host: str
    list: str | None
    category: str | None
    policy_version: str
    issued: float             # time.time() when the page was made


_FIELDS = tuple(field.name for field in fields(Ticket))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ReviewTokens:
    """Issues and checks the forms' tokens with a key made when the proxy starts."""

    def __init__(self, key: bytes | None = None, clock=time.time) -> None:
        self._key = key or secrets.token_bytes(32)
        self._clock = clock

    def _mac(self, payload: bytes) -> str:
        return _b64(hmac.digest(self._key, payload, hashlib.sha256))

    def issue(self, ticket: Ticket) -> str:
        """Runs on the event loop for every HTML block page: a few microseconds (the fields
        as a JSON list, not a dict: dataclasses.asdict alone cost more than the rest)."""
        values = [getattr(ticket, name) for name in _FIELDS]
        payload = _b64(json.dumps(values, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload.encode())}"

    def ticket(self, token: str, client_ip: str) -> Ticket:
        """The ticket a token carries, if it is ours, for this client and not expired."""
        payload, _, mac = token.strip().partition(".")
        if not payload or len(token) > TOKEN_LIMIT or not hmac.compare_digest(
                mac.encode(), self._mac(payload.encode()).encode()):
            raise ReviewRequestError("the form was not made by this gateway")
        try:
            values = json.loads(_unb64(payload))
            if not isinstance(values, list) or len(values) != len(_FIELDS):
                raise ValueError("not a ticket")
            ticket = Ticket(*values)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ReviewRequestError("the form was not made by this gateway") from exc
        if ticket.client_ip != client_ip:
            raise ReviewRequestError("the form was made for another device")
        if not 0 <= self._clock() - ticket.issued <= TOKEN_SECONDS:
            raise ReviewRequestError("the form has expired")
        return ticket


def clean_reason(text: str) -> str:
    """The learner's reason as one line of plain text: normalised (NFKC), controls and line
    breaks made spaces, whitespace collapsed, cut to REASON_LIMIT characters.  It is shown
    HTML-escaped wherever it appears; this keeps the record and the console's table tidy."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                   for c in text)
    return clean_text(" ".join(text.split())[:REASON_LIMIT], REASON_LIMIT)


def request_record(event_id: str, ticket: Ticket, reason: str, user_agent: str = "",
                   when: dt.datetime | None = None) -> dict:
    """The `review_requested` record: a record like any other (its own reference and time,
    who asked, the site) with `request_for` and `reason`.  No severity: asking is no event
    of concern, and reports must not count it as one."""
    when = when or dt.datetime.now(dt.UTC)
    return {
        "schema": SCHEMA_VERSION,
        "id": event_id,
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "client_ip": ticket.client_ip,
        "user": ticket.user,
        "device": ticket.device,
        "profile": ticket.profile,
        "profile_reason": ticket.profile_reason,
        "action": REVIEW_REQUESTED,
        "method": "POST",
        "url": ticket.host,
        "host": ticket.host,
        "search_term": None,
        "list": ticket.list,
        "category": ticket.category,
        "severity": None,
        "statutory": False,
        "match": None,
        "entry": None,
        "user_agent": user_agent or None,
        "policy_version": ticket.policy_version,
        "watchlist": None,
        "request_for": ticket.reference,
        "reason": clean_reason(reason) or None,
    }
