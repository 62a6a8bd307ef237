"""Learners' review requests in the console: listed for IT and DSLs, answered once, recorded
in the access log, linked to the blocked attempt (for a DSL), and kept out of the inbox."""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.test import Client
from webpolicy.console.models import AccessLog, ReviewAnswer

from . import samples
from .base import ConsoleTest


class ReviewRequestsTest(ConsoleTest):
    def setUp(self) -> None:
        super().setUp()
        self.log(samples.record("WP-0000000001", minutes_ago=10),
                 samples.review_request("WP-00000000R1", "WP-0000000001", minutes_ago=9,
                                        reason="<script>alert(1)</script> for coursework"),
                 samples.statutory("WP-0000000002", minutes_ago=8))

    def test_it_sees_the_request_with_site_category_and_who_but_not_the_attempt(self):
        self.sign_in(self.it)
        page = self.client.get("/review-requests/").content.decode()
        row = re.search(r'<tr id="request-WP-00000000R1">(.*?)</tr>', page, re.S).group(1)
        assert "www.gambling.test" in row and "Gambling" in row and "bob" in row
        assert "Library PC 3" in row and "WP-0000000001" in row
        assert "&lt;script&gt;alert(1)&lt;/script&gt; for coursework" in row   # escaped
        assert 'href="/events/WP-0000000001/"' not in row     # `it` may not open the attempt
        assert self.client.get("/events/WP-0000000001/").status_code == 404
        assert AccessLog.objects.filter(username="ian", what="requests").exists()

    def test_a_dsl_is_linked_to_the_attempt_which_shows_the_request_and_its_answer(self):
        self.sign_in(self.dsl)
        page = self.client.get("/review-requests/").content.decode()
        assert 'href="/events/WP-0000000001/"' in page
        self.client.post("/review-requests/WP-00000000R1/answer",
                         {"decision": "declined", "note": "Gambling stays blocked"})
        attempt = self.client.get("/events/WP-0000000001/").content.decode()
        assert "asked for a review" in attempt and "Declined" in attempt
        assert "Gambling stays blocked" in attempt

    def test_an_answer_is_recorded_once_and_leaves_the_waiting_list(self):
        self.sign_in(self.it)
        response = self.client.post("/review-requests/WP-00000000R1/answer",
                                    {"decision": "approved", "note": "Checking the site"})
        assert response.status_code == 302
        answer = ReviewAnswer.objects.get()
        assert (answer.request.reference, answer.decision, answer.author, answer.note) == (
            "WP-00000000R1", "approved", "ian", "Checking the site")
        logged = AccessLog.objects.get(what="answer")
        assert logged.username == "ian" and "WP-0000000001" in logged.subject
        assert "Approved for review" in logged.subject
        again = self.client.post("/review-requests/WP-00000000R1/answer", {"decision": "declined"})
        assert again.status_code == 409 and ReviewAnswer.objects.get().decision == "approved"
        assert "WP-00000000R1" not in self.client.get("/review-requests/").content.decode()
        everything = self.client.get("/review-requests/?show=all").content.decode()
        assert "Approved for review" in everything and "Checking the site" in everything

    def test_bad_answers_and_unknown_requests_are_refused(self):
        self.sign_in(self.it)
        assert self.client.post("/review-requests/WP-00000000R1/answer",
                                {"decision": "unblocked"}).status_code == 400
        assert self.client.post("/review-requests/WP-0000000001/answer",   # not a request
                                {"decision": "approved"}).status_code == 404
        assert not ReviewAnswer.objects.exists()

    def test_answering_needs_the_csrf_token_and_a_role(self):
        strict = Client(enforce_csrf_checks=True)
        strict.force_login(self.dsl)
        assert strict.post("/review-requests/WP-00000000R1/answer",
                           {"decision": "approved"}).status_code == 403
        nobody = get_user_model().objects.create_user("norole", password="x" * 20)
        self.client.force_login(nobody)
        assert self.client.get("/review-requests/").status_code == 403
        assert not ReviewAnswer.objects.exists()

    def test_requests_stay_out_of_the_inbox_unless_asked_for(self):
        self.sign_in(self.dsl)
        inbox = self.client.get("/").content.decode()
        assert "WP-0000000001" in inbox and "WP-00000000R1" not in inbox
        asked = self.client.get("/?action=review_requested&status=all").content.decode()
        assert "WP-00000000R1" in asked
