"""A real PostgreSQL server (Debian's postgresql package) for the console's tests and its
benchmark: its own cluster in a temporary directory, TCP on 127.0.0.1 and a free port only,
password (SCRAM) authentication for one superuser.

initdb and the server refuse to run as root, and CI runs as root: then the cluster belongs to
Debian's `postgres` account (made by the package) and both run through `runuser`.  Run as
anyone else, they run as that account.  `start()` once per test session; `stop()` at its end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "webpolicy"
PASSWORD = "console-test-4711"
INSTALL_HINT = "install Debian's postgresql (scripts/install-system-deps.sh, as root)"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here (or no unprivileged account to run them as)."""


def binaries() -> Path:
    """The newest /usr/lib/postgresql/N/bin with initdb and pg_ctl."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        raise PostgresUnavailable(f"no /usr/lib/postgresql/*/bin/pg_ctl: {INSTALL_HINT}")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One cluster: `start()`, `url(name)` / `create_database(name)`, `stop()`."""

    def __init__(self, root: Path | None = None, settings: dict[str, str] | None = None):
        self.bin = binaries()
        self.root = Path(root or tempfile.mkdtemp(prefix="webpolicy-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.settings = settings or {}
        self.account = None
        if os.geteuid() == 0:
            try:
                self.account = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(f"no 'postgres' account to run the server as: "
                                          f"{INSTALL_HINT}") from None

    def _run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        if self.account:
            command = ("runuser", "-u", self.account.pw_name, "--", *command)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        if done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"
                               + (log.read_text()[-3000:] if log.exists() else ""))
        return done

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        password_file = self.root / "password"
        password_file.write_text(PASSWORD + "\n")
        if self.account:                     # the server's account owns its directory
            for path in (self.root, password_file):
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        os.chmod(self.root, 0o700)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "-E", "UTF8",
                  "--locale=C.UTF-8", "--auth=scram-sha-256", f"--pwfile={password_file}")
        options = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                   "unix_socket_directories": str(self.root), **self.settings}
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", " ".join(f"-c {k}={v}" for k, v in options.items()), "start")
        return self

    def url(self, name: str) -> str:
        """The console's `database` setting for `name` (the password is given apart)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                          "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
