"""The `webpolicy` command line: validate, check, run (and the safeguarding commands)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from webpolicy.cli import console as console_cli
from webpolicy.cli import policy as policy_cli
from webpolicy.cli import report as report_cli
from webpolicy.cli import selftest as selftest_cli
from webpolicy.cli import sources as sources_cli
from webpolicy.cli.loading import engine_or_report, print_problems
from webpolicy.engine.decision import decide
from webpolicy.engine.watchlist import Watchlist
from webpolicy.lists.canonical import canonical_url
from webpolicy.policy.model import Policy, PolicyError, load_policy, log_directory_problems

DEFAULT_POLICY = "policy.yaml"
# `webpolicy check` exits with the action, so scripts can test a URL:  0 allowed, 3 allowed but
# logged, 4 blocked (1: the policy cannot be loaded, 2: a usage mistake such as a bad URL).
CHECK_EXIT = {"allow": 0, "log": 3, "block": 4}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        code = args.handler(args)
        sys.stdout.flush()                 # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """`webpolicy validate | head`: the reader closed the pipe.  Stop quietly, as `cat` does
    (exit 141, a death by SIGPIPE), instead of a traceback; stdout is pointed at /dev/null so
    the interpreter's final flush does not fail too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webpolicy", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser("validate", help="check policy.yaml and every list it names")
    validate.add_argument("policy", nargs="?", default=DEFAULT_POLICY)
    validate.set_defaults(handler=cmd_validate)

    check = commands.add_parser(
        "check", help="show the decision for a URL and why",
        description="Show the decision for a URL and why.  Exit status: 0 allowed, 3 allowed "
                    "but logged, 4 blocked; 1 the policy cannot be loaded, 2 a usage mistake.")
    check.add_argument("url")
    check.add_argument("--policy", default=DEFAULT_POLICY)
    who = check.add_mutually_exclusive_group()
    who.add_argument("--profile", help="decide as this profile")
    who.add_argument("--client", metavar="IP", help="decide for a client address")
    who.add_argument("--user", help="decide for a proxy-authenticated user; with directory: "
                                    "in the policy, its groups are asked of the directory")
    check.add_argument("--group", action="append", default=[], metavar="DN",
                       help="with --user: a directory group the user is in (repeatable), "
                            "instead of asking the directory")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=cmd_check)

    run = commands.add_parser(
        "run", help="start the gateway (mitmdump with the add-on); other options go to mitmdump",
        description="Start mitmdump with the webpolicy add-on.  Options not listed here "
                    "(--listen-host, --listen-port, --mode, --set confdir=..., --proxyauth ...) "
                    "are passed to mitmdump unchanged.")
    run.add_argument("--policy", default=DEFAULT_POLICY)
    run.set_defaults(handler=cmd_run)
    report_cli.add_commands(commands)      # report, review, erase: the safeguarding log
    policy_cli.add_commands(commands)      # apply, history, export: changing the live policy
    console_cli.add_commands(commands)     # console, users: the safeguarding console
    selftest_cli.add_commands(commands)    # selftest: the running gateway, list by list
    sources_cli.add_commands(commands)     # update, lists: URL sources and how current lists are
    return parser


def _log_directory_usable(policy: Policy) -> bool:
    """Print what would stop the proxy keeping its log; False if anything would.  A policy
    whose log cannot be written is refused like a broken one: the proxy would filter and
    lose every safeguarding record."""
    problems = log_directory_problems(policy)
    for problem in problems:
        print(problem, file=sys.stderr)
    errors = [p for p in problems if not p.warning]
    if errors:
        print(f"{len(errors)} error(s): the safeguarding log could not be kept (checked as "
              f"this account; the proxy's may differ)", file=sys.stderr)
    return not errors


def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 1 if the policy, or any source of any list, would not load as written: a
    mistyped or unreadable source fails closed (or refuses a reload) in the proxy, so it
    must not pass here."""
    engine = engine_or_report(args.policy, complete=True)
    if engine is None:
        return 1
    for warning in engine.warnings:
        print(warning, file=sys.stderr)
    policy = engine.policy
    if not _log_directory_usable(policy):
        return 1
    print(f"{policy.path}: OK, version {policy.version}, {len(policy.profiles)} profiles "
          f"(default {policy.default_profile}), {len(policy.lists)} lists")
    width = max(len(name) for name in policy.lists)
    for name, spec in policy.lists.items():
        status = engine.status[name]
        flags = " statutory" if spec.statutory else ""
        state = "" if status.available else "  UNAVAILABLE: profiles using it fail closed"
        print(f"  {name:<{width}}  {status.entries:>9,} entries  {status.skipped:>6,} skipped  "
              f"{spec.severity:<8} {spec.category}{flags}{state}")
        for line in sources_cli.remote_summary(spec):
            print(f"  {'':<{width}}  {line}")
    _print_watchlist(policy)
    return 0


def _print_watchlist(policy) -> None:
    """Watchlist terms per list, and unreadable terms files (warnings: filtering goes on)."""
    if not policy.watchlist:
        return
    watchlist = Watchlist.compile(policy.watchlist.values(), str(policy.path))
    for problem in watchlist.problems:
        print(problem, file=sys.stderr)
    counts = watchlist.counts()
    print(f"  watchlist: {len(watchlist)} terms")
    for name, spec in policy.watchlist.items():
        print(f"    {name}: {counts.get(name, 0)} terms, {spec.severity}, {spec.category}")


def cmd_check(args: argparse.Namespace) -> int:
    engine = engine_or_report(args.policy)
    if engine is None:
        return 1
    try:
        url = canonical_url(args.url)
    except ValueError as exc:
        print(f"webpolicy check: '{args.url}' is not a URL: {exc}", file=sys.stderr)
        return 2
    if args.profile and args.profile not in engine.profiles:
        print(f"webpolicy check: unknown profile '{args.profile}' "
              f"(profiles: {', '.join(engine.profiles)})", file=sys.stderr)
        return 2
    user = _user_with_groups(engine, args)
    if user is False:
        return 2
    decision = decide(engine, url, client_ip=args.client, user=user, profile=args.profile)
    if args.json:
        print(json.dumps(decision.as_dict()))
        return CHECK_EXIT[decision.action]
    print(f"{decision.action.upper()}  {url}")
    print(f"  profile   {decision.profile} ({decision.profile_reason})")
    if decision.list:
        print(f"  list      {decision.list} - {decision.category} (severity {decision.severity}"
              f"{', statutory' if decision.statutory else ''})")
        print(f"  matched   {decision.match} entry {decision.entry}")
    elif decision.error:
        print("  the filter cannot decide: a list this profile uses could not be loaded")
    else:
        print("  no list entry matched")
    print(f"  policy    {decision.policy_version}")
    return CHECK_EXIT[decision.action]


def _user_with_groups(engine, args: argparse.Namespace):
    """--user as the proxy would see it: with --group, or with the policy's directory: asked
    for the user's groups (the decision's reason then names the group that decided).  False
    for a usage mistake (reported); a directory that cannot be asked is a warning."""
    if args.group and not args.user:
        print("webpolicy check: --group needs --user", file=sys.stderr)
        return False
    if not args.user:
        return None
    # here, not at the top: ldap3 is only loaded when a user is checked
    from webpolicy.identity.directory import DirectoryUnavailable, SignedInUser
    from webpolicy.identity.htpasswd import login_checker
    from webpolicy.policy.model import normalise_dn
    if args.group:
        try:
            return SignedInUser(args.user, {normalise_dn(group) for group in args.group})
        except ValueError as exc:
            print(f"webpolicy check: --group: {exc}", file=sys.stderr)
            return False
    settings = engine.policy.directory
    if settings is None:
        return args.user
    try:
        found = login_checker(settings).lookup(args.user)
    except DirectoryUnavailable as exc:
        print(f"webpolicy check: the directory cannot be asked ({exc}); deciding for "
              f"'{args.user}' without groups", file=sys.stderr)
        return args.user
    if found is None:
        print(f"webpolicy check: no account '{args.user}' matches directory.user_filter: the "
              "proxy would refuse this login; deciding without groups", file=sys.stderr)
        return args.user
    return found


def cmd_run(args: argparse.Namespace) -> int:
    """Validate first (a clear error beats a proxy that exits), then become mitmdump."""
    policy = Path(args.policy).resolve()
    try:
        loaded = load_policy(policy)
    except PolicyError as exc:
        print_problems(exc)
        return 1
    if not _log_directory_usable(loaded):
        return 1
    for outcome in sources_cli.fetch_missing(loaded):    # a first start: no copy yet
        print(f"webpolicy run: {outcome}", file=sys.stderr)
    mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or shutil.which("mitmdump")
    if not mitmdump:
        print("webpolicy run: mitmdump not found; install with: pip install 'mitmproxy>=12'",
              file=sys.stderr)
        return 1
    entry = Path(__file__).parents[1] / "proxy" / "mitmdump_entry.py"
    command = [mitmdump, "-s", str(entry), "--set", f"webpolicy_policy={policy}"]
    if not any("flow_detail" in arg for arg in args.extra):
        # mitmdump prints every URL with its client address: personal data in the journal.
        # The safeguarding log is where such records belong.
        command += ["--set", "flow_detail=0"]
    command += args.extra
    os.execv(mitmdump, command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
