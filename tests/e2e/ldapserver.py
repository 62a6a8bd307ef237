"""A real OpenLDAP server (Debian's slapd) for end-to-end tests: its own config and database
in a temporary directory, plain LDAP on 127.0.0.1 and a free port, a fixture tree of people
and groups (one group nested in another).  Started and stopped by the test; `stop` and
`start` again keep the data (the "directory down" tests)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .daemon import start_daemon, stop_daemon
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


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for localhost / 127.0.0.1; returns (ca, cert, key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webpolicy test directory CA")])

    def build(subject, public_key, extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=30)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())
    ca = build(ca_name, ca_key.public_key(), [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)])
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
                 key.public_key(), [
        (x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                      x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.BasicConstraints(ca=False, path_length=None), True)])
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return paths


def slapd_conf(directory: Path, tls: tuple[Path, Path, Path] | None = None) -> str:
    tls_lines = (f"TLSCACertificateFile {tls[0]}\nTLSCertificateFile {tls[1]}\n"
                 f"TLSCertificateKeyFile {tls[2]}\n") if tls else ""
    return tls_lines + f"""\
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
    tls_port: int | None = None                  # ldaps:// here when created with tls=True
    ca: Path | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @classmethod
    def create(cls, directory: Path, tls: bool = False) -> "LdapServer":
        """tls: also ldaps:// on its own port, and StartTLS on ldap://, with a fresh CA."""
        needs_slapd()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir()
        files = make_tls(directory) if tls else None
        (directory / "slapd.conf").write_text(slapd_conf(directory, files))
        (directory / "fixture.ldif").write_text(fixture_ldif())
        subprocess.run([SLAPADD, "-f", str(directory / "slapd.conf"), "-l",
                        str(directory / "fixture.ldif")], check=True, capture_output=True)
        return cls(directory, free_port(), tls_port=free_port() if tls else None,
                   ca=files[0] if files else None)

    def start(self, timeout: float = 10.0) -> "LdapServer":
        # -d 0: stay in the foreground (so the test owns the process), log nothing much
        self.process = start_daemon(
            [SLAPD, "-d", "0", "-f", str(self.directory / "slapd.conf"),
             "-h", " ".join([self.url] + ([self.ldaps_url] if self.tls_port else []))],
            self.directory / "slapd.log", self.port, timeout)
        return self

    def stop(self) -> None:
        stop_daemon(self.process)
        self.process = None
