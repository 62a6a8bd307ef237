"""Console accounts for `webpolicy users`: Django's user model, one role group each.

Passwords go through Django's validators and hasher (PBKDF2 by default); they are read from
stdin, never from the command line where `ps` and shell history would show them.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.db import transaction

from webpolicy.console import tokens
from webpolicy.console.roles import ROLES, ensure_roles, role_of


class AccountError(ValueError):
    """A request `webpolicy users` refuses, with the reason in words."""


def add_user(name: str, role: str, password: str) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role '{role}' (choose from {', '.join(ROLES)})")
    users = get_user_model()
    if users.objects.filter(username=name).exists():
        raise AccountError(f"user '{name}' exists")
    candidate = users(username=name)
    _validated(password, candidate)
    ensure_roles()
    with transaction.atomic():
        candidate.set_password(password)
        candidate.save()
        candidate.groups.set([Group.objects.get(name=role)])


def _validated(password: str, user) -> None:
    try:
        password_validation.validate_password(password, user)
    except Exception as exc:                 # ValidationError: its messages say why
        messages = getattr(exc, "messages", [str(exc)])
        raise AccountError("password refused: " + " ".join(messages)) from None


def set_password(name: str, password: str) -> None:
    """A new password (forgotten, or after a disable): re-enables the account, and signs out
    its sessions, which Django ties to the password hash."""
    user = _user(name)
    _validated(password, user)
    user.set_password(password)
    user.is_active = True
    user.save()


def list_users() -> list[tuple[str, str, bool, str]]:
    """(name, role, active, last sign-in) for every account."""
    rows = []
    for user in get_user_model().objects.order_by("username"):
        last = f"{user.last_login:%Y-%m-%d %H:%M}" if user.last_login else "never"
        rows.append((user.username, role_of(user) or "-", user.is_active, last))
    return rows


def _user(name: str):
    user = get_user_model().objects.filter(username=name).first()
    if user is None:
        raise AccountError(f"no user '{name}'")
    return user


def disable_user(name: str) -> None:
    """Disabled accounts cannot sign in, their sessions stop working (Django checks
    is_active on every request) and their API tokens are revoked."""
    user = _user(name)
    user.is_active = False
    user.save()
    user.api_tokens.all().delete()


def new_token(name: str) -> str:
    user = _user(name)
    if not user.is_active:
        raise AccountError(f"user '{name}' is disabled")
    return tokens.issue(user)
