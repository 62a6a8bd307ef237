"""identity/kerberos.py: the Negotiate header and the principal -> user name mapping; an
acceptor that cannot read its keytab, or is handed garbage, refuses (never raises anything
else).  tests/e2e/test_kerberos.py checks real tickets from a real KDC."""

from __future__ import annotations

import base64

import pytest

from webpolicy.identity.kerberos import (MAX_TOKEN, Acceptor, KerberosRefused, negotiate_token,
                                         principal_user)
from webpolicy.policy.model import KerberosSettings


@pytest.mark.parametrize("header, token", [
    ("Negotiate YIIBAA==", b"\x60\x82\x01\x00"),
    ("negotiate   YIIBAA==  ", b"\x60\x82\x01\x00"),      # the scheme is case-insensitive
    ("Basic c2FtOnB3", None),                              # not ours: the Basic path
    ("", None),
    ("NTLM TlRMTVNTUAAB", None),
])
def test_the_token_of_a_negotiate_header(header, token):
    assert negotiate_token(header) == token


@pytest.mark.parametrize("header", [
    "Negotiate", "Negotiate ", "Negotiate not*base64!", "Negotiate YII=BAA==",
    "Negotiate " + base64.b64encode(b"x" * (MAX_TOKEN + 100)).decode(),
])
def test_a_negotiate_header_without_a_usable_token_is_refused(header):
    with pytest.raises(KerberosRefused):
        negotiate_token(header)


@pytest.mark.parametrize("principal, user", [
    ("sam@COLLEGE.EXAMPLE", "sam"),
    ("j.smith@COLLEGE.EXAMPLE", "j.smith"),
    ("PC01$@COLLEGE.EXAMPLE", "PC01$"),                     # a computer account: a name too
])
def test_a_principal_of_the_realm_is_its_name(principal, user):
    assert principal_user(principal, "COLLEGE.EXAMPLE") == user


@pytest.mark.parametrize("principal", [
    "sam@OTHER.EXAMPLE",             # a trusted realm could otherwise claim a local name
    "sam@college.example",           # realms are case-sensitive
    "sam",                           # no realm
    "@COLLEGE.EXAMPLE",
    "HTTP/gateway.college.example@COLLEGE.EXAMPLE",       # a service, not a person
    "sam/admin@COLLEGE.EXAMPLE",
    "sam\\@EVIL@COLLEGE.EXAMPLE",
    "sa\x00m@COLLEGE.EXAMPLE",
])
def test_other_principals_are_refused(principal):
    with pytest.raises(KerberosRefused):
        principal_user(principal, "COLLEGE.EXAMPLE")


def test_an_unreadable_keytab_or_garbage_is_a_refusal_that_says_why(tmp_path):
    acceptor = Acceptor(KerberosSettings(tmp_path / "missing.keytab", "HTTP/gw.example",
                                         "COLLEGE.EXAMPLE"))
    with pytest.raises(KerberosRefused, match="cannot use the keytab .*missing.keytab"):
        acceptor.check(b"\x60\x82\x01\x00garbage")
    empty = tmp_path / "empty.keytab"
    empty.write_bytes(b"\x05\x02")                      # a keytab with no keys in it
    acceptor = Acceptor(KerberosSettings(empty, "HTTP/gw.example", "COLLEGE.EXAMPLE"))
    with pytest.raises(KerberosRefused):
        acceptor.check(b"garbage")
