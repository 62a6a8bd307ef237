"""`webpolicy report`, `review` and `erase`, and the record's JSON Schema."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import re
from pathlib import Path

import jsonschema
import pytest

from webpolicy import cli
from webpolicy.canonical import canonical_url
from webpolicy.decision import Decision, unavailable
from webpolicy.events import RequestFacts, event_action, make_record, new_event_id
from webpolicy.report import (CSV_COLUMNS, Filters, ReviewStore, category_chart, day_chart,
                              parse_when, read_records, select, write_csv, write_html,
                              write_json, write_table)
from webpolicy.watchlist import WatchHit

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "addons/webpolicy/"
                     "event-record.schema.json").read_text())
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SELF_HARM = WatchHit("self_harm", "Self-harm", "high", "self harm")


def decision(action="block", **fields) -> Decision:
    values = dict(profile="learner", profile_reason="network 10.10.0.0/16", list="gambling",
                  category="Gambling", severity="medium", match="host", entry="bet.test",
                  policy_version="t1")
    return Decision(action, **{**values, **fields})


def make(when: dt.datetime, action="block", user="alice", ip="10.10.4.17", url="https://bet.test/x?a=1",
         search=None, watch=None, passthrough=False, **fields) -> dict:
    d = unavailable("learner", "default", "t1") if action == "fail" else decision(action, **fields)
    facts = RequestFacts(ip, user, "GET", canonical_url(url), canonical_url(url).host,
                         "Mozilla/5.0", search)
    return make_record(new_event_id(), event_action(d, passthrough, watch is not None), d, facts,
                       "Library PC 3" if ip == "10.10.4.17" else "", False, when, watch)


@pytest.fixture
def logs(tmp_path) -> Path:
    """A log directory with a week of varied records, written as the proxy writes them."""
    records = [
        make(NOW - dt.timedelta(days=6), user="alice"),
        make(NOW - dt.timedelta(days=3), user="bob", ip="10.10.4.20", list="adult",
             category="Pornography", severity="high"),
        make(NOW - dt.timedelta(days=2), user="Alice", url="https://ctiru.test/terror",
             list="ctiru", category="Terrorist content (CTIRU)", severity="critical",
             statutory=True, match="url", entry="ctiru.test/terror"),
        make(NOW - dt.timedelta(days=1), action="allow", user=None, ip="10.10.4.30",
             url="https://www.google.co.uk/search?q=how+to+self+harm", search="how to self harm",
             watch=SELF_HARM, list=None, category=None, severity=None, match=None, entry=None),
        make(NOW - dt.timedelta(hours=5), action="log", user="carol", profile="staff",
             list="social", category="Social networking", severity="low"),
        make(NOW - dt.timedelta(hours=1), action="fail", user=None, ip="10.10.9.9"),
        make(NOW - dt.timedelta(minutes=5), user="=cmd|' /C calc'!A0", ip="10.20.1.1",
             search="<script>alert('x')</script>", url="https://bet.test/<b>?q=1"),
    ]
    for record in records:
        day = record["time"][:10]
        with open(tmp_path / f"webpolicy-{day}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return tmp_path


def all_records(logs: Path, **filters) -> list[dict]:
    return select(logs, Filters(**filters))


def ids_of(records) -> list[str]:
    return [r["id"] for r in records]


# -- the record and its schema ------------------------------------------------------------


def test_every_kind_of_record_matches_the_schema(logs):
    records = list(read_records(logs))
    records.append(make(NOW, passthrough=True))
    assert {r["action"] for r in records} == {"blocked", "flagged", "logged", "failed_closed",
                                              "refused_passthrough"}
    validator = jsonschema.Draft202012Validator(SCHEMA,
                                                format_checker=jsonschema.FormatChecker())
    for record in records:
        validator.validate(record)


def test_schema_rejects_drift():
    record = make(NOW)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**record, "surprise": 1}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**record, "action": "allowed"}, SCHEMA)


def test_documentation_covers_every_field():
    doc = (Path(__file__).resolve().parents[2] / "docs/event-record.md").read_text()
    for name in SCHEMA["properties"]:
        assert f"`{name}`" in doc, name


def test_flagged_record_describes_the_watchlist_hit(logs):
    flagged = all_records(logs, actions=("flagged",))[0]
    assert flagged["search_term"] == "how to self harm"
    assert (flagged["list"], flagged["category"], flagged["severity"], flagged["match"],
            flagged["entry"]) == ("self_harm", "Self-harm", "high", "search_term", "self harm")
    assert flagged["url"].endswith("?[redacted]")


# -- times and filters --------------------------------------------------------------------


def test_parse_when():
    assert parse_when("7d", now=NOW) == NOW - dt.timedelta(days=7)
    assert parse_when("12h", now=NOW) == NOW - dt.timedelta(hours=12)
    assert parse_when("2w", now=NOW) == NOW - dt.timedelta(weeks=2)
    start = parse_when("2026-11-01")
    end = parse_when("2026-11-01", end=True)
    assert end - start == dt.timedelta(days=1) and start.tzinfo is not None
    assert parse_when("2026-11-01T14:30").hour == 14
    with pytest.raises(ValueError, match="7d"):
        parse_when("last tuesday")


def test_filters(logs):
    assert len(all_records(logs)) == 7
    assert len(all_records(logs, user="ALICE")) == 2                   # not case-sensitive
    assert len(all_records(logs, client="10.10.4.17")) == 3
    assert len(all_records(logs, client="10.10.0.0/16")) == 6
    assert len(all_records(logs, profile="staff")) == 1
    assert len(all_records(logs, category="ctiru")) == 1
    assert len(all_records(logs, category="self-harm")) == 1           # the watchlist category
    assert {r["severity"] for r in all_records(logs, severity="high")} == {"high", "critical"}
    assert len(all_records(logs, actions=("blocked", "failed_closed"))) == 5
    assert len(all_records(logs, since=NOW - dt.timedelta(days=2, minutes=1))) == 5
    assert len(all_records(logs, until=NOW - dt.timedelta(days=2, minutes=1))) == 2
    first = all_records(logs)[0]["id"]
    assert ids_of(all_records(logs, ids=(first,))) == [first]


def test_records_are_oldest_first_and_bad_lines_skipped(logs):
    day = (NOW - dt.timedelta(days=1)).date().isoformat()
    with open(logs / f"webpolicy-{day}.jsonl", "a") as handle:
        handle.write('{"cut short by a full disk\n[1,2]\n\n')
    from webpolicy.report import ReadStats
    stats = ReadStats()
    records = select(logs, Filters(), stats=stats)
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
    assert stats.bad_lines == 2


# -- reviews ------------------------------------------------------------------------------


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_review_marks_records_and_unreviewed_hides_them(logs, capsys):
    target = all_records(logs, user="bob")[0]["id"]
    before = {p.name: p.read_bytes() for p in logs.iterdir()}
    code, out, _ = run(capsys, "review", target.lower(), "--note", "Spoke to Bob; parents told",
                       "--by", "Ms Khan", "--log-dir", str(logs))
    assert code == 0 and "marked 1 record(s) reviewed by Ms Khan" in out
    for name, data in before.items():                       # the log itself is untouched
        assert (logs / name).read_bytes() == data
    store = logs / "reviews.jsonl"
    assert store.stat().st_mode & 0o777 == 0o600
    assert ReviewStore(logs).load()[target][0].note == "Spoke to Bob; parents told"
    assert target not in ids_of(select(logs, Filters(unreviewed=True)))
    assert len(select(logs, Filters(unreviewed=True))) == 6


def test_review_of_unknown_reference_fails(logs, capsys):
    code, _, err = run(capsys, "review", "WP-NOSUCHTHING", "--note", "x", "--log-dir", str(logs))
    assert code == 1 and "no record WP-NOSUCHTHING" in err
    assert not (logs / "reviews.jsonl").exists()


# -- outputs ------------------------------------------------------------------------------


def test_csv_for_cpoms(logs, capsys, tmp_path):
    target = all_records(logs, user="bob")[0]["id"]
    ReviewStore(logs).add(all_records(logs, user="bob"), "Handled", "dsl")
    out = tmp_path / "export.csv"
    code, _, _ = run(capsys, "report", "--csv", "-o", str(out), "--log-dir", str(logs))
    assert code == 0
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")                  # BOM: Excel reads UTF-8
    assert out.stat().st_mode & 0o777 == 0o600
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 7
    bob = next(r for r in rows if r["Reference"] == target)
    assert bob["Reviewed"] == "yes" and bob["Review notes"] == "dsl: Handled"
    assert bob["Category"] == "Pornography" and bob["Device"] == ""
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", bob["Date"])
    # Cells a spreadsheet would run as formulas are defused.
    attacker = next(r for r in rows if r["Client IP"] == "10.20.1.1")
    assert attacker["User"].startswith("'=")
    assert attacker["Search term"] == "<script>alert('x')</script>"


def test_csv_to_stdout_without_bom(logs, capsysbinary):
    assert cli.main(["report", "--csv", "--no-bom", "--log-dir", str(logs)]) == 0
    data = capsysbinary.readouterr().out
    assert data.startswith(b"Reference,Date,")


def test_json_export_for_a_subject_access_request(logs, capsys):
    ReviewStore(logs).add(all_records(logs, user="alice"), "Seen", "dsl")
    code, out, _ = run(capsys, "report", "--user", "alice", "--json", "--log-dir", str(logs))
    items = json.loads(out)
    assert code == 0 and len(items) == 2
    assert all(item["reviews"][0]["note"] == "Seen" for item in items)
    assert {"user_agent", "policy_version", "client_ip"} <= set(items[0])


def test_terminal_table(logs):
    out = io.StringIO()
    records = select(logs, Filters())
    write_table(records, {}, out, width=120)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["When", "Reference", "Action"]
    assert len(lines) == 8 and all(len(line) <= 120 for line in lines)
    assert 'search "how to self harm"' in out.getvalue()
    assert "Library PC 3 (10.10.4.17)" not in out.getvalue()     # alice has a login
    assert "10.10.9.9" in out.getvalue()


def test_report_command_summary_and_filters(logs, capsys):
    code, out, _ = run(capsys, "report", "--severity", "critical", "--log-dir", str(logs))
    assert code == 0 and "Terrorist content" in out and "1 record(s)" in out
    with pytest.raises(SystemExit, match="not a date"):
        cli.main(["report", "--since", "soon", "--log-dir", str(logs)])


def test_report_bad_action_is_refused(logs, capsys):
    with pytest.raises(SystemExit, match="unknown action"):
        cli.main(["report", "--action", "allowed", "--log-dir", str(logs)])


def _csp(page: str) -> str:
    return re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_html_is_self_contained_and_safe(logs, tmp_path, capsys):
    page_path = tmp_path / "week.html"
    code, _, _ = run(capsys, "report", "--html", str(page_path), "--log-dir", str(logs))
    assert code == 0 and page_path.stat().st_mode & 0o777 == 0o600
    page = page_path.read_text()
    # No external resources of any kind.
    assert not re.search(r'(src|href)\s*=\s*"(?!#)', page)
    assert "url(" not in page and "@import" not in page
    # The CSP allows exactly the page's own style and script.
    csp = _csp(page)
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    assert "default-src 'none'" in csp and _hash(style) in csp and _hash(script) in csp
    assert page.count("<script>") == 1
    # A crafted search term is shown as text, never run.
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    # Serious events first, then charts, people and every record.
    serious = page.index('id="serious"')
    assert serious < page.index("<svg") < page.index("People with most blocks") \
        < page.index('id="all"')
    serious_part = page[serious:page.index("<svg")]
    assert "Terrorist content (CTIRU)" in serious_part and "how to self harm" in serious_part
    assert "Social networking" not in serious_part
    all_part = page[page.index('id="all"'):]
    assert all(rid in all_part for rid in ids_of(select(logs, Filters())))


def test_charts():
    records = [{"time": "2026-11-20T10:00:00.000Z", "action": "blocked", "category": "A"},
               {"time": "2026-11-20T11:00:00.000Z", "action": "flagged", "category": "B"},
               {"time": "2026-11-23T10:00:00.000Z", "action": "blocked", "category": "A"}]
    days = day_chart(records, utc=True)
    assert days.startswith("<svg") and days.count("<rect") >= 3
    assert "21 Nov" in days or days.count("<text") >= 4       # gap days are on the axis
    categories = category_chart(records)
    assert categories.index(">A<") < categories.index(">B<")   # most first
    assert "No events" in day_chart([])


def test_html_with_no_records(tmp_path):
    out = io.StringIO()
    write_html([], {}, out, "Example College")
    assert "No statutory, critical" in out.getvalue() and "Example College" in out.getvalue()


def test_json_writer_is_valid_json_with_unicode():
    out = io.StringIO()
    write_json([{"id": "WP-1", "user": "zoë"}], {}, out)
    assert json.loads(out.getvalue())[0]["user"] == "zoë"


def test_csv_writer_handles_missing_fields():
    out = io.StringIO()
    write_csv([{"id": "WP-1"}], {}, out)
    assert out.getvalue().splitlines()[1].startswith("WP-1,,,")


# -- erase --------------------------------------------------------------------------------


def test_erase_removes_a_person_everywhere_atomically(logs, capsys):
    alice_ids = ids_of(all_records(logs, user="alice"))
    alice_files = {logs / f"webpolicy-{r['time'][:10]}.jsonl" for r in all_records(logs, user="alice")}
    ReviewStore(logs).add(all_records(logs, user="alice") + all_records(logs, user="bob"),
                          "note", "dsl")
    others = [r for r in select(logs, Filters()) if r["id"] not in alice_ids]
    code, out, _ = run(capsys, "erase", "--user", "alice", "--dry-run", "--log-dir", str(logs))
    assert code == 0 and "2 record(s) of user alice" in out
    assert len(all_records(logs, user="alice")) == 2            # dry run changed nothing
    code, out, err = run(capsys, "erase", "--user", "alice", "--log-dir", str(logs))
    assert code == 1 and "--yes" in err                          # no tty: must confirm
    code, out, _ = run(capsys, "erase", "--user", "alice", "--yes", "--log-dir", str(logs))
    assert code == 0 and "erased 2 record(s) and 2 review note(s)" in out
    assert all_records(logs, user="alice") == []
    assert select(logs, Filters()) == others                     # nobody else touched
    assert set(ReviewStore(logs).load()) == set(ids_of(all_records(logs, user="bob")))
    for path in alice_files | {logs / "reviews.jsonl"}:           # rewritten files stay private
        assert path.stat().st_mode & 0o777 == 0o600
    assert not list(logs.glob(".*tmp"))                          # no temp files left


def test_erase_by_client_address_keeps_unreadable_lines(logs, capsys):
    day = (NOW - dt.timedelta(hours=1)).date().isoformat()
    with open(logs / f"webpolicy-{day}.jsonl", "a") as handle:
        handle.write("not json at all\n")
    code, out, _ = run(capsys, "erase", "--client", "10.10.9.9", "--yes", "--log-dir", str(logs))
    assert code == 0 and "erased 1 record(s)" in out
    assert "not json at all" in (logs / f"webpolicy-{day}.jsonl").read_text()


def test_erase_needs_a_person(logs, capsys):
    code, _, err = run(capsys, "erase", "--log-dir", str(logs))
    assert code == 2 and "--user" in err


def test_commands_read_the_log_directory_from_the_policy(tmp_path, capsys, logs):
    (tmp_path / "lists.txt").write_text("bet.test\n")
    (tmp_path / "policy.yaml").write_text(
        'version: "t"\ndefault_profile: learner\nprofiles: {learner: {block: [g]}}\n'
        "lists: {g: {category: Gambling, sources: [lists.txt]}}\n"
        f"logging: {{directory: {logs}}}\n"
        "block_page: {organisation: Example College}\n")
    code, out, _ = run(capsys, "report", "--policy", str(tmp_path / "policy.yaml"))
    assert code == 0 and "7 record(s)" in out
