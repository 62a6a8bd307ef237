"""Settings as `webpolicy console` builds them, in a fresh process (Django configures once)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from ..helpers import ADDONS

SCRIPT = """
import sys
from pathlib import Path
from django.core.management import call_command
from webpolicy.console.settings import config_for, configure
configure(config_for(Path(sys.argv[1]), https=sys.argv[2] == "https",
                     trusted_origins=["https://dsl.college.example"]))
call_command("check", "--deploy", "--fail-level", "WARNING")
from django.conf import settings
print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.SECURE_SSL_REDIRECT)
"""


def _run(log_dir, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(log_dir), mode], text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ADDONS)})


def test_https_deployment_passes_djangos_deploy_checks(tmp_path):
    done = _run(tmp_path / "logs", "https")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-3:] == ["True", "True", "True"]
    for name in ("webpolicy-console.sqlite3", "webpolicy-console.secret",
                 "webpolicy-console.sqlite3-wal"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_plain_http_on_loopback_has_no_secure_cookies(tmp_path):
    """Cookies marked Secure would never come back over http://127.0.0.1."""
    done = _run(tmp_path / "logs", "http")
    assert "security.W012" in done.stderr or "SESSION_COOKIE_SECURE" in done.stderr
    assert done.returncode != 0                          # check --deploy says so: use --https
