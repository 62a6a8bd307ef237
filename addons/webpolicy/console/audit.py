"""The access log: every view of a person's events and every export, for DSLs to read.

Looking at a learner's record is itself something a DSL may have to account for (UK GDPR
accountability), so the console records it; the records here are names and filters, never
the events themselves.
"""

from __future__ import annotations

from webpolicy.console.models import AccessLog


def record_access(user, what: str, subject: str, count: int = 1) -> None:
    AccessLog.objects.create(username=user.get_username(), what=what, subject=subject[:300],
                             count=count)
