"""The console's database-touching tests run twice: on SQLite (the default) and on a real
PostgreSQL server (what a centre may have), with the same code.

Django is configured once per process, so a PostgreSQL test class switches the `default`
connection to PostgreSQL for its run and back afterwards (Django's TestCase wraps each class
in a transaction on whatever `default` is when the class starts).  The server is started on
first use, one per test session, and stopped at its end (conftest.py).  Without PostgreSQL
installed those classes are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import atexit
import copy
import os
import unittest
from pathlib import Path

from .pgserver import PASSWORD, PostgresServer, PostgresUnavailable

SQLITE, POSTGRESQL = "sqlite", "postgresql"
_configs: dict[str, dict] = {}
_server: PostgresServer | None = None
_current = SQLITE


def remember_sqlite() -> None:
    """Keep the configured SQLite settings (with Django's defaults filled in) to switch back."""
    from django.db import connections
    _configs[SQLITE] = copy.deepcopy(connections.settings["default"])


def _postgresql() -> dict:
    global _server
    if POSTGRESQL not in _configs:
        from django.core.management import call_command
        from django.db import connections
        from webpolicy.console.settings import config_for, database_settings
        try:
            _server = PostgresServer().start()
        except PostgresUnavailable as exc:
            if os.environ.get("CI"):
                raise
            raise unittest.SkipTest(str(exc)) from None
        atexit.register(stop)
        url = _server.create_database("console_test")
        config = config_for(Path(_server.root) / "logs", url, database_password=PASSWORD)
        values = connections.configure_settings({"default": database_settings(config)})["default"]
        _configs[POSTGRESQL] = values
        _switch(values)
        call_command("migrate", verbosity=0, interactive=False)
    return _configs[POSTGRESQL]


def _switch(values: dict) -> None:
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections
    connections["default"].close()
    current = connections.settings["default"]   # the same dict as settings.DATABASES["default"]
    current.clear()
    current.update(copy.deepcopy(values))
    del connections["default"]                  # the next use connects with the new settings
    ContentType.objects.clear_cache()           # ids differ between the two databases


def use(name: str) -> None:
    """Make `default` the SQLite or the PostgreSQL database."""
    global _current
    if name == _current:
        return
    _switch(_postgresql() if name == POSTGRESQL else _configs[SQLITE])
    _current = name


def stop() -> None:
    global _server
    if _server is not None:
        use(SQLITE)
        server, _server = _server, None
        server.stop()
