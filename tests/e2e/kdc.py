"""A real MIT Kerberos KDC (Debian's krb5-kdc) for end-to-end tests: its own realm, database,
krb5.conf and kdc.conf in a temporary directory, listening on 127.0.0.1 and a free port
(UDP and TCP), with principals for a learner, a staff member and the gateway's HTTP service,
whose key is exported to a keytab.  Started and stopped by the test.

Clients (kinit, curl, the proxy) find the realm through KRB5_CONFIG; the KDC through
KRB5_KDC_PROFILE.  `env()` gives both, plus a ccache per person.  Host names are never
canonicalised through DNS (`dns_canonicalize_hostname = false`), so curl's service name for a
proxy named `localhost` is HTTP/localhost@REALM: the gateway name resolves to the proxy's
loopback address without touching /etc/hosts.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .daemon import start_daemon, stop_daemon
from .proxy import free_port

KRB5KDC = "/usr/sbin/krb5kdc"
KDB5_UTIL = "/usr/sbin/kdb5_util"
KADMIN_LOCAL = "/usr/sbin/kadmin.local"
KINIT = "/usr/bin/kinit"

REALM = "WEBPOLICY.TEST"
GATEWAY = "localhost"                     # the name clients use for the proxy
SERVICE = f"HTTP/{GATEWAY}"
# principal -> password; the names match tests/e2e/ldapserver.py's people (sam is staff,
# pat a learner), so the directory gives their groups
PEOPLE = {"sam": "sam-krb-Staff1", "pat": "pat-krb-Learn3", "kim": "kim-krb-Other5"}


def needs_kdc() -> None:
    for tool in (KRB5KDC, KDB5_UTIL, KADMIN_LOCAL, KINIT):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"needs MIT Kerberos ({tool}; Debian: apt-get install krb5-kdc "
                        "krb5-admin-server krb5-user; scripts/install-system-deps.sh)")


@dataclass
class Kdc:
    directory: Path
    port: int
    process: subprocess.Popen | None = None
    keytab: Path = field(init=False)

    def __post_init__(self) -> None:
        self.keytab = self.directory / "http.keytab"

    @property
    def krb5_conf(self) -> Path:
        return self.directory / "krb5.conf"

    def env(self, person: str | None = None) -> dict[str, str]:
        """Environment for a Kerberos client (or the proxy: person None)."""
        env = {**os.environ, "KRB5_CONFIG": str(self.krb5_conf),
               "KRB5_KDC_PROFILE": str(self.directory / "kdc.conf"),
               "KRB5RCACHEDIR": str(self.directory)}
        env.pop("KRB5_KTNAME", None)
        env["KRB5CCNAME"] = f"FILE:{self.directory / ('cc-' + (person or 'none'))}"
        return env

    @classmethod
    def create(cls, directory: Path) -> Kdc:
        needs_kdc()
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        kdc = cls(directory, free_port())
        kdc.krb5_conf.write_text(f"""\
[libdefaults]
    default_realm = {REALM}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{kdc.port}
    }}
[domain_realm]
    {GATEWAY} = {REALM}
""")
        (directory / "kdc.conf").write_text(f"""\
[kdcdefaults]
    kdc_ports = {kdc.port}
    kdc_tcp_ports = {kdc.port}
    kdc_listen = 127.0.0.1:{kdc.port}
    kdc_tcp_listen = 127.0.0.1:{kdc.port}
[realms]
    {REALM} = {{
        database_name = {directory}/principal
        key_stash_file = {directory}/stash
        acl_file = {directory}/kadm5.acl
        max_life = 10h 0m 0s
    }}
[logging]
    kdc = FILE:{directory}/kdc.log
""")
        (directory / "kadm5.acl").write_text("")
        env = kdc.env()
        subprocess.run([KDB5_UTIL, "create", "-s", "-r", REALM, "-P", "master-key-not-secret"],
                       env=env, check=True, capture_output=True, timeout=60)
        for name, password in PEOPLE.items():
            kdc.kadmin(f"addprinc -pw {password} {name}")
        kdc.kadmin(f"addprinc -randkey {SERVICE}")
        kdc.kadmin(f"ktadd -k {kdc.keytab} {SERVICE}")
        return kdc

    def kadmin(self, query: str) -> str:
        done = subprocess.run([KADMIN_LOCAL, "-r", REALM, "-q", query], env=self.env(),
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0 or "error" in done.stderr.lower():
            raise RuntimeError(f"kadmin.local {query!r}: {done.stderr}")
        return done.stdout

    def start(self, timeout: float = 10.0) -> Kdc:
        # -n: stay in the foreground, so the test owns the process
        self.process = start_daemon([KRB5KDC, "-n", "-r", REALM],
                                    self.directory / "krb5kdc.out", self.port, timeout,
                                    env=self.env())
        return self

    def kinit(self, person: str) -> dict[str, str]:
        """Get `person` a ticket-granting ticket in their own ccache; returns their env."""
        env = self.env(person)
        subprocess.run([KINIT, f"{person}@{REALM}"], input=PEOPLE[person] + "\n", env=env,
                       check=True, capture_output=True, text=True, timeout=30)
        return env

    def stop(self) -> None:
        stop_daemon(self.process)
        self.process = None
