"""More than one gateway (issue #19): two real mitmdumps on two loopback addresses stand for two
machines, with the shipped pieces a site would use for them.

- one real Prometheus, configured from the shipped monitoring/prometheus.yml with both gateways
  as targets of its one job, scrapes both: the sum over gateways equals what was sent;
- the shipped PAC file (docs/proxy.pac), with the two gateways filled in, is evaluated by
  Chromium (--proxy-pac-url): it goes through the first gateway, and through the second once
  the first is stopped; both present the same CA, so the browser trusts either;
- each gateway writes its own safeguarding log, and one `webpolicy report` given both
  directories shows the attempts made through each;
- one `webpolicy console` given both directories has both attempts in one inbox (its API), and
  closing a case writes the review to the reviews.jsonl beside that record's own log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from .conftest import LEARNER_IP, POLICY, write_policy
from .consoleserver import PASSWORD, Console, cli
from .prometheus import Prometheus, tool
from .proxy import REPO, Proxy, free_port

pytestmark = pytest.mark.e2e

PAC = REPO / "docs" / "proxy.pac"
FIRST, SECOND = "127.0.0.21", "127.0.0.22"
# Each gateway serves its metrics on its own address, as on two machines.
TWO_GATEWAY_POLICY = POLICY.replace('"127.0.0.1:{metrics_port}"', '"{gateway}:{metrics_port}"')
assert TWO_GATEWAY_POLICY != POLICY


@pytest.fixture
def gateways(sites, tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(name: str, host: str, same_ca_as: Proxy | None = None) -> Proxy:
        directory = tmp_path / name
        directory.mkdir()
        policy_path, metrics_port = write_policy(directory, TWO_GATEWAY_POLICY, gateway=host)
        proxy = Proxy(directory, policy_path, free_port(), metrics_port, sites.hosts_file(),
                      sites.ca, host=host)
        if same_ca_as is not None:          # what docs/scaling.md says to do: one CA for all
            proxy.confdir.mkdir(parents=True)
            for ca_file in same_ca_as.confdir.glob("mitmproxy-ca*"):
                shutil.copy2(ca_file, proxy.confdir / ca_file.name)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


def test_one_prometheus_scrapes_both_gateways_and_sums_what_was_sent(gateways, tmp_path):
    first, second = gateways("gw1", FIRST), gateways("gw2", SECOND)
    directory = tmp_path / "prometheus"
    directory.mkdir()
    prom = Prometheus(directory, [f"{FIRST}:{first.metrics_port}",
                                  f"{SECOND}:{second.metrics_port}"]).start()
    try:
        up = prom.wait_for('up{job="webpolicy"}', lambda r: sorted(r.values()) == [1.0, 1.0])
        assert sorted(up.values()) == [1.0, 1.0], prom.output()
        sent = [(first, [("http://news.test/", 200)] * 3 + [("http://www.gambling.test/", 403)] * 2),
                (second, [("http://news.test/", 200)] * 2 + [("http://adult.test/", 403)])]
        for proxy, requests in sent:
            for url, status in requests:
                assert proxy.curl(url, client_ip=LEARNER_IP).status == status, url

        total = prom.wait_for('sum(webpolicy_requests_total{job="webpolicy"})',
                              lambda r: list(r.values()) == [8.0])
        assert list(total.values()) == [8.0]
        per_gateway = {dict(k)["instance"].split(":")[0]: v for k, v in prom.query(
            'sum by (instance) (webpolicy_requests_total{job="webpolicy"})').items()}
        assert per_gateway == {FIRST: 5.0, SECOND: 3.0}
        blocks = {dict(k)["category"]: v for k, v in prom.query(
            'sum by (category) (webpolicy_blocks_total{job="webpolicy"})').items() if v}
        assert blocks == {"Gambling": 2.0, "Pornography": 1.0}
    finally:
        prom.stop()


class PacServer:
    """The PAC file over HTTP, as a site's web server would serve it."""

    def __init__(self, text: str):
        body = text.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ns-proxy-autoconfig")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/proxy.pac"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def shipped_pac_for(*gateways: Proxy) -> str:
    """docs/proxy.pac with its GATEWAYS line naming these gateways, the rest as shipped."""
    text = PAC.read_text()
    line = re.search(r'^var GATEWAYS = "([^"]*)";$', text, re.MULTILINE)
    assert line, "docs/proxy.pac must set GATEWAYS on one line"
    shipped = [part.strip() for part in line.group(1).split(";")]
    assert len(shipped) == 2 and all(p.startswith("PROXY ") for p in shipped)
    assert "DIRECT" not in line.group(1)                 # never around the filter
    ours = "; ".join(f"PROXY {g.host}:{g.port}" for g in gateways)
    return text.replace(line.group(0), f'var GATEWAYS = "{ours}";')


def chromium_with_pac(pac_url: str, home: Path, url: str) -> str:
    """Load `url` in headless Chromium configured only by the PAC URL; returns the DOM."""
    command = [tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-extensions",
               f"--user-data-dir={home / 'profile'}", f"--proxy-pac-url={pac_url}",
               "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90,
                          env=dict(os.environ, HOME=str(home)), cwd=home)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def trust(ca_cert: Path, home: Path) -> None:
    """The gateways' CA in Chromium's certificate store (as GPO/MDM would put it)."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    certutil = tool("certutil")
    subprocess.run([certutil, "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run([certutil, "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "webpolicy CA",
                    "-i", str(ca_cert)], check=True)


def records(proxy: Proxy, host: str) -> list[dict]:
    return proxy.records(wait_for=1, where=lambda r: r.get("host") == host)


def test_pac_fails_over_in_chromium_and_one_report_and_console_show_both(gateways, tmp_path):
    first = gateways("gw1", FIRST)
    second = gateways("gw2", SECOND, same_ca_as=first)
    assert (first.confdir / "mitmproxy-ca.pem").read_bytes() == \
        (second.confdir / "mitmproxy-ca.pem").read_bytes()
    home = tmp_path / "browser"
    home.mkdir()
    trust(first.ca_cert, home)
    pac = PacServer(shipped_pac_for(first, second))
    try:
        dom = chromium_with_pac(pac.url, home, "https://www.gambling.test/")
        assert "Gambling" in dom and "E2E Test College" in dom, dom[:2000]
        through_first = records(first, "www.gambling.test")
        assert [r["action"] for r in through_first] == ["blocked"], through_first
        assert records(second, "www.gambling.test") == []

        assert first.stop() is not None                  # the first machine goes down
        dom = chromium_with_pac(pac.url, home, "https://adult.test/")
        assert "Pornography" in dom and "E2E Test College" in dom, dom[:2000]
        through_second = records(second, "adult.test")
        assert [r["action"] for r in through_second] == ["blocked"], through_second
    finally:
        pac.stop()

    # One report over both gateways' logs: each attempt once, oldest first.
    done = subprocess.run([sys.executable, "-m", "webpolicy.cli.main", "report", "--json",
                           "--log-dir", str(first.log_dir), "--log-dir", str(second.log_dir)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    ids = [r["id"] for r in shown]
    assert through_first[0]["id"] in ids and through_second[0]["id"] in ids
    assert len(ids) == len(set(ids))
    assert [r["host"] for r in shown if r["host"] in ("www.gambling.test", "adult.test")] == [
        "www.gambling.test", "adult.test"]
    table = subprocess.run([sys.executable, "-m", "webpolicy.cli.main", "report",
                            "--log-dir", str(first.log_dir), "--log-dir", str(second.log_dir)],
                           capture_output=True, text=True, timeout=60)
    assert through_first[0]["id"] in table.stdout and through_second[0]["id"] in table.stdout
    assert "2 record(s), 2 blocked" in table.stdout

    # One console over both gateways' logs (docs/scaling.md), through its API.
    logs = ["--log-dir", str(first.log_dir), "--log-dir", str(second.log_dir)]
    done = cli("users", "add", "dana", "--role", "dsl", "--password-stdin", *logs,
               stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    auth = {"Authorization": "Bearer " + cli("users", "token", "dana", *logs).stdout.strip()}
    home = tmp_path / "console"
    home.mkdir()
    console = Console(home, log_dirs=[first.log_dir, second.log_dir])
    try:
        found = httpx.get(console.url + "/api/events", headers=auth, timeout=10).json()
        assert {through_first[0]["id"], through_second[0]["id"]} <= {
            e["reference"] for e in found["events"]}
        assert found["total"] == len(found["events"]) and found["total_capped"] is False
        closed = httpx.post(console.url + f"/api/events/{through_second[0]['id']}/review",
                            json={"status": "closed", "outcome": "no_concern",
                                  "note": "checked"}, headers=auth, timeout=10)
        assert closed.status_code == 200, closed.text
    finally:
        console.stop()
    reviews = [json.loads(line) for line in
               (second.log_dir / "reviews.jsonl").read_text().splitlines()]
    assert [(r["id"], r["by"]) for r in reviews] == [(through_second[0]["id"], "dana")]
    assert not (first.log_dir / "reviews.jsonl").exists()
    unreviewed = subprocess.run([sys.executable, "-m", "webpolicy.cli.main", "report", "--json",
                                 "--unreviewed", *logs], capture_output=True, text=True,
                                timeout=60, check=True)
    ids = [r["id"] for r in json.loads(unreviewed.stdout)]
    assert through_first[0]["id"] in ids and through_second[0]["id"] not in ids
