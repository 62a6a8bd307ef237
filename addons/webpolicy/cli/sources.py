"""`webpolicy update` and `webpolicy lists`: list sources given as URLs, and how current
every list is.

`update` downloads what is due now (or a named list's sources, or, with --force, everything)
through lists/remote.py and prints what each download came to; a running proxy picks a
replaced copy up by itself (its reloader watches the file); several sources are fetched at
once (`downloads.parallel`).  `lists` prints, per list, its entries and each source with its
last successful download, age, next attempt (a failing source's backoff shows here) and last
error, and the attribution of any UT1 categories (CC BY-SA 4.0: source, licence, date).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from webpolicy.engine.engine import build_engine
from webpolicy.lists import remote, ut1
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
    chosen = []
    for source in sources:
        state = remote.read_state(source)
        if not (args.force or args.list_name or remote.due(source, state)):
            print(f"lists.{source.list}  {describe(source)}\n    not due: "
                  f"{_when_due(source, state)}")
        else:
            chosen.append(source)
    for outcome in remote.fetch_all(chosen, parallel=policy.downloads.parallel,
                                    force=args.force, accept_shrink=args.accept_shrink):
        print(f"lists.{outcome.source.list}  {describe(outcome.source)}\n    "
              f"{outcome.result}: {outcome.message}")
        failed += not outcome.ok
        updated += outcome.result == remote.UPDATED
    if updated:
        print(f"{updated} last good cop{'y' if updated == 1 else 'ies'} replaced; a running "
              "proxy reloads the changed lists by itself")
    return 1 if failed else 0


def _when_due(source: RemoteSource, state: remote.SourceState) -> str:
    wait = remote.next_due(source, state) - time.time()
    return f"next download in {format_age(wait)} (--force: now)"


def describe(source: RemoteSource) -> str:
    """A downloaded source as the admin wrote it: its URL, and a UT1 source's categories."""
    if source.is_ut1:
        return f"{source.url} [UT1: {', '.join(source.ut1_categories)}]"
    return source.url


def next_attempt(source: RemoteSource, state: remote.SourceState,
                 now: float | None = None) -> str:
    """When the source is fetched next: "now", "in 5h 59m", or a failing source's backoff."""
    now = time.time() if now is None else now
    wait = remote.next_due(source, state) - now
    when = "now" if wait <= 0 else f"in {format_age(wait)}"
    if state.failures:
        when += f" (backoff after {state.failures} failure{'s' if state.failures > 1 else ''})"
    return when


def attribution(policy: Policy) -> list[str]:
    """For each UT1 source: the attribution its licence asks for, with the download date."""
    lines = []
    for source in policy.remote_sources():
        if not source.is_ut1:
            continue
        state = remote.read_state(source)
        when = format_time(state.last_success) if state.last_success else "not downloaded yet"
        lines.append(f"lists.{source.list}: UT1 categories {', '.join(source.ut1_categories)}"
                     f" from {ut1.ATTRIBUTION} ({ut1.UT1_HOME}; licence {ut1.LICENCE_URL}); "
                     f"downloaded {when}")
    return lines


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
    rows = [("LIST", "ENTRIES", "SOURCE", "LAST SUCCESS", "AGE", "NEXT ATTEMPT", "LAST ERROR")]
    for name, spec in policy.lists.items():
        first = True
        for source_row in source_rows(spec):
            entries = _entries(status.get(name)) if first else ""
            rows.append((name if first else "", entries, *source_row))
            first = False
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths + [0])).rstrip())
    for line in attribution(policy):
        print(line)
    return 0


def _entries(status: ListStatus | None) -> str:
    if status is None:
        return "?"
    return f"{status.entries:,}" + ("" if status.available else " UNAVAILABLE")


def source_rows(spec: ListSpec, now: float | None = None) -> list[tuple[str, ...]]:
    """(source, last success, age, next attempt, last error) for each source of a list:
    downloaded sources from their sidecars (a UT1 source once, for all its categories),
    files from their modification time."""
    now = time.time() if now is None else now
    remote_paths = {copy: source for source in spec.remote for copy in source.copies()}
    rows: list[tuple[str, ...]] = []
    shown: set[Path] = set()
    for path in spec.sources:
        source = remote_paths.get(path)
        if source is None:
            try:
                age = format_age(now - path.stat().st_mtime)
                rows.append((str(path), "(file)", age, "", ""))
            except OSError as exc:
                rows.append((str(path), "(file)", "-", "", exc.strerror or str(exc)))
            continue
        if source.path in shown:
            continue
        shown.add(source.path)
        state = remote.read_state(source)
        if state.last_success is None:
            rows.append((describe(source), "never", "-", next_attempt(source, state, now),
                         state.last_error or "not downloaded yet: run webpolicy update"))
        else:
            rows.append((describe(source), format_time(state.last_success),
                         format_age(now - state.last_success), next_attempt(source, state, now),
                         state.last_error))
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
        lines.append(f"{describe(source)}: {text}")
    return lines


def fetch_missing(policy: Policy) -> list[remote.Outcome]:
    """`webpolicy run`: download the URL sources that have no last good copy yet, so a first
    start does not begin with those lists failed."""
    return remote.fetch_all([s for s in policy.remote_sources() if not remote.has_copy(s)],
                            parallel=policy.downloads.parallel)


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
