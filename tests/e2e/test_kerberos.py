"""Single sign-on against a real MIT Kerberos KDC (krb5kdc on loopback) and a real OpenLDAP
directory, through real mitmdump and curl (`--proxy-negotiate`, the way a domain PC's browser
answers the proxy's Negotiate challenge): a person with a ticket is signed in without a
password and gets their group's profile; without a ticket the proxy still offers Basic; a
garbage token, a ticket for a person the directory does not know, and a stale keytab are
refused with 407 and both challenges again, never let through."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from .kdc import GATEWAY, REALM, SERVICE, Kdc
from .ldapserver import PEOPLE as DIRECTORY_PEOPLE
from .ldapserver import SERVICE_DN, SERVICE_PASSWORD, group_dn
from .test_directory import GAMBLING, POLICY, logins_metric

KERBEROS = f"""\
  kerberos:
    keytab: {{keytab}}
    service: {SERVICE}
    realm: {REALM}
"""
SSO_POLICY = POLICY.replace("  realm: Test College\n", "  realm: Test College\n" + KERBEROS)
assert SSO_POLICY != POLICY
STAFF_GROUP = group_dn("staff")


@pytest.fixture
def kdc(tmp_path) -> Iterator[Kdc]:
    server = Kdc.create(tmp_path / "kdc").start()
    yield server
    server.stop()


@pytest.fixture
def sso_proxy(make_proxy, ldap, kdc, monkeypatch):
    monkeypatch.setenv("WEBPOLICY_TEST_LDAP_PASSWORD", SERVICE_PASSWORD)
    # the proxy's own krb5 settings (replay cache in the test's directory); it needs no KDC
    for key in ("KRB5_CONFIG", "KRB5RCACHEDIR"):
        monkeypatch.setenv(key, kdc.env()[key])

    def start(keytab=None):
        return make_proxy(policy=SSO_POLICY, ldap_url=ldap.url, service_dn=SERVICE_DN,
                          cache_minutes=5, keytab=keytab or kdc.keytab)
    return start


def negotiate(proxy, url: str, env: dict[str, str], *args: str):
    """curl as a browser on a domain PC: the proxy by its name (the SPN is HTTP@<that name>),
    Negotiate with the ticket in the person's ccache, no user name or password."""
    return proxy.curl(url, "--proxy", f"http://{GATEWAY}:{proxy.port}", "-4",
                      "--proxy-negotiate", "-U", ":", *args, env=env)


def test_a_ticket_signs_in_without_a_password_and_the_group_chooses_the_profile(sso_proxy, kdc):
    proxy = sso_proxy()
    sam, pat = kdc.kinit("sam"), kdc.kinit("pat")
    # staff (the directory's staff group): gambling is only logged, over HTTP and HTTPS
    assert negotiate(proxy, GAMBLING, sam).status == 200
    assert negotiate(proxy, "https://www.gambling.test/", sam).status == 200
    # a learner: blocked
    assert negotiate(proxy, GAMBLING, pat).status == 403
    records = proxy.records(wait_for=3)
    seen = {(r["user"], r["identified_by"], r["profile"], r["profile_reason"], r["action"])
            for r in records}
    assert ("sam", "kerberos", "staff", f"group {STAFF_GROUP}", "logged") in seen, seen
    assert ("pat", "kerberos", "learner", "default", "blocked") in seen, seen
    assert logins_metric(proxy, "kerberos") == 3
    # Negotiate signs in the connection: two requests on one connection, one ticket check
    both = negotiate(proxy, GAMBLING, sam, GAMBLING + "again")
    assert both.status == 200 and both.body.count("gambling") >= 1
    assert logins_metric(proxy, "kerberos") == 4
    assert logins_metric(proxy, "cached") >= 1


def test_without_a_ticket_the_proxy_offers_negotiate_and_basic(sso_proxy, kdc):
    proxy = sso_proxy()
    nobody = kdc.env("nobody")                        # a ccache that does not exist
    refused = negotiate(proxy, GAMBLING, nobody, "-D", "-")
    assert refused.status == 407
    challenges = [line.lower() for line in refused.body.splitlines()
                  if line.lower().startswith("proxy-authenticate:")]
    assert challenges[0].strip() == "proxy-authenticate: negotiate", challenges
    assert any(c.startswith('proxy-authenticate: basic realm="test college"') for c in challenges)
    # the fallback: a Basic login against the directory, as without single sign-on
    basic = proxy.curl(GAMBLING, "--proxy-user", f"sam:{DIRECTORY_PEOPLE['sam'][0]}", env=nobody)
    assert basic.status == 200
    records = proxy.records(wait_for=1)
    assert {(r["user"], r["identified_by"]) for r in records} == {("sam", "login")}


def test_forged_tokens_and_unknown_people_are_refused(sso_proxy, kdc):
    proxy = sso_proxy()
    for token in ("YIIBADGARBAGE0000000000000000000==", "not base64 at all!", "",
                  "TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw=="):   # NTLM
        forged = proxy.curl(GAMBLING, "-H", f"Proxy-Authorization: Negotiate {token}", "-D", "-")
        assert forged.status == 407, (token, forged)
        assert "proxy-authenticate: negotiate" in forged.body.lower()
    # a real ticket, but for someone the directory does not know: refused
    assert negotiate(proxy, GAMBLING, kdc.kinit("kim")).status == 407
    assert proxy.records(timeout=1) == []
    assert logins_metric(proxy, "kerberos_refused") >= 5
    assert logins_metric(proxy, "kerberos") == 0
    assert "Kerberos (Negotiate) proxy login was refused" in proxy.output
    assert "token refused" in proxy.output and "unexpected" not in proxy.output


def test_a_stale_keytab_refuses_with_a_clear_log_line(sso_proxy, kdc):
    """The service's key was changed in the KDC after the gateway's keytab was made (a new
    key version): tickets cannot be read, so everyone is asked again, and the log says why."""
    stale = kdc.directory / "stale.keytab"
    shutil.copy(kdc.keytab, stale)
    kdc.kadmin(f"ktadd -k {kdc.directory / 'new.keytab'} {SERVICE}")     # a new key version
    proxy = sso_proxy(keytab=stale)
    refused = negotiate(proxy, GAMBLING, kdc.kinit("sam"))
    assert refused.status == 407
    assert proxy.records(timeout=1) == []
    assert "Kerberos (Negotiate) proxy login was refused" in proxy.output
    assert "keytab is likely out of date" in proxy.output          # GSSAPI's own words
    # with the keytab that has the new key, the same person is signed in
    subprocess.run(["cp", str(kdc.directory / "new.keytab"), str(stale)], check=True)
    assert negotiate(proxy, GAMBLING, kdc.env("sam")).status == 200
