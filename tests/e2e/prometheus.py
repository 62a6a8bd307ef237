"""A real Prometheus server on loopback with the shipped scrape config (monitoring/prometheus.yml)
and alert rules, pointed at one gateway or several, read back through its HTTP API.

prometheus comes from Debian's `prometheus` package (scripts/install-system-deps.sh): the tests
that use it fail, not skip, without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from .proxy import REPO, free_port

MONITORING = REPO / "monitoring"
CONFIG = MONITORING / "prometheus.yml"
RULES = MONITORING / "rules" / "webpolicy.rules.yml"


def tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install Debian's prometheus package "
                    "(scripts/install-system-deps.sh does)")
    return found


class Prometheus:
    """A Prometheus server on loopback with the shipped config, pointed at one gateway's
    metrics endpoint or several (host:port each, as the shipped job lists them)."""

    def __init__(self, directory: Path, target: str | list[str]):
        self.directory = directory
        self.port = free_port()
        config = yaml.safe_load(CONFIG.read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s",
                            "scrape_timeout": "1s"}
        config["rule_files"] = [str(RULES)]
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "webpolicy")
        job["scrape_timeout"] = "1s"
        job["static_configs"] = [{"targets": [target] if isinstance(target, str) else target}]
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        log = open(self.directory / "prometheus.log", "ab")
        self.process = subprocess.Popen(
            [tool("prometheus"), f"--config.file={self.config}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready in 60s:\n{self.output()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[tuple, float]:
        """An instant query: {tuple of sorted label items: value}."""
        data = self.api("query", query=expr)
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in data["result"]}

    def wait_for(self, expr: str, expected, timeout: float = 30.0):
        """Poll a query until `expected(result)` holds; returns the last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if expected(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.5)
