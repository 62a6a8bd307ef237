"""Single sign-on: a proxy login by Kerberos ticket (SPNEGO `Negotiate`), checked with GSSAPI.

A domain-joined PC answers the proxy's `Proxy-Authenticate: Negotiate` with a ticket for the
gateway's service principal (HTTP/<proxy name>), without asking the person anything.  The
token is checked by the system's GSSAPI (MIT krb5, through python-gssapi) with the gateway's
key from the keytab named in policy.yaml: never by hand-written ASN.1 or crypto here.  The
check is blocking (keytab read, replay cache write), so the proxy runs it in a worker thread
(proxy/signin.py), once per client connection: Negotiate authenticates the connection.

Only a complete, single-round SPNEGO/Kerberos exchange is accepted.  NTLM inside Negotiate
(what Windows sends when it has no ticket for the name) and anything else that needs a
second round is refused, so the client falls back to Basic.  The person is the principal's
name before the @, and only for the configured realm: a ticket from another (trusted) realm
could otherwise claim a local name.
"""

from __future__ import annotations

import binascii

try:                    # an optional extra (webpolicy[kerberos]): it builds against libkrb5-dev
    import gssapi
    import gssapi.exceptions
except ImportError:     # pragma: no cover - then Negotiate is not offered (proxy/signin.py)
    gssapi = None

from webpolicy.identity.directory import plausible_name
from webpolicy.policy.model import KerberosSettings

MAX_TOKEN = 64 * 1024          # AD tickets with many groups (PAC) reach ~12-48 KB


class KerberosRefused(Exception):
    """The token was not accepted: garbage, not for our key, expired, clock skew, a replay,
    another realm, or more than one round.  The message says which, without secrets."""


def negotiate_token(header: str) -> bytes | None:
    """The token of a `Negotiate <base64>` Proxy-Authorization value; None if the value is not
    Negotiate.  Raises KerberosRefused for a Negotiate value that is not a token."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "negotiate":
        return None
    encoded = encoded.strip()
    if not encoded or len(encoded) > MAX_TOKEN * 4 // 3 + 4:
        raise KerberosRefused("empty or oversized Negotiate token")
    try:
        return binascii.a2b_base64(encoded.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeError, ValueError):
        raise KerberosRefused("Negotiate token is not base64") from None


def principal_user(principal: str, realm: str) -> str:
    """`user@REALM` -> `user`, for the configured realm only; a principal with an instance
    (`host/pc`, `user/admin`) is a service or an admin identity, not a person at a PC."""
    name, at, its_realm = principal.rpartition("@")
    if not at or its_realm != realm:
        raise KerberosRefused(f"principal not of realm {realm}")
    if "/" in name or "\\" in name or not plausible_name(name):
        raise KerberosRefused("principal is not a person's name (has an instance or is empty)")
    return name


class Acceptor:
    """Checks Negotiate tokens with the key of `settings.service` from `settings.keytab`.
    Thread-safe: each check acquires its credentials and context afresh (a replaced keytab,
    e.g. after a key version change, is read at the next check)."""

    def __init__(self, settings: KerberosSettings):
        """Raises KerberosRefused when python-gssapi is not installed."""
        if gssapi is None:
            raise KerberosRefused("python-gssapi is not installed (pip install "
                                  "'webpolicy[kerberos]'; Debian: libkrb5-dev to build it)")
        self.settings = settings
        host = settings.service.partition("/")[2]
        # A host-based name (HTTP@host) matches the keytab's HTTP/host@<any realm> entry, so
        # the gateway needs no krb5.conf default realm of its own.
        self._name = gssapi.Name(f"HTTP@{host}", gssapi.NameType.hostbased_service)

    def check(self, token: bytes) -> str:
        """The user name the token proves; raises KerberosRefused."""
        try:
            creds = gssapi.Credentials(name=self._name, usage="accept",
                                       store={"keytab": str(self.settings.keytab)})
        except gssapi.exceptions.GSSError as exc:
            raise KerberosRefused(f"cannot use the keytab {self.settings.keytab} for "
                                  f"{self.settings.service}: {_message(exc)}") from None
        try:
            context = gssapi.SecurityContext(creds=creds, usage="accept")
            context.step(token)
            # Under SPNEGO a failed step answers with a reject token and raises its error
            # at the next use of the context, so the reads belong inside the try too.
            if not context.complete:
                raise KerberosRefused("token needs another round (NTLM inside Negotiate?); "
                                      "only Kerberos is accepted")
            principal = str(context.initiator_name)
        except gssapi.exceptions.GSSError as exc:
            raise KerberosRefused(f"token refused: {_message(exc)}") from None
        return principal_user(principal, self.settings.realm)


def _message(exc: gssapi.exceptions.GSSError) -> str:
    """GSSAPI's own words, one line (they name the cause: skew, wrong key version, ...)."""
    try:
        return " ".join(exc.gen_message().split())[:300]
    except Exception:  # noqa: BLE001 - a message must never turn a refusal into a crash
        return type(exc).__name__
