"""Review requests: the form's token (ours, this client's, fresh) and the record it becomes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import jsonschema
import pytest
from webpolicy.safeguarding.reviewrequests import (
    REASON_LIMIT,
    TOKEN_SECONDS,
    ReviewRequestError,
    ReviewTokens,
    Ticket,
    clean_reason,
    request_record,
)

from tests.unit.helpers import ADDONS

SCHEMA = json.loads((ADDONS / "webpolicy/safeguarding/event-record.schema.json").read_text())
NOW = 1_800_000_000.0
TICKET = Ticket("WP-7K3M9Q2XTB", "10.10.4.17", "bob", "Library PC 3", "learner", "user",
                "bet.example", "gambling", "Gambling", "v7", NOW)


def test_a_token_carries_its_ticket_for_its_client_only_until_it_expires():
    clock = [NOW]
    tokens = ReviewTokens(clock=lambda: clock[0])
    token = tokens.issue(TICKET)
    assert tokens.ticket(token, "10.10.4.17") == TICKET
    with pytest.raises(ReviewRequestError, match="another device"):
        tokens.ticket(token, "10.10.4.18")
    with pytest.raises(ReviewRequestError, match="not made by this gateway"):
        ReviewTokens(clock=lambda: NOW).ticket(token, "10.10.4.17")      # another key
    clock[0] = NOW + TOKEN_SECONDS + 1
    with pytest.raises(ReviewRequestError, match="expired"):
        tokens.ticket(token, "10.10.4.17")


@pytest.mark.parametrize("bad", ["", ".", "abc", "abc.def", "!!!.???", "a" * 5000])
def test_garbage_is_refused_with_the_one_error(bad):
    with pytest.raises(ReviewRequestError):
        ReviewTokens(clock=lambda: NOW).ticket(bad, "10.10.4.17")


def test_a_changed_payload_with_the_old_mac_is_refused():
    tokens = ReviewTokens(clock=lambda: NOW)
    _, mac = tokens.issue(TICKET).split(".")
    other = tokens.issue(dataclasses.replace(TICKET, host="other.example"))
    assert tokens.ticket(other, "10.10.4.17").host == "other.example"
    with pytest.raises(ReviewRequestError):
        tokens.ticket(other.split(".")[0] + "." + mac, "10.10.4.17")


def test_the_reason_is_one_clean_line_within_its_limit():
    assert clean_reason("  for my\r\nproject\t\x00\u202e now ") == "for my project now"
    assert clean_reason("\ud800x") == "\\ud800x"
    assert len(clean_reason("é" * 1000)) == REASON_LIMIT
    assert clean_reason("   ") == ""


def test_the_record_is_a_schema_1_record_that_counts_as_no_concern():
    when = dt.datetime(2026, 11, 25, 14, 3, 12, 345000, tzinfo=dt.UTC)
    record = request_record("WP-0000000001", TICKET, "for my project", "Mozilla/5.0", when)
    jsonschema.validate(record, SCHEMA)
    assert record["action"] == "review_requested" and record["request_for"] == TICKET.reference
    assert record["severity"] is None and record["statutory"] is False
    assert request_record("WP-0000000001", TICKET, "", when=when)["reason"] is None
