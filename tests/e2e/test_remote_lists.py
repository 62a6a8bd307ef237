"""A list downloaded from a URL, with a real mitmdump and a real local HTTPS list server.

The running proxy downloads the list by itself (its Refresher thread), starts filtering with it,
picks up a list that grew, keeps filtering with the last good copy through a 500 and through a
download that lost 90% of its entries, and its metrics say what happened.  UT1 categories
come as UT1 publishes them (an archive built at test time from the UT1 snapshot), through a
real outbound proxy (a plain mitmdump), with their attribution kept, each archive checked
against the MD5 sum the server publishes in MD5SUM.LST as UT1 does."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.lists.listserver import (UT1_SNAPSHOT, ListServer, Reply, domains, snapshot,
                                         ut1_archive)
from webpolicy.lists.formats import parse_source

from .conftest import LEARNER_IP, POLICY, STAFF_IP
from .proxy import _listening, free_port
from .test_monitoring import assert_bounded_labels

pytestmark = pytest.mark.e2e

REMOTE_POLICY = POLICY.replace(
    "    block: [ctiru, adult, gambling]\n    log: [social]\n",
    "    block: [ctiru, adult, gambling, phishing]\n    log: [social]\n", 1).replace(
    "allow: [example.org/teaching/]\n",
    "  phishing:\n"
    "    category: Phishing\n"
    "    format: domains\n"
    "    sources:\n"
    "      - {{url: '{list_url}', refresh: 2s, max_age: 1h, ca: '{ca}'}}\n"
    "allow: [example.org/teaching/]\n")


def metrics(proxy) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.metrics_port}/metrics",
                                timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(proxy, name: str, **labels) -> float | None:
    return metrics(proxy).get((name, frozenset(labels.items())))


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def status(proxy, url: str, client_ip: str = LEARNER_IP) -> int:
    return proxy.curl(url, client_ip=client_ip).status


def test_the_proxy_keeps_a_url_list_current_and_keeps_the_last_good_copy(make_proxy, tmp_path):
    with ListServer(tmp_path) as server:
        server.replies["/phishing.txt"] = Reply(body=domains(100, "phish").encode())
        proxy = make_proxy(REMOTE_POLICY, list_url=server.url("/phishing.txt"), ca=server.ca)
        failures = ("webpolicy_list_source_refresh_failures_total", {"list": "phishing"})

        # Cold start: no copy yet, so learners fail closed until the Refresher has it; then
        # the reloader loads it.
        assert wait_until(lambda: status(proxy, "http://news.test/") == 200), proxy.output
        assert status(proxy, "http://phish5.example/") == 403
        assert status(proxy, "http://phish5.example/", STAFF_IP) != 403
        assert metric(proxy, "webpolicy_list_entries", list="phishing") == 100
        first_success = metric(proxy, "webpolicy_list_source_last_success_timestamp_seconds",
                               list="phishing")
        assert first_success > time.time() - 60
        assert metric(proxy, "webpolicy_list_source_max_age_seconds", list="phishing",
                      statutory="false") == 3600
        assert metric(proxy, failures[0], **failures[1]) == 0

        # The list grew: picked up by itself.
        server.replies["/phishing.txt"] = Reply(body=domains(300, "phish").encode())
        assert wait_until(lambda: status(proxy, "http://phish250.example/") == 403), proxy.output
        assert wait_until(lambda: metric(proxy, "webpolicy_list_entries",
                                         list="phishing") == 300)

        # The provider fails: the last good copy stays in force, the metrics say so.
        server.replies["/phishing.txt"] = Reply(500, b"Internal Server Error")
        assert wait_until(lambda: metric(proxy, failures[0], **failures[1]) >= 1), proxy.output
        assert metric(proxy, "webpolicy_list_source_failing", list="phishing") == 1
        assert status(proxy, "http://phish250.example/") == 403
        assert status(proxy, "http://news.test/") == 200
        assert "lists.phishing: " in proxy.output and "failed: HTTP 500" in proxy.output

        # A download that lost 90% of the entries is refused: still 300 entries in force.
        before = metric(proxy, failures[0], **failures[1])
        server.replies["/phishing.txt"] = Reply(body=domains(30, "phish").encode())
        assert wait_until(lambda: "90% lost" in proxy.output), proxy.output
        assert wait_until(lambda: metric(proxy, failures[0], **failures[1]) > before)
        assert status(proxy, "http://phish250.example/") == 403
        assert metric(proxy, "webpolicy_list_entries", list="phishing") == 300
        assert metric(proxy, "webpolicy_list_source_failing", list="phishing") == 1
        age = metric(proxy, "webpolicy_list_source_age_seconds", list="phishing",
                     statutory="false")
        assert 0 < age < 120
        copies = list((proxy.directory / ".webpolicy-sources" / "phishing").glob("*.txt"))
        assert len(copies) == 1 and copies[0].read_text() == domains(300, "phish")

        # The provider recovers: the failing gauge clears and the success time moves on.
        server.replies["/phishing.txt"] = Reply(body=domains(310, "phish").encode())
        assert wait_until(lambda: metric(proxy, "webpolicy_list_source_failing",
                                         list="phishing") == 0), proxy.output
        assert metric(proxy, "webpolicy_list_source_last_success_timestamp_seconds",
                      list="phishing") > first_success
        assert wait_until(lambda: status(proxy, "http://phish305.example/") == 403)
        text = urllib.request.urlopen(f"http://127.0.0.1:{proxy.metrics_port}/metrics",
                                      timeout=5).read().decode()
        assert_bounded_labels(text, proxy, private=[f"127.0.0.1:{server.port}", "phishing.txt",
                                                    "phish5.example"])
        assert "Traceback" not in proxy.output


def test_a_statutory_url_list_added_to_a_running_proxy_is_fetched_then_loaded(make_proxy,
                                                                              tmp_path):
    """Its reload is refused while no copy exists (a statutory source must load); the
    Refresher reads the sources from policy.yaml itself, downloads the copy, and the reload
    then goes through."""
    with ListServer(tmp_path) as server:
        server.replies["/iwf.txt"] = Reply(body=b"abuse.test/images\nnews.test/bad-page\n")
        proxy = make_proxy()
        assert status(proxy, "http://news.test/bad-page") == 200
        text = proxy.policy_path.read_text().replace(
            "allow: [example.org/teaching/]\n",
            "  iwf:\n"
            "    statutory: true\n"
            "    category: Child abuse images (IWF)\n"
            "    severity: critical\n"
            "    format: urls\n"
            f"    sources: [{{url: '{server.url('/iwf.txt')}', refresh: 1h, ca: '{server.ca}'}}]\n"
            "allow: [example.org/teaching/]\n")
        proxy.policy_path.write_text(text)
        # 451: a statutory block, for every profile
        assert wait_until(lambda: status(proxy, "http://news.test/bad-page", STAFF_IP) == 451,
                          timeout=30), proxy.output
        assert status(proxy, "http://news.test/bad-page") == 451
        assert status(proxy, "http://news.test/") == 200
        assert metric(proxy, "webpolicy_list_entries", list="iwf") == 2
        assert metric(proxy, "webpolicy_list_source_age_seconds", list="iwf",
                      statutory="true") < 60
        assert "Traceback" not in proxy.output


# -- UT1 categories through the centre's outbound proxy ----------------------------------------

UT1_POLICY = POLICY.replace(
    "  gambling: {{category: Gambling, severity: medium, format: domains, sources: "
    "[lists/gambling.txt]}}\n",
    "  gambling:\n"
    "    category: Gambling\n"
    "    sources:\n"
    "      - {{ut1: '{archive_url}', categories: [gambling, drugs], refresh: 2s, ca: '{ca}'}}\n"
    ).replace("allow: [example.org/teaching/]\n",
              "allow: [example.org/teaching/]\n"
              "downloads: {{proxy: 'http://127.0.0.1:{outbound_port}', parallel: 2}}\n")


@contextlib.contextmanager
def outbound_proxy(directory: Path) -> Iterator[tuple[int, Path]]:
    """A plain mitmdump as the centre's outbound proxy: CONNECT tunnels, TLS not intercepted
    (--ignore-hosts everything).  Yields its port and its log."""
    port, log = free_port(), directory / "outbound.log"
    mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [mitmdump, "--listen-host", "127.0.0.1", "--listen-port", str(port),
             "--ignore-hosts", ".*", "--set", f"confdir={directory / 'outbound-conf'}",
             "--set", "termlog_verbosity=debug"], stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: _listening(port), timeout=30), log.read_text()
        yield port, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def md5sums(archive: bytes) -> Reply:
    """UT1's MD5SUM.LST for the archive, as md5sum prints it (and one other archive's line)."""
    digest = hashlib.md5(archive, usedforsecurity=False).hexdigest()
    return Reply(body=f"{hashlib.md5(b'', usedforsecurity=False).hexdigest()}  adult.tar.gz\n"
                      f"{digest}  blacklists.tar.gz\n".encode())


def test_ut1_categories_arrive_through_the_outbound_proxy_and_keep_their_attribution(
        make_proxy, tmp_path):
    data = snapshot("gambling", "drogue")
    archive = ut1_archive(data, aliases={"drugs": "drogue"})
    expected = sum(parse_source(UT1_SNAPSHOT / name, "ut1").entries for name in data)
    with ListServer(tmp_path) as server, outbound_proxy(tmp_path) as (outbound_port, log):
        server.replies["/download/blacklists.tar.gz"] = Reply(body=archive)
        server.replies["/download/MD5SUM.LST"] = md5sums(archive)
        proxy = make_proxy(UT1_POLICY, archive_url=server.url("/download/blacklists.tar.gz"),
                           ca=server.ca, outbound_port=outbound_port)
        # The Refresher fetches the archive through the outbound proxy; the list loads.
        assert wait_until(lambda: status(proxy, "http://0-casino.info/") == 403,
                          timeout=40), proxy.output
        assert status(proxy, "http://news.test/") == 200
        assert status(proxy, "http://0-casino.info/", STAFF_IP) != 403, "staff only log it"
        assert metric(proxy, "webpolicy_list_entries", list="gambling") == expected
        assert f"127.0.0.1:{server.port}" in log.read_text(), "went through the proxy"
        page = proxy.curl("http://0-casino.info/", "-H", "Accept: text/html",
                          client_ip=LEARNER_IP).body
        assert "Category list: UT1 blacklists (Université Toulouse 1 Capitole), CC BY-SA 4.0" \
            in page
        copy = next((proxy.directory / ".webpolicy-sources" / "gambling").glob("*.ut1"))
        assert "CC BY-SA 4.0" in (copy / "gambling" / "SOURCE").read_text()
        assert "/download/MD5SUM.LST" in [path for path, _ in server.requests], "sum checked"

        # A new archive whose published MD5 is still the old one's (a mirror midway through
        # an update, or a corrupted copy): refused, the last good copy stays.
        grown = ut1_archive({**data, "gambling": {
            **data["gambling"], "domains": data["gambling"]["domains"] + b"md5-step.example\n"}},
            aliases={"drugs": "drogue"})
        server.replies["/download/blacklists.tar.gz"] = Reply(body=grown)
        assert wait_until(lambda: "does not match the sum" in proxy.output, timeout=30), \
            proxy.output
        assert wait_until(lambda: metric(proxy, "webpolicy_list_source_failing",
                                         list="gambling") == 1), proxy.output
        assert metric(proxy, "webpolicy_list_entries", list="gambling") == expected
        assert b"md5-step.example" not in (copy / "gambling" / "domains").read_bytes()
        assert status(proxy, "http://0-casino.info/") == 403
        # The sum catches up: the archive is taken.
        server.replies["/download/MD5SUM.LST"] = md5sums(grown)
        expected += 1
        assert wait_until(lambda: metric(proxy, "webpolicy_list_entries", list="gambling")
                          == expected, timeout=30), proxy.output
        assert wait_until(lambda: metric(proxy, "webpolicy_list_source_failing",
                                         list="gambling") == 0), proxy.output

        # gambling loses its domains file upstream: refused, the last good copy stays.
        lost = ut1_archive(
            {"gambling": {"urls": data["gambling"]["urls"]}, "drogue": data["drogue"]},
            aliases={"drugs": "drogue"})
        server.replies["/download/blacklists.tar.gz"] = Reply(body=lost)
        server.replies["/download/MD5SUM.LST"] = md5sums(lost)
        assert wait_until(lambda: "category gambling: the download has no domains file"
                          in proxy.output, timeout=30), proxy.output
        assert metric(proxy, "webpolicy_list_source_failing", list="gambling") == 1
        assert status(proxy, "http://0-casino.info/") == 403
        assert metric(proxy, "webpolicy_list_entries", list="gambling") == expected
        listed = subprocess.run([str(Path(sys.executable).parent / "webpolicy"), "lists",
                                 "--policy", str(proxy.policy_path)], capture_output=True,
                                text=True, timeout=60)
        assert "(backoff after " in listed.stdout, listed.stdout + listed.stderr
        assert "lists.gambling: UT1 categories gambling, drugs from UT1 blacklists, " \
               "Université Toulouse 1 Capitole, CC BY-SA 4.0" in listed.stdout
        assert "Traceback" not in proxy.output
