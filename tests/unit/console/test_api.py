"""The bearer-token API: 401 without a token, 403 for `it` on a safeguarding event."""

from __future__ import annotations

import json
from unittest import mock

from webpolicy.console.accounts import disable_user, new_token
from webpolicy.console.filters import CappedPaginator
from webpolicy.console.models import AccessLog, ApiToken, Case
from webpolicy.console.tokens import digest
from webpolicy.safeguarding.logstore import ReviewStore

from . import samples
from .base import ConsoleTest, on_postgresql


class ApiTest(ConsoleTest):
    def setUp(self) -> None:
        super().setUp()
        self.log(samples.record("WP-0000000001", minutes_ago=1),
                 samples.flagged("WP-0000000002", minutes_ago=20),
                 samples.fault("WP-0000000003", minutes_ago=10))
        self.dsl_token, self.it_token = new_token("dana"), new_token("ian")

    def get(self, url: str, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(url, headers=headers)

    def post(self, url: str, body, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = body if isinstance(body, str) else json.dumps(body)
        return self.client.post(url, data, content_type="application/json", headers=headers)

    def test_tokens_are_stored_as_digests_only(self):
        stored = set(ApiToken.objects.values_list("digest", flat=True))
        assert self.dsl_token not in stored and digest(self.dsl_token) in stored

    def test_no_token_or_a_wrong_one_is_401(self):
        for token in (None, "wpc_not-a-token"):
            response = self.get("/api/events", token)
            assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
        assert self.post("/api/events/WP-0000000001/review", {"status": "closed"}).status_code == 401
        self.client.force_login(self.dsl)                 # a session is not a token
        assert self.client.get("/api/events").status_code == 401

    def test_events_with_filters(self):
        data = self.get("/api/events", self.dsl_token).json()
        assert data["total"] == 3
        assert [e["reference"] for e in data["events"]] == ["WP-0000000002", "WP-0000000001",
                                                            "WP-0000000003"]
        data = self.get("/api/events?action=flagged&user=bob", self.dsl_token).json()
        assert [e["record"]["search_term"] for e in data["events"]] == ["how to self harm"]
        assert self.get("/api/events?severity=urgent", self.dsl_token).status_code == 400
        self.post("/api/events/WP-0000000001/review", {"status": "closed", "outcome": "other"},
                  self.dsl_token)
        data = self.get("/api/events?unreviewed=1", self.dsl_token).json()
        assert [e["reference"] for e in data["events"]] == ["WP-0000000002", "WP-0000000003"]
        assert self.get("/api/events", self.dsl_token).json()["total"] == 3     # all by default
        assert AccessLog.objects.filter(what="api-events", username="dana").count() == 4

    def test_total_counts_up_to_the_pages_cap(self):
        data = self.get("/api/events", self.dsl_token).json()
        assert (data["total"], data["total_capped"]) == (3, False)
        with mock.patch.object(CappedPaginator, "cap", 2):       # 3 events, a cap of 2
            data = self.get("/api/events?limit=500", self.dsl_token).json()
            assert (data["total"], data["total_capped"]) == (2, True)
            assert len(data["events"]) == 3                       # the page is not capped
            data = self.get("/api/events?action=flagged", self.dsl_token).json()
            assert (data["total"], data["total_capped"]) == (1, False)

    def test_one_event(self):
        data = self.get("/api/events/wp-0000000002", self.dsl_token).json()
        assert data["record"]["watchlist"]["term"] == "self harm" and data["case"] is None
        assert self.get("/api/events/WP-0000000099", self.dsl_token).status_code == 404

    def test_it_token_gets_faults_only(self):
        assert self.get("/api/events/WP-0000000002", self.it_token).status_code == 403
        assert self.get("/api/events/WP-0000000001", self.it_token).status_code == 403
        fault = self.get("/api/events/WP-0000000003", self.it_token).json()
        assert fault["record"]["category"] == "Filter unavailable"
        assert fault["record"]["search_term"] is None             # no learner's searches
        listed = self.get("/api/events?status=all", self.it_token).json()
        assert [e["reference"] for e in listed["events"]] == ["WP-0000000003"]
        response = self.post("/api/events/WP-0000000003/review", {"status": "closed",
                                                                  "outcome": "other"}, self.it_token)
        assert response.status_code == 403

    def test_review(self):
        response = self.post("/api/events/WP-0000000002/review",
                             {"status": "closed", "outcome": "concern_confirmed",
                              "note": "Parents informed"}, self.dsl_token)
        assert response.status_code == 200
        case = response.json()["case"]
        assert (case["status"], case["outcome"]) == ("closed", "concern_confirmed")
        assert case["notes"][0]["author"] == "dana"
        assert Case.objects.get(event__reference="WP-0000000002").status == "closed"
        assert "WP-0000000002" in ReviewStore(self.log_dir).load()
        for body in ("not json", "[1]", {"status": "done"}, {"outcome": "maybe"},
                     {"status": "closed"}):
            response = self.post("/api/events/WP-0000000001/review", body, self.dsl_token)
            assert response.status_code == 400, body
        assert not Case.objects.filter(event__reference="WP-0000000001").exists()

    def test_a_disabled_user_token_stops_working(self):
        disable_user("dana")
        assert self.get("/api/events", self.dsl_token).status_code == 401


ApiOnPostgreSQL = on_postgresql(ApiTest)
