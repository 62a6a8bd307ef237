"""The gateway's sign-in page in a real browser: headless Chromium (Selenium, Debian's
chromium and chromedriver) through real mitmdump, passwords checked by a real slapd.

The browser's address is on a network the policy marks as needing sign-in (sign_in.networks),
in forward-proxy mode.  Chromium trusts the proxy's CA through its certificate store, as a
managed device does (an NSS database in a throw-away HOME).  A person asks for a page, gets
the sign-in page, signs in and gets the page; the record names them with identified_by:
session; sign-out ends it; a second person signing in replaces the first; plain HTTP is
redirected to the page over HTTPS; statutory rules apply before sign-in; a directory that is
down is said to be.  Sessions are kept in SQLite beside the log, 0600."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest

from .browser import click_and_wait
from .ldapserver import PEOPLE, SERVICE_DN, SERVICE_PASSWORD
from .test_directory import POLICY as DIRECTORY_POLICY

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.e2e

BROWSER_IP = "127.0.0.1"        # Chromium reaches the proxy from here: must sign in
POLICY = DIRECTORY_POLICY.replace("lists:\n", """\
sign_in: {{networks: [{browser_ip}/32, 127.0.0.7/32], idle: 30m, max: 8h}}
block_page: {{organisation: E2E Test College}}
lists:
""", 1)


@pytest.fixture
def proxy(make_proxy, ldap, monkeypatch):
    monkeypatch.setenv("WEBPOLICY_TEST_LDAP_PASSWORD", SERVICE_PASSWORD)
    return make_proxy(policy=POLICY, ldap_url=ldap.url, service_dn=SERVICE_DN, cache_minutes=5,
                      browser_ip=BROWSER_IP)


@pytest.fixture
def browser(proxy, tmp_path):
    for tool in ("chromium", "chromedriver", "certutil"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: run scripts/install-system-deps.sh (as root)")
    home = tmp_path / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n",
                    "webpolicy gateway CA", "-i", str(proxy.ca_cert)], check=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--window-size=1000,760", f"--user-data-dir={tmp_path / 'profile'}",
                f"--proxy-server={proxy.url}"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"),
                                      env=dict(os.environ, HOME=str(home)))
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def site(driver) -> dict:
    """What the test site answered (it echoes its name and the path as JSON)."""
    text = driver.find_element(By.TAG_NAME, "body").text
    return json.loads(text[text.index("{"):])


def sign_in(driver, name: str, password: str | None = None) -> None:
    driver.find_element(By.ID, "username").clear()
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PEOPLE[name][0] if password is None
                                                     else password)
    submit(driver)


def submit(driver) -> None:
    """Press the form's button and wait for the answer to replace the page."""
    follow(driver, driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def follow(driver, element) -> None:
    """Click a button or link and wait until the page it leads to has replaced this one."""
    click_and_wait(driver, element)


def is_sign_in_page(driver) -> bool:
    return driver.title == "Sign in to use the web"


def test_sign_in_gets_the_page_and_names_the_person(proxy, browser, sites):
    contacted = sites.log.contacted("news.test")
    browser.get("https://news.test/story?id=3")
    assert is_sign_in_page(browser)
    assert "E2E Test College" in browser.page_source
    assert sites.log.contacted("news.test") == contacted      # nothing upstream before sign-in
    sign_in(browser, "sam", "not-the-password")
    assert is_sign_in_page(browser) and "not accepted" in browser.page_source, browser.page_source
    assert "not-the-password" not in browser.page_source
    sign_in(browser, "sam")
    assert browser.current_url == "https://news.test/story?id=3"
    answer = site(browser)
    assert (answer["site"], answer["path"]) == ("news.test", "/story?id=3")
    browser.get("https://www.gambling.test/")                  # staff: logged, not blocked
    assert site(browser)["site"] == "www.gambling.test"
    (record,) = proxy.records(wait_for=1,
                              where=lambda r: r["url"] == "https://www.gambling.test/")
    assert (record["user"], record["identified_by"], record["action"]) == \
        ("sam", "session", "logged")
    # passwords never reach a record, the proxy's output or an upstream request
    written = proxy.output + "".join(p.read_text() for p in proxy.log_dir.glob("*.jsonl"))
    assert PEOPLE["sam"][0] not in written and "not-the-password" not in written
    assert not any(PEOPLE["sam"][0] in json.dumps(r.__dict__)
                   for r in sites.log.requests_to("news.test"))
    store = proxy.log_dir / "sign-in-sessions.sqlite3"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


def test_sign_out_and_a_second_person(proxy, browser):
    browser.get("https://news.test/")
    sign_in(browser, "sam")
    assert site(browser)["site"] == "news.test"
    # the block page offers the way out: a shared PC must not stay signed in
    browser.get("https://ctiru-host.test/terror/page")         # blocked for everyone
    assert "Signed in as sam" in browser.page_source
    follow(browser, browser.find_element(By.LINK_TEXT, "Sign out"))
    assert "Signed in as sam" in browser.find_element(By.TAG_NAME, "body").text
    submit(browser)
    assert "You are signed out" in browser.page_source
    browser.get("https://news.test/")
    assert is_sign_in_page(browser)
    # sam again, then pat at the same PC without sam signing out: pat replaces sam
    sign_in(browser, "sam")
    browser.get("https://news.test/.webpolicy/sign-in")
    assert "sam is signed in on this device" in browser.page_source
    sign_in(browser, "pat")
    browser.get("https://www.gambling.test/")                  # pat is a learner: blocked
    assert "www.gambling.test" in browser.page_source and "Sign out" in browser.page_source
    records = proxy.records(wait_for=1,
                            where=lambda r: r["url"] == "https://www.gambling.test/")
    assert [(r["user"], r["identified_by"], r["action"]) for r in records] == \
        [("pat", "session", "blocked")]


def test_plain_http_is_redirected_to_the_page_over_https(proxy, browser):
    browser.get("http://news.test/plain?x=1")
    assert browser.current_url.startswith("https://news.test/.webpolicy/sign-in?next=")
    assert is_sign_in_page(browser)
    sign_in(browser, "nina")
    assert browser.current_url == "http://news.test/plain?x=1"
    assert site(browser)["path"] == "/plain?x=1"


def test_statutory_rules_apply_before_sign_in(proxy, sites):
    contacted = sites.log.contacted("ctiru-host.test")
    for url in ("https://ctiru-host.test/terror/page", "http://ctiru-host.test/terror/page"):
        result = proxy.curl(url, client_ip="127.0.0.7")
        assert result.status == 451 and ".webpolicy/sign-in" not in result.body
    assert sites.log.contacted("ctiru-host.test") == contacted
    records = proxy.records(wait_for=2, where=lambda r: r["statutory"])
    assert {(r["user"], r["identified_by"]) for r in records} == {(None, "network")}
    redirect = proxy.curl("http://news.test/", "-D", "-", client_ip="127.0.0.7")
    assert redirect.status == 302
    assert "location: https://news.test/.webpolicy/sign-in?next=http" in redirect.body.lower()
    # a client elsewhere still needs a proxy login
    assert proxy.curl("http://news.test/", client_ip="127.0.0.8").status == 407


def test_a_directory_that_is_down_is_said_to_be(proxy, browser, ldap):
    ldap.stop()
    browser.get("https://news.test/")
    sign_in(browser, "pat")
    assert is_sign_in_page(browser)
    assert "cannot check sign-ins" in browser.page_source


# -- transparent mode: a client in its own network namespace (netns.py) ------------------------

TRANSPARENT_POLICY = DIRECTORY_POLICY.replace("lists:\n", """\
sign_in: {{transparent: true}}
passthrough: [bank.test]
lists:
""", 1)


def test_transparent_clients_sign_in_on_the_page(tmp_path, ldap, monkeypatch):
    """No proxy settings at all: nftables sends the client's 80/443 to mitmdump.  HTTPS gets
    the page (a pass-through host too: a client that has not signed in is always
    intercepted), plain HTTP the redirect; the posted form starts the session."""
    import re

    from .conftest import write_policy
    from .netns import (
        LEARNER_NS_IP,
        STAFF_NS_IP,
        ClientNamespace,
        InternetSites,
        missing_tools,
    )
    from .proxy import Proxy, free_port
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("WEBPOLICY_TEST_LDAP_PASSWORD", SERVICE_PASSWORD)
    port = free_port()
    client = ClientNamespace(port).open()
    internet = proxy = None
    try:
        internet = InternetSites(tmp_path)
        policy_path, metrics_port = write_policy(tmp_path, TRANSPARENT_POLICY, ldap_url=ldap.url,
                                                 service_dn=SERVICE_DN, cache_minutes=5)
        proxy = Proxy(tmp_path, policy_path, free_port(), metrics_port, internet.hosts_file(),
                      internet.ca, ["--mode", "regular",
                                    "--mode", f"transparent@10.213.0.1:{port}"]).start()
        client.wait_for_listener("10.213.0.1", port)
        cacert = tmp_path / "trusted.pem"
        cacert.write_text(proxy.ca_cert.read_text() + internet.ca.read_text())
        news = internet.contacted("news.test")
        page = client.curl("https://news.test/a", cacert=cacert)
        assert page.status == 511 and "Sign in to use the web" in page.body, page
        redirect = client.curl("http://news.test/b", "-D", "-")
        assert redirect.status == 302
        assert "location: https://news.test/.webpolicy/sign-in?next=" in redirect.body.lower()
        bank = client.curl("https://bank.test/", cacert=cacert, source=STAFF_NS_IP)
        assert bank.status == 511, bank                   # intercepted, not passed through
        assert internet.contacted("news.test") == news and internet.contacted("bank.test") == 0
        token = re.search(r'name="token" value="([^"]+)"', page.body).group(1)
        signed = client.curl("https://news.test/.webpolicy/sign-in", "-D", "-",
                             "-H", "Origin: https://news.test",
                             "--data-urlencode", f"token={token}",
                             "--data-urlencode", "next=https://news.test/a",
                             "--data-urlencode", "username=sam",
                             "--data-urlencode", f"password={PEOPLE['sam'][0]}", cacert=cacert)
        assert signed.status == 303 and "location: https://news.test/a" in signed.body.lower()
        after = client.curl("https://news.test/a", cacert=cacert)
        assert after.status == 200 and '"site": "news.test"' in after.body, after
        gambling = client.curl("http://www.gambling.test/", cacert=cacert)
        assert gambling.status == 200                     # sam is staff: logged
        records = proxy.records(1, lambda r: r["host"] == "www.gambling.test")
        assert [(r["user"], r["identified_by"], r["client_ip"]) for r in records] == \
            [("sam", "session", LEARNER_NS_IP)]
        # the other address is still nobody's
        assert client.curl("https://news.test/", cacert=cacert,
                           source=STAFF_NS_IP).status == 511
    finally:
        if proxy is not None:
            proxy.stop()
        if internet is not None:
            internet.stop()
        client.close()


def test_raw_bytes_in_a_tunnel_wait_for_sign_in(proxy, sites):
    """No sign-in page can answer bytes that are not HTTP, so before sign-in they are refused:
    the site is never contacted (they used to be relayed, decided for the network)."""
    from .test_bypass import _settled, _tunnel
    before = sites.log.contacted("www.youtube.com")
    answer, rest = _tunnel(proxy, "www.youtube.com:80",
                           b"\r\nGET /raw HTTP/1.1\r\nHost: www.youtube.com\r\n\r\n",
                           client_ip="127.0.0.7")
    assert answer.startswith(b"HTTP/1.1 200")            # the tunnel: its HTTP gets the page
    assert b"HTTP/1.1 200" not in rest
    assert _settled(sites, "www.youtube.com", before) == before
