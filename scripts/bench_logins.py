#!/usr/bin/env python3
"""Benchmark proxy logins: plain-HTTP requests per second through the explicit proxy with
logins, as ratios of the same proxy without logins, measured side by side in one run.

    scripts/bench_logins.py              # ~2 min on a 2-core VM
    scripts/bench_logins.py --seconds 3 --rounds 1     # a quick look

Configurations, each a real mitmdump with the webpolicy add-on and the same small policy, an
explicit proxy (`regular` mode: logins exist only there), in front of one local nginx:

    bare          mitmdump without the add-on, for scale only (not a ratio's base)
    none          no login: the baseline every other figure is divided by
    directory     policy.yaml `directory:` logins against a real slapd (tests/e2e/ldapserver.py,
                  started here on loopback), the login cache warm: every request carries the
                  Basic header, as plain HTTP does, and is answered from the cache
    htpasswd      `directory: {htpasswd: FILE}` with bcrypt cost 10 entries, through the same
                  cached path (a bcrypt check per person per cache_minutes)
    proxyauth     (with --proxyauth) mitmproxy's own `--proxyauth @FILE` on the same bcrypt-10
                  file, which checks the hash on every request on the event loop: the figure
                  the deployment guide warned about (about 18 requests/s)

`--micro` instead times, in this process, what a cached login adds to each request: the
add-on's sign-in step on a request carrying a login checked before (header removed, Basic
decoded, throttle and cache asked, the user put on the flow), against the same step on a
request that needs no login.

wrk (one thread, keep-alive, concurrency 16) sends absolute-form requests
(`GET http://127.0.0.1:PORT/...`), as a browser does to an explicit proxy; each run is
repeated `--rounds` times, the configurations interleaved, and the median is reported.  Needs
wrk, nginx and slapd (scripts/install-system-deps.sh; bench_proxy.py says how for nginx).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))
from bench_proxy import (  # noqa: E402
    SHIM, Nginx, free_port, load_average, missing_tools, mitmdump_path, say, stop_process,
    wait_listening,
)

from tests.e2e.ldapserver import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, LdapServer  # noqa: E402

USER = "pat"                       # a learner: the same profile as the baseline's client
PASSWORD = PEOPLE[USER][0]
PASSWORD_ENV = "WEBPOLICY_BENCH_LDAP_PASSWORD"
PATHS = 512

POLICY = """\
version: "bench-logins"
default_profile: learner
profiles:
  learner: {{block: [gambling]}}
  staff: {{block: [], on_error: allow}}
lists:
  gambling: {{category: Gambling, severity: medium, format: domains, sources: [gambling.txt]}}
logging: {{directory: {logs}, retention_days: 30}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
{logins}"""
DIRECTORY = """\
directory:
  url: {url}
  base_dn: ou=people,dc=test
  user_filter: "(&(objectClass=inetOrgPerson)(uid={{user}}))"
  bind_dn: {service_dn}
  bind_password_env: {env}
  group_base_dn: ou=groups,dc=test
  cache_minutes: 60
"""
HTPASSWD = """\
directory:
  htpasswd: {path}
  cache_minutes: 60
"""

LUA = r"""
-- absolute-form GETs to the upstream through the explicit proxy, with an optional login
local requests = {}
local i = 0
function init(args)
  local headers = {Host = args[2]}
  if args[3] ~= "" then headers["Proxy-Authorization"] = args[3] end
  for n = 1, tonumber(args[4]) do
    requests[n] = wrk.format("GET", "http://" .. args[2] .. "/p" .. n .. "/" .. args[1], headers)
  end
  i = math.random(#requests)
end
function request()
  i = i % #requests + 1
  return requests[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKRESULT %d %d %d %d %d\n', summary.requests, summary.duration,
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Proxy:
    name: str
    directory: Path
    logins: str = ""                        # the policy's directory: section
    extra: list[str] = field(default_factory=list)
    login: str = ""                         # the Proxy-Authorization value wrk sends
    addon: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> Proxy:
        self.directory.mkdir(parents=True)
        (self.directory / "gambling.txt").write_text("gambling.bench.test\n")
        policy = self.directory / "policy.yaml"
        policy.write_text(POLICY.format(logs=self.directory / "logs", metrics_port=free_port(),
                                        logins=self.logins))
        command = [mitmdump_path(), "--listen-host", "127.0.0.1", "--listen-port",
                   str(self.port), "--set", "flow_detail=0",
                   "--set", f"confdir={self.directory / 'confdir'}", *self.extra]
        if self.addon:
            command += ["-s", str(SHIM), "--set", f"webpolicy_policy={policy}",
                        "--set", f"webpolicy_cache_dir={self.directory / 'cache'}",
                        # the upstream is on loopback: not "the gateway itself" here
                        "--set", "webpolicy_own_networks=127.0.0.99/32"]
        with open(self.directory / "mitmdump.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=self.directory)
        wait_listening(self.port, 60)
        return self

    def stop(self) -> None:
        stop_process(self.process, 15, 20)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the proxy has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(proxy: Proxy, upstream: str, seconds: int, lua: Path) -> tuple[float, float, int, float]:
    """(requests/s, p99 ms, failed requests, requests per CPU-second of the proxy).  The last
    is steadier than requests/s when other work shares the machine's cores."""
    cpu = proxy.cpu_seconds()
    done = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", "--timeout", "10s",
                           "-s", str(lua), f"http://127.0.0.1:{proxy.port}", "--",
                           proxy.name, upstream, proxy.login, str(PATHS)],
                          capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRKRESULT "):
            requests, duration_us, p99_us, errors, non2xx = map(int, line.split()[1:])
            per_cpu = requests / max(proxy.cpu_seconds() - cpu, 1e-9)
            return requests / (duration_us / 1e6), p99_us / 1000, errors + non2xx, per_cpu
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")


def warm(proxy: Proxy, upstream: str) -> None:
    """One request through the proxy (the login checked and cached); it must be answered 200."""
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60",
               "--proxy", f"http://127.0.0.1:{proxy.port}", f"http://{upstream}/warm"]
    if proxy.login:
        command[1:1] = ["-H", f"Proxy-Authorization: {proxy.login}"]
    status = subprocess.run(command, capture_output=True, text=True, timeout=90,
                            check=False).stdout
    if status != "200":
        raise RuntimeError(f"{proxy.name}: the warm-up request got {status!r}; see "
                           f"{proxy.directory / 'mitmdump.log'}")


def htpasswd_file(path: Path, cost: int) -> Path:
    import bcrypt
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost)).decode()
    path.write_text(f"{USER}:{hashed}\nsomeone:{hashed}\n")
    return path


def micro(count: int = 20_000) -> None:
    """Microseconds the sign-in step takes per request with a cached login (bcrypt 10)."""
    import asyncio

    from mitmproxy.proxy.mode_specs import ProxyMode

    from tests.unit.helpers import engine_from
    from tests.unit.proxy.test_signin import flow
    from webpolicy.proxy.addon import WebPolicy
    work = Path(tempfile.mkdtemp(prefix="bench-logins-micro-"))
    htpasswd_file(work / "htpasswd", 10)
    addon = WebPolicy()
    addon.gate.engine = engine_from(work, POLICY.format(
        logs=work / "logs", metrics_port=free_port(),
        logins=HTPASSWD.format(path=work / "htpasswd")), {"gambling.txt": "gambling.test\n"})
    first = flow(host="news.test", login=f"{USER}:{PASSWORD}")
    asyncio.run(addon.signin.begin(first))                      # checked once, then cached
    assert first.response is None

    def timed(flows) -> float:
        started = time.perf_counter()
        for f in flows:
            if addon.signin.begin(f) is not None:
                raise RuntimeError("the login was not answered from the cache")
        return (time.perf_counter() - started) / len(flows) * 1e6
    cached = timed([flow(host="news.test", login=f"{USER}:{PASSWORD}") for _ in range(count)])
    others = [flow(host="news.test") for _ in range(count)]
    for f in others:
        f.client_conn.proxy_mode = ProxyMode.parse("socks5")     # no login asked
    print(f"sign-in step per request: cached login {cached:.1f} us, no login "
          f"{timed(others):.1f} us (load average {load_average()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--cost", type=int, default=10, help="bcrypt cost of the htpasswd file")
    parser.add_argument("--proxyauth", action="store_true",
                        help="also mitmproxy's own --proxyauth on the bcrypt file (slow)")
    parser.add_argument("--micro", action="store_true",
                        help="only time the sign-in step of a cached login, in this process")
    args = parser.parse_args()
    if args.micro:
        micro()
        return 0
    need = missing_tools()
    if need:
        raise SystemExit(f"missing: {' '.join(need)} (apt-get install {' '.join(need)})")
    work = Path(tempfile.mkdtemp(prefix="bench-logins-"))
    nginx = Nginx(work / "nginx").start()
    ldap = LdapServer.create(work / "ldap").start()
    env = {**os.environ, PASSWORD_ENV: SERVICE_PASSWORD}
    upstream = f"127.0.0.1:{nginx.http_port}"
    login = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    htpasswd = htpasswd_file(work / "htpasswd", args.cost)
    proxies = [
        Proxy("bare", work / "bare", addon=False),
        Proxy("none", work / "none"),
        Proxy("directory", work / "directory", DIRECTORY.format(
            url=ldap.url, service_dn=SERVICE_DN, env=PASSWORD_ENV), login=login),
        Proxy("htpasswd", work / "htpasswd-cached", HTPASSWD.format(path=htpasswd), login=login),
    ]
    if args.proxyauth:
        proxies.append(Proxy("proxyauth", work / "proxyauth",
                             extra=["--proxyauth", f"@{htpasswd}"], login=login))
    lua = work / "logins.lua"
    lua.write_text(LUA)
    results: dict[str, list[tuple[float, float, int, float]]] = {p.name: [] for p in proxies}
    try:
        for proxy in proxies:
            proxy.start(env)
        for proxy in proxies:
            warm(proxy, upstream)
        say(f"load average before: {load_average()}; {args.rounds} x {args.seconds} s per "
            f"configuration, c16, bcrypt cost {args.cost}")
        for number in range(args.rounds):
            for proxy in (proxies if number % 2 == 0 else proxies[::-1]):   # order alternates
                results[proxy.name].append(wrk(proxy, upstream, args.seconds, lua))
                time.sleep(0.5)
    finally:
        for proxy in proxies:
            proxy.stop()
        ldap.stop()
        nginx.stop()
    base = statistics.median(r[0] for r in results["none"])
    base_cpu = statistics.median(r[3] for r in results["none"])
    # "round": the median of per-round ratios (each run divided by the same round's `none`
    # run, which ran just before or after it): steadier than a ratio of medians when the
    # machine's other load comes and goes
    print(f"\n{'configuration':<12} {'req/s':>9} {'ratio':>6} {'round':>6} {'req/CPU-s':>10} "
          f"{'ratio':>6} {'p99 ms':>7} {'failed':>6}   req/s of each run")
    for name, runs in results.items():
        rps = statistics.median(r[0] for r in runs)
        per_cpu = statistics.median(r[3] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        failed = sum(r[2] for r in runs)
        by_round = statistics.median(r[0] / n[0] for r, n in zip(runs, results["none"]))
        print(f"{name:<12} {rps:>9.0f} {rps / base:>6.2f} {by_round:>6.2f} {per_cpu:>10.0f} "
              f"{per_cpu / base_cpu:>6.2f} {p99:>7.1f} {failed:>6}   "
              + ", ".join(f"{r[0]:.0f}" for r in runs))
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
