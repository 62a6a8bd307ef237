"""The page a learner sees instead of a blocked site.

Plain words for a non-technical reader, the reference ID that finds the log record, and how to
ask for a review.  Self-contained (no external resources: the proxy may block them too) and every
value HTML-escaped (and encodable: lone surrogates escaped): the URL is attacker-controlled.  For a statutory (CTIRU) hit only the host is
shown, never the full address of the illegal content.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from dataclasses import dataclass
from functools import lru_cache
from html import escape

from webpolicy.engine.decision import Decision
from webpolicy.policy.model import BlockPageSettings
from webpolicy.safeguarding.safetext import encodable


@dataclass(frozen=True, slots=True)
class BlockPage:
    status: int
    content_type: str
    body: bytes


def status_for(decision: Decision) -> int:
    if decision.failed_closed:
        return 503
    return 451 if decision.statutory else 403


def render(decision: Decision, event_id: str, url: str, host: str, settings: BlockPageSettings,
           accept: str = "", when: dt.datetime | None = None, credit: str = "") -> BlockPage:
    """HTML for browsers (Accept names text/html), plain text for everything else.  `credit`:
    the attribution the blocking list's licence asks for (UT1's CC BY-SA 4.0), if any."""
    when = when or dt.datetime.now(dt.UTC)
    kind = _kind(decision)
    # From the request's bytes: lone surrogates (non-UTF-8 bytes) would make .encode() raise.
    shown = encodable(host if decision.statutory else url)
    status = status_for(decision)
    if "text/html" in accept:
        parts = _html_parts(kind, decision.category or "", decision.policy_version, settings,
                            credit)
        if parts is not None:
            body = (parts[0] + escape(shown, quote=True) + parts[1] + escape(event_id, quote=True)
                    + parts[2] + _time(when, settings.timezone) + parts[3])
            return BlockPage(status, "text/html; charset=utf-8", body.encode())
    facts = {**_static_facts(kind, decision.category or "", decision.policy_version, settings,
                             credit),
             "address": shown, "reference": event_id, "time": _time(when, settings.timezone)}
    if "text/html" in accept:
        return BlockPage(status, "text/html; charset=utf-8", _html(facts).encode())
    return BlockPage(status, "text/plain; charset=utf-8", _text(facts).encode())


def _kind(decision: Decision) -> str:
    if decision.failed_closed:
        return "unavailable"
    return "statutory" if decision.statutory else "blocked"


def _static_facts(kind: str, category: str, version: str,
                  settings: BlockPageSettings, credit: str = "") -> dict[str, str]:
    """Everything on the page but the address, the reference and the time."""
    if kind == "unavailable":
        title = "The web filter is unavailable"
        reason = ("The filter could not check this page, so it has been held back to keep you "
                  "safe. Please try again in a few minutes.")
    elif kind == "statutory":
        title = "This site cannot be reached"
        reason = ("Access to this site is blocked for everyone, as the law requires. "
                  f"Category: {category}.")
    else:
        title = "This page has been blocked"
        reason = f"It is in a category that is blocked for you: {category}."
    return {"kind": kind, "title": title, "reason": reason,
            "organisation": settings.organisation, "contact": settings.contact,
            "review_url": settings.review_url, "policy": version,
            "credit": credit if kind == "blocked" else ""}


_HOLE = "\x00"
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


@lru_cache(maxsize=512)
def _html_parts(kind: str, category: str, version: str, settings: BlockPageSettings,
                credit: str = "") -> tuple[str, str, str, str] | None:
    """The HTML page cut around its address, reference and time: rendering and escaping the
    rest for every block cost more than the block's decision and record together.  None if a
    setting holds the character the cuts are made at (the page is then rendered whole)."""
    static = _static_facts(kind, category, version, settings, credit)
    if any(_HOLE in value for value in static.values()):
        return None
    parts = _html({**static, "address": _HOLE, "reference": _HOLE, "time": _HOLE}).split(_HOLE)
    return tuple(parts) if len(parts) == 4 else None        # type: ignore[return-value]


def _time(when: dt.datetime, zone: str = "UTC") -> str:
    """The time in the centre's zone (block_page.timezone: a learner reads "14:03 BST", not
    UTC), as strftime("%d %B %Y, %H:%M:%S %Z") would in English, whatever the locale, and at a
    fifth of its cost.  A zone that cannot be found (the policy checks it) shows UTC."""
    if zone != "UTC":
        try:
            when = when.astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            when = when.astimezone(dt.UTC)
    name = when.tzname() or "UTC"
    return (f"{when.day:02d} {_MONTHS[when.month - 1]} {when.year}, "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {name}")


def _text(f: dict[str, str]) -> str:
    lines = [f["title"], "", f["reason"], "", f"Address:   {f['address']}",
             f"Reference: {f['reference']}", f"Time:      {f['time']}", "",
             f"If you need this page for your work or studies, contact {f['contact']} "
             "and quote the reference."]
    if f["review_url"]:
        lines.append(f"Ask for a review: {f['review_url']}")
    lines += ["", f"{f['organisation']} web filter, policy {f['policy']}"]
    if f.get("credit"):
        lines.append(f["credit"])
    lines.append("")
    return "\n".join(lines)


_STYLE = """
*{box-sizing:border-box}
body{margin:0;padding:1rem;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
background:#f3f4f6;color:#1f2937}
main{max-width:40rem;margin:8vh auto;background:#fff;border-radius:12px;overflow:hidden;
padding:0 2.5rem 2rem;box-shadow:0 2px 12px rgba(0,0,0,.08)}
main::before{content:"";display:block;height:6px;margin:0 -2.5rem 1.8rem;background:#b91c1c}
main.unavailable::before{background:#d97706}
h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem;margin:1.5rem 0;
align-items:baseline}
dt{font-weight:600;color:#4b5563}dd{margin:0;min-width:0}
#address{overflow-wrap:anywhere;max-height:7.5em;overflow:auto}
.ref{font:600 1.1rem ui-monospace,Menlo,Consolas,monospace;letter-spacing:.05em}
.help{background:#eff6ff;border-radius:8px;padding:.2rem 1.2rem}
.help p{margin:.8rem 0}
a{color:#1d4ed8}
footer{margin-top:1.5rem;color:#6b7280;font-size:.85rem}
@media (max-width:30rem){body{padding:.5rem}main{margin:1rem auto;padding:0 1.2rem 1.5rem}
main::before{margin:0 -1.2rem 1.2rem}h1{font-size:1.35rem}
dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:.6rem}}
"""


def _html(f: dict[str, str]) -> str:
    e = {key: escape(value, quote=True) for key, value in f.items()}
    review = (f'<p><a href="{e["review_url"]}">Ask for this page to be reviewed</a></p>'
              if f["review_url"].startswith(("https://", "http://")) else "")
    credit = f'<br><span id="credit">{e["credit"]}</span>' if f.get("credit") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{e["title"]}</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style></head>
<body><main class="{e["kind"]}">
<h1>{e["title"]}</h1>
<p>{e["reason"]}</p>
<dl>
<dt>Address</dt><dd id="address">{e["address"]}</dd>
<dt>Reference</dt><dd id="reference" class="ref">{e["reference"]}</dd>
<dt>Time</dt><dd id="time">{e["time"]}</dd>
</dl>
<div class="help"><p>If you need this page for your work or studies, contact
{e["contact"]} and quote the reference above.</p>{review}</div>
<footer>{e["organisation"]} web filter &middot; policy {e["policy"]}{credit}</footer>
</main></body></html>
"""
