"""The annual-review document: everything a governor signs off, nothing confidential."""

from __future__ import annotations

import datetime as dt
import json
import re

from tests.unit.helpers import engine_from, policy_yaml
from webpolicy.policy import history
from webpolicy.safeguarding import policydoc

POLICY = policy_yaml(
    version="2026-review",
    learner={"block": ["ctiru", "adult"], "log": ["social"], "safe_search": "{enforce: true}",
             "connect": "{block_ip_literals: true, allowed_ports: [443]}"},
    staff={"block": ["ctiru"], "log": ["adult"], "on_error": "allow"},
    users={"alice": "staff", "bob": "staff"},
    lists={"ctiru": "{statutory: true, category: Terrorist content, severity: critical, "
                    "format: urls, sources: [ctiru.txt]}",
           "adult": "{category: 'Adult <script>x</script>', severity: high, sources: [adult.txt]}",
           "social": "{category: Social networking, severity: low, sources: [social.txt]}"},
    extra="allow: [example.org/teaching/]\npassthrough: [bank.example]\n"
          "alerts:\n  webhook: {url: 'https://hooks.example/services/T0/SECRET-TOKEN'}\n")
LISTS = {"ctiru.txt": "secret-ctiru.example/terror/page\n", "adult.txt": "adult.example\n",
         "social.txt": "social.example\n"}
NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)


def page(tmp_path, changes=(), selftest=None) -> str:
    engine = engine_from(tmp_path, POLICY, LISTS)
    return policydoc.render(engine, changes, since=None, selftest=selftest, now=NOW)


def text_of(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_it_covers_what_the_review_needs(tmp_path):
    html = page(tmp_path)
    for heading in ("Summary", "Profiles and who gets them", "Lists", "Local exceptions",
                    "Logging, monitoring and alerts", "Last self-test", "Changes to the policy",
                    "Sign-off"):
        assert f"<h2>{heading}</h2>" in html
    text = text_of(html)
    assert "2026-review" in text and "every device not matched below" in text
    assert "devices in 10.20.0.0/16" in text and "2 named login(s)" in text
    assert "example.org/teaching/" in text and "bank.example" in text
    assert "safe search forced" in text and "connections to bare IP addresses refused" in text
    assert "ctiru.txt" in text and "No self-test has been recorded" in text


def test_nothing_confidential_leaves_on_paper(tmp_path):
    html = page(tmp_path)
    assert "secret-ctiru.example" not in html, "a statutory entry"
    assert "SECRET-TOKEN" not in html and "hooks.example" in html, "a webhook's secret path"
    assert "alice" not in html and "bob" not in html, "user names"


def test_text_from_the_policy_is_escaped_and_the_page_calls_nothing(tmp_path):
    html = page(tmp_path)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "default-src 'none'" in html and "http://" not in html.replace("http-equiv", "")


def test_history_and_selftest(tmp_path):
    policy = tmp_path / "policy.yaml"
    engine_from(tmp_path, POLICY, LISTS)
    change = history.record(policy, "applied", "itadmin", "apply", version="2026-review",
                            lists={"adult": [0, 1]})
    result = policydoc.SelfTest("2026-12-06T10:00:00+00:00", "gateway:8080", 9, 1,
                                ("adult: allowed, expected blocked",))
    html = page(tmp_path, [change], result)
    text = text_of(html)
    assert "itadmin" in text and "adult: 0 → 1" in text
    assert "9 checks passed" in text and "1 not as the policy says" in text
    assert "adult: allowed, expected blocked" in text


def test_selftest_and_export_marks_read_back(tmp_path):
    policy = tmp_path / "policy.yaml"
    assert policydoc.read_selftest(policy) is None
    (tmp_path / policydoc.SELFTEST_FILE).write_text(json.dumps(
        {"time": "t", "proxy": "p", "passed": 3, "failed": 0}))
    assert policydoc.read_selftest(policy) == policydoc.SelfTest("t", "p", 3, 0)
    assert policydoc.last_export(policy) is None
    policydoc.mark_exported(policy, NOW)
    assert policydoc.last_export(policy) == NOW


def test_a_url_source_shows_its_address_without_the_query(tmp_path):
    remote = POLICY.replace(
        "social: {category: Social networking, severity: low, sources: [social.txt]}",
        "social: {category: Social networking, severity: low, sources: "
        "[{url: 'https://lists.example/feed.txt?key=PROVIDER-KEY', refresh: 6h}]}")
    assert remote != POLICY
    engine = engine_from(tmp_path, remote, LISTS)
    html = policydoc.render(engine, [], since=None, selftest=None, now=NOW)
    assert "https://lists.example/feed.txt" in html and "every 6 h" in html
    assert "PROVIDER-KEY" not in html


def test_the_review_says_whether_https_is_inspected_selectively(tmp_path):
    assert "every HTTPS connection inspected" in text_of(page(tmp_path / "all"))
    selective = POLICY + "tls: {inspect: selective, fronting: [cdn.example.net]}\n"
    engine = engine_from(tmp_path / "selective", selective, LISTS)
    text = text_of(policydoc.render(engine, (), since=None, selftest=None, now=NOW))
    assert "selective: connections to sites allowed" in text
    assert "1 more host(s) never passed through" in text


def test_each_downloaded_source_shows_its_last_download_and_last_error(tmp_path):
    """Sidecars as lists/remote.py writes them: a source that last succeeded, and one whose
    last attempt failed (its error quoting a URL with a key, which must not appear)."""
    from webpolicy.lists import remote as remote_lists

    text = POLICY.replace(
        "social: {category: Social networking, severity: low, sources: [social.txt]}",
        "social: {category: Social networking, severity: low, sources: "
        "[{url: 'https://lists.example/feed.txt?key=PROVIDER-KEY', refresh: 6h}, "
        "{ut1: 'https://dsi.ut-capitole.fr/blacklists/download/', categories: [chat], "
        "refresh: 24h}]}")
    engine = engine_from(tmp_path, text, LISTS)
    feed, chat = engine.policy.lists["social"].remote
    good = dt.datetime(2026, 12, 6, 8, 30, tzinfo=dt.UTC).timestamp()
    failed = dt.datetime(2026, 12, 7, 8, 45, tzinfo=dt.UTC).timestamp()
    for source, state in (
            (feed, remote_lists.SourceState(last_success=good, last_attempt=failed,
                                            last_error="cannot connect: https://lists.example"
                                                       "/feed.txt?key=PROVIDER-KEY refused",
                                            failures=2)),
            (chat, remote_lists.SourceState(last_success=good, last_attempt=good))):
        source.path.parent.mkdir(parents=True, exist_ok=True)
        remote_lists._write_state(source, state)
    html = policydoc.render(engine, [], since=None, selftest=None, now=NOW)
    words = " ".join(text_of(html).split())
    assert "last successful download: 06 Dec 2026 08:30 UTC" in words
    assert re.search(r"last error \(07 Dec 2026 08:45 UTC\): cannot connect: "
                     r"https://lists.example/feed.txt refused", words), words
    assert "PROVIDER-KEY" not in html
    assert "https://dsi.ut-capitole.fr/blacklists/download/ [UT1: chat]" in words
    assert "UT1 blacklists (Université Toulouse 1 Capitole)" in words
    assert "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/), downloaded 06 Dec " \
           "2026 08:30 UTC" in words
    never = policydoc.render(engine_from(tmp_path / "b", text, LISTS), [], since=None,
                             selftest=None, now=NOW)
    assert "last successful download: never" in " ".join(text_of(never).split())
