#!/usr/bin/env python3
"""Benchmark the gateway against bare mitmdump: throughput, latency, memory, start-up, reload.

    scripts/bench_proxy.py                 # the full run (~6 min on a 2-core VM)
    scripts/bench_proxy.py --quick         # 3 s runs, c16 only, no 1M list (~3 min)
    scripts/bench_proxy.py --only bare,5M --starts 5 --starts-only   # start-up alone (~2 min)
    scripts/bench_proxy.py --workloads mixed --mixes mixed,tunnels --rounds 4 --seconds 6
                                           # against squid and squidGuard (~6 min, root)

The last is the forward-proxy comparison with the peers (bare mitmdump, the gateway with
`inspect: all` and `selective`, squid, squid + squidGuard with the same 1M domains, under a
browsing mix of CONNECT tunnels, searches, plain HTTP and blocks): scripts/bench_mixed.py
says how.  A full run without --only does both when squid, squidGuard and root are there.

One run starts, side by side, a local nginx upstream and one mitmdump per configuration:

    bare      mitmdump with no add-on: the baseline every other figure is divided by
    noop      (only when --only names it) + a script add-on with two empty hooks: what
              mitmproxy's dispatch to any add-on costs
    signin    (only when --only names it) shipped, with the client on a sign_in network and
              signed in (a session in the SQLite store): what the session lookup costs
    lazy      (only when --only names it) bare mitmdump with connection_strategy=lazy, which
              the add-on sets so that a blocked site is never contacted (it opens the
              upstream early only where nothing can be blocked): what lazy alone costs
    shipped   + the webpolicy add-on with the shipped policy.yaml and blocklists
    1M, 5M    + the shipped policy plus a synthetic 1M (or 5M) domain list and 50k URL entries,
              blocked for the learner profile the benchmark client falls in

and drives each with the same wrk request set (keep-alive, one wrk thread, concurrency 16 and
64) over plain HTTP and over TLS terminated and re-encrypted by mitmproxy.  Most requests miss
every list; 4% hit a domain entry and 2% a URL entry (blocked: the add-on answers and the
request never reaches nginx), so the add-on's whole per-request path is measured, including
the safeguarding-log records of the blocks.  Over HTTPS the add-on connects to nginx during
the client's handshake (the configured upstream, and the SNI wrk sends, 127.0.0.1, can block
nothing), as bare mitmdump does.

How the traffic reaches mitmproxy.  wrk cannot send CONNECT, so mitmdump runs in reverse-proxy
mode (`--mode reverse:http://nginx` and `--mode reverse:https://nginx`, one listener each, with
`keep_host_header`), which runs the same request hooks as an explicit proxy: the add-on decides
on the Host header wrk sends (a different name per request).  The HTTPS listener does the work
of an intercepted tunnel (client TLS terminated with a generated certificate, a second TLS
connection upstream), minus the one CONNECT per connection that keep-alive amortises.  Because
the Host header names another host than the upstream address, the add-on also decides on the
upstream address (its domain-fronting check): one more lookup than real traffic needs, so the
add-on's cost is, if anything, overstated.

Also measured: each proxy's RSS (from /proc/PID/status, after its runs: anonymous memory and
mapped-file pages apart), the 5M proxy's start-up with an empty list cache (cold) and from the
compiled cache (warm), and a reload of the 5M policy (a list source edited, so everything is
recompiled): once with only a probe client (a request every 5 ms; the longest reply is the
longest stall) and once under the c16 load, reporting failed requests and the latency spread.

Needs wrk and nginx (Debian: `apt-get install wrk nginx-light`) and openssl; the script says
what is missing.  The synthetic lists are generated once into the work directory (--workdir)
and reused.  Figures depend on the machine's other load: the load average is printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import bench_mixed  # noqa: E402
from bench_index import TLDS, Labels, prefixed, synth_domains  # noqa: E402

SHIM = REPO / "addons" / "webpolicy_addon.py"
URL_ENTRIES = 50_000
REQUESTS = 4_000                 # distinct requests in the wrk request set (file name: v2)
HIT_DOMAIN, HIT_URL, URL_HOST_MISS = 0.04, 0.02, 0.02
BODY = "x" * 1024                # the upstream's answer: 1 KB

WRK_LUA = r"""
-- Requests from a file of "host path" lines, each thread starting at its own offset.
-- Counts answers by status so blocks (403) and failures (5xx) can be told apart.
local requests, threads = {}, {}
counts = {}          -- global: done() reads it from each thread
local i = 0
function setup(thread) table.insert(threads, thread) end
function init(args)
  for line in io.lines(args[1]) do
    local host, path = line:match("^(%S+) (%S+)$")
    requests[#requests + 1] = wrk.format("GET", path, {Host = host})
  end
  i = math.random(#requests)
end
function request()
  i = i % #requests + 1
  return requests[i]
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local statuses = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      statuses[tostring(status)] = (statuses[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(statuses) do parts[#parts + 1] = string.format('"%s": %d', status, n) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
"""

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    default_type text/html;
    server {{
        listen {address}:{http_port};
        listen {address}:{https_port} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        location / {{ return 200 "{body}"; }}
    }}
}}
"""


# --------------------------------------------------------------------------- tools


def missing_tools() -> list[str]:
    """What this script needs and cannot find, as Debian package names."""
    need = []
    if not shutil.which("wrk"):
        need.append("wrk")
    if not nginx_path():
        need.append("nginx-light")
    if not shutil.which("openssl"):
        need.append("openssl")
    return need


def nginx_path() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def mitmdump_path() -> str:
    found = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or shutil.which("mitmdump")
    if not found:
        raise SystemExit("mitmdump not found next to this Python (run scripts/setup.sh)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen | None, sig: int, timeout: float) -> None:
    """Ask a server to stop; kill it if it has not within `timeout` seconds; reap it."""
    if process and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_listening(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Nginx:
    """The upstream: one worker, a 1 KB answer to every request, plain and TLS listeners."""

    def __init__(self, directory: Path, address: str = "127.0.0.1",
                 ports: tuple[int, int] | None = None) -> None:
        self.dir, self.address = directory, address
        self.http_port, self.https_port = ports or (free_port(), free_port())
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
                        "-days", "2", "-keyout", str(self.dir / "key.pem"),
                        "-out", str(self.dir / "cert.pem")], check=True, capture_output=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, address=self.address, body=BODY,
                                          http_port=self.http_port, https_port=self.https_port))
        self.process = subprocess.Popen([nginx_path(), "-p", str(self.dir), "-c", str(conf),
                                         "-e", str(self.dir / "error.log")])
        wait_listening(self.http_port, host=self.address)
        wait_listening(self.https_port, host=self.address)
        return self

    def stop(self) -> None:
        stop_process(self.process, signal.SIGQUIT, 10)         # nginx: graceful shutdown


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """Synthetic lists and the request set, generated once into the work directory."""

    directory: Path
    big: int
    domains_1m: Path = field(init=False)
    domains_big: Path = field(init=False)
    urls: Path = field(init=False)
    requests: Path = field(init=False)

    def __post_init__(self) -> None:
        d = self.directory
        self.domains_1m = d / "synth-1000000.txt"
        self.domains_big = d / f"synth-{self.big}.txt"
        self.urls = d / f"synth-urls-{URL_ENTRIES}.txt"
        self.requests = d / f"requests-{REQUESTS}-v2.txt"

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.domains_1m.exists():
            say(f"generating {self.domains_1m.name} ...")
            _write_lines(self.domains_1m, synth_domains(1_000_000, seed=1))
        if self.big > 1_000_000 and not self.domains_big.exists():
            # The big list is one file (as UT1's adult list is): the 1M list plus more names.
            say(f"generating {self.domains_big.name} ...")
            more = synth_domains(self.big - 1_000_000, seed=7)
            tmp = self.domains_big.with_suffix(".tmp")
            shutil.copyfile(self.domains_1m, tmp)
            with open(tmp, "a") as out:
                out.write("\n".join(more) + "\n")
            tmp.rename(self.domains_big)
        if not self.urls.exists():
            _write_lines(self.urls, synth_urls(URL_ENTRIES))
        if not self.requests.exists():
            say("generating the request set ...")
            self.requests.write_text(request_set(self.domains_1m, self.urls))


def _write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(path)


def synth_urls(n: int, seed: int = 3) -> list[str]:
    """URL-list entries (host/path prefix), as UT1 `urls` and CTIRU-style lists hold."""
    rng = random.Random(seed)
    label = Labels(rng)
    return [f"{label()}.{rng.choice(TLDS)}/{label()}/{label()}" for _ in range(n)]


def request_set(domains_file: Path, urls_file: Path, seed: int = 4) -> str:
    """"host path" lines: mostly misses (a quarter of them under a listed name's parent, so
    lookups walk past the registrable level), 4% subdomains of listed domains, 2% URL-entry
    hits, 2% URL-entry hosts with another path (a miss after the path check)."""
    rng = random.Random(seed)
    label = Labels(rng)
    domains = domains_file.read_text().split()
    urls = urls_file.read_text().split()
    parents = [d.partition(".")[2] for d in domains[-len(domains) // 4:] if d.count(".") >= 2]
    listed = set(domains)
    lines = []
    for _ in range(REQUESTS):
        r = rng.random()
        if r < HIT_DOMAIN:
            host, path = prefixed(rng.choice(domains), rng, label), f"/{label()}"
        elif r < HIT_DOMAIN + HIT_URL:
            host, _, path = rng.choice(urls).partition("/")
            path = f"/{path}/{label()}.html"
        elif r < HIT_DOMAIN + HIT_URL + URL_HOST_MISS:
            host, path = rng.choice(urls).partition("/")[0], f"/{label()}/"
        else:
            host, path = _miss(rng, label, parents, listed), f"/{label()}/{label()}.html"
        lines.append(f"{host} {path}")
    return "\n".join(lines) + "\n"


def _miss(rng: random.Random, label: Labels, parents: list[str], listed: set[str]) -> str:
    """A host on no list (checked against the 1M list; the other lists' random names are
    as good as certain to differ)."""
    while True:
        base = f"{label()}.{rng.choice(parents)}" if rng.random() < 0.25 else \
            f"{label()}.{rng.choice(TLDS)}"
        host = prefixed(base, rng, label)
        labels = host.split(".")
        if not any(".".join(labels[i:]) in listed for i in range(len(labels))):
            return host


# --------------------------------------------------------------------------- proxies


@dataclass
class Config:
    name: str
    addon: bool
    extra_lists: dict[str, Path] = field(default_factory=dict)   # list name -> source
    script: str | None = None        # another script add-on's source (the noop baseline)
    options: list[str] = field(default_factory=list)   # more mitmdump --set options
    sign_in: bool = False            # the client is identified by a sign-in page session


NOOP_ADDON = """\
class Noop:
    def requestheaders(self, flow):
        pass

    def request(self, flow):
        pass


addons = [Noop()]
"""


@dataclass
class Proxy:
    config: Config
    directory: Path
    upstream: Nginx
    cache_dir: Path
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    policy_path: Path | None = None
    start_seconds: float = 0.0

    def write_policy(self, extra_source: Path) -> None:
        """The shipped policy.yaml, its lists, plus the synthetic lists blocked for learners."""
        self.directory.mkdir(parents=True, exist_ok=True)
        policy = yaml.safe_load((REPO / "policy.yaml").read_text())
        link = self.directory / "blocklists"
        if not link.exists():
            link.symlink_to(REPO / "blocklists")
        policy["logging"]["directory"] = str(self.directory / "logs")
        policy["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
        for name, source in self.config.extra_lists.items():
            sources = [str(source)] + ([str(extra_source)] if name == "synthetic" else [])
            policy["lists"][name] = {"category": f"Synthetic {name}", "severity": "medium",
                                     "format": "urls" if "url" in name else "domains",
                                     "sources": sources}
            policy["profiles"][policy["default_profile"]]["block"].append(name)
        if self.config.sign_in:
            self._sign_in(policy)
        self.policy_path = self.directory / "policy.yaml"
        self.policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))

    def _sign_in(self, policy: dict) -> None:
        """The benchmark client's address must sign in (sign_in.networks) and has signed in:
        a session is put in the store before the proxy starts, so every request is looked
        up (from memory, from SQLite every 2 s) and nothing asks the directory, which is
        named but never contacted."""
        sys.path.insert(0, str(REPO / "addons"))
        from webpolicy.identity.sessions import SessionStore
        policy["directory"] = {"url": "ldap://127.0.0.1:9", "base_dn": "dc=bench"}
        policy["sign_in"] = {"networks": ["127.0.0.1/32"], "idle": "8h", "max": "8h"}
        store = SessionStore(Path(policy["logging"]["directory"]) / "sign-in-sessions.sqlite3")
        store.start("127.0.0.1", "bench-person")
        store.close()

    def command(self) -> list[str]:
        up = self.upstream
        cmd = [mitmdump_path(), "--listen-host", "127.0.0.1",
               "--mode", f"reverse:http://127.0.0.1:{up.http_port}@{self.http_port}",
               "--mode", f"reverse:https://127.0.0.1:{up.https_port}@{self.https_port}",
               "--set", "keep_host_header=true", "--set", "ssl_insecure=true",
               "--set", "flow_detail=0", "--set", f"confdir={self.directory.parent / 'confdir'}"]
        for option in self.config.options:
            cmd += ["--set", option]
        if self.config.script is not None:
            script = self.directory / "script_addon.py"
            script.write_text(self.config.script)
            cmd += ["-s", str(script)]
        if self.config.addon:
            cmd += ["-s", str(SHIM), "--set", f"webpolicy_policy={self.policy_path}",
                    "--set", "webpolicy_reload_interval=0.5",
                    "--set", f"webpolicy_cache_dir={self.cache_dir}"]
        return cmd

    def start(self, timeout: float = 120.0) -> float:
        """Start mitmdump; seconds until it answered its first proxied request."""
        log = open(self.directory / "mitmdump.log", "ab")
        started = time.monotonic()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.directory)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.config.name}: mitmdump exited "
                                   f"({self.process.returncode}); see {log.name}")
            if fetch(self.http_port, "startup.bench.test", "/") is not None:
                self.start_seconds = time.monotonic() - started
                return self.start_seconds
            time.sleep(0.01)
        raise RuntimeError(f"{self.config.name}: mitmdump did not answer within {timeout:g} s")

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, 20)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the proxy process has used so far, all threads."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, int]:
        """VmRSS, RssAnon and RssFile in kB (RssFile: the mapped list index, among others),
        and the size of the newest compiled index file."""
        found = {}
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    found[key] = int(value.split()[0])
        indexes = sorted(self.cache_dir.glob("*.wpidx"), key=lambda p: p.stat().st_mtime)
        found["index_kb"] = indexes[-1].stat().st_size // 1024 if indexes else 0
        return found


def fetch(port: int, host: str, path: str, timeout: float = 5.0) -> int | None:
    """One request on a new connection; its status, or None if the proxy did not answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path, headers={"Host": host})
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


# --------------------------------------------------------------------------- runs


def wrk(url: str, connections: int, seconds: float, lua: Path, requests: Path,
        threads: int = 1) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                          "--timeout", "10s", "-s", str(lua), url, "--", str(requests)],
                         capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result = json.loads(line[8:])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            result["failed"] = sum(result["errors"].values()) + sum(
                n for status, n in result["statuses"].items() if status not in ("200", "403"))
            return result
    raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")


class Probe(threading.Thread):
    """Sends one request every `interval` s on a keep-alive connection and times each: the
    longest reply is the longest time the proxy did not serve (its event loop stalled)."""

    def __init__(self, port: int, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.samples: list[tuple[float, float]] = []     # (sent at, seconds)
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = None
        while not self._stop_event.is_set():
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/probe", headers={"Host": "probe.bench.test"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures.append(f"status {response.status}")
                self.samples.append((sent, time.monotonic() - sent))
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn = None
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - sent)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def longest(self, since: float = 0.0, until: float = float("inf")) -> float:
        return max((s for t, s in self.samples if since <= t <= until), default=0.0)

    def percentile(self, q: float) -> float:
        values = sorted(s for _, s in self.samples)
        return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0


def trigger_reload(extra_source: Path) -> str:
    """Edit a source of the big list (a new domain): the list is recompiled from scratch."""
    marker = f"reload-{int(time.time() * 1000)}.bench.test"
    extra_source.write_text(f"{marker}\n")
    return marker


def wait_blocked(port: int, host: str, timeout: float = 120.0) -> float:
    """Seconds until a request for `host` is blocked (403).  One keep-alive connection,
    polled every 0.1 s: a new connection every few ms would load the proxy whose stalls the
    probe is timing."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        while time.monotonic() - started < timeout:
            try:
                conn.request("GET", "/", headers={"Host": host})
                response = conn.getresponse()
                response.read()
                if response.status == 403:
                    return time.monotonic() - started
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            time.sleep(0.1)
    finally:
        conn.close()
    raise RuntimeError(f"{host} not blocked {timeout}s after the reload began")


# --------------------------------------------------------------------------- report


def say(text: str) -> None:
    print(text, flush=True)


def ms(us: float) -> str:
    return f"{us / 1000:.1f}"


def report_throughput(results: dict, names: list[str], memory: dict, sizes: dict) -> None:
    say("\n== Throughput and latency (medians over rounds; ratios: configuration / bare) ==")
    say("CPU/req: the proxy's CPU time per request (all threads); capacity = bare's CPU/req /")
    say("this one's, the req/s ratio a saturated proxy would show without the machine's noise.")
    say("ratios and capacity: the median over rounds of each round's ratio to that round's bare")
    say("(with 8 rounds or more, and a 95% confidence interval of that median).")
    say(f"{'run':10s} {'config':8s} {'req/s':>7s} {'ratio':>6s} {'p50 ms':>7s} {'p99 ms':>7s}"
        f" {'p99 ratio':>9s} {'CPU/req us':>10s} {'capacity':>8s} {'failed':>6s}")
    for run in sorted({run for run, _ in results}):
        base = results.get((run, "bare"))
        for name in names:
            r = results.get((run, name))
            if r is None:
                continue
            nan = float("nan")
            ratio = r.get("ratio", nan)
            p99_ratio = r.get("p99_ratio", nan)
            capacity = r.get("capacity", nan)
            say(f"{run:10s} {name:8s} {r['rps']:7.0f} {ratio:6.3f} {ms(r['p50_us']):>7s} "
                f"{ms(r['p99_us']):>7s} {p99_ratio:9.3f} {r['cpu_us']:10.0f} {capacity:8.3f} "
                f"{r['failed']:6d}")
            for key, label in (("ratio_ci", "req/s ratio"), ("p99_ratio_ci", "p99 ratio"),
                               ("capacity_ci", "capacity")):
                if r.get(key) and name != "bare":
                    say(f"{'':19s} {label} 95% confidence interval of the median: "
                        f"{r[key][0]:.3f}-{r[key][1]:.3f}")
    say("\n== Proxy memory after the runs (kB; growth over the shipped policy) ==")
    say("RssFile: pages of mapped files, mostly the list index (shared with the page cache);")
    say("RssAnon: Python objects, including the 50k URL entries.  file: the index on disk, what")
    say("RssFile grows to once every page of it has been looked at.")
    say(f"{'config':8s} {'VmRSS':>8s} {'RssAnon':>8s} {'RssFile':>8s} {'growth':>8s} "
        f"{'anon +':>8s} {'file +':>8s} {'index file':>10s} {'MB per M domains':>17s}")
    base = memory.get("shipped")
    for name in names:
        m = memory.get(name)
        if not m:
            continue
        row = f"{name:8s} {m['VmRSS']:8d} {m['RssAnon']:8d} {m['RssFile']:8d}"
        if base and name in sizes:
            grow = {k: m[k] - base[k] for k in m}
            millions = sizes[name] / 1e6
            row += (f" {grow['VmRSS']:8d} {grow['RssAnon']:8d} {grow['RssFile']:8d} "
                    f"{m['index_kb']:10d} {grow['VmRSS'] / 1024 / millions:17.1f}")
        say(row)


def _median_result(samples: list[dict]) -> dict:
    """Per-field median of several wrk results (failures summed: one is one too many)."""
    merged = {k: statistics.median(s[k] for s in samples)
              for k in ("rps", "p50_us", "p99_us", "max_us", "cpu_us")}
    merged["failed"] = sum(s["failed"] for s in samples)
    return merged


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="3 s runs, concurrency 16 only, no 1M configuration")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every run this many times, interleaved; report medians")
    parser.add_argument("--big", type=int, default=5_000_000,
                        help="entries in the big synthetic list (default 5000000)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "webpolicy-bench",
                        help="where synthetic lists are kept between runs")
    parser.add_argument("--only",
                        help="comma-separated configurations "
                             "(bare,noop,lazy,shipped,signin,1M,5M)")
    parser.add_argument("--skip-reload", action="store_true")
    parser.add_argument("--starts", type=int, default=1,
                        help="time the big configuration's cold and warm start this many times, "
                             "each beside a restart of bare (report every one and the medians)")
    parser.add_argument("--starts-only", action="store_true",
                        help="only the start-up times: no load runs, no reload")
    parser.add_argument("--reloads", type=int, default=1,
                        help="probe-only reloads to time (the longest stall of each; on a noisy "
                             "machine one is not enough)")
    parser.add_argument("--workloads",
                        help="wrk (the reverse-proxy runs above, gateway vs bare mitmdump), "
                             "mixed (forward proxy, CONNECT, against squid and squidGuard: "
                             "scripts/bench_mixed.py); default both, but only wrk with --only "
                             "or --starts-only, and mixed only where squid, squidGuard and "
                             "root are there")
    parser.add_argument("--mixed-only",
                        help="comma-separated mixed-workload configurations "
                             f"({','.join(bench_mixed.CONFIGS)}; default all)")
    parser.add_argument("--mixes", default="mixed",
                        help="forward-proxy workloads: mixed (browsing: mostly HTTPS tunnels, "
                             "searches, plain HTTP, a few blocks), tunnels (only HTTPS to "
                             "allowed hosts); comma-separated (default mixed)")
    parser.add_argument("--mixed-concurrency", type=int, default=32,
                        help="client connections of the mixed workload (default 32)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="load-generator processes of the mixed workload (default 2)")
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway processes in the mixed workload: > 1 passes --workers N "
                             "to `webpolicy run` (issue #19's workers)")
    args = parser.parse_args(argv)
    chosen = args.workloads or ("wrk" if args.only or args.starts_only else "wrk,mixed")
    workloads = set(chosen.split(","))
    mixed_names = (args.mixed_only.split(",") if args.mixed_only
                   else list(bench_mixed.CONFIGS)) if "mixed" in workloads else []
    mixed_need = bench_mixed.missing_tools(mixed_names)
    if mixed_names and not args.workloads and (mixed_need or os.geteuid() != 0):
        say(f"skipping the mixed workload (it needs root and {' and '.join(mixed_need) or 'squid'}"
            "; --workloads mixed to insist)")
        workloads.discard("mixed")
        mixed_names, mixed_need = [], []
    need = missing_tools() + mixed_need
    if need:
        say(f"missing: {', '.join(need)}.  On Debian: apt-get install {' '.join(need)}")
        return 2
    if mixed_names and os.geteuid() != 0:
        say("the mixed workload needs root: mitmdump resolves its host names through a hosts "
            "file bind-mounted in a mount namespace (or use --workloads wrk)")
        return 2
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    concurrencies = [16] if args.quick else [16, 64]
    big_name = f"{args.big // 1_000_000}M" if args.big % 1_000_000 == 0 else str(args.big)
    say(f"webpolicy proxy benchmark: {os.cpu_count()} CPUs, load average {load_average()}, "
        f"{seconds:g} s per run, {args.rounds} round(s)")
    data = Data(args.workdir, args.big if "wrk" in workloads else 1_000_000)
    data.prepare()
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    extra_source = run_dir / "synth-extra.txt"
    extra_source.write_text("initial.bench.test\n")
    configs = [Config("bare", False), Config("shipped", True)]
    if not args.quick:
        configs.append(Config("1M", True, {"synthetic": data.domains_1m, "synth_urls": data.urls}))
    configs.append(Config(big_name, True, {"synthetic": data.domains_big, "synth_urls": data.urls}))
    if args.only:
        wanted = args.only.split(",")
        configs[1:1] = [Config("noop", False, script=NOOP_ADDON),
                        Config("lazy", False, options=["connection_strategy=lazy"])]
        configs.append(Config("signin", True, sign_in=True))
        configs = [c for c in configs if c.name in wanted]
    sizes = {"1M": 1_000_000, big_name: args.big}
    if "wrk" not in workloads:
        configs = []
    if mixed_names and not configs:
        mixed_workload(args, data, run_dir, mixed_names, seconds)
        say(f"\nload average at the end: {load_average()}")
        return 0
    upstream = Nginx(run_dir / "nginx").start()
    lua = run_dir / "requests.lua"
    lua.write_text(WRK_LUA)
    proxies: dict[str, Proxy] = {}
    try:
        for config in configs:
            proxy = Proxy(config, run_dir / config.name, upstream, run_dir / "cache" / config.name)
            proxy.write_policy(extra_source)
            seconds_to_start = proxy.start()
            say(f"started {config.name}: first answer after {seconds_to_start:.2f} s")
            if config.sign_in:            # signed in: the page asked for, not the sign-in page
                status = fetch(proxy.http_port, "startup.bench.test", "/")
                if status in (302, 511):
                    raise RuntimeError(f"signin: the client is not signed in ({status})")
            proxies[config.name] = proxy
        starts = {}
        if big_name in proxies and (args.starts_only or not args.skip_reload):
            starts = start_times(proxies[big_name], proxies.get("bare"), args.starts)
        if not args.starts_only:
            results = run_load(proxies, concurrencies, seconds, args.rounds, lua, data.requests)
            memory = {name: p.memory() for name, p in proxies.items()}
            report_throughput(results, [c.name for c in configs], memory, sizes)
        if starts:
            say(f"\n== Start-up of the {big_name} configuration (to the first proxied answer) ==")
            for kind in ("bare", "cold", "warm"):
                if starts[kind]:
                    times = ", ".join(f"{t:.2f}" for t in starts[kind])
                    say(f"{kind:>5}: median {statistics.median(starts[kind]):.2f} s  ({times})")
            say("bare: mitmdump alone; cold: empty list cache; warm: compiled cache")
        if big_name in proxies and not args.skip_reload and not args.starts_only:
            reload_runs(proxies[big_name], proxies.get("bare"), extra_source, seconds, lua,
                        data.requests, args.reloads)
    finally:
        for proxy in proxies.values():
            proxy.stop()
        upstream.stop()
    if mixed_names:
        mixed_workload(args, data, run_dir, mixed_names, seconds)
    say(f"\nload average at the end: {load_average()}")
    return 0


def mixed_policy(directory: Path, domains: Path, inspect: str) -> Path:
    """The shipped policy with the 1M list blocked for learners (the client's profile)."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = yaml.safe_load((REPO / "policy.yaml").read_text())
    link = directory / "blocklists"
    if not link.exists():
        link.symlink_to(REPO / "blocklists")
    policy["logging"]["directory"] = str(directory / "logs")
    policy["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
    policy["lists"]["synthetic"] = {"category": "Synthetic", "severity": "medium",
                                    "format": "domains", "sources": [str(domains)]}
    policy["profiles"][policy["default_profile"]]["block"].append("synthetic")
    policy["tls"] = {"inspect": inspect}
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def mixed_workload(args, data: Data, run_dir: Path, names: list[str], seconds: float) -> None:
    """bare mitmdump, the gateway (inspect all, selective), squid and squid + squidGuard as
    forward proxies under the mixed workload (scripts/bench_mixed.py), interleaved."""
    run_dir.chmod(0o755)                 # squid runs as its own user (Debian: proxy)
    mixed = bench_mixed.MixedData(run_dir / "mixed", data.domains_1m, data.directory)
    mixed.directory.mkdir(parents=True, exist_ok=True)
    mixed.prepare()
    upstream = Nginx(run_dir / "mixed-nginx", bench_mixed.UPSTREAM_ADDR, (80, 443)).start()
    webpolicy = str(Path(sys.executable).parent / "webpolicy")
    confdir = run_dir / "mixed-confdir"
    servers: dict[str, bench_mixed.Server] = {}
    try:
        for name in names:
            directory = run_dir / f"mixed-{name}"
            port = free_port()
            if name == "bare":
                command = bench_mixed.in_hosts_namespace(mixed.hosts, [
                    mitmdump_path(), "--listen-host", "127.0.0.1", "--listen-port", str(port),
                    "--set", "ssl_insecure=true", "--set", "flow_detail=0",
                    "--set", f"confdir={confdir}"])
                server = bench_mixed.Server(name, directory, command, port)
            elif name in ("all", "selective"):
                policy = mixed_policy(directory, data.domains_1m, name)
                command = bench_mixed.in_hosts_namespace(mixed.hosts, bench_mixed.gateway_command(
                    webpolicy, policy, port, confdir, run_dir / "cache" / "mixed",
                    args.workers))
                server = bench_mixed.Server(name, directory, command, port)
            else:
                db = mixed.squidguard_db() if name == "squidguard" else None
                server = bench_mixed.squid_server(name, directory, mixed.hosts, port, db)
            say(f"started {name}: answering after {server.start():.2f} s")
            servers[name] = server
        mixes = args.mixes.split(",")
        results = bench_mixed.run_mixed(servers, mixed, args.mixed_concurrency, seconds,
                                        args.rounds, args.client_processes, median_interval,
                                        mixes)
        for mix in mixes:
            bench_mixed.report(results[mix], args.mixed_concurrency, mix)
    finally:
        for server in servers.values():
            server.stop()
        upstream.stop()


def start_times(proxy: Proxy, bare: Proxy | None, rounds: int) -> dict[str, list[float]]:
    """Restart the big configuration, rounds times: with an emptied cache (cold), then
    warm; and bare mitmdump beside each, so that its own start-up is measured alike."""
    times: dict[str, list[float]] = {"bare": [], "cold": [], "warm": []}
    for _ in range(rounds):
        if bare is not None:
            bare.stop()
            times["bare"].append(bare.start())
        proxy.stop()
        shutil.rmtree(proxy.cache_dir, ignore_errors=True)
        times["cold"].append(proxy.start())
        proxy.stop()
        times["warm"].append(proxy.start())
    return times


def run_load(proxies: dict[str, Proxy], concurrencies: list[int], seconds: float, rounds: int,
             lua: Path, requests: Path) -> dict:
    """Every (scheme, concurrency) against every proxy, configurations interleaved."""
    samples: dict[tuple[str, str], list[dict]] = {}
    for scheme in ("http", "https"):
        for proxy in proxies.values():           # warm-up: imports, certificates, caches
            port = proxy.http_port if scheme == "http" else proxy.https_port
            wrk(f"{scheme}://127.0.0.1:{port}/", 16, 2, lua, requests)
        for connections in concurrencies:
            run = f"{scheme} c{connections}"
            for round_ in range(rounds):
                order = list(proxies.items())     # reversed every other round: a drift in
                if round_ % 2:                    # the machine's speed favours no one
                    order.reverse()
                for name, proxy in order:
                    port = proxy.http_port if scheme == "http" else proxy.https_port
                    cpu = proxy.cpu_seconds()
                    result = wrk(f"{scheme}://127.0.0.1:{port}/", connections, seconds, lua,
                                 requests)
                    result["cpu_us"] = (proxy.cpu_seconds() - cpu) * 1e6 / result["requests"]
                    samples.setdefault((run, name), []).append(result)
                    say(f"  {run} {name:8s} round {round_ + 1}: {result['rps']:.0f} req/s, "
                        f"p99 {ms(result['p99_us'])} ms, {result['cpu_us']:.0f} us CPU/req, "
                        f"failed {result['failed']} (load {os.getloadavg()[0]:.2f})")
    results = {key: _median_result(values) for key, values in samples.items()}
    for (run, name), values in samples.items():
        base = samples.get((run, "bare"))
        if base:        # the same round's bare run: a drift in the machine's speed cancels out
            result = results[(run, name)]
            result["ratio"], result["ratio_ci"] = median_interval(
                [v["rps"] / b["rps"] for v, b in zip(values, base)])
            result["capacity"], result["capacity_ci"] = median_interval(
                [b["cpu_us"] / v["cpu_us"] for v, b in zip(values, base)])
            result["p99_ratio"], result["p99_ratio_ci"] = median_interval(
                [v["p99_us"] / b["p99_us"] for v, b in zip(values, base)])
    return results


def median_interval(values: list[float]) -> tuple[float, tuple[float, float] | None]:
    """The median and a distribution-free 95% confidence interval for it (the order
    statistics the binomial distribution gives, normal approximation); None under 8 values.
    On a VM whose speed swings by 20-50% between runs, one run's ratio says little: the
    interval says how far the median of many can be trusted."""
    ordered = sorted(values)
    n = len(ordered)
    median = statistics.median(ordered)
    if n < 8:
        return median, None
    half_width = 0.98 * n ** 0.5               # 1.96 standard deviations of Binomial(n, 1/2)
    low, high = int(n / 2 - half_width), int(n / 2 + half_width + 1)
    return median, (ordered[max(low - 1, 0)], ordered[min(high - 1, n - 1)])


def quiet_probe(proxy: Proxy, seconds: float = 3.0) -> Probe:
    """The probe alone for a while: how long replies take when nothing else happens."""
    probe = Probe(proxy.http_port)
    probe.start()
    time.sleep(seconds)
    probe.stop()
    return probe


def reload_runs(proxy: Proxy, bare: Proxy | None, extra_source: Path, seconds: float,
                lua: Path, requests: Path, reloads: int = 1) -> None:
    say(f"\n== Reload of the {proxy.config.name} policy (a list source edited: full recompile) ==")
    say("probe: one request every 5 ms on a keep-alive connection; its longest reply is the")
    say("longest time the proxy's event loop did not serve it.")
    for name, quiet in (("bare", bare), (proxy.config.name, proxy)):
        if quiet is not None:
            probe = quiet_probe(quiet)
            say(f"no reload, {name:8s}: longest probe reply {probe.longest() * 1000:.1f} ms, "
                f"p99 {probe.percentile(0.99) * 1000:.1f} ms ({len(probe.samples)} requests)")
    stalls = []
    for attempt in range(reloads):
        probe = Probe(proxy.http_port)
        probe.start()
        time.sleep(1.0)
        began = time.monotonic()
        marker = trigger_reload(extra_source)
        took = wait_blocked(proxy.http_port, marker)
        time.sleep(0.5)
        probe.stop()
        stalls.append(probe.longest(began))
        say(f"reload {attempt + 1}, probe only: new entry blocking {took:.2f} s after the edit; "
            f"longest probe reply {probe.longest(began) * 1000:.1f} ms, p99 "
            f"{probe.percentile(0.99) * 1000:.1f} ms; failed probe requests: "
            f"{len(probe.failures)} {probe.failures[:3]}")
    if reloads > 1:
        say(f"longest probe reply over {reloads} reloads: median "
            f"{statistics.median(stalls) * 1000:.1f} ms, worst {max(stalls) * 1000:.1f} ms")

    # The same under load, against a run of the same length without a reload.
    url = f"http://127.0.0.1:{proxy.http_port}/"
    length = max(seconds, 15.0)
    steady = wrk(url, 16, length, lua, requests)
    probe = Probe(proxy.http_port)
    probe.start()
    done: dict = {}
    runner = threading.Thread(target=lambda: done.update(wrk(url, 16, length, lua, requests)))
    runner.start()
    time.sleep(2.0)
    began = time.monotonic()
    marker = trigger_reload(extra_source)
    took = wait_blocked(proxy.http_port, marker)
    runner.join()
    probe.stop()
    say(f"reload under c16 load ({length:g} s wrk runs): new entry blocking {took:.2f} s after "
        f"the edit; without a reload {steady['rps']:.0f} req/s, p99 {ms(steady['p99_us'])} ms, "
        f"max {ms(steady['max_us'])} ms; with one {done['rps']:.0f} req/s, p99 "
        f"{ms(done['p99_us'])} ms, max {ms(done['max_us'])} ms; failed requests: wrk "
        f"{done['failed']}, probe {len(probe.failures)}; longest probe reply during the reload "
        f"{probe.longest(began, began + took) * 1000:.1f} ms (p99 of the whole run "
        f"{probe.percentile(0.99) * 1000:.1f} ms)")


if __name__ == "__main__":
    sys.exit(main())
