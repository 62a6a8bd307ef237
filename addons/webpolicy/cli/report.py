"""`webpolicy report`, `review` and `erase`: the safeguarding log on the command line.

Run where the log is, usually by a DSL through `sudo -u <proxy account>`.  Every file these
commands write (exports, reviews, rewritten log files) is created 0600: it holds the same
personal data as the log.  `erase` shows what it would remove and asks before it does.
"""

from __future__ import annotations

import argparse
import getpass
import io
import ipaddress
import os
import sys
from pathlib import Path

from webpolicy.policy.model import ConsoleSettings, PolicyError, load_policy
from webpolicy.policy.severity import SEVERITY_RANK
from webpolicy.safeguarding.htmlreport import write_html
from webpolicy.safeguarding.logstore import Person, ReadStats, ReviewStore, erase, read_records
from webpolicy.safeguarding.report import (
    ACTIONS,
    Filters,
    parse_when,
    select,
    summary,
    write_csv,
    write_json,
    write_sites,
    write_table,
)


def add_commands(commands) -> None:
    """Register report, review and erase on the `webpolicy` command line."""
    report = commands.add_parser(
        "report", help="show the safeguarding log (table, CSV for CPOMS, JSON, HTML)",
        description="Show safeguarding log records, oldest first.  Times are local unless "
                    "--utc.  Example: webpolicy report --since 7d --severity high --html week.html")
    _location(report)
    report.add_argument("--since", help="from: a date (2026-11-01), a time, or an age (7d, 12h)")
    report.add_argument("--until", help="up to (a date includes that whole day)")
    report.add_argument("--user", help="one login name (not case-sensitive)")
    report.add_argument("--client", metavar="IP", help="one client address, or a network (CIDR)")
    report.add_argument("--profile")
    report.add_argument("--category", help="category contains this text (not case-sensitive)")
    report.add_argument("--severity", choices=tuple(SEVERITY_RANK), help="this or higher")
    report.add_argument("--action", help=f"comma-separated: {', '.join(ACTIONS)}")
    report.add_argument("--id", help="comma-separated references (WP-...)")
    report.add_argument("--unreviewed", action="store_true", help="only records not yet reviewed")
    report.add_argument("--utc", action="store_true", help="show times in UTC")
    output = report.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV (UTF-8 with BOM) for CPOMS/Excel")
    output.add_argument("--json", action="store_true", help="a JSON array of full records")
    output.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    report.add_argument("--output", "-o", metavar="FILE", help="write CSV/JSON/table to FILE")
    report.add_argument("--no-bom", action="store_true", help="CSV without the byte-order mark")
    report.set_defaults(handler=cmd_report)

    review = commands.add_parser("review", help="mark records as reviewed, with a note",
                                 description="Mark records reviewed (stored in reviews.jsonl "
                                             "beside the log; the log itself is never edited).")
    review.add_argument("ids", nargs="+", metavar="ID", help="reference(s) such as WP-7K3M9Q2XTB")
    review.add_argument("--note", required=True, help="what was done")
    review.add_argument("--by", help="reviewer (default: your login name)")
    _location(review)
    review.set_defaults(handler=cmd_review)

    erase_cmd = commands.add_parser(
        "erase", help="erase one person's records (data-protection requests)",
        description="Remove every record of a user or client address from the daily log files "
                    "(each file is rewritten atomically, 0600) and their review notes, and from the "
                    "console's database if there is one.  Export "
                    "them first if the request asks for a copy: webpolicy report --user X --json")
    _location(erase_cmd)
    erase_cmd.add_argument("--user")
    erase_cmd.add_argument("--client", metavar="IP")
    erase_cmd.add_argument("--id", help="comma-separated references")
    erase_cmd.add_argument("--dry-run", action="store_true", help="only count what would go")
    erase_cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase_cmd.add_argument("--database", help="the console's SQLite file or postgresql:// URL, "
                                              "if not the policy's console.database or the "
                                              "default beside the log directory (it is updated "
                                              "too)")
    erase_cmd.set_defaults(handler=cmd_erase)


def _location(parser: argparse.ArgumentParser) -> None:
    """Every command finds the log the same way: the policy's directory, or --log-dir."""
    parser.add_argument("--policy", default="policy.yaml",
                        help="policy.yaml (its logging.directory is read)")
    parser.add_argument("--log-dir", action="append",
                        help="a log directory (instead of reading the policy); give it once per "
                             "gateway to read several gateways' logs as one")


def _context(args) -> tuple[list[Path], str]:
    """(log directories, organisation) from --log-dir (one per gateway) or the policy."""
    organisation = ""
    try:
        policy = load_policy(Path(args.policy))
        organisation = policy.block_page.organisation
        directory = policy.logging.directory
    except PolicyError as exc:
        if not args.log_dir:
            raise SystemExit(f"webpolicy {args.command}: cannot read the log directory from "
                             f"{args.policy}:\n{exc}\n(or give --log-dir)") from None
        directory = None
    if not args.log_dir:
        return [directory], organisation
    # The same directory named twice would show every record twice.
    return list(dict.fromkeys(Path(d) for d in args.log_dir)), organisation


def _filters(args) -> Filters:
    """The options as Filters; a mistyped one stops with a message, never a silently empty
    report that a DSL could read as "nothing happened"."""
    actions = tuple(a.strip() for a in (args.action or "").split(",") if a.strip())
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise SystemExit(f"webpolicy report: unknown action {', '.join(unknown)} "
                         f"(choose from {', '.join(ACTIONS)})")
    try:
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until, end=True) if args.until else None
    except ValueError as exc:
        raise SystemExit(f"webpolicy report: {exc}") from None
    if args.client and "/" not in args.client:
        try:
            ipaddress.ip_address(args.client)
        except ValueError:
            raise SystemExit(f"webpolicy report: --client '{args.client}' is not an IP address")
    return Filters(since=since, until=until, user=args.user, client=args.client,
                   profile=args.profile, category=args.category, severity=args.severity,
                   actions=actions, unreviewed=args.unreviewed,
                   ids=tuple(i.strip().upper() for i in (args.id or "").split(",") if i.strip()))


def cmd_report(args) -> int:
    """Table (with the sites most tried and totals), CSV, JSON or an HTML page."""
    directories, organisation = _context(args)
    filters = _filters(args)
    missing = [d for d in directories if not d.is_dir()]
    if missing:
        print(f"webpolicy report: no log directory {', '.join(map(str, missing))} (nothing "
              "recorded yet?)", file=sys.stderr)
        return 1
    reviews = _reviews(directories)
    stats = ReadStats()
    records = sorted((r for d in directories for r in select(d, filters, reviews, stats)),
                     key=lambda r: str(r.get("time", "")))
    if stats.bad_lines:
        print(f"webpolicy report: skipped {stats.bad_lines} unreadable line(s)", file=sys.stderr)
    if args.html:
        _write_private(Path(args.html), lambda out: write_html(
            records, reviews, out, organisation, filters, args.utc))
        print(f"{args.html}: {summary(records, reviews)}", file=sys.stderr)
        return 0
    if args.csv:
        emit = lambda out: write_csv(records, reviews, out, args.utc)  # noqa: E731
        encoding = "utf-8" if args.no_bom else "utf-8-sig"
    elif args.json:
        emit, encoding = (lambda out: write_json(records, reviews, out)), "utf-8"
    else:
        emit, encoding = (lambda out: write_table(records, reviews, out, utc=args.utc)), "utf-8"
    if args.output:
        _write_private(Path(args.output), emit, encoding)
    else:
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding=encoding, newline="",
                                  write_through=True)
        try:
            emit(stream)
        finally:
            stream.detach()
    if not args.csv and not args.json:
        terminal = sys.stderr if args.output else sys.stdout
        write_sites(records, terminal)
        print(summary(records, reviews), file=terminal)
    return 0


def _write_private(path: Path, emit, encoding: str = "utf-8") -> None:
    """Exports hold personal data: created 0600 like the log."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding=encoding, newline="") as out:
        emit(out)


def _reviews(directories: list[Path]) -> dict:
    """Every gateway's reviews.jsonl as one: a record's reviews sit beside its own log."""
    merged: dict = {}
    for directory in directories:
        for record_id, notes in ReviewStore(directory).load().items():
            merged.setdefault(record_id, []).extend(notes)
    return merged


def cmd_review(args) -> int:
    """Record who reviewed which records; a mistyped reference is refused, not recorded.
    Each review is written beside the log that holds its record."""
    directories, _ = _context(args)
    wanted = {i.strip().upper() for i in args.ids}
    found = {d: {r["id"]: r for r in read_records(d) if r.get("id") in wanted}
             for d in directories}
    seen = {record_id for records in found.values() for record_id in records}
    missing = sorted(wanted - seen)
    if missing:
        print(f"webpolicy review: no record {', '.join(missing)} in "
              f"{', '.join(map(str, directories))} (mistyped, or past the retention period?)",
              file=sys.stderr)
        if not seen:
            return 1
    by = args.by or os.environ.get("SUDO_USER") or getpass.getuser()
    count = sum(ReviewStore(d).add(records.values(), args.note, by)
                for d, records in found.items() if records)
    print(f"marked {count} record(s) reviewed by {by}")
    return 0 if not missing else 1


def cmd_erase(args) -> int:
    """Count first, then ask: erasing is for good, and the count is what the DSL confirms."""
    directories, _ = _context(args)
    ids = tuple(i.strip().upper() for i in (args.id or "").split(",") if i.strip())
    if not (args.user or args.client or ids):
        print("webpolicy erase: say whose records: --user, --client or --id", file=sys.stderr)
        return 2
    person = Person(args.user, args.client, ids)
    where = ", ".join(map(str, directories))
    previews = [erase(d, person, dry_run=True) for d in directories]
    total = sum(sum(files.values()) for files, _ in previews)
    reviews = sum(count for _, count in previews)
    if not total:
        print(f"no records of {_name(person)} in {where}")
        return 0
    print(f"{total} record(s) of {_name(person)} in {sum(len(f) for f, _ in previews)} file(s) "
          f"in {where}{f', and {reviews} review note(s)' if reviews else ''}")
    if args.dry_run:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print("webpolicy erase: add --yes to erase them", file=sys.stderr)
            return 1
        if input("Erase them for good? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing erased")
            return 1
    done = [erase(d, person) for d in directories]
    print(f"erased {sum(sum(f.values()) for f, _ in done)} record(s) and "
          f"{sum(count for _, count in done)} review note(s)")
    from webpolicy.cli.console import sync_console
    settings = _console_settings(args)
    synced = sync_console(directories, args.database, settings)   # Django: once a process
    if synced:
        print(synced)
    return 0


def _console_settings(args) -> ConsoleSettings | None:
    """The policy's console settings (its database), when the policy can be read."""
    try:
        return load_policy(Path(args.policy)).console
    except PolicyError:
        return None


def _name(person: Person) -> str:
    parts = [f"user {person.user}" if person.user else "",
             f"client {person.client}" if person.client else "",
             f"reference {', '.join(person.ids)}" if person.ids else ""]
    return " or ".join(p for p in parts if p)
