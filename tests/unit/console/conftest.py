"""Django for the console's unit tests: configured once per test process, on a temporary
SQLite file, with Django's test environment (the test client's host, and a fast password
hasher: PBKDF2's cost is for real passwords, not for tests).  Test classes made with
base.on_postgresql() switch to a real PostgreSQL server (databases.py), one per session.  Without the webpolicy[console]
extra (no Django) the console's tests are not collected."""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import tempfile
from pathlib import Path

from . import databases


def _configure() -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    from webpolicy.console.settings import config_for, django_settings

    home = Path(tempfile.mkdtemp(prefix="webpolicy-console-test-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    values = django_settings(config_for(home / "logs"))
    values["PASSWORD_HASHERS"] = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.configure(**values)
    django.setup()
    setup_test_environment()
    call_command("migrate", verbosity=0, interactive=False)
    databases.remember_sqlite()


def pytest_sessionfinish(session, exitstatus) -> None:
    """One PostgreSQL server per session (started by the first test that needs it)."""
    databases.stop()


if importlib.util.find_spec("django") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    _configure()
