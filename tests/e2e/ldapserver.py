"""A real OpenLDAP server (Debian's slapd) for end-to-end tests: its own config and database
in a temporary directory, plain LDAP on 127.0.0.1 and a free port, a fixture tree of people
and groups (one group nested in another).  Started and stopped by the test; `stop` and
`start` again keep the data (the "directory down" tests)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .proxy import free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")

SERVICE_DN = "cn=reader,dc=test"
SERVICE_PASSWORD = "reader-secret-4711"
# login -> (password, groups it is a direct member of); a disabled account has employeeType
PEOPLE = {
    "sam": ("sam-pw-Staff1", ["staff"]),
    "nina": ("nina-pw-Head2", ["heads"]),          # heads is a member of staff: nested
    "pat": ("pat-pw-Learn3", ["year12"]),
    "dora": ("dora-pw-Gone4", ["staff"]),          # disabled
}
GROUPS = {"staff": ["uid=sam", "uid=dora", "cn=heads"], "heads": ["uid=nina"],
          "year12": ["uid=pat"]}


def group_dn(name: str) -> str:
    return f"cn={name},ou=groups,dc=test"


def _member_dn(short: str) -> str:
    return f"{short},ou=people,dc=test" if short.startswith("uid=") else f"{short},ou=groups,dc=test"


def fixture_ldif() -> str:
    entries = [
        "dn: dc=test\nobjectClass: dcObject\nobjectClass: organization\ndc: test\no: Test College",
        "dn: ou=people,dc=test\nobjectClass: organizationalUnit\nou: people",
        "dn: ou=groups,dc=test\nobjectClass: organizationalUnit\nou: groups",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {SERVICE_PASSWORD}",
    ]
    for login, (password, _groups) in PEOPLE.items():
        entry = (f"dn: uid={login},ou=people,dc=test\nobjectClass: inetOrgPerson\nuid: {login}\n"
                 f"cn: {login.title()}\nsn: {login.title()}\nuserPassword: {password}")
        if login == "dora":
            entry += "\nemployeeType: disabled"
        entries.append(entry)
    for name, members in GROUPS.items():
        entries.append(f"dn: {group_dn(name)}\nobjectClass: groupOfNames\ncn: {name}\n"
                       + "\n".join(f"member: {_member_dn(m)}" for m in members))
    return "\n\n".join(entries) + "\n"


def slapd_conf(directory: Path) -> str:
    return f"""\
include {SCHEMA}/core.schema
include {SCHEMA}/cosine.schema
include {SCHEMA}/inetorgperson.schema
pidfile {directory}/slapd.pid
modulepath {MODULES}
moduleload back_mdb
database mdb
maxsize 16777216
suffix "dc=test"
rootdn "cn=admin,dc=test"
directory {directory}/data
access to attrs=userPassword by anonymous auth by self auth by * none
access to * by dn.exact="{SERVICE_DN}" read by users read by * none
"""


def needs_slapd() -> None:
    if not (os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK)):
        pytest.skip("needs OpenLDAP's slapd (Debian: apt-get install slapd ldap-utils; "
                    "scripts/install-system-deps.sh)")


@dataclass
class LdapServer:
    directory: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @classmethod
    def create(cls, directory: Path) -> "LdapServer":
        needs_slapd()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir()
        (directory / "slapd.conf").write_text(slapd_conf(directory))
        (directory / "fixture.ldif").write_text(fixture_ldif())
        subprocess.run([SLAPADD, "-f", str(directory / "slapd.conf"), "-l",
                        str(directory / "fixture.ldif")], check=True, capture_output=True)
        return cls(directory, free_port())

    def start(self, timeout: float = 10.0) -> "LdapServer":
        log = open(self.directory / "slapd.log", "ab")
        # -d 0: stay in the foreground (so the test owns the process), log nothing much
        self.process = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(self.directory / "slapd.conf"),
             "-h", self.url], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited ({self.process.returncode}): "
                                   f"{(self.directory / 'slapd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("slapd did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
