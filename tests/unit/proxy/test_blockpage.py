"""Block pages: status codes, HTML vs text by Accept, escaping of hostile values, statutory pages
show the host only, and nothing on the page loads from elsewhere."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webpolicy.engine.decision import Decision, unavailable
from webpolicy.policy.model import BlockPageSettings
from webpolicy.proxy import blockpage

SETTINGS = BlockPageSettings(organisation="Example College", contact="the helpdesk (ext. 2100)",
                             review_url="https://help.example/review")
WHEN = dt.datetime(2026, 11, 25, 9, 30, 5, tzinfo=dt.UTC)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

CATEGORY = Decision("block", "learner", "default", list="gambling", category="Gambling",
                    severity="medium", match="host", entry="bet.test", policy_version="v7")
STATUTORY = Decision("block", "learner", "default", list="ctiru",
                     category="Terrorist content (CTIRU)", severity="critical", statutory=True,
                     match="url", entry="evil.test/propaganda", policy_version="v7")
FAILED = unavailable("learner", "default", "v7")


class Parsed(HTMLParser):
    """Tags, attributes and the text of elements with an id, as a browser would read them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.by_id: dict[str, str] = {}
        self.style = ""
        self._stack: list[tuple[str, str | None]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag not in ("meta", "link", "br"):
            self._stack.append((tag, attributes.get("id")))

    def handle_endtag(self, tag):
        if self._stack:
            self._stack.pop()

    def handle_data(self, data):
        if self._stack and self._stack[-1][0] == "style":
            self.style += data
        for _, element_id in self._stack:
            if element_id:
                self.by_id[element_id] = self.by_id.get(element_id, "") + data


def render(decision=CATEGORY, url="https://bet.test/slots?x=1", host="bet.test",
           settings=SETTINGS, accept=BROWSER_ACCEPT):
    return blockpage.render(decision, "WP-7K3M9Q2XTB", url, host, settings, accept, WHEN)


@pytest.mark.parametrize(("decision", "status"), [(CATEGORY, 403), (STATUTORY, 451), (FAILED, 503)])
def test_status(decision, status):
    assert blockpage.status_for(decision) == status
    assert render(decision).status == status
    assert render(decision, accept="").status == status


@pytest.mark.parametrize("accept", [BROWSER_ACCEPT, "text/html"])
def test_browsers_get_html(accept):
    page = render(accept=accept)
    assert page.content_type == "text/html; charset=utf-8"
    assert page.body.startswith(b"<!doctype html>")


@pytest.mark.parametrize("accept", ["", "*/*", "application/json", "text/plain"])
def test_other_clients_get_text(accept):
    page = render(accept=accept)
    assert page.content_type == "text/plain; charset=utf-8"
    text = page.body.decode()
    assert "<" not in text
    assert "This page has been blocked" in text
    assert "Reference: WP-7K3M9Q2XTB" in text
    assert "Gambling" in text
    assert "https://bet.test/slots?x=1" in text
    assert "25 November 2026, 09:30:05 GMT" in text
    assert "the helpdesk (ext. 2100)" in text
    assert "https://help.example/review" in text


def test_html_shows_what_a_learner_needs():
    parsed = Parsed(render().body.decode())
    assert parsed.by_id["address"] == "https://bet.test/slots?x=1"
    assert parsed.by_id["reference"] == "WP-7K3M9Q2XTB"
    assert parsed.by_id["time"] == "25 November 2026, 09:30:05 GMT"
    body = render().body.decode()
    for words in ("This page has been blocked", "Gambling", "the helpdesk (ext. 2100)",
                  "Example College", "policy v7"):
        assert words in body
    assert ("a", {"href": "https://help.example/review"}) in parsed.tags


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_hostile_url_is_escaped():
    url = "http://bet.test/" + HOSTILE
    html = render(url=url).body.decode()
    parsed = Parsed(html)
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html
    assert parsed.by_id["address"] == url, "the escaped address reads back exactly"
    assert not [t for t, _ in parsed.tags if t in ("script", "img")]


def test_hostile_settings_and_category_are_escaped():
    settings = BlockPageSettings(organisation="<b>Org</b>", contact="<script>x()</script>",
                                 review_url='https://help.example/"onmouseover="alert(1)')
    decision = Decision("block", "learner", "default", list="x", category="<i>Cat</i>",
                        severity="low", policy_version="<v>")
    html = render(decision, settings=settings).body.decode()
    parsed = Parsed(html)
    for tag in ("b", "i", "script", "v"):
        assert tag not in [t for t, _ in parsed.tags]
    links = [a for t, a in parsed.tags if t == "a"]
    assert links == [{"href": 'https://help.example/"onmouseover="alert(1)'}]


@pytest.mark.parametrize("review_url", ["javascript:alert(1)", "data:text/html,<b>x</b>",
                                        "JAVASCRIPT:alert(1)", "//evil.example/", ""])
def test_only_web_review_links(review_url):
    settings = BlockPageSettings("Org", "IT", review_url)
    parsed = Parsed(render(settings=settings).body.decode())
    assert not [a for t, a in parsed.tags if t == "a"]


def test_statutory_shows_host_only():
    url = "https://evil.test/propaganda/video?id=9"
    for accept in (BROWSER_ACCEPT, ""):
        body = render(STATUTORY, url=url, host="evil.test", accept=accept).body.decode()
        assert "evil.test" in body
        assert "propaganda" not in body and "id=9" not in body
        assert "This site cannot be reached" in body
    parsed = Parsed(render(STATUTORY, url=url, host="evil.test").body.decode())
    assert parsed.by_id["address"] == "evil.test"


def test_failed_closed_page():
    body = render(FAILED).body.decode()
    assert "The web filter is unavailable" in body
    assert "try again" in body
    assert 'class="unavailable"' in body


@pytest.mark.parametrize("decision", [CATEGORY, STATUTORY, FAILED])
def test_self_contained(decision):
    """No scripts and nothing fetched from anywhere: the proxy may block it, and it would tell a
    third party about the visit.  A data: favicon stops browsers asking the blocked site for
    /favicon.ico (which would be blocked and logged a second time)."""
    parsed = Parsed(render(decision).body.decode())
    for tag, attributes in parsed.tags:
        assert tag not in ("script", "img", "iframe", "object", "embed", "form")
        assert not {"src", "srcset", "action"} & attributes.keys()
        assert not any(name.startswith("on") for name in attributes)
        if tag == "link":
            assert attributes == {"rel": "icon", "href": "data:,"}
    assert "url(" not in parsed.style and "@import" not in parsed.style


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_any_address_reads_back_exactly_and_adds_no_tags(address):
    parsed = Parsed(render(url=address).body.decode())
    clean = Parsed(render().body.decode())
    assert [t for t, _ in parsed.tags] == [t for t, _ in clean.tags]
    assert parsed.by_id.get("address", "") == address


@given(address=st.text(max_size=80), organisation=st.text(max_size=20),
       category=st.text(max_size=20), kind=st.sampled_from(["category", "statutory", "failed"]))
def test_the_cached_page_is_the_page_rendered_whole(address, organisation, category, kind):
    """render() reuses the page around its address, reference and time; what it sends must
    be exactly the page rendered from scratch (settings may even hold the cut character)."""
    decision = {"category": CATEGORY._replace(category=category),
                "statutory": STATUTORY._replace(category=category), "failed": FAILED}[kind]
    settings = BlockPageSettings(organisation, "IT \x00", "https://help.example/")
    for settings in (settings, SETTINGS):
        static = blockpage._static_facts(blockpage._kind(decision), decision.category or "",
                                         decision.policy_version, settings)
        whole = blockpage._html({**static, "address": "bet.test" if decision.statutory else address,
                                 "reference": "WP-7K3M9Q2XTB", "time": "25 November 2026, 09:30:05 GMT"})
        assert render(decision, url=address, settings=settings).body.decode() == whole


def test_time_is_english_whatever_the_locale():
    assert blockpage._time(WHEN) == WHEN.strftime("%d %B %Y, %H:%M:%S UTC") == \
        "25 November 2026, 09:30:05 UTC"


def test_time_is_the_centres_local_time():
    """Europe/London by default (block_page.timezone): GMT in winter, BST in summer."""
    assert blockpage._time(WHEN, "Europe/London") == "25 November 2026, 09:30:05 GMT"
    summer = WHEN.replace(month=7)
    assert blockpage._time(summer, "Europe/London") == "25 July 2026, 10:30:05 BST"
    assert blockpage._time(WHEN, "No/Such_Zone") == "25 November 2026, 09:30:05 UTC"


def test_a_list_from_ut1_is_credited_on_the_page_as_its_licence_asks():
    from webpolicy.lists.ut1 import BLOCK_PAGE_CREDIT
    for accept in (BROWSER_ACCEPT, ""):
        page = blockpage.render(CATEGORY, "WP-7K3M9Q2XTB", "https://bet.test/", "bet.test",
                                SETTINGS, accept, WHEN, credit=BLOCK_PAGE_CREDIT).body.decode()
        assert "Category list: UT1 blacklists (Université Toulouse 1 Capitole), CC BY-SA 4.0" \
            in page
    parsed = Parsed(blockpage.render(CATEGORY, "WP-1", "https://bet.test/", "bet.test", SETTINGS,
                                     BROWSER_ACCEPT, WHEN, credit=BLOCK_PAGE_CREDIT).body.decode())
    assert parsed.by_id["credit"].startswith("Category list: UT1")
    assert "UT1" not in render().body.decode(), "no credit for a list of the centre's own"
    statutory = blockpage.render(STATUTORY, "WP-1", "https://evil.test/", "evil.test", SETTINGS,
                                 BROWSER_ACCEPT, WHEN, credit=BLOCK_PAGE_CREDIT).body.decode()
    assert "UT1" not in statutory, "only a category block names a category list"
