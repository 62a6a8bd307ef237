"""The console's database: an index of the log's records, and the DSLs' case work on them.

`Event` is a copy of the fields the pages filter and sort on; the full record stays in the
JSONL log (the system of record) and is kept here as `record` so an event page needs no file
read.  Erasing or expiring a record in the log removes it here at the next ingest.  Cases,
notes, the access log and API tokens exist only here.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower

from webpolicy.safeguarding.report import ACTION_WORDS

SEVERITY_ORDER = {"critical": 4, "high": 3, "medium": 2, "low": 1}


class Event(models.Model):
    """One safeguarding log record, as ingested from a daily file."""

    reference = models.CharField(max_length=32, unique=True)
    time = models.DateTimeField(db_index=True)
    user = models.CharField(max_length=200, blank=True)
    client_ip = models.CharField(max_length=64, blank=True)
    device = models.CharField(max_length=200, blank=True)
    profile = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=32)
    list = models.CharField(max_length=100, blank=True)
    category = models.CharField(max_length=200, blank=True)
    watch_category = models.CharField(max_length=200, blank=True)
    severity = models.CharField(max_length=16, blank=True)
    severity_rank = models.PositiveSmallIntegerField(default=0)   # for "this or higher"
    statutory = models.BooleanField(default=False)
    priority = models.PositiveSmallIntegerField(default=0)   # the inbox's order: see ingest.py
    fault = models.BooleanField(default=False)     # a filter fault: all the `it` role sees
    host = models.CharField(max_length=300, blank=True)
    url = models.TextField(blank=True)
    search_term = models.TextField(blank=True)
    record = models.JSONField()
    source_file = models.CharField(max_length=64, db_index=True)
    # The log directory (one per gateway) holding the record: where its reviews are written.
    # NULL only in a database from before several directories, until the next ingest adopts
    # those rows (ingest.py); nullable so that adding it is instant on a million rows.
    source_dir = models.CharField(max_length=1024, null=True, blank=True)

    class Meta:
        ordering = ["-time"]
        # What the pages filter and sort by, at a million events (docs/benchmarks.md); every
        # index slows ingest, so no index on a column that matches a large share of rows
        # (action, severity) and none the pages do not use.
        indexes = [
            models.Index(fields=["-priority", "-time"], name="inbox_order"),
            # IT's inbox: faults only (a few in a hundred), in inbox order
            models.Index(fields=["-priority", "-time"], name="fault_inbox_order",
                         condition=Q(fault=True)),
            # a person's timeline: the login in any case (filters.py), newest first
            models.Index(Lower("user"), F("time").desc(), name="user_timeline"),
            models.Index(fields=["client_ip", "-time"], name="client_timeline"),
        ]
        permissions = [
            ("view_safeguarding", "See learners' safeguarding events, searches and cases"),
            ("view_faults", "See filter faults (failed closed, failed open)"),
            ("export_events", "Export events as CSV"),
            ("view_accesslog", "Read the console's access log"),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def action_words(self) -> str:
        return ACTION_WORDS.get(self.action, self.action)

    @property
    def answer_or_none(self) -> ReviewAnswer | None:
        """A review request's answer, or None while it waits."""
        try:
            return self.answer
        except ReviewAnswer.DoesNotExist:
            return None

    @property
    def case_or_none(self) -> Case | None:
        """The case, or None before anyone acted on the event (templates cannot catch)."""
        try:
            return self.case
        except Case.DoesNotExist:
            return None


class Case(models.Model):
    """The DSL's work on one event: at most one case per event, created on first action."""

    class Status(models.TextChoices):
        NEW = "new", "New"
        IN_PROGRESS = "in_progress", "In progress"
        CLOSED = "closed", "Closed"

    class Outcome(models.TextChoices):
        CONCERN_CONFIRMED = "concern_confirmed", "Concern confirmed"
        NO_CONCERN = "no_concern", "No concern"
        REFERRED = "referred", "Referred"
        OTHER = "other", "Other"

    event = models.OneToOneField(Event, on_delete=models.CASCADE, related_name="case")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    outcome = models.CharField(max_length=32, choices=Outcome.choices, blank=True)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="cases")
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.event.reference}: {self.status}"


class Note(models.Model):
    """A note on a case: written in the console, or imported from `webpolicy review`."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="notes")
    author = models.CharField(max_length=150)
    time = models.DateTimeField()
    text = models.TextField()
    source = models.CharField(max_length=16, default="console")   # console | cli
    # "time|by|note" of the matching reviews.jsonl line, so a review is never imported twice
    review_key = models.CharField(max_length=600, blank=True, db_index=True)

    class Meta:
        ordering = ["time", "id"]


class ReviewAnswer(models.Model):
    """IT's or a DSL's answer to a learner's review request (a `review_requested` event).

    An answer is a record of what a person decided, nothing more: approving "for review"
    never changes the policy or unblocks anything (the policy is changed deliberately, with
    `webpolicy apply`, by whoever the centre allows)."""

    class Decision(models.TextChoices):
        APPROVED = "approved", "Approved for review"
        DECLINED = "declined", "Declined"

    request = models.OneToOneField(Event, on_delete=models.CASCADE, related_name="answer")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    note = models.TextField(blank=True)
    author = models.CharField(max_length=150)
    time = models.DateTimeField()

    class Meta:
        permissions = [("answer_reviewrequests",
                        "See learners' review requests and answer them")]


class IngestState(models.Model):
    """How far each daily file (and reviews.jsonl) of each log directory has been read:
    incremental ingest.  Two gateways write files of the same names (one per day), so the
    key is the directory and the name."""

    directory = models.CharField(max_length=1024, default="")   # "" before migration 0004
    name = models.CharField(max_length=64)
    inode = models.BigIntegerField(default=0)
    offset = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["directory", "name"],
                                               name="ingest_state_directory_name")]


class AccessLog(models.Model):
    """Who looked at whose events, and who exported what: DSLs can read it in the console."""

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    username = models.CharField(max_length=150)
    what = models.CharField(max_length=32)       # event, person, export, api ...
    subject = models.CharField(max_length=300)   # a reference, a person, a filter
    count = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-time", "-id"]


class ApiToken(models.Model):
    """A bearer token for the API, stored as a keyed digest (the token is shown once)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    digest = models.CharField(max_length=128, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
