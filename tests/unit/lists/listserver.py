"""A real local HTTPS server for list downloads, with a throwaway CA made here.

Used by tests/unit/lists/test_remote.py and tests/e2e/test_remote_lists.py.  Each path is
given a Reply (status, body, headers, a delay before answering, a body cut short); the server
records what each request asked for (for conditional GETs and bearer tokens) and how many it
answered at once (for bounded parallel downloads).  Also: ConnectProxy, a small outbound
HTTP proxy (CONNECT only) that records the tunnels it opened, and ut1_archive(), UT1's
published archives built from a UT1 snapshot (/work/shared/data/ut1) at test time.
"""

from __future__ import annotations

import datetime
import gzip
import io
import ipaddress
import select
import socket
import socketserver
import ssl
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0                    # seconds before the status line
    length: int | None = None             # Content-Length to claim (default: the body's)
    etag: str = ""                        # answer 304 to a request with this If-None-Match


def gzipped(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def domains(count: int, prefix: str = "site") -> str:
    return "".join(f"{prefix}{i}.example\n" for i in range(count))


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for 127.0.0.1 and localhost; returns (ca.pem, leaf.pem, leaf.key).
    Also writes client.pem and client.key, a client certificate from the same CA."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webpolicy list provider CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lists")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")]))
              .issuer_name(ca_name).public_key(client_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=30))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    (directory / "client.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    (directory / "client.key").write_bytes(client_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    paths = directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ssl.SSLError):
            pass              # a client (or a tunnel through a test proxy) gone mid-request

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server: ListServer = self.server.owner          # type: ignore[attr-defined]
        server.requests.append((self.path, dict(self.headers)))
        reply = server.replies.get(self.path, Reply(404, b"not found\n"))
        with server.lock:
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        try:
            if reply.delay:
                time.sleep(reply.delay)
        finally:
            with server.lock:
                server.in_flight -= 1
        if reply.etag and self.headers.get("If-None-Match") == reply.etag:
            self.send_response(304)
            self.send_header("ETag", reply.etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.etag:
            self.send_header("ETag", reply.etag)
        length = len(reply.body) if reply.length is None else reply.length
        self.send_header("Content-Length", str(length))
        if reply.length is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if reply.length is not None:
            self.close_connection = True


class ListServer:
    """`with ListServer(tmp) as server:` serves server.replies on https://127.0.0.1:<port>."""

    def __init__(self, directory: Path, client_certificates: bool = False) -> None:
        self.ca, leaf, key = make_ca(directory)
        self.client_cert, self.client_key = directory / "client.pem", directory / "client.key"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf, key)
        if client_certificates:                 # only clients with a certificate from the CA
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        self.replies: dict[str, Reply] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self                         # type: ignore[attr-defined]
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> ListServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# -- an outbound proxy ---------------------------------------------------------------------

class _Tunnel(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        proxy: ConnectProxy = self.server.owner               # type: ignore[attr-defined]
        request = self.rfile.readline(8192).decode("latin-1").split()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass                                              # the request's headers
        if len(request) != 3 or request[0] != "CONNECT" or proxy.refuse:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        host, _, port = request[1].rpartition(":")
        proxy.tunnels.append(request[1])
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        with upstream:
            sockets = [self.connection, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 10)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)


class ConnectProxy:
    """`with ConnectProxy() as proxy:` an HTTP proxy on http://127.0.0.1:<port> that opens
    CONNECT tunnels (and records them in `tunnels`); `refuse = True` answers 403."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.refuse = False
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Tunnel)
        self._server.daemon_threads = True
        self._server.owner = self                            # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- UT1 archives --------------------------------------------------------------------------

UT1_SNAPSHOT = Path("/work/shared/data/ut1")
UT1_FILES = ("domains", "urls", "expressions")


def ut1_archive(categories: dict[str, dict[str, bytes]], *, per_category: str = "",
                aliases: dict[str, str] | None = None) -> bytes:
    """A gzipped tar as UT1 publishes it: the archive (`blacklists/<category>/<file>`, an
    alias a symbolic link beside it), or with per_category=NAME that category's own archive
    (`NAME/<file>`)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        def add(name: str, data: bytes | None = None, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        chosen = {per_category: categories[per_category]} if per_category else categories
        prefix = "" if per_category else "blacklists/"
        if not per_category:
            add("blacklists")
        for name, files in chosen.items():
            add(f"{prefix}{name}")
            for file, data in files.items():
                add(f"{prefix}{name}/{file}", data)
        for alias, target in ({} if per_category else (aliases or {})).items():
            add(f"blacklists/{alias}", link=target)
    return gzip.compress(out.getvalue(), mtime=0)


def snapshot(*names: str) -> dict[str, dict[str, bytes]]:
    """Categories of the UT1 snapshot, as ut1_archive takes them (its list files only)."""
    found = {}
    for name in names:
        folder = UT1_SNAPSHOT / name
        found[name] = {file: (folder / file).read_bytes() for file in UT1_FILES
                       if (folder / file).is_file()}
    return found
