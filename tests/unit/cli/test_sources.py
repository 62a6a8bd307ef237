"""`webpolicy update`, `webpolicy lists`, and validate's lines about URL sources, against a
real local HTTPS list server (tests/unit/lists/listserver.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.unit.helpers import policy_yaml
from tests.unit.lists.listserver import ListServer, Reply, domains
from webpolicy.cli import sources as sources_cli
from webpolicy.cli.main import main
from webpolicy.lists import remote
from webpolicy.policy.model import load_policy

LISTS = {"ctiru.txt": "evil.test/propaganda\n", "social.txt": "social.test\n"}


@pytest.fixture
def server(tmp_path: Path):
    with ListServer(tmp_path) as server:
        server.replies["/phishing.txt"] = Reply(body=domains(50, "phish").encode())
        server.replies["/malware.txt"] = Reply(500, b"down")
        yield server


@pytest.fixture
def policy(tmp_path: Path, server: ListServer, monkeypatch) -> Path:
    monkeypatch.delenv("WEBPOLICY_SOURCES_DIR", raising=False)
    ca = server.ca
    text = policy_yaml(
        learner={"block": ["ctiru", "phishing", "malware"], "log": ["social"]},
        staff={"block": ["ctiru"]},
        lists={"ctiru": "{statutory: true, category: Terrorist content, severity: critical, "
                        "format: urls, sources: [ctiru.txt]}",
               "social": "{category: Social networking, sources: [social.txt]}",
               "phishing": f"{{category: Phishing, format: domains, sources: [{{url: "
                           f"'{server.url('/phishing.txt')}', refresh: 6h, ca: '{ca}'}}]}}",
               "malware": f"{{category: Malware, format: domains, sources: [{{url: "
                          f"'{server.url('/malware.txt')}', refresh: 1h, ca: '{ca}'}}]}}"})
    for name, content in LISTS.items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_update_downloads_what_is_due_and_says_what_each_came_to(policy, server, capsys):
    code, out, _ = run(capsys, "update", "--policy", str(policy))
    assert code == 1, "one source failed"
    assert f"lists.phishing  {server.url('/phishing.txt')}\n    updated: 50 entries" in out
    assert f"lists.malware  {server.url('/malware.txt')}\n    failed: HTTP 500" in out
    assert "no good copy yet, so profiles that block the list fail closed" in out
    assert "1 last good copy replaced; a running proxy reloads" in out

    server.replies["/malware.txt"] = Reply(body=domains(5, "mal").encode())
    code, out, _ = run(capsys, "update", "--policy", str(policy))
    assert code == 0
    assert "lists.phishing" in out and "not due: next download in 5h 59m" in out
    retry = re.search(r"lists.malware .*\n    not due: next download in (\d+)s", out)
    assert retry and 29 <= int(retry.group(1)) <= 60, "backoff: a first retry within a minute"
    code, out, _ = run(capsys, "update", "--policy", str(policy), "--list", "malware")
    assert code == 0 and "updated: 5 entries" in out

    code, out, _ = run(capsys, "update", "--policy", str(policy), "--list", "phishing")
    assert code == 0 and "unchanged: 50 entries, the same as the last good copy" in out
    assert "malware" not in out


def test_update_refuses_a_shrink_unless_accepted(policy, server, capsys):
    assert run(capsys, "update", "--policy", str(policy), "--list", "phishing")[0] == 0
    server.replies["/phishing.txt"] = Reply(body=domains(5, "phish").encode())
    code, out, _ = run(capsys, "update", "--policy", str(policy), "--force")
    assert code == 1 and "refused: 5 entries where the last good copy has 50: 90% lost" in out
    code, out, _ = run(capsys, "update", "--policy", str(policy), "--list", "phishing",
                       "--accept-shrink")
    assert code == 0 and "updated: 5 entries (was 50)" in out


def test_update_usage_mistakes(policy, capsys):
    code, _, err = run(capsys, "update", "--policy", str(policy), "--list", "phishng")
    assert code == 2 and "unknown list 'phishng'" in err
    code, out, _ = run(capsys, "update", "--policy", str(policy), "--list", "social")
    assert code == 0 and "lists.social has no URL source" in out


def test_lists_shows_entries_sources_last_success_age_and_last_error(policy, server, capsys):
    code, out, _ = run(capsys, "lists", "--policy", str(policy))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["LIST", "ENTRIES", "SOURCE", "LAST", "SUCCESS", "AGE", "NEXT",
                                "ATTEMPT", "LAST", "ERROR"]
    phishing = next(line for line in lines if line.startswith("phishing"))
    assert "0 UNAVAILABLE" in phishing and server.url("/phishing.txt") in phishing
    assert "never" in phishing and "not downloaded yet: run webpolicy update" in phishing
    run(capsys, "update", "--policy", str(policy))
    code, out, _ = run(capsys, "lists", "--policy", str(policy))
    phishing = next(line for line in out.splitlines() if line.startswith("phishing"))
    malware = next(line for line in out.splitlines() if line.startswith("malware"))
    assert phishing.split()[1] == "50" and " UTC " in phishing
    assert re.search(r" 0s +in 5h 59m$", phishing), phishing
    assert "never" in malware and "HTTP 500" in malware
    assert re.search(r" in \d+s \(backoff after 1 failure\) +HTTP 500", malware), malware
    ctiru = next(line for line in out.splitlines() if line.startswith("ctiru"))
    assert "ctiru.txt" in ctiru and "(file)" in ctiru


def test_validate_shows_each_url_sources_age_and_last_error(policy, server, capsys):
    run(capsys, "update", "--policy", str(policy))
    code, out, err = run(capsys, "validate", str(policy))
    assert code == 1, "a source with no good copy cannot be read: validate refuses the policy"
    assert f"lists.malware: source {server.url('/malware.txt')}: no good copy yet" in err
    assert "run `webpolicy update`" in err
    server.replies["/malware.txt"] = Reply(body=domains(5, "mal").encode())
    run(capsys, "update", "--policy", str(policy), "--list", "malware")
    code, out, err = run(capsys, "validate", str(policy))
    assert code == 0, err
    assert f"{server.url('/phishing.txt')}: last good copy 0s old" in out
    assert f"{server.url('/malware.txt')}: last good copy 0s old" in out


def test_a_never_downloaded_list_fails_closed_and_a_stale_one_says_so(policy, server, capsys):
    from webpolicy.engine.decision import decide
    from webpolicy.engine.engine import build_engine
    from webpolicy.lists.canonical import canonical_url

    engine = build_engine(load_policy(policy))
    decision = decide(engine, canonical_url("http://anything.test/"), profile="learner")
    assert decision.failed_closed, "phishing and malware have no good copy"
    run(capsys, "update", "--policy", str(policy))
    server.replies["/malware.txt"] = Reply(body=domains(5, "mal").encode())
    run(capsys, "update", "--policy", str(policy), "--list", "malware")
    engine = build_engine(load_policy(policy))
    assert not decide(engine, canonical_url("http://anything.test/"), profile="learner").blocked
    assert decide(engine, canonical_url("http://phish3.example/"), profile="learner").blocked

    spec = load_policy(policy).lists["phishing"]
    sidecar = remote.sidecar_path(spec.remote[0])
    state = json.loads(sidecar.read_text())
    state["last_success"] -= 7 * 3600 * 4
    sidecar.write_text(json.dumps(state))
    assert "STALE: older than max_age" in sources_cli.remote_summary(spec)[0]


def test_run_fetches_only_the_sources_without_a_copy(policy, server):
    loaded = load_policy(policy)
    outcomes = sources_cli.fetch_missing(loaded)
    assert sorted((o.source.list, o.result) for o in outcomes) == [("malware", "failed"),
                                                                   ("phishing", "updated")]
    again = sources_cli.fetch_missing(loaded)
    assert [(o.source.list, o.result) for o in again] == [("malware", "failed")]


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (125, "2m"), (3 * 3600 + 120, "3h 2m"),
                                           (2 * 86400 + 7200, "2d 2h")])
def test_ages_read_easily(seconds, text):
    assert sources_cli.format_age(seconds) == text


def test_run_downloads_missing_copies_before_it_becomes_mitmdump(policy, server, capsys,
                                                                  monkeypatch):
    import webpolicy.cli.main as cli_main

    started = []
    monkeypatch.setattr(cli_main.os, "execv", lambda path, argv: started.append(argv))
    monkeypatch.setattr(cli_main.shutil, "which", lambda *a, **k: "/usr/bin/mitmdump")
    code, _, err = run(capsys, "run", "--policy", str(policy))
    assert code == 0 and started and started[0][0] == "/usr/bin/mitmdump"
    assert "webpolicy run: lists.phishing: " in err and "updated: 50 entries" in err
    assert "webpolicy run: lists.malware: " in err and "failed: HTTP 500" in err
    assert load_policy(policy).lists["phishing"].remote[0].path.exists()


def test_a_ut1_source_is_updated_listed_with_its_attribution_and_validated(tmp_path, capsys,
                                                                          monkeypatch):
    from tests.unit.lists.listserver import UT1_SNAPSHOT, snapshot, ut1_archive
    if not (UT1_SNAPSHOT / "gambling" / "domains").is_file():
        pytest.skip("the UT1 snapshot is not on this machine")
    monkeypatch.delenv("WEBPOLICY_SOURCES_DIR", raising=False)
    with ListServer(tmp_path) as server:
        server.replies["/d/gambling.tar.gz"] = Reply(
            body=ut1_archive(snapshot("gambling"), per_category="gambling"))
        (tmp_path / "ctiru.txt").write_text(LISTS["ctiru.txt"])
        path = tmp_path / "policy.yaml"
        path.write_text(policy_yaml(
            learner={"block": ["ctiru", "gambling"]}, staff={"block": ["ctiru"]},
            lists={"ctiru": "{statutory: true, category: Terrorist content, severity: "
                            "critical, format: urls, sources: [ctiru.txt]}",
                   "gambling": f"{{category: Gambling, sources: [{{ut1: '{server.url('/d/')}', "
                               f"categories: [gambling], refresh: 24h, ca: '{server.ca}'}}]}}"}))
        code, out, err = run(capsys, "validate", str(path))
        assert code == 1, "no good copy yet: like a missing file"
        assert "lists.gambling: source " + server.url("/d/") + " (UT1 category gambling): " \
               "no good copy yet" in err
        code, out, _ = run(capsys, "update", "--policy", str(path))
        assert code == 0 and "updated: 32," in out and "gambling 32," in out, out
        code, out, err = run(capsys, "validate", str(path))
        assert code == 0, err
        assert f"{server.url('/d/')} [UT1: gambling]: last good copy 0s old" in out
        code, out, _ = run(capsys, "lists", "--policy", str(path))
    gambling = next(line for line in out.splitlines() if line.startswith("gambling"))
    assert gambling.split()[1].startswith("32,") and "[UT1: gambling]" in gambling
    assert "in 23h 59m" in gambling
    notice = next(line for line in out.splitlines() if line.startswith("lists.gambling: UT1"))
    assert "Université Toulouse 1 Capitole, CC BY-SA 4.0" in notice
    assert "https://creativecommons.org/licenses/by-sa/4.0/" in notice and " UTC" in notice
