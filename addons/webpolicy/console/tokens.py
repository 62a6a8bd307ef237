"""API bearer tokens: random, shown once, stored as a keyed digest.

The digest is Django's salted_hmac (HMAC-SHA256 keyed with the console's secret key), not a
password hash: a token has 256 random bits, so it needs no key stretching, and a digest that
is the same every time lets the API find the token with one indexed lookup per request.
Replacing the secret key file invalidates every token (and every session).
"""

from __future__ import annotations

import secrets

from django.utils import timezone
from django.utils.crypto import salted_hmac

from webpolicy.console.models import ApiToken

SALT = "webpolicy.console.api-token"
PREFIX = "wpc_"


def digest(token: str) -> str:
    return salted_hmac(SALT, token, algorithm="sha256").hexdigest()


def issue(user) -> str:
    """A new token for `user`; only its digest is stored."""
    token = PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, digest=digest(token))
    return token


def user_for(header: str):
    """The active user an `Authorization: Bearer ...` header belongs to, or None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    found = ApiToken.objects.select_related("user").filter(digest=digest(token.strip())).first()
    if found is None or not found.user.is_active:
        return None
    found.last_used = timezone.now()
    found.save(update_fields=["last_used"])
    return found.user
