"""Small builders shared by unit tests: a policy file with its lists, and its engine."""

from __future__ import annotations

from pathlib import Path

from webpolicy.engine.engine import Engine, build_engine
from webpolicy.policy.model import Policy, load_policy

REPO = Path(__file__).resolve().parents[2]      # the repository
ADDONS = REPO / "addons"                         # what PYTHONPATH needs for a child process
UT1 = REPO.parent / "shared" / "data" / "ut1"    # the UT1 snapshot beside the repository


def write_policy(directory: Path, policy: str, lists: dict[str, str]) -> Path:
    """Write policy.yaml and its list files (names relative to `directory`)."""
    for name, text in lists.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    path = directory / "policy.yaml"
    path.write_text(policy)
    return path


def policy_from(directory: Path, policy: str, lists: dict[str, str]) -> Policy:
    return load_policy(write_policy(directory, policy, lists))


def engine_from(directory: Path, policy: str, lists: dict[str, str]) -> Engine:
    return build_engine(policy_from(directory, policy, lists))
