"""Safeguarding through real mitmdump: search terms, the watchlist, alerts to a real webhook
server, the log drained on SIGTERM, and the DSL report rendered by headless Chromium."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from webpolicy.cli import main as cli

from .browser import chromium, screenshot
from .conftest import LEARNER_IP, POLICY, STAFF_IP

pytestmark = pytest.mark.e2e


SAFEGUARDING = """
clients:
  users: {{alice: staff}}
  networks:
    - {{cidr: {staff_ip}/32, profile: staff}}
    - {{cidr: {learner_ip}/32, profile: learner}}
  devices: {{{learner_ip}: "Library PC 3"}}
watchlist:
  self_harm: {{category: Self-harm, severity: high, sources: [lists/watch/self-harm.txt]}}
  eating: {{category: Eating disorders, severity: medium, terms: [pro ana]}}
alerts:
  repeat: {{count: 3, minutes: 10}}
  webhook: {{url: "{hook_url}", format: json}}
"""

WATCH_LISTS = {"lists/watch/self-harm.txt": "# test terms\nself harm\nhurt myself\n"}


def safeguarding_policy() -> str:
    """The standard test policy with devices, a watchlist and alerts to a local webhook."""
    start = POLICY.index("clients:")
    end = POLICY.index("lists:")
    return POLICY[:start] + POLICY[end:] + SAFEGUARDING.lstrip("\n").replace(
        "clients:", "clients:", 1)


class Webhook:
    """A real HTTP server on loopback collecting alert POSTs."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def wait(self, where, timeout=10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [b for b in self.bodies if where(b)]
            if found:
                return found
            time.sleep(0.05)
        return []

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def guarded(make_proxy, webhook):
    policy = safeguarding_policy()
    return make_proxy(policy=policy, lists=WATCH_LISTS, hook_url=webhook.url)


def test_watchlist_search_is_allowed_recorded_as_flagged_and_alerted(guarded, sites, webhook):
    before = len(sites.log.requests_to("www.google.co.uk"))
    result = guarded.curl("https://www.google.co.uk/search?q=How+to+SELF-HARM+%26+hide+it&hl=en",
                          client_ip=LEARNER_IP)
    assert result.status == 200                                  # monitoring, not blocking
    assert len(sites.log.requests_to("www.google.co.uk")) == before + 1
    records = guarded.records(1, lambda r: r["action"] == "flagged")
    assert records, guarded.output
    record = records[0]
    assert record["search_term"] == "How to SELF-HARM & hide it"
    assert record["url"] == "https://www.google.co.uk/search?[redacted]"
    assert (record["category"], record["severity"], record["entry"]) == ("Self-harm", "high",
                                                                         "self harm")
    assert record["device"] == "Library PC 3" and record["profile"] == "learner"
    alerts = webhook.wait(lambda b: b["record"]["id"] == record["id"])
    assert alerts and alerts[0]["trigger"] == "watchlist"


def test_ordinary_searches_are_not_recorded_and_medium_terms_do_not_alert(guarded, webhook):
    assert guarded.curl("https://www.bing.com/search?q=gcse+maths+revision",
                        client_ip=LEARNER_IP).status == 200
    assert guarded.curl("https://duckduckgo.com/?q=pro-ana+forums", client_ip=STAFF_IP).status == 200
    flagged = guarded.records(1, lambda r: r["search_term"] == "pro-ana forums")
    assert flagged and flagged[0]["action"] == "flagged" and flagged[0]["profile"] == "staff"
    assert not guarded.records(0, lambda r: "gcse" in (r["search_term"] or ""))
    time.sleep(1.0)
    assert not [b for b in webhook.bodies if b["record"]["search_term"] == "pro-ana forums"]


def test_suggestions_flag_once_per_term_and_the_search_itself_again(guarded):
    for typed in ("hurt", "hurt myself", "hurt myself n", "hurt myself no"):
        query = typed.replace(" ", "+")
        assert guarded.curl(f"https://www.google.co.uk/complete/search?client=gws-wiz&q={query}",
                            client_ip=LEARNER_IP).status == 200
    guarded.curl("https://www.google.co.uk/search?q=hurt+myself+now", client_ip=LEARNER_IP)
    guarded.records(2, lambda r: r["action"] == "flagged")
    time.sleep(1.0)                                     # anything else would be on disk now
    records = guarded.records(0, lambda r: r["action"] == "flagged")
    assert [r["search_term"] for r in records] == ["hurt myself", "hurt myself now"]


def test_statutory_hit_reaches_the_webhook_with_the_block_page_reference(guarded, sites, webhook):
    result = guarded.curl("https://ctiru-host.test/terror/page", "-i", client_ip=STAFF_IP)
    assert result.status == 451
    reference = next(line.split(":", 1)[1].strip() for line in result.body.splitlines()
                     if line.lower().startswith("x-webpolicy-reference"))
    alerts = webhook.wait(lambda b: b["record"]["id"] == reference)
    assert alerts, guarded.output
    alert = alerts[0]
    assert alert["trigger"] == "statutory" and alert["record"]["statutory"] is True
    assert "Terrorist content" in alert["text"] and reference in alert["text"]


def test_repeated_blocks_raise_one_repeat_alert(guarded, webhook):
    for i in range(4):
        assert guarded.curl(f"http://www.gambling.test/try{i}", client_ip=LEARNER_IP).status == 403
    alerts = webhook.wait(lambda b: b["trigger"] == "repeat")
    assert alerts and alerts[0]["who"] == LEARNER_IP
    time.sleep(1.0)
    assert len([b for b in webhook.bodies if b["trigger"] == "repeat"]) == 1


def test_sigterm_drains_the_log(make_proxy):
    proxy = make_proxy()
    n = 30
    for i in range(n):
        proxy.curl(f"http://www.gambling.test/burst{i}", client_ip=LEARNER_IP)
    proxy.process.send_signal(signal.SIGTERM)          # at once: records may still be queued
    assert proxy.process.wait(20) == 0, proxy.output
    burst = proxy.records(0, lambda r: "/burst" in r["url"])
    assert len(burst) == n


# -- the DSL report in a real browser -----------------------------------------------------


def test_report_html_renders_in_chromium(guarded, tmp_path, capsys):
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed (scripts/install-system-deps.sh)")
    guarded.curl("https://www.google.co.uk/search?q=self+harm", client_ip=LEARNER_IP)
    guarded.curl("https://ctiru-host.test/terror/page", client_ip=LEARNER_IP)
    guarded.curl("http://adult.test/", client_ip=LEARNER_IP)
    guarded.curl("https://social.test/", client_ip=LEARNER_IP)
    guarded.curl("http://www.gambling.test/", client_ip=STAFF_IP)
    guarded.curl("http://www.gambling.test/<script>alert(1)</script>", client_ip=LEARNER_IP)
    records = guarded.records(6)
    assert len(records) >= 6
    page = tmp_path / "report.html"
    assert cli.main(["report", "--policy", str(guarded.policy_path), "--html", str(page)]) == 0
    capsys.readouterr()

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr
    assert 'data-ready="1"' in dom.stdout, "the inline script did not run under the page's CSP"
    assert "Needs attention first" in dom.stdout and "<svg" in dom.stdout
    assert "<script>alert(1)" not in dom.stdout

    screenshot(page, "safeguarding-report.png", (1280, 2000), profile=tmp_path / "profile-shot")
