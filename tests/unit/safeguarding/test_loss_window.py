"""The records a kill -9 can lose, measured: README "Privacy" quotes these numbers.

A child process hands records to a real LogWriter every 2 ms (each carrying the monotonic time
it was handed over; CLOCK_MONOTONIC is one clock for every process), and every 100th as a
durable record whose Future it waits for, printing its id once resolved (the moment a proxy
would send the block page).  The parent kills it with SIGKILL at a random moment; the loss
window is the time between the last record on disk and the kill.  Ordinary records may be lost
for up to FLUSH_SECONDS (plus one write); a durable record reported as written never is.

    PYTHONPATH=addons .venv/bin/python -m tests.unit.safeguarding.test_loss_window [trials]
prints the measured windows.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tests.unit.helpers import ADDONS
from webpolicy.safeguarding.logwriter import FLUSH_SECONDS

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from webpolicy.safeguarding.logwriter import LogWriter
    log, durable_every = LogWriter(Path(sys.argv[1]), 30), int(sys.argv[2])
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        record = {"id": f"R{i}", "t": time.monotonic()}
        if durable_every and i % durable_every == 0:
            record["statutory"] = True
            started = time.monotonic()
            log.submit_durable(record).result()
            print(record["id"], time.monotonic() - started, flush=True)   # block page now
        else:
            log.write(record)
        time.sleep(0.002)
""")


def one_trial(durable_every: int, rng: random.Random
              ) -> tuple[float, int, int, int, list[float]]:
    """(seconds of records lost, records lost, durable records reported, of them lost,
    seconds each durable write waited)."""
    with tempfile.TemporaryDirectory() as directory:
        child = subprocess.Popen([sys.executable, "-c", CHILD, directory, str(durable_every)],
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ADDONS)})
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.8, 1.6))
        killed_at = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        lines = [line.split() for line in child.stdout if line.strip()]
        reported = [fields[0] for fields in lines]
        waits = [float(fields[1]) for fields in lines if len(fields) == 2]
        child.wait()
        records = []
        for path in Path(directory).glob("webpolicy-*.jsonl"):
            records += [json.loads(line) for line in path.read_bytes().splitlines() if line]
        last_t = max(r["t"] for r in records)
        last_n = max(int(r["id"][1:]) for r in records)
        window = killed_at - last_t
        lost = round(window / 0.0021)                       # about one record per 2.1 ms
        on_disk = {r["id"] for r in records}
        assert last_n == len(records), "records on disk are a prefix: nothing missing before"
        return window, lost, len(reported), len(set(reported) - on_disk), waits


def test_kill_9_loses_at_most_the_last_flush_interval_and_never_a_durable_record():
    rng = random.Random(15)
    for durable_every in (0, 100):
        for _ in range(3):
            window, _, reported, durable_lost, _ = one_trial(durable_every, rng)
            assert window <= FLUSH_SECONDS + 0.3, f"{window:.3f} s of records lost"
            assert durable_lost == 0
            if durable_every:
                assert reported >= 3


def main(trials: int) -> None:
    rng = random.Random()
    print(f"FLUSH_SECONDS = {FLUSH_SECONDS}; {trials} kill -9 trials per mode, a record "
          "every ~2 ms")
    for durable_every, name in ((0, "ordinary records only"),
                                (100, "every 100th record durable")):
        results = [one_trial(durable_every, rng) for _ in range(trials)]
        windows = [r[0] for r in results]
        print(f"{name}: window lost median {statistics.median(windows) * 1000:.0f} ms, "
              f"max {max(windows) * 1000:.0f} ms (about {max(r[1] for r in results)} records); "
              f"durable records reported written {sum(r[2] for r in results)}, "
              f"lost {sum(r[3] for r in results)}")
        waits = sorted(w for r in results for w in r[4])
        if waits:
            print(f"  a durable write waited median {statistics.median(waits) * 1000:.1f} ms, "
                  f"max {waits[-1] * 1000:.1f} ms (write + fsync in {tempfile.gettempdir()})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
