"""The JSON API, for bearer tokens only (`webpolicy users token NAME`).

Session cookies are deliberately not accepted here: a cookie would make every POST a CSRF
target, while a bearer token is never sent by the browser on its own, so the API needs no
CSRF token.  No token (or an unknown or disabled one): 401.  An `it` token asking for a
safeguarding event: 403.
"""

from __future__ import annotations

import json
from functools import wraps

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from webpolicy.console import tokens
from webpolicy.console.audit import record_access
from webpolicy.console.cases import CaseError, update_case
from webpolicy.console.filters import CappedPaginator, EventFilter, inbox_order
from webpolicy.console.models import Case, Event
from webpolicy.console.roles import can_see, shown_record, visible_events

MAX_LIMIT = 500


def token_required(view):
    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        user = tokens.user_for(request.headers.get("Authorization", ""))
        if user is None:
            response = JsonResponse({"error": "a valid bearer token is required"}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="webpolicy"'
            return response
        if not user.has_perm("console.view_faults"):
            return JsonResponse({"error": "this account has no role"}, status=403)
        request.user = user
        return view(request, *args, **kwargs)
    return wrapper


def event_json(user, event: Event) -> dict:
    case = getattr(event, "case", None) if _has_case(event) else None
    return {
        "reference": event.reference,
        "record": shown_record(user, event),
        "case": None if case is None else {
            "status": case.status, "outcome": case.outcome or None,
            "assignee": case.assignee.get_username() if case.assignee else None,
            "notes": [{"author": n.author, "time": n.time.isoformat(), "text": n.text}
                      for n in case.notes.all()]},
    }


def _has_case(event: Event) -> bool:
    try:
        return event.case is not None
    except Case.DoesNotExist:
        return False


@token_required
@require_GET
def events(request: HttpRequest) -> JsonResponse:
    """Events matching the CLI-style filters, inbox order; `limit` (<= 500) and `offset`.
    `total` counts matches up to the pages' cap (5,000), `total_capped` says there are more:
    counting every match of a million events costs most of a second on each call, counting
    to the cap stops early, as the pages do (CappedPaginator)."""
    form = EventFilter(request.GET)
    if not form.is_valid():
        return JsonResponse({"error": "bad filter", "fields": form.errors}, status=400)
    try:
        limit = min(MAX_LIMIT, max(1, int(request.GET.get("limit", 100))))
        offset = max(0, int(request.GET.get("offset", 0)))
    except ValueError:
        return JsonResponse({"error": "limit and offset are numbers"}, status=400)
    found = inbox_order(form.apply(visible_events(request.user)))
    counted = found[:CappedPaginator.cap + 1].count()    # in page order: stops early
    page = found.select_related("case", "case__assignee").prefetch_related("case__notes")
    items = [event_json(request.user, e) for e in page[offset:offset + limit]]
    record_access(request.user, "api-events", form.describe(), len(items))
    return JsonResponse({"total": min(counted, CappedPaginator.cap),
                         "total_capped": counted > CappedPaginator.cap,
                         "offset": offset, "events": items})


def _event_for(request: HttpRequest, reference: str) -> Event | JsonResponse:
    event = Event.objects.filter(reference=reference.upper()).first()
    if event is None:
        return JsonResponse({"error": "no such event"}, status=404)
    if not can_see(request.user, event):
        return JsonResponse({"error": "not allowed to see this event"}, status=403)
    return event


@token_required
@require_GET
def event(request: HttpRequest, reference: str) -> JsonResponse:
    found = _event_for(request, reference)
    if isinstance(found, JsonResponse):
        return found
    record_access(request.user, "api-event", f"{found.reference} ({found.user or found.client_ip})")
    return JsonResponse(event_json(request.user, found))


@token_required
@require_POST
def review(request: HttpRequest, reference: str) -> JsonResponse:
    """JSON {status, outcome, note}: the same change as the event page's form."""
    found = _event_for(request, reference)
    if isinstance(found, JsonResponse):
        return found
    if not request.user.has_perm("console.change_case"):
        return JsonResponse({"error": "only a DSL can change a case"}, status=403)
    try:
        body = json.loads(request.body or b"{}")
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return JsonResponse({"error": "send a JSON object {status, outcome, note}"}, status=400)
    try:
        update_case(found, request.user.get_username(), body.get("status") or None,
                    body.get("outcome") or None, str(body.get("note") or ""))
    except CaseError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    found = Event.objects.get(pk=found.pk)
    return JsonResponse(event_json(request.user, found))
