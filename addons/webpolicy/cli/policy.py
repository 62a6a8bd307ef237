"""`webpolicy apply` and `webpolicy history`: changing the live policy safely, and its record.

`apply NEW` is the safe way to change the policy the proxy runs: NEW is validated where it will
live (a copy beside the policy, so its relative list paths mean what they will mean), then the
decisions that would change are shown, for the sites in the last days of the safeguarding log
and for any URLs the admin names, and only after a yes is the copy renamed over the policy (one
atomic step; the proxy picks it up by itself).  Accepted and refused applies go into the
policy's history (policy/history.py) with the account that ran them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from webpolicy.cli.loading import engine_or_report
from webpolicy.engine.decision import decide
from webpolicy.engine.engine import Engine, load_engine
from webpolicy.lists.canonical import canonical_url
from webpolicy.policy import history
from webpolicy.policy.model import PolicyError
from webpolicy.safeguarding import policydoc
from webpolicy.safeguarding.logstore import read_records

DEFAULT_POLICY = "policy.yaml"
SHOWN_CHANGES = 25


def add_commands(commands) -> None:
    apply = commands.add_parser(
        "apply", help="validate a new policy, show what it would change, then install it",
        description="Validate NEW as it would run, show the decisions that would change (sites "
                    "in the safeguarding log of the last --days, and --urls), ask, then install "
                    "it over --policy in one atomic step.  Recorded in the policy history.")
    apply.add_argument("new", metavar="NEW", help="the edited policy file")
    apply.add_argument("--policy", default=DEFAULT_POLICY, help="the live policy to replace")
    apply.add_argument("--days", type=int, default=30, help="how far back the log is replayed")
    apply.add_argument("--urls", metavar="FILE", help="more URLs to compare, one per line")
    apply.add_argument("--yes", action="store_true", help="install without asking")
    apply.set_defaults(handler=cmd_apply)

    export = commands.add_parser(
        "export", help="the filtering-policy document for the annual review (HTML)",
        description="Write the document governors sign off at the annual review: profiles and "
                    "who gets them, every list with its source, size and age, exceptions, safe "
                    "search and circumvention rules, logging, alerts, the last self-test, and "
                    "the policy's changes since the last export.")
    export.add_argument("--html", metavar="FILE", required=True, help="where to write it")
    export.add_argument("--policy", default=DEFAULT_POLICY)
    export.add_argument("--since", help="changes from this date (default: the last export)")
    export.set_defaults(handler=cmd_export)

    shown = commands.add_parser("history", help="who changed the policy, what, and when")
    shown.add_argument("--policy", default=DEFAULT_POLICY)
    shown.add_argument("--since", help="from this date (2026-11-01)")
    shown.add_argument("--diff", action="store_true", help="show each change's diff")
    shown.set_defaults(handler=cmd_history)


# -- apply ------------------------------------------------------------------------------------


def cmd_apply(args: argparse.Namespace) -> int:
    live = Path(args.policy).resolve()
    try:
        text = Path(args.new).read_bytes()
    except OSError as exc:
        print(f"webpolicy apply: {args.new}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 1
    staged = live.with_name(f".{live.name}.apply-{os.getpid()}")
    try:
        _write(staged, text, live)
        return _apply_staged(args, live, staged, text)
    finally:
        staged.unlink(missing_ok=True)


def _apply_staged(args: argparse.Namespace, live: Path, staged: Path, text: bytes) -> int:
    who = history.current_account()
    try:
        new = load_engine(staged)
    except PolicyError as exc:
        problems = [str(p).replace(str(staged), args.new) for p in exc.problems]
        for problem in problems:
            print(problem, file=sys.stderr)
        print("webpolicy apply: refused, the live policy is unchanged", file=sys.stderr)
        _record(live, "refused", who, text=text, problems=problems)
        return 1
    old = _current(live)
    _show_changes(old, new, args)
    if not args.yes and not _confirmed(live):
        print("webpolicy apply: not installed")
        return 1
    os.replace(staged, live)
    _record(live, "applied", who, version=new.version, lists=history.list_changes(
        _counts(old), _counts(new)), text=text)
    print(f"webpolicy apply: {live} is now version {new.version}; the proxy loads it within "
          "seconds (or at once on SIGHUP)")
    return 0


def _write(path: Path, data: bytes, like: Path) -> None:
    """The staged copy, with the live file's permissions (the proxy must be able to read it)."""
    mode = like.stat().st_mode & 0o777 if like.exists() else 0o640
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _current(live: Path) -> Engine | None:
    try:
        return load_engine(live)
    except PolicyError:
        print(f"note: the live policy {live} does not load; every decision is shown as new")
        return None


def _counts(engine: Engine | None) -> dict[str, int]:
    return {name: status.entries for name, status in engine.status.items()} if engine else {}


def _confirmed(live: Path) -> bool:
    if not sys.stdin.isatty():
        print("webpolicy apply: confirm with --yes when not at a terminal", file=sys.stderr)
        return False
    answer = input(f"Install it over {live}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _record(live: Path, event: str, who: str, **fields) -> None:
    try:
        history.record(live, event, who, "apply", **fields)
    except history.HistoryError as exc:
        print(f"webpolicy apply: warning: the policy history was not written: {exc}",
              file=sys.stderr)


# -- what would change ------------------------------------------------------------------------


def _show_changes(old: Engine | None, new: Engine, args: argparse.Namespace) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.days)
    seen = _logged_requests(old or new, since)
    changes = _compare(old, new, seen)
    print(f"Sites in the safeguarding log of the last {args.days} days: {len(seen)} distinct "
          f"requests, {sum(changes.values())} would be decided differently")
    _print_changes(changes)
    if args.urls:
        urls = [line.strip() for line in Path(args.urls).read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
        profiled = [(url, None, None, profile) for url in urls for profile in new.profiles]
        changes = _compare(old, new, profiled)
        print(f"URLs from {args.urls}, for every profile: {sum(changes.values())} of "
              f"{len(profiled)} would change")
        _print_changes(changes)


Request = tuple[str, str | None, str | None, str | None]      # URL, client, user, profile


def _logged_requests(engine: Engine, since: dt.datetime) -> set[Request]:
    """Each distinct request in the log, as its client and user were identified then (the
    profile is decided again); queries are redacted there, so a URL is its host and path."""
    directory = engine.policy.logging.directory
    seen = set()
    for record in read_records(Path(directory), since=since):
        url = record.get("url") or record.get("host")
        if isinstance(url, str) and url:
            seen.add((url.replace("?[redacted]", ""), record.get("client_ip"), record.get("user"),
                      None))
    return seen


def _compare(old: Engine | None, new: Engine, requests: Iterable[Request]) -> Counter:
    """(host, profile, before -> after) -> how many of the requests change that way."""
    changes: Counter = Counter()
    for url_text, client, user, profile in requests:
        try:
            url = canonical_url(url_text)
        except ValueError:
            continue
        after = decide(new, url, client, user, profile=profile)
        before = decide(old, url, client, user, profile=profile) if old else None
        if before is None or (before.action, before.list) != (after.action, after.list):
            was = f"{before.action} ({before.list})" if before and before.list else \
                (before.action if before else "-")
            now = f"{after.action} ({after.list})" if after.list else after.action
            changes[url.host, after.profile, f"{was} -> {now}"] += 1
    return changes


def _print_changes(changes: Counter) -> None:
    for (host, profile, change), count in changes.most_common(SHOWN_CHANGES):
        print(f"  {host:<40} {profile:<10} {change}  ({count})")
    if len(changes) > SHOWN_CHANGES:
        print(f"  ... and {len(changes) - SHOWN_CHANGES} more")


# -- export -------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    live = Path(args.policy).resolve()
    engine = engine_or_report(live)
    if engine is None:
        return 1
    since = _parse_since(args.since) if args.since else policydoc.last_export(live)
    if args.since and since is None:
        print(f"webpolicy export: --since '{args.since}' is not a date such as 2026-11-01",
              file=sys.stderr)
        return 2
    now = dt.datetime.now(dt.UTC)
    page = policydoc.render(engine, history.read(live, since),
                            since=since.strftime("%d %B %Y") if since else None,
                            selftest=policydoc.read_selftest(live), now=now)
    Path(args.html).write_text(page, encoding="utf-8")
    policydoc.mark_exported(live, now)
    print(f"webpolicy export: wrote {args.html}")
    return 0


def _parse_since(text: str) -> dt.datetime | None:
    try:
        since = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return since if since.tzinfo else since.replace(tzinfo=dt.UTC)


# -- history ------------------------------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    since = _parse_since(args.since) if args.since else None
    if args.since and since is None:
        print(f"webpolicy history: --since '{args.since}' is not a date such as 2026-11-01",
              file=sys.stderr)
        return 2
    policy = Path(args.policy)
    try:
        changes = list(history.read(policy, since))
    except history.HistoryError as exc:
        print(f"webpolicy history: {exc}", file=sys.stderr)
        return 1
    if not changes:
        print(f"no history for {policy.resolve()} (it starts with the first apply or load)")
    for change in changes:
        _print_change(change, args.diff)
    return 0


def _print_change(change: history.Change, with_diff: bool) -> None:
    lists = ", ".join(f"{name} {before}->{after}" for name, (before, after)
                      in change.lists.items())
    print(f"{change.time}  {change.event:<8} by {change.by:<12} ({change.how})  "
          f"version {change.version or '-'}  sha256 {change.sha256[:12]}"
          + (f"  lists: {lists}" if lists else ""))
    for problem in change.problems:
        print(f"    {problem}")
    if with_diff and change.diff:
        print("    " + change.diff.rstrip("\n").replace("\n", "\n    "))
