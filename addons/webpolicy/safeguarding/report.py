"""The safeguarding log as a DSL reads it: filters, and the table, CSV and JSON outputs.

Designated Safeguarding Leads are not technical: a report must read plainly (the most serious
events first, local times, words not codes) and export into their case-management system
(CPOMS) as CSV.  Reading the files is logstore.py, the HTML page htmlreport.py, the
`webpolicy report/review/erase` commands cli/report.py.

Every output leaves the gateway (a CPOMS upload, an e-mailed page, a screen share), so each
record passes `shareable` first (a statutory list's URL and entry stay in the log only:
confidential.py), and every cell passes `display` (safetext.py): a record read from disk may
hold any text, and no text may stop an export or restyle the terminal.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from webpolicy.policy.severity import SEVERITY_RANK
from webpolicy.safeguarding.confidential import shareable
from webpolicy.safeguarding.logstore import (
    ReadStats,
    Review,
    ReviewStore,
    read_records,
    record_time,
    same_ip,
)
from webpolicy.safeguarding.safetext import clean_value, conform, display
from webpolicy.safeguarding.sites import most_tried

ACTIONS = ("blocked", "flagged", "logged", "failed_closed", "refused_passthrough",
           "review_requested")
ACTION_WORDS = {
    "blocked": "Blocked", "flagged": "Flagged search", "logged": "Allowed, logged",
    "failed_closed": "Blocked (filter error)", "refused_passthrough": "Connection refused",
    "review_requested": "Review requested",
}
_RELATIVE = re.compile(r"(\d+)\s*([mhdw])", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, end: bool = False, now: dt.datetime | None = None) -> dt.datetime:
    """"7d", "12h", "2w", "today", "yesterday", "2026-11-01" or "2026-11-01T14:00" (local
    time) -> an aware datetime.  A bare date used as an end (`--until`) includes that day."""
    now = now or dt.datetime.now(dt.UTC)
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now - dt.timedelta(**{_UNITS[relative.group(2).lower()]: int(relative.group(1))})
    local_today = now.astimezone().date()
    days = {"today": local_today, "yesterday": local_today - dt.timedelta(days=1)}
    try:
        day = days.get(text.lower()) or dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        start = dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time())
        return start.astimezone()
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{text}' is not a date (2026-11-01), a time (2026-11-01T14:00) or an "
                         "age such as 7d, 12h or 2w") from None
    return moment if moment.tzinfo else moment.astimezone()


# -- filtering ----------------------------------------------------------------------------


@dataclass
class Filters:
    """What a report shows: every given criterion must match (`webpolicy report` options)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    user: str | None = None
    client: str | None = None
    profile: str | None = None
    category: str | None = None
    severity: str | None = None          # this severity or higher
    actions: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    unreviewed: bool = False

    def matches(self, record: dict, reviews: dict[str, list[Review]]) -> bool:
        when = record_time(record)
        if self.since and (when is None or when < self.since):
            return False
        if self.until and (when is None or when >= self.until):
            return False
        if self.user and str(record.get("user") or "").casefold() != self.user.casefold():
            return False
        if self.client and not same_ip(record.get("client_ip"), self.client):
            return False
        if self.profile and record.get("profile") != self.profile:
            return False
        if self.category and self.category.casefold() not in _categories(record).casefold():
            return False
        if self.severity and (SEVERITY_RANK.get(str(record.get("severity")), 0)
                              < SEVERITY_RANK[self.severity]):
            return False
        if self.actions and record.get("action") not in self.actions:
            return False
        if self.ids and record.get("id") not in self.ids:
            return False
        return not (self.unreviewed and record.get("id") in reviews)

    def describe(self) -> str:
        """The filters in words, for the HTML page's header."""
        parts = []
        for label, value in (("user", self.user), ("client", self.client),
                             ("profile", self.profile), ("category", self.category)):
            if value:
                parts.append(f"{label} {value}")
        if self.severity:
            parts.append(f"severity {self.severity} or higher")
        if self.actions:
            parts.append("action " + ", ".join(self.actions))
        if self.ids:
            parts.append("reference " + ", ".join(self.ids))
        if self.unreviewed:
            parts.append("not yet reviewed")
        return "; ".join(parts) or "all records"


def _categories(record: dict) -> str:
    """Both categories, so `--category self-harm` also finds a watchlist hit."""
    watch = record.get("watchlist") or {}
    return f"{record.get('category') or ''} {watch.get('category') or ''}"


def select(directory: Path, filters: Filters,
           reviews: dict[str, list[Review]] | None = None,
           stats: ReadStats | None = None) -> list[dict]:
    """Matching records, oldest first."""
    reviews = reviews if reviews is not None else ReviewStore(directory).load()
    found = [r for r in read_records(directory, filters.since, filters.until, stats)
             if filters.matches(r, reviews)]
    found.sort(key=lambda r: str(r.get("time", "")))
    return found


# -- presentation helpers -----------------------------------------------------------------


def is_serious(record: dict) -> bool:
    """What a DSL must see first: statutory, critical, and high+ watchlist hits."""
    watch = record.get("watchlist") or {}
    return bool(record.get("statutory") or record.get("severity") == "critical"
                or SEVERITY_RANK.get(watch.get("severity", ""), 0) >= SEVERITY_RANK["high"])


def who(record: dict) -> str:
    """A person in plain words: login, else device name, else address."""
    if record.get("user"):
        return str(record["user"])
    if record.get("device"):
        return f"{record['device']} ({record.get('client_ip', '')})"
    return str(record.get("client_ip") or "unknown")


def what(record: dict) -> str:
    """What was tried: the search term says more than the search engine's URL."""
    if record.get("search_term"):
        return f"search \"{record['search_term']}\""
    return str(record.get("url") or record.get("host") or "")


def local(record: dict, utc: bool = False) -> dt.datetime | None:
    """The record's time as the reader wants it: local (the default) or UTC."""
    when = record_time(record)
    if when is None:
        return None
    return when.astimezone(dt.UTC) if utc else when.astimezone()


def _spreadsheet_safe(value) -> str:
    """Text a spreadsheet will not run as a formula (CSV injection): a learner chooses the
    search terms and URLs that end up in these cells."""
    text = display(value)
    if text and text[0] in "=+-@\t\r|%":
        return "'" + text
    return text


# -- outputs ------------------------------------------------------------------------------

CSV_COLUMNS = ("Reference", "Date", "Time", "User", "Device", "Client IP", "Profile", "Action",
               "Category", "Severity", "Statutory", "Search term", "URL", "Website", "List",
               "Matched entry", "Watchlist term", "Reviewed", "Review notes", "Time (UTC)",
               "User agent", "Policy version")


def write_csv(records: list[dict], reviews: dict[str, list[Review]], out,
              utc: bool = False) -> None:
    """CSV for CPOMS and Excel: one row per record, plain column names, formulas defused."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    records = [conform(r) for r in records]
    for r in map(shareable, records):
        when = local(r, utc)
        notes = reviews.get(r.get("id", ""), [])
        watch = r.get("watchlist") or {}
        row = (r.get("id"), f"{when:%Y-%m-%d}" if when else "", f"{when:%H:%M:%S}" if when else "",
               r.get("user"), r.get("device"), r.get("client_ip"), r.get("profile"),
               ACTION_WORDS.get(r.get("action"), r.get("action")), r.get("category"),
               r.get("severity"), "yes" if r.get("statutory") else "no", r.get("search_term"),
               r.get("url"), r.get("host"), r.get("list"), r.get("entry"), watch.get("term"),
               "yes" if notes else "no", " | ".join(f"{n.by}: {n.note}" for n in notes),
               r.get("time"), r.get("user_agent"), r.get("policy_version"))
        writer.writerow([_spreadsheet_safe(v) for v in row])


def write_json(records: list[dict], reviews: dict[str, list[Review]], out) -> None:
    """Every field of every record, plus its reviews (a subject-access export); a statutory
    record without its full URL and entry."""
    items = [{**shareable(r), "reviews": [vars(n) for n in reviews.get(r.get("id", ""), [])]}
             for r in records]
    items = clean_value(items, limit=None)
    json.dump(items, out, ensure_ascii=False, indent=1)
    out.write("\n")


def write_table(records: list[dict], reviews: dict[str, list[Review]], out,
                width: int | None = None, utc: bool = False) -> None:
    """One line per record, fitted to the terminal: the URL column takes what is left."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    records = [conform(r) for r in records]
    head = ("When", "Reference", "Action", "Who", "Category", "Severity", "Rev", "What")
    rows = []
    for r in map(shareable, records):
        when = local(r, utc)
        rows.append((f"{when:%d %b %H:%M}" if when else "?", display(r.get("id", "")),
                     ACTION_WORDS.get(r.get("action"), str(r.get("action"))), who(r),
                     str(r.get("category") or ""), str(r.get("severity") or ""),
                     "yes" if r.get("id") in reviews else "", what(r)))
    caps = (12, 13, 22, 24, 28, 8, 3)
    widths = [min(cap, max([len(h)] + [len(row[i]) for row in rows]))
              for i, (h, cap) in enumerate(zip(head, caps))]
    while width - sum(widths) - 2 * len(widths) < 30 and max(widths[3], widths[4]) > 10:
        widths[3 if widths[3] >= widths[4] else 4] -= 1   # narrow terminal: squeeze Who/Category
    rest = max(20, width - sum(widths) - 2 * len(widths))
    for row in [head] + rows:
        cells = [_fit(cell, w) for cell, w in zip(row, widths)] + [_fit(row[-1], rest)]
        out.write("  ".join(cells).rstrip() + "\n")


def _fit(text: str, width: int) -> str:
    text = " ".join(display(text).split())
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "~"


def summary(records: list[dict], reviews: dict[str, list[Review]]) -> str:
    """One line of totals: the report's last line, and what `--html` prints on stderr."""
    records = [conform(r) for r in records]
    counts = Counter(r.get("action") for r in records)
    serious = sum(1 for r in records if is_serious(r))
    unreviewed = sum(1 for r in records if r.get("id") not in reviews)
    parts = [f"{len(records)} record(s)"] + [f"{counts[a]} {ACTION_WORDS[a].lower()}"
                                            for a in ACTIONS if counts[a]]
    return f"{', '.join(parts)}; {serious} serious; {unreviewed} not yet reviewed"


def write_sites(records: list[dict], out, limit: int = 5) -> None:
    """The sites most tried, a short table under the terminal report (after a blank line):
    where the attempts went, by site (registrable domain) rather than by host."""
    records = [conform(r) for r in records]
    sites = most_tried(records, limit)
    if not sites:
        return
    out.write("\n")
    names = [site.name + (" (statutory)" if site.statutory else "") for site in sites]
    width = min(40, max(len(name) for name in names + ["Sites most tried"]))
    out.write(f"{_fit('Sites most tried', width)}  Blocked  Flagged  People  Main category\n")
    for name, site in zip(names, sites):
        out.write(f"{_fit(name, width)}  {site.blocked:>7}  {site.flagged:>7}  "
                  f"{len(site.people):>6}  {display(site.category)}".rstrip() + "\n")
