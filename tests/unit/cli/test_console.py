"""`webpolicy console` and `users`: where the PostgreSQL password comes from (never policy.yaml)."""

from __future__ import annotations

import argparse

import pytest
from webpolicy.cli.console import _config, database_password
from webpolicy.policy.model import ConsoleSettings

from ..helpers import policy_yaml

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
