"""A Django TestCase with its own log directory, and users in each role, on SQLite or (its
`on_postgresql` twin) on PostgreSQL."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.test import TestCase, override_settings

from webpolicy.console import ingest
from webpolicy.console.accounts import add_user
from webpolicy.console.roles import ensure_roles

from . import databases, samples

PASSWORD = "correct horse battery staple"


class ConsoleTest(TestCase):
    """Each test: an empty log directory, the roles, a `dsl` and an `it` account."""

    database = databases.SQLITE

    @classmethod
    def setUpClass(cls) -> None:
        databases.use(cls.database)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        databases.use(databases.SQLITE)

    def setUp(self) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="wp-log-"))
        self.addCleanup(shutil.rmtree, self.log_dir, ignore_errors=True)
        overrides = override_settings(WEBPOLICY_LOG_DIRS=[str(self.log_dir)])
        overrides.enable()
        self.addCleanup(overrides.disable)
        ingest.reset_throttle()
        ensure_roles()
        add_user("dana", "dsl", PASSWORD)
        add_user("ian", "it", PASSWORD)
        users = get_user_model().objects
        self.dsl, self.it = users.get(username="dana"), users.get(username="ian")

    def log(self, *records: dict) -> None:
        """Write records to the log and make the next request ingest them."""
        samples.write(self.log_dir, *records)
        ingest.reset_throttle()

    def sign_in(self, user) -> None:
        self.client.force_login(user)


def on_postgresql(test_class: type[ConsoleTest]) -> type[ConsoleTest]:
    """The same tests on PostgreSQL: `IngestOnPostgreSQL = on_postgresql(IngestTest)`."""
    name = test_class.__name__.removesuffix("Test") + "OnPostgreSQL"
    return type(name, (test_class,), {"database": databases.POSTGRESQL,
                                      "__module__": test_class.__module__,
                                      "__qualname__": name, "__doc__": test_class.__doc__})
