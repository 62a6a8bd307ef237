#!/usr/bin/env python3
"""The mixed workload of scripts/bench_proxy.py: the gateway against its peers, squid and
squid + squidGuard, as a school's browsers would use a forward proxy.

    scripts/bench_proxy.py --workloads mixed --rounds 3 --seconds 8     # (root: see below)

Configurations, each a forward proxy on 127.0.0.1, all in the same interleaved rounds:

    bare        mitmdump with no add-on (intercepts every CONNECT, as `inspect: all` does)
    all         the gateway (webpolicy run): shipped policy + the 1M-domain list, blocked for
                the learner profile the benchmark client falls in; `tls: {inspect: all}`
    selective   the same with `tls: {inspect: selective}`
    squid       squid 5 without a filter (CONNECT tunnelled, no TLS interception)
    squidguard  squid + squidGuard (url_rewrite_program) with the same 1M domains compiled
                into its Berkeley DB

The load (a session = one client connection to the proxy; weights are per session):

    https  70%  CONNECT to an allowed host, TLS, 10 keep-alive GETs inside the tunnel
    search 10%  CONNECT to www.google.com / www.bing.com, TLS, 5 searches
    http   15%  5 plain-HTTP GETs (absolute form) to allowed hosts on one keep-alive connection
    block   5%  CONNECT to a host on the 1M list, TLS, 1 GET: the gateways answer 403 with the
                block page (so they intercept it), squidGuard refuses the CONNECT itself

so per request ~84% HTTPS to allowed hosts, ~6% searches, ~9% plain HTTP, ~0.6% blocked.
Latency is per request; a session's first request includes the CONNECT and the handshake.

Every name resolves to one nginx (127.0.3.1, ports 80 and 443) through a private hosts file:
squid's `hosts_file`, and for mitmdump the file bind-mounted over /etc/hosts in its own mount
namespace (`unshare --mount`, as the end-to-end tests do: needs root).  The client does not
verify certificates (it would need to trust mitmproxy's CA for the intercepting ones; what it
measures is the proxy's work, not the client's trust).

The load generator is asyncio in several processes (--client-processes, default 2): no Debian
tool does CONNECT + keep-alive inside tunnels over varied hosts (wrk cannot send CONNECT,
h2load has no proxy support, hey sends one URL per run).  On a 2-core machine the client, nginx
and the proxy share the cores: when a proxy is faster than the client, req/s measures the
client, and the proxy's CPU time per request (its whole process tree: squid's helpers, the
gateway's workers) is the figure that compares proxies.  Both are printed.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

UPSTREAM_ADDR = "127.0.3.1"
ALLOWED_HOSTS = 400
BLOCKED_HOSTS = 60
SEARCH_HOSTS = ("www.google.com", "www.bing.com")
SESSIONS = (("https", 0.70, 10), ("search", 0.10, 5), ("http", 0.15, 5), ("block", 0.05, 1))
# The workloads: `mixed` above; `tunnels` only its first kind (what selective inspection can
# pass through), to show the two ends of what it saves.
MIXES = {"mixed": SESSIONS, "tunnels": (("https", 1.0, 10),)}
SEARCH_WORDS = ("photosynthesis", "maths+homework", "french+verbs", "volcano+diagram",
                "history+of+rome", "python+loops", "weather+london", "bus+times")
CONFIGS = ("bare", "all", "selective", "squid", "squidguard")
BASELINES = ("bare", "squidguard")

SQUID_CONF = """\
http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
access_log none
cache_store_log none
cache deny all
cache_mem 8 MB
hosts_file {dir}/hosts
dns_nameservers 127.0.0.1
coredump_dir {dir}
max_filedescriptors 8192
shutdown_lifetime 1 seconds
acl SSL_ports port 443
acl CONNECT method CONNECT
http_access deny CONNECT !SSL_ports
http_access allow localhost
http_access deny all
{rewrite}
"""

SQUIDGUARD_CONF = """\
dbhome {db}
logdir {dir}/log
dest synthetic {{
    domainlist synthetic/domains
}}
acl {{
    default {{
        pass !synthetic all
        redirect 302:http://blocked.invalid/
    }}
}}
"""


# --------------------------------------------------------------------------- data


@dataclass
class MixedData:
    """The host names of the workload, and the hosts file that sends them all to nginx."""

    directory: Path
    domains_1m: Path
    cache: Path                       # kept between runs: squidGuard's compiled db
    allowed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def prepare(self) -> None:
        rng = random.Random(11)
        listed = self.domains_1m.read_text().split()
        self.blocked = rng.sample(listed, BLOCKED_HOSTS)
        listed_set = set(listed)
        words = ("maths", "science", "history", "art", "library", "news", "weather", "music",
                 "code", "sport", "travel", "museum", "maps", "books", "dictionary")
        tlds = ("ac.uk", "org.uk", "co.uk", "org", "com", "net", "edu", "gov.uk")
        while len(self.allowed) < ALLOWED_HOSTS:
            host = f"www.{rng.choice(words)}{rng.randrange(10_000)}.{rng.choice(tlds)}"
            if host not in self.allowed and not _listed(host, listed_set):
                self.allowed.append(host)
        names = self.allowed + self.blocked + list(SEARCH_HOSTS)
        self.hosts.write_text("127.0.0.1 localhost\n" +
                              "".join(f"{UPSTREAM_ADDR} {name}\n" for name in names))
        self.hosts.chmod(0o644)

    @property
    def hosts(self) -> Path:
        return self.directory / "mixed-hosts"

    def squidguard_db(self) -> Path:
        """squidGuard's Berkeley DB of the 1M list, compiled once (about a minute)."""
        db = self.cache / "squidguard-db"
        target = db / "synthetic" / "domains.db"
        if not target.exists():
            (db / "synthetic").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.domains_1m, db / "synthetic" / "domains")
            conf = self.directory / "squidguard-compile.conf"
            (self.directory / "log").mkdir(exist_ok=True)
            conf.write_text(SQUIDGUARD_CONF.format(db=db, dir=self.directory))
            print("compiling the 1M list into squidGuard's db (about a minute) ...", flush=True)
            subprocess.run([squidguard_path(), "-c", str(conf), "-C", "all"], check=True)
        return db


def _listed(host: str, listed: set[str]) -> bool:
    labels = host.split(".")
    return any(".".join(labels[i:]) in listed for i in range(len(labels)))


def squid_path() -> str | None:
    return shutil.which("squid") or shutil.which("squid", path="/usr/sbin:/sbin")


def squidguard_path() -> str | None:
    return shutil.which("squidGuard")


def missing_tools(names: list[str]) -> list[str]:
    need = []
    if {"squid", "squidguard"} & set(names) and not squid_path():
        need.append("squid")
    if "squidguard" in names and not squidguard_path():
        need.append("squidguard")
    return need


# --------------------------------------------------------------------------- servers


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process and every descendant alive now,
    plus what its reaped children used (cutime/cstime): squid's helpers, a gateway's workers."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields:
            total += sum(int(f) for f in fields[11:15])
        todo += children.get(current, [])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """One forward proxy under test: its command, the port, the process."""

    name: str
    directory: Path
    command: list[str]
    port: int
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> float:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "server.log", "ab")
        started = time.monotonic()
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.directory, env=self.env,
                                        start_new_session=True)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}); see "
                                   f"{self.directory / 'server.log'}")
            if asyncio.run(_probe(self.port, SEARCH_HOSTS[0])):
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout:g} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def cpu_seconds(self) -> float:
        return process_tree_cpu(self.process.pid)


async def _probe(port: int, host: str) -> bool:
    """One plain-HTTP request through the proxy answered with anything: it serves."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        writer.write(f"GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return line.startswith(b"HTTP/1.1 ")
    except (OSError, TimeoutError):
        return False


def in_hosts_namespace(hosts: Path, command: list[str]) -> list[str]:
    """Run `command` with `hosts` over /etc/hosts in a mount namespace of its own."""
    return ["unshare", "--mount", "--", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
            str(hosts), *command]


def gateway_command(webpolicy: str, policy: Path, port: int, confdir: Path, cache: Path,
                    workers: int) -> list[str]:
    command = [webpolicy, "run", "--policy", str(policy)]
    if workers > 1:
        command += ["--workers", str(workers)]         # issue #19's workers, where built
    return command + ["--listen-host", "127.0.0.1", "--listen-port", str(port),
                      "--set", "ssl_insecure=true", "--set", f"confdir={confdir}",
                      "--set", f"webpolicy_cache_dir={cache}"]


def squid_server(name: str, directory: Path, hosts: Path, port: int,
                 squidguard_db: Path | None) -> Server:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(hosts, directory / "hosts")
    rewrite = ""
    if squidguard_db is not None:
        (directory / "log").mkdir(exist_ok=True)
        conf = directory / "squidGuard.conf"
        conf.write_text(SQUIDGUARD_CONF.format(db=squidguard_db, dir=directory))
        # squidGuard answers one request at a time: enough children for the concurrency.
        rewrite = (f"url_rewrite_program {squidguard_path()} -c {conf}\n"
                   "url_rewrite_children 24 startup=8 idle=4 concurrency=0\n")
    conf = directory / "squid.conf"
    conf.write_text(SQUID_CONF.format(port=port, dir=directory, rewrite=rewrite))
    # squid started as root runs as its cache_effective_user (Debian: proxy).
    subprocess.run(["chown", "-R", "proxy:proxy", str(directory)], check=False)
    if squidguard_db is not None:
        subprocess.run(["chown", "-R", "proxy:proxy", str(squidguard_db)], check=False)
    return Server(name, directory, [squid_path(), "-N", "-f", str(conf)], port)


# --------------------------------------------------------------------------- load generator


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def status(self, kind: str, code: int, seconds: float) -> None:
        self.latencies.append(seconds)
        key = f"{kind}:{code}"
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def error(self, kind: str, exc: BaseException) -> None:
        key = f"{kind}:{type(exc).__name__}"
        self.errors[key] = self.errors.get(key, 0) + 1


class Closed(Exception):
    """The proxy closed the connection (or said it would)."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, connection still usable) after reading one whole response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()
        keep = False
    return status, keep


async def session(port: int, rng: random.Random, plan: dict, tally: Tally,
                  context: ssl.SSLContext) -> None:
    kind, count = plan["pick"](rng)
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kind == "http":
            for i in range(count):
                host = rng.choice(plan["allowed"])
                writer.write(f"GET http://{host}/page/{rng.randrange(1000)}.html HTTP/1.1\r\n"
                             f"Host: {host}\r\n\r\n".encode())
                status, keep = await read_response(reader)
                now = time.perf_counter()
                tally.status(kind, status, now - began)
                began = now
                if not keep:
                    return
            return
        host = {"https": lambda: rng.choice(plan["allowed"]),
                "search": lambda: rng.choice(SEARCH_HOSTS),
                "block": lambda: rng.choice(plan["blocked"])}[kind]()
        writer.write(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split()[1])
        if status != 200:                     # refused at CONNECT (squidGuard, the gateway)
            tally.status(kind, status, time.perf_counter() - began)
            return
        await writer.start_tls(context, server_hostname=host)
        for i in range(count):
            path = (f"/search?q={rng.choice(SEARCH_WORDS)}" if kind == "search"
                    else f"/static/{rng.randrange(10_000)}.js")
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status, keep = await read_response(reader)
            now = time.perf_counter()
            tally.status(kind, status, now - began)
            began = now
            if not keep:
                return
    finally:
        writer.close()


def _picker(weights: tuple) -> callable:
    kinds = [(k, c) for k, _, c in weights]
    cumulative, total = [], 0.0
    for _, w, _ in weights:
        total += w
        cumulative.append(total)

    def pick(rng: random.Random) -> tuple[str, int]:
        r = rng.random() * total
        for (kind, count), edge in zip(kinds, cumulative):
            if r < edge:
                return kind, count
        return kinds[-1]
    return pick


async def client_loop(port: int, concurrency: int, seconds: float, plan: dict,
                      seed: int) -> Tally:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tally = Tally()
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(session(port, rng, plan, tally, context), 30)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError,
                    IndexError, ssl.SSLError, asyncio.LimitOverrunError) as exc:
                tally.error("session", exc)
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return tally


def _client_process(args: tuple) -> dict:
    port, concurrency, seconds, allowed, blocked, seed, mix = args
    plan = {"allowed": allowed, "blocked": blocked, "pick": _picker(MIXES[mix])}
    tally = asyncio.run(client_loop(port, concurrency, seconds, plan, seed))
    return {"latencies": tally.latencies, "statuses": tally.statuses, "errors": tally.errors}


def drive(port: int, concurrency: int, seconds: float, data: MixedData, processes: int,
          seed: int, pool, mix: str = "mixed") -> dict:
    """Run the workload; {"requests", "rps", "p50_us", "p99_us", "statuses", "errors"}."""
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0)
              for i in range(processes)]
    started = time.monotonic()
    parts = pool.map(_client_process, [(port, share, seconds, data.allowed, data.blocked,
                                        seed * 10 + i, mix) for i, share in enumerate(shares)])
    elapsed = time.monotonic() - started
    latencies = sorted(x for p in parts for x in p["latencies"])
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for part in parts:
        for key, n in part["statuses"].items():
            statuses[key] = statuses.get(key, 0) + n
        for key, n in part["errors"].items():
            errors[key] = errors.get(key, 0) + n
    n = len(latencies)
    return {"requests": n, "rps": n / seconds if n else 0.0, "elapsed": elapsed,
            "p50_us": latencies[n // 2] * 1e6 if n else 0.0,
            "p99_us": latencies[min(n - 1, int(n * 0.99))] * 1e6 if n else 0.0,
            "statuses": statuses, "errors": errors}


def failures(name: str, result: dict) -> int:
    """Answers that are neither what the configuration should give nor a refusal of a
    blocked host: a filter's block of an allowed host, a 5xx, a dropped connection."""
    bad = sum(result["errors"].values())
    filtering = name in ("all", "selective", "squidguard")
    for key, n in result["statuses"].items():
        kind, _, code = key.partition(":")
        status = int(code)
        if kind == "block" and filtering:
            ok = status in (403, 302)
        elif kind == "search":
            ok = status in (200, 301, 302)
        else:
            ok = status == 200
        bad += 0 if ok else n
    return bad


# --------------------------------------------------------------------------- the run


def run_mixed(servers: dict[str, Server], data: MixedData, concurrency: int, seconds: float,
              rounds: int, processes: int, median_interval, mixes: list[str]) -> dict:
    """Every server in every round of every mix, the order reversed every other round;
    {mix: results}."""
    results = {}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        for server in servers.values():                  # warm-up: certificates, helpers
            drive(server.port, concurrency, 2.0, data, processes, 99, pool)
        for mix in mixes:
            samples: dict[str, list[dict]] = {}
            for round_ in range(rounds):
                order = list(servers.values())
                if round_ % 2:
                    order.reverse()
                for server in order:
                    cpu = server.cpu_seconds()
                    result = drive(server.port, concurrency, seconds, data, processes, round_,
                                   pool, mix)
                    used = server.cpu_seconds() - cpu
                    result["cpu_us"] = used * 1e6 / max(result["requests"], 1)
                    result["failed"] = failures(server.name, result)
                    samples.setdefault(server.name, []).append(result)
                    print(f"  {mix} c{concurrency} {server.name:10s} round {round_ + 1}: "
                          f"{result['rps']:.0f} req/s, p99 {result['p99_us'] / 1000:.1f} ms, "
                          f"{result['cpu_us']:.0f} us CPU/req, failed {result['failed']} "
                          f"(load {os.getloadavg()[0]:.2f})", flush=True)
            results[mix] = summarise(samples, median_interval)
    return results


def summarise(samples: dict[str, list[dict]], median_interval) -> dict:
    results = {}
    for name, values in samples.items():
        merged = {k: statistics.median(v[k] for v in values)
                  for k in ("rps", "p50_us", "p99_us", "cpu_us")}
        merged["failed"] = sum(v["failed"] for v in values)
        merged["statuses"] = values[-1]["statuses"]
        merged["errors"] = values[-1]["errors"]
        for base in BASELINES:
            if base not in samples:
                continue
            pairs = list(zip(values, samples[base]))
            merged[f"rps/{base}"] = median_interval([v["rps"] / b["rps"] for v, b in pairs])[0]
            merged[f"p99/{base}"] = median_interval(
                [v["p99_us"] / b["p99_us"] for v, b in pairs])[0]
            merged[f"cpu/{base}"] = median_interval(
                [v["cpu_us"] / b["cpu_us"] for v, b in pairs])[0]
        results[name] = merged
    return results


def report(results: dict, concurrency: int, mix: str) -> None:
    print(f"\n== Workload {mix}, c{concurrency} (medians over rounds; ratios: the median of "
          "each round's ratio) ==")
    print("CPU/req: the proxy's whole process tree.  x bare / x sg: ratio to bare mitmdump / "
          "to squid + squidGuard (req/s and p99: higher and lower are better; CPU/req: lower "
          "is better)")
    print("req/core-s: 1e6 / CPU/req, the requests one core would serve at that cost (what "
          "req/s would be if neither the client nor other load held it back)")
    header = (f"{'config':10s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} {'CPU/req us':>10s}"
              f" {'req/core-s':>10s}"
              f" {'req/s x bare':>12s} {'p99 x bare':>10s} {'CPU x bare':>10s}"
              f" {'req/s x sg':>10s} {'p99 x sg':>8s} {'CPU x sg':>8s} {'failed':>6s}")
    print(header)
    nan = float("nan")
    for name in CONFIGS:
        r = results.get(name)
        if r is None:
            continue
        print(f"{name:10s} {r['rps']:7.0f} {r['p50_us'] / 1000:7.1f} {r['p99_us'] / 1000:7.1f} "
              f"{r['cpu_us']:10.0f} {1e6 / r['cpu_us']:10.0f}"
              f" {r.get('rps/bare', nan):12.3f} {r.get('p99/bare', nan):10.3f}"
              f" {r.get('cpu/bare', nan):10.3f} {r.get('rps/squidguard', nan):10.3f}"
              f" {r.get('p99/squidguard', nan):8.3f} {r.get('cpu/squidguard', nan):8.3f}"
              f" {r['failed']:6d}")
    if "all" in results and "selective" in results:
        a, s = results["all"], results["selective"]
        print(f"selective / all: req/s {s['rps'] / a['rps']:.2f}x, CPU per request "
              f"{a['cpu_us'] / s['cpu_us']:.2f}x less (issue #19's target: 3x)")
    print("answers in the last round (kind:status):")
    for name in CONFIGS:
        if name in results:
            print(f"  {name:10s} {json.dumps(results[name]['statuses'], sort_keys=True)}"
                  + (f" errors {json.dumps(results[name]['errors'])}"
                     if results[name]["errors"] else ""))
