"""`webpolicy update` and `webpolicy lists`: list sources given as URLs, and how current
every list is.

`update` downloads what is due now (or a named list's sources, or, with --force, everything)
through lists/remote.py and prints what each download came to; a running proxy picks a
replaced copy up by itself (its reloader watches the file).  `lists` prints, per list, its
entries and each source with its last successful download, age and last error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from webpolicy.engine.engine import build_engine
from webpolicy.lists import remote
from webpolicy.lists.compiler import ListStatus
from webpolicy.policy.model import ListSpec, Policy, PolicyError, RemoteSource, load_policy

DEFAULT_POLICY = "policy.yaml"


def add_commands(commands) -> None:
    update = commands.add_parser(
        "update", help="download the list sources given as URLs that are due now",
        description="Download the URL sources that are due (--list: that list's, due or not; "
                    "--force: every one, without a conditional request), check each download "
                    "and replace its last good copy if it passes.  A running proxy reloads by "
                    "itself.  Exit status 1 if any download failed or was refused.")
    update.add_argument("--policy", default=DEFAULT_POLICY)
    update.add_argument("--list", dest="list_name", metavar="NAME",
                        help="only this list's URL sources, due or not")
    update.add_argument("--force", action="store_true",
                        help="download even what is not due or has not changed")
    update.add_argument("--accept-shrink", action="store_true",
                        help="take a download that lost more entries than max_shrink allows")
    update.set_defaults(handler=cmd_update)

    lists = commands.add_parser(
        "lists", help="every list: entries, sources, last successful download, age, last error")
    lists.add_argument("--policy", default=DEFAULT_POLICY)
    lists.set_defaults(handler=cmd_lists)


def _policy(path: str) -> Policy | None:
    try:
        return load_policy(Path(path))
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s): the policy was not loaded", file=sys.stderr)
        return None


def cmd_update(args: argparse.Namespace) -> int:
    policy = _policy(args.policy)
    if policy is None:
        return 1
    sources = policy.remote_sources()
    if args.list_name:
        if args.list_name not in policy.lists:
            print(f"webpolicy update: unknown list '{args.list_name}' "
                  f"(lists: {', '.join(policy.lists)})", file=sys.stderr)
            return 2
        sources = [s for s in sources if s.list == args.list_name]
    if not sources:
        print("no list has a URL source" if not args.list_name else
              f"lists.{args.list_name} has no URL source")
        return 0
    failed = updated = 0
    for source in sources:
        state = remote.read_state(source)
        if not (args.force or args.list_name or remote.due(source, state)):
            print(f"lists.{source.list}  {source.url}\n    not due: {_when_due(source, state)}")
            continue
        outcome = remote.fetch(source, force=args.force, accept_shrink=args.accept_shrink)
        print(f"lists.{source.list}  {source.url}\n    {outcome.result}: {outcome.message}")
        failed += not outcome.ok
        updated += outcome.result == remote.UPDATED
    if updated:
        print(f"{updated} last good cop{'y' if updated == 1 else 'ies'} replaced; a running "
              "proxy reloads the changed lists by itself")
    return 1 if failed else 0


def _when_due(source: RemoteSource, state: remote.SourceState) -> str:
    wait = remote.next_due(source, state) - time.time()
    return f"next download in {format_age(wait)} (--force: now)"


def cmd_lists(args: argparse.Namespace) -> int:
    policy = _policy(args.policy)
    if policy is None:
        return 1
    try:
        status = build_engine(policy).status
    except PolicyError as exc:              # e.g. a statutory URL source never downloaded
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        status = {}
    rows = [("LIST", "ENTRIES", "SOURCE", "LAST SUCCESS", "AGE", "LAST ERROR")]
    for name, spec in policy.lists.items():
        first = True
        for source_row in source_rows(spec):
            entries = _entries(status.get(name)) if first else ""
            rows.append((name if first else "", entries, *source_row))
            first = False
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths + [0])).rstrip())
    return 0


def _entries(status: ListStatus | None) -> str:
    if status is None:
        return "?"
    return f"{status.entries:,}" + ("" if status.available else " UNAVAILABLE")


def source_rows(spec: ListSpec, now: float | None = None) -> list[tuple[str, str, str, str]]:
    """(source, last success, age, last error) for each source of a list: URL sources from
    their sidecars, files from their modification time."""
    now = time.time() if now is None else now
    remote_paths = {source.path: source for source in spec.remote}
    rows = []
    for path in spec.sources:
        source = remote_paths.get(path)
        if source is None:
            try:
                age = format_age(now - path.stat().st_mtime)
                rows.append((str(path), "(file)", age, ""))
            except OSError as exc:
                rows.append((str(path), "(file)", "-", exc.strerror or str(exc)))
            continue
        state = remote.read_state(source)
        if state.last_success is None:
            rows.append((source.url, "never", "-", state.last_error or
                         "not downloaded yet: run webpolicy update"))
        else:
            rows.append((source.url, format_time(state.last_success),
                         format_age(now - state.last_success), state.last_error))
    return rows


def remote_summary(spec: ListSpec, now: float | None = None) -> list[str]:
    """For `webpolicy validate`: one line per URL source of a list."""
    now = time.time() if now is None else now
    lines = []
    for source in spec.remote:
        state = remote.read_state(source)
        if state.last_success is None:
            text = "never downloaded (run webpolicy update)"
        else:
            age = now - state.last_success
            stale = ", STALE: older than max_age" if age > source.max_age else ""
            text = f"last good copy {format_age(age)} old{stale}"
        if state.last_error:
            text += f"; last error: {state.last_error}"
        lines.append(f"{source.url}: {text}")
    return lines


def fetch_missing(policy: Policy) -> list[remote.Outcome]:
    """`webpolicy run`: download the URL sources that have no last good copy yet, so a first
    start does not begin with those lists failed."""
    return [remote.fetch(source) for source in policy.remote_sources()
            if not source.path.exists()]


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes}m"
    if seconds < 86400:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


def format_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
