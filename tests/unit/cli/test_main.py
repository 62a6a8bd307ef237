"""The `webpolicy` command line, run as IT runs it (a real process): validate and check."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.helpers import REPO, policy_yaml
from webpolicy.cli.main import CHECK_EXIT

POLICY = policy_yaml(
    version="cli-1",
    learner={"block": ["ctiru", "gambling"], "log": ["social"]},
    staff={"block": ["ctiru"], "log": ["gambling"], "on_error": "allow"},
    users={"alice": "staff"},
    lists=["ctiru", "gambling", "social"])
LISTS = {"ctiru.txt": "evil.test/propaganda\n", "gambling.txt": "bet.test\n",
         "social.txt": "social.test\n"}
DECISION_KEYS = ["action", "profile", "profile_reason", "list", "category", "severity",
                 "statutory", "match", "entry", "policy_version"]


def webpolicy(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webpolicy.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    for name, text in LISTS.items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def assert_no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


# -- validate ----------------------------------------------------------------------------------

def test_validate_shipped_policy(tmp_path):
    done = webpolicy("validate")                    # default: policy.yaml in the current directory
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert "policy.yaml: OK" in done.stdout
    for name in ("ctiru", "adult", "gambling", "social"):
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(name))
        entries = int(re.search(r"([\d,]+) entries", line).group(1).replace(",", ""))
        assert entries > 0, line
        assert "UNAVAILABLE" not in line


def test_validate_good_policy(policy):
    done = webpolicy("validate", str(policy))
    assert done.returncode == 0, done.stderr
    assert "version cli-1" in done.stdout


def test_validate_errors_name_file_and_line(policy):
    lines = POLICY.replace("lists:", "lsts:").replace("block: [ctiru, gambling]",
                                                       "block: [ctiru, gambling, nosuch]")
    policy.write_text(lines)
    done = webpolicy("validate", str(policy))
    assert done.returncode == 1
    assert_no_traceback(done)
    bad_key_line = lines.splitlines().index("lsts:") + 1
    assert (f"{policy}:{bad_key_line}: policy: unknown key 'lsts' (did you mean 'lists'?)"
            in done.stderr.splitlines())
    assert re.search(rf"^{re.escape(str(policy))}:5: .*unknown list 'nosuch'", done.stderr, re.M)
    problems = [line for line in done.stderr.splitlines() if not line.endswith("not loaded")]
    assert problems and all(re.match(rf"{re.escape(str(policy))}:\d+: ", p) for p in problems)
    assert "the policy was not loaded" in done.stderr
    assert done.stdout == ""


def test_validate_yaml_syntax_error(policy):
    policy.write_text(POLICY.replace("block: [ctiru, gambling]", "block: [ctiru, gambling"))
    done = webpolicy("validate", str(policy))
    assert done.returncode == 1
    assert_no_traceback(done)
    assert re.search(rf"^{re.escape(str(policy))}:\d+: YAML syntax error", done.stderr, re.M)


def test_validate_missing_statutory_list_is_an_error(policy):
    (policy.parent / "ctiru.txt").unlink()
    done = webpolicy("validate", str(policy))
    assert done.returncode == 1
    assert_no_traceback(done)
    assert re.search(rf"^{re.escape(str(policy))}:\d+: .*ctiru", done.stderr, re.M)


def test_validate_missing_policy_file(tmp_path):
    done = webpolicy("validate", str(tmp_path / "nope.yaml"))
    assert done.returncode == 1
    assert_no_traceback(done)
    assert "nope.yaml" in done.stderr


# -- check -------------------------------------------------------------------------------------

def check_json(policy: Path, *args: str) -> dict:
    done = webpolicy("check", "--policy", str(policy), "--json", *args)
    assert done.stdout.count("\n") == 1, done.stderr or "exactly one JSON object on one line"
    decision = json.loads(done.stdout)
    assert done.returncode == CHECK_EXIT[decision["action"]], done.stderr
    return decision


def test_check_json_keys_exactly(policy):
    decision = check_json(policy, "https://www.bet.test/slots")
    assert list(decision) == DECISION_KEYS
    assert decision == {"action": "block", "profile": "learner", "profile_reason": "default",
                        "list": "gambling", "category": "Gambling", "severity": "medium",
                        "statutory": False, "match": "host", "entry": "bet.test",
                        "policy_version": "cli-1"}


def test_check_json_allowed_has_the_same_keys(policy):
    decision = check_json(policy, "https://news.test/")
    assert list(decision) == DECISION_KEYS
    assert decision["action"] == "allow" and decision["list"] is None


def test_check_identity_options(policy):
    assert check_json(policy, "bet.test", "--client", "10.20.1.2")["profile_reason"] == \
        "network 10.20.0.0/16"
    assert check_json(policy, "bet.test", "--client", "10.20.1.2")["action"] == "log"
    assert check_json(policy, "bet.test", "--user", "alice")["profile"] == "staff"
    assert check_json(policy, "social.test", "--profile", "learner")["action"] == "log"


def test_check_statutory_blocks_every_profile(policy):
    for args in ((), ("--profile", "staff")):
        decision = check_json(policy, "http://evil.test/propaganda/x", *args)
        assert (decision["action"], decision["statutory"], decision["match"]) == ("block", True, "url")


def test_check_plain_output(policy):
    done = webpolicy("check", "--policy", str(policy), "https://www.bet.test/")
    assert done.returncode == 4
    assert done.stdout.startswith("BLOCK")
    assert "gambling" in done.stdout and "bet.test" in done.stdout


def test_check_broken_policy_prints_file_line(policy):
    policy.write_text(POLICY.replace("default_profile: learner", "default_profile: nobody"))
    done = webpolicy("check", "--policy", str(policy), "--json", "bet.test")
    assert done.returncode == 1
    assert_no_traceback(done)
    assert re.search(rf"^{re.escape(str(policy))}:2: ", done.stderr, re.M)
    assert done.stdout == ""


@pytest.mark.parametrize("args", [("http://[bad",), ("bet.test", "--profile", "nobody")])
def test_check_bad_input_is_a_message_not_a_traceback(policy, args):
    done = webpolicy("check", "--policy", str(policy), *args)
    assert done.returncode == 2
    assert_no_traceback(done)
    assert done.stderr.startswith("webpolicy check: ")


@pytest.mark.parametrize("url, code", [("https://news.test/", 0), ("https://social.test/", 3),
                                       ("https://www.bet.test/", 4)])
def test_check_exit_status_is_the_action(policy, url, code):
    """Documented for scripts: 0 allowed, 3 logged, 4 blocked."""
    assert webpolicy("check", "--policy", str(policy), url).returncode == code
    assert CHECK_EXIT == {"allow": 0, "log": 3, "block": 4}


@pytest.mark.parametrize("args", [("validate",), ("check", "https://www.bet.test/")])
def test_a_closed_pipe_is_not_a_traceback(policy, args):
    """`webpolicy validate | head`: the reader went away before the output was written."""
    command = [sys.executable, "-m", "webpolicy.cli.main", *args]
    if args[0] == "validate":
        command.append(str(policy))
    else:
        command += ["--policy", str(policy)]
    read, write = os.pipe()
    os.close(read)                             # nobody will ever read: every write fails
    try:
        done = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 141


# -- an unusable logging.directory (issue #15) ---------------------------------------------
# Both passed before: validate said OK and run started a proxy that lost every record.

def test_validate_refuses_a_log_directory_that_is_a_file(policy):
    blocker = policy.parent / "logs-file"
    blocker.write_text("not a directory")
    policy.write_text(POLICY + f"logging: {{directory: {blocker}}}\n")
    done = webpolicy("validate", str(policy))
    assert done.returncode == 1
    assert_no_traceback(done)
    line = POLICY.count("\n") + 1
    assert f"{policy}:{line}: logging.directory: {blocker} is not a directory" in done.stderr
    assert "the safeguarding log could not be kept" in done.stderr


def test_run_refuses_to_start_without_a_usable_log_directory(policy):
    blocker = policy.parent / "logs-file"
    blocker.write_text("not a directory")
    policy.write_text(POLICY + f"logging: {{directory: {blocker}/logs}}\n")
    done = webpolicy("run", "--policy", str(policy), "--listen-port", "1")
    assert done.returncode == 1
    assert "cannot be created" in done.stderr
    assert_no_traceback(done)


def test_validate_a_mistyped_source_is_an_error_on_the_source_line(policy):
    """Issue #15: a source that cannot be read fails validate (exit 1) with file:line of the
    line naming the source, even for a list that is not statutory."""
    text = POLICY.replace(
        "  gambling: {category: Gambling, severity: medium, sources: [gambling.txt]}\n",
        "  gambling:\n    category: Gambling\n    sources:\n      - gambling.txt\n"
        "      - gambling-typo.txt\n")
    policy.write_text(text)
    done = webpolicy("validate", str(policy))
    assert done.returncode == 1, done.stdout
    assert_no_traceback(done)
    line = text.splitlines().index("      - gambling-typo.txt") + 1
    assert re.search(rf"^{re.escape(str(policy))}:{line}: .*gambling-typo.txt", done.stderr,
                     re.M), done.stderr
