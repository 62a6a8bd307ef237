"""The deployment guide's artefacts: the example systemd unit is valid and hardened, the guide's
links resolve, and the service and the Docker image run the gateway the same way."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
UNIT = DOCS / "webpolicy.service"


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.fail("systemd-analyze not found: run scripts/install-system-deps.sh (as root)")
    return found


# The gateway, the console, and the digest's service and timer (the timer's service must sit
# beside it for verify).
UNITS = ("webpolicy.service", "webpolicy-console.service", "webpolicy-digest.service",
         "webpolicy-digest.timer")
SERVICES = [name for name in UNITS if name.endswith(".service")]


def _here(tmp_path: Path, name: str) -> Path:
    """The units in tmp_path with ExecStart pointing at this checkout's webpolicy (verify
    checks that the programs exist); the path of `name`."""
    venv_webpolicy = Path(sys.executable).parent / "webpolicy"
    for unit in UNITS:
        text = (DOCS / unit).read_text().replace("/opt/webpolicy/.venv/bin/webpolicy",
                                                 str(venv_webpolicy))
        (tmp_path / unit).write_text(text)
    return tmp_path / name


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    return _here(tmp_path, UNIT.name)


@pytest.mark.parametrize("name", UNITS)
def test_unit_file_verifies_cleanly(tmp_path, name):
    path = _here(tmp_path, name)
    done = subprocess.run([_systemd_analyze(), "verify", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=path.parent)
    # verify exits 0 on unknown keys too, printing a warning: any output is a failure.
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_unit_file_is_hardened(tmp_path, name):
    path = _here(tmp_path, name)
    done = subprocess.run([_systemd_analyze(), "security", "--offline=yes", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=path.parent)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


def test_the_console_service_runs_beside_the_gateway_and_reaches_the_same_database():
    """The console, the digest and the documented `users add` use one database, in the
    console's own state directory, and the log of webpolicy.service."""
    text = (DOCS / "webpolicy-console.service").read_text().replace("\\\n", " ")
    digest = (DOCS / "webpolicy-digest.service").read_text().replace("\\\n", " ")
    database = "--database /var/lib/webpolicy-console/webpolicy-console.sqlite3"
    for unit in (text, digest):
        (start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
        assert "--policy /etc/webpolicy/policy.yaml" in start and database in start
        assert "User=webpolicy" in unit and "LogsDirectory=webpolicy" in unit
    assert "--listen 127.0.0.1:8081" in text          # loopback: published through HTTPS
    assert " console digest " in digest and "EnvironmentFile=-/etc/webpolicy/smtp.env" in digest
    assert "OnCalendar=Mon *-*-* 07:30:00" in (DOCS / "webpolicy-digest.timer").read_text()


def _unit_values(key: str) -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    return [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith(f"{key}=")]


def test_service_runs_the_gateway_like_the_image():
    (exec_start,) = _unit_values("ExecStart")
    args = shlex.split(exec_start)
    assert args[1:3] == ["run", "--policy"] and args[3] == "/etc/webpolicy/policy.yaml"
    assert "confdir=/var/lib/webpolicy/mitmproxy" in args
    assert "flow_detail=0" in args, "no per-request URLs in the journal"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "/etc/webpolicy/policy.yaml" in dockerfile
    assert "confdir=/var/lib/webpolicy/mitmproxy" in dockerfile
    assert _unit_values("User") == ["webpolicy"]
    assert _unit_values("StateDirectoryMode") == ["0700"]
    assert _unit_values("LogsDirectoryMode") == ["0700"]
    assert _unit_values("ExecReload")[-1] == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("document", [REPO / "README.md", DOCS / "deployment.md"])
def test_links_resolve(document):
    text = document.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local
    for target in local:
        path = (document.parent / target).resolve()
        assert path.exists(), f"{document.name}: broken link {target}"


def test_readme_deployment_section_points_to_the_guide():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deployment", 1)[1].split("\n## ", 1)[0]
    for link in ("docs/deployment.md", "docs/webpolicy.service", "Dockerfile",
                 "docs/circumvention.md"):
        assert f"]({link})" in section


def test_guide_anchors_exist():
    """In-page links (#anchor) name real headings (GitHub's anchor rules)."""
    text = (DOCS / "deployment.md").read_text()
    headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in headings, anchor
