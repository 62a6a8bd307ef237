"""`webpolicy console` and `webpolicy users`: the safeguarding console and its accounts.

Django is an optional extra (`pip install 'webpolicy[console]'`), so it is imported only
when one of these commands runs: the gateway and the other commands never need it.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
from pathlib import Path

from webpolicy.policy.model import (
    ConsoleSettings,
    PolicyError,
    database_url_problem,
    load_policy,
)

DEFAULT_LISTEN = "127.0.0.1:8081"


def add_commands(commands) -> None:
    """Register console and users on the `webpolicy` command line."""
    console = commands.add_parser(
        "console", help="serve the safeguarding console (a web application for DSLs)",
        description="Serve the safeguarding console in this process.  Its database and secret "
                    "key are kept beside the log directory.  Publish it on the network only "
                    "behind an HTTPS reverse proxy (--https): see README.")
    _location(console)
    console.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                         help=f"address to serve on (default {DEFAULT_LISTEN})")
    console.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                         help="a host name the console is reached by (repeatable)")
    console.add_argument("--https", action="store_true",
                         help="behind a TLS reverse proxy: secure cookies, HSTS, trust its "
                              "X-Forwarded-For/-Proto headers")
    console.add_argument("--trusted-proxy", default="127.0.0.1", metavar="IP",
                         help="the reverse proxy's address, with --https (default 127.0.0.1)")
    console.add_argument("--origin", action="append", default=[], metavar="URL",
                         help="the public origin, e.g. https://dsl.college.example (repeatable)")
    console.set_defaults(handler=cmd_console)
    subcommands = console.add_subparsers(dest="console_command", metavar="ACTION")
    digest = subcommands.add_parser(
        "digest", help="mail the DSLs' digest (counts and links, no names); for a timer",
        description="Count what the period brought (and what still waits) and mail it to "
                    "console.digest.to through alerts.email's SMTP server.  Run it from a "
                    "timer: docs/webpolicy-digest.timer.")
    digest.add_argument("--period", choices=("day", "week"),
                        help="the last day or week (default: console.digest.period)")
    digest.add_argument("--dry-run", action="store_true",
                        help="print the e-mail instead of sending it")
    _location(digest)
    digest.set_defaults(handler=cmd_digest)

    users = commands.add_parser("users", help="console accounts: add, password, list, disable, token")
    actions = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add an account")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("dsl", "it"),
                     help="dsl: every event and case; it: filter faults only")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from stdin (else it is asked for twice)")
    password = actions.add_parser("password", help="set a new password (and re-enable)")
    password.add_argument("name")
    password.add_argument("--password-stdin", action="store_true",
                          help="read the password from stdin (else it is asked for twice)")
    listing = actions.add_parser("list", help="list accounts")
    disable = actions.add_parser("disable", help="disable an account and revoke its tokens")
    disable.add_argument("name")
    token = actions.add_parser("token", help="issue an API bearer token (shown once)")
    token.add_argument("name")
    for parser in (add, password, listing, disable, token):
        _location(parser)
        parser.set_defaults(handler=cmd_users)


def _location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="policy.yaml",
                        help="policy.yaml (its console.log_dirs, else logging.directory, is read)")
    parser.add_argument("--log-dir", action="append",
                        help="a log directory (instead of reading the policy); give it once per "
                             "gateway to follow several gateways' logs in one console")
    parser.add_argument("--database", help="the console's SQLite file or a postgresql://USER@"
                                           "HOST:PORT/NAME URL (default: policy.yaml's "
                                           "console.database, else an SQLite file beside the "
                                           "log directory)")


def _require_django(args) -> None:
    try:
        import axes  # noqa: F401
        import django  # noqa: F401
        import waitress  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"webpolicy {args.command}: {exc.name} is not installed; install the "
                         "console with: pip install 'webpolicy[console]'") from None


def _config(args, **options):
    from webpolicy.console.settings import config_for, is_postgresql
    settings = ConsoleSettings()
    if args.log_dir:
        directories = [Path(d) for d in args.log_dir]
    else:
        try:
            policy = load_policy(Path(args.policy))
        except PolicyError as exc:
            raise SystemExit(f"webpolicy {args.command}: cannot read the log directory from "
                             f"{args.policy}:\n{exc}\n(or give --log-dir)") from None
        settings = policy.console
        directories = list(settings.log_dirs) or [policy.logging.directory]
        options.setdefault("retention_days", policy.logging.retention_days)
    database = args.database or settings.database or None
    password = None
    if database and is_postgresql(database):
        problem = database_url_problem(database)
        if problem:
            raise SystemExit(f"webpolicy {args.command}: the database URL {problem}")
        password = database_password(settings, args.command)
    return config_for(directories, database if database and is_postgresql(database)
                      else Path(database) if database else None,
                      database_password=password, **options)


def database_password(settings: ConsoleSettings, command: str) -> str | None:
    """The PostgreSQL password from the file or variable policy.yaml names; None leaves it to
    libpq (~/.pgpass, PGPASSWORD, or a server that needs none, such as peer on a socket)."""
    if settings.database_password_file:
        try:
            return settings.database_password_file.read_text().strip("\r\n")
        except OSError as exc:
            raise SystemExit(f"webpolicy {command}: cannot read the database password from "
                             f"{settings.database_password_file} (console.database_password_file): "
                             f"{exc.strerror}; create it (mode 0600) readable by this "
                             "account") from None
    if settings.database_password_env:
        value = os.environ.get(settings.database_password_env)
        if value is None:
            raise SystemExit(f"webpolicy {command}: the environment variable "
                             f"{settings.database_password_env} (console.database_password_env) "
                             "is not set; set it to the database password")
        return value
    return None


def sync_console(log_dirs: list[Path], database: str | None = None,
                 settings: ConsoleSettings | None = None) -> str | None:
    """After `webpolicy erase`: bring the console's database (if there is one) in line with
    the rewritten logs now, rather than when the console next reads them; only the erased
    directories are read (the console may follow others).  `database` is --database or the
    policy's console.database (a file or a postgresql:// URL); the default SQLite file is
    the one beside the first directory, as for `webpolicy console`.  Returns what was done,
    or None when there is no console database."""
    try:
        from webpolicy.console.settings import config_for, configure, is_postgresql
    except ImportError:                      # no console installed: no console database
        return None
    settings = settings or ConsoleSettings()
    database = database or settings.database or None
    followed = list(settings.log_dirs) or log_dirs    # where the console keeps its defaults
    if database and is_postgresql(database):
        config = config_for(followed, database,
                            database_password=database_password(settings, "erase"))
    else:
        config = config_for(followed, Path(database) if database else None)
        if not config.database.exists():
            return None
    configure(config)
    from webpolicy.console.ingest import ingest
    result = ingest(log_dirs)
    return (f"console database {config.database}: {result.removed} record(s) removed with "
            "their cases, notes and review requests")


def cmd_console(args) -> int:
    _require_django(args)
    from webpolicy.console.server import parse_listen, serve
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"webpolicy console: --listen {exc}", file=sys.stderr)
        return 2
    hosts = list(dict.fromkeys([host, "127.0.0.1", "localhost", *args.allowed_host]))
    config = _config(args, allowed_hosts=hosts, https=args.https, trusted_origins=args.origin)
    serve(config, host, port, trusted_proxy=args.trusted_proxy if args.https else None)
    return 0


def cmd_digest(args) -> int:
    """Exit 0 when sent, 1 when the SMTP server failed, 2 when the policy says no digest."""
    _require_django(args)
    try:
        policy = load_policy(Path(args.policy))
    except PolicyError as exc:
        print(f"webpolicy console digest: {args.policy}:\n{exc}", file=sys.stderr)
        return 2
    alerts = policy.alerts
    if alerts.digest is None or alerts.email is None:
        print(f"webpolicy console digest: {args.policy} has no console.digest (and "
              "alerts.email, whose SMTP server sends it): see README, 'Digests'",
              file=sys.stderr)
        return 2
    from webpolicy.console.settings import configure
    config = _config(args)
    configure(config)
    from webpolicy.console import digest
    from webpolicy.console.ingest import ingest
    from webpolicy.safeguarding.alerts import PermanentError, send_email

    ingest(config.log_dirs)
    to = alerts.digest.to or alerts.email.to
    found = digest.gather(args.period or alerts.digest.period)
    email = digest.message(found, alerts.console_url, policy.block_page.organisation,
                           alerts.email.sender, to)
    if args.dry_run:
        print(email.as_string())
        return 0
    try:
        send_email(alerts.email, email)
    except (PermanentError, OSError, smtplib.SMTPException) as exc:
        print(f"webpolicy console digest: not sent: {exc}", file=sys.stderr)
        return 1
    digest.record_sent(found, len(to))
    print(f"sent the {digest.ADJECTIVE[found.period].lower()} digest to {len(to)} recipient(s)")
    return 0


def _password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise SystemExit("webpolicy users: the passwords differ")
    return first


def cmd_users(args) -> int:
    _require_django(args)
    from webpolicy.console.settings import configure
    configure(_config(args))
    from webpolicy.console import accounts
    try:
        if args.users_command == "add":
            accounts.add_user(args.name, args.role, _password(args))
            print(f"added {args.name} ({args.role})")
        elif args.users_command == "password":
            accounts.set_password(args.name, _password(args))
            print(f"new password set for {args.name}")
        elif args.users_command == "list":
            for name, role, active, last in accounts.list_users():
                print(f"{name:<20} {role:<4} {'active' if active else 'disabled':<9} last sign-in {last}")
        elif args.users_command == "disable":
            accounts.disable_user(args.name)
            print(f"disabled {args.name}; their API tokens are revoked")
        elif args.users_command == "token":
            print(accounts.new_token(args.name))
    except accounts.AccountError as exc:
        print(f"webpolicy users: {exc}", file=sys.stderr)
        return 1
    return 0
