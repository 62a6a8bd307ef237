"""proxy/worker.py: a worker follows its supervisor, so a supervisor killed with SIGKILL leaves
no worker behind holding a share of the port (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WORKER = """
import signal, sys, time
from webpolicy.proxy.worker import follow_supervisor
follow_supervisor()
signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], "w").write("term"), sys.exit(0)))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
SUPERVISOR = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE)
worker.stdout.readline()
print(worker.pid, flush=True)
time.sleep(60)
"""


def test_a_worker_is_told_to_stop_when_its_supervisor_is_killed(tmp_path: Path):
    marker = tmp_path / "worker-got"
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, WORKER, str(marker)],
                                  stdout=subprocess.PIPE, text=True)
    worker = int(supervisor.stdout.readline())
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait(10)
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the worker outlived its supervisor"
        time.sleep(0.02)
    assert marker.read_text() == "term"
    while _alive(worker):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "State:\tZ" not in status.read_text()
