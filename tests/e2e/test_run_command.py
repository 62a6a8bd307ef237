"""The README's run command starts the gateway and serves a block page.

Runs exactly `scripts/run.sh` from the repository root, on the shipped policy.yaml and the shipped
blocklists, with the pass-through options a deployment would add: `--listen-host`,
`--listen-port` and `--set confdir=...` (they go through `webpolicy run` to mitmdump).

Metrics are switched off with `--set webpolicy_metrics=false`: the shipped policy puts them on
127.0.0.1:9464, a fixed port that another proxy (a developer's own, or a parallel test run) may
hold, and a proxy that cannot bind its metrics port exits.  What is tested here is the command
and the filtering; metrics have their own tests.

No upstream site is needed: a blocked request is answered before any DNS lookup or connection,
so the blocked domain does not have to resolve.  Records go to the shipped policy's `logs/`
(gitignored), as they would for a real run from the repository.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .proxy import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# The first run creates .venv and installs webpolicy into it (from the package registry).
START_TIMEOUT = float(os.environ.get("WEBPOLICY_RUN_START_TIMEOUT", "600"))


def shipped_gambling_entry() -> str:
    """The first domain in the shipped blocklists/gambling.txt."""
    for line in (REPO / "blocklists" / "gambling.txt").read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            return entry
    raise AssertionError("blocklists/gambling.txt has no entries")


class RunCommand:
    def __init__(self, confdir: Path, output: Path):
        self.port = free_port()
        self.confdir, self.output_path = confdir, output
        command = ["scripts/run.sh", "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
                   "--set", f"confdir={confdir}", "--set", "webpolicy_metrics=false"]
        with open(output, "wb") as out:
            # Its own session, so the whole tree (setup.sh's pip, then mitmdump) can be stopped.
            self.process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                            env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                            start_new_session=True)

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_until_filtering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"scripts/run.sh exited ({self.process.returncode}):\n"
                                     f"{self.output[-5000:]}")
            if "webpolicy: filtering with policy" in self.output:
                return
            time.sleep(0.2)
        raise AssertionError(f"scripts/run.sh did not start in {START_TIMEOUT}s:\n{self.output}")

    def curl(self, url: str, *args: str) -> tuple[int, str, str]:
        marker = "\n--status:%{http_code}"
        done = subprocess.run(["curl", "-sS", "--max-time", "15", "--proxy",
                               f"http://127.0.0.1:{self.port}", "-w", marker, *args, url],
                              capture_output=True, text=True, timeout=30)
        body, _, status = done.stdout.rpartition("\n--status:")
        return int(status or 0), body, done.stderr

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def run_command(tmp_path):
    running = RunCommand(tmp_path / "confdir", tmp_path / "run.log")
    yield running
    running.stop()


def test_readme_run_command_serves_block_page(run_command):
    domain = shipped_gambling_entry()
    run_command.wait_until_filtering()
    output = run_command.output
    assert f"listening at 127.0.0.1:{run_command.port}" in output
    assert "webpolicy: policy" in output and "in force" in output

    status, body, stderr = run_command.curl(f"http://www.{domain}/", "-H", "Accept: text/html")
    assert status == 403, (stderr, body, run_command.output[-3000:])
    assert "This page has been blocked" in body
    assert "Gambling" in body
    assert "Example Training Centre" in body, "the shipped policy's block_page settings"

    # The confdir option reached mitmdump: its CA is in the temporary directory, and HTTPS
    # through the proxy, trusting that CA, gets the block page over TLS.
    ca = run_command.confdir / "mitmproxy-ca-cert.pem"
    assert ca.exists()
    status, body, stderr = run_command.curl(f"https://{domain}/", "--cacert", str(ca))
    assert status == 403, (stderr, body)
    assert "Reference: WP-" in body

    # Stopping it is clean: SIGTERM ends mitmdump (run.sh exec'd into it).
    run_command.stop()
    assert run_command.process.returncode in (0, -signal.SIGTERM)
