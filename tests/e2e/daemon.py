"""Start and stop a test daemon (slapd, krb5kdc) the test owns: in the foreground, its
output in a log file, ready once its port on 127.0.0.1 accepts a connection."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path


def start_daemon(command: list[str], log_path: Path, port: int, timeout: float = 10.0,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run `command` and wait until 127.0.0.1:`port` accepts; an early exit or a timeout
    raises with what the daemon wrote."""
    name = Path(command[0]).name
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}): {log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    stop_daemon(process)
    raise RuntimeError(f"{name} did not start in {timeout}s: {log_path.read_text()}")


def stop_daemon(process: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
