"""Small builders shared by unit tests: a policy file with its lists, and its engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def learner_policy_with(directory: Path, key: str, value: str) -> Policy:
    """A one-profile policy (learner blocks adult) with one more profile setting, written as
    YAML: for tests of how the schema reads that one setting."""
    policy = (f'version: "1"\ndefault_profile: learner\nprofiles:\n  learner:\n'
              f"    block: [adult]\n    {key}: {value}\n"
              "lists:\n  adult: {category: Pornography, sources: [adult.txt]}\n")
    return policy_from(directory, policy, {"adult.txt": "adult.example\n"})


# The lists most unit tests share, as policy.yaml writes them (tests edit the text with
# str.replace, so these lines are kept exactly).
LIST_SPECS = {
    "ctiru": "{statutory: true, category: Terrorist content, severity: critical, format: urls, "
             "sources: [ctiru.txt]}",
    "adult": "{category: Pornography, severity: high, sources: [adult.txt]}",
    "gambling": "{category: Gambling, severity: medium, sources: [gambling.txt]}",
    "social": "{category: Social networking, severity: low, sources: [social.txt]}",
}
STAFF_NETWORK = ("10.20.0.0/16", "staff")


def policy_yaml(*, version: str = "unit", learner: dict, staff: dict,
                users: dict[str, str] | None = None,
                networks: Sequence[tuple[str, str]] = (STAFF_NETWORK,),
                lists: Sequence[str] | Mapping[str, str] = (), extra: str = "") -> str:
    """A policy.yaml with a default `learner` profile and a `staff` one.

    Profile settings are keyword values: a list renders as `[a, b]`, anything else as
    written (`connect="{block_ip_literals: true}"`).  `lists` names entries of LIST_SPECS or
    maps names to their own specs; `extra` is appended as written (allow, deny, logging...).
    """
    specs = lists if isinstance(lists, Mapping) else {name: LIST_SPECS[name] for name in lists}
    lines = [f'version: "{version}"', "default_profile: learner", "profiles:"]
    for name, settings in (("learner", learner), ("staff", staff)):
        lines.append(f"  {name}:")
        lines += [f"    {key}: {_flow(value)}" for key, value in settings.items()]
    lines.append("clients:")
    if users:
        lines.append("  users: {" + ", ".join(f"{u}: {p}" for u, p in users.items()) + "}")
    lines.append("  networks:")
    lines += [f"    - {{cidr: {cidr}, profile: {profile}}}" for cidr, profile in networks]
    lines.append("lists:")
    lines += [f"  {name}: {spec}" for name, spec in specs.items()]
    return "\n".join(lines) + "\n" + extra


def _flow(value) -> str:
    return "[" + ", ".join(value) + "]" if isinstance(value, (list, tuple)) else str(value)
