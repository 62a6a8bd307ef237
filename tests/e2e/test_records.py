"""Issue #15 through real mitmdump: a request's bytes can never suppress its record, and a
statutory block's alert leaves the gateway without the statutory URL.

The requests are written on raw sockets: curl and httpx will not send a header that is not
ASCII/UTF-8, and that is exactly what a learner's crafted client sends.  Before the fix the
first test's record never reached the log (the writer dropped it), and the second's webhook
body carried the full CTIRU URL and entry.
"""

from __future__ import annotations

import json
import socket

import pytest

from .conftest import LEARNER_IP, STAFF_IP
from .test_safeguarding import guarded, webhook  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.e2e

LATIN1_UA = b"Mozilla/5.0 (Zo\xeb's laptop) \xff\xfe"


def raw_request(proxy, url: str, host: str, user_agent: bytes, client_ip: str) -> bytes:
    """One plain-HTTP proxy request, bytes as given, from a chosen loopback address; the
    response's head (status line and headers)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15,
                                  source_address=(client_ip, 0)) as sock:
        sock.sendall(b"GET " + url.encode() + b" HTTP/1.1\r\nHost: " + host.encode()
                     + b"\r\nUser-Agent: " + user_agent + b"\r\nAccept: text/html\r\n"
                     b"Connection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def reference(head: bytes) -> str:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-webpolicy-reference":
            return value.strip().decode()
    raise AssertionError(f"no reference in {head!r}")




def test_a_blocked_request_with_a_non_utf8_user_agent_is_recorded(proxy):
    head = raw_request(proxy, "http://www.gambling.test/slots", "www.gambling.test", LATIN1_UA,
                       LEARNER_IP)
    assert head.startswith(b"HTTP/1.1 403"), head
    event_id = reference(head)
    records = proxy.records(1, lambda r: r["id"] == event_id)
    assert records, proxy.output[-3000:]
    record = records[0]
    assert record["user_agent"] == "Mozilla/5.0 (Zo\\xeb's laptop) \\xff\\xfe"
    assert record["action"] == "blocked" and record["list"] == "gambling"
    assert "cannot write the safeguarding log" not in proxy.output


def test_a_statutory_alert_carries_the_host_and_list_never_the_url(guarded, webhook):  # noqa: F811 - pytest fixtures
    head = raw_request(guarded, "http://ctiru-host.test/terror/page?id=7", "ctiru-host.test",
                       LATIN1_UA, STAFF_IP)
    assert head.startswith(b"HTTP/1.1 451"), head
    event_id = reference(head)
    alerts = webhook.wait(lambda b: b["record"]["id"] == event_id)
    assert alerts, guarded.output[-3000:]
    body = json.dumps(alerts[0])
    assert "/terror" not in body and "page?id" not in body, body
    assert alerts[0]["trigger"] == "statutory"
    assert alerts[0]["record"]["host"] == "ctiru-host.test"
    assert alerts[0]["record"]["url"] == "ctiru-host.test"
    assert alerts[0]["record"]["list"] == "ctiru"
    assert alerts[0]["record"]["entry"] == "[withheld: statutory list]"
    assert "Terrorist content" in alerts[0]["text"] and event_id in alerts[0]["text"]
    # The log on the gateway keeps the full record for the DSL, User-Agent escaped.
    [record] = guarded.records(1, lambda r: r["id"] == event_id)
    assert record["url"].startswith("http://ctiru-host.test/terror/page")
    assert record["entry"] == "ctiru-host.test/terror/page"
    assert record["user_agent"].startswith("Mozilla/5.0 (Zo\\xeb")


def read_log_now(proxy) -> str:
    """The log files as they are this instant (no waiting for the writer's next flush)."""
    return "".join(path.read_text(errors="replace")
                   for path in sorted(proxy.log_dir.glob("webpolicy-*.jsonl")))


def test_a_statutory_record_is_on_disk_before_its_block_page_arrives(proxy):
    """Ordinary records are flushed every 0.5 s; a statutory one is written and fsync'd before
    the page is sent, so the instant the learner sees the page, the DSL's record exists."""
    for attempt in range(5):
        head = raw_request(proxy, f"http://ctiru-host.test/terror/page?n={attempt}",
                           "ctiru-host.test", b"curl/8", LEARNER_IP)
        assert head.startswith(b"HTTP/1.1 451"), head
        assert reference(head) in read_log_now(proxy), f"attempt {attempt}: not yet on disk"
