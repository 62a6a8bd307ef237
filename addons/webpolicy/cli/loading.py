"""Loading the policy for a command: the compiled policy, or every problem printed as
`file:line: message` on stderr (shared by every `webpolicy` command that needs the lists)."""

from __future__ import annotations

import sys
from pathlib import Path

from webpolicy.engine.engine import Engine, load_engine
from webpolicy.policy.model import PolicyError


def print_problems(exc: PolicyError) -> None:
    errors = [p for p in exc.problems if not p.warning]
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"{len(errors)} error(s): the policy was not loaded", file=sys.stderr)


def engine_or_report(policy_path: str | Path, complete: bool = False) -> Engine | None:
    """The compiled policy, or None after printing every problem as file:line: message.
    `complete`: a list source that fails is an error too (see engine.build_engine)."""
    try:
        return load_engine(Path(policy_path), complete=complete)
    except PolicyError as exc:
        print_problems(exc)
        return None
