"""The console's pages: inbox, event and case, person timeline, CSV export, access log.

Server-rendered, no JavaScript.  Every view asks roles.py what the user may see; a page about
an event the user may not see answers 404, the same as a reference that does not exist, so an
`it` account cannot even learn which references are safeguarding events.
"""

from __future__ import annotations

import io
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from webpolicy.console.audit import record_access
from webpolicy.console.cases import CaseError, update_case
from webpolicy.console.filters import CappedPaginator, EventFilter, inbox_order
from webpolicy.console.ingest import configured_directories
from webpolicy.console.models import AccessLog, Case, Event
from webpolicy.console.reviewrequests import requests_for
from webpolicy.console.roles import DSL, can_see, sees_safeguarding, shown_record, visible_events
from webpolicy.console.settings import PACKAGE
from webpolicy.safeguarding.logstore import Review
from webpolicy.safeguarding.report import write_csv
from webpolicy.safeguarding.reviewrequests import REVIEW_REQUESTED

PAGE_SIZE = 50


def role_required(view):
    """Signed in and in a role: a valid account with no role sees nothing."""
    return login_required(permission_required("console.view_faults", raise_exception=True)(view))


@require_GET
def stylesheet(request: HttpRequest) -> HttpResponse:
    """The one stylesheet, served by the console itself: nothing comes from the internet."""
    return HttpResponse((PACKAGE / "static" / "console.css").read_bytes(),
                        content_type="text/css; charset=utf-8")


@role_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    form = EventFilter(request.GET or None)
    events = visible_events(request.user).select_related("case")
    if form.is_bound and not form.is_valid():
        page = Paginator(Event.objects.none(), PAGE_SIZE).get_page(1)
    else:
        if not form.is_bound:
            form = EventFilter({"status": "open"})
            form.is_valid()
        events = form.apply(events, "open")
        if not form.cleaned_data.get("action"):   # review requests have their own page
            events = events.exclude(action=REVIEW_REQUESTED)
        page = CappedPaginator(inbox_order(events), PAGE_SIZE).get_page(request.GET.get("page"))
        if form.cleaned_data.get("user") or form.cleaned_data.get("client"):
            # filtered to one person, the inbox is that person's timeline
            record_access(request.user, "person", form.describe(), page.paginator.count)
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "console/inbox.html", {
        "form": form, "page": page, "query": query.urlencode(),
        "safeguarding": sees_safeguarding(request.user)})


class CaseForm(forms.Form):
    status = forms.ChoiceField(choices=Case.Status.choices)
    outcome = forms.ChoiceField(choices=[("", "-")] + list(Case.Outcome.choices), required=False)
    assignee = forms.ModelChoiceField(queryset=None, required=False, empty_label="nobody")
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                           max_length=5000)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].queryset = get_user_model().objects.filter(
            groups__name=DSL, is_active=True).order_by("username")


def _visible_event(request: HttpRequest, reference: str) -> Event:
    event = Event.objects.filter(reference=reference.upper()).select_related("case").first()
    if event is None or not can_see(request.user, event):
        raise Http404("no such event")
    return event


@role_required
@require_http_methods(["GET", "POST"])
def event_page(request: HttpRequest, reference: str) -> HttpResponse:
    event = _visible_event(request, reference)
    case = Case.objects.filter(event=event).first()
    if request.method == "POST":
        if not request.user.has_perm("console.change_case"):
            return HttpResponse("Only a DSL can change a case.", status=403)
        form = CaseForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                update_case(event, request.user.get_username(), data["status"],
                            data["outcome"] or None, data["note"], data["assignee"], assign=True)
                return redirect("event", reference=event.reference)
            except CaseError as exc:
                form.add_error(None, str(exc))
    else:
        record_access(request.user, "event", f"{event.reference} ({_person(event)})")
        form = CaseForm(initial={"status": case.status if case else Case.Status.NEW,
                                 "outcome": case.outcome if case else "",
                                 "assignee": case.assignee_id if case else None})
    return render(request, "console/event.html", {
        "event": event, "case": case, "notes": case.notes.all() if case else [],
        "record": _fields(shown_record(request.user, event)), "form": form,
        "requests": requests_for(event.reference), "gateway": _gateway(event),
        "can_edit": request.user.has_perm("console.change_case"),
        "safeguarding": sees_safeguarding(request.user)})


def _gateway(event: Event) -> str | None:
    """The log directory (gateway) the record came from, when the console follows several."""
    return event.source_dir if len(configured_directories()) > 1 else None


def _fields(record: dict) -> list[tuple[str, str | None]]:
    """The record's fields for the page, a nested one (watchlist) as `key: value` text."""
    def text(value):
        if isinstance(value, dict):
            return ", ".join(f"{k}: {v}" for k, v in value.items())
        if isinstance(value, bool):
            return "yes" if value else "no"
        return value
    return [(name, text(value)) for name, value in sorted(record.items())]


def _person(event: Event) -> str:
    return event.user or event.client_ip or "unknown"


@role_required
@require_GET
def person(request: HttpRequest) -> HttpResponse:
    """Everything one person (a login, or a client address) did, newest first."""
    user, client = request.GET.get("user", "").strip(), request.GET.get("client", "").strip()
    form = EventFilter({"user": user} if user else {"client": client})
    if not (user or client) or not form.is_valid():
        raise Http404("say whose timeline: ?user=NAME or ?client=ADDRESS")
    events = form.apply(visible_events(request.user)).select_related("case").order_by("-time")
    page = CappedPaginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    record_access(request.user, "person", f"user {user}" if user else f"client {client}",
                  page.paginator.count)
    return render(request, "console/person.html", {
        "who": user or client, "page": page,
        "query": urlencode({"user": user} if user else {"client": client}),
        "safeguarding": sees_safeguarding(request.user)})


def reviews_of(events: list[Event]) -> dict[str, list[Review]]:
    """Notes as the CSV's Reviewed/Review notes columns expect them."""
    found: dict[str, list[Review]] = {}
    for event in events:
        case = event.case_or_none
        if case is not None:
            found[event.reference] = [Review(event.reference, n.time.isoformat(), n.author, n.text)
                                      for n in case.notes.all()]
    return found


@login_required
@permission_required("console.export_events", raise_exception=True)
@require_GET
def export_csv(request: HttpRequest) -> HttpResponse:
    """The current filter as CSV with CPOMS's columns (report.py), UTF-8 with a BOM."""
    form = EventFilter(request.GET)
    if not form.is_valid():
        return HttpResponse("; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()),
                            status=400, content_type="text/plain; charset=utf-8")
    events = list(form.apply(visible_events(request.user)).select_related("case")
                  .prefetch_related("case__notes").order_by("time"))
    out = io.StringIO()
    write_csv([e.record for e in events], reviews_of(events), out)
    record_access(request.user, "export", form.describe(), len(events))
    name = f"webpolicy-{timezone.localtime():%Y%m%d-%H%M}.csv"
    return FileResponse(io.BytesIO(out.getvalue().encode("utf-8-sig")), as_attachment=True,
                        filename=name, content_type="text/csv; charset=utf-8")


@login_required
@permission_required("console.view_accesslog", raise_exception=True)
@require_GET
def access_log(request: HttpRequest) -> HttpResponse:
    page = Paginator(AccessLog.objects.all(), 100).get_page(request.GET.get("page"))
    return render(request, "console/accesslog.html", {"page": page, "safeguarding": True})


def denied(request: HttpRequest, exception=None) -> HttpResponse:
    return render(request, "console/denied.html", status=403)
