"""Issue #15 "No way round the filter", the lists and reload part, with a real mitmdump:
statutory URL variants and reordered queries block; the newest save is loaded even when it
was made while the previous save's lists compiled; a UT1 category losing a file mid-update
is refused, not loaded smaller."""

from __future__ import annotations

import errno
import os
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import LEARNER_IP, LISTS, STAFF_IP

pytestmark = pytest.mark.e2e

CTIRU = LISTS["lists/ctiru.txt"] + "news.test/forum/view.php?t=42&lang=en\n"
ADULT_URLS = LISTS["lists/adult/urls"] + "news.test/gallery.php?id=7&s=2\n"


VARIANTS = [
    ("http://ctiru-host.test/TERROR//Page;jsessionid=0A1B/", ()),
    ("http://ctiru-host.test./terror/page.", ()),
    ("http://ctiru-host.test/x/..;/terror/page", ("--path-as-is",)),
    ("https://ctiru-host.test/terror/%70age/extra", ()),
    ("https://news.test/forum/view.php/x?utm_source=a&lang=en&t=42", ()),
    ("http://news.test/FORUM/view.php?LANG=en&T=42", ()),
]


def test_statutory_url_variants_block_for_everyone(make_proxy):
    proxy = make_proxy(lists={"lists/ctiru.txt": CTIRU})
    for url, args in VARIANTS:
        for client_ip in (LEARNER_IP, STAFF_IP):
            assert proxy.curl(url, *args, client_ip=client_ip).status == 451, (url, client_ip)
    records = proxy.records(wait_for=2 * len(VARIANTS),
                            where=lambda r: r.get("list") == "ctiru")
    assert len(records) == 2 * len(VARIANTS) and all(r["statutory"] for r in records)


def test_reordered_query_blocks_and_other_pages_pass(make_proxy):
    proxy = make_proxy(lists={"lists/ctiru.txt": CTIRU, "lists/adult/urls": ADULT_URLS})
    blocked = proxy.curl("http://news.test/gallery.php?s=2&ref=x&id=7", client_ip=LEARNER_IP)
    assert blocked.status == 403
    assert proxy.curl("http://news.test/forum/view.php?lang=en&t=42",
                      client_ip=LEARNER_IP).status == 451
    for url in ("http://news.test/gallery.php?id=8&s=2", "http://news.test/forum/view.php?t=4",
                "http://news.test/"):
        assert proxy.curl(url, client_ip=LEARNER_IP).status == 200, url


def _wait_for_reader(fifo: Path, timeout: float = 60.0) -> int:
    """A write end of the FIFO, once something (the list compiler) has it open to read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        time.sleep(0.05)
    raise AssertionError("the list compiler never opened the list")


def _metrics(proxy) -> str:
    url = f"http://127.0.0.1:{proxy.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_the_newest_save_wins_when_saved_while_the_previous_compiles(make_proxy):
    """e2e-2 adds a list whose source is a FIFO, so its compile blocks until the test
    writes to it; e2e-3 is saved meanwhile.  Once e2e-2's compile ends, e2e-3 must be
    loaded, and the metrics must say so.  (Before the fix e2e-2 stayed in force, with
    webpolicy_policy_last_reload_successful 1.)"""
    proxy = make_proxy()
    fifo = proxy.directory / "lists/slow.fifo"
    os.mkfifo(fifo)
    original = proxy.policy_path.read_text()
    second = original.replace('version: "e2e-1"', 'version: "e2e-2"').replace(
        "lists:\n", "lists:\n  slow: {category: Slow, format: domains, "
                    "sources: [lists/slow.fifo]}\n", 1)
    third = original.replace('version: "e2e-1"', 'version: "e2e-3"').replace(
        "deny: []", "deny: [news.test/third-save]")
    proxy.policy_path.write_text(second)
    writer = _wait_for_reader(fifo)
    try:
        proxy.policy_path.write_text(third)
        time.sleep(1.0)                   # several polls while e2e-2 is still compiling
    finally:
        os.write(writer, b"slow.test\n")
        os.close(writer)
    assert proxy.wait_for_output("policy e2e-2 in force", timeout=60), proxy.output
    assert proxy.wait_for_output("policy e2e-3 in force", timeout=30), proxy.output
    assert proxy.curl("http://news.test/third-save", client_ip=STAFF_IP).status == 403
    metrics = _metrics(proxy)
    assert 'webpolicy_policy_info{version="e2e-3"} 1.0' in metrics, metrics
    assert "webpolicy_policy_last_reload_successful 1.0" in metrics


def test_a_ut1_category_losing_its_domains_keeps_its_last_good_contents(make_proxy):
    proxy = make_proxy()
    assert proxy.curl("http://adult.test/", client_ip=LEARNER_IP).status == 403
    (proxy.directory / "lists/adult/domains").unlink()       # caught mid-update: urls only
    assert proxy.wait_for_output("reload refused", timeout=30), proxy.output
    assert "lists/adult/domains" in proxy.output and "missing" in proxy.output
    assert proxy.curl("http://adult.test/", client_ip=LEARNER_IP).status == 403
    assert proxy.curl("http://news.test/", client_ip=LEARNER_IP).status == 200
    assert "webpolicy_policy_last_reload_successful 0.0" in _metrics(proxy)
