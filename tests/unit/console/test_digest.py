"""The digest's counts, and an e-mail that names nobody."""

from __future__ import annotations

from webpolicy.console import digest
from webpolicy.console.cases import update_case
from webpolicy.console.ingest import ingest
from webpolicy.console.models import AccessLog, Event

from . import samples
from .base import ConsoleTest


class DigestTest(ConsoleTest):
    def setUp(self) -> None:
        super().setUp()
        self.log(samples.record("WP-0000000001", minutes_ago=60),
                 samples.statutory("WP-0000000002", minutes_ago=50),
                 samples.flagged("WP-0000000003", minutes_ago=40, user="carol"),
                 samples.fault("WP-0000000004", minutes_ago=30),
                 samples.review_request("WP-00000000R1", "WP-0000000001", minutes_ago=20),
                 samples.record("WP-0000000005", minutes_ago=60 * 24 * 3, severity="high"))
        ingest(self.log_dir)
        update_case(Event.objects.get(reference="WP-0000000002"), "dana", "closed",
                    "referred", "")

    def counts(self, period: str) -> dict[str, int]:
        return {what: n for what, n, _ in digest.gather(period).counts}

    def test_a_day_and_a_week(self):
        day = self.counts("day")
        assert day == {"Events recorded": 3, "Statutory (CTIRU, IWF) blocks": 1,
                       "Critical or high severity": 2, "Flagged searches": 1,
                       "Filter faults": 1, "Cases closed": 1,
                       "Serious events still open (any date)": 2,
                       "Review requests waiting (any date)": 1}
        week = self.counts("week")
        assert week["Events recorded"] == 4 and week["Critical or high severity"] == 3

    def test_the_email_has_counts_and_links_and_no_names(self):
        found = digest.gather("week")
        email = digest.message(found, "https://console.college.test/", "Example College",
                               "filter@college.test", ("dsl@college.test",))
        assert email["Subject"] == "Weekly safeguarding digest: Example College"
        body = email.get_content()
        assert "https://console.college.test/review-requests/" in body
        assert "Events recorded" in body and "https://console.college.test/" in body
        for private in ("bob", "carol", "10.10.4.17", "Library PC", "gambling.test",
                        "self harm", "ctiru-host", "WP-0000"):
            assert private not in body and private not in email["Subject"], private
        digest.record_sent(found, 1)
        logged = AccessLog.objects.get(what="digest")
        assert "counts only" in logged.subject and logged.username == "webpolicy digest"
