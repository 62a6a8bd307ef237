"""Proxy logins checked against an LDAP directory (OpenLDAP, Active Directory), with ldap3.

Here, not in engine/ (pure decisions, no I/O) nor in proxy/ (mitmproxy only there): this is
blocking network I/O that the proxy runs in a worker thread (proxy/signin.py), and that
`webpolicy check` or a test can run without mitmproxy.

A check is search-then-bind (the service account `bind_dn`, or an anonymous bind, finds the
one entry `user_filter` matches under `base_dn`; a second connection binds as that entry with
the password), or, with `user_dn_template`, a direct bind as the user followed by the same
search (as the user), so an account that no longer matches the filter (disabled, left) is
refused either way.  Then the groups: every group under `group_base_dn` whose `group_filter`
names the user, and, breadth first, every group naming one of those (nested groups), so a
member of "year 12" inside "learners" is a learner.  A check returns a `SignedInUser` or None
(refused); a directory that cannot be asked raises `DirectoryUnavailable` (the caller fails
closed).  The password is handed to ldap3 and nothing else: never logged, never kept.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from webpolicy.policy.model import DirectorySettings, normalise_dn

MAX_NESTING = 8                     # rounds of "groups of groups"; a loop stops by itself
MAX_GROUPS = 1000
# Result codes that mean "the directory is not able to answer", not "no": busy, unavailable,
# unwilling to perform, other, timeouts.
_UNAVAILABLE = {3, 11, 51, 52, 80}


class DirectoryUnavailable(Exception):
    """The directory could not be asked (down, TLS failure, service account refused)."""


class SignedInUser(str):
    """A login name that carries the (normalised) DNs of its groups.

    A str, so every place that passes a user name along (records, metrics, the choke point)
    passes its groups too without knowing; engine.py's `_identify` reads `groups`.  Equality
    and hash include the groups: the engine caches identify() per (user, address), and a
    user whose groups changed must not keep the old answer.  `method` says how the person
    was identified, for the records: "login" (a password), "kerberos" (a ticket) or
    "session" (the sign-in page); it chooses no profile, so it is not part of equality.
    """

    groups: frozenset[str]
    method: str

    def __new__(cls, name: str, groups: frozenset[str] | set[str] = frozenset(),
                method: str = "login") -> SignedInUser:
        self = super().__new__(cls, name)
        self.groups = frozenset(groups)
        self.method = method
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        return str.__eq__(self, other) and getattr(other, "groups", frozenset()) == self.groups

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((str(self), self.groups))

    def __reduce__(self):
        return (SignedInUser, (str(self), self.groups, self.method))


def plausible_name(user: str) -> bool:
    """A name worth asking the directory about: not empty, not absurdly long, printable."""
    return 0 < len(user) <= 256 and user.isprintable()


class Directory:
    def __init__(self, settings: DirectorySettings, environ: Mapping[str, str] = os.environ):
        self.settings = settings
        self._bind_password = (environ.get(settings.bind_password_env, "")
                               if settings.bind_password_env else "")

    def _server(self) -> ldap3.Server:
        """A new Server per check: ldap3's remembers an address that failed and refuses it
        ("invalid server address") for minutes after the directory is back, and checks run
        in several threads at once."""
        s = self.settings
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                        ca_certs_file=str(s.ca) if s.ca else None)
        return ldap3.Server(s.url, use_ssl=s.url.lower().startswith("ldaps"), tls=tls,
                            get_info=ldap3.NONE, connect_timeout=s.timeout_seconds)

    def check(self, user: str, password: str) -> SignedInUser | None:
        """The user with their groups if the password is right and the account matches the
        filter; None if not.  Raises DirectoryUnavailable when the directory cannot say."""
        # An empty password would be an unauthenticated bind, which LDAP servers accept.
        if not plausible_name(user) or not password:
            return None
        try:
            return self._check(user, password)
        except (LDAPException, OSError) as exc:      # ssl.SSLError is an OSError
            raise DirectoryUnavailable(f"{type(exc).__name__}: {exc}") from None

    def lookup(self, user: str) -> SignedInUser | None:
        """The user with their groups, as the service account (or an anonymous bind) sees
        them, without their password: for `webpolicy check --user`, never for a login.  None
        if no single entry matches the filter."""
        if not plausible_name(user):
            return None
        try:
            server = self._server()
            searcher = self._bound(server, self.settings.bind_dn or None,
                                   self._bind_password or None, service=True)
            try:
                dn = self._find(searcher, user)
                return None if dn is None else SignedInUser(user, self._groups(searcher, dn))
            finally:
                searcher.unbind()
        except (LDAPException, OSError) as exc:
            raise DirectoryUnavailable(f"{type(exc).__name__}: {exc}") from None

    def _check(self, user: str, password: str) -> SignedInUser | None:
        s = self.settings
        server = self._server()
        if s.user_dn_template:
            dn = s.user_dn_template.format(user=escape_rdn(user))
            searcher = self._bound(server, dn, password)
            if searcher is None:
                return None
            try:
                if self._find(searcher, user) is None:
                    return None            # bound, but no longer matches the filter
                return SignedInUser(user, self._groups(searcher, dn))
            finally:
                searcher.unbind()
        searcher = self._bound(server, s.bind_dn or None, self._bind_password or None,
                               service=True)
        try:
            dn = self._find(searcher, user)
            if dn is None:
                return None
            own = self._bound(server, dn, password)
            if own is None:
                return None
            own.unbind()
            return SignedInUser(user, self._groups(searcher, dn))
        finally:
            searcher.unbind()

    def _bound(self, server: ldap3.Server, dn: str | None, password: str | None,
               service: bool = False) -> ldap3.Connection | None:
        """A connection bound as `dn` (anonymous when None); None if the directory refused
        the credentials (raises DirectoryUnavailable for the service account's refusal)."""
        s = self.settings
        connection = ldap3.Connection(server, user=dn, password=password,
                                      auto_bind=ldap3.AUTO_BIND_NONE, read_only=True,
                                      raise_exceptions=False, receive_timeout=s.timeout_seconds)
        connection.open()
        if s.start_tls and not s.url.lower().startswith("ldaps"):
            if not connection.start_tls():
                raise DirectoryUnavailable(f"StartTLS refused: {connection.result.get('description')}")
        if connection.bind():
            return connection
        code = connection.result.get("result")
        description = connection.result.get("description")
        connection.unbind()
        if service or code in _UNAVAILABLE:
            who = "the service account" if service else "a login"
            raise DirectoryUnavailable(f"bind as {who} refused: {description} ({code})")
        return None

    def _find(self, connection: ldap3.Connection, user: str) -> str | None:
        """The DN of the one entry the filter matches; None for none or several."""
        s = self.settings
        found = self._search(connection, s.base_dn,
                             s.user_filter.format(user=escape_filter_chars(user)), 2)
        return found[0] if len(found) == 1 else None

    def _groups(self, connection: ldap3.Connection, dn: str) -> frozenset[str]:
        s = self.settings
        base = s.group_base_dn or s.base_dn
        groups: set[str] = set()
        frontier = [dn]
        for _round in range(MAX_NESTING):
            following = []
            for member in frontier:
                query = s.group_filter.format(dn=escape_filter_chars(member))
                for group in self._search(connection, base, query, MAX_GROUPS):
                    key = normalise_dn(group)
                    if key not in groups:
                        groups.add(key)
                        following.append(group)
            if not following or len(groups) >= MAX_GROUPS:
                break
            frontier = following
        return frozenset(groups)

    @staticmethod
    def _search(connection: ldap3.Connection, base: str, query: str, limit: int) -> list[str]:
        connection.search(base, query, search_scope=ldap3.SUBTREE, attributes=[],
                          size_limit=limit)
        code = connection.result.get("result")
        if code not in (0, 4, 32):        # success, size limit exceeded, no such base
            raise DirectoryUnavailable(
                f"search refused: {connection.result.get('description')} ({code})")
        return [entry["dn"] for entry in connection.response or ()
                if entry.get("type") == "searchResEntry"]
