"""Issue #15: no text a client sends can suppress its record or break what reads it.

mitmproxy hands the add-on header values decoded with surrogateescape, so a User-Agent with a
Latin-1 byte arrives as a lone surrogate.  Before safetext.py the writer dropped such a record
(the block page was served, the DSL never saw the attempt, no alert went), and the CSV, JSON,
HTML and table outputs and the e-mail alert all raised on it.  Each test here failed then.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tempfile
from email import message_from_bytes
from pathlib import Path

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.helpers import ADDONS
from webpolicy.engine.decision import Decision
from webpolicy.lists.canonical import canonical_url
from webpolicy.policy.model import AlertSettings, EmailSettings
from webpolicy.safeguarding.alerts import Alert, AlertRules, email_message, plain_text, webhook_body
from webpolicy.safeguarding.events import RequestFacts, make_record
from webpolicy.safeguarding.htmlreport import write_html
from webpolicy.safeguarding.logstore import ReviewStore, log_file_name, read_records
from webpolicy.safeguarding.logwriter import LogWriter
from webpolicy.safeguarding.report import summary, write_csv, write_json, write_sites, write_table
from webpolicy.safeguarding.safetext import clean_text

DAY = dt.datetime(2026, 11, 25, 14, 3, 12, tzinfo=dt.UTC)
SCHEMA = json.loads((ADDONS / "webpolicy/safeguarding/event-record.schema.json").read_text())
EMAIL = EmailSettings(host="smtp.test", sender="filter@college.test", to=("dsl@college.test",))

LATIN1_UA = "Mozilla/5.0 (Zo\udceb's laptop)"       # b"Zo\xeb" as mitmproxy decodes it
HOSTILE = {
    "user_agent": LATIN1_UA + "\x1b[2J\x1b]0;pwned\x07\n\r\x00\u2028\ud800" + "A" * 100_000,
    "user": "zo\udceb\x1b[31m",
    "url": "https://bad.test/\udcff\udcfe?q=\x1b[1m",
    "host": "bad.test\udcc3",
    "search_term": "self harm \udc80\x85",
    "method": "G\udce9T",
    "client_ip": "10.0.0.1\x00",
    "entry": "bad.test\ud83d",
    "category": "Gambling\x1b[0m",
}


def clock():
    return DAY


def base_record(**fields) -> dict:
    record = {"schema": 1, "id": "WP-0123456789", "time": "2026-11-25T14:03:12.345Z",
              "client_ip": "10.10.4.17", "user": "alice", "device": None, "profile": "learner",
              "profile_reason": "default", "action": "blocked", "method": "GET",
              "url": "https://bad.test/page", "host": "bad.test", "search_term": None,
              "list": "gambling", "category": "Gambling", "severity": "critical",
              "statutory": False, "match": "host", "entry": "bad.test", "user_agent": "curl/8",
              "policy_version": "t1", "watchlist": None}
    return {**record, **fields}


def on_disk(directory: Path) -> list[bytes]:
    return (directory / log_file_name(DAY.date())).read_bytes().splitlines(keepends=True)


def outputs(records: list[dict]) -> dict[str, bytes]:
    """Every export and alert body a record reaches, encoded as it is sent or saved."""
    found = {}
    for name, emit in (("csv", lambda out: write_csv(records, {}, out)),
                       ("json", lambda out: write_json(records, {}, out)),
                       ("table", lambda out: write_table(records, {}, out, width=100)),
                       ("sites", lambda out: write_sites(records, out)),
                       ("html", lambda out: write_html(records, {}, out, now=DAY))):
        buffer = io.BytesIO()
        stream = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
        emit(stream)
        stream.flush()
        found[name] = buffer.getvalue()
    found["summary"] = summary(records, {}).encode("utf-8")
    for record in records:
        alert = Alert("statutory", str(record.get("category")), "who", record)
        found["email"] = email_message(alert, EMAIL, "College").as_bytes()
        found["plain"] = plain_text(alert).encode("utf-8")
        for style in ("json", "slack", "teams"):
            found[style] = json.dumps(webhook_body(alert, style), ensure_ascii=False).encode()
    return found


def test_a_user_agent_that_is_not_utf8_is_recorded_not_dropped(tmp_path):
    log = LogWriter(tmp_path, 30, clock=clock)
    log.write(base_record(user_agent=LATIN1_UA))
    log.close()
    assert log.write_errors == 0
    [line] = on_disk(tmp_path)
    record = json.loads(line)
    assert record["user_agent"] == "Mozilla/5.0 (Zo\\xeb's laptop)"   # the byte, readable


def test_every_request_field_is_cleaned_on_disk_and_stays_schema_valid(tmp_path):
    decision = Decision("block", profile="learner", profile_reason="default", list="gambling",
                        category="Gambling", severity="medium", match="host",
                        entry="bad.test", policy_version="t1")
    facts = RequestFacts(HOSTILE["client_ip"], HOSTILE["user"], HOSTILE["method"],
                         canonical_url("https://bad.test/x"), "bad.test",
                         HOSTILE["user_agent"], HOSTILE["search_term"] * 40)
    log = LogWriter(tmp_path, 30, clock=clock)
    log.write(make_record("WP-0123456789", "blocked", decision, facts, when=DAY))
    log.close()
    [line] = on_disk(tmp_path)
    record = json.loads(line)
    jsonschema.validate(record, SCHEMA)
    assert "\\x1b" in record["user_agent"] and "\x1b" not in record["user_agent"]
    assert record["user"] == "zo\\xeb\\x1b[31m"
    assert len(record["user_agent"]) == 2048                # 100 kB cut to its limit
    assert record["user_agent"].endswith(" more characters]")


def test_hostile_text_in_every_field_reaches_the_log_exports_and_alerts(tmp_path):
    record = base_record(**HOSTILE, watchlist={"list": "w\udcff", "category": "C\x1b",
                                               "severity": "high", "term": "t\ud800"})
    log = LogWriter(tmp_path, 30, clock=clock)
    log.write(record)
    log.close()
    [line] = on_disk(tmp_path)
    assert json.loads(line)["id"] == "WP-0123456789"
    for records in ([record], list(read_records(tmp_path))):   # as handed over, as read back
        found = outputs(records)
        for name, data in found.items():
            text = data.decode("utf-8")                     # valid UTF-8 everywhere
            if name in ("table", "sites", "summary", "plain", "csv"):
                assert "\x1b" not in text, name             # no terminal escape survives
        message = message_from_bytes(found["email"])
        assert "\n" not in message["Subject"]


def test_a_review_note_with_any_bytes_is_stored(tmp_path):
    ReviewStore(tmp_path).add([{"id": "WP-1", "time": ""}], "seen \udcff", "dsl\udce9")
    [review] = ReviewStore(tmp_path).load()["WP-1"]
    assert review.note == "seen \\xff" and review.by == "dsl\\xe9"


def test_alert_rules_and_bodies_survive_a_record_read_back_with_escaped_surrogates():
    # A log line may hold the JSON escape "\udcff", which json.loads turns into a surrogate.
    record = json.loads(json.dumps(base_record(user="\udcff", statutory=True)))
    alert, _ = AlertRules(AlertSettings()).consider(record)
    assert alert is not None
    assert email_message(alert, EMAIL).as_bytes()
    assert json.dumps(webhook_body(alert, "json"), ensure_ascii=False).encode()


# -- properties ---------------------------------------------------------------------------

# Any code point, with the troublesome ones (lone surrogates as surrogateescape makes them,
# controls, line separators) drawn often rather than once in a few hundred strings.
TROUBLE = ([chr(c) for c in range(0xDC80, 0xDD00)]            # surrogateescape'd bytes
           + ["\ud800", "\udbff", "\udc00", "\udfff"]           # other lone surrogates
           + [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)]
           + ["\u2028", "\u2029", "\\", '"'])
# Pieces joined, not one alphabet: text() over a one_of with characters() never draws them.
ANY_TEXT = st.lists(st.one_of(st.text(st.characters(exclude_categories=()), max_size=20),
                              st.text(st.sampled_from(TROUBLE), min_size=1, max_size=5)),
                    max_size=15).map("".join)
ANY_VALUE = st.one_of(st.none(), ANY_TEXT, st.booleans(), st.integers(),
                      st.floats(allow_nan=True, allow_infinity=True))
FIELDS = tuple(base_record())


@st.composite
def records(draw) -> dict:
    """A record whose every field may hold any text (or a value of the wrong type)."""
    record = base_record()
    for name in draw(st.sets(st.sampled_from(FIELDS), min_size=1)):
        record[name] = draw(ANY_VALUE)
    if draw(st.booleans()):
        record["watchlist"] = {"list": draw(ANY_TEXT), "category": draw(ANY_TEXT),
                               "severity": draw(st.sampled_from(["high", "critical", "x"])),
                               "term": draw(ANY_TEXT)}
    return record


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records())
def test_any_record_becomes_exactly_one_parseable_json_line_on_disk(record):
    with tempfile.TemporaryDirectory() as directory:
        log = LogWriter(Path(directory), 30, clock=clock)
        log.write(record)
        log.close()                                         # written when it returns
        data = (Path(directory) / log_file_name(DAY.date())).read_bytes()
        assert log.write_errors == 0
        assert data.count(b"\n") == 1 and data.endswith(b"\n")
        parsed = json.loads(data.decode("utf-8"))           # strict UTF-8, strict JSON
        assert isinstance(parsed, dict) and set(parsed) == set(record)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=3))
def test_reports_exports_and_alerts_never_raise_on_any_record(batch):
    for name, data in outputs(batch).items():
        data.decode("utf-8")
    rules = AlertRules(AlertSettings(repeat_count=1))
    for record in batch:
        alert, _ = rules.consider(record)
        if alert is not None:
            email_message(alert, EMAIL).as_bytes()


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.integers(min_value=0, max_value=400))
def test_clean_text_is_encodable_printable_and_within_its_limit(text, limit):
    cleaned = clean_text(text * 3, limit)
    cleaned.encode("utf-8")
    assert len(cleaned) <= limit
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"
                   for c in cleaned)
    if len(text * 3) <= limit and cleaned == text * 3:
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
