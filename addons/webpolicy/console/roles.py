"""Roles as Django groups with permissions, and what each role may see.

Two roles: `dsl` (Designated Safeguarding Leads: every event, cases, exports, the access log)
and `it` (technical staff: filter faults and learners' review requests, never a learner's
safeguarding event or search).  Every page and API call asks `visible_events()` or `can_see()`, so the rule lives
in one place.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, Permission
from django.db.models import QuerySet

from webpolicy.console.models import Event

DSL = "dsl"
IT = "it"
ROLES = (DSL, IT)
ROLE_PERMISSIONS = {
    DSL: ("view_safeguarding", "view_faults", "export_events", "view_accesslog", "change_case",
          "answer_reviewrequests"),
    IT: ("view_faults", "answer_reviewrequests"),
}
# What a user without view_safeguarding never sees, even on a fault.
PRIVATE_FIELDS = ("search_term", "watchlist")


def ensure_roles() -> None:
    """Create the groups and give them exactly their permissions (idempotent)."""
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(Permission.objects.filter(content_type__app_label="console",
                                                        codename__in=codenames))


def role_of(user: AbstractBaseUser | AnonymousUser) -> str | None:
    names = set(user.groups.values_list("name", flat=True)) if user.is_authenticated else set()
    return next((role for role in ROLES if role in names), None)


def sees_safeguarding(user) -> bool:
    return user.has_perm("console.view_safeguarding")


def visible_events(user) -> QuerySet[Event]:
    """The events this user may see at all."""
    if sees_safeguarding(user):
        return Event.objects.all()
    if user.has_perm("console.view_faults"):
        return Event.objects.filter(fault=True)
    return Event.objects.none()


def can_see(user, event: Event) -> bool:
    return sees_safeguarding(user) or (event.fault and user.has_perm("console.view_faults"))


def shown_record(user, event: Event) -> dict:
    """The record as this user may read it: without search terms for the `it` role."""
    record = dict(event.record)
    if not sees_safeguarding(user):
        for name in PRIVATE_FIELDS:
            if name in record:
                record[name] = None
    return record
