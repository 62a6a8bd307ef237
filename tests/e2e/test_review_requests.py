"""A learner asks for a blocked site to be reviewed, end to end: real mitmdump, real Chromium
submitting the block page's form, the `review_requested` record in the safeguarding log, the
site never contacted, forgery refused (real curl from another client address), and the
request in the real console for an `it` account, who answers it."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from .browser import click_and_wait
from .conftest import UNKNOWN_IP

# test_console skips (importorskip) without Selenium, and so does this module with it.
from .test_console import PASSWORD, Console, _cli, make_driver, screenshot, sign_in  # isort: skip
from selenium.webdriver.common.by import By  # noqa: E402  isort: skip

pytestmark = pytest.mark.e2e

REVIEW_PATH = "/.webpolicy/review-request"


def test_a_learner_asks_and_it_sees_the_request_in_the_console(make_proxy, sites, tmp_path):
    proxy = make_proxy(name="review")
    before = sites.log.contacted("www.gambling.test")
    driver = make_driver(tmp_path, f"--proxy-server={proxy.url}")
    try:
        # Chromium (127.0.0.1: an unknown client, so a learner) is blocked, and asks.
        driver.get("http://www.gambling.test/slots")
        assert driver.title == "This page has been blocked"
        reference = driver.find_element(By.ID, "reference").text.strip()
        driver.find_element(By.ID, "reason").send_keys("Business studies: <b>risk</b> essay")
        driver.find_element(By.CSS_SELECTOR, "form.ask button").click()
        answer = driver.find_element(By.ID, "answer").text
        assert driver.title == "Your request was sent" and reference in answer

        (asked,) = proxy.records(1, lambda r: r["action"] == "review_requested")
        assert asked["request_for"] == reference and asked["host"] == "www.gambling.test"
        assert asked["client_ip"] == "127.0.0.1" and asked["profile"] == "learner"
        assert asked["reason"] == "Business studies: <b>risk</b> essay"
        assert "Chrome" in asked["user_agent"]
        # the form's post went no further than the gateway, and was not a second block
        assert sites.log.contacted("www.gambling.test") == before
        assert not [r for r in sites.log.requests_to("www.gambling.test")
                    if r.path.startswith("/.webpolicy")]
        assert [r["action"] for r in proxy.records(2)] == ["blocked", "review_requested"]

        # The same form from another device (a token copied off the page) is refused.
        page = proxy.curl("https://www.gambling.test/", "-H", "Accept: text/html",
                          client_ip="127.0.0.1")
        token = re.search(r'name="token" value="([^"]+)"', page.body).group(1)
        forged = proxy.curl(f"https://www.gambling.test{REVIEW_PATH}", "--data",
                            "token=" + urllib.parse.quote(token), client_ip=UNKNOWN_IP)
        assert forged.status == 403 and "another device" in forged.body
        assert len(proxy.records(4, lambda r: r["action"] == "review_requested",
                                 timeout=1.0)) == 1

        # IT sees it in the console, with the site, the category and who asked, and answers.
        done = _cli("users", "add", "ian", "--role", "it", "--password-stdin", "--log-dir",
                    str(proxy.log_dir), stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
        console = Console(proxy.directory)
        try:
            sign_in(driver, console, "ian")
            driver.get(console.url + "/review-requests/")
            row = driver.find_element(By.ID, f"request-{asked['id']}")
            assert "www.gambling.test" in row.text and "Gambling" in row.text
            assert reference in row.text and "risk" in row.text
            screenshot(driver, "review-requests")
            row.find_element(By.NAME, "note").send_keys("Will check the site")
            click_and_wait(driver, row.find_element(By.CSS_SELECTOR, "button[type=submit]"))
            driver.get(console.url + "/review-requests/?show=all")
            row = driver.find_element(By.ID, f"request-{asked['id']}")
            assert "Approved for review by ian" in row.text and "Will check the site" in row.text
            # answering unblocked nothing: the site is still refused
            assert proxy.curl("https://www.gambling.test/").status == 403
        finally:
            console.stop()
    finally:
        driver.quit()
