"""`webpolicy console` as a real process for the e2e tests (test_console.py, the review
requests, two gateways' logs in one console), and the `webpolicy` command line beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .proxy import REPO, free_port

ADDONS = REPO / "addons"
PASSWORD = "correct horse battery staple"


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webpolicy.cli.main", *args], input=stdin,
                          text=True, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ADDONS)}, check=False)


class Console:
    """`webpolicy console` on a free loopback port, with its log directory (home/logs), the
    policy's, or several (`log_dirs`: one --log-dir per gateway)."""

    def __init__(self, home: Path, *options: str, ready: str = "/login/",
                 policy: Path | None = None, log_dirs: list[Path] | None = None):
        self.home, self.log_dir = home, home / "logs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = open(home / "console.out", "w")
        if policy:
            where = ["--policy", str(policy)]
        else:
            where = [arg for d in (log_dirs or [self.log_dir]) for arg in ("--log-dir", str(d))]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webpolicy.cli.main", "console", *where,
             "--listen", f"127.0.0.1:{self.port}", *options],
            stdout=self.output, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ADDONS)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (home / "console.out").read_text()
            try:
                if httpx.get(self.url + ready, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the console did not start: " + (home / "console.out").read_text())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.output.close()
