"""`webpolicy selftest`: ask the running gateway what it does with every list, and compare.

The DfE standards ask a centre to check that its filtering works, as SWGfL's "Test Filtering"
does for the UK categories.  Every list holds a reserved name (engine.selftest_host:
`<list>.selftest.webpolicy.invalid`) whatever its sources say, so this sends one plain-HTTP
request per list through the gateway, as the device it runs on, and reads the answer: the
block page for a blocked list, or the gateway's own small answer otherwise (the names are
.invalid: nothing outside is ever asked).  It reports, per category, blocked / logged /
allowed against what the policy says for the profile the gateway chose, exits 1 on any
difference, and keeps the result beside the policy for `webpolicy export`.  Test requests are
recorded in the safeguarding log but neither alerted nor counted in the metrics.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from webpolicy.cli.loading import engine_or_report
from webpolicy.engine.engine import ALLOW, DENY, Engine, selftest_host
from webpolicy.safeguarding.policydoc import SELFTEST_FILE

DEFAULT_POLICY = "policy.yaml"
PATH = "/webpolicy-selftest"


@dataclass(frozen=True)
class Outcome:
    list: str
    category: str
    expected: str          # block | log | allow
    got: str               # block | log | allow | "status NNN" | "no answer: ..."
    profile: str           # as the gateway reported it

    @property
    def ok(self) -> bool:
        return self.expected == self.got


def add_commands(commands) -> None:
    selftest = commands.add_parser(
        "selftest", help="check the running gateway blocks what the policy says, per list",
        description="Send a test request for every list through the running gateway and "
                    "compare what it did with what the policy says for this device's profile. "
                    "Exit status 0: all as expected; 1: a difference (or no answer).")
    selftest.add_argument("--proxy", required=True, metavar="HOST:PORT", help="the gateway")
    selftest.add_argument("--policy", default=DEFAULT_POLICY)
    selftest.add_argument("--profile", help="the profile this device should have (checked)")
    selftest.add_argument("--source", metavar="IP", help="send from this local address")
    selftest.add_argument("--timeout", type=float, default=10.0)
    selftest.set_defaults(handler=cmd_selftest)


def cmd_selftest(args: argparse.Namespace) -> int:
    policy = Path(args.policy).resolve()
    engine = engine_or_report(policy)
    if engine is None:
        return 1
    host, _, port = args.proxy.rpartition(":")
    if not host or not port.isdigit():
        print(f"webpolicy selftest: --proxy '{args.proxy}' is not HOST:PORT", file=sys.stderr)
        return 2
    outcomes = [_ask(engine, name, host, int(port), args) for name in _lists(engine)]
    profiles = {o.profile for o in outcomes if o.profile}
    _print(outcomes, args.proxy, profiles)
    wrong_profile = bool(args.profile) and profiles != {args.profile}
    if wrong_profile:
        print(f"this device is treated as profile {', '.join(sorted(profiles)) or '?'}, "
              f"not {args.profile}: check clients.networks / users in the policy")
    _keep(policy, args.proxy, outcomes)
    return 0 if all(o.ok for o in outcomes) and not wrong_profile else 1


def _lists(engine: Engine) -> list[str]:
    return [name for name in engine.policy.lists if name not in (DENY, ALLOW)]


def _ask(engine: Engine, name: str, host: str, port: int, args) -> Outcome:
    spec = engine.policy.lists[name]
    got, profile = _request(selftest_host(name), host, port, args)
    expected = _expected(engine, name, profile)
    return Outcome(name, spec.category, expected, got, profile)


def _expected(engine: Engine, name: str, profile: str) -> str:
    """What the policy says a profile does with a list (statutory lists block everyone)."""
    spec = engine.policy.lists[name]
    rules = engine.profiles.get(profile)
    if spec.statutory or rules is None or rules.fails_closed:
        return "block"
    if name in rules.profile.block:
        return "block"
    return "log" if name in rules.profile.log else "allow"


def _request(name: str, host: str, port: int, args) -> tuple[str, str]:
    """(what the gateway did, the profile it said it used)."""
    source = (args.source, 0) if args.source else None
    connection = http.client.HTTPConnection(host, port, timeout=args.timeout,
                                            source_address=source)
    try:
        connection.request("GET", f"http://{name}{PATH}", headers={"Host": name})
        response = connection.getresponse()
        response.read()
    except OSError as exc:
        return f"no answer: {exc}", ""
    finally:
        connection.close()
    action = response.getheader("X-Webpolicy-Action")
    profile = response.getheader("X-Webpolicy-Profile") or ""
    if response.status == 407:
        return "status 407 (the gateway wants a proxy login)", profile
    if action in ("block", "log", "allow"):
        return action, profile
    return f"status {response.status} (not an answer from webpolicy)", profile


def _print(outcomes: list[Outcome], proxy: str, profiles: set[str]) -> None:
    print(f"webpolicy selftest through {proxy}, as profile {', '.join(sorted(profiles)) or '?'}")
    width = max((len(o.list) for o in outcomes), default=4)
    for o in outcomes:
        mark = "ok  " if o.ok else "FAIL"
        print(f"  {mark}  {o.list:<{width}}  expected {o.expected:<5}  got {o.got:<5}  "
              f"{o.category}")
    failed = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes) - failed} as the policy says, {failed} not")


def _keep(policy: Path, proxy: str, outcomes: list[Outcome]) -> None:
    """The result beside the policy, for the annual review document (webpolicy export)."""
    result = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "proxy": proxy,
              "passed": sum(o.ok for o in outcomes), "failed": sum(not o.ok for o in outcomes),
              "details": [f"{o.list}: {o.got}, expected {o.expected}" for o in outcomes
                          if not o.ok]}
    try:
        (policy.parent / SELFTEST_FILE).write_text(json.dumps(result, indent=1) + "\n")
    except OSError as exc:
        print(f"webpolicy selftest: the result was not kept for export: {exc}", file=sys.stderr)
