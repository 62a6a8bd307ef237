"""The inbox, export and API filters: the same criteria as `webpolicy report`, on the index.

A mistyped filter is an error shown to the DSL, never a silently empty list that could be
read as "nothing happened" (the CLI's rule too).
"""

from __future__ import annotations

import ipaddress

from django import forms
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet, Value
from django.db.models.functions import Lower
from django.utils.functional import cached_property

from webpolicy.console.models import Case, Event
from webpolicy.policy.severity import SEVERITY_RANK
from webpolicy.safeguarding.logstore import same_ip
from webpolicy.safeguarding.report import ACTIONS, parse_when

STATUSES = (("open", "Not closed"), ("all", "All"), *Case.Status.choices)


class EventFilter(forms.Form):
    since = forms.CharField(required=False, help_text="a date, a time or an age: 7d, 12h")
    until = forms.CharField(required=False)
    user = forms.CharField(required=False, max_length=200)
    client = forms.CharField(required=False, max_length=64, help_text="an address or network")
    profile = forms.CharField(required=False, max_length=100)
    category = forms.CharField(required=False, max_length=200)
    severity = forms.ChoiceField(required=False,
                                 choices=[("", "any")] + [(s, f"{s} or higher") for s in SEVERITY_RANK])
    action = forms.CharField(required=False, help_text=", ".join(ACTIONS))
    status = forms.ChoiceField(required=False, choices=STATUSES)
    id = forms.CharField(required=False, label="Reference")
    unreviewed = forms.BooleanField(required=False, label="Not closed",
                                    help_text="the CLI's --unreviewed: the same as status open")

    def clean_since(self):
        return self._when("since", end=False)

    def clean_until(self):
        return self._when("until", end=True)

    def _when(self, name: str, end: bool):
        text = self.cleaned_data.get(name, "").strip()
        if not text:
            return None
        try:
            return parse_when(text, end=end)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_client(self):
        text = self.cleaned_data.get("client", "").strip()
        if text:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise forms.ValidationError(f"'{text}' is not an address or network") from None
        return text

    def clean_action(self):
        actions = tuple(a.strip() for a in self.cleaned_data.get("action", "").split(",") if a.strip())
        unknown = [a for a in actions if a not in ACTIONS]
        if unknown:
            raise forms.ValidationError(f"unknown action {', '.join(unknown)} "
                                        f"(choose from {', '.join(ACTIONS)})")
        return actions

    def apply(self, events: QuerySet[Event], default_status: str = "all") -> QuerySet[Event]:
        """The events matching every given criterion (call after is_valid())."""
        data = self.cleaned_data
        if data.get("since"):
            events = events.filter(time__gte=data["since"])
        if data.get("until"):
            events = events.filter(time__lt=data["until"])
        if data.get("user"):                 # any case, as the index user_timeline has it
            events = events.alias(user_lower=Lower("user")).filter(
                user_lower=Lower(Value(data["user"].strip())))
        if data.get("client"):
            events = _client(events, data["client"])
        if data.get("profile"):
            events = events.filter(profile=data["profile"].strip())
        if data.get("category"):
            text = data["category"].strip()
            events = events.filter(Q(category__icontains=text) | Q(watch_category__icontains=text))
        if data.get("severity"):
            events = events.filter(severity_rank__gte=SEVERITY_RANK[data["severity"]])
        if data.get("action"):
            events = events.filter(action__in=data["action"])
        if data.get("id"):
            events = events.filter(reference__in=[i.strip().upper()
                                                  for i in data["id"].split(",") if i.strip()])
        status = "open" if data.get("unreviewed") else data.get("status") or default_status
        if status == "open":
            events = events.filter(Q(case__isnull=True) | ~Q(case__status=Case.Status.CLOSED))
        elif status == Case.Status.NEW:
            events = events.filter(Q(case__isnull=True) | Q(case__status=Case.Status.NEW))
        elif status != "all":
            events = events.filter(case__status=status)
        return events

    def describe(self) -> str:
        """The filter in words, for the access log."""
        parts = [f"{name}={value}" for name, value in self.data.items()
                 if name in self.fields and value]
        return "; ".join(parts) or "all"


def _client(events: QuerySet[Event], wanted: str) -> QuerySet[Event]:
    if "/" not in wanted:
        return events.filter(client_ip=str(ipaddress.ip_address(wanted)))
    addresses = {ip for ip in events.values_list("client_ip", flat=True).distinct()
                 if same_ip(ip, wanted)}
    return events.filter(client_ip__in=addresses)


def inbox_order(events: QuerySet[Event]) -> QuerySet[Event]:
    """Statutory, then critical, then high first; newest first within each."""
    return events.order_by("-priority", "-time")


class CappedPaginator(Paginator):
    """Pages that count at most CAP matches.  Counting every match of an unfiltered inbox
    means reading a million rows (most of a second); counting to CAP stops early, so a page
    costs the same at any size.  Past CAP the page says "more than" and the DSL narrows the
    filter (a date, a person) to reach older events."""

    cap = 5000

    @cached_property
    def _found(self) -> int:
        # In the page's own order: the database walks the same index as for the page and
        # stops after cap + 1 matches among the newest, instead of scanning from the oldest.
        return self.object_list[:self.cap + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._found, self.cap)

    @cached_property
    def capped(self) -> bool:
        return self._found > self.cap
