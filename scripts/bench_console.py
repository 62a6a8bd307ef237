#!/usr/bin/env python3
"""Benchmark the safeguarding console at size: ingest of 1,000,000 log records, then the
inbox and timeline pages, on SQLite and on PostgreSQL (when Debian's postgresql is installed).

    scripts/bench_console.py                        # 1M events, both databases (~6 min)
    scripts/bench_console.py --events 100000 --backends sqlite --repeats 10   # a quick look

Synthetic events (a fixed seed) are written as the proxy writes them, one JSONL file per UTC
day over 30 days, into a temporary directory that is removed afterwards (never committed): 1,500
learners and 150 staff on 400 devices (100 with names from clients.devices), a tenth of the
events with no login (known only by address); 70% blocked, 20% allowed and logged, 8%
flagged searches (watchlist terms, some high or critical), 2% other (filter faults, refused
pass-through); statutory (CTIRU/IWF) hits rare, as they are.

Each database is measured in its own process (Django is configured once per process):
- ingest: `webpolicy console`'s first start on the whole backlog (console/ingest.py), against
  the time the same process takes only to read and json-parse the same files (the floor any
  ingest has), and against the target of 60 s per million;
- incremental: 1,000 records appended to today's file and ingested on top of the million
  (what a request pays to show new records within 5 s);
- pages, through Django's test client with the console's full middleware (sessions, CSRF,
  CSP, axes, the ingest check): the inbox as a DSL and as IT, the inbox filtered (last 7 days,
  high or above), a busy learner's timeline and a device's timeline; median and p95 over
  --repeats, against the sign-in page (no database work: the baseline in the same run) and
  against the target of 200 ms.
PostgreSQL runs in a throw-away cluster of Debian's server (tests/unit/console/pgserver.py)
with its default settings (fsync on).  Figures depend on the machine's other load: the load
average is printed.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "addons"), str(REPO)]

INGEST_TARGET = 60.0          # seconds per million records
PAGE_TARGET = 0.200           # seconds
DAYS = 30
LEARNERS, STAFF, DEVICES, NAMED_DEVICES = 1500, 150, 400, 100
CATEGORIES = [                # (list, category, severity, weight)
    ("gambling", "Gambling", "medium", 14), ("adult", "Adult content", "high", 10),
    ("social", "Social networking", "low", 30), ("games", "Games", "low", 18),
    ("streaming", "Streaming media", "low", 12), ("circumvention", "Proxies and VPNs", "high", 8),
    ("weapons", "Weapons", "high", 4), ("drugs", "Drugs", "high", 4),
]
WATCH = [("self_harm", "Self-harm", "critical"), ("bullying", "Bullying", "high"),
         ("extremism", "Extremism", "critical"), ("weapons_terms", "Weapons", "medium"),
         ("drugs_terms", "Drugs", "medium")]
STATUTORY = [("ctiru", "Terrorist content (CTIRU)"), ("iwf", "Child sexual abuse (IWF)")]


# -- synthetic log ---------------------------------------------------------------------------

def generate(directory: Path, count: int, seed: int = 7) -> dict:
    """`count` records over DAYS daily files ending now; returns facts the page runs need."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    learners = [f"learner{n:04}" for n in range(LEARNERS)]
    staff = [f"staff{n:03}" for n in range(STAFF)]
    devices = [f"10.10.{n // 250}.{n % 250 + 1}" for n in range(DEVICES)]
    names = {ip: f"Library PC {n}" for n, ip in enumerate(devices[:NAMED_DEVICES])}
    weights = [w for *_, w in CATEGORIES]
    # Some people browse far more than others (a few busy learners, many occasional ones).
    user_weights = [1 / (n + 10) for n in range(len(learners) + len(staff))]
    people = learners + staff
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = end - dt.timedelta(days=DAYS)
    span = (end - start).total_seconds()
    times = sorted(start + dt.timedelta(seconds=rng.random() * span) for _ in range(count))
    handles: dict[str, object] = {}
    users = rng.choices(people, user_weights, k=count)
    for n, when in enumerate(times):
        user = users[n] if rng.random() > 0.1 else None
        ip = devices[zlib.crc32(user.encode()) % DEVICES] if user and rng.random() < 0.7 else rng.choice(devices)
        record = _record(rng, n, when, user, ip, names.get(ip), weights)
        day = record["time"][:10]
        out = handles.get(day)
        if out is None:
            out = handles[day] = open(directory / f"webpolicy-{day}.jsonl", "w", encoding="utf-8")
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
    for out in handles.values():
        out.close()
    busiest = collections.Counter(users).most_common(1)[0][0]
    return {"user": busiest, "client": devices[0], "files": len(handles)}


def _record(rng: random.Random, n: int, when: dt.datetime, user: str | None, ip: str,
            device: str | None, weights: list[int]) -> dict:
    roll = rng.random()
    listname, category, severity, _ = rng.choices(CATEGORIES, weights)[0]
    host = f"www.{listname}-{rng.randrange(2000)}.example"
    record = {
        "schema": 1, "id": f"WP-{n:010X}",
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "client_ip": ip, "user": user, "device": device,
        "profile": "staff" if user and user.startswith("staff") else "learner",
        "profile_reason": "network 10.10.0.0/16", "action": "blocked", "method": "GET",
        "url": f"https://{host}/page/{rng.randrange(10**6)}", "host": host, "search_term": None,
        "list": listname, "category": category, "severity": severity, "statutory": False,
        "match": "host", "entry": host[4:], "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "policy_version": "bench-1", "watchlist": None,
    }
    if roll < 0.20:
        record["action"] = "logged"
    elif roll < 0.28:
        term_list, term_category, term_severity = rng.choice(WATCH)
        term = f"{term_category.lower()} term {rng.randrange(50)}"
        record.update(action="flagged", host="www.google.co.uk", list=term_list,
                      url="https://www.google.co.uk/search?[redacted]", search_term=term,
                      category=term_category, severity=term_severity, match="search_term",
                      entry=term, watchlist={"list": term_list, "category": term_category,
                                             "severity": term_severity, "term": term})
    elif roll < 0.295:
        record.update(action="failed_closed", list=None, category="Filter unavailable",
                      severity=None, match=None, entry=None)
    elif roll < 0.30:
        record.update(action="refused_passthrough")
    elif roll < 0.3003:
        statutory_list, statutory_category = rng.choice(STATUTORY)
        record.update(list=statutory_list, category=statutory_category, severity="critical",
                      statutory=True, match="url")
    return record


def parse_only(directory: Path) -> float:
    """Seconds to read and json-parse every file: the floor under any ingest."""
    started = time.perf_counter()
    for path in sorted(directory.glob("webpolicy-*.jsonl")):
        with open(path, "rb") as handle:
            for line in handle:
                json.loads(line)
    return time.perf_counter() - started


# -- one database, in its own process ----------------------------------------------------------

def worker(args) -> None:
    """Ingest and pages on one database; prints one JSON line of results."""
    from webpolicy.console.settings import config_for, configure
    log_dir = Path(args.log_dir)
    config = config_for(log_dir, args.database, allowed_hosts=["testserver"],
                        database_password=os.environ.get("BENCH_DB_PASSWORD"))
    configure(config)
    from django.contrib.auth import get_user_model
    from django.test import Client
    from webpolicy.console import ingest
    from webpolicy.console.accounts import add_user
    from webpolicy.console.models import Event

    results: dict = {"parse_s": parse_only(log_dir)}
    server = int(os.environ.get("BENCH_SERVER_PID") or 0)
    started, cpu, server_cpu = time.perf_counter(), time.process_time(), server_seconds(server)
    result = ingest.ingest(log_dir)
    results["ingest_s"] = time.perf_counter() - started
    results["ingest_cpu_s"] = time.process_time() - cpu
    results["server_cpu_s"] = server_seconds(server) - server_cpu
    results["added"] = result.added
    results["events"] = Event.objects.count()

    today = sorted(log_dir.glob("webpolicy-*.jsonl"))[-1]
    with open(today, "a", encoding="utf-8") as out:
        now = dt.datetime.now(dt.UTC)
        for n in range(1000):
            out.write(json.dumps({"schema": 1, "id": f"WP-NEW{n:07}", "time": now.isoformat()
                                  .replace("+00:00", "Z"), "client_ip": "10.10.0.1",
                                  "user": "learner0001", "action": "blocked", "list": "gambling",
                                  "category": "Gambling", "severity": "medium"}) + "\n")
    started = time.perf_counter()
    results["incremental_added"] = ingest.ingest(log_dir).added
    results["incremental_s"] = time.perf_counter() - started

    add_user("bench-dsl", "dsl", "bench password for the dsl 4711")
    add_user("bench-it", "it", "bench password for it 4711")
    users = get_user_model().objects
    dsl, it = Client(), Client()
    dsl.force_login(users.get(username="bench-dsl"))
    it.force_login(users.get(username="bench-it"))
    pages = {
        "sign-in page (baseline)": (Client(), "/login/"),
        "inbox (DSL)": (dsl, "/"),
        "inbox, 7 days, high+": (dsl, "/?since=7d&severity=high&status=open"),
        "inbox (IT: faults)": (it, "/"),
        "timeline: learner": (dsl, f"/person/?user={args.user}"),
        "timeline: device": (dsl, f"/person/?client={args.client}"),
    }
    results["pages"] = {}
    for name, (client, url) in pages.items():
        times = []
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
        times = sorted(times[1:])                   # the first warms caches and connections
        results["pages"][name] = {"median": statistics.median(times),
                                  "p95": times[min(len(times) - 1, int(len(times) * 0.95))]}
    print("RESULT " + json.dumps(results), flush=True)


def server_seconds(pid: int) -> float:
    """CPU seconds used so far by a PostgreSQL server: the postmaster, its live backends and
    the ones that ended (0 for SQLite, which runs in the console's own process)."""
    if not pid:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid:                   # itself, and its children that ended
            total += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == pid:             # a live backend
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# -- the run -----------------------------------------------------------------------------------

def run_backend(backend: str, log_dir: Path, facts: dict, args, work: Path) -> dict | None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "addons")}
    server = None
    if backend == "sqlite":
        database = str(work / f"console-{time.monotonic_ns()}.sqlite3")
    else:
        from tests.unit.console.pgserver import (
            PASSWORD,
            PostgresServer,
            PostgresUnavailable,
        )
        try:
            server = PostgresServer(settings={"shared_buffers": "512MB",
                                              "max_wal_size": "4GB"}).start()
        except PostgresUnavailable as exc:
            print(f"postgresql: skipped ({exc})")
            return None
        database = server.create_database("console_bench")
        env["BENCH_DB_PASSWORD"] = PASSWORD
        env["BENCH_SERVER_PID"] = (server.data / "postmaster.pid").read_text().split()[0]
    # the copy of the log each run ingests (the incremental run appends to it)
    copy = work / f"logs-{backend}"
    shutil.copytree(log_dir, copy)
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", "--log-dir", str(copy), "--database", database,
             "--user", facts["user"], "--client", facts["client"],
             "--repeats", str(args.repeats)], env=env, capture_output=True, text=True)
    finally:
        if server:
            server.stop()
        shutil.rmtree(copy, ignore_errors=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        print(f"{backend}: failed\n{done.stdout}\n{done.stderr}")
        return None
    return json.loads(line[len("RESULT "):])


def report(backend: str, r: dict, count: int) -> None:
    per_million = r["ingest_s"] * 1_000_000 / max(1, r["added"])
    print(f"\n== {backend} ==")
    print(f"ingest        {r['added']:>9,} records in {r['ingest_s']:7.1f} s = "
          f"{r['added'] / r['ingest_s']:>8,.0f}/s; {per_million:5.1f} s per million "
          f"(target {INGEST_TARGET:.0f} s: ratio {per_million / INGEST_TARGET:.2f}); "
          f"read+parse alone {r['parse_s']:.1f} s (ingest/parse {r['ingest_s'] / r['parse_s']:.1f}x)")
    cpu = r["ingest_cpu_s"] + r["server_cpu_s"]
    print(f"ingest CPU    {cpu:7.1f} CPU-s ({r['ingest_cpu_s']:.1f} console"
          + (f" + {r['server_cpu_s']:.1f} PostgreSQL server" if r["server_cpu_s"] else "")
          + f"): {cpu * 1e6 / max(1, r['added']):.1f} CPU-s per million, what the ingest would "
          f"take on one idle core (ratio to target {cpu * 1e6 / max(1, r['added']) / INGEST_TARGET:.2f})")
    print(f"incremental   {r['incremental_added']:>9,} new records on top in "
          f"{r['incremental_s'] * 1000:7.0f} ms (new records must show within 5 s)")
    base = r["pages"]["sign-in page (baseline)"]["median"]
    print(f"{'page':<26}{'median ms':>10}{'p95 ms':>9}{'p95/200ms':>11}{'median/baseline':>17}")
    for name, t in r["pages"].items():
        print(f"{name:<26}{t['median'] * 1000:>10.1f}{t['p95'] * 1000:>9.1f}"
              f"{t['p95'] / PAGE_TARGET:>11.2f}{t['median'] / base:>17.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--workdir", help="keep the generated log here (default: a temporary "
                                          "directory, removed afterwards)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-console-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)                       # synthetic, but shaped like personal data
    try:
        log_dir = work / "logs"
        started = time.perf_counter()
        facts_file = work / "facts.json"
        if facts_file.exists() and json.loads(facts_file.read_text())["events"] == args.events:
            facts = json.loads(facts_file.read_text())
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
            facts = {**generate(log_dir, args.events), "events": args.events}
            facts_file.write_text(json.dumps(facts))
        print(f"{args.events:,} synthetic events in {facts['files']} daily files "
              f"({sum(p.stat().st_size for p in log_dir.iterdir()) / 1e6:.0f} MB), ready in "
              f"{time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}; "
              f"{os.cpu_count()} CPUs")
        for backend in args.backends.split(","):
            results = run_backend(backend.strip(), log_dir, facts, args, work)
            if results:
                report(backend.strip(), results, args.events)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
