"""A client in its own network namespace whose web traffic nftables redirects to mitmdump's
transparent listener: what a college's transparent gateway does, on one machine.

    netns wp-client-<pid>                       root namespace
    client  10.213.0.2 (learner) ──veth── 10.213.0.1   mitmdump --mode transparent@10.213.0.1:P
            10.213.0.3 (staff)                 10.213.1.N/32  "the internet": one test site each
            route 10.213.1.0/24 via 10.213.0.1

An nftables table of the test's own (`ip wp_transparent_<pid>`) REDIRECTs TCP 80/443 arriving
on the veth to the listener; mitmproxy reads the original destination (SO_ORIGINAL_DST).  The
sites' addresses exist only on the root end of the veth, and every site counts the TCP
connections it accepts (sites.py), so "the blocked site was never contacted" is measured.  A
packet the redirect missed would reach the site directly and be counted too.

Everything created here (namespace, veth, addresses, nft table) is removed in `close()`, which
the fixture calls even when a test or the set-up fails.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from .sites import SiteLog, _SiteServer, make_ca

GATEWAY_IP = "10.213.0.1"
LEARNER_NS_IP = "10.213.0.2"
STAFF_NS_IP = "10.213.0.3"
INTERNET = "10.213.1.0/24"

# The test sites "on the internet": name -> address on the root end of the veth.
INTERNET_SITES = {
    "news.test": "10.213.1.1",            # allowed; has a blocked URL under it
    "www.gambling.test": "10.213.1.2",    # blocked for learners, logged for staff
    "ctiru-host.test": "10.213.1.4",      # a statutory URL: blocked for everyone
    "bank.test": "10.213.1.6",            # pass-through, allowed
    "casino-bank.test": "10.213.1.7",     # pass-through, blocked for learners
    "www.youtube.com": "10.213.1.13",     # allowed, no URL rules
    "vpn.test": "10.213.1.14",            # its address is under the policy's deny:
    "doh.test": "10.213.1.15",            # its address has a URL under deny:
}


def missing_tools() -> str | None:
    """Why the transparent tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "transparent-mode tests need root (network namespaces, nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if not shutil.which(tool):
            return f"transparent-mode tests need `{tool}` ({package}; scripts/install-system-deps.sh)"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "transparent-mode tests need `ip netns` (iproute2)"
    return None


def _run(*cmd: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def remove_leftovers() -> None:
    """Remove what a run that was killed (SIGKILL: no finally) left behind: only names of
    this module's own pattern whose process is gone."""
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        tag = name.removeprefix("wp-client-")
        if name.startswith("wp-client-") and tag.isdigit() and not Path(f"/proc/{tag}").exists():
            _run("ip", "netns", "del", name, check=False)     # its veth goes with it
            _run("ip", "link", "del", f"wpt{tag}h"[:15], check=False)
            _run("nft", "delete", "table", "ip", f"wp_transparent_{tag}", check=False)


class ClientNamespace:
    """The namespace, its veth and routes, and the nft redirect to `proxy_port`."""

    def __init__(self, proxy_port: int) -> None:
        tag = str(os.getpid())
        self.name = f"wp-client-{tag}"
        self.host_if = f"wpt{tag}h"[:15]
        self.client_if = f"wpt{tag}c"[:15]
        self.table = f"wp_transparent_{tag}"
        self.proxy_port = proxy_port
        self._created: list[str] = []

    def open(self) -> "ClientNamespace":
        remove_leftovers()
        taken = _run("ip", "-o", "-4", "addr", "show").stdout
        if "inet 10.213." in taken:
            raise RuntimeError(f"10.213.0.0/16 is already in use in the root namespace "
                               f"(a leftover of an earlier run?):\n{taken}")
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        name, host_if, client_if = self.name, self.host_if, self.client_if
        _run("ip", "netns", "add", name)
        self._created.append("netns")
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", client_if)
        self._created.append("veth")
        _run("ip", "link", "set", client_if, "netns", name)
        # The root end: the gateway address first (REDIRECT uses the interface's first
        # address), then one /32 per site.
        _run("ip", "addr", "add", f"{GATEWAY_IP}/29", "dev", host_if)
        for address in INTERNET_SITES.values():
            _run("ip", "addr", "add", f"{address}/32", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        ns = ("ip", "netns", "exec", name)
        _run(*ns, "ip", "link", "set", "lo", "up")
        _run(*ns, "ip", "addr", "add", f"{LEARNER_NS_IP}/29", "dev", client_if)
        _run(*ns, "ip", "addr", "add", f"{STAFF_NS_IP}/29", "dev", client_if)
        _run(*ns, "ip", "link", "set", client_if, "up")
        _run(*ns, "ip", "route", "add", INTERNET, "via", GATEWAY_IP, "src", LEARNER_NS_IP)
        ruleset = f"""
table ip {self.table} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{host_if}" tcp dport {{ 80, 443 }} redirect to :{self.proxy_port}
  }}
}}
"""
        done = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True,
                              text=True, timeout=15)
        if done.returncode != 0:
            raise RuntimeError(f"nft failed: {done.stderr.strip()}")
        self._created.append("nft")

    def close(self) -> None:
        """Remove everything this namespace created; never raises."""
        errors = []
        if "nft" in self._created:
            done = _run("nft", "delete", "table", "ip", self.table, check=False)
            if done.returncode != 0:
                errors.append(done.stderr)
        if "veth" in self._created:
            _run("ip", "link", "del", self.host_if, check=False)   # takes its peer with it
        if "netns" in self._created:
            done = _run("ip", "netns", "del", self.name, check=False)
            if done.returncode != 0:
                errors.append(done.stderr)
        self._created.clear()
        if errors:
            print("netns clean-up:", *errors)

    @staticmethod
    def wait_for_listener(address: str, port: int, timeout: float = 10) -> None:
        """Until something listens on address:port in the root namespace (looked at with ss:
        a test connection to a transparent listener would be a connection to itself)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _run("ss", "-Hltn", f"src {address}:{port}", check=False).stdout.strip():
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on {address}:{port} after {timeout}s")

    def curl(self, url: str, *args: str, source: str = LEARNER_NS_IP, cacert: Path | None = None,
             timeout: float = 15) -> "NsCurl":
        """curl in the namespace, with every test site's name resolving to its address."""
        resolve = [arg for site, address in INTERNET_SITES.items()
                   for port in (80, 443) for arg in ("--resolve", f"{site}:{port}:{address}")]
        marker = "\n--webpolicy-status:%{http_code}"
        cmd = ["ip", "netns", "exec", self.name, "curl", "-sS", "--noproxy", "*",
               "--max-time", str(int(timeout) - 3), "--interface", source, *resolve,
               "-w", marker, *(["--cacert", str(cacert)] if cacert else []), *args, url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        body, _, status = done.stdout.rpartition("\n--webpolicy-status:")
        return NsCurl(int(status or 0), body, done.stderr, done.returncode)

    def exchange(self, address: str, port: int, data: bytes, source: str = LEARNER_NS_IP,
                 wait: float = 1.5) -> bytes:
        """Send raw bytes from the namespace to address:port; what came back until the peer
        closed or went quiet for `wait` seconds."""
        script = (
            "import socket,sys,time\n"
            "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[4]),"
            "source_address=(sys.argv[3],0))\n"
            "s.sendall(sys.stdin.buffer.read())\n"
            "out=b''\n"
            "end=time.monotonic()+float(sys.argv[4])\n"
            "while time.monotonic()<end:\n"
            "  try: c=s.recv(65536)\n"
            "  except (TimeoutError,ConnectionResetError): break\n"
            "  if not c: break\n"
            "  out+=c\n"
            "sys.stdout.buffer.write(out)\n")
        done = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", script,
                               address, str(port), source, str(wait)],
                              input=data, capture_output=True, timeout=wait + 10)
        return done.stdout


class NsCurl:
    def __init__(self, status: int, body: str, stderr: str, returncode: int) -> None:
        self.status, self.body, self.stderr, self.returncode = status, body, stderr, returncode

    def __repr__(self) -> str:
        return (f"NsCurl(status={self.status}, rc={self.returncode}, "
                f"stderr={self.stderr.strip()!r}, body={self.body[:200]!r})")


class InternetSites:
    """The test sites again, on their 10.213.1.N addresses, with their own CA (sites.make_ca)
    and connection log.  Nothing on 127.0.1.x: the session's `sites` are not needed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log = SiteLog()
        self.ca, cert, key = make_ca(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._servers: list[_SiteServer] = []
        try:
            for site, address in INTERNET_SITES.items():
                for port, tls in ((80, None), (443, context)):
                    server = _SiteServer(site, address, port, self.log, tls)
                    threading.Thread(target=server.serve_forever, daemon=True).start()
                    self._servers.append(server)
        except BaseException:
            self.stop()
            raise

    def hosts_file(self) -> Path:
        path = self.directory / "hosts"
        lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ip in INTERNET_SITES.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def contacted(self, site: str) -> int:
        return self.log.contacted(site)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
