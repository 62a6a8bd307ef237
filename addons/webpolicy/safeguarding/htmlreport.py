"""The `--html` report: one self-contained page a DSL can open offline or receive by e-mail.

No external resources of any kind (fonts, scripts, images): the page holds personal data and
may be opened anywhere, so it must not call out.  Its Content-Security-Policy allows only its
own style and script by hash, so a crafted URL or search term in the log can never script it.
Charts are inline SVG drawn here, not a charting library.  The order is the DSL's: what needs
attention first, then the shape of the period, then who and where, then every event.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
from collections import Counter, defaultdict

from webpolicy.policy.severity import SEVERITY_RANK
from webpolicy.safeguarding.confidential import shareable
from webpolicy.safeguarding.logstore import Review
from webpolicy.safeguarding.report import (
    ACTION_WORDS,
    ACTIONS,
    Filters,
    is_serious,
    local,
    what,
    who,
)
from webpolicy.safeguarding.safetext import conform, display
from webpolicy.safeguarding.sites import most_tried

_COLOURS = {"blocked": "#b03a2e", "flagged": "#d68910", "logged": "#2874a6",
            "failed_closed": "#6c3483", "refused_passthrough": "#78281f",
            "review_requested": "#1e8449"}

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
    """Escaped for HTML, after `display`: a lone surrogate would stop the page's UTF-8."""
    return html.escape(display(value), quote=True)


def write_html(records: list[dict], reviews: dict[str, list[Review]], out,
               organisation: str = "", filters: Filters | None = None,
               utc: bool = False, now: dt.datetime | None = None) -> None:
    """One self-contained page: no external resources, and a Content-Security-Policy that
    lets only its own style and script run, so a crafted URL in the log cannot script it."""
    now = now or dt.datetime.now(dt.UTC)
    filters = filters or Filters()
    records = [conform(r) for r in records]            # any line of the log, any shape
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
        _people_section(records), _sites_section(records, utc),
        _all_section(records, reviews, utc),
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
    for r in map(shareable, records):                      # statutory: host and list only
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


def _sites_section(records: list[dict], utc: bool) -> str:
    """Where the attempts went, by site: `www.` and `mobile.` hosts of one domain count
    together; a statutory entry is shown by its host only, as on the block page."""
    sites = most_tried(records, limit=15)
    head = "<section><h2>Sites most tried</h2>"
    if not sites:
        return head + '<p class="none">No blocked or flagged attempts.</p></section>'
    rows = []
    for site in sites:
        last = local({"time": site.last}, utc)
        rows.append(
            f"<tr><td>{_e(site.name)}{' (statutory)' if site.statutory else ''}</td>"
            f"<td>{site.blocked}</td><td>{site.flagged}</td><td>{len(site.people)}</td>"
            f"<td>{_e(site.category)}</td>"
            f'<td class="nowrap">{_e(f"{last:%d %b %Y %H:%M}" if last else "")}</td></tr>')
    return (head + "<p>Blocked attempts and flagged searches, by website (all the addresses "
            "of one domain together).</p><table><thead><tr><th>Website</th><th>Blocked</th>"
            "<th>Flagged searches</th><th>People</th><th>Main category</th><th>Last tried</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


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
    counts = Counter(display(r.get("category")) or "(none)" for r in records)
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
