#!/usr/bin/env python3
"""Benchmark the decision engine at list scale: load time, memory, ns per decision.

For each size (default 100k, 1M, 5M domains, plus 50k URL entries) a fresh process writes
synthetic lists and a policy into a temporary directory, loads them through the public API
(load_policy + build_engine, exactly what `webpolicy validate` and the proxy do), and times
decide() on canonical URLs for hits and misses.  The baseline, measured in the same process
on the same hosts, is the simplest possible filter: a Python set[str] walked by labels.
Figures are printed as ratios to it.

    .venv/bin/python scripts/bench_engine.py [--sizes 100000,1000000,5000000] [--urls 50000]

Targets (issue 2): <= 2 us median per decision at 5M, <= 30 MB per million domains,
<= 1 s load per million domains.  Speed is measured here, never asserted in a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TLDS = ["com", "net", "org", "co.uk", "de", "fr", "info", "io", "ru", "xyz", "uk", "biz"]
SAMPLES = 20000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def synthetic_domains(n: int, rng: random.Random) -> list[str]:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    names = set()
    while len(names) < n:
        labels = ["".join(rng.choices(alphabet, k=rng.randint(4, 12)))
                  for _ in range(rng.choice((1, 1, 1, 2)))]
        names.add(".".join(labels + [rng.choice(TLDS)]))
    return list(names)


def write_fixture(directory: Path, n: int, urls: int, rng: random.Random) -> tuple[list[str], list[str]]:
    domains = synthetic_domains(n, rng)
    (directory / "big.txt").write_text("\n".join(domains) + "\n")
    url_hosts = synthetic_domains(urls // 10 + 1, rng)
    url_lines = [f"{rng.choice(url_hosts)}/path{i}/page" for i in range(urls)]
    (directory / "urls.txt").write_text("\n".join(url_lines) + "\n")
    (directory / "ctiru.txt").write_text("statutory.example/illegal/page\n")
    (directory / "policy.yaml").write_text(
        'version: "bench"\ndefault_profile: learner\n'
        "profiles:\n  learner: {block: [big, urls]}\n"
        "lists:\n"
        "  ctiru: {statutory: true, category: CTIRU, severity: critical, format: urls, sources: [ctiru.txt]}\n"
        "  big: {category: Big, format: domains, sources: [big.txt]}\n"
        "  urls: {category: Urls, format: urls, sources: [urls.txt]}\n")
    return domains, url_lines


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def time_calls(fn, args: list) -> tuple[float, float]:
    clock = time.perf_counter_ns
    overhead = []
    for _ in range(2000):
        t0 = clock()
        overhead.append(clock() - t0)
    base = statistics.median(overhead)
    samples = []
    for arg in args:
        t0 = clock()
        fn(arg)
        samples.append(clock() - t0 - base)
    return percentiles(samples)


def measure(n: int, urls: int) -> dict:
    """Runs in a child process so RSS growth belongs to this size alone."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addons"))
    from webpolicy.engine.decision import decide
    from webpolicy.engine.engine import build_engine
    from webpolicy.lists.canonical import canonical_url
    from webpolicy.policy.model import load_policy

    rng = random.Random(n)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        domains, url_lines = write_fixture(directory, n, urls, rng)
        before = rss_mb()
        t0 = time.perf_counter()
        engine = build_engine(load_policy(directory / "policy.yaml"))
        load_s = time.perf_counter() - t0
        grown = rss_mb() - before
        base_before = rss_mb()
        t0 = time.perf_counter()
        baseline = set((directory / "big.txt").read_text().split())
        base_load_s = time.perf_counter() - t0
        base_mb = rss_mb() - base_before
    hits = [canonical_url(f"http://www.{d}/index.html") for d in rng.sample(domains, SAMPLES // 2)]
    hits += [canonical_url(f"http://{u}/more") for u in rng.sample(url_lines, SAMPLES // 2)]
    misses = [canonical_url(f"http://www.miss{i}.{rng.choice(TLDS)}/index.html")
              for i in range(SAMPLES)]
    result = {"n": n, "load_s": load_s, "mb": grown,
              "hit": time_calls(lambda u: decide(engine, u, "10.0.0.1"), hits),
              "miss": time_calls(lambda u: decide(engine, u, "10.0.0.1"), misses)}
    assert all(decide(engine, u).action == "block" for u in hits[:200])
    assert all(decide(engine, u).action == "allow" for u in misses[:200])
    result["base_load_s"], result["base_mb"] = base_load_s, base_mb

    def walk(url) -> bool:
        host = url.host
        while True:
            if host in baseline:
                return True
            dot = host.find(".")
            if dot < 0:
                return False
            host = host[dot + 1:]
    result["base_hit"] = time_calls(walk, hits[: SAMPLES // 2])
    result["base_miss"] = time_calls(walk, misses)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--urls", type=int, default=50000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.urls)))
        return 0
    print(f"{'domains':>9} {'load s':>7} {'s/M':>5} {'MB/M':>6} {'hit p50':>8} {'hit p99':>8} "
          f"{'miss p50':>8} {'miss p99':>8}   ratio to set[str]: load, MB, hit p50, miss p50")
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--urls", str(args.urls)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        per_m = n / 1e6
        print(f"{n:>9,} {r['load_s']:>7.2f} {r['load_s'] / per_m:>5.2f} {r['mb'] / per_m:>6.1f} "
              f"{r['hit'][0]:>6.0f}ns {r['hit'][1]:>6.0f}ns {r['miss'][0]:>6.0f}ns "
              f"{r['miss'][1]:>6.0f}ns   {r['load_s'] / r['base_load_s']:.1f}x, "
              f"{r['mb'] / max(r['base_mb'], 0.1):.2f}x, {r['hit'][0] / r['base_hit'][0]:.1f}x, "
              f"{r['miss'][0] / r['base_miss'][0]:.1f}x")
    print("(decide() includes identity, every list, precedence and the Decision; the set[str] "
          "baseline only answers 'listed or not' for one list)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
