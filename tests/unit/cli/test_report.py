"""`webpolicy report`, `review` and `erase` as a DSL runs them: options, outputs, exit codes,
and the files they write (0600, the log itself never edited except by erase)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

import pytest

from tests.unit.eventlog import NOW, all_records, ids_of, run_cli
from webpolicy.cli import main as cli
from webpolicy.safeguarding.logstore import ReviewStore
from webpolicy.safeguarding.report import CSV_COLUMNS, Filters, select

# -- reviews ------------------------------------------------------------------------------


def test_review_marks_records_and_unreviewed_hides_them(logs, capsys):
    target = all_records(logs, user="bob")[0]["id"]
    before = {p.name: p.read_bytes() for p in logs.iterdir()}
    code, out, _ = run_cli(capsys, "review", target.lower(), "--note", "Spoke to Bob; parents told",
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
    code, _, err = run_cli(capsys, "review", "WP-NOSUCHTHING", "--note", "x", "--log-dir", str(logs))
    assert code == 1 and "no record WP-NOSUCHTHING" in err
    assert not (logs / "reviews.jsonl").exists()


# -- outputs ------------------------------------------------------------------------------


def test_csv_for_cpoms(logs, capsys, tmp_path):
    target = all_records(logs, user="bob")[0]["id"]
    ReviewStore(logs).add(all_records(logs, user="bob"), "Handled", "dsl")
    out = tmp_path / "export.csv"
    code, _, _ = run_cli(capsys, "report", "--csv", "-o", str(out), "--log-dir", str(logs))
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
    code, out, _ = run_cli(capsys, "report", "--user", "alice", "--json", "--log-dir", str(logs))
    items = json.loads(out)
    assert code == 0 and len(items) == 2
    assert all(item["reviews"][0]["note"] == "Seen" for item in items)
    assert {"user_agent", "policy_version", "client_ip"} <= set(items[0])


def test_report_command_summary_and_filters(logs, capsys):
    code, out, _ = run_cli(capsys, "report", "--severity", "critical", "--log-dir", str(logs))
    assert code == 0 and "Terrorist content" in out and "1 record(s)" in out
    with pytest.raises(SystemExit, match="not a date"):
        cli.main(["report", "--since", "soon", "--log-dir", str(logs)])


def test_report_ends_with_the_sites_most_tried_then_the_totals(logs, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "report", "--log-dir", str(logs))
    lines = out.splitlines()
    sites = lines.index(next(line for line in lines if line.startswith("Sites most tried")))
    assert code == 0 and lines[sites - 1] == "" and lines[-1].startswith("7 record(s)")
    assert lines[sites + 1].split()[:2] == ["bet.test", "3"]
    assert "ctiru.test (statutory)" in lines[sites + 2]
    # Written to a file, the table holds only records; the rest goes to the terminal.
    table = tmp_path / "table.txt"
    code, out, err = run_cli(capsys, "report", "-o", str(table), "--log-dir", str(logs))
    assert code == 0 and out == "" and "Sites most tried" in err
    assert "Sites most tried" not in table.read_text()
    # CSV and JSON stay pure data.
    _, out, _ = run_cli(capsys, "report", "--json", "--log-dir", str(logs))
    assert "Sites most tried" not in out and len(json.loads(out)) == 7


def test_report_bad_action_is_refused(logs, capsys):
    with pytest.raises(SystemExit, match="unknown action"):
        cli.main(["report", "--action", "allowed", "--log-dir", str(logs)])


# -- erase --------------------------------------------------------------------------------


def test_erase_removes_a_person_everywhere_atomically(logs, capsys):
    alice_ids = ids_of(all_records(logs, user="alice"))
    alice_files = {logs / f"webpolicy-{r['time'][:10]}.jsonl" for r in all_records(logs, user="alice")}
    ReviewStore(logs).add(all_records(logs, user="alice") + all_records(logs, user="bob"),
                          "note", "dsl")
    others = [r for r in select(logs, Filters()) if r["id"] not in alice_ids]
    code, out, _ = run_cli(capsys, "erase", "--user", "alice", "--dry-run", "--log-dir", str(logs))
    assert code == 0 and "2 record(s) of user alice" in out
    assert len(all_records(logs, user="alice")) == 2            # dry run changed nothing
    code, out, err = run_cli(capsys, "erase", "--user", "alice", "--log-dir", str(logs))
    assert code == 1 and "--yes" in err                          # no tty: must confirm
    code, out, _ = run_cli(capsys, "erase", "--user", "alice", "--yes", "--log-dir", str(logs))
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
    code, out, _ = run_cli(capsys, "erase", "--client", "10.10.9.9", "--yes", "--log-dir", str(logs))
    assert code == 0 and "erased 1 record(s)" in out
    assert "not json at all" in (logs / f"webpolicy-{day}.jsonl").read_text()


def test_erase_needs_a_person(logs, capsys):
    code, _, err = run_cli(capsys, "erase", "--log-dir", str(logs))
    assert code == 2 and "--user" in err


def test_commands_read_the_log_directory_from_the_policy(tmp_path, capsys, logs):
    (tmp_path / "lists.txt").write_text("bet.test\n")
    (tmp_path / "policy.yaml").write_text(
        'version: "t"\ndefault_profile: learner\nprofiles: {learner: {block: [g]}}\n'
        "lists: {g: {category: Gambling, sources: [lists.txt]}}\n"
        f"logging: {{directory: {logs}}}\n"
        "block_page: {organisation: Example College}\n")
    code, out, _ = run_cli(capsys, "report", "--policy", str(tmp_path / "policy.yaml"))
    assert code == 0 and "7 record(s)" in out


# -- several gateways ---------------------------------------------------------------------


def two_gateways(tmp_path):
    """Two gateways' log directories (issue #19): the week split between them."""
    from tests.unit.eventlog import week, write_log
    records = week()                   # alice's two records land one on each gateway
    mine = [records[i] for i in (0, 1, 3, 5)]
    first, second = tmp_path / "gw1", tmp_path / "gw2"
    first.mkdir()
    second.mkdir()
    write_log(first, mine)
    write_log(second, [r for r in records if r not in mine])
    return first, second, records


def test_report_reads_every_gateways_log_as_one_oldest_first(tmp_path, capsys):
    first, second, records = two_gateways(tmp_path)
    code, out, _ = run_cli(capsys, "report", "--json", "--log-dir", str(first),
                           "--log-dir", str(second))
    assert code == 0
    shown = json.loads(out)
    assert ids_of(shown) == [r["id"] for r in sorted(records, key=lambda r: r["time"])]
    # Naming one directory twice shows each record once.
    _, out, _ = run_cli(capsys, "report", "--json", "--log-dir", str(first),
                        "--log-dir", str(first))
    assert len(json.loads(out)) == 4


def test_report_of_several_gateways_refuses_a_missing_directory(tmp_path, capsys):
    first, _, _ = two_gateways(tmp_path)
    code, _, err = run_cli(capsys, "report", "--log-dir", str(first),
                           "--log-dir", str(tmp_path / "gw3"))
    assert code == 1 and "gw3" in err


def test_review_across_gateways_is_kept_beside_each_records_log(tmp_path, capsys):
    first, second, records = two_gateways(tmp_path)
    one, two = records[0]["id"], records[2]["id"]           # on gw1 and gw2
    code, out, _ = run_cli(capsys, "review", one, two, "--note", "seen", "--by", "dsl",
                           "--log-dir", str(first), "--log-dir", str(second))
    assert code == 0 and "marked 2 record(s)" in out
    assert set(ReviewStore(first).load()) == {one}
    assert set(ReviewStore(second).load()) == {two}
    _, out, _ = run_cli(capsys, "report", "--unreviewed", "--json", "--log-dir", str(first),
                        "--log-dir", str(second))
    assert {one, two}.isdisjoint(ids_of(json.loads(out)))
    assert len(json.loads(out)) == len(records) - 2


def test_erase_across_gateways_removes_the_person_from_each(tmp_path, capsys):
    first, second, _ = two_gateways(tmp_path)
    before = [len(all_records(d, user="alice")) for d in (first, second)]
    assert before == [1, 1], "alice has a record on each gateway"
    code, out, _ = run_cli(capsys, "erase", "--user", "alice", "--yes", "--log-dir", str(first),
                           "--log-dir", str(second))
    assert code == 0 and f"erased {sum(before)} record(s)" in out
    assert all_records(first, user="alice") == all_records(second, user="alice") == []
