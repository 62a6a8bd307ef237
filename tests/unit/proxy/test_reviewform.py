"""The block page's "ask for a review" form, answered by the gateway itself: what it records,
what it refuses (forged, another client's, expired, too many, too big), and that the path is
never decided as a visit nor forwarded."""

from __future__ import annotations

import asyncio
import re
import urllib.parse

from mitmproxy import http
from mitmproxy.test import tutils
from webpolicy.proxy import reviewform
from webpolicy.proxy.blockpage import REVIEW_PATH
from webpolicy.safeguarding.reviewrequests import REASON_LIMIT, ReviewTokens

from tests.unit.proxy import test_addon
from tests.unit.proxy.test_addon import LEARNER_IP, records, request

BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"
addon = test_addon.addon                 # the add-on as mitmdump loads it (a fixture)


def blocked_page(addon, host="adult.example", client=LEARNER_IP) -> tuple[str, str]:
    """Block a browser's visit; (reference, the form's token)."""
    flow = request(host, client=client)
    flow.request.headers["accept"] = BROWSER
    addon.requestheaders(flow)
    page = flow.response.get_text()
    token = re.search(r'name="token" value="([^"]+)"', page)
    assert token, page
    return flow.response.headers["x-webpolicy-reference"], token.group(1)


def post(addon, token: str, reason: str = "", client=LEARNER_IP, host="adult.example",
         extra: bytes = b""):
    """The form posted through the proxy; the flow after requestheaders and request."""
    body = urllib.parse.urlencode({"token": token, "reason": reason}).encode() + extra
    req = tutils.treq(method=b"POST", host=host, port=443, path=REVIEW_PATH.encode(),
                      scheme=b"https", content=body, headers=http.Headers([
                          (b"host", host.encode()), (b"content-length", str(len(body)).encode()),
                          (b"content-type", b"application/x-www-form-urlencoded")]))
    flow = request(host, client=client)
    flow.request = req
    assert addon.requestheaders(flow) is None and flow.response is None   # body not read yet
    waiting = addon.request(flow)
    if waiting is not None:
        asyncio.run(waiting)
    return flow


def test_a_request_is_recorded_and_acknowledged_and_never_forwarded(addon, tmp_path):
    reference, token = blocked_page(addon)
    flow = post(addon, token, "I need it for my\nbusiness studies <b>project</b>\x00")
    assert flow.response.status_code == 200
    page = flow.response.get_text()
    assert "Your request was sent" in page and reference in page
    assert "default-src 'none'" in flow.response.headers["content-security-policy"]
    (asked,) = [r for r in records(tmp_path) if r["action"] == "review_requested"]
    assert asked["request_for"] == reference and asked["host"] == "adult.example"
    assert asked["client_ip"] == LEARNER_IP and asked["profile"] == "learner"
    assert asked["category"] and asked["severity"] is None and asked["id"] != reference
    assert asked["reason"] == "I need it for my business studies <b>project</b>"
    # the post itself was not decided as a visit: one block record, one request record
    assert [r["action"] for r in records(tmp_path)] == ["blocked", "review_requested"]


def test_the_reason_is_cut_to_its_limit(addon, tmp_path):
    _, token = blocked_page(addon)
    assert post(addon, token, "x" * 1000).response.status_code == 200
    (asked,) = [r for r in records(tmp_path) if r["action"] == "review_requested"]
    assert len(asked["reason"]) == REASON_LIMIT


def test_forged_foreign_and_expired_tokens_are_refused(addon, tmp_path):
    _, token = blocked_page(addon)
    payload, mac = token.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + mac
    assert post(addon, forged).response.status_code == 403
    assert post(addon, "").response.status_code == 403
    assert post(addon, token, client="10.10.0.6").response.status_code == 403   # another device
    other_key = ReviewTokens()                                # a restarted proxy's key
    assert post(addon, other_key.issue(addon.gate.review_tokens.ticket(token, LEARNER_IP))
                ).response.status_code == 403
    later = ReviewTokens(addon.gate.review_tokens._key, clock=lambda: 9e12)
    addon.gate.review_tokens = later
    assert post(addon, token).response.status_code == 403                # expired
    assert not [r for r in records(tmp_path) if r["action"] == "review_requested"]


def test_one_request_per_blocked_attempt_and_a_rate_per_client(addon, tmp_path):
    _, token = blocked_page(addon)
    assert post(addon, token).response.status_code == 200
    again = post(addon, token)
    assert again.response.status_code == 200 and "already asked" in again.response.get_text()
    for _ in range(reviewform.RATE_LIMIT - 1):
        assert post(addon, blocked_page(addon)[1]).response.status_code == 200
    assert post(addon, blocked_page(addon)[1]).response.status_code == 429
    asked = [r for r in records(tmp_path) if r["action"] == "review_requested"]
    assert len(asked) == reviewform.RATE_LIMIT
    # another client is not held back by this one
    assert post(addon, blocked_page(addon, client="10.10.0.6")[1],
                client="10.10.0.6").response.status_code == 200


def test_anything_but_a_small_post_is_answered_at_once(addon, tmp_path):
    flow = request("adult.example", REVIEW_PATH)
    assert addon.requestheaders(flow) is None and flow.response.status_code == 405
    _, token = blocked_page(addon)
    body = b"token=" + token.encode() + b"&reason=" + b"x" * reviewform.BODY_LIMIT
    req = tutils.treq(method=b"POST", host="adult.example", port=443,
                      path=REVIEW_PATH.encode(), scheme=b"https", content=body,
                      headers=http.Headers([(b"host", b"adult.example"),
                                            (b"content-length", str(len(body)).encode())]))
    flow = request("adult.example")
    flow.request = req
    addon.requestheaders(flow)
    assert flow.response.status_code == 413
    # on an allowed host too: the path is the gateway's, never the site's
    allowed = request("www.example.org", REVIEW_PATH)
    addon.requestheaders(allowed)
    assert allowed.response.status_code == 405


def test_http2_without_content_length_and_odd_bodies(addon, tmp_path):
    _, token = blocked_page(addon)

    def h2_post(body: bytes):
        req = tutils.treq(method=b"POST", host="adult.example", port=443,
                          path=REVIEW_PATH.encode(), scheme=b"https", content=body,
                          http_version=b"HTTP/2.0",
                          headers=http.Headers([(b"host", b"adult.example")]))
        flow = request("adult.example")
        flow.request = req
        assert addon.requestheaders(flow) is None and flow.response is None
        waiting = addon.request(flow)
        if waiting is not None:
            asyncio.run(waiting)
        return flow.response.status_code

    assert h2_post(b"token=" + token.encode() + b"&reason=" + b"x" * reviewform.BODY_LIMIT) == 413
    assert h2_post(b"a=1&b=2&c=3&d=4&e=5&token=" + token.encode()) == 400
    assert h2_post(b"token=" + urllib.parse.quote(token).encode()) == 200
    assert len([r for r in records(tmp_path) if r["action"] == "review_requested"]) == 1


def test_a_form_served_by_one_worker_is_accepted_by_another(addon, tmp_path, monkeypatch):
    """`webpolicy run --workers N`: the kernel may give the form's POST (a new connection) to
    another worker than the one that served the block page; each worker used to make its own
    key, so the learner was told the form "was not made by this gateway"."""
    from webpolicy.cli.supervisor import Supervisor
    from webpolicy.proxy.addon import WebPolicy
    spawned = []
    supervisor = Supervisor(["mitmdump"], 2, {},
                            spawn=lambda command, env: spawned.append(env) or object())
    supervisor.start()
    tokens = []
    for env in spawned:
        for name in ("WEBPOLICY_WORKER", "WEBPOLICY_WORKERS", "WEBPOLICY_FORM_KEY"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        tokens.append(WebPolicy().gate.review_tokens)
    addon.gate.review_tokens = tokens[0]              # the page from worker 0 ...
    _, token = blocked_page(addon)
    addon.gate.review_tokens = tokens[1]              # ... posted to worker 1
    assert post(addon, token).response.status_code == 200


def test_odd_bytes_in_the_form_and_headers_are_recorded_cleanly_or_refused(addon, tmp_path):
    """Whatever the learner sends, the answer is the gateway's, the hook raises nothing (no
    filter error), and a record that is written is plain text (the console, CSV and the
    terminal report show it)."""
    _, token = blocked_page(addon)
    odd = [b"token=" + token.encode() + b"&reason=%FF%FE%ED%A0%80=HYPERLINK(%22x%22)%1B[31m",
           b"token=" + token.encode() + b"&reason=" + b"\xff\xfe\x00\r\n" * 50,
           b"token=%00%FF&reason=x", b"\xff" * 100, b"token=" + b"A" * 3000 + b".x"]
    for body in odd:
        req = tutils.treq(method=b"POST", host="adult.example", port=443,
                          path=REVIEW_PATH.encode(), scheme=b"https", content=body,
                          headers=http.Headers([
                              (b"host", b"adult.example"),
                              (b"content-length", str(len(body)).encode()),
                              (b"user-agent", b"\xff\xfe<script>\x1b[2J\xed\xa0\x80")]))
        flow = request("adult.example")
        flow.request = req
        assert addon.requestheaders(flow) is None
        waiting = addon.request(flow)
        if waiting is not None:
            asyncio.run(waiting)
        assert flow.response is not None and flow.response.status_code in (200, 400, 403)
    assert addon.gate.metrics.filter_errors._value.get() == 0
    (asked,) = [r for r in records(tmp_path) if r["action"] == "review_requested"]
    for text in (asked["reason"], asked["user_agent"]):
        assert text.isprintable() and "\x1b" not in text
