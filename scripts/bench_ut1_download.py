#!/usr/bin/env python3
"""Benchmark a UT1 source's download: fetch, check and put in force, against a plain import.

Builds UT1's archive (blacklists.tar.gz) from a UT1 snapshot directory at run time, serves it
over HTTPS on loopback (the tests' list server and throwaway CA), and times
remote.fetch() of a `{ut1: ..., categories: [...]}` source: download, gunzip, completeness
checks, the categories taken out, parsed, checked and swapped in.  The baseline, measured in
the same run on the same archive file, is what an admin's cron job does without checks:
gunzip and extract those categories with tarfile, then parse them once (the proxy must parse
them anyway).  The fetch is timed twice per round: with UT1's MD5SUM.LST served (the archive's
MD5 checked, as against UT1) and without it (taken unchecked), so the MD5 check's cost shows.
Printed as ratios to the baseline; nothing here is asserted in a test.

    .venv/bin/python scripts/bench_ut1_download.py [--snapshot /work/shared/data/ut1]
        [--categories gambling,phishing,malware,drogue,...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ("gambling,phishing,malware,drogue,dating,warez,hacking,vpn,redirector,doh,"
           "cryptojacking,ddos,agressif,sect,astrology,shopping,social_networks,games")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snapshot", type=Path, default=Path("/work/shared/data/ut1"))
    parser.add_argument("--categories", default=DEFAULT)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "addons"), str(ROOT)]
    from tests.unit.lists import listserver
    from webpolicy.lists.formats import parse_source
    from webpolicy.lists.remote import fetch
    from webpolicy.policy.model import RemoteSource

    names = [n for n in args.categories.split(",")
             if (args.snapshot / n / "domains").is_file() or (args.snapshot / n / "urls").is_file()]
    every = sorted(p.name for p in args.snapshot.iterdir()
                   if p.is_dir() and any((p / f).is_file() for f in listserver.UT1_FILES))
    listserver.UT1_SNAPSHOT = args.snapshot
    archive = listserver.ut1_archive(listserver.snapshot(*every))
    print(f"archive: {len(every)} categories, {len(archive) / 1e6:.1f} MB gzipped; "
          f"taking {len(names)}: {', '.join(names)}")
    fetched, unchecked, baseline = [], [], []
    sums = listserver.Reply(body=f"{hashlib.md5(archive).hexdigest()}  blacklists.tar.gz\n"
                            .encode())
    with tempfile.TemporaryDirectory() as work, listserver.ListServer(Path(work)) as server:
        server.replies["/download/blacklists.tar.gz"] = listserver.Reply(body=archive)
        (Path(work) / "blacklists.tar.gz").write_bytes(archive)
        for round_ in range(args.rounds):
            order = ((True, fetched), (False, unchecked))
            for md5, times in (order if round_ % 2 else order[::-1]):     # no order effect
                if md5:
                    server.replies["/download/MD5SUM.LST"] = sums
                else:
                    server.replies.pop("/download/MD5SUM.LST", None)
                source = RemoteSource(list="bench", url=server.url("/download/blacklists.tar.gz"),
                                      path=Path(work) / f"r{round_}{md5}" / "copy.ut1",
                                      format="ut1", ca=server.ca, ut1_categories=tuple(names))
                started = time.perf_counter()
                outcome = fetch(source)
                times.append(time.perf_counter() - started)
                assert outcome.result == "updated", outcome
                assert ("MD5 checked" in outcome.message) == md5, outcome
            started = time.perf_counter()
            entries = _baseline(Path(work) / "blacklists.tar.gz", Path(work) / f"b{round_}",
                                names, parse_source)
            baseline.append(time.perf_counter() - started)
    fetch_s, base_s = statistics.median(fetched), statistics.median(baseline)
    print(f"entries: {entries:,}")
    print(f"baseline (tarfile extract + parse, no checks): {base_s:.2f} s (median of "
          f"{args.rounds})")
    print(f"webpolicy fetch (HTTPS download, checks with MD5, swap in): {fetch_s:.2f} s "
          f"= {fetch_s / base_s:.2f}x the baseline")
    plain_s = statistics.median(unchecked)
    print(f"webpolicy fetch without a published MD5 (not checked): {plain_s:.2f} s "
          f"= {plain_s / base_s:.2f}x the baseline; the MD5 check: {fetch_s / plain_s:.2f}x")
    return 0


def _baseline(archive: Path, into: Path, names: list[str], parse_source) -> int:
    into.mkdir(parents=True)
    wanted = {f"blacklists/{n}/{f}" for n in names for f in ("domains", "urls", "expressions")}
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name in wanted]
        tar.extractall(into, members=members, filter="data")
    return sum(parse_source(into / "blacklists" / n, "ut1").entries for n in names)


if __name__ == "__main__":
    sys.exit(main())
