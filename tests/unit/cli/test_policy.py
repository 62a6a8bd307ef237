"""`webpolicy apply` and `webpolicy history`, run as an admin would (a real process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.eventlog import NOW, make, write_log
from tests.unit.helpers import policy_yaml, write_policy
from webpolicy.policy import history

POLICY = policy_yaml(
    version="1",
    learner={"block": ["ctiru", "gambling"], "log": ["social"]},
    staff={"block": ["ctiru"], "log": ["gambling"], "on_error": "allow"},
    lists=["ctiru", "gambling", "social"],
    extra="logging: {directory: logs, retention_days: 30}\n")
LISTS = {"ctiru.txt": "evil.test/propaganda\n", "gambling.txt": "bet.test\n",
         "social.txt": "social.test\n"}


def webpolicy(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webpolicy.cli.main", *args], cwd=cwd,
                          input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture
def live(tmp_path: Path) -> Path:
    path = write_policy(tmp_path, POLICY, LISTS)
    (tmp_path / "logs").mkdir()
    write_log(tmp_path / "logs", [make(NOW, "log", url="https://social.test/page"),
                                  make(NOW, url="https://bet.test/spin")])
    return path


def test_apply_shows_what_changes_installs_and_records_who(live, tmp_path):
    new = tmp_path / "policy.new.yaml"
    new.write_text(POLICY.replace('version: "1"', 'version: "2"')
                   .replace("block: [ctiru, gambling]\n    log: [social]",
                            "block: [ctiru, gambling, social]"))
    urls = tmp_path / "urls.txt"
    urls.write_text("# teaching sites\nhttps://social.test/\nhttps://example.org/\n")
    done = webpolicy("apply", str(new), "--policy", str(live), "--urls", str(urls), "--yes",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "social.test" in done.stdout and "log (social) -> block (social)" in done.stdout
    assert 'version: "2"' in live.read_text()
    (change,) = history.read(live)
    assert (change.event, change.how, change.version) == ("applied", "apply", "2")
    assert change.by and '+version: "2"' in change.diff


def test_apply_refuses_a_broken_policy_and_records_it(live, tmp_path):
    before = live.read_text()
    new = tmp_path / "broken.yaml"
    new.write_text(POLICY.replace("default_profile: learner", "default_profile: lerner"))
    done = webpolicy("apply", str(new), "--policy", str(live), "--yes", cwd=tmp_path)
    assert done.returncode == 1
    assert "refused, the live policy is unchanged" in done.stderr
    assert live.read_text() == before
    assert [c.event for c in history.read(live)] == ["refused"]
    assert not list(tmp_path.glob(".policy.yaml.apply-*")), "the staged copy is removed"


def test_apply_asks_and_a_script_must_say_yes(live, tmp_path):
    new = tmp_path / "policy.new.yaml"
    new.write_text(POLICY.replace('version: "1"', 'version: "2"'))
    done = webpolicy("apply", str(new), "--policy", str(live), cwd=tmp_path, stdin="y\n")
    assert done.returncode == 1 and "--yes" in done.stderr
    assert 'version: "1"' in live.read_text()


def test_history_lists_changes_with_diffs(live, tmp_path):
    history.record(live, "accepted", "itadmin", "start", version="1")
    live.write_text(live.read_text().replace('version: "1"', 'version: "2"'))
    history.record(live, "accepted", "itadmin", "reload", version="2")
    done = webpolicy("history", "--policy", str(live), "--diff", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum("accepted" in line for line in lines) == 2
    assert any(line.strip() == '+version: "2"' for line in lines)
    future = webpolicy("history", "--policy", str(live), "--since", "2999-01-01", cwd=tmp_path)
    assert "accepted" not in future.stdout
    bad = webpolicy("history", "--policy", str(live), "--since", "last week", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
