"""The pages, through Django's test client: who sees what, cases, CSRF, export, access log."""

from __future__ import annotations

import csv
import io
import re
import shutil
from unittest import mock

from django.test import Client, override_settings
from webpolicy.console import ingest

from webpolicy.console.filters import CappedPaginator
from webpolicy.console.models import AccessLog, Case
from webpolicy.safeguarding.logstore import ReviewStore
from webpolicy.safeguarding.report import CSV_COLUMNS

from . import samples
from .base import ConsoleTest, on_postgresql


def references(response) -> list[str]:
    """References in page order (each row links its reference once)."""
    return references_in(response.content.decode())


def references_in(page: str) -> list[str]:
    return re.findall(r'<a href="/events/(WP-\w+)/">', page)


class PagesTest(ConsoleTest):
    def setUp(self) -> None:
        super().setUp()
        self.log(samples.record("WP-0000000001", minutes_ago=1),
                 samples.statutory("WP-0000000002", minutes_ago=30),
                 samples.flagged("WP-0000000003", minutes_ago=20),
                 samples.fault("WP-0000000004", minutes_ago=10),
                 samples.record("WP-0000000005", minutes_ago=3, user=None, client_ip="10.10.9.9",
                                device=None, profile="staff"))

    def test_pages_need_a_sign_in(self):
        for url in ("/", "/events/WP-0000000001/", "/person/?user=bob", "/export.csv",
                    "/access-log/"):
            response = self.client.get(url)
            assert response.status_code == 302 and response["Location"].startswith("/login/"), url

    def test_inbox_puts_statutory_critical_and_high_first_then_newest(self):
        self.sign_in(self.dsl)
        response = self.client.get("/")
        assert response.status_code == 200
        assert references(response) == ["WP-0000000002", "WP-0000000003", "WP-0000000001",
                                         "WP-0000000005", "WP-0000000004"]
        assert "how to self harm" in response.content.decode()

    def test_inbox_filters_like_the_report(self):
        self.sign_in(self.dsl)
        cases = {"user=BOB&action=flagged": ["WP-0000000003"],
                 "severity=high": ["WP-0000000002", "WP-0000000003"],
                 "client=10.10.9.0/24": ["WP-0000000005"],
                 "category=self-harm": ["WP-0000000003"],
                 "since=15m": ["WP-0000000001", "WP-0000000005", "WP-0000000004"],
                 "id=wp-0000000004": ["WP-0000000004"],
                 "profile=staff": ["WP-0000000005"]}
        for query, expected in cases.items():
            assert references(self.client.get(f"/?{query}")) == expected, query

    def test_a_long_list_counts_to_a_cap_and_says_more(self):
        """Counting stops at CappedPaginator.cap, so a page costs the same at a million."""
        self.sign_in(self.dsl)
        with mock.patch.object(CappedPaginator, "cap", 3):
            page = self.client.get("/").content.decode()
            assert "More than 3 events" in page and len(references_in(page)) == 3   # pages reach the cap
            page = self.client.get("/person/?user=Bob").content.decode()   # any case
            assert "More than 3 events" in page
            page = self.client.get("/?severity=high").content.decode()
            assert "2 event(s)" in page and "More than" not in page

    def test_a_mistyped_filter_says_so(self):
        self.sign_in(self.dsl)
        response = self.client.get("/?action=blokced&since=last+tuesday")
        text = response.content.decode()
        assert "unknown action blokced" in text and "is not a date" in text
        assert references(response) == []

    def test_closed_cases_leave_the_inbox(self):
        self.sign_in(self.dsl)
        response = self.client.post("/events/WP-0000000003/", {
            "status": "closed", "outcome": "referred", "note": "Referred to CAMHS"})
        assert response.status_code == 302
        assert "WP-0000000003" not in references(self.client.get("/"))
        assert "WP-0000000003" in references(self.client.get("/?status=closed"))
        page = self.client.get("/events/WP-0000000003/").content.decode()
        assert "Referred to CAMHS" in page and "Referred" in page
        review = ReviewStore(self.log_dir).load()["WP-0000000003"][0]
        assert (review.by, review.note) == ("dana", "Closed (Referred): Referred to CAMHS")

    def test_case_status_assignee_and_notes(self):
        self.sign_in(self.dsl)
        self.client.post("/events/WP-0000000001/", {"status": "in_progress", "outcome": "",
                                                    "assignee": self.dsl.pk, "note": "Looking"})
        case = Case.objects.get(event__reference="WP-0000000001")
        assert (case.status, case.assignee, case.notes.get().text) == (
            "in_progress", self.dsl, "Looking")
        response = self.client.post("/events/WP-0000000001/", {"status": "closed", "note": "x"})
        assert response.status_code == 200 and "say the outcome" in response.content.decode()
        assert Case.objects.get(pk=case.pk).status == "in_progress"

    def test_a_post_without_the_csrf_token_is_refused(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.dsl)
        response = client.post("/events/WP-0000000001/", {"status": "closed",
                                                          "outcome": "no_concern"})
        assert response.status_code == 403
        assert not Case.objects.exists()
        page = client.get("/events/WP-0000000001/").content.decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        response = client.post("/events/WP-0000000001/", {
            "status": "closed", "outcome": "no_concern", "csrfmiddlewaretoken": token})
        assert response.status_code == 302 and Case.objects.get().status == "closed"

    def test_it_sees_filter_faults_only_and_no_searches(self):
        self.sign_in(self.it)
        response = self.client.get("/?status=all")
        assert references(response) == ["WP-0000000004"]
        for reference in ("WP-0000000001", "WP-0000000002", "WP-0000000003"):
            assert self.client.get(f"/events/{reference}/").status_code == 404
        page = self.client.get("/events/WP-0000000004/").content.decode()
        assert "Filter unavailable" in page and "secret search" not in page
        assert "case-form" not in page                          # read only
        assert self.client.post("/events/WP-0000000004/", {
            "status": "closed", "outcome": "other"}).status_code == 403
        assert references(self.client.get("/person/?user=bob")) == ["WP-0000000004"]
        assert self.client.get("/export.csv").status_code == 403
        assert self.client.get("/access-log/").status_code == 403

    def test_an_account_without_a_role_sees_nothing(self):
        from django.contrib.auth import get_user_model
        nobody = get_user_model().objects.create_user("nobody", password="x")
        self.sign_in(nobody)
        assert self.client.get("/").status_code == 403

    def test_timeline_by_user_and_by_client_is_logged(self):
        self.sign_in(self.dsl)
        assert references(self.client.get("/person/?user=bob")) == [
            "WP-0000000001", "WP-0000000004", "WP-0000000003", "WP-0000000002"]
        assert references(self.client.get("/person/?client=10.10.9.9")) == ["WP-0000000005"]
        page = self.client.get("/person/?user=bob").content.decode()
        assert 'href="/export.csv?user=bob&amp;status=all"' in page
        AccessLog.objects.all().delete()
        self.client.get("/person/?user=bob")
        self.client.get("/person/?client=10.10.9.9")
        self.client.get("/events/WP-0000000002/")
        logged = list(AccessLog.objects.order_by("id").values_list("username", "what", "subject", "count"))
        assert logged == [("dana", "person", "user bob", 4), ("dana", "person", "client 10.10.9.9", 1),
                          ("dana", "event", "WP-0000000002 (bob)", 1)]
        page = self.client.get("/access-log/").content.decode()
        assert "user bob" in page and "WP-0000000002 (bob)" in page
        self.client.get("/?user=bob&severity=high")             # the inbox, filtered to bob
        assert AccessLog.objects.order_by("-id").values_list("what", "subject", "count")[0] == (
            "person", "user=bob; severity=high", 2)

    def test_export_is_the_cpoms_csv_of_the_filter_and_is_logged(self):
        self.sign_in(self.dsl)
        self.client.post("/events/WP-0000000003/", {"status": "closed", "outcome": "no_concern",
                                                    "note": "ok"})
        response = self.client.get("/export.csv?severity=high&status=all")
        assert response.status_code == 200
        assert response["Content-Disposition"].startswith("attachment;")
        body = b"".join(response.streaming_content)
        assert body.startswith(b"\xef\xbb\xbf")               # BOM, for Excel
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
        assert tuple(rows[0]) == CSV_COLUMNS
        assert [row[0] for row in rows[1:]] == ["WP-0000000002", "WP-0000000003"]
        flagged = dict(zip(rows[0], rows[2]))
        assert flagged["Reviewed"] == "yes" and "dana: ok" in flagged["Review notes"]
        access = AccessLog.objects.get(what="export")
        assert (access.count, "severity=high" in access.subject) == (2, True)

    def test_names_are_url_encoded_in_links(self):
        self.log(samples.record("WP-0000000006", user="o'neil & co"))
        self.sign_in(self.dsl)
        page = self.client.get("/person/", {"user": "o'neil & co"}).content.decode()
        assert references_in(page) == ["WP-0000000006"]
        assert "user=o%27neil+%26+co" in page

    def test_security_headers(self):
        response = self.client.get("/login/")
        csp = response["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "style-src 'self'" in csp
        assert "script-src" not in csp and "frame-ancestors 'none'" in csp
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert self.client.get("/console.css")["Content-Type"].startswith("text/css")


class TwoGatewaysPagesTest(ConsoleTest):
    """One console over two gateways' logs: both in one inbox, each event says its gateway."""

    def test_one_inbox_and_the_event_names_its_gateway(self):
        gw2 = self.log_dir.parent / (self.log_dir.name + "-gw2")
        self.addCleanup(shutil.rmtree, gw2, ignore_errors=True)
        samples.write(gw2, samples.record("WP-0000000002", user="carol", minutes_ago=2))
        self.log(samples.record("WP-0000000001", minutes_ago=1))
        self.sign_in(self.dsl)
        page = self.client.get("/events/WP-0000000001/").content.decode()
        assert 'id="gateway"' not in page                 # one directory: nothing to say
        with override_settings(WEBPOLICY_LOG_DIRS=[str(self.log_dir), str(gw2)]):
            ingest.reset_throttle()
            assert references(self.client.get("/")) == ["WP-0000000001", "WP-0000000002"]
            page = self.client.get("/events/WP-0000000002/").content.decode()
            assert f"<code>{gw2.resolve()}</code>" in page


PagesOnPostgreSQL = on_postgresql(PagesTest)
