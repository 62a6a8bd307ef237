"""Accounts, roles, sign-in throttling (django-axes) and the `webpolicy users` command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from webpolicy.console.accounts import (
    AccountError,
    add_user,
    disable_user,
    list_users,
    new_token,
    set_password,
)
from webpolicy.console.settings import config_for, secret_key

from ..helpers import ADDONS
from .base import PASSWORD, ConsoleTest, on_postgresql


def sign_in(client: Client, name: str, password: str):
    return client.post("/login/", {"username": name, "password": password})


class AccountsTest(ConsoleTest):
    def test_roles_and_listing(self):
        assert [(n, r, a) for n, r, a, _ in list_users()] == [("dana", "dsl", True),
                                                              ("ian", "it", True)]
        assert self.dsl.has_perm("console.view_safeguarding")
        assert self.dsl.has_perm("console.change_case")
        assert not self.it.has_perm("console.view_safeguarding")
        assert not self.it.has_perm("console.export_events")

    def test_weak_passwords_unknown_roles_and_duplicates_are_refused(self):
        with pytest.raises(AccountError, match="password refused"):
            add_user("eve", "dsl", "password123")
        with pytest.raises(AccountError, match="unknown role"):
            add_user("eve", "admin", PASSWORD)
        with pytest.raises(AccountError, match="exists"):
            add_user("dana", "dsl", PASSWORD)

    def test_sign_in_and_out(self):
        response = sign_in(self.client, "dana", PASSWORD)
        assert response.status_code == 302 and response["Location"] == "/"
        assert self.client.get("/").status_code == 200
        self.client.post("/logout/")
        assert self.client.get("/").status_code == 302

    def test_repeated_failures_lock_the_sign_in(self):
        for _ in range(4):
            response = sign_in(self.client, "dana", "wrong password")
            assert response.status_code == 200 and "was not right" in response.content.decode()
        response = sign_in(self.client, "dana", "wrong password")      # the fifth
        assert response.status_code == 429
        response = sign_in(self.client, "dana", PASSWORD)             # even the right one
        assert response.status_code == 429 and "Too many failed sign-ins" in response.content.decode()
        assert self.client.get("/").status_code == 302
        other = Client(REMOTE_ADDR="192.0.2.7")                       # not another address
        assert sign_in(other, "dana", PASSWORD).status_code == 302

    def test_a_disabled_account_is_signed_out_and_loses_its_tokens(self):
        sign_in(self.client, "dana", PASSWORD)
        new_token("dana")
        disable_user("dana")
        assert self.client.get("/").status_code == 302
        assert sign_in(Client(), "dana", PASSWORD).status_code == 200
        assert not get_user_model().objects.get(username="dana").api_tokens.exists()
        with pytest.raises(AccountError, match="disabled"):
            new_token("dana")

    def test_a_new_password_re_enables_and_ends_old_sessions(self):
        sign_in(self.client, "dana", PASSWORD)
        disable_user("dana")
        with pytest.raises(AccountError, match="password refused"):
            set_password("dana", "dana")
        set_password("dana", "another long passphrase")
        assert self.client.get("/").status_code == 302            # the old session is gone
        assert sign_in(Client(), "dana", "another long passphrase").status_code == 302


AccountsOnPostgreSQL = on_postgresql(AccountsTest)


def test_secret_key_is_generated_once_private(tmp_path):
    path = tmp_path / "webpolicy-console.secret"
    key = secret_key(path)
    assert len(key) >= 50 and secret_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_state_lives_beside_the_log_directory(tmp_path):
    config = config_for(tmp_path / "logs")
    assert config.database == tmp_path / "webpolicy-console.sqlite3"
    assert config.secret_file == tmp_path / "webpolicy-console.secret"
    elsewhere = config_for(tmp_path / "logs", tmp_path / "state" / "console.sqlite3")
    assert elsewhere.secret_file == tmp_path / "state" / "webpolicy-console.secret"


def test_users_command(tmp_path):
    """`webpolicy users` in its own process, as an administrator runs it."""
    def users(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "webpolicy.cli.main", "users", *args,
                               "--log-dir", str(tmp_path / "logs")], input=stdin, text=True,
                              capture_output=True, env={**os.environ, "PYTHONPATH": str(ADDONS)},
                              timeout=120)

    assert users("add", "dana", "--role", "dsl", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    refused = users("add", "eve", "--role", "it", "--password-stdin", stdin="short\n")
    assert refused.returncode == 1 and "password refused" in refused.stderr
    token = users("token", "dana")
    assert token.returncode == 0 and token.stdout.startswith("wpc_")
    assert users("password", "dana", "--password-stdin", stdin="yet another passphrase\n").returncode == 0
    assert users("disable", "dana").returncode == 0
    listing = users("list").stdout
    assert "dana" in listing and "dsl" in listing and "disabled" in listing
    assert stat.S_IMODE((tmp_path / "webpolicy-console.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "webpolicy-console.secret").stat().st_mode) == 0o600


def test_time_zone(monkeypatch):
    from webpolicy.console.settings import time_zone
    for value, expected in (("", "Europe/London"), ("UTC", "UTC"), (":/etc/localtime", "Europe/London"),
                            ("Not/AZone", "Europe/London"), ("Europe/Paris", "Europe/Paris")):
        monkeypatch.setenv("TZ", value)
        assert time_zone() == expected, value


def test_without_the_console_extra_the_commands_say_what_to_install(tmp_path):
    """The gateway does not need Django; `webpolicy console` without it says what to do."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['django'] = None\n")   # import django fails
    done = subprocess.run([sys.executable, "-m", "webpolicy.cli.main", "console", "--log-dir",
                           str(tmp_path / "logs")], text=True, capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ADDONS}"})
    assert done.returncode == 1
    assert "django is not installed" in done.stderr and "webpolicy[console]" in done.stderr
    assert not (tmp_path / "webpolicy-console.secret").exists()
