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


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    """The unit with its ExecStart pointing at this checkout's webpolicy (verify checks that
    the programs exist)."""
    venv_webpolicy = Path(sys.executable).parent / "webpolicy"
    text = UNIT.read_text().replace("/opt/webpolicy/.venv/bin/webpolicy", str(venv_webpolicy))
    path = tmp_path / "webpolicy.service"
    path.write_text(text)
    return path


def test_unit_file_verifies_cleanly(unit_here):
    done = subprocess.run([_systemd_analyze(), "verify", str(unit_here)], capture_output=True,
                          text=True, timeout=60, cwd=unit_here.parent)
    # verify exits 0 on unknown keys too, printing a warning: any output is a failure.
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_unit_file_is_hardened(unit_here):
    done = subprocess.run([_systemd_analyze(), "security", "--offline=yes", str(unit_here)],
                          capture_output=True, text=True, timeout=60, cwd=unit_here.parent)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


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
