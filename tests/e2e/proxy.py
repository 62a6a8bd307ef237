"""Start real mitmdump with the webpolicy add-on for end-to-end tests.

mitmdump runs in its own mount namespace with the test hosts file over /etc/hosts, so the
site names resolve to loopback addresses for the proxy alone.  It listens on 127.0.0.1 on an
ephemeral port with a temporary confdir (its generated CA is trusted by the test clients).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "addons" / "webpolicy_addon.py"
OWN_NETWORKS = "127.0.0.0/24,::1/128,0.0.0.0/8,::/128"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mitmdump_path() -> str:
    found = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or shutil.which("mitmdump")
    if not found:
        raise RuntimeError("mitmdump not found next to the test interpreter")
    return found


@dataclass
class Proxy:
    directory: Path
    policy_path: Path
    port: int
    metrics_port: int
    hosts_file: Path
    sites_ca: Path
    extra_args: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)   # --set overrides (once each)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def confdir(self) -> Path:
        return self.directory / "confdir"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def log_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def output(self) -> str:
        path = self.directory / "mitmdump.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def command(self) -> list[str]:
        # mitmproxy ignores an option given twice with --set, so each is given once.
        options = {
            "confdir": str(self.confdir),
            "webpolicy_policy": str(self.policy_path),
            "webpolicy_reload_interval": "0.3",
            "ssl_verify_upstream_trusted_ca": str(self.sites_ca),
            # The test sites stand for the internet on 127.0.1.x (sites.py): only the rest of
            # loopback is the gateway itself here.
            "webpolicy_own_networks": OWN_NETWORKS,
            **self.options,
        }
        settings = [arg for name, value in options.items() for arg in ("--set", f"{name}={value}")]
        return [mitmdump_path(), "-s", str(SHIM), "--listen-host", "127.0.0.1",
                "--listen-port", str(self.port), *settings, *self.extra_args]

    def start(self, timeout: float = 30.0) -> "Proxy":
        self.confdir.mkdir(parents=True, exist_ok=True)
        wrapper = ["unshare", "--mount", "--", "sh", "-c",
                   'mount --bind "$0" /etc/hosts && exec "$@"', str(self.hosts_file)]
        log = open(self.directory / "mitmdump.log", "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(wrapper + self.command(), stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.directory, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mitmdump exited ({self.process.returncode}):\n{self.output}")
            if "webpolicy: filtering with policy" in self.output and _listening(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mitmdump did not start in {timeout}s:\n{self.output}")

    def stop(self) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process else None

    def records(self, wait_for: int = 0, where=None, timeout: float = 5.0) -> list[dict]:
        """Safeguarding log records for which `where(record)` holds (all when None), waiting
        up to `timeout` seconds until there are at least `wait_for` of them."""
        deadline = time.monotonic() + timeout
        while True:
            records = []
            for path in sorted(self.log_dir.glob("webpolicy-*.jsonl")):
                records += [json.loads(line) for line in path.read_text().splitlines() if line]
            if where is not None:
                records = [r for r in records if where(r)]
            if len(records) >= wait_for or time.monotonic() > deadline:
                return records
            time.sleep(0.05)

    def wait_for_output(self, text: str, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            time.sleep(0.1)
        return False

    def curl(self, url: str, *args: str, client_ip: str = "127.0.0.1",
             timeout: float = 20, env: dict[str, str] | None = None) -> "CurlResult":
        """Run real curl through the proxy from a chosen loopback source address (env: e.g. a
        Kerberos ccache)."""
        marker = "\n--webpolicy-status:%{http_code}"
        cmd = ["curl", "-sS", "--max-time", "15", "--proxy", self.url, "--cacert", str(self.ca_cert),
               "--interface", client_ip, "-w", marker, *args, url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        body, _, status = done.stdout.rpartition("\n--webpolicy-status:")
        return CurlResult(int(status or 0), body, done.stderr, done.returncode)


@dataclass
class CurlResult:
    status: int
    body: str
    stderr: str
    returncode: int


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def htpasswd(directory: Path, users: dict[str, str]) -> Path:
    """An htpasswd file ({SHA} entries) for mitmproxy's --proxyauth @FILE."""
    path = directory / "htpasswd"
    path.write_text("".join(
        f"{user}:{{SHA}}{base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()}\n"
        for user, pw in users.items()))
    return path
