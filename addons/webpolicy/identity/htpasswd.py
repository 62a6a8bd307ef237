"""Proxy logins checked against an htpasswd file (policy.yaml's `directory: {htpasswd: FILE}`),
through the same cached, threaded path as directory logins.

mitmproxy's own `--proxyauth @FILE` checks the hash on every plain-HTTP request on the event
loop: 18 requests a second for the whole proxy at bcrypt cost 10.  Here a check is one
`bcrypt.checkpw` in the login thread pool, once per person per `cache_minutes`, so bcrypt at
any cost is usable.  Entries are bcrypt (`$2y$`, `$2b$`, `$2a$`: `htpasswd -B`) or `{SHA}`
(unsalted SHA-1, accepted for old files: prefer bcrypt); any other kind of entry never
matches.  The file is read again when it changes (its mtime, size or inode), so an edited
file needs no reload; a file that cannot be read raises DirectoryUnavailable (fail closed,
as a directory that is down).  There are no groups: `clients.users` chooses profiles.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from pathlib import Path

import bcrypt

from webpolicy.identity.directory import (Directory, DirectoryUnavailable, SignedInUser,
                                          plausible_name)
from webpolicy.policy.model import DirectorySettings

BCRYPT = ("$2y$", "$2b$", "$2a$")


class Htpasswd:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()               # checks run in several threads
        self._stamp: tuple[int, int, int] | None = None
        self._entries: dict[str, str] = {}

    def _current(self) -> dict[str, str]:
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            with self._lock:
                if stamp != self._stamp:
                    self._entries = _parse(self.path.read_text(encoding="utf-8"))
                    self._stamp = stamp
                return self._entries
        except (OSError, UnicodeError) as exc:
            raise DirectoryUnavailable(f"the htpasswd file {self.path} cannot be read: "
                                       f"{type(exc).__name__}") from None

    def check(self, user: str, password: str) -> SignedInUser | None:
        """The user if the password matches their entry; None if not."""
        if not plausible_name(user) or not password:
            return None
        stored = self._current().get(user)
        if stored is None or not _matches(password, stored):
            return None
        return SignedInUser(user)

    def lookup(self, user: str) -> SignedInUser | None:
        """The user if the file has an entry for them (`webpolicy check --user`, Kerberos)."""
        if not plausible_name(user) or user not in self._current():
            return None
        return SignedInUser(user)


def login_checker(settings: DirectorySettings) -> Directory | Htpasswd:
    """What checks the policy's logins: the htpasswd file, or the LDAP directory."""
    return Htpasswd(settings.htpasswd) if settings.htpasswd else Directory(settings)


def _parse(text: str) -> dict[str, str]:
    entries = {}
    for line in text.splitlines():
        user, colon, stored = line.strip().partition(":")
        if colon and user and not user.startswith("#"):
            entries[user] = stored.strip()
    return entries


def _matches(password: str, stored: str) -> bool:
    secret = password.encode("utf-8", "surrogateescape")
    if stored.startswith(BCRYPT):
        try:
            return bcrypt.checkpw(secret, stored.encode("ascii"))
        except (ValueError, UnicodeError):      # a damaged entry never matches
            return False
    if stored.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(secret).digest()).decode()
        return hmac.compare_digest(digest, stored[5:])
    return False
