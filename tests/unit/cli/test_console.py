"""The console's commands in real processes (each configures Django for itself, as on a
gateway): `webpolicy erase` reaches the console's database; `webpolicy console digest` mails
a real SMTP server on loopback (aiosmtpd, as the alert tests use); where the PostgreSQL
password comes from (never policy.yaml)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from webpolicy.cli.console import _config, database_password
from webpolicy.policy.model import ConsoleSettings

from tests.unit.console import samples
from tests.unit.helpers import policy_yaml, write_policy
from tests.unit.safeguarding.test_alerts import Mailbox, free_port

pytestmark = pytest.mark.skipif(importlib.util.find_spec("django") is None,
                                reason="the console extra (Django) is not installed")
BIN = Path(sys.executable).parent
LIST_EVENTS = """
import sys
from pathlib import Path
from webpolicy.console.settings import config_for, configure
directories = [Path(d) for d in sys.argv[1].split(",")]
configure(config_for(directories), migrate=False)
from webpolicy.console.ingest import ingest
from webpolicy.console.models import Event
if sys.argv[2] == "ingest":
    ingest(directories)
print(",".join(sorted(Event.objects.values_list("reference", flat=True))))
"""


def _events(*logs: Path, ingest: bool = False) -> str:
    """The console database's references (the one beside the first directory)."""
    done = subprocess.run([sys.executable, "-c", LIST_EVENTS, ",".join(map(str, logs)),
                           "ingest" if ingest else "-"],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_erase_removes_the_person_from_the_console_database_at_once(tmp_path):
    logs = tmp_path / "logs"
    samples.write(logs, samples.record("WP-0000000001", user="bob"),
                  samples.record("WP-0000000002", user="carol", client_ip="10.10.4.18"))
    subprocess.run([BIN / "webpolicy", "users", "add", "dana", "--role", "dsl",
                    "--password-stdin", "--log-dir", str(logs)],
                   input="correct horse battery staple\n", text=True, check=True, timeout=60,
                   capture_output=True)
    assert _events(logs, ingest=True) == "WP-0000000001,WP-0000000002"
    done = subprocess.run([BIN / "webpolicy", "erase", "--user", "bob", "--yes",
                           "--log-dir", str(logs)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "console database" in done.stdout and "1 record(s) removed" in done.stdout
    assert _events(logs) == "WP-0000000002"            # without the console having run
    assert '"bob"' not in "".join(p.read_text() for p in logs.glob("webpolicy-*.jsonl"))


def test_erase_in_several_gateways_logs_reaches_the_one_console(tmp_path):
    gw1, gw2 = tmp_path / "gw1" / "logs", tmp_path / "gw2" / "logs"
    samples.write(gw1, samples.record("WP-0000000001", user="bob"),
                  samples.record("WP-0000000002", user="carol"))
    samples.write(gw2, samples.record("WP-0000000003", user="carol"),
                  samples.record("WP-0000000004", user="dave"))
    subprocess.run([BIN / "webpolicy", "users", "add", "dana", "--role", "dsl", "--password-stdin",
                    "--log-dir", str(gw1), "--log-dir", str(gw2)],
                   input="correct horse battery staple\n", text=True, check=True, timeout=60,
                   capture_output=True)
    assert _events(gw1, gw2, ingest=True) == "WP-0000000001,WP-0000000002,WP-0000000003,WP-0000000004"
    done = subprocess.run([BIN / "webpolicy", "erase", "--user", "carol", "--yes",
                           "--log-dir", str(gw1), "--log-dir", str(gw2), "--database",
                           str(tmp_path / "gw1" / "webpolicy-console.sqlite3")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "2 record(s) removed" in done.stdout
    assert _events(gw1, gw2) == "WP-0000000001,WP-0000000004"


def test_erase_without_a_console_database_says_nothing_of_one(tmp_path):
    logs = tmp_path / "logs"
    samples.write(logs, samples.record("WP-0000000001", user="bob"))
    done = subprocess.run([BIN / "webpolicy", "erase", "--user", "bob", "--yes",
                           "--log-dir", str(logs)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "console database" not in done.stdout
    assert not (tmp_path / "webpolicy-console.sqlite3").exists()


def _digest_policy(tmp_path: Path, port: int, digest: str) -> Path:
    extra = ("logging: {directory: logs}\n"
             "block_page: {organisation: Example College}\n"
             f"alerts: {{email: {{host: 127.0.0.1, port: {port}, starttls: false, "
             "from: filter@college.test, to: [alerts@college.test]}}\n"
             f"console: {{url: 'https://console.college.test', {digest}}}\n")
    return write_policy(tmp_path, policy_yaml(learner={"block": ["gambling"]},
                                              staff={"block": []}, lists=["gambling"],
                                              extra=extra), {"gambling.txt": "bet.test\n"})


def test_the_digest_command_mails_counts_to_the_dsls(tmp_path):
    from aiosmtpd.controller import Controller

    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        policy = _digest_policy(tmp_path, port, "digest: {period: week, to: [dsl@college.test]}")
        samples.write(tmp_path / "logs", samples.statutory("WP-0000000001"),
                      samples.flagged("WP-0000000002", user="carol"))
        done = subprocess.run([BIN / "webpolicy", "console", "digest", "--period", "day",
                               "--policy", str(policy)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "sent the daily digest to 1 recipient(s)" in done.stdout
        ((rcpts, message, _),) = mailbox.messages
        assert rcpts == ["dsl@college.test"]
        assert message["Subject"] == "Daily safeguarding digest: Example College"
        body = message.get_payload(decode=True).decode()
        assert re.search(r"Statutory \(CTIRU, IWF\) blocks\s+1\s+https://console", body)
        assert re.search(r"Flagged searches\s+1\s", body)
        assert "carol" not in body and "bob" not in body and "self harm" not in body
    finally:
        controller.stop()


def test_no_digest_without_its_settings_and_a_clear_error_when_smtp_fails(tmp_path):
    port = free_port()                                        # nothing listens there
    policy = write_policy(tmp_path, policy_yaml(learner={"block": ["gambling"]},
                                                staff={"block": []}, lists=["gambling"],
                                                extra="logging: {directory: logs}\n"),
                          {"gambling.txt": "bet.test\n"})
    done = subprocess.run([BIN / "webpolicy", "console", "digest", "--policy", str(policy)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no console.digest" in done.stderr
    policy = _digest_policy(tmp_path, port, "digest: {}")
    done = subprocess.run([BIN / "webpolicy", "console", "digest", "--policy", str(policy)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "not sent" in done.stderr


URL = "postgresql://webpolicy@db.test:5432/console"


def test_the_password_comes_from_the_file_or_the_variable_the_policy_names(tmp_path, monkeypatch):
    secret = tmp_path / "db.password"
    secret.write_text("s3cret-from-file\n")
    assert database_password(ConsoleSettings(database=URL, database_password_file=secret),
                             "console") == "s3cret-from-file"
    monkeypatch.setenv("WP_TEST_DB_PASSWORD", "s3cret-from-env")
    assert database_password(ConsoleSettings(database=URL, database_password_env="WP_TEST_DB_PASSWORD"),
                             "console") == "s3cret-from-env"
    assert database_password(ConsoleSettings(database=URL), "console") is None   # libpq's own


def test_a_missing_password_source_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("WP_TEST_DB_PASSWORD", raising=False)
    with pytest.raises(SystemExit, match="WP_TEST_DB_PASSWORD .* is not set"):
        database_password(ConsoleSettings(database=URL, database_password_env="WP_TEST_DB_PASSWORD"),
                          "console")
    with pytest.raises(SystemExit, match="cannot read the database password from .*missing"):
        database_password(ConsoleSettings(database=URL,
                                          database_password_file=tmp_path / "missing"), "users")


def test_the_policy_names_the_database_and_the_command_line_overrides_it(tmp_path):
    pytest.importorskip("django")
    (tmp_path / "gambling.txt").write_text("gambling.test\n")
    (tmp_path / "db.password").write_text("pw\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(learner={"block": ["gambling"]}, staff={"block": []},
                                  lists=["gambling"],
                                  extra=f"logging: {{directory: logs}}\nconsole: {{database: "
                                        f"'{URL}', database_password_file: db.password}}\n"))
    args = argparse.Namespace(command="console", log_dir=None, policy=str(policy), database=None)
    config = _config(args)
    assert (config.database, config.database_password) == (URL, "pw")
    assert config.log_dir == tmp_path / "logs"
    args.database = str(tmp_path / "other.sqlite3")
    config = _config(args)
    assert config.database == tmp_path / "other.sqlite3" and config.database_password is None
    args.database = "postgresql://webpolicy:pw@db.test/console"
    with pytest.raises(SystemExit, match="has a password"):
        _config(args)


def test_the_console_follows_the_policys_log_dirs_or_each_log_dir_given(tmp_path):
    pytest.importorskip("django")
    (tmp_path / "gambling.txt").write_text("gambling.test\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(learner={"block": ["gambling"]}, staff={"block": []},
                                  lists=["gambling"],
                                  extra="logging: {directory: logs}\n"
                                        "console: {log_dirs: [gw1/logs, /srv/gw2/logs]}\n"))
    args = argparse.Namespace(command="console", log_dir=None, policy=str(policy), database=None)
    config = _config(args)
    assert config.log_dirs == [tmp_path / "gw1" / "logs", Path("/srv/gw2/logs")]
    assert config.database == tmp_path / "gw1" / "webpolicy-console.sqlite3"   # beside the first
    args.log_dir = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a")]
    assert _config(args).log_dirs == [tmp_path / "a", tmp_path / "b"]        # once each
    policy.write_text(policy.read_text().replace("console: {log_dirs: [gw1/logs, /srv/gw2/logs]}",
                                                 "console: {log_dirs: logs}"))
    args.log_dir = None
    with pytest.raises(SystemExit, match="console.log_dirs"):
        _config(args)
