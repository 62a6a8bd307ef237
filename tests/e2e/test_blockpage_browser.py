"""The block page in a real browser: Debian's headless Chromium through real mitmdump.

Chromium trusts the proxy's CA the way a managed device does, through its certificate store (an
NSS database in a throw-away HOME, filled with certutil), not by switching certificate checks
off.  It reaches the site names through the proxy, which resolves them (Chromium never does).
Screenshots are kept in test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from .proxy import REPO, Proxy

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "test-artifacts"
REVIEW_URL = "https://helpdesk.example/review"      # block_page.review_url of the test policy
REVIEW_PATH = "/.webpolicy/review-request"          # the gateway's own (proxy/reviewform.py)
DESKTOP, PHONE = "1280,900", "390,844"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: run scripts/install-system-deps.sh (as root)")
    return found


class Browser:
    """Headless Chromium with the proxy's CA in its certificate store (or not, when trust=False)."""

    def __init__(self, proxy: Proxy, home: Path, trust: bool = True):
        self.proxy, self.home = proxy, home
        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        if trust:
            certutil = _tool("certutil")
            subprocess.run([certutil, "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
            subprocess.run([certutil, "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n",
                            "webpolicy gateway CA", "-i", str(proxy.ca_cert)], check=True)

    def load(self, url: str, screenshot: Path | None = None, window: str = DESKTOP) -> str:
        """Load `url` once; returns the DOM after load (and writes a PNG when asked)."""
        command = [_tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                   "--disable-quic", "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--disable-extensions",
                   f"--user-data-dir={self.home / 'profile'}",
                   f"--proxy-server={self.proxy.url}", f"--window-size={window}", "--dump-dom"]
        if screenshot is not None:
            command.append(f"--screenshot={screenshot}")
        env = dict(os.environ, HOME=str(self.home))
        done = subprocess.run(command + [url], capture_output=True, text=True, timeout=90,
                              env=env, cwd=self.home)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout


class Page(HTMLParser):
    """What a DOM holds: every tag with its attributes, texts by element id, all visible text."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr"}

    def __init__(self, dom: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.by_id: dict[str, str] = {}
        self.title, self.styles, self._words = "", "", []
        self._open: list[tuple[str, str | None]] = []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        self.tags.append((tag, attributes))
        if tag not in self.VOID:
            self._open.append((tag, attributes.get("id")))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        tag = self._open[-1][0] if self._open else ""
        if tag == "title":
            self.title += data
        elif tag == "style":
            self.styles += data
        else:
            self._words.append(data)
        for _, element_id in self._open:
            if element_id:
                self.by_id[element_id] = self.by_id.get(element_id, "") + data

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self._words))


def assert_self_contained(page: Page, review_form: bool) -> None:
    """Nothing on the page makes the browser fetch anything: the proxy may block it, and the
    page must not leak the visit to a third party.  The one link is the configured review URL
    and the one form (`review_form`) posts to the gateway's own review path on the same site
    (navigations the learner chooses, not resources)."""
    forms = [attributes for tag, attributes in page.tags if tag == "form"]
    assert forms == ([{"method": "post", "action": REVIEW_PATH, "class": "ask"}]
                     if review_form else []), forms
    for tag, attributes in page.tags:
        if tag == "form":
            continue
        assert tag not in ("script", "img", "iframe", "object", "embed", "video", "audio",
                           "source", "frame"), f"<{tag}> on the block page"
        for name in ("src", "srcset", "poster", "data", "background", "action", "formaction"):
            assert name not in attributes, f"<{tag} {name}=...> on the block page"
        assert not any(name.startswith("on") for name in attributes), f"event handler on <{tag}>"
        if tag == "link":
            assert attributes.get("href", "").startswith("data:"), attributes
        if tag == "a":
            assert attributes.get("href") == REVIEW_URL, attributes
    assert "url(" not in page.styles and "@import" not in page.styles


# A test-only add-on loaded after webpolicy: it notes every request the browser sends through
# the proxy (blocked or not) with the headers that say who asked for it.
REQUEST_LOG_ADDON = """
import json
class RequestLog:
    def requestheaders(self, flow):
        headers = flow.request.headers
        with open({path!r}, "a") as out:
            out.write(json.dumps({{"method": flow.request.method, "url": flow.request.pretty_url,
                                  "host": flow.request.pretty_host,
                                  "referer": headers.get("referer", ""),
                                  "origin": headers.get("origin", ""),
                                  "dest": headers.get("sec-fetch-dest", "")}}) + "\\n")
addons = [RequestLog()]
"""


def page_requests(log: Path, host: str) -> list[str]:
    """Requests the page caused: anything to its host, anything naming it as referrer or origin,
    and any sub-resource fetch.  Chromium's own background calls (component updates, network
    time, account checks) carry none of these and are not the page's doing."""
    if not log.exists():
        return []
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    return [f"{r['method']} {r['url']}" for r in seen
            if r["host"] == host or host in r["referer"] or host in r["origin"]
            or r["dest"] not in ("", "empty", "document")]


@pytest.fixture
def browser_proxy(make_proxy, tmp_path) -> Proxy:
    """A private proxy, so its safeguarding log holds only what the browser did."""
    addon = tmp_path / "request_log_addon.py"
    addon.write_text(REQUEST_LOG_ADDON.format(path=str(tmp_path / "requests.jsonl")))
    proxy = make_proxy(name="browser", extra_args=["-s", str(addon)])
    proxy.request_log = tmp_path / "requests.jsonl"
    return proxy


def test_block_page_in_chromium(browser_proxy, sites, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "blockpage-category.png"
    screenshot.unlink(missing_ok=True)
    before = sites.log.contacted("www.gambling.test")

    # Chromium connects from 127.0.0.1, which no clients.networks entry names: an unknown
    # client, so the default profile (learner) applies.
    dom = Browser(browser_proxy, tmp_path / "home").load(
        "https://www.gambling.test/slots?game=roulette", screenshot)
    page = Page(dom)

    assert page.title == "This page has been blocked"
    assert "blocked for you: Gambling" in page.text
    assert page.by_id["address"] == "https://www.gambling.test/slots?game=roulette"
    reference = page.by_id["reference"].strip()
    assert re.fullmatch(r"WP-[0-9A-Z]{10}", reference)
    assert "E2E Test College" in page.text and "the test helpdesk" in page.text
    assert_self_contained(page, review_form=True)

    records = browser_proxy.records(1, lambda r: r["id"] == reference)
    assert len(records) == 1, "the reference on the page must find the log record"
    record = records[0]
    assert (record["action"], record["list"], record["category"]) == ("blocked", "gambling", "Gambling")
    assert (record["profile"], record["profile_reason"]) == ("learner", "default")
    assert "Chrome" in record["user_agent"]
    assert record["url"] == "https://www.gambling.test/slots?[redacted]"

    # One visit, one request, one record: the page fetched nothing else (no favicon either).
    assert page_requests(browser_proxy.request_log, "www.gambling.test") == [
        "GET https://www.gambling.test/slots?game=roulette"]
    assert len(browser_proxy.records(2, timeout=1.0)) == 1
    assert sites.log.contacted("www.gambling.test") == before
    assert screenshot.stat().st_size > 10_000, "screenshot missing or blank"


def test_block_page_fits_a_phone_screen(browser_proxy, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "blockpage-phone.png"
    screenshot.unlink(missing_ok=True)
    page = Page(Browser(browser_proxy, tmp_path / "home").load(
        "http://www.gambling.test/a/very/long/path/" + "segment/" * 20, screenshot, PHONE))
    assert page.title == "This page has been blocked"
    assert screenshot.stat().st_size > 10_000


def test_statutory_block_page_in_chromium_shows_host_only(browser_proxy, sites, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "blockpage-statutory.png"
    screenshot.unlink(missing_ok=True)
    before = sites.log.contacted("ctiru-host.test")
    dom = Browser(browser_proxy, tmp_path / "home").load(
        "https://ctiru-host.test/terror/page?id=7", screenshot)
    page = Page(dom)

    assert page.title == "This site cannot be reached"
    assert page.by_id["address"] == "ctiru-host.test"
    assert "/terror" not in dom, "a statutory block page must not repeat the illegal address"
    assert "Terrorist content (CTIRU)" in page.text
    assert_self_contained(page, review_form=False)      # nobody can unblock it: no form
    records = browser_proxy.records(1, lambda r: r["id"] == page.by_id["reference"].strip())
    assert records and records[0]["statutory"] is True
    assert sites.log.contacted("ctiru-host.test") == before


def test_untrusted_ca_gets_no_block_page(browser_proxy, tmp_path):
    """Control: without the CA in its store Chromium refuses the intercepted connection, so
    the tests above pass because the CA is trusted, not because checks are off."""
    dom = Browser(browser_proxy, tmp_path / "home", trust=False).load(
        "https://www.gambling.test/untrusted")
    assert "This page has been blocked" not in dom
    assert not browser_proxy.records(1, lambda r: r["url"].endswith("/untrusted"), timeout=1.0)
