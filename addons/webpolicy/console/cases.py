"""Case work on an event, shared by the event page and the API.

Closing a case is also a review in `reviews.jsonl`, so `webpolicy report --unreviewed` and
the console agree on what is done; reopening a closed case appends a `reopened` line there,
so the record is unreviewed again for the CLI too.  The line's key is kept on the note so
ingest does not import it back as a second note.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from django.db import transaction

from webpolicy.console.ingest import configured_directories, review_key
from webpolicy.console.models import Case, Event, Note
from webpolicy.safeguarding.logstore import ReviewStore


class CaseError(ValueError):
    """A request the case cannot take (unknown status or outcome, closing without outcome)."""


def update_case(event: Event, by: str, status: str | None = None, outcome: str | None = None,
                note: str = "", assignee=None, assign: bool = False) -> Case:
    """Apply a DSL's change; a closed case needs an outcome."""
    if status and status not in Case.Status.values:
        raise CaseError(f"unknown status '{status}' (choose from {', '.join(Case.Status.values)})")
    if outcome and outcome not in Case.Outcome.values:
        raise CaseError(f"unknown outcome '{outcome}' (choose from {', '.join(Case.Outcome.values)})")
    case = Case.objects.filter(event=event).first() or Case(event=event)
    closing = status == Case.Status.CLOSED and case.status != Case.Status.CLOSED
    reopening = bool(status) and status != Case.Status.CLOSED and case.status == Case.Status.CLOSED
    if (status or case.status) == Case.Status.CLOSED and not (outcome or case.outcome):
        raise CaseError("say the outcome when closing a case")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    store = ReviewStore(_log_directory(event))
    with transaction.atomic():
        case.status = status or case.status
        case.outcome = outcome or case.outcome
        if assign:
            case.assignee = assignee
        case.save()
        note = note.strip()
        key = ""
        if closing:
            text = f"Closed ({Case.Outcome(case.outcome).label})" + (f": {note}" if note else "")
            review = {"time": now.isoformat().replace("+00:00", "Z"), "by": by, "note": text}
            key = review_key(review)
            store.add([event.record], text, by, now=now)
        elif reopening:
            text = f"Reopened ({Case.Status(case.status).label})" + (f": {note}" if note else "")
            review = {"time": now.isoformat().replace("+00:00", "Z"), "by": by, "note": text}
            key = review_key(review)
            store.add([event.record], text, by, now=now, reopened=True)
            note = text
        if note or closing:
            Note.objects.create(case=case, author=by, time=now, text=note or "Closed",
                                review_key=key)
    return case


def _log_directory(event: Event) -> Path:
    """The directory holding the event's record: its review goes beside it, as `webpolicy
    review` writes it, so that gateway's `report --unreviewed` and erasure see it."""
    return Path(event.source_dir) if event.source_dir else configured_directories()[0]
