"""The filtering-policy document for the annual review (`webpolicy export --html`).

England's filtering and monitoring standards ask a centre to review its filtering at least once
a year and to record the review; governors sign it off.  This page says, in words a governor
can follow, what the gateway enforces today: who gets which profile, every list with its
source, size and age, the exceptions, safe search and circumvention rules, what is logged and
for how long, who is alerted, the last self-test, and every change to the policy since the last
export.  It ends with a sign-off block.

Like the safeguarding report it is one self-contained file with no external resources and a
Content-Security-Policy that allows only its own style.  Statutory list entries are shared in
confidence and never appear (their size does); nor do user names (counts do) or secrets (a
webhook shows its host only).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from webpolicy.engine.engine import Engine
from webpolicy.lists import remote, ut1
from webpolicy.policy.history import Change
from webpolicy.policy.model import ListSpec, Policy, Profile, RemoteSource

SELFTEST_FILE = "selftest-last.json"        # beside the policy, written by `webpolicy selftest`
EXPORTED_FILE = ".policy-export-last"         # beside the policy: when the last export was made


@dataclass(frozen=True)
class SelfTest:
    """The last `webpolicy selftest` result, if one was recorded."""

    time: str
    proxy: str
    passed: int
    failed: int
    details: tuple[str, ...] = ()


_STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
 color:#1c2833;background:#f4f6f7}
header{background:#1b4f72;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;opacity:.92}main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #d5dbdb;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:18px;margin:0 0 10px}table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e5e8e8;vertical-align:top}
th{background:#eaf2f8}.warn{color:#922b21;font-weight:600}.muted{color:#566573}
pre{white-space:pre-wrap;font-size:12.5px;background:#fbfcfc;border:1px solid #e5e8e8;padding:8px}
.sign td{height:34px}.sign th{width:28%}
@media print{body{background:#fff}section{break-inside:avoid;border:none}}
"""
_STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()


def render(engine: Engine, changes: Iterable[Change], *, since: str | None,
           selftest: SelfTest | None, now: dt.datetime | None = None) -> str:
    """The whole page."""
    policy = engine.policy
    now = now or dt.datetime.now(dt.UTC)
    sections = [
        _summary(engine, now),
        _profiles(policy),
        _lists(engine),
        _exceptions(policy),
        _logging_and_alerts(policy),
        _selftest(selftest),
        _history(list(changes), since),
        _sign_off(),
    ]
    title = f"Web filtering policy: {policy.block_page.organisation}"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        f"style-src '{_STYLE_HASH}'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>Policy version {_e(policy.version)} · "
        f"{_e(str(policy.path))}</p><p>Prepared {_e(now.strftime('%d %B %Y %H:%M UTC'))} for "
        "the annual review of filtering and monitoring</p></header><main>"
        + "".join(sections) + "</main></body></html>")


def _summary(engine: Engine, now: dt.datetime) -> str:
    policy = engine.policy
    sha = hashlib.sha256(policy.path.read_bytes()).hexdigest() if policy.path.exists() else "-"
    unavailable = [n for n, s in engine.status.items() if not s.available]
    statutory = [n for n, s in policy.lists.items() if s.statutory]
    rows = [
        ("Profiles", f"{len(policy.profiles)}; unknown devices get <b>{_e(policy.default_profile)}"
                     "</b>"),
        ("Lists", f"{len(policy.lists)} ({sum(s.entries for s in engine.status.values()):,} "
                  "entries in all)"),
        ("Statutory lists (blocked for everyone)", _e(", ".join(statutory)) or
         '<span class="warn">none: a CTIRU list is required</span>'),
        ("Lists that could not be loaded", '<span class="warn">' + _e(", ".join(unavailable))
         + " (profiles that block them refuse every request)</span>" if unavailable else "none"),
        ("Policy file checksum (SHA-256)", f"<code>{sha}</code>"),
    ]
    return _section("Summary", _table(("", ""), rows, header=False))


def _profiles(policy: Policy) -> str:
    users = Counter(policy.users.values())
    networks: dict[str, list[str]] = {}
    for rule in policy.networks:
        networks.setdefault(rule.profile, []).append(str(rule.network))
    rows = []
    for name, profile in policy.profiles.items():
        who = []
        if name == policy.default_profile:
            who.append("every device not matched below (the default)")
        if networks.get(name):
            who.append("devices in " + ", ".join(networks[name]))
        if users.get(name):
            who.append(f"{users[name]} named login(s)")
        rows.append((f"<b>{_e(name)}</b>", "; ".join(_e(w) for w in who) or "nobody at present",
                     _categories(policy, profile.block), _categories(policy, profile.log),
                     _profile_rules(profile)))
    body = _table(("Profile", "Who gets it", "Blocked", "Allowed but recorded", "Other rules"),
                  rows)
    note = ("<p class=muted>Statutory lists are blocked for every profile, whatever a profile "
            "says. First match wins: a login, then the device's network, then the default.</p>")
    return _section("Profiles and who gets them", body + note)


def _categories(policy: Policy, names: Iterable[str]) -> str:
    return "<br>".join(f"{_e(policy.lists[n].category)} <span class=muted>({_e(n)})</span>"
                       for n in names if n in policy.lists) or "<span class=muted>none</span>"


def _profile_rules(profile: Profile) -> str:
    rules = [f"if the filter cannot decide: {'block' if profile.blocks else 'allow, and record'}"]
    safe = profile.safe_search
    rules.append("safe search forced on Google, Bing and DuckDuckGo" if safe.enforce else
                 "safe search not forced")
    rules.append(f"YouTube restricted mode: {safe.youtube}")
    connect = profile.connect
    if connect.block_ip_literals:
        rules.append("connections to bare IP addresses refused")
    if connect.allowed_ports:
        rules.append("encrypted connections only to ports " +
                     ", ".join(map(str, connect.allowed_ports)))
    return "<br>".join(_e(r) for r in rules)


def _lists(engine: Engine) -> str:
    rows = []
    for name, spec in engine.policy.lists.items():
        status = engine.status[name]
        state = "loaded" if status.available else '<span class="warn">NOT LOADED</span>'
        if status.failed_sources:
            state += f'<br><span class="warn">{len(status.failed_sources)} source(s) failed</span>'
        rows.append((f"<b>{_e(name)}</b>" + (" · statutory" if spec.statutory else ""),
                     _e(spec.category), _e(spec.severity), _sources(spec, engine.policy.path.parent),
                     f"{status.entries:,}", _age(spec), state))
    return _section("Lists", _table(("List", "Category", "Severity", "Source", "Entries",
                                     "Source last changed", "State"), rows)
                    + _attribution(engine.policy))


def _sources(spec: ListSpec, base: Path) -> str:
    """Files as written in the policy; a downloaded source as its address without any query
    (a provider may put a key there), how often it is fetched, its last successful download
    and its last error."""
    downloaded = {copy: source for source in spec.remote for copy in source.copies()}
    shown, seen = [], set()
    for path in spec.sources:
        source = downloaded.get(path)
        if source is None:
            shown.append(_e(os.path.relpath(path, base)))
        elif source.path not in seen:
            seen.add(source.path)
            shown.append(_downloaded(source))
    return "<br>".join(shown) + f' <span class=muted>({_e(spec.format)})</span>'


def _downloaded(source: RemoteSource) -> str:
    state = remote.read_state(source)
    what = _without_query(source.url)
    if source.is_ut1:
        what += f" [UT1: {', '.join(source.ut1_categories)}]"
    text = (f"{_e(what)} <span class=muted>(fetched every {source.refresh / 3600:g} h)</span>"
            "<br><span class=muted>last successful download:</span> ")
    text += (_e(_when(state.last_success)) if state.last_success is not None
             else '<span class="warn">never</span>')
    if state.last_error:
        text += (f'<br><span class="warn">last error ({_e(_when(state.last_attempt))}): '
                 f"{_e(_hide_queries(state.last_error))}</span>")
    return text


def _attribution(policy: Policy) -> str:
    """The attribution UT1's licence (CC BY-SA 4.0) asks for, under the lists that use it."""
    used = [source for source in policy.remote_sources() if source.is_ut1]
    if not used:
        return ""
    dates = [remote.read_state(source).last_success for source in used]
    latest = max((d for d in dates if d is not None), default=None)
    when = f", downloaded {_e(_when(latest))}" if latest is not None else ""
    return (f'<p class=muted>Lists marked UT1 are taken from the {_e(ut1.SHORT_ATTRIBUTION)}, '
            f"{_e(ut1.UT1_HOME)}, licensed {_e(ut1.LICENCE)} ({_e(ut1.LICENCE_URL)}){when}.</p>")


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _hide_queries(text: str) -> str:
    """A download error may quote a URL; its query may hold a provider's key."""
    return re.sub(r"(https?://[^\s?#]*)[?#]\S*", r"\1", text)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%d %b %Y %H:%M UTC")


def _age(spec: ListSpec) -> str:
    times = []
    for path in spec.sources:
        try:
            times.append(max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()]
                             if path.is_dir() else [path.stat().st_mtime]))
        except OSError:
            continue
    if not times:
        return '<span class="warn">unknown</span>'
    when = dt.datetime.fromtimestamp(max(times), dt.UTC)
    days = (dt.datetime.now(dt.UTC) - when).days
    text = f"{when:%d %b %Y} ({days} days ago)"
    return f'<span class="warn">{text}</span>' if days > 90 else text


def _exceptions(policy: Policy) -> str:
    parts = []
    for title, rules, meaning in (
            ("Allowed for everyone", policy.allow, "never over a statutory list"),
            ("Blocked for everyone", policy.deny, "whatever the profile"),
            ("Not inspected (certificate-pinned apps)", policy.passthrough,
             "the gateway sees only the site's name, still decided")):
        items = "".join(f"<li><code>{_e(r.text)}</code></li>" for r in rules) or \
            "<li class=muted>none</li>"
        parts.append(f"<h3>{_e(title)} <span class=muted>({_e(meaning)})</span></h3><ul>{items}</ul>")
    return _section("Local exceptions", "".join(parts))


def _logging_and_alerts(policy: Policy) -> str:
    logging, alerts = policy.logging, policy.alerts
    rows = [
        ("Safeguarding log", f"{_e(str(logging.directory))}; kept {logging.retention_days} days; "
                             + ("full addresses with query strings" if logging.keep_query else
                                "query strings redacted")),
        ("Recorded", "blocked and log-only visits, flagged searches, refused connections and "
                     "filter faults, with who, when, what and the rule; not ordinary browsing"),
        ("HTTPS inspection", _inspection(policy)),
        ("Search watchlist", ", ".join(f"{_e(s.category)} ({_e(s.severity)})"
                                       for s in policy.watchlist.values()) or "none"),
        ("Alerts by webhook", _e(urlsplit(alerts.webhook.url).hostname or "?") + " ("
         + _e(alerts.webhook.format) + ")" if alerts.webhook else "none"),
        ("Alerts by e-mail", f"{len(alerts.email.to)} recipient(s) via {_e(alerts.email.host)}"
         if alerts.email else "none"),
        ("Repeat attempts", f"an alert after {alerts.repeat_count} blocked attempts in "
                            f"{alerts.repeat_minutes} minutes"),
        ("Monitoring", "Prometheus metrics on " + _e(f"{policy.metrics.host}:{policy.metrics.port}")
         if policy.metrics.enabled else "metrics off"),
    ]
    return _section("Logging, monitoring and alerts", _table(("", ""), rows, header=False))


def _inspection(policy: Policy) -> str:
    """Selective inspection changes what the log can hold: reviewers must see it."""
    if not policy.tls.selective:
        return "every HTTPS connection inspected (except the hosts not inspected above)"
    extra = f"; {len(policy.tls.fronting)} more host(s) never passed through" \
        if policy.tls.fronting else ""
    return ("selective: connections to sites allowed with nothing to log, block or rewrite "
            "are not inspected, so pages, searches and content on them are not seen or "
            f"recorded{extra}")


def _selftest(result: SelfTest | None) -> str:
    if result is None:
        body = ('<p class="warn">No self-test has been recorded. Run <code>webpolicy selftest '
                "--proxy HOST:PORT</code> against the running gateway before the review.</p>")
    else:
        verdict = "all as the policy says" if not result.failed else \
            f'<span class="warn">{result.failed} not as the policy says</span>'
        details = "".join(f"<li>{_e(d)}</li>" for d in result.details)
        body = (f"<p>{_e(result.time)} against {_e(result.proxy)}: {result.passed} checks passed, "
                f"{verdict}.</p>" + (f"<ul>{details}</ul>" if details else ""))
    return _section("Last self-test", body)


def _history(changes: list[Change], since: str | None) -> str:
    heading = f"Changes since the last export ({since})" if since else "Changes to the policy"
    if not changes:
        return _section(heading, "<p class=muted>No recorded change.</p>")
    rows = []
    for change in changes:
        lists = ", ".join(f"{n}: {b if b is not None else '-'} → {a if a is not None else '-'}"
                          for n, (b, a) in change.lists.items())
        detail = f"<pre>{_e(change.diff)}</pre>" if change.diff else ""
        problems = "<br>".join(_e(p) for p in change.problems)
        rows.append((_e(change.time), _e(change.event), _e(change.by), _e(change.how),
                     _e(change.version or "-"), _e(lists) or "-", problems + detail))
    return _section(heading, _table(("When", "What", "By", "How", "Version", "List sizes",
                                     "Detail"), rows))


def _sign_off() -> str:
    rows = [(label, "") for label in ("Reviewed by (name, role)", "Designated Safeguarding Lead",
                                      "Governor / trustee", "Date", "Next review due",
                                      "Actions agreed")]
    return _section("Sign-off", '<table class=sign>' + "".join(
        f"<tr><th>{_e(a)}</th><td>{b}</td></tr>" for a, b in rows) + "</table>")


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _table(headings: tuple[str, ...], rows: list[tuple[str, ...]], header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headings) + "</tr>" if header else ""
    if not header:
        return "<table>" + "".join(f"<tr><th>{_e(a)}</th><td>{b}</td></tr>" for a, b in rows) \
            + "</table>"
    return "<table>" + head + "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows) + "</table>"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def read_selftest(policy: Path) -> SelfTest | None:
    """The last self-test recorded beside the policy, if any can be read."""
    try:
        data = json.loads((policy.parent / SELFTEST_FILE).read_text())
        return SelfTest(time=data["time"], proxy=data["proxy"], passed=int(data["passed"]),
                        failed=int(data["failed"]), details=tuple(data.get("details", ())))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def last_export(policy: Path) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat((policy.parent / EXPORTED_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def mark_exported(policy: Path, when: dt.datetime) -> None:
    (policy.parent / EXPORTED_FILE).write_text(when.isoformat(timespec="seconds") + "\n")
