"""The HTML report: self-contained, safe against crafted log content, in the DSL's order,
with its charts and the sites most tried."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import re

from tests.unit.eventlog import NOW, ids_of, make, run_cli
from webpolicy.safeguarding.htmlreport import category_chart, day_chart, write_html
from webpolicy.safeguarding.report import Filters, select


def _csp(page: str) -> str:
    return re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_html_is_self_contained_and_safe(logs, tmp_path, capsys):
    page_path = tmp_path / "week.html"
    code, _, _ = run_cli(capsys, "report", "--html", str(page_path), "--log-dir", str(logs))
    assert code == 0 and page_path.stat().st_mode & 0o777 == 0o600
    page = page_path.read_text()
    # No external resources of any kind.
    assert not re.search(r'(src|href)\s*=\s*"(?!#)', page)
    assert "url(" not in page and "@import" not in page
    # The CSP allows exactly the page's own style and script.
    csp = _csp(page)
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    assert "default-src 'none'" in csp and _hash(style) in csp and _hash(script) in csp
    assert page.count("<script>") == 1
    # A crafted search term is shown as text, never run.
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    # Serious events first, then charts, people and every record.
    serious = page.index('id="serious"')
    assert serious < page.index("<svg") < page.index("People with most blocks") \
        < page.index('id="all"')
    serious_part = page[serious:page.index("<svg")]
    assert "Terrorist content (CTIRU)" in serious_part and "how to self harm" in serious_part
    assert "Social networking" not in serious_part
    all_part = page[page.index('id="all"'):]
    assert all(rid in all_part for rid in ids_of(select(logs, Filters())))


def test_charts():
    records = [{"time": "2026-11-20T10:00:00.000Z", "action": "blocked", "category": "A"},
               {"time": "2026-11-20T11:00:00.000Z", "action": "flagged", "category": "B"},
               {"time": "2026-11-23T10:00:00.000Z", "action": "blocked", "category": "A"}]
    days = day_chart(records, utc=True)
    assert days.startswith("<svg") and days.count("<rect") >= 3
    assert "21 Nov" in days or days.count("<text") >= 4       # gap days are on the axis
    categories = category_chart(records)
    assert categories.index(">A<") < categories.index(">B<")   # most first
    assert "No events" in day_chart([])


def test_html_with_no_records(tmp_path):
    out = io.StringIO()
    write_html([], {}, out, "Example College")
    assert "No statutory, critical" in out.getvalue() and "Example College" in out.getvalue()




def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    return page[start:page.index("</section>", start)]


def test_sites_most_tried_groups_hosts_by_registrable_domain():
    records = [
        make(NOW - dt.timedelta(hours=3), url="https://www.bet365.com/", user="alice"),
        make(NOW - dt.timedelta(hours=2), url="https://mobile.bet365.com/live", user="bob"),
        make(NOW - dt.timedelta(hours=1), url="https://bet365.com/", user="ALICE"),
        make(NOW, url="https://images.host.co.uk/listed/page.jpg", list="iwf",
             category="Child sexual abuse (IWF)", severity="critical", statutory=True),
        make(NOW, url="https://www.host.co.uk/", user="carol"),
        make(NOW, action="log", url="https://social.example.com/"),        # allowed: not tried
    ]
    out = io.StringIO()
    write_html(records, {}, out, "Example College", utc=True)
    page = out.getvalue()
    assert page.index("People with most blocks") < page.index("Sites most tried") \
        < page.index('id="all"')
    rows = re.findall(r"<tr><td>(.*?)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>"
                      r"<td>(.*?)</td>", _section(page, "Sites most tried"))
    assert rows == [("bet365.com", "3", "0", "2", "Gambling"),
                    ("host.co.uk", "1", "0", "1", "Gambling"),
                    ("images.host.co.uk (statutory)", "1", "0", "1",
                     "Child sexual abuse (IWF)")]
    # A statutory entry is described by its host only, never its URL or its domain's name.
    assert "/listed/" not in _section(page, "Sites most tried")


def test_sites_most_tried_when_nothing_was_tried():
    out = io.StringIO()
    write_html([make(NOW, action="log")], {}, out)
    assert "No blocked or flagged attempts." in _section(out.getvalue(), "Sites most tried")
