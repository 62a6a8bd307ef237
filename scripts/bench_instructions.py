#!/usr/bin/env python3
"""The add-on's cost per request in CPU instructions, against bare mitmdump: a measure that
the machine's other load cannot move.

    scripts/bench_instructions.py                # bare, shipped, 5M; HTTP and HTTPS (~10 min)
    scripts/bench_instructions.py --requests 100 --only bare,5M --protocols http

Wall-clock req/s on a shared VM moves by 20-40% from one minute to the next (other tenants'
load, frequency changes), more than the few per cent the add-on is allowed to cost.  This
runs the same mitmdump configurations as bench_proxy.py (same nginx upstream, same policy
files, same request set, reverse-proxy mode) under valgrind's callgrind, which counts the
instructions the proxy executes (every thread), and prints instructions per request and the
ratio bare / configuration: the share of bare mitmdump's throughput a CPU-bound proxy keeps.
Instructions are not cycles (cache misses in the memory-mapped list index cost more time
than their count says), so this complements bench_proxy.py's req/s and CPU/req, it does
not replace them.

Per configuration and protocol: the proxy starts under callgrind with instrumentation off,
serves the request set once to warm up (connections, certificates, memos: what a proxy that
has been running for a while has), then counts a second pass of the same requests sent over
4 keep-alive connections in turn.  The first --requests lines of bench_proxy's request set
are used, so every configuration sees exactly the same requests.

Needs valgrind, nginx and openssl (Debian: apt-get install valgrind nginx-light openssl).
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_proxy as bp  # noqa: E402  (the configurations, upstream and data are shared)

CONNECTIONS = 4


# Cycle estimate from callgrind's cache and branch simulation, the weights KCachegrind uses
# ("CEst"): an L1 miss ~10 cycles, a last-level miss ~100, a mispredicted branch ~10.
CYCLE_WEIGHTS = {"Ir": 1, "I1mr": 10, "D1mr": 10, "D1mw": 10, "ILmr": 100, "DLmr": 100,
                 "DLmw": 100, "Bcm": 10, "Bim": 10}


@dataclass
class CountedProxy(bp.Proxy):
    """A bench_proxy configuration run under callgrind, instrumentation switched on later."""

    simulate: bool = False           # cache and branch simulation: estimated cycles too

    def command(self) -> list[str]:
        # Under callgrind a request takes ~200 times as long, so anything periodic (the
        # policy file check) would be counted ~200 times too often: checks on SIGHUP only.
        command = [arg.replace("webpolicy_reload_interval=0.5", "webpolicy_reload_interval=0")
                   for arg in super().command()]
        simulation = ["--cache-sim=yes", "--branch-sim=yes"] if self.simulate else []
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no", *simulation,
                f"--callgrind-out-file={self.directory}/callgrind.out.%p"] + command

    def counting(self, on: bool) -> None:
        subprocess.run(["callgrind_control", "-i", "on" if on else "off",
                        str(self.process.pid)], check=True, capture_output=True)

    def counts(self) -> dict[str, int]:
        """Dump the counters (zeroing them) and return the events since the last dump
        (Ir: instructions; with simulation also cache misses and mispredicted branches)."""
        before = set(self.directory.glob("callgrind.out.*"))
        subprocess.run(["callgrind_control", "-d", str(self.process.pid)], check=True,
                       capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for dump in set(self.directory.glob("callgrind.out.*")) - before:
                events: list[str] = []
                for line in dump.read_text(errors="replace").splitlines():
                    if line.startswith("events:"):
                        events = line.split()[1:]
                    elif line.startswith("totals:"):
                        return dict(zip(events, map(int, line.split()[1:])))
            time.sleep(0.2)
        raise RuntimeError(f"{self.config.name}: callgrind wrote no dump")


def requests_from(path: Path, n: int) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()[:n]
    return [tuple(line.split(" ", 1)) for line in lines]


def serve(port: int, https: bool, requests: list[tuple[str, str]]) -> dict[int, int]:
    """Send the requests over CONNECTIONS keep-alive connections in turn; statuses seen."""
    context = ssl._create_unverified_context() if https else None
    def connect():
        if https:
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=120, context=context)
        return http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conns = [connect() for _ in range(CONNECTIONS)]
    statuses: dict[int, int] = {}
    try:
        for i, (host, path) in enumerate(requests):
            conn = conns[i % CONNECTIONS]
            conn.request("GET", path, headers={"Host": host})
            response = conn.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.will_close:
                conns[i % CONNECTIONS] = connect()
    finally:
        for conn in conns:
            conn.close()
    return statuses


def measure(proxy: CountedProxy, https: bool, requests: list[tuple[str, str]]) -> dict:
    port = proxy.https_port if https else proxy.http_port
    serve(port, https, requests)                          # warm-up, not counted
    proxy.counts()                                        # zero the counters
    proxy.counting(True)
    started = time.monotonic()
    statuses = serve(port, https, requests)
    proxy.counting(False)
    counts = proxy.counts()
    result = {"per_request": counts["Ir"] / len(requests), "statuses": statuses,
              "seconds": time.monotonic() - started}
    if proxy.simulate:
        cycles = sum(CYCLE_WEIGHTS[event] * n for event, n in counts.items()
                     if event in CYCLE_WEIGHTS)
        result["cycles_per_request"] = cycles / len(requests)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400,
                        help="requests counted per configuration and protocol (default 400)")
    parser.add_argument("--only", default="bare,shipped,5M",
                        help="comma-separated configurations (bare,noop,shipped,1M,5M)")
    parser.add_argument("--cycles", action="store_true",
                        help="also simulate caches and branches and estimate cycles per request "
                             "(about twice as slow)")
    parser.add_argument("--protocols", default="http,https", help="http, https or both")
    parser.add_argument("--big", type=int, default=5_000_000,
                        help="entries in the big synthetic list (default 5000000)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "webpolicy-bench",
                        help="where synthetic lists are kept between runs (shared with "
                             "bench_proxy.py)")
    args = parser.parse_args(argv)
    need = bp.missing_tools() + ([] if shutil.which("valgrind") else ["valgrind"])
    if need:
        bp.say(f"missing: {', '.join(need)}.  On Debian: apt-get install {' '.join(need)}")
        return 2
    data = bp.Data(args.workdir, args.big)
    data.prepare()
    requests = requests_from(data.requests, args.requests)
    run_dir = Path(tempfile.mkdtemp(prefix="instr-", dir=args.workdir))
    extra_source = run_dir / "synth-extra.txt"
    extra_source.write_text("initial.bench.test\n")
    big_name = f"{args.big // 1_000_000}M" if args.big % 1_000_000 == 0 else str(args.big)
    configs = {c.name: c for c in [
        bp.Config("bare", False), bp.Config("noop", False, script=bp.NOOP_ADDON),
        bp.Config("shipped", True),
        bp.Config("1M", True, {"synthetic": data.domains_1m, "synth_urls": data.urls}),
        bp.Config(big_name, True, {"synthetic": data.domains_big, "synth_urls": data.urls})]}
    names = [n for n in args.only.split(",") if n in configs]
    protocols = [p for p in args.protocols.split(",") if p in ("http", "https")]
    bp.say(f"webpolicy instruction counts: {len(requests)} requests per run, "
           f"{CONNECTIONS} keep-alive connections, python {sys.version.split()[0]}")
    upstream = bp.Nginx(run_dir / "nginx").start()
    results: dict[tuple[str, str], dict] = {}
    try:
        for name in names:
            proxy = CountedProxy(configs[name], run_dir / name, upstream, run_dir / "cache" / name,
                                 simulate=args.cycles)
            proxy.write_policy(extra_source)
            _warm_cache(proxy)
            proxy.start(timeout=300)
            try:
                for protocol in protocols:
                    result = measure(proxy, protocol == "https", requests)
                    results[(protocol, name)] = result
                    cycles = (f", {result['cycles_per_request'] / 1e6:.3f} M est. cycles"
                              if args.cycles else "")
                    bp.say(f"  {protocol:5} {name:8} {result['per_request'] / 1e6:7.3f} M "
                           f"instructions/request{cycles}  statuses {result['statuses']}  "
                           f"({result['seconds']:.0f} s)")
            finally:
                proxy.stop()
    finally:
        upstream.stop()
    report(results, names, protocols, "per_request", "Instructions", "instr")
    if args.cycles:
        report(results, names, protocols, "cycles_per_request",
               "Estimated cycles (Ir + 10 x L1 and branch misses + 100 x LL misses)", "cycles")
    return 0


def _warm_cache(proxy: CountedProxy) -> None:
    """Compile the lists natively first: start-up is not what is measured here."""
    if proxy.config.addon:
        native = bp.Proxy(proxy.config, proxy.directory, proxy.upstream, proxy.cache_dir)
        native.policy_path = proxy.policy_path
        native.start()
        native.stop()


def report(results: dict, names: list[str], protocols: list[str], key: str, title: str,
           unit: str) -> None:
    bp.say(f"\n== {title} per request (callgrind; ratio: bare / configuration) ==")
    bp.say(f"{'run':6} {'config':8} {f'M {unit}/req':>13} {f'add-on k {unit}':>15} {'ratio':>7}")
    for protocol in protocols:
        bare = results.get((protocol, "bare"))
        for name in names:
            result = results.get((protocol, name))
            if result is None:
                continue
            per = result[key]
            extra = f"{(per - bare[key]) / 1e3:15.0f}" if bare else f"{'':15}"
            ratio = f"{bare[key] / per:7.3f}" if bare else f"{'':7}"
            bp.say(f"{protocol:6} {name:8} {per / 1e6:13.3f} {extra} {ratio}")


if __name__ == "__main__":
    sys.exit(main())
