"""Small builders shared by unit tests: a policy file with its lists, and its engine."""

from __future__ import annotations

from pathlib import Path

from webpolicy.engine.engine import Engine, build_engine
from webpolicy.policy.model import Policy, load_policy


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
