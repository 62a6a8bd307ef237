"""`webpolicy report`, `review` and `erase`: the safeguarding log for the people who act on it.

Designated Safeguarding Leads are not technical: a report must read plainly (the most serious
events first, local times, words not codes) and export into their case-management system
(CPOMS) as CSV.  The log files are evidence, so nothing here edits them except `erase`, which
exists for data-protection requests and replaces a day's file atomically under the same lock
the proxy's writer takes.  Reviews ("seen, dealt with, note") live beside the log in
`reviews.jsonl`, one JSON line per review, 0600 like the log.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import fcntl
import getpass
import hashlib
import html
import ipaddress
import io
import json
import os
import re
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .auditlog import log_files
from .engine import SEVERITY_RANK
from .policy import PolicyError, load_policy

REVIEWS_FILE = "reviews.jsonl"
ACTIONS = ("blocked", "flagged", "logged", "failed_closed", "refused_passthrough")
ACTION_WORDS = {
    "blocked": "Blocked", "flagged": "Flagged search", "logged": "Allowed, logged",
    "failed_closed": "Blocked (filter error)", "refused_passthrough": "Connection refused",
}
_RELATIVE = re.compile(r"(\d+)\s*([mhdw])", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# -- reading ------------------------------------------------------------------------------


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


def record_time(record: dict) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class ReadStats:
    files: int = 0
    bad_lines: int = 0


def read_records(directory: Path, since: dt.datetime | None = None,
                 until: dt.datetime | None = None,
                 stats: ReadStats | None = None) -> Iterator[dict]:
    """Records from the daily files (UTC days) that can hold times in [since, until)."""
    stats = stats if stats is not None else ReadStats()
    first = since.astimezone(dt.UTC).date() if since else None
    last = until.astimezone(dt.UTC).date() if until else None
    for day, path in log_files(directory):
        if (first and day < first) or (last and day > last):
            continue
        stats.files += 1
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    stats.bad_lines += 1        # e.g. a line cut short by a full disk
                    continue
                if isinstance(record, dict):
                    yield record
                else:
                    stats.bad_lines += 1


# -- reviews ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    id: str
    time: str
    by: str
    note: str
    record_time: str = ""


class ReviewStore:
    """reviews.jsonl beside the log: appended by `webpolicy review`, never by the proxy."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / REVIEWS_FILE

    def load(self) -> dict[str, list[Review]]:
        reviews: dict[str, list[Review]] = defaultdict(list)
        if not self.path.exists():
            return reviews
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
                reviews[data["id"]].append(Review(data["id"], data.get("time", ""),
                                                  data.get("by", ""), data.get("note", ""),
                                                  data.get("record_time", "")))
            except (ValueError, KeyError, TypeError):
                continue
        return reviews

    def add(self, records: Iterable[dict], note: str, by: str,
            now: dt.datetime | None = None) -> int:
        stamp = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
        lines = [json.dumps({"id": r["id"], "time": stamp, "by": by, "note": note,
                             "record_time": r.get("time", "")}, ensure_ascii=False) + "\n"
                 for r in records]
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, "".join(lines).encode("utf-8"))
        finally:
            os.close(fd)
        return len(lines)

    def remove(self, keep) -> int:
        """Rewrite the store keeping only lines for which keep(data) is true."""
        if not self.path.exists():
            return 0
        removed = 0

        def keep_line(line: bytes) -> bool:
            nonlocal removed
            try:
                kept = keep(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                kept = True
            removed += not kept
            return kept

        rewrite_locked(self.path, keep_line)
        return removed


def purge_reviews(directory: Path, cutoff: dt.date) -> int:
    """Drop reviews of records older than the retention cutoff (the records are gone)."""
    def keep(data: dict) -> bool:
        when = record_time({"time": data.get("record_time", "")})
        return when is None or when.astimezone(dt.UTC).date() >= cutoff
    return ReviewStore(directory).remove(keep)


# -- atomic rewrite (erase) ---------------------------------------------------------------


def rewrite_locked(path: Path, keep) -> tuple[int, int]:
    """Rewrite `path` without the lines keep() rejects: temp file (0600) + rename, under an
    exclusive flock, the lock the proxy's log writer takes before appending.  Returns
    (lines kept, lines dropped); the file is untouched when nothing is dropped."""
    while True:
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:                         # replaced while we waited: lock the new one
                continue
            with os.fdopen(os.dup(fd), "rb") as handle:
                lines = handle.read().splitlines(keepends=True)
            kept = [line for line in lines if not line.strip() or keep(line)]
            dropped = len(lines) - len(kept)
            if dropped:
                _replace(path, b"".join(kept))
            return len(kept), dropped
        finally:
            os.close(fd)                         # releases the lock


def _replace(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass
class Person:
    """Whose records `erase` removes (any given criterion matches)."""

    user: str | None = None
    client: str | None = None
    ids: tuple[str, ...] = ()

    def matches(self, record: dict) -> bool:
        if self.user and str(record.get("user") or "").casefold() == self.user.casefold():
            return True
        if self.client and _same_ip(record.get("client_ip"), self.client):
            return True
        return bool(self.ids) and record.get("id") in self.ids


def erase(directory: Path, person: Person, dry_run: bool = False) -> tuple[dict[Path, int], int]:
    """Remove a person's records from every daily file and their reviews.
    Returns ({file: records removed}, reviews removed)."""
    removed: dict[Path, int] = {}
    ids: set[str] = set()

    def keep(line: bytes) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return True                          # unreadable lines are kept, never guessed at
        if isinstance(record, dict) and person.matches(record):
            ids.add(str(record.get("id")))
            return False
        return True

    for _, path in log_files(directory):
        if dry_run:
            count = sum(1 for line in path.read_bytes().splitlines() if line.strip() and not keep(line))
        else:
            count = rewrite_locked(path, keep)[1]
        if count:
            removed[path] = count
    reviews = 0
    store = ReviewStore(directory)
    if dry_run:
        reviews = sum(1 for rid, items in store.load().items() if rid in ids for _ in items)
    elif ids:
        reviews = store.remove(lambda data: data.get("id") not in ids)
    return removed, reviews


# -- filtering ----------------------------------------------------------------------------


@dataclass
class Filters:
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
        if self.client and not _same_ip(record.get("client_ip"), self.client):
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
    watch = record.get("watchlist") or {}
    return f"{record.get('category') or ''} {watch.get('category') or ''}"


def _same_ip(value, wanted: str) -> bool:
    if not value:
        return False
    try:
        if "/" in wanted:
            return ipaddress.ip_address(value) in ipaddress.ip_network(wanted, strict=False)
        return ipaddress.ip_address(value) == ipaddress.ip_address(wanted)
    except ValueError:
        return str(value) == wanted


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
    if record.get("search_term"):
        return f"search \"{record['search_term']}\""
    return str(record.get("url") or record.get("host") or "")


def local(record: dict, utc: bool = False) -> dt.datetime | None:
    when = record_time(record)
    if when is None:
        return None
    return when.astimezone(dt.UTC) if utc else when.astimezone()


def _spreadsheet_safe(value) -> str:
    """Text a spreadsheet will not run as a formula (CSV injection): a learner chooses the
    search terms and URLs that end up in these cells."""
    text = "" if value is None else str(value)
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
    for r in records:
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
    """Every field of every record, plus its reviews (a subject-access export)."""
    items = [{**r, "reviews": [vars(n) for n in reviews.get(r.get("id", ""), [])]}
             for r in records]
    json.dump(items, out, ensure_ascii=False, indent=1)
    out.write("\n")


def write_table(records: list[dict], reviews: dict[str, list[Review]], out,
                width: int | None = None, utc: bool = False) -> None:
    width = width or shutil.get_terminal_size((120, 24)).columns
    head = ("When", "Reference", "Action", "Who", "Category", "Severity", "Rev", "What")
    rows = []
    for r in records:
        when = local(r, utc)
        rows.append((f"{when:%d %b %H:%M}" if when else "?", str(r.get("id", "")),
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
    text = " ".join(str(text).split())
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "~"


def summary(records: list[dict], reviews: dict[str, list[Review]]) -> str:
    counts = Counter(r.get("action") for r in records)
    serious = sum(1 for r in records if is_serious(r))
    unreviewed = sum(1 for r in records if r.get("id") not in reviews)
    parts = [f"{len(records)} record(s)"] + [f"{counts[a]} {ACTION_WORDS[a].lower()}"
                                            for a in ACTIONS if counts[a]]
    return f"{', '.join(parts)}; {serious} serious; {unreviewed} not yet reviewed"


# -- HTML ---------------------------------------------------------------------------------

_COLOURS = {"blocked": "#b03a2e", "flagged": "#d68910", "logged": "#2874a6",
            "failed_closed": "#6c3483", "refused_passthrough": "#78281f"}

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
 color:#1c2833;background:#f4f6f7}
header{background:#1b4f72;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}header p{margin:2px 0;opacity:.9}
main{padding:8px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #d5dbdb;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:18px;margin:0 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #d5dbdb;border-radius:6px;padding:8px 14px;min-width:120px;background:#fbfcfc}
.card b{display:block;font-size:24px}
.serious{border-left:6px solid #b03a2e}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:900px){.charts{grid-template-columns:1fr}}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e5e8e8;vertical-align:top}
th{background:#eaf2f8;position:sticky;top:0}
#all th{cursor:pointer;user-select:none}#all th:after{content:" \\2195";color:#85929e}
td.what{overflow-wrap:anywhere;max-width:420px}
td.nowrap{white-space:nowrap}
.sev-critical{color:#fff;background:#922b21;border-radius:3px;padding:0 5px}
.sev-high{color:#922b21;font-weight:600}
.act{font-weight:600}
.act-blocked,.act-refused_passthrough,.act-failed_closed{color:#922b21}
.act-flagged{color:#9a7d0a}.act-logged{color:#1f618d}
.none{color:#566573;font-style:italic}
input[type=search]{padding:6px 8px;width:320px;max-width:100%;margin-bottom:8px}
footer{color:#566573;font-size:13px;padding:0 28px 30px}
"""

_SCRIPT = """
(function(){
document.documentElement.setAttribute('data-ready','1');
var t=document.getElementById('all');if(!t)return;
var b=t.tBodies[0],hs=t.tHead.rows[0].cells,dir={};
function key(r,i){var c=r.cells[i];return c.getAttribute('data-v')||c.textContent.toLowerCase();}
Array.prototype.forEach.call(hs,function(h,i){h.addEventListener('click',function(){
 dir[i]=!dir[i];var rows=Array.prototype.slice.call(b.rows);
 rows.sort(function(x,y){var a=key(x,i),c=key(y,i);return (a<c?-1:a>c?1:0)*(dir[i]?1:-1);});
 rows.forEach(function(r){b.appendChild(r);});});});
var f=document.getElementById('filter');
if(f)f.addEventListener('input',function(){var q=f.value.toLowerCase();
 Array.prototype.forEach.call(b.rows,function(r){
 r.hidden=q&&r.textContent.toLowerCase().indexOf(q)<0;});});
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def write_html(records: list[dict], reviews: dict[str, list[Review]], out,
               organisation: str = "", filters: Filters | None = None,
               utc: bool = False, now: dt.datetime | None = None) -> None:
    """One self-contained page: no external resources, and a Content-Security-Policy that
    lets only its own style and script run, so a crafted URL in the log cannot script it."""
    now = now or dt.datetime.now(dt.UTC)
    filters = filters or Filters()
    csp = (f"default-src 'none'; img-src data:; style-src {_csp_hash(_STYLE)}; "
           f"script-src {_csp_hash(_SCRIPT)}; base-uri 'none'; form-action 'none'")
    title = f"Safeguarding report{' - ' + organisation if organisation else ''}"
    body = [
        "<!DOCTYPE html>", '<html lang="en-GB"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f"<p>{_e(_period(records, filters, utc))} &middot; {_e(filters.describe())}</p>",
        f"<p>Made {_e(_stamp(now, utc))}. Contains personal data about learners and staff: "
        "keep it secure and delete it when it is no longer needed.</p></header><main>",
        _cards(records, reviews), _serious_section(records, reviews, utc),
        '<section><h2>When and what</h2><div class="charts">',
        f"<div><h3>Events per day</h3>{day_chart(records, utc)}</div>",
        f"<div><h3>Events per category</h3>{category_chart(records)}</div></div></section>",
        _people_section(records), _all_section(records, reviews, utc),
        "</main><footer>Mark an event as reviewed with <code>webpolicy review REFERENCE "
        "--note &quot;what was done&quot;</code>; <code>webpolicy report --unreviewed</code> then "
        "shows only what is new. Times are "
        f"{'UTC' if utc else 'local time'}.</footer>",
        f"<script>{_SCRIPT}</script></body></html>",
    ]
    out.write("\n".join(body) + "\n")


def _stamp(when: dt.datetime, utc: bool) -> str:
    moment = when.astimezone(dt.UTC) if utc else when.astimezone()
    return f"{moment:%a %d %b %Y %H:%M} {moment.tzname() or ''}".strip()


def _period(records: list[dict], filters: Filters, utc: bool) -> str:
    times = [t for t in (local(r, utc) for r in records) if t]
    start = filters.since or (min(times) if times else None)
    end = filters.until or (max(times) if times else None)
    if not start or not end:
        return "No events"
    return f"{_stamp(start, utc)} to {_stamp(end, utc)}"


def _cards(records: list[dict], reviews: dict[str, list[Review]]) -> str:
    counts = Counter(r.get("action") for r in records)
    serious = sum(1 for r in records if is_serious(r))
    unreviewed = sum(1 for r in records if r.get("id") not in reviews)
    cards = [("Events", len(records), ""), ("Serious", serious, " serious")]
    cards += [(ACTION_WORDS[a], counts[a], "") for a in ACTIONS if counts[a]]
    cards.append(("Not yet reviewed", unreviewed, ""))
    items = "".join(f'<div class="card{cls}"><b>{n}</b>{_e(label)}</div>'
                    for label, n, cls in cards)
    return f'<section><h2>Summary</h2><div class="cards">{items}</div></section>'


def _serious_section(records: list[dict], reviews: dict[str, list[Review]], utc: bool) -> str:
    serious = [r for r in records if is_serious(r)]
    serious.sort(key=lambda r: (SEVERITY_RANK.get(_top_severity(r), 0), str(r.get("time"))),
                 reverse=True)                             # most severe, then newest, first
    head = '<section class="serious" id="serious"><h2>Needs attention first</h2>'
    if not serious:
        return head + '<p class="none">No statutory, critical or high-severity watchlist ' \
                      "events in this period.</p></section>"
    return head + _table(serious, reviews, utc, "serious-table") + "</section>"


def _top_severity(record: dict) -> str:
    watch = (record.get("watchlist") or {}).get("severity", "")
    own = str(record.get("severity") or "")
    return max((own, watch), key=lambda s: SEVERITY_RANK.get(s, 0))


def _table(records: list[dict], reviews: dict[str, list[Review]], utc: bool,
           table_id: str) -> str:
    rows = []
    for r in records:
        when = local(r, utc)
        severity = str(r.get("severity") or "")
        notes = reviews.get(r.get("id", ""), [])
        review = "; ".join(f"{n.note} ({n.by})" for n in notes)
        action = str(r.get("action") or "")
        rows.append(
            "<tr>"
            f'<td class="nowrap" data-v="{_e(r.get("time"))}">'
            f'{_e(f"{when:%d %b %Y %H:%M}" if when else "")}</td>'
            f'<td class="nowrap">{_e(r.get("id"))}</td>'
            f'<td class="act act-{_e(action)}">{_e(ACTION_WORDS.get(action, action))}</td>'
            f"<td>{_e(who(r))}</td><td>{_e(r.get('profile'))}</td>"
            f"<td>{_e(r.get('category'))}{' (statutory)' if r.get('statutory') else ''}</td>"
            f'<td data-v="{SEVERITY_RANK.get(severity, 0)}"><span class="sev-{_e(severity)}">'
            f"{_e(severity)}</span></td>"
            f'<td class="what">{_e(what(r))}</td>'
            f'<td data-v="{1 if notes else 0}">{_e(review) if notes else "not yet"}</td>'
            "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("When", "Reference", "Action", "Who", "Profile",
                                             "Category", "Severity", "What", "Reviewed"))
    return (f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _people_section(records: list[dict]) -> str:
    blocks: Counter = Counter()
    flagged: Counter = Counter()
    categories: dict[str, Counter] = defaultdict(Counter)
    last: dict[str, str] = {}
    for r in records:
        person = who(r)
        if r.get("action") in ("blocked", "refused_passthrough", "failed_closed"):
            blocks[person] += 1
        elif r.get("action") == "flagged":
            flagged[person] += 1
        else:
            continue
        categories[person][r.get("category") or "?"] += 1
        last[person] = max(last.get(person, ""), str(r.get("time", "")))
    ranked = sorted(set(blocks) | set(flagged), key=lambda p: (-blocks[p], -flagged[p], p))[:15]
    head = "<section><h2>People with most blocks</h2>"
    if not ranked:
        return head + '<p class="none">No blocked or flagged events.</p></section>'
    rows = "".join(
        f"<tr><td>{_e(p)}</td><td>{blocks[p]}</td><td>{flagged[p]}</td>"
        f"<td>{_e(', '.join(f'{c} ({n})' for c, n in categories[p].most_common(3)))}</td></tr>"
        for p in ranked)
    return (head + "<table><thead><tr><th>Who</th><th>Blocked</th><th>Flagged searches</th>"
            f"<th>Main categories</th></tr></thead><tbody>{rows}</tbody></table></section>")


def _all_section(records: list[dict], reviews: dict[str, list[Review]], utc: bool) -> str:
    newest = list(reversed(records))
    return ("<section><h2>Every event</h2><p>Newest first; click a column heading to sort.</p>"
            '<input type="search" id="filter" placeholder="Show only rows containing...">'
            + _table(newest, reviews, utc, "all") + "</section>")


def day_chart(records: list[dict], utc: bool = False) -> str:
    """Inline SVG: events per day, stacked by action."""
    per_day: dict[dt.date, Counter] = defaultdict(Counter)
    for r in records:
        when = local(r, utc)
        if when:
            per_day[when.date()][r.get("action")] += 1
    if not per_day:
        return '<p class="none">No events.</p>'
    first, last = min(per_day), max(per_day)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)][-92:]
    top = max(sum(per_day[d].values()) for d in days) or 1
    width, height, left, bottom = 640, 240, 40, 40
    step = (width - left - 10) / len(days)
    bar = min(48.0, max(2.0, step * 0.75))
    parts = [f'<svg viewBox="0 0 {width} {height + 30}" width="100%" role="img" '
             f'aria-label="Events per day" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" '
             'stroke="#85929e"/>',
             f'<text x="{left - 6}" y="18" font-size="11" text-anchor="end">{top}</text>',
             f'<text x="{left - 6}" y="{height - bottom}" font-size="11" text-anchor="end">0</text>']
    scale = (height - bottom - 14) / top
    label_every = -(-len(days) // 8)                      # at most 8 date labels
    for i, day in enumerate(days):
        x = left + i * step + (step - bar) / 2
        y = height - bottom
        for action in ACTIONS:
            n = per_day[day][action]
            if n:
                h = n * scale
                y -= h
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                             f'fill="{_COLOURS[action]}"><title>{day:%d %b}: {n} '
                             f'{_e(ACTION_WORDS[action].lower())}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 14}" font-size="11" '
                         f'text-anchor="middle">{day:%d %b}</text>')
    legend_x = left
    for action in ACTIONS:
        if any(per_day[d][action] for d in days):
            parts.append(f'<rect x="{legend_x}" y="{height + 2}" width="10" height="10" '
                         f'fill="{_COLOURS[action]}"/><text x="{legend_x + 14}" y="{height + 11}" '
                         f'font-size="11">{_e(ACTION_WORDS[action])}</text>')
            legend_x += 22 + 7 * len(ACTION_WORDS[action])
    parts.append("</svg>")
    return "".join(parts)


def category_chart(records: list[dict], limit: int = 12) -> str:
    """Inline SVG: horizontal bars, events per category, most first."""
    counts = Counter(r.get("category") or "(none)" for r in records)
    if not counts:
        return '<p class="none">No events.</p>'
    top = counts.most_common(limit)
    most = top[0][1]
    row, label_w, width = 24, 210, 640
    height = row * len(top) + 10
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="Events per category" xmlns="http://www.w3.org/2000/svg">']
    for i, (category, n) in enumerate(top):
        y = 5 + i * row
        w = max(2.0, (width - label_w - 50) * n / most)
        name = category if len(category) <= 32 else category[:31] + "..."
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">'
                     f"{_e(name)}</text>"
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" '
                     f'fill="#2874a6"><title>{_e(category)}: {n}</title></rect>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" font-size="12">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- command line -------------------------------------------------------------------------


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
                    "(each file is rewritten atomically, 0600) and their review notes.  Export "
                    "them first if the request asks for a copy: webpolicy report --user X --json")
    _location(erase_cmd)
    erase_cmd.add_argument("--user")
    erase_cmd.add_argument("--client", metavar="IP")
    erase_cmd.add_argument("--id", help="comma-separated references")
    erase_cmd.add_argument("--dry-run", action="store_true", help="only count what would go")
    erase_cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase_cmd.set_defaults(handler=cmd_erase)


def _location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="policy.yaml",
                        help="policy.yaml (its logging.directory is read)")
    parser.add_argument("--log-dir", help="the log directory (instead of reading the policy)")


def _context(args) -> tuple[Path, str]:
    """(log directory, organisation) from --log-dir or the policy."""
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
    return Path(args.log_dir) if args.log_dir else directory, organisation


def _filters(args) -> Filters:
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
    directory, organisation = _context(args)
    filters = _filters(args)
    if not directory.is_dir():
        print(f"webpolicy report: no log directory {directory} (nothing recorded yet?)",
              file=sys.stderr)
        return 1
    reviews = ReviewStore(directory).load()
    stats = ReadStats()
    records = select(directory, filters, reviews, stats)
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
        print(summary(records, reviews), file=sys.stderr if args.output else sys.stdout)
    return 0


def _write_private(path: Path, emit, encoding: str = "utf-8") -> None:
    """Exports hold personal data: created 0600 like the log."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding=encoding, newline="") as out:
        emit(out)


def cmd_review(args) -> int:
    directory, _ = _context(args)
    wanted = {i.strip().upper() for i in args.ids}
    found = {r["id"]: r for r in read_records(directory) if r.get("id") in wanted}
    missing = sorted(wanted - found.keys())
    if missing:
        print(f"webpolicy review: no record {', '.join(missing)} in {directory} (mistyped, or "
              "past the retention period?)", file=sys.stderr)
        if not found:
            return 1
    by = args.by or os.environ.get("SUDO_USER") or getpass.getuser()
    count = ReviewStore(directory).add(found.values(), args.note, by)
    print(f"marked {count} record(s) reviewed by {by}")
    return 0 if not missing else 1


def cmd_erase(args) -> int:
    directory, _ = _context(args)
    ids = tuple(i.strip().upper() for i in (args.id or "").split(",") if i.strip())
    if not (args.user or args.client or ids):
        print("webpolicy erase: say whose records: --user, --client or --id", file=sys.stderr)
        return 2
    person = Person(args.user, args.client, ids)
    preview, reviews = erase(directory, person, dry_run=True)
    total = sum(preview.values())
    if not total:
        print(f"no records of {_name(person)} in {directory}")
        return 0
    print(f"{total} record(s) of {_name(person)} in {len(preview)} file(s) in {directory}"
          f"{f', and {reviews} review note(s)' if reviews else ''}")
    if args.dry_run:
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print("webpolicy erase: add --yes to erase them", file=sys.stderr)
            return 1
        if input("Erase them for good? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing erased")
            return 1
    removed, reviews = erase(directory, person)
    print(f"erased {sum(removed.values())} record(s) and {reviews} review note(s)")
    return 0


def _name(person: Person) -> str:
    parts = [f"user {person.user}" if person.user else "",
             f"client {person.client}" if person.client else "",
             f"reference {', '.join(person.ids)}" if person.ids else ""]
    return " or ".join(p for p in parts if p)
