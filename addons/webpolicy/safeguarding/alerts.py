"""Real-time alerts to the Designated Safeguarding Lead: webhook (JSON, Slack, Teams) and e-mail.

What raises an alert (DfE monitoring standard: serious cases reach the DSL quickly):
  * a statutory list hit (CTIRU, IWF) or any hit on a list of severity `critical`;
  * a search matching a watchlist term of severity `high` or `critical`;
  * repeat attempts: `alerts.repeat.count` blocks by one user (or, without a login, one client
    address) within `alerts.repeat.minutes`.
One alert per person and category per window (`repeat.minutes`), so a learner reloading a
blocked page does not flood the DSL's inbox; the suppressed ones are counted.

The proxy only puts records on a queue (`offer`, never blocks); one worker thread decides,
formats and sends, retrying failures with exponential backoff without holding up later alerts.
Outcomes go to a counter as (channel, result): sent, retry, failed, suppressed, dropped.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import os
import queue
import smtplib
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from urllib.parse import quote

from webpolicy.policy.model import AlertSettings, EmailSettings, WebhookSettings
from webpolicy.policy.severity import SEVERITY_RANK
from webpolicy.safeguarding.alertstate import MemoryState, RepeatState
from webpolicy.safeguarding.confidential import shareable
from webpolicy.safeguarding.safetext import clean_record, clean_text, conform, display

RETRY_DELAYS = (2.0, 10.0, 60.0, 300.0)    # seconds before each retry; then give up
MAX_PENDING = 1000                         # deliveries waiting; more are dropped and counted
SEND_TIMEOUT = 15.0
REPEAT_CATEGORY = "Repeated blocked attempts"
BLOCK_ACTIONS = ("blocked", "refused_passthrough")

Counter = Callable[[str, str], None]       # (channel, result)

OUTCOMES = {
    "blocked": "blocked: the page was not shown",
    "refused_passthrough": "blocked: the connection was refused",
    "failed_closed": "blocked: the filter could not decide, so it failed safe",
    "logged": "allowed and recorded (a log-only list)",
    "flagged": "allowed and recorded (the search matched the watchlist)",
}


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad URL, rejected credentials ...)."""


@dataclass(frozen=True)
class Alert:
    trigger: str              # "statutory" | "critical" | "watchlist" | "repeat"
    category: str
    who: str
    record: dict
    attempts: int = 0         # blocks within the window, for repeat alerts
    link: str = ""            # the event in the safeguarding console, if console.url is set

    @property
    def shared(self) -> dict:
        """The record as it may leave the gateway: text made safe to encode (a non-UTF-8
        User-Agent must not stop the alert) and a statutory list's URL and entry withheld."""
        return shareable(clean_record(self.record))

    @property
    def reason(self) -> str:
        return clean_text(self._reason())

    def _reason(self) -> str:
        record = self.shared
        watch = record.get("watchlist") or {}
        if self.trigger == "statutory":
            return f"A statutory list was hit: {self.category}"
        if self.trigger == "critical":
            return f"A critical-severity list was hit: {self.category}"
        if self.trigger == "watchlist":
            return (f"A search matched the watchlist: {self.category} "
                    f"(term \"{watch.get('term', '')}\", severity {watch.get('severity', '')})")
        return f"{self.attempts} blocked attempts within a few minutes (latest: " \
               f"{record.get('category') or 'blocked'})"

    @property
    def title(self) -> str:
        return clean_text(f"Safeguarding alert: {self.category} ({self.shared.get('id', '')})")


class AlertRules:
    """Which records raise an alert and which are suppressed.  What it remembers is in
    `state` (alertstate.py): this process's memory, or the database the workers share, whose
    times are wall-clock (pass clock=time.time with it)."""

    def __init__(self, settings: AlertSettings, clock: Callable[[], float] = time.monotonic,
                 state: RepeatState | None = None):
        self.settings = settings
        self.clock = clock
        self.state = state or MemoryState()

    @property
    def window(self) -> float:
        return self.settings.repeat_minutes * 60.0

    def consider(self, record: dict) -> tuple[Alert | None, list[Alert]]:
        """(the alert to send or None, alerts suppressed as duplicates)."""
        record = conform(record)
        now = self.clock()
        who = who_of(record)
        candidates = self._candidates(record, who, now)
        suppressed = []
        for alert in candidates:
            if not self.state.claim(who, alert.category, now, self.window):
                suppressed.append(alert)
                continue
            return self._linked(alert), suppressed
        return None, suppressed

    def _linked(self, alert: Alert) -> Alert:
        """The alert with a link to its event in the safeguarding console, when policy.yaml
        says where the console is (`console.url`)."""
        base = self.settings.console_url
        reference = alert.record.get("id")
        if not base or not isinstance(reference, str):
            return alert
        return replace(alert, link=f"{base.rstrip('/')}/events/{quote(reference, safe='')}/")

    def _candidates(self, record: dict, who: str, now: float) -> list[Alert]:
        found = []
        category = record.get("category") or ""
        if record.get("statutory"):
            found.append(Alert("statutory", category, who, record))
        elif record.get("severity") == "critical":
            found.append(Alert("critical", category, who, record))
        watch = record.get("watchlist")
        if watch and SEVERITY_RANK.get(watch.get("severity", ""), 0) >= SEVERITY_RANK["high"]:
            found.append(Alert("watchlist", watch.get("category") or category, who, record))
        if record.get("action") in BLOCK_ACTIONS:
            attempts = self.state.block(who, now, self.window, self.settings.repeat_count)
            if attempts:
                found.append(Alert("repeat", REPEAT_CATEGORY, who, record, attempts))
        return found


def who_of(record: dict) -> str:
    """The person an alert is about: the login name, else the client address."""
    return record.get("user") or record.get("client_ip") or "unknown"


# -- formatting ---------------------------------------------------------------------------


def facts(alert: Alert) -> list[tuple[str, str]]:
    """(label, value) pairs in plain words, for every channel."""
    r = alert.shared
    who = [f"user {r['user']}" if r.get("user") else "no login"]
    if r.get("device"):
        who.append(f"device \"{r['device']}\"")
    who.append(f"address {r.get('client_ip') or 'unknown'}")
    what = r.get("url") or r.get("host") or ""
    if r.get("search_term"):
        what = f"searched for \"{r['search_term']}\" ({what})"
    rows = [
        ("Why", alert.reason),
        ("Who", ", ".join(who) + f" (profile {r.get('profile', '')})"),
        ("When", _when(display(r.get("time")))),
        ("What", what),
        ("Outcome", OUTCOMES.get(r.get("action", ""), r.get("action", ""))),
        ("Reference", r.get("id", "")),
    ]
    if alert.link:
        rows.append(("Review", alert.link))
    else:
        person = f"--user {r['user']}" if r.get("user") else f"--client {r.get('client_ip', '')}"
        rows.append(("Review", f"webpolicy report {person} --since 7d"))
    return [(label, display(value)) for label, value in rows]


def _when(text: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    local = moment.astimezone()
    return f"{local:%a %d %b %Y %H:%M:%S} {local.tzname() or ''}".strip()


def plain_text(alert: Alert, organisation: str = "") -> str:
    width = max(len(label) for label, _ in facts(alert))
    lines = [f"Safeguarding alert from the web filter{f' ({organisation})' if organisation else ''}",
             ""]
    lines += [f"{label:<{width}}  {value}" for label, value in facts(alert)]
    lines += ["", "This message was sent automatically by webpolicy. Please follow your "
              "safeguarding procedure."]
    return "\n".join(lines) + "\n"


def webhook_body(alert: Alert, style: str, organisation: str = "") -> dict:
    """The POST body: plain JSON, Slack (and Mattermost, Google Chat) or Microsoft Teams."""
    if style == "slack":
        return {"text": f"*{alert.title}*\n```\n{plain_text(alert, organisation)}```"}
    if style == "teams":
        card = {
            "type": "AdaptiveCard", "version": "1.4",
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "body": [
                {"type": "TextBlock", "text": alert.title, "weight": "Bolder", "size": "Medium",
                 "color": "Attention", "wrap": True},
                {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts(alert)]},
            ],
        }
        return {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
             "content": card}]}
    return {"source": "webpolicy", "type": "safeguarding_alert", "trigger": alert.trigger,
            "category": clean_text(alert.category), "who": clean_text(alert.who),
            "title": alert.title,
            "organisation": organisation, "text": plain_text(alert, organisation),
            "record": alert.shared}


def email_message(alert: Alert, settings: EmailSettings, organisation: str = "") -> EmailMessage:
    message = EmailMessage()
    # The subject shows on lock screens: no names in it, only the category and reference.
    message["Subject"] = alert.title
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.to)
    message.set_content(plain_text(alert, organisation))
    return message


# -- delivery -----------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):   # a redirected POST would lose its body
        return None


def send_webhook(settings: WebhookSettings, body: dict,
                 context: ssl.SSLContext | None = None) -> None:
    """POST the body; raises PermanentError for answers a retry cannot change."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),            # never through http_proxy (maybe ourselves)
        urllib.request.HTTPSHandler(context=context or ssl.create_default_context()),
        _NoRedirect())
    request = urllib.request.Request(
        settings.url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "webpolicy-alerts"})
    try:
        with opener.open(request, timeout=SEND_TIMEOUT) as response:
            response.read(65536)
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 425, 429):
            raise PermanentError(f"webhook answered {exc.code} {exc.reason}") from None
        raise
    except ValueError as exc:                       # not a URL at all
        raise PermanentError(f"webhook URL: {exc}") from None


def send_email(settings: EmailSettings, message: EmailMessage,
               context: ssl.SSLContext | None = None) -> None:
    """SMTP with STARTTLS (or implicit TLS on port 465) and login; never sends a password in
    clear: STARTTLS that the server does not offer is an error."""
    context = context or ssl.create_default_context()
    password = os.environ.get(settings.password_env, "") if settings.password_env else ""
    if settings.username and not password:
        raise PermanentError(f"alerts.email: environment variable "
                             f"{settings.password_env or '(password_env not set)'} is empty")
    try:
        if settings.port == 465:
            smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=SEND_TIMEOUT,
                                    context=context)
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=SEND_TIMEOUT)
        with smtp:
            smtp.ehlo()
            if settings.starttls and settings.port != 465:
                smtp.starttls(context=context)
                smtp.ehlo()
            if settings.username:
                smtp.login(settings.username, password)
            smtp.send_message(message)
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"SMTP server: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise PermanentError(f"SMTP server answered {exc.smtp_code} "
                                 f"{exc.smtp_error!r}") from None
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentError(f"SMTP server refused the recipients: {exc.recipients}") from None


@dataclass(order=True)
class _Delivery:
    due: float
    order: int
    channel: str = field(compare=False)
    alert: Alert = field(compare=False)
    attempt: int = field(default=0, compare=False)


_STOP = object()


class Alerter:
    """The alert worker: `offer` on the event loop, everything else on its own thread."""

    def __init__(self, settings: AlertSettings, count: Counter | None = None,
                 organisation: str = "", context: ssl.SSLContext | None = None,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 clock: Callable[[], float] = time.monotonic,
                 state: RepeatState | None = None):
        self.settings = settings
        self.organisation = organisation
        self.context = context
        self.retry_delays = retry_delays
        self.clock = clock
        self.rules = AlertRules(settings, clock, state)
        self._count = count or (lambda channel, result: None)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list[_Delivery] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()     # set by close(): stop regular sending at once
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.settings.webhook is not None or self.settings.email is not None

    def channels(self) -> list[str]:
        return [name for name, value in (("webhook", self.settings.webhook),
                                         ("email", self.settings.email)) if value is not None]

    def start(self) -> "Alerter":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webpolicy-alerts", daemon=True)
            self._thread.start()
        return self

    def configure(self, settings: AlertSettings, organisation: str = "") -> None:
        """New policy: new channels and thresholds; counting state is kept."""
        self._queue.put(("configure", settings, organisation))

    def offer(self, record: dict) -> None:
        """Called on the event loop for every recorded event: never blocks."""
        if self.enabled:
            self._queue.put(record)

    def close(self, timeout: float = 5.0) -> None:
        """Send what can be sent within `timeout` (first attempts first), then stop."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put((_STOP, self.clock() + timeout))
        self._thread.join(timeout + SEND_TIMEOUT)
        self._thread = None
        close_state = getattr(self.rules.state, "close", None)
        if close_state is not None:
            close_state()

    # -- worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        deadline = None
        while True:
            wait = None
            if self._pending:
                wait = max(0.0, self._pending[0].due - self.clock())
            if deadline is not None:
                wait = 0.0
            try:
                item = self._queue.get(timeout=wait) if wait != 0.0 else self._queue.get_nowait()
            except queue.Empty:
                item = None
            if isinstance(item, tuple) and item and item[0] is _STOP:
                deadline = item[1]
            elif isinstance(item, tuple) and item and item[0] == "configure":
                self._apply(item[1], item[2])
            elif isinstance(item, dict):
                self._handle(item)
            if deadline is not None and self._queue.empty():
                self._drain(deadline)
                return
            self._send_due(self.clock())

    def _apply(self, settings: AlertSettings, organisation: str) -> None:
        self.settings = self.rules.settings = settings
        self.organisation = organisation

    def _handle(self, record: dict) -> None:
        try:
            alert, suppressed = self.rules.consider(record)
        except Exception as exc:  # noqa: BLE001 - a malformed record must not stop alerting
            print(f"webpolicy: alert rules failed on a record: {exc!r}", file=sys.stderr)
            return
        for _ in suppressed:
            for channel in self.channels():
                self._count(channel, "suppressed")
        if alert is None:
            return
        for channel in self.channels():
            if len(self._pending) >= MAX_PENDING:
                self._count(channel, "dropped")
                continue
            heapq.heappush(self._pending, _Delivery(self.clock(), next(self._order), channel, alert))

    def _send_due(self, now: float) -> None:
        while self._pending and self._pending[0].due <= now and not self._stopping.is_set():
            self._attempt(heapq.heappop(self._pending))

    def _drain(self, deadline: float) -> None:
        """On shutdown: one try for everything not yet sent, while time allows."""
        for delivery in sorted(self._pending, key=lambda d: d.attempt):
            if self.clock() >= deadline:
                self._count(delivery.channel, "dropped")
                continue
            delivery.attempt = len(self.retry_delays)      # no retries any more
            self._attempt(delivery)
        self._pending.clear()

    def _attempt(self, delivery: _Delivery) -> None:
        try:
            self._deliver(delivery.channel, delivery.alert)
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none escapes
            self._failed_attempt(delivery, exc)
            return
        self.sent += 1
        self._count(delivery.channel, "sent")

    def _failed_attempt(self, delivery: _Delivery, exc: Exception) -> None:
        permanent = isinstance(exc, PermanentError)
        if permanent or delivery.attempt >= len(self.retry_delays):
            self.failed += 1
            self._count(delivery.channel, "failed")
            print(f"webpolicy: alert {delivery.alert.record.get('id', '')} by "
                  f"{delivery.channel} failed after {delivery.attempt + 1} attempt(s): {exc}",
                  file=sys.stderr)
            return
        self._count(delivery.channel, "retry")
        delivery.due = self.clock() + self.retry_delays[delivery.attempt]
        delivery.attempt += 1
        heapq.heappush(self._pending, delivery)

    def _deliver(self, channel: str, alert: Alert) -> None:
        settings = self.settings
        if channel == "webhook" and settings.webhook is not None:
            send_webhook(settings.webhook,
                         webhook_body(alert, settings.webhook.format, self.organisation),
                         self.context)
        elif channel == "email" and settings.email is not None:
            send_email(settings.email, email_message(alert, settings.email, self.organisation),
                       self.context)
        else:
            raise PermanentError(f"the {channel} channel is no longer configured")
