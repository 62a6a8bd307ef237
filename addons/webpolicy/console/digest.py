"""The daily or weekly digest e-mail to DSLs: counts and links to the console, never names.

`webpolicy console digest [--period day|week]` (cli/console.py) brings the index up to date,
counts what the period brought and what still waits, and mails it through the SMTP server of
alerts.email (safeguarding/alerts.py `send_email`: STARTTLS, login, the password from the
environment) to console.digest.to.  A timer runs it (docs/webpolicy-digest.timer).

E-mail is read on phones and lock screens and forwarded: the subject and body carry counts,
the organisation and links only, no learner's name, address, search or site.  Each digest is
written to the console's access log (what was counted, for whom), like an export.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.message import EmailMessage

from django.db.models import Q

from webpolicy.console.models import AccessLog, Case, Event
from webpolicy.safeguarding.reviewrequests import REVIEW_REQUESTED

PERIODS = {"day": dt.timedelta(days=1), "week": dt.timedelta(days=7)}
ADJECTIVE = {"day": "Daily", "week": "Weekly"}


@dataclass(frozen=True)
class Digest:
    period: str
    since: dt.datetime
    until: dt.datetime
    counts: tuple[tuple[str, int, str], ...]     # (what, how many, console path)


def _open(events):
    return events.filter(Q(case__isnull=True) | ~Q(case__status=Case.Status.CLOSED))


def gather(period: str, now: dt.datetime | None = None) -> Digest:
    """The counts for the period ending `now`, and what waits whenever it came."""
    until = now or dt.datetime.now(dt.UTC)
    since = until - PERIODS[period]
    events = Event.objects.exclude(action=REVIEW_REQUESTED)
    recent = events.filter(time__gte=since, time__lt=until)
    requests = Event.objects.filter(action=REVIEW_REQUESTED)
    counts = (
        ("Events recorded", recent.filter(fault=False).count(), "/?status=all"),
        ("Statutory (CTIRU, IWF) blocks", recent.filter(statutory=True).count(),
         "/?status=all&severity=critical"),
        ("Critical or high severity", recent.filter(priority__gte=3).count(),
         "/?status=all&severity=high"),
        ("Flagged searches", recent.filter(action="flagged").count(),
         "/?status=all&action=flagged"),
        ("Filter faults", recent.filter(fault=True).count(), "/?status=all&action=failed_closed"),
        ("Cases closed", Case.objects.filter(status=Case.Status.CLOSED, updated__gte=since,
                                             updated__lt=until).count(), "/?status=closed"),
        ("Serious events still open (any date)", _open(events.filter(priority__gte=3)).count(),
         "/"),
        ("Review requests waiting (any date)", requests.filter(answer__isnull=True).count(),
         "/review-requests/"),
    )
    return Digest(period, since, until, counts)


def message(digest: Digest, console_url: str, organisation: str, sender: str,
            to: tuple[str, ...]) -> EmailMessage:
    base = console_url.rstrip("/")
    title = f"{ADJECTIVE[digest.period]} safeguarding digest"
    email = EmailMessage()
    email["Subject"] = f"{title}: {organisation}" if organisation else title   # no names
    email["From"] = sender
    email["To"] = ", ".join(to)
    local = "%d %b %Y %H:%M UTC"
    lines = [f"{title} from the {organisation or 'web filter'} web filter",
             f"{digest.since:{local}} to {digest.until:{local}}", ""]
    width = max(len(what) for what, _, _ in digest.counts)
    for what, count, path in digest.counts:
        lines.append(f"{what:<{width}}  {count:>6}  {base}{path}")
    lines += ["", f"Open the console: {base}/",
              "This e-mail holds counts only; names and details are in the console, which "
              "records who looks at them."]
    email.set_content("\n".join(lines) + "\n")
    return email


def record_sent(digest: Digest, recipients: int) -> None:
    AccessLog.objects.create(username="webpolicy digest", what="digest",
                             subject=f"{digest.period} digest (counts only) to "
                                     f"{recipients} recipient(s)",
                             count=sum(count for _, count, _ in digest.counts))
