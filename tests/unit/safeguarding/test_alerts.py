"""Alerts: triggers, one per person+category per window, webhook bodies, SMTP with STARTTLS and
login, retries with backoff, and a worker that never blocks the caller.

Real servers on loopback: an HTTP server for webhooks and aiosmtpd for e-mail.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from webpolicy.policy.model import AlertSettings, EmailSettings, WebhookSettings
from webpolicy.safeguarding.alerts import (
    REPEAT_CATEGORY,
    Alert,
    Alerter,
    AlertRules,
    PermanentError,
    facts,
    plain_text,
    send_email,
    send_webhook,
    webhook_body,
)


def record(**fields) -> dict:
    base = {"schema": 1, "id": "WP-0123456789", "time": "2026-11-25T14:03:12.345Z",
            "client_ip": "10.10.4.17", "user": "alice", "device": "Library PC 3",
            "profile": "learner", "profile_reason": "default", "action": "blocked",
            "method": "GET", "url": "https://bad.test/page?[redacted]", "host": "bad.test",
            "search_term": None, "list": "gambling", "category": "Gambling",
            "severity": "medium", "statutory": False, "match": "host", "entry": "bad.test",
            "user_agent": "curl/8", "policy_version": "t1", "watchlist": None}
    return {**base, **fields}


STATUTORY = {"statutory": True, "severity": "critical", "category": "Terrorist content",
             "list": "ctiru"}
WATCH_HIGH = {"action": "flagged", "search_term": "how to self harm", "category": "Self-harm",
              "severity": "high", "list": "self_harm",
              "watchlist": {"list": "self_harm", "category": "Self-harm", "severity": "high",
                            "term": "self harm"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- rules --------------------------------------------------------------------------------


def rules(count=3, minutes=10):
    clock = Clock()
    return AlertRules(AlertSettings(repeat_count=count, repeat_minutes=minutes), clock), clock


def test_statutory_alerts_once_per_person_and_category_per_window():
    r, clock = rules()
    alert, _ = r.consider(record(**STATUTORY))
    assert alert.trigger == "statutory" and alert.who == "alice"
    clock.now += 60
    alert, suppressed = r.consider(record(**STATUTORY))
    assert alert is None and [s.trigger for s in suppressed] == ["statutory"]
    other, _ = r.consider(record(**STATUTORY, user="bob"))
    assert other is not None                           # another person
    clock.now += 600
    assert r.consider(record(**STATUTORY))[0] is not None   # window over


def test_critical_non_statutory_and_watchlist_levels():
    r, _ = rules()
    assert r.consider(record(severity="critical", category="Weapons"))[0].trigger == "critical"
    assert r.consider(record(**WATCH_HIGH))[0].trigger == "watchlist"
    medium = {**WATCH_HIGH, "watchlist": {**WATCH_HIGH["watchlist"], "severity": "medium"},
              "user": "carol"}
    assert r.consider(record(**medium))[0] is None
    assert r.consider(record(action="logged", severity="low", user="dave"))[0] is None


def test_watchlist_hit_on_a_blocked_request_still_alerts():
    r, _ = rules()
    blocked = record(**{**WATCH_HIGH, "action": "blocked", "category": "Gambling",
                        "severity": "medium"})
    alert, _ = r.consider(blocked)
    assert alert.trigger == "watchlist" and alert.category == "Self-harm"


def test_repeat_attempts_by_user_within_window():
    r, clock = rules(count=3, minutes=10)
    assert r.consider(record())[0] is None
    clock.now += 60
    assert r.consider(record(category="Pornography"))[0] is None
    clock.now += 60
    alert, _ = r.consider(record())
    assert alert.trigger == "repeat" and alert.category == REPEAT_CATEGORY and alert.attempts == 3
    assert "3 blocked attempts" in alert.reason


def test_repeat_needs_the_blocks_inside_the_window():
    r, clock = rules(count=3, minutes=10)
    for _ in range(5):
        assert r.consider(record())[0] is None
        clock.now += 301                                # 5 min apart: never 3 in 10 min


def test_repeat_counts_by_client_address_without_login():
    r, _ = rules(count=2)
    r.consider(record(user=None, client_ip="10.0.0.9"))
    assert r.consider(record(user=None, client_ip="10.0.0.8"))[0] is None
    alert, _ = r.consider(record(user=None, client_ip="10.0.0.9"))
    assert alert.who == "10.0.0.9"


def test_logged_and_flagged_are_not_blocks_for_repeat():
    r, _ = rules(count=2)
    r.consider(record(action="logged"))
    assert r.consider(record(action="logged"))[0] is None


# -- formatting ---------------------------------------------------------------------------


def test_plain_text_is_plain_words():
    alert = Alert("watchlist", "Self-harm", "alice", record(**WATCH_HIGH))
    text = plain_text(alert, "Example College")
    assert "Example College" in text
    assert 'searched for "how to self harm"' in text
    assert "user alice" in text and 'device "Library PC 3"' in text and "10.10.4.17" in text
    assert "WP-0123456789" in text
    assert "webpolicy report --user alice" in text
    assert "allowed and recorded" in text


def test_webhook_bodies():
    alert = Alert("statutory", "Terrorist content", "alice", record(**STATUTORY))
    body = webhook_body(alert, "json", "Org")
    assert body["trigger"] == "statutory" and body["record"]["id"] == "WP-0123456789"
    assert "Terrorist content" in webhook_body(alert, "slack")["text"]
    teams = webhook_body(alert, "teams")
    card = teams["attachments"][0]
    assert teams["type"] == "message"
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    facts = {f["title"]: f["value"] for f in card["content"]["body"][1]["facts"]}
    assert facts["Reference"] == "WP-0123456789"
    json.dumps(teams)                                   # serialisable


# -- a real webhook server ----------------------------------------------------------------


class Hook:
    """HTTP server on loopback answering with scripted status codes."""

    def __init__(self, statuses=(200,), delay: float = 0.0):
        self.bodies: list[dict] = []
        self.statuses = list(statuses)
        self.delay = delay
        self.hits = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                hook.hits += 1
                data = self.rfile.read(int(self.headers["content-length"]))
                hook.bodies.append(json.loads(data))
                time.sleep(hook.delay)
                status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    servers = []

    def start(*args, **kwargs):
        servers.append(Hook(*args, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def counter():
    counts: dict[tuple[str, str], int] = {}
    lock = threading.Lock()

    def count(channel, result):
        with lock:
            counts[(channel, result)] = counts.get((channel, result), 0) + 1
    return counts, count


def test_webhook_delivered_by_worker(hook):
    server = hook()
    counts, count = counter()
    alerter = Alerter(AlertSettings(webhook=WebhookSettings(server.url, "teams")), count,
                      "Org").start()
    alerter.offer(record(**STATUTORY))
    alerter.offer(record(action="logged", severity="low", user="zed"))   # not alert-worthy
    assert wait_for(lambda: counts.get(("webhook", "sent")) == 1)
    alerter.close()
    assert len(server.bodies) == 1
    assert server.bodies[0]["attachments"][0]["content"]["type"] == "AdaptiveCard"


def test_failures_are_retried_with_backoff_then_sent(hook):
    server = hook(statuses=(500, 503, 200))
    counts, count = counter()
    alerter = Alerter(AlertSettings(webhook=WebhookSettings(server.url)), count,
                      retry_delays=(0.2, 0.4, 5)).start()
    started = time.monotonic()
    alerter.offer(record(**STATUTORY))
    assert wait_for(lambda: counts.get(("webhook", "sent")) == 1)
    elapsed = time.monotonic() - started
    alerter.close()
    assert server.hits == 3
    assert counts[("webhook", "retry")] == 2
    assert elapsed >= 0.6                                 # 0.2 then 0.4 seconds of backoff


def test_client_errors_are_not_retried(hook):
    server = hook(statuses=(404,))
    counts, count = counter()
    alerter = Alerter(AlertSettings(webhook=WebhookSettings(server.url)), count,
                      retry_delays=(0.05, 0.05)).start()
    alerter.offer(record(**STATUTORY))
    assert wait_for(lambda: counts.get(("webhook", "failed")) == 1)
    time.sleep(0.2)
    alerter.close()
    assert server.hits == 1 and ("webhook", "retry") not in counts


def test_unreachable_webhook_gives_up_after_retries(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                        # nothing listens here
    counts, count = counter()
    alerter = Alerter(AlertSettings(webhook=WebhookSettings(f"http://127.0.0.1:{port}/")), count,
                      retry_delays=(0.05, 0.05)).start()
    alerter.offer(record(**STATUTORY))
    assert wait_for(lambda: counts.get(("webhook", "failed")) == 1)
    alerter.close()
    assert counts[("webhook", "retry")] == 2
    assert "failed after 3 attempt(s)" in capsys.readouterr().err


def test_a_slow_webhook_never_blocks_offer_or_later_alerts(hook):
    slow = hook(delay=1.0)
    counts, count = counter()
    alerter = Alerter(AlertSettings(webhook=WebhookSettings(slow.url)), count).start()
    started = time.perf_counter()
    for i in range(200):
        alerter.offer(record(**STATUTORY, user=f"user{i}"))
    assert time.perf_counter() - started < 0.05           # 200 offers: queue puts only
    assert wait_for(lambda: counts.get(("webhook", "sent"), 0) >= 2, timeout=5)
    alerter.close(timeout=0.1)
    assert counts.get(("webhook", "dropped"), 0) > 0      # shutdown does not wait for all


def test_duplicates_are_counted_as_suppressed(hook):
    server = hook()
    counts, count = counter()
    alerter = Alerter(AlertSettings(repeat_count=6, webhook=WebhookSettings(server.url)),
                      count).start()
    for _ in range(5):
        alerter.offer(record(**STATUTORY))
    alerter.close()
    assert counts[("webhook", "sent")] == 1 and counts[("webhook", "suppressed")] == 4
    assert len(server.bodies) == 1


def test_persisting_after_a_statutory_alert_raises_a_repeat_alert():
    r, _ = rules(count=3)
    triggers = [r.consider(record(**STATUTORY))[0] for _ in range(3)]
    assert [a.trigger if a else None for a in triggers] == ["statutory", None, "repeat"]


def test_no_channels_means_nothing_queued():
    alerter = Alerter(AlertSettings()).start()
    alerter.offer(record(**STATUTORY))
    assert alerter._queue.empty()
    alerter.close()


def test_configure_swaps_channels_and_keeps_state(hook):
    first, second = hook(), hook()
    counts, count = counter()
    alerter = Alerter(AlertSettings(webhook=WebhookSettings(first.url)), count).start()
    alerter.offer(record(**STATUTORY))
    assert wait_for(lambda: len(first.bodies) == 1)
    alerter.configure(AlertSettings(webhook=WebhookSettings(second.url)))
    alerter.offer(record(**STATUTORY))                     # same person+category: suppressed
    alerter.offer(record(**STATUTORY, user="bob"))
    alerter.close()
    assert len(first.bodies) == 1 and len(second.bodies) == 1
    assert second.bodies[0]["record"]["user"] == "bob"


def test_redirect_is_not_followed(hook):
    server = hook(statuses=(302,))
    with pytest.raises(Exception) as info:
        send_webhook(WebhookSettings(server.url), {"x": 1})
    assert not isinstance(info.value, PermanentError)     # 3xx: retried, never followed
    assert server.hits == 1


# -- a real SMTP server (aiosmtpd) with STARTTLS and login --------------------------------


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "smtp-cert.pem", tmp_path / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Mailbox:
    def __init__(self):
        self.messages = []
        self.logins = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content),
                              session.ssl is not None))
        return "250 OK"

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login.decode(), session.ssl is not None))
        ok = auth_data.login == b"dsl-bot" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)    # handled=False: aiosmtpd answers 535


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp(tmp_path):
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=server_tls,
                            require_starttls=True, authenticator=mailbox.authenticator,
                            auth_require_tls=True)
    controller.start()
    client_tls = ssl.create_default_context(cafile=str(cert))
    yield mailbox, port, client_tls
    controller.stop()


def email_settings(port, **overrides):
    values = dict(host="127.0.0.1", port=port, starttls=True, username="dsl-bot",
                  password_env="TEST_WEBPOLICY_SMTP_PASSWORD", sender="filter@example.org",
                  to=("dsl@example.org", "deputy@example.org"))
    return EmailSettings(**{**values, **overrides})


def test_email_over_starttls_with_login(smtp, monkeypatch):
    mailbox, port, tls = smtp
    monkeypatch.setenv("TEST_WEBPOLICY_SMTP_PASSWORD", "s3cret")
    counts, count = counter()
    alerter = Alerter(AlertSettings(email=email_settings(port)), count, "Example College",
                      context=tls).start()
    alerter.offer(record(**WATCH_HIGH))
    assert wait_for(lambda: counts.get(("email", "sent")) == 1), counts
    alerter.close()
    rcpts, message, encrypted = mailbox.messages[0]
    assert rcpts == ["dsl@example.org", "deputy@example.org"] and encrypted
    assert mailbox.logins == [("dsl-bot", True)]          # login only after STARTTLS
    assert message["Subject"] == "Safeguarding alert: Self-harm (WP-0123456789)"
    assert "alice" not in message["Subject"]              # no names on lock screens
    body = message.get_payload(decode=True).decode()
    assert 'searched for "how to self harm"' in body and "Example College" in body


def test_wrong_password_is_a_permanent_failure(smtp, monkeypatch):
    mailbox, port, tls = smtp
    monkeypatch.setenv("TEST_WEBPOLICY_SMTP_PASSWORD", "wrong")
    with pytest.raises(PermanentError, match="535"):
        send_email(email_settings(port), _message(port), tls)
    assert not mailbox.messages


def test_missing_password_variable_fails_before_connecting(monkeypatch):
    monkeypatch.delenv("TEST_WEBPOLICY_SMTP_PASSWORD", raising=False)
    with pytest.raises(PermanentError, match="TEST_WEBPOLICY_SMTP_PASSWORD"):
        send_email(email_settings(1), _message(1))


def test_server_without_starttls_never_gets_the_password(monkeypatch):
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port,
                            authenticator=mailbox.authenticator, auth_require_tls=False)
    controller.start()
    try:
        monkeypatch.setenv("TEST_WEBPOLICY_SMTP_PASSWORD", "s3cret")
        with pytest.raises(PermanentError, match="STARTTLS"):
            send_email(email_settings(port), _message(port))
        assert mailbox.logins == [] and mailbox.messages == []
    finally:
        controller.stop()


def test_plain_smtp_without_login_when_configured_so(monkeypatch):
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        send_email(email_settings(port, starttls=False, username="", password_env=""),
                   _message(port))
        assert len(mailbox.messages) == 1
    finally:
        controller.stop()


def _message(port):
    from webpolicy.safeguarding.alerts import email_message
    alert = Alert("statutory", "Terrorist content", "alice", record(**STATUTORY))
    return email_message(alert, email_settings(port))


def test_alerts_link_to_the_event_in_the_console_when_it_is_set():
    """console.url in policy.yaml: the Review line is a link a DSL can open, not a command."""
    linked = AlertRules(AlertSettings(console_url="https://console.college.test/"), Clock())
    alert, _ = linked.consider(record(**STATUTORY))
    reference = alert.record["id"]
    assert alert.link == f"https://console.college.test/events/{reference}/"
    assert ("Review", alert.link) in facts(alert)
    plain, _ = rules()[0].consider(record(**STATUTORY))
    assert plain.link == "" and dict(facts(plain))["Review"].startswith("webpolicy report")
