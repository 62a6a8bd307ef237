"""Upstream web sites for end-to-end tests: real HTTP and HTTPS servers on loopback.

Each site name gets its own loopback address (127.0.1.N) listening on ports 80 and 443, so every
TCP connection a site receives is attributed to it: "a blocked site is never contacted" is
measured, not assumed.  The proxy resolves the names through a hosts file bind-mounted over
/etc/hosts in its own mount namespace (see proxy.py); nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# name -> loopback address.  Names not here (e.g. "unresolvable.test") do not resolve at all.
SITES = {
    "news.test": "127.0.1.1",
    "www.gambling.test": "127.0.1.2",
    "adult.test": "127.0.1.3",
    "ctiru-host.test": "127.0.1.4",
    "social.test": "127.0.1.5",
    "bank.test": "127.0.1.6",
    "casino-bank.test": "127.0.1.7",
    "example.org": "127.0.1.8",
    "www.google.co.uk": "127.0.1.9",
    "www.google.com": "127.0.1.10",
    "www.bing.com": "127.0.1.11",
    "duckduckgo.com": "127.0.1.12",
    "www.youtube.com": "127.0.1.13",
    "vpn.test": "127.0.1.14",
    "doh.test": "127.0.1.15",
    "use-application-dns.net": "127.0.1.16",   # Firefox's DoH canary: must never be contacted
    "grosse-casino.test": "127.0.1.17",        # blocked; spelled "große-casino.test" in tests
}


@dataclass
class SeenRequest:
    site: str
    scheme: str
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class SiteLog:
    """What the upstream sites saw; thread-safe enough for tests (appends under a lock)."""

    connections: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    requests: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def contacted(self, site: str) -> int:
        with self.lock:
            return self.connections[site]

    def requests_to(self, site: str) -> list[SeenRequest]:
        with self.lock:
            return [r for r in self.requests if r.site == site]


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and one leaf certificate naming every site; returns (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webpolicy test sites CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(n) for n in SITES] + [x509.DNSName("*." + n) for n in SITES]
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test sites")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (directory / "sites-ca.pem", directory / "sites-cert.pem",
                                    directory / "sites-key.pem")
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _serve(self) -> None:
        server: _SiteServer = self.server  # type: ignore[assignment]
        if self.headers.get("upgrade", "").lower() == "x-raw":
            self._switch_to_raw(server)
            return
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        seen = SeenRequest(server.site, server.scheme, self.command, self.path,
                           {k.lower(): v for k, v in self.headers.items()})
        with server.log.lock:
            server.log.requests.append(seen)
        body = json.dumps({"site": server.site, "path": self.path,
                           "headers": seen.headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _switch_to_raw(self, server: "_SiteServer") -> None:
        """Answer `Upgrade: x-raw` with 101 and then bytes that are not HTTP: what a server
        that helps a client round the filter would do."""
        with server.log.lock:
            server.log.requests.append(SeenRequest(server.site, server.scheme, self.command,
                                                   self.path, {}))
        self.send_response(101)
        self.send_header("Upgrade", "x-raw")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.write(b"raw bytes after the upgrade\n")
        self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_HEAD = _serve


class _SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, site: str, address: str, port: int, log: SiteLog,
                 tls: ssl.SSLContext | None):
        self.site, self.log, self.tls = site, log, tls
        self.scheme = "https" if tls else "http"
        super().__init__((address, port), _Handler)

    def process_request(self, request, client_address):
        with self.log.lock:
            self.log.connections[self.site] += 1
        super().process_request(request, client_address)

    def finish_request(self, request, client_address):
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


class Sites:
    """Start every site on ports 80 and 443 of its own loopback address."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.ca, cert, key = make_ca(directory)
        self.log = SiteLog()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._servers = []
        for site, address in SITES.items():
            self._servers.append(_SiteServer(site, address, 80, self.log, None))
            self._servers.append(_SiteServer(site, address, 443, self.log, context))
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def hosts_file(self) -> Path:
        path = self.directory / "hosts"
        lines = ["127.0.0.1 localhost"] + [f"{ip} {name}" for name, ip in SITES.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
