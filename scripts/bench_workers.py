#!/usr/bin/env python3
"""Benchmark `webpolicy run --workers N` against one worker, measured in the same run.

    scripts/bench_workers.py                  # N = the CPUs here, 10 s runs, 3 rounds
    scripts/bench_workers.py --workers 4 --seconds 5 --rounds 5

Two gateways run side by side on the shipped policy.yaml and blocklists (bench_proxy.py's
"shipped" configuration): `webpolicy run --workers 1` (one mitmdump, as before) and
`webpolicy run --workers N` (a supervisor and N mitmdump workers sharing the listening port
through SO_REUSEPORT).  Each is driven in turn, rounds interleaved, by the same wrk request
set as bench_proxy.py (keep-alive, varied host names, 4% domain and 2% URL blocks) through
mitmdump's reverse-proxy mode to a local nginx, over plain HTTP only (the benchmark's
reverse:https listener serves HTTP/3 on UDP too, which workers cannot share; a gateway in
explicit or transparent mode listens on TCP only).  Reported per concurrency: requests/s, p99,
and CPU per request (user + system of the supervisor and every worker, from /proc), and the
ratios N workers / 1 worker.  The issue's target is throughput >= 0.9 x N of one worker and
CPU per request <= 1.1 x one worker's, which needs cores to spare for wrk and nginx too: on a
machine with N cores or fewer the throughput ratio shows how far the cores go, not how the
workers scale.  wrk runs with as many threads as there are workers (it must not be the
bottleneck itself) for both gateways alike.

Needs wrk and nginx (Debian: `apt-get install wrk nginx-light`) and openssl.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from bench_proxy import (  # noqa: E402
    WRK_LUA,
    Config,
    Data,
    Nginx,
    Proxy,
    fetch,
    free_port,
    load_average,
    missing_tools,
    mitmdump_path,
    say,
    stop_process,
    wrk,
)


@dataclass
class Gateway(Proxy):
    """bench_proxy's proxy, started by `webpolicy run --workers N` instead of mitmdump."""

    workers: int = 1
    pids: list[int] = field(default_factory=list)

    def command(self) -> list[str]:
        mitmdump = super().command()
        webpolicy = str(Path(mitmdump_path()).parent / "webpolicy")
        # Plain HTTP only: reverse:https also listens on UDP (HTTP/3), which workers cannot
        # share (`webpolicy run` refuses it with more than one).
        options = mitmdump[1:]
        https = options.index(f"reverse:https://127.0.0.1:{self.upstream.https_port}"
                              f"@{self.https_port}")
        del options[https - 1:https + 1]
        shim = options.index("-s")
        del options[shim:shim + 2]                       # `run` gives its own entry script
        policy = options.index(f"webpolicy_policy={self.policy_path}")
        del options[policy - 1:policy + 1]
        return [webpolicy, "run", "--policy", str(self.policy_path),
                "--workers", str(self.workers), *options]

    def start(self, timeout: float = 120.0) -> float:
        seconds = super().start(timeout)
        log = self.directory / "mitmdump.log"
        deadline = time.monotonic() + timeout
        while log.read_text(errors="replace").count("filtering with policy") < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.config.name}: the workers did not all start")
            time.sleep(0.05)
        self.pids = [self.process.pid, *children(self.process.pid)]
        return seconds

    def cpu_seconds(self) -> float:
        """CPU time of the supervisor (or the one mitmdump) and every worker."""
        total = 0.0
        for pid in [self.process.pid, *children(self.process.pid)]:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, 30)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def measure(gateway: Gateway, url: str, connections: int, seconds: float, lua: Path,
            requests: Path, threads: int) -> dict:
    cpu = gateway.cpu_seconds()
    result = wrk(url, connections, seconds, lua, requests, threads)
    result["cpu_per_request_us"] = (gateway.cpu_seconds() - cpu) / max(1, result["requests"]) * 1e6
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="workers of the gateway compared with one (default: the CPUs)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--concurrency", default="16,64", help="wrk connections, comma-separated")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "webpolicy-bench")
    args = parser.parse_args(argv)
    need = missing_tools()
    if need:
        say(f"missing: {', '.join(need)}.  On Debian: apt-get install {' '.join(need)}")
        return 2
    if args.workers < 2:
        parser.error("--workers: compare at least 2 with 1")
    say(f"webpolicy workers benchmark: {os.cpu_count()} CPUs, load average {load_average()}, "
        f"1 vs {args.workers} workers, {args.seconds:g} s per run, {args.rounds} round(s)")
    data = Data(args.workdir, 1_000_000)
    data.prepare()
    run_dir = Path(tempfile.mkdtemp(prefix="workers-", dir=args.workdir))
    extra = run_dir / "synth-extra.txt"
    extra.write_text("initial.bench.test\n")
    upstream = Nginx(run_dir / "nginx").start()
    lua = run_dir / "requests.lua"
    lua.write_text(WRK_LUA)
    gateways: dict[int, Gateway] = {}
    try:
        for count in (1, args.workers):
            gateway = Gateway(Config(f"{count}w", True), run_dir / f"{count}w", upstream,
                              run_dir / "cache", free_port(), free_port(), workers=count)
            gateway.write_policy(extra)
            say(f"started {count} worker(s): first answer after {gateway.start():.2f} s "
                f"(pids {', '.join(map(str, gateway.pids))})")
            assert fetch(gateway.http_port, "startup.bench.test", "/") == 200
            gateways[count] = gateway
        results = run(gateways, args, lua, data.requests)
        report(results, args)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        upstream.stop()
    say(f"\nload average at the end: {load_average()}")
    return 0


def run(gateways: dict[int, Gateway], args, lua: Path, requests: Path) -> dict:
    schemes = ["http"]
    results: dict[tuple, list[dict]] = {}
    threads = args.workers
    for round_number in range(args.rounds):
        for scheme in schemes:
            for connections in [int(c) for c in args.concurrency.split(",")]:
                for count, gateway in gateways.items():
                    result = measure(gateway, f"{scheme}://127.0.0.1:{gateway.http_port}",
                                     connections,
                                     args.seconds, lua, requests, threads)
                    results.setdefault((scheme, connections, count), []).append(result)
                    say(f"round {round_number + 1} {scheme} c{connections} {count} worker(s): "
                        f"{result['rps']:.0f} req/s, p99 {result['p99_us'] / 1000:.1f} ms, "
                        f"{result['cpu_per_request_us']:.0f} us CPU/request, "
                        f"{result['failed']} failed")
    return results


def report(results: dict, args) -> None:
    n = args.workers
    say(f"\n== 1 worker vs {n} workers (medians of {args.rounds} rounds) ==")
    say(f"{'run':<12} {'1w req/s':>9} {f'{n}w req/s':>9} {'ratio':>6} {'/N':>5} "
        f"{'1w p99':>8} {f'{n}w p99':>8} {'1w CPU/req':>11} {f'{n}w CPU/req':>11} {'ratio':>6}")
    for (scheme, connections) in dict.fromkeys((s, c) for s, c, _ in results):
        one, many = (results[(scheme, connections, k)] for k in (1, n))
        rps1, rpsn = (statistics.median(r["rps"] for r in rs) for rs in (one, many))
        p1, pn = (statistics.median(r["p99_us"] for r in rs) / 1000 for rs in (one, many))
        c1, cn = (statistics.median(r["cpu_per_request_us"] for r in rs) for rs in (one, many))
        failed = sum(r["failed"] for r in one + many)
        say(f"{scheme + ' c' + str(connections):<12} {rps1:>9.0f} {rpsn:>9.0f} "
            f"{rpsn / rps1:>6.2f} {rpsn / rps1 / n:>5.2f} {p1:>6.1f}ms {pn:>6.1f}ms "
            f"{c1:>9.0f}us {cn:>9.0f}us {cn / c1:>6.2f}"
            + (f"  ({failed} failed)" if failed else ""))
    say(f"ratio: {n} workers / 1 worker; /N: that ratio divided by {n} (target >= 0.9 with "
        f"cores to spare).  CPU/req: user+system of every gateway process per request "
        "(target: ratio <= 1.1).  This machine has "
        f"{os.cpu_count()} CPUs for the gateway, wrk and nginx together.")


if __name__ == "__main__":
    sys.exit(main())
