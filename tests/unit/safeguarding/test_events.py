"""events.py: the record each event leaves, its reference, and what it keeps or redacts."""

from __future__ import annotations

import datetime as dt
import json
import re

import jsonschema
import pytest

from tests.unit.helpers import ADDONS
from webpolicy.engine.decision import Decision, unavailable
from webpolicy.engine.watchlist import WatchHit
from webpolicy.lists.canonical import canonical_url
from webpolicy.safeguarding.events import (
    SCHEMA_VERSION,
    RequestFacts,
    display_url,
    event_action,
    make_record,
    new_event_id,
)

SCHEMA = json.loads((ADDONS / "webpolicy/safeguarding/event-record.schema.json").read_text())
WHEN = dt.datetime(2026, 11, 25, 9, 30, 0, 123456, tzinfo=dt.UTC)


def decision(action: str = "block", **fields) -> Decision:
    base = dict(profile="learner", profile_reason="network 10.10.0.0/16", list="adult",
                category="Pornography", severity="high", statutory=False, match="host",
                entry="adult.test", policy_version="p1")
    return Decision(action, **{**base, **fields})


def facts(url: str = "https://adult.test/page?x=1", **fields) -> RequestFacts:
    base = dict(client_ip="10.10.4.17", user="alice", method="GET", url=canonical_url(url),
                host="adult.test", user_agent="Mozilla/5.0")
    return RequestFacts(**{**base, **fields})


def test_references_are_short_unambiguous_and_unique():
    ids = {new_event_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"WP-[0-9A-HJKMNP-TV-Z]{10}", i) for i in ids)


@pytest.mark.parametrize("made, passthrough, flagged, action", [
    (decision("block"), False, False, "blocked"),
    (decision("block"), True, False, "refused_passthrough"),
    (decision("log"), False, False, "logged"),
    (decision("allow"), False, True, "flagged"),
    (unavailable("learner", "default", "p1"), False, False, "failed_closed"),
    (unavailable("staff", "default", "p1", on_error="allow"), False, False, "logged"),
])
def test_event_action(made, passthrough, flagged, action):
    assert event_action(made, passthrough, flagged) == action


def test_query_strings_are_redacted_unless_kept():
    url = canonical_url("https://a.test/p?name=Jo+Bloggs")
    assert display_url(url, "a.test", keep_query=False) == "https://a.test/p?[redacted]"
    assert display_url(url, "a.test", keep_query=True) == "https://a.test/p?name=Jo+Bloggs"
    assert display_url(None, "a.test:443", keep_query=False) == "a.test:443"


def test_a_block_record_holds_who_what_when_and_why():
    record = make_record("WP-0123456789", "blocked", decision(), facts(), device="LIB-PC-04",
                         when=WHEN)
    jsonschema.validate(record, SCHEMA)
    assert record["schema"] == SCHEMA_VERSION
    assert record["time"] == "2026-11-25T09:30:00.123Z"
    assert (record["user"], record["client_ip"], record["device"]) == ("alice", "10.10.4.17",
                                                                       "LIB-PC-04")
    assert record["url"] == "https://adult.test/page?[redacted]" and record["host"] == "adult.test"
    assert (record["list"], record["entry"], record["severity"]) == ("adult", "adult.test", "high")
    assert record["watchlist"] is None


def test_a_connection_record_without_url_names_the_host():
    connect = RequestFacts("10.10.4.17", None, "CONNECT", None, "bank.test:443")
    record = make_record("WP-0123456789", "refused_passthrough", decision(), connect, when=WHEN)
    jsonschema.validate(record, SCHEMA)
    assert (record["url"], record["host"], record["device"]) == ("bank.test:443",
                                                                 "bank.test:443", None)


def test_a_flagged_search_describes_the_watchlist_hit():
    hit = WatchHit(list="selfharm", category="Self-harm", severity="critical", term="hurt myself")
    record = make_record("WP-0123456789", "flagged", decision("allow", list=None, category=None,
                                                              severity=None, match=None,
                                                              entry=None),
                         facts(search_term="how to hurt myself"), watch=hit, when=WHEN)
    jsonschema.validate(record, SCHEMA)
    assert record["search_term"] == "how to hurt myself"
    assert (record["list"], record["category"], record["severity"], record["match"],
            record["entry"]) == ("selfharm", "Self-harm", "critical", "search_term", "hurt myself")
    assert record["watchlist"] == {"list": "selfharm", "category": "Self-harm",
                                   "severity": "critical", "term": "hurt myself"}


def test_records_say_how_the_person_was_identified():
    from webpolicy.identity.directory import SignedInUser
    from webpolicy.safeguarding.events import identified_by
    assert identified_by(None) == "network" and identified_by("") == "network"
    assert identified_by("alice") == "login"                        # --proxyauth: a plain name
    assert identified_by(SignedInUser("alice", {"cn=staff,dc=test"})) == "login"
    assert identified_by(SignedInUser("alice", set(), "kerberos")) == "kerberos"
