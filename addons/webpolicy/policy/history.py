"""The policy's history: every accepted and every refused change, append-only, beside it.

A DSL or an inspector asks "who changed the filter, what changed, and when".  Each entry is one
JSON line in `policy-history.jsonl` next to policy.yaml: when, the event (applied, accepted,
refused), who (the account that ran `webpolicy apply`; for a hand edit picked up by the proxy,
the file's owner), how (apply, reload, start), the policy file's SHA-256, a unified diff of
the policy file against the last accepted one, the entry count of each list that changed, and
the problems of a refused change.  The last accepted text is kept beside it (0600) so the next
entry can show its diff.  Files are 0600: the policy can hold secrets (a webhook URL carries its token).

Writers: `webpolicy apply` (applied, with who), and the proxy on start and reload (accepted or
refused), which adds nothing when the file is the one last recorded, so an apply followed by
the proxy's reload is one entry.  Appends take an exclusive flock.
"""

from __future__ import annotations

import datetime as dt
import difflib
import fcntl
import getpass
import hashlib
import json
import os
import pwd
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

HISTORY_FILE = "policy-history.jsonl"
LAST_ACCEPTED = ".policy-history.last.yaml"
EVENTS = ("applied", "accepted", "refused")
MAX_DIFF_LINES = 2000             # a whole-file rewrite is still readable, and bounded


class HistoryError(Exception):
    """The history cannot be written or read (a permission, a full disk)."""


@dataclass(frozen=True)
class Change:
    """One entry of the history."""

    time: str
    event: str                                  # applied | accepted | refused
    by: str                                     # an account name
    how: str                                    # apply | reload | start
    policy: str                                 # the policy file's path
    sha256: str
    version: str = ""                           # the policy's `version:` when it loaded
    diff: str = ""                              # unified diff against the last accepted
    lists: dict[str, list[int | None]] = field(default_factory=dict)   # name: [before, after]
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def history_path(policy: Path) -> Path:
    return policy.parent / HISTORY_FILE


def digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def current_account() -> str:
    """Who runs this command: the invoking user behind sudo, else this process's user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def file_owner(path: Path) -> str:
    try:
        uid = path.stat().st_uid
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "unknown"


def list_changes(before: Mapping[str, int] | None, after: Mapping[str, int] | None
                 ) -> dict[str, list[int | None]]:
    """The lists whose entry count changed (or that came or went): name -> [before, after]."""
    before, after = before or {}, after or {}
    return {name: [before.get(name), after.get(name)]
            for name in sorted(set(before) | set(after))
            if before.get(name) != after.get(name)}


def record(policy: Path, event: str, by: str, how: str, *, version: str = "",
           lists: Mapping[str, list[int | None]] | None = None,
           problems: list[str] | None = None, text: bytes | None = None) -> Change | None:
    """Append one entry for the policy file as it is now (or `text`, what was read); None
    when it is what the history last recorded for this event kind (nothing changed)."""
    if event not in EVENTS:
        raise ValueError(f"event {event!r} is not one of {EVENTS}")
    policy = policy.resolve()
    try:
        text = policy.read_bytes() if text is None else text
    except OSError as exc:
        raise HistoryError(f"{policy}: cannot read: {exc.strerror or exc}") from None
    with _one_at_a_time(policy.parent):
        return _record(policy, event, by, how, version, lists, problems, text)


def _record(policy: Path, event: str, by: str, how: str, version: str,
            lists: Mapping[str, list[int | None]] | None, problems: list[str] | None,
            text: bytes) -> Change | None:
    sha = digest(text)
    last = _last_accepted(policy)
    if event != "refused" and last is not None and digest(last) == sha:
        return None
    if event == "refused" and _last_refused_sha(policy) == sha:
        return None
    change = Change(time=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), event=event,
                    by=by, how=how, policy=str(policy), sha256=sha, version=version,
                    diff=_diff(last, text, policy.name), lists=dict(lists or {}),
                    problems=list(problems or []))
    _append(history_path(policy), change)
    if event != "refused":
        _write_private(policy.parent / LAST_ACCEPTED, text)
    return change


def read(policy: Path, since: dt.datetime | None = None) -> Iterator[Change]:
    """The entries, oldest first (lines that cannot be read are skipped)."""
    path = history_path(policy.resolve())
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for line in lines:
        try:
            change = Change(**json.loads(line))
        except (ValueError, TypeError):
            continue
        if since is None or dt.datetime.fromisoformat(change.time) >= since:
            yield change


def _last_accepted(policy: Path) -> bytes | None:
    try:
        return (policy.parent / LAST_ACCEPTED).read_bytes()
    except OSError:
        return None


def _last_refused_sha(policy: Path) -> str | None:
    last = None
    for change in read(policy):
        last = change.sha256 if change.event == "refused" else None
    return last


def _diff(before: bytes | None, after: bytes, name: str) -> str:
    old = before.decode("utf-8", "replace").splitlines(keepends=True) if before else []
    new = after.decode("utf-8", "replace").splitlines(keepends=True)
    lines = list(difflib.unified_diff(old, new, f"a/{name}", f"b/{name}"))
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... {len(lines) - MAX_DIFF_LINES} more lines\n"]
    return "".join(lines)


@contextmanager
def _one_at_a_time(directory: Path) -> Iterator[None]:
    """The workers of `webpolicy run --workers N` each record the same start or reload at the
    same moment: the check for "already recorded" and the append are made one step, under an
    exclusive flock on the policy's directory (no lock file to create), so it is recorded once.
    A directory that cannot be opened is no reason not to record."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _append(path: Path, change: Change) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, (change.to_json() + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise HistoryError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _write_private(path: Path, data: bytes) -> None:
    """Replace a file atomically, 0600 (it may hold alert settings, such as a webhook URL)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        raise HistoryError(f"{path}: cannot write: {exc.strerror or exc}") from None
