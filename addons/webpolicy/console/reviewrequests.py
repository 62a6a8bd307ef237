"""Learners' review requests in the console: the list IT and DSLs answer, and the answer.

A request is a `review_requested` record of the log (safeguarding/reviewrequests.py), indexed
like any record; `request_for` links it to the blocked attempt.  Both roles see and answer
requests (they are the "unblock requests" the `it` role exists for); only a DSL is linked on to
the blocked attempt's event page, which the `it` role may not open.  Listing requests and
answering one are written to the access log; an answer is kept with the request and shown on
the blocked attempt's page.  Nothing here changes the policy: "approved for review" is a
person's decision, recorded, and the change (if any) is made with `webpolicy apply`.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webpolicy.console.audit import record_access
from webpolicy.console.models import Event, ReviewAnswer
from webpolicy.console.roles import sees_safeguarding
from webpolicy.safeguarding.reviewrequests import REVIEW_REQUESTED

PAGE_SIZE = 50
NOTE_LIMIT = 2000


def requests_for(reference: str):
    """The review requests about one blocked attempt, oldest first."""
    return (Event.objects.filter(action=REVIEW_REQUESTED, record__request_for=reference)
            .select_related("answer").order_by("time"))


class AnswerForm(forms.Form):
    decision = forms.ChoiceField(choices=ReviewAnswer.Decision.choices)
    note = forms.CharField(required=False, max_length=NOTE_LIMIT,
                           widget=forms.TextInput(attrs={"placeholder": "note (optional)"}))


def answerer(view):
    return login_required(permission_required("console.answer_reviewrequests",
                                              raise_exception=True)(view))


@answerer
@require_GET
def review_requests(request: HttpRequest) -> HttpResponse:
    """Waiting requests first (oldest first: first asked, first answered), then answered."""
    show = request.GET.get("show", "waiting")
    events = Event.objects.filter(action=REVIEW_REQUESTED).select_related("answer")
    if show == "waiting":
        events = events.filter(answer__isnull=True).order_by("time")
    else:
        events = events.order_by("-time")
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    references = [e.record.get("request_for") for e in page if e.record.get("request_for")]
    attempts = {e.reference: e for e in Event.objects.filter(reference__in=references)}
    rows = [(e, attempts.get(e.record.get("request_for"))) for e in page]
    record_access(request.user, "requests", f"review requests ({show})", len(rows))
    return render(request, "console/review_requests.html", {
        "rows": rows, "page": page, "show": show, "form": AnswerForm(),
        "link_attempts": sees_safeguarding(request.user),
        "safeguarding": sees_safeguarding(request.user)})


@answerer
@require_POST
def answer(request: HttpRequest, reference: str) -> HttpResponse:
    event = Event.objects.filter(reference=reference.upper(), action=REVIEW_REQUESTED).first()
    if event is None:
        raise Http404("no such review request")
    form = AnswerForm(request.POST)
    if not form.is_valid():
        return HttpResponse("; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()),
                            status=400, content_type="text/plain; charset=utf-8")
    by = request.user.get_username()
    decision = ReviewAnswer.Decision(form.cleaned_data["decision"])
    note = form.cleaned_data["note"].strip()
    with transaction.atomic():
        if ReviewAnswer.objects.filter(request=event).exists():
            return HttpResponse("This request has been answered already.", status=409,
                                content_type="text/plain; charset=utf-8")
        ReviewAnswer.objects.create(request=event, decision=decision, note=note, author=by,
                                    time=dt.datetime.now(dt.UTC).replace(microsecond=0))
        record_access(request.user, "answer",
                      f"{event.reference} (for {event.record.get('request_for', '?')}, "
                      f"{event.host}): {decision.label}" + (f": {note}" if note else ""))
    return redirect("review_requests")
