"""Single sign-on for the proxy login (policy.yaml's `directory.kerberos`): SPNEGO Negotiate.

signin.py owns the login as a whole (the 407, the throttle, the directory's Basic check);
this part owns what Kerberos adds, so signin.py calls it in three places:
- `challenges()`: the 407 then offers `Negotiate` before `Basic` (browsers pick the first
  they can do; a PC without a ticket, or any client without Kerberos, uses Basic as before).
- `known(connection)`: Negotiate authenticates the connection, not the request.  A person
  signed in by ticket is remembered per client connection, so the next requests on it (which
  may carry no header, or the same ticket again) are not checked again.
- `sign_in(token)`: the ticket checked in a worker thread (identity/kerberos.py, never on the
  event loop), then the person's groups from the directory (a lookup as the service account,
  cached for `cache_minutes` per person, in the same thread pool).  A refused token returns
  None and logs why (at most once a minute per reason: clock skew and a wrong keytab are
  the usual ones); a directory that cannot be asked raises DirectoryUnavailable, like Basic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

from webpolicy.identity.directory import Directory, SignedInUser
from webpolicy.identity.htpasswd import Htpasswd
from webpolicy.identity.kerberos import Acceptor, KerberosRefused
from webpolicy.identity.logins import LoginCache
from webpolicy.policy.model import DirectorySettings

log = logging.getLogger("webpolicy")

METHOD = "kerberos"
WARN_EVERY = 60.0                # seconds between two log lines for the same kind of refusal
_LOOKUP = "\0lookup"             # LoginCache's "password" for a group lookup (no password)


class Negotiate:
    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self._pool = pool
        self._acceptor: Acceptor | None = None
        self._connections: dict[str, SignedInUser] = {}   # client connection id -> person
        self._lookups: LoginCache[SignedInUser] = LoginCache(0)
        self._warned: dict[str, float] = {}

    def configure(self, settings: DirectorySettings | None) -> None:
        """A changed directory (a reload): a new acceptor, connections checked again."""
        self._connections.clear()
        self._lookups = LoginCache(settings.cache_minutes * 60 if settings else 0)
        self._acceptor = None
        if settings is None or settings.kerberos is None:
            return
        try:
            self._acceptor = Acceptor(settings.kerberos)
        except KerberosRefused as exc:
            log.error("webpolicy: directory.kerberos is set but single sign-on is off: %s; "
                      "clients are asked for Basic logins only", exc)

    @property
    def offered(self) -> bool:
        return self._acceptor is not None

    def challenges(self) -> list[tuple[bytes, bytes]]:
        return [(b"proxy-authenticate", b"Negotiate")] if self.offered else []

    def known(self, connection: str) -> SignedInUser | None:
        return self._connections.get(connection)

    def forget(self, connection: str) -> None:
        self._connections.pop(connection, None)

    async def sign_in(self, connection: str, token: bytes,
                      directory: Directory | Htpasswd | None) -> SignedInUser | None:
        """The person the token proves, with their groups; None if refused.  Raises
        DirectoryUnavailable (the directory could not give the groups: fail closed)."""
        acceptor = self._acceptor
        if acceptor is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            name = await loop.run_in_executor(self._pool, acceptor.check, token)
        except KerberosRefused as exc:
            self.refused(str(exc))
            return None
        person = await self._groups(name, directory)
        if person is None:
            self.refused("a valid ticket, but no directory entry matches the user filter "
                         "(unknown or disabled account)")
            return None
        if acceptor is self._acceptor:          # not an answer for a policy since replaced
            self._connections[connection] = person
        return person

    async def _groups(self, name: str, directory: Directory | Htpasswd | None) -> SignedInUser | None:
        cached = self._lookups.get(name, _LOOKUP)
        if cached is not None:
            return cached
        if directory is None:
            return SignedInUser(name, method=METHOD)
        found = await asyncio.get_running_loop().run_in_executor(self._pool, directory.lookup,
                                                                 name)
        if found is None:
            return None
        person = SignedInUser(name, found.groups, METHOD)
        self._lookups.put(name, _LOOKUP, person)
        return person

    def refused(self, why: str) -> None:
        """One clear line per kind of refusal a minute (not one per request: a PC with a
        wrong clock retries on every connection).  Never the token; no person's name."""
        kind = why.split(":", 1)[0]
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY) >= WARN_EVERY:
            self._warned[kind] = now
            log.warning("webpolicy: a Kerberos (Negotiate) proxy login was refused, the client "
                        "is asked again (Basic as the fallback): %s", why)
