"""The safeguarding console end to end: `webpolicy console` as a real process, driven in real
headless Chromium (Debian's chromium and chromedriver, through Selenium).

A log directory with sample records and accounts made by `webpolicy users add`; then what a
DSL does (sign in, find the record, close its case with an outcome and a note, export CSV),
what an `it` account cannot do, CSRF refusal and sign-in throttling, against the real server.
Screenshots of the inbox, a timeline and a case go to test-artifacts/ (docs/console-*.png with
WEBPOLICY_DOC_SCREENSHOTS=1, for the README).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .browser import click_and_wait
from .proxy import REPO, free_port

pytestmark = pytest.mark.e2e

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

from ..unit.console import samples  # noqa: E402
from ..unit.console.pgserver import PostgresServer  # noqa: E402
from ..unit.helpers import policy_yaml  # noqa: E402

ADDONS = REPO / "addons"
PASSWORD = "correct horse battery staple"
DOCS = REPO / "docs"
ARTIFACTS = REPO / "test-artifacts"


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webpolicy.cli.main", *args], input=stdin,
                          text=True, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ADDONS)})


class Console:
    """`webpolicy console` on a free loopback port, with its log directory."""

    def __init__(self, home: Path, *options: str, ready: str = "/login/",
                 policy: Path | None = None):
        self.home, self.log_dir = home, home / "logs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = open(home / "console.out", "w")
        where = ["--policy", str(policy)] if policy else ["--log-dir", str(self.log_dir)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "webpolicy.cli.main", "console", *where,
             "--listen", f"127.0.0.1:{self.port}", *options],
            stdout=self.output, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ADDONS)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (home / "console.out").read_text()
            try:
                if httpx.get(self.url + ready, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the console did not start: " + (home / "console.out").read_text())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.output.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    home = tmp_path_factory.mktemp("console")
    samples.write(home / "logs",
                  samples.record("WP-E2E0000001", minutes_ago=40),
                  samples.statutory("WP-E2E0000002", minutes_ago=30),
                  samples.flagged("WP-E2E0000003", minutes_ago=20),
                  samples.fault("WP-E2E0000004", minutes_ago=10),
                  samples.record("WP-E2E0000005", minutes_ago=5, user="carol",
                                 category="Social networking", list="social", action="logged",
                                 severity="low", host="social.test", url="https://social.test/"))
    for name, role in (("dana", "dsl"), ("ian", "it"), ("tess", "dsl")):
        done = _cli("users", "add", name, "--role", role, "--password-stdin", "--log-dir",
                    str(home / "logs"), stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
    running = Console(home)
    yield running
    running.stop()


def make_driver(tmp_path: Path, *extra: str):
    """Headless Chromium under Selenium (extra: more Chromium switches, e.g. a proxy)."""
    for tool in ("chromium", "chromedriver"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: run scripts/install-system-deps.sh (as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--window-size=1200,760",
                f"--user-data-dir={tmp_path / 'profile'}", *extra):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(tmp_path / "downloads"),
        "download.prompt_for_download": False})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(5)
    driver.downloads = tmp_path / "downloads"
    return driver


@pytest.fixture
def browser(tmp_path):
    driver = make_driver(tmp_path)
    yield driver
    driver.quit()


def sign_in(driver, console: Console, name: str, password: str = PASSWORD) -> None:
    driver.get(console.url + "/login/")
    driver.find_element(By.ID, "id_username").send_keys(name)
    driver.find_element(By.ID, "id_password").send_keys(password)
    click_and_wait(driver, driver.find_element(By.ID, "sign-in"))


def references(driver) -> list[str]:
    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#events td:nth-child(2) a")]


def screenshot(driver, name: str) -> None:
    """Into test-artifacts/; WEBPOLICY_DOC_SCREENSHOTS=1 refreshes the pictures in docs/."""
    where = DOCS if os.environ.get("WEBPOLICY_DOC_SCREENSHOTS") == "1" else ARTIFACTS
    where.mkdir(exist_ok=True)
    driver.save_screenshot(str(where / f"console-{name}.png"))


def test_a_dsl_finds_closes_and_exports(console, browser):
    sign_in(browser, console, "dana")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Inbox"
    assert references(browser)[:2] == ["WP-E2E0000002", "WP-E2E0000003"]   # statutory, high
    screenshot(browser, "inbox")

    browser.find_element(By.LINK_TEXT, "bob").click()                      # the timeline
    assert "Timeline: bob" in browser.find_element(By.TAG_NAME, "h1").text
    assert "WP-E2E0000005" not in references(browser)                      # carol's
    screenshot(browser, "timeline")

    browser.find_element(By.LINK_TEXT, "WP-E2E0000003").click()
    assert "how to self harm" in browser.page_source
    Select(browser.find_element(By.ID, "id_status")).select_by_value("closed")
    Select(browser.find_element(By.ID, "id_outcome")).select_by_value("no_concern")
    browser.find_element(By.ID, "id_note").send_keys("Research for a PSHE lesson; tutor told")
    click_and_wait(browser, browser.find_element(By.ID, "save-case"))
    assert browser.find_element(By.ID, "case-status").text == "Closed"
    assert browser.find_element(By.ID, "case-outcome").text == "No concern"
    assert "Research for a PSHE lesson" in browser.find_element(By.ID, "notes").text
    screenshot(browser, "case")

    browser.get(console.url + "/")
    assert "WP-E2E0000003" not in references(browser)                      # closed: done
    Select(browser.find_element(By.ID, "id_status")).select_by_value("all")
    browser.find_element(By.ID, "export").click()
    rows = _downloaded_csv(browser.downloads)
    refs = {row["Reference"]: row for row in rows}
    assert set(refs) == {f"WP-E2E000000{i}" for i in range(1, 6)}
    assert refs["WP-E2E0000003"]["Reviewed"] == "yes"
    assert "Research for a PSHE lesson" in refs["WP-E2E0000003"]["Review notes"]

    # the command line agrees: the closed case is a review in reviews.jsonl
    reviews = [json.loads(line) for line in (console.log_dir / "reviews.jsonl").read_text().splitlines()]
    assert [(r["id"], r["by"]) for r in reviews] == [("WP-E2E0000003", "dana")]

    browser.get(console.url + "/access-log/")
    log = browser.find_element(By.ID, "access").text
    assert "person" in log and "user bob" in log and "export" in log and "WP-E2E0000003" in log


def _downloaded_csv(directory: Path) -> list[dict]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done = [p for p in directory.glob("*.csv")] if directory.exists() else []
        if done:
            text = done[0].read_text(encoding="utf-8-sig")
            return list(csv.DictReader(io.StringIO(text)))
        time.sleep(0.2)
    raise AssertionError("no CSV was downloaded")


def test_new_records_appear_within_five_seconds(console, browser):
    sign_in(browser, console, "dana")
    samples.write(console.log_dir, samples.record("WP-E2E0000006", minutes_ago=0, user="dave"))
    deadline = time.monotonic() + 5
    while "WP-E2E0000006" not in references(browser):
        assert time.monotonic() < deadline, "the new record did not appear within 5 s"
        time.sleep(0.5)
        browser.refresh()


def test_it_cannot_open_a_learners_event(console, browser):
    sign_in(browser, console, "ian")
    assert references(browser) == ["WP-E2E0000004"]                          # the fault only
    browser.get(console.url + "/events/WP-E2E0000003/")
    assert "how to self harm" not in browser.page_source
    assert "Not Found" in browser.page_source or "not found" in browser.page_source.lower()
    browser.get(console.url + "/events/WP-E2E0000004/")
    assert "Filter unavailable" in browser.page_source
    assert "secret search" not in browser.page_source
    assert not browser.find_elements(By.ID, "case-form")


def test_a_post_without_csrf_token_is_refused(console):
    with httpx.Client(base_url=console.url) as client:
        page = client.get("/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        assert client.post("/login/", data={"username": "dana", "password": PASSWORD,
                                            "csrfmiddlewaretoken": token}).status_code == 302
        response = client.post("/events/WP-E2E0000001/", data={"status": "closed",
                                                                "outcome": "other"})
        assert response.status_code == 403
        reviews = console.log_dir / "reviews.jsonl"
        assert not reviews.exists() or "WP-E2E0000001" not in reviews.read_text()
        api = client.get("/api/events/WP-E2E0000001")      # the session is no API token
        assert api.status_code == 401


def test_repeated_failed_sign_ins_are_throttled(console, browser):
    for _ in range(5):
        sign_in(browser, console, "tess", "not the password")
    assert browser.find_elements(By.ID, "locked")
    sign_in(browser, console, "tess")                                       # the right one
    assert browser.find_elements(By.ID, "locked")
    browser.get(console.url + "/")
    assert "/login/" in browser.current_url


def test_behind_an_https_reverse_proxy(tmp_path):
    """--https: the proxy's X-Forwarded-Proto (from the trusted address) makes requests
    secure, cookies are Secure and HSTS is sent; a plain-HTTP request is sent to HTTPS."""
    running = Console(tmp_path, "--https", "--allowed-host", "dsl.college.example",
                      "--origin", "https://dsl.college.example")
    try:
        via_proxy = {"Host": "dsl.college.example", "X-Forwarded-Proto": "https",
                     "X-Forwarded-For": "192.0.2.10"}
        response = httpx.get(running.url + "/login/", headers=via_proxy)
        assert response.status_code == 200
        assert "Secure" in response.headers["set-cookie"]
        assert response.headers["strict-transport-security"].startswith("max-age=31536000")
        plain = httpx.get(running.url + "/login/", headers={"Host": "dsl.college.example"})
        assert plain.status_code == 301
        assert plain.headers["location"] == "https://dsl.college.example/login/"
        other = httpx.get(running.url + "/login/", headers={**via_proxy, "Host": "evil.example"})
        assert other.status_code == 400                       # not an allowed host
    finally:
        running.stop()


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.stop()


def _until(check, what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.25)


def test_on_postgresql_the_cli_and_the_console_share_one_store(postgres, tmp_path):
    """policy.yaml's console.database names a real PostgreSQL server, its password in a file
    the policy names: `users add`, the console, `webpolicy review`, `erase` and retention all
    reach that database, and no SQLite file is made."""
    import psycopg

    from ..unit.console.pgserver import PASSWORD
    url = postgres.create_database("console_e2e")
    secret = tmp_path / "db-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    (tmp_path / "gambling.txt").write_text("gambling.test\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(
        learner={"block": ["gambling"]}, staff={"block": []}, lists=["gambling"],
        extra=f"logging: {{directory: logs}}\nconsole: {{database: '{url}', "
              f"database_password_file: db-password}}\n"))
    old = samples.record("WP-E2EPG00009", minutes_ago=3 * 24 * 60, user="olga")
    samples.write(tmp_path / "logs", samples.record("WP-E2EPG00001", minutes_ago=9),
                  samples.record("WP-E2EPG00002", minutes_ago=8, user="carol"),
                  samples.flagged("WP-E2EPG00003", minutes_ago=7), old)
    at = ["--policy", str(policy)]
    done = _cli("users", "add", "dana", "--role", "dsl", "--password-stdin", *at,
                stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    token = _cli("users", "token", "dana", *at).stdout.strip()
    database = psycopg.connect(url, password=PASSWORD, autocommit=True)

    def count(sql: str, *args) -> int:
        return database.execute(sql, args).fetchone()[0]

    assert count("SELECT count(*) FROM auth_user WHERE username = 'dana'") == 1
    running = Console(tmp_path, policy=policy)
    try:
        api = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {token}"})
        assert api.get("/api/events").json()["total"] == 4
        assert count("SELECT count(*) FROM console_event") == 4
        assert url in (tmp_path / "console.out").read_text()
        assert not list(tmp_path.glob("*.sqlite3*"))

        # a review on the command line closes the case in the console ...
        done = _cli("review", "WP-E2EPG00001", "--note", "Spoke to bob", "--by", "mrs.k", *at)
        assert done.returncode == 0, done.stderr
        _until(lambda: (api.get("/api/events/WP-E2EPG00001").json().get("case") or {})
               .get("status") == "closed", "the CLI review did not reach the console")
        notes = api.get("/api/events/WP-E2EPG00001").json()["case"]["notes"]
        assert [(n["author"], n["text"]) for n in notes] == [("mrs.k", "Spoke to bob")]
        # ... and one closed in the console is reviewed for the command line
        closed = api.post("/api/events/WP-E2EPG00003/review",
                          json={"status": "closed", "outcome": "no_concern", "note": "PSHE"})
        assert closed.status_code == 200, closed.text
        report = _cli("report", "--unreviewed", "--json", *at)
        assert [r["id"] for r in json.loads(report.stdout)] == ["WP-E2EPG00009", "WP-E2EPG00002"]

        # erasure and retention reach the PostgreSQL database
        done = _cli("erase", "--user", "carol", "--yes", *at)
        assert done.returncode == 0, done.stderr
        _until(lambda: api.get("/api/events/WP-E2EPG00002").status_code == 404,
               "the erased record is still in the console")
        (tmp_path / "logs" / f"webpolicy-{old['time'][:10]}.jsonl").unlink()   # retention
        _until(lambda: api.get("/api/events/WP-E2EPG00009").status_code == 404,
               "the expired record is still in the console")
        assert count("SELECT count(*) FROM console_event WHERE \"user\" IN ('carol', 'olga')") == 0
        assert count("SELECT count(*) FROM console_event") == 2
    finally:
        database.close()
        running.stop()
