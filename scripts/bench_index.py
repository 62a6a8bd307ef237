#!/usr/bin/env python3
"""Benchmark DomainIndex against a plain ``set[str]`` walked by labels.

For each size it generates a synthetic blocklist in memory (1-3 labels + a common
TLD, a quarter of them subdomains of shared bases, as real lists are), then prints:
build time, save/open time, memory per million entries (file size and RSS growth),
and median/p99 nanoseconds per ``match()`` for hits and for misses (hosts of 2-5
labels).  The same figures for the set baseline are measured in the same run and
ours are printed as ratios to it (< 1 is better for time, memory).

    python scripts/bench_index.py --sizes 100000,1000000,5000000

Each size runs in a fresh process so RSS growth and GC state are not inherited.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addons"))
from webpolicy.lists.domainindex import DomainIndex  # noqa: E402

TLDS = (
    ["com"] * 40 + ["net"] * 7 + ["org"] * 6 + ["ru"] * 4 + ["de"] * 4 + ["co.uk"] * 4
    + ["info"] * 3 + ["xyz"] * 3 + ["top"] * 3 + ["cn"] * 3 + ["uk"] * 2 + ["io"] * 2
    + ["br"] * 2 + ["fr"] * 2 + ["jp"] * 2 + ["in"] * 2 + ["nl"] * 2 + ["pl"] * 2
    + ["it"] * 2 + ["online"] * 2 + ["site"] * 2
    + ["es", "biz", "club", "ac.uk", "org.uk", "com.au", "tk", "me", "tv", "cc", "us", "eu"]
)
SUBS = ["www", "m", "ads", "cdn", "api", "mail", "static", "img", "track", "app", "login", "shop"]
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789" * 7 + b"abcd"  # 256 bytes -> translate table
SAMPLES = 20_000


class Labels:
    """Cheap random labels: one big random buffer mapped onto [a-z0-9], sliced."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.buf = b""
        self.pos = 0

    def __call__(self) -> str:
        size = self.rng.randint(4, 12)
        if self.pos + size > len(self.buf):
            self.buf = self.rng.randbytes(1 << 20).translate(ALPHABET).decode()
            self.pos = 0
        self.pos += size
        return self.buf[self.pos - size : self.pos]


def synth_domains(n: int, seed: int = 1) -> list[str]:
    """n distinct domains: 75% registrable (label.tld), 25% with 1-2 more labels over a
    shared base (half of those bases listed themselves)."""
    rng = random.Random(seed)
    label = Labels(rng)
    n_bare = n * 3 // 4
    bare = dict.fromkeys(f"{label()}.{rng.choice(TLDS)}" for _ in range(n_bare))
    unlisted = [f"{label()}.{rng.choice(TLDS)}" for _ in range(n // 16 + 1)]
    listed = list(bare)
    out = bare
    while len(out) < n:
        base = rng.choice(listed) if rng.random() < 0.5 else rng.choice(unlisted)
        sub = rng.choice(SUBS) if rng.random() < 0.4 else label()
        name = f"{sub}.{base}" if rng.random() < 0.7 else f"{label()}.{sub}.{base}"
        out[name] = None
    return list(out)


def prefixed(name: str, rng: random.Random, label: Labels) -> str:
    """Name with 0+ random labels in front, so the result has 2-5 labels."""
    have = name.count(".") + 1
    want = rng.randint(max(2, have), 5) if have <= 5 else have
    return ".".join([label() for _ in range(want - have)] + [name])


def sample_hosts(domains: list[str], listed: set[str],
                 seed: int = 2) -> tuple[list[str], list[str]]:
    """(hits, misses), SAMPLES each.  A quarter of misses sit under a listed name's
    parent (sibling subdomains), so walks go past the registrable level."""
    rng = random.Random(seed)
    label = Labels(rng)
    hits = [prefixed(rng.choice(domains), rng, label) for _ in range(SAMPLES)]
    parents = [d.partition(".")[2] for d in domains[-len(domains) // 4 :] if d.count(".") >= 2]
    misses: list[str] = []
    while len(misses) < SAMPLES:
        if parents and rng.random() < 0.25:
            base = f"{label()}.{rng.choice(parents)}"
        else:
            base = f"{label()}.{rng.choice(TLDS)}"
        host = prefixed(base, rng, label)
        if not set_walk(listed, host):
            misses.append(host)
    return hits, misses


def set_walk(listed: set[str], host: str) -> list[str]:
    """Baseline: every suffix of host (at dots) that is in the set."""
    found = []
    name = host
    while True:
        if name in listed:
            found.append(name)
        i = name.find(".")
        if i < 0:
            return found
        name = name[i + 1 :]


def rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> None:
    """Reset VmHWM so the next reading is the peak of what follows (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def timer_overhead() -> float:
    clock = time.perf_counter_ns
    noop = (lambda h: None)
    samples = []
    for _ in range(50_000):
        t0 = clock()
        noop("x")
        samples.append(clock() - t0)
    return statistics.median(samples)


def per_call_ns(fn: Callable[[str], object], hosts: Sequence[str],
                overhead: float) -> tuple[float, float]:
    """(median, p99) ns per call, timer and call-site overhead of a no-op subtracted."""
    clock = time.perf_counter_ns
    for h in hosts[:2000]:
        fn(h)
    samples = []
    for h in hosts:
        t0 = clock()
        fn(h)
        samples.append(clock() - t0)
    samples.sort()
    return samples[len(samples) // 2] - overhead, samples[len(samples) * 99 // 100] - overhead


def measure(n: int) -> dict[str, float]:
    """All figures for one size, in this (fresh) process."""
    domains = synth_domains(n)
    entries = [(d, 1 << (i % 7)) for i, d in enumerate(domains)]
    gc.collect()
    r: dict[str, float] = {"n": n}

    # The baseline owns its strings, as a loader's set would: build it from text.
    text = "\n".join(domains)
    rss0 = rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    listed = set(text.split("\n"))
    r["set_build_s"] = time.perf_counter() - t0
    r["set_build_cpu_s"] = time.process_time() - c0
    gc.collect()
    r["set_rss_mb"] = (rss_bytes() - rss0) / 2**20
    del text

    hits, misses = sample_hosts(domains, listed)
    overhead = timer_overhead()
    r["overhead_ns"] = overhead
    walk = lambda h: set_walk(listed, h)  # noqa: E731
    r["set_hit_med"], r["set_hit_p99"] = per_call_ns(walk, hits, overhead)
    r["set_miss_med"], r["set_miss_p99"] = per_call_ns(walk, misses, overhead)

    gc.collect()
    rss0 = rss_bytes()
    reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    built = DomainIndex.build(entries)
    r["build_s"] = time.perf_counter() - t0
    r["build_cpu_s"] = time.process_time() - c0
    r["build_peak_mb"] = (rss_bytes("VmHWM") - rss0) / 2**20
    gc.collect()
    r["build_rss_mb"] = (rss_bytes() - rss0) / 2**20
    r["nbytes_mb"] = built.nbytes / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "domains.wpidx")
        t0 = time.perf_counter()
        built.save(path)
        r["save_s"] = time.perf_counter() - t0
        del built
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        index = DomainIndex.open(path)
        r["open_s"] = time.perf_counter() - t0
        r["h_hit_med"], r["h_hit_p99"] = per_call_ns(index.match, hits, overhead)
        r["h_miss_med"], r["h_miss_p99"] = per_call_ns(index.match, misses, overhead)
        r["open_rss_mb"] = (rss_bytes() - rss0) / 2**20
        check_same(index, listed, hits, misses)
    return r


def check_same(index: DomainIndex, listed: set[str], hits: list[str], misses: list[str]) -> None:
    for host in hits[:5000] + misses[:5000]:
        ours = [name for name, _ in index.match(host)]
        if sorted(ours) != sorted(set_walk(listed, host)):
            raise SystemExit(f"mismatch for {host}: {ours} vs {set_walk(listed, host)}")


def report(r: dict[str, float]) -> str:
    """One size as a table: ours, the set baseline, and ours / baseline."""
    m = r["n"] / 1e6

    def row(label: str, ours: float, base: float | None, fmt: str) -> str:
        ratio = f"{ours / base:6.2f}x" if base else "      -"
        base_text = format(base, fmt) if base is not None else "-"
        return f"  {label:26s} {format(ours, fmt):>12s} {base_text:>12s}   {ratio}"

    lines = [
        f"== {int(r['n']):,} domains ==",
        f"  {'':26s} {'DomainIndex':>12s} {'set[str]':>12s}   ours/set",
        row("build s", r["build_s"], r["set_build_s"], ".2f"),
        row("build s per million", r["build_s"] / m, r["set_build_s"] / m, ".2f"),
        row("build CPU s per million", r["build_cpu_s"] / m, r["set_build_cpu_s"] / m, ".2f"),
        row("save s", r["save_s"], None, ".3f"),
        row("open s", r["open_s"], None, ".4f"),
        row("MB per million: file", r["nbytes_mb"] / m, None, ".1f"),
        row("MB per million: RSS", r["open_rss_mb"] / m, r["set_rss_mb"] / m, ".1f"),
        row("build peak RSS MB/M", r["build_peak_mb"] / m, None, ".0f"),
    ]
    for kind in ("hit", "miss"):
        for stat, name in (("med", "median"), ("p99", "p99")):
            ours, base = r[f"h_{kind}_{stat}"], r[f"set_{kind}_{stat}"]
            lines.append(row(f"match {kind} {name} ns", ours, base, ".0f"))
    lines.append("  RSS = growth after open() and the lookups (pages actually mapped);")
    lines.append(f"  set = growth of set(text.split()); "
                 f"{r['overhead_ns']:.0f} ns/call timer cost removed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,5000000",
                        help="comma-separated entry counts")
    # child mode: measure one size in a fresh process and print JSON
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one)))
        return 0
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {SAMPLES} hits and {SAMPLES} misses per size")
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n)],
                             capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stderr)
            return out.returncode
        print(report(json.loads(out.stdout.strip().splitlines()[-1])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
