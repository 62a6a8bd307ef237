"""`webpolicy erase` reaches the console's database, in real processes (each command
configures Django for itself, as on a gateway)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.console import samples

pytestmark = pytest.mark.skipif(importlib.util.find_spec("django") is None,
                                reason="the console extra (Django) is not installed")
BIN = Path(sys.executable).parent
LIST_EVENTS = """
import sys
from pathlib import Path
from webpolicy.console.settings import config_for, configure
configure(config_for(Path(sys.argv[1])), migrate=False)
from webpolicy.console.ingest import ingest
from webpolicy.console.models import Event
if sys.argv[2] == "ingest":
    ingest(Path(sys.argv[1]))
print(",".join(sorted(Event.objects.values_list("reference", flat=True))))
"""


def _events(logs: Path, ingest: bool = False) -> str:
    done = subprocess.run([sys.executable, "-c", LIST_EVENTS, str(logs),
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


def test_erase_without_a_console_database_says_nothing_of_one(tmp_path):
    logs = tmp_path / "logs"
    samples.write(logs, samples.record("WP-0000000001", user="bob"))
    done = subprocess.run([BIN / "webpolicy", "erase", "--user", "bob", "--yes",
                           "--log-dir", str(logs)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "console database" not in done.stdout
    assert not (tmp_path / "webpolicy-console.sqlite3").exists()
