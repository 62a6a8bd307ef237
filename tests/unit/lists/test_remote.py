"""lists/remote.py against a real local HTTPS server with a throwaway CA (listserver.py).

For every kind of download (good, 404, 500, timeout, cut short, truncated gzip, an HTML page
with status 200, a list that lost 90% of its entries, one that grew, a bad checksum) the last
good copy and its sidecar say the right thing."""

from __future__ import annotations

import gzip
import hashlib
import json
import stat
import threading
import time
from pathlib import Path

import pytest

from tests.unit.lists.listserver import ConnectProxy, ListServer, Reply, domains, gzipped
from webpolicy.lists import remote
from webpolicy.lists.remote import RemoteSource, SourceState, due, fetch, read_state


@pytest.fixture
def server(tmp_path: Path):
    with ListServer(tmp_path) as server:
        yield server


def source_for(server: ListServer, tmp_path: Path, path: str = "/list.txt",
               **options) -> RemoteSource:
    options.setdefault("ca", server.ca)
    return RemoteSource(list="adult", url=server.url(path),
                        path=tmp_path / "sources" / "adult" / "copy.txt", format="domains",
                        **options)


def sidecar(source: RemoteSource) -> dict:
    return json.loads(remote.sidecar_path(source).read_text())


def good_copy(server, tmp_path, count=100, **options) -> RemoteSource:
    server.replies["/list.txt"] = Reply(body=domains(count).encode())
    source = source_for(server, tmp_path, **options)
    first = fetch(source)
    assert first.result == "updated", first
    return source


# -- good downloads ------------------------------------------------------------------------

def test_a_good_list_becomes_the_last_good_copy_with_its_sidecar(server, tmp_path):
    server.replies["/list.txt"] = Reply(body=domains(100).encode())
    source = source_for(server, tmp_path)
    before = time.time()
    outcome = fetch(source)
    assert outcome.result == "updated" and outcome.ok
    assert "100 entries" in outcome.message
    assert source.path.read_text() == domains(100)
    assert stat.S_IMODE(source.path.stat().st_mode) == 0o644
    state = sidecar(source)
    assert state["url"] == source.url and state["list"] == "adult"
    assert state["last_success"] >= before and state["last_attempt"] >= before
    assert state["last_error"] == "" and state["failures"] == 0 and state["entries"] == 100
    assert state["sha256"] == hashlib.sha256(domains(100).encode()).hexdigest()
    assert not list(source.path.parent.glob(".*.tmp")), "no temporary file left behind"


def test_a_list_that_grew_replaces_the_copy(server, tmp_path):
    source = good_copy(server, tmp_path, 100)
    server.replies["/list.txt"] = Reply(body=domains(250).encode())
    outcome = fetch(source)
    assert outcome.result == "updated" and "250 entries (was 100)" in outcome.message
    assert source.path.read_text() == domains(250)
    assert sidecar(source)["entries"] == 250


def test_a_gzip_file_and_a_gzip_content_encoding_are_stored_as_text(server, tmp_path):
    server.replies["/list.txt.gz"] = Reply(body=gzipped(domains(30)))
    server.replies["/encoded.txt"] = Reply(body=gzipped(domains(40)),
                                           headers={"Content-Encoding": "gzip"})
    file = source_for(server, tmp_path, "/list.txt.gz")
    assert fetch(file).result == "updated"
    assert file.path.read_text() == domains(30)
    encoded = RemoteSource(list="other", url=server.url("/encoded.txt"), ca=server.ca,
                           path=tmp_path / "other.txt", format="domains")
    assert fetch(encoded).result == "updated"
    assert encoded.path.read_text() == domains(40)
    assert server.requests[-1][1]["Accept-Encoding"] == "gzip"


def test_an_etag_makes_the_next_download_conditional(server, tmp_path):
    server.replies["/list.txt"] = Reply(body=domains(10).encode(), etag='"v1"')
    source = source_for(server, tmp_path)
    assert fetch(source).result == "updated"
    inode = source.path.stat().st_ino
    first_success = sidecar(source)["last_success"]
    time.sleep(0.01)
    outcome = fetch(source)
    assert outcome.result == "unchanged", outcome
    assert server.requests[-1][1]["If-None-Match"] == '"v1"'
    assert source.path.stat().st_ino == inode, "an unchanged list is not rewritten"
    assert sidecar(source)["last_success"] > first_success
    forced = fetch(source, force=True)
    assert forced.result == "unchanged" and "same as the last good copy" in forced.message
    assert "If-None-Match" not in server.requests[-1][1]


def test_a_published_checksum_is_checked(server, tmp_path):
    body = domains(20).encode()
    server.replies["/list.txt"] = Reply(body=body)
    server.replies["/list.txt.sha256"] = Reply(
        body=f"{hashlib.sha256(body).hexdigest()}  list.txt\n".encode())
    server.replies["/wrong.sha256"] = Reply(body=b"0" * 64 + b"\n")
    source = source_for(server, tmp_path, sha256_url=server.url("/list.txt.sha256"))
    assert fetch(source).result == "updated"
    wrong = source_for(server, tmp_path, sha256_url=server.url("/wrong.sha256"))
    server.replies["/list.txt"] = Reply(body=domains(25).encode())
    outcome = fetch(wrong)
    assert outcome.result == "refused" and "does not match the published checksum" in outcome.message
    assert wrong.path.read_text() == domains(20)


def test_a_bearer_token_comes_from_the_environment(server, tmp_path, monkeypatch):
    server.replies["/list.txt"] = Reply(body=domains(5).encode())
    source = source_for(server, tmp_path, token_env="WEBPOLICY_TEST_TOKEN")
    monkeypatch.delenv("WEBPOLICY_TEST_TOKEN", raising=False)
    missing = fetch(source)
    assert missing.result == "failed" and "WEBPOLICY_TEST_TOKEN" in missing.message
    monkeypatch.setenv("WEBPOLICY_TEST_TOKEN", "s3cret-token")
    assert fetch(source).result == "updated"
    assert server.requests[-1][1]["Authorization"] == "Bearer s3cret-token"
    assert "s3cret-token" not in remote.sidecar_path(source).read_text()


# -- downloads that fail: the last good copy stays -----------------------------------------

@pytest.mark.parametrize("reply, result, reason", [
    (Reply(404, b"not found"), "failed", "HTTP 404"),
    (Reply(500, b"oops"), "failed", "HTTP 500"),
    (Reply(body=b"<!DOCTYPE html>\n<html><body>Please sign in</body></html>\n"), "refused",
     "an HTML page"),
    (Reply(body=b"site1.example\n", headers={"Content-Type": "text/html"}), "refused",
     "an HTML page"),
    (Reply(body=gzipped(domains(100))[:-40]), "refused", "truncated"),
    (Reply(body=domains(10).encode()), "refused", "90% lost"),
    (Reply(body=b""), "refused", "empty"),
    (Reply(body=b"\n".join([b"this is not a domain!"] * 20) + b"\nok.example\n"), "refused",
     "more bad lines"),
    (Reply(body=domains(100).encode()[:500], length=len(domains(100))), "failed", ""),
], ids=["404", "500", "html", "html-type", "truncated-gzip", "shrunk-90%", "empty",
        "garbage", "cut-short"])
def test_a_bad_download_keeps_the_last_good_copy_and_says_why(server, tmp_path, reply, result,
                                                               reason):
    source = good_copy(server, tmp_path, 100)
    good = sidecar(source)
    server.replies["/list.txt"] = reply
    time.sleep(0.01)
    outcome = fetch(source)
    assert outcome.result == result and not outcome.ok, outcome
    assert reason in outcome.message
    assert "the last good copy (100 entries) stays in force" in outcome.message
    assert source.path.read_text() == domains(100)
    state = sidecar(source)
    assert state["last_success"] == good["last_success"]
    assert state["last_attempt"] > good["last_attempt"]
    assert state["last_error"] and reason in state["last_error"]
    assert state["failures"] == 1 and state["entries"] == 100
    assert not list(source.path.parent.glob(".*.tmp"))


def test_a_timeout_fails_and_keeps_the_copy(server, tmp_path):
    source = good_copy(server, tmp_path, 100)
    server.replies["/list.txt"] = Reply(body=domains(200).encode(), delay=2.0)
    outcome = fetch(source, timeout=0.5)
    assert outcome.result == "failed" and "timed out" in outcome.message
    assert source.path.read_text() == domains(100)
    assert "timed out" in sidecar(source)["last_error"]


def test_an_untrusted_certificate_is_refused_with_a_hint(server, tmp_path):
    server.replies["/list.txt"] = Reply(body=domains(5).encode())
    source = RemoteSource(list="adult", url=server.url("/list.txt"), path=tmp_path / "c.txt")
    outcome = fetch(source)
    assert outcome.result == "failed" and "not trusted" in outcome.message
    assert "ca:" in outcome.message and not source.path.exists()


def test_a_shrink_can_be_accepted_once_by_the_admin(server, tmp_path):
    source = good_copy(server, tmp_path, 100)
    server.replies["/list.txt"] = Reply(body=domains(10).encode())
    assert fetch(source).result == "refused"
    accepted = fetch(source, accept_shrink=True)
    assert accepted.result == "updated" and sidecar(source)["entries"] == 10
    assert sidecar(source)["failures"] == 0 and sidecar(source)["last_error"] == ""


def test_max_shrink_is_per_source(server, tmp_path):
    source = good_copy(server, tmp_path, 100, max_shrink=0.95)
    server.replies["/list.txt"] = Reply(body=domains(10).encode())
    assert fetch(source).result == "updated"


def test_a_cold_start_failure_leaves_no_copy_and_says_the_list_fails_closed(server, tmp_path):
    server.replies["/list.txt"] = Reply(500, b"down")
    source = source_for(server, tmp_path)
    outcome = fetch(source)
    assert outcome.result == "failed" and "fail closed" in outcome.message
    assert not source.path.exists()
    state = read_state(source)
    assert state.last_success is None and state.failures == 1 and state.age() is None


def test_a_second_fetcher_of_the_same_source_waits_its_turn(server, tmp_path):
    server.replies["/list.txt"] = Reply(body=domains(5).encode(), delay=1.0)
    source = source_for(server, tmp_path)
    results = []
    first = threading.Thread(target=lambda: results.append(fetch(source).result))
    first.start()
    time.sleep(0.3)
    second = fetch(source)
    first.join()
    assert second.result == "busy" and results == ["updated"]


# -- the schedule --------------------------------------------------------------------------

class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("jitter", [0.0, 1.0])
def test_a_failing_source_backs_off_exponentially_to_a_cap_with_jitter(server, tmp_path,
                                                                      jitter):
    """A fake clock and fixed jitter: the waits after each failure in a row are 1, 2, 4, ...
    minutes (halved at most by jitter), capped at 6 h for a source with a good copy; a
    success clears the backoff."""
    source = good_copy(server, tmp_path, 10, refresh=24 * 3600)
    server.replies["/list.txt"] = Reply(500, b"down")
    clock = FakeClock(1_000_000.0)
    waits = []
    for _ in range(12):
        outcome = fetch(source, clock=clock, rand=lambda: jitter)
        assert outcome.result == "failed"
        due_at = remote.next_due(source, read_state(source))
        waits.append(due_at - clock.now)
        assert not due(source, read_state(source), due_at - 1)
        assert due(source, read_state(source), due_at)
        clock.now = due_at
    factor = 0.5 + 0.5 * jitter
    expected = [min(60 * 2 ** n, 6 * 3600) * factor for n in range(12)]
    assert waits == pytest.approx(expected)
    assert sidecar(source)["next_attempt"] == pytest.approx(clock.now)
    server.replies["/list.txt"] = Reply(body=domains(10).encode())
    assert fetch(source, clock=clock).ok
    state = read_state(source)
    assert state.next_attempt is None and state.failures == 0
    assert remote.next_due(source, state) == clock.now + 24 * 3600


def test_backoff_caps_at_the_refresh_and_at_five_minutes_without_a_copy(tmp_path):
    hourly = RemoteSource(list="a", url="https://x.test/l", path=tmp_path / "l.txt",
                          refresh=3600)
    quick = RemoteSource(list="a", url="https://x.test/l", path=tmp_path / "l.txt", refresh=2)
    full = lambda: 1.0                                    # noqa: E731 - no jitter
    assert [remote.backoff(n, hourly, True, full) for n in (1, 2, 6, 7, 20)] == \
        [60, 120, 1920, 3600, 3600]
    assert [remote.backoff(n, hourly, False, full) for n in (1, 3, 4, 9)] == [60, 240, 300, 300]
    assert remote.backoff(5, quick, True, full) == 2, "never slower than its own refresh"
    assert remote.backoff(1, hourly, True, lambda: 0.0) == 30
    assert remote.backoff(10_000, hourly, True, full) == 3600


def test_due_follows_refresh_and_retries_a_failure_sooner(tmp_path):
    source = RemoteSource(list="a", url="https://x.test/l", path=tmp_path / "l.txt",
                          refresh=6 * 3600)
    assert due(source, SourceState())                        # never tried
    now = 1_000_000.0
    tried = SourceState(last_attempt=now - 600, last_success=now - 600)
    assert due(source, tried, now), "no copy on disk: retried after RETRY_AFTER"
    source.path.write_text("a.example\n")
    assert not due(source, tried, now)
    assert due(source, SourceState(last_attempt=now - 6 * 3600), now)
    assert due(source, SourceState(last_attempt=now - 301, failures=1), now)
    assert not due(source, SourceState(last_attempt=now - 100, failures=1), now)


def test_the_refresher_fetches_what_is_due_and_reports(server, tmp_path):
    server.replies["/list.txt"] = Reply(body=domains(3).encode())
    source = source_for(server, tmp_path, refresh=1.0)
    reports = []
    refresher = remote.Refresher(lambda: [source], lambda states, outcomes:
                                 reports.append((states, outcomes))).start()
    try:
        deadline = time.time() + 10
        while not source.path.exists() and time.time() < deadline:
            time.sleep(0.05)
        server.replies["/list.txt"] = Reply(body=domains(7).encode())
        while "site6.example" not in source.path.read_text() and time.time() < deadline:
            time.sleep(0.1)
    finally:
        refresher.stop()
    assert source.path.read_text() == domains(7)
    assert not refresher._thread.is_alive()
    outcomes = [o for _, found in reports for o in found]
    assert [o.result for o in outcomes].count("updated") == 2
    states = reports[-1][0]
    assert states[0][0] == source and states[0][1].entries in (3, 7)


def test_a_read_state_of_another_url_is_not_this_sources(tmp_path):
    source = RemoteSource(list="a", url="https://x.test/new", path=tmp_path / "l.txt")
    remote.sidecar_path(source).write_text(json.dumps({"url": "https://x.test/old",
                                                       "entries": 5, "last_success": 1.0}))
    assert read_state(source).entries == 0 and read_state(source).last_success is None
    remote.sidecar_path(source).write_text("{broken")
    assert read_state(source) == SourceState(url=source.url, list="a")


def test_gzip_with_several_members_is_read_whole(server, tmp_path):
    server.replies["/list.txt"] = Reply(body=gzip.compress(b"a.example\n")
                                        + gzip.compress(b"b.example\n"))
    source = source_for(server, tmp_path)
    assert fetch(source).result == "updated"
    assert source.path.read_text() == "a.example\nb.example\n"


def test_an_unwritable_copy_directory_is_a_failed_download_that_says_what_to_do(tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    source = RemoteSource(list="a", url="https://x.test/l", path=blocked / "a" / "l.txt")
    outcome = fetch(source)
    assert outcome.result == "failed" and "WEBPOLICY_SOURCES_DIR" in outcome.message


def test_policy_sources_follow_the_file_and_survive_a_broken_edit(tmp_path, monkeypatch):
    monkeypatch.delenv("WEBPOLICY_SOURCES_DIR", raising=False)
    policy = tmp_path / "policy.yaml"
    base = ("version: '1'\ndefault_profile: p\nprofiles: {p: {block: [l]}}\nlists:\n"
            "  l: {category: L, sources: [{url: 'https://x.test/a'}]}\n")
    policy.write_text(base)
    sources = remote.PolicySources(policy)
    assert [s.url for s in sources()] == ["https://x.test/a"]
    added = base + ("  s: {category: S, statutory: true, sources: "
                    "[{url: 'https://x.test/statutory'}]}\n")
    policy.write_text(added)
    assert [s.url for s in sources()] == ["https://x.test/a", "https://x.test/statutory"], \
        "a statutory source without a copy is still fetched (the policy itself is valid)"
    policy.write_text(added.replace("category: L", "categry: L"))
    assert len(sources()) == 2, "a broken edit keeps the sources last read"


def test_a_redirect_is_followed_over_https_only(server, tmp_path):
    server.replies["/moved.txt"] = Reply(302, b"", headers={"Location": "/list.txt"})
    server.replies["/list.txt"] = Reply(body=domains(5).encode())
    server.replies["/plain.txt"] = Reply(302, b"", headers={
        "Location": f"http://127.0.0.1:{server.port}/list.txt"})
    moved = source_for(server, tmp_path, "/moved.txt")
    assert fetch(moved).result == "updated"
    plain = RemoteSource(list="b", url=server.url("/plain.txt"), ca=server.ca,
                         path=tmp_path / "b.txt", format="domains")
    outcome = fetch(plain)
    assert outcome.result == "failed" and "redirected to http://" in outcome.message
    assert not plain.path.exists()


def test_a_missing_ca_file_or_a_bad_url_is_a_failed_outcome_not_an_exception(tmp_path):
    missing_ca = RemoteSource(list="a", url="https://127.0.0.1:9/l", path=tmp_path / "a.txt",
                              ca=tmp_path / "no-such-ca.pem")
    outcome = fetch(missing_ca)
    assert outcome.result == "failed" and "no-such-ca.pem" in outcome.message
    bad = RemoteSource(list="b", url="https://exa mple.test:99999/l", path=tmp_path / "b.txt")
    assert fetch(bad).result == "failed"


def test_a_provider_that_wants_a_client_certificate_gets_one(tmp_path):
    with ListServer(tmp_path, client_certificates=True) as server:
        server.replies["/list.txt"] = Reply(body=domains(5).encode())
        without = source_for(server, tmp_path)
        outcome = fetch(without)
        assert outcome.result == "failed" and not without.path.exists()
        with_cert = source_for(server, tmp_path, client_cert=server.client_cert,
                               client_key=server.client_key)
        assert fetch(with_cert).result == "updated"
        assert with_cert.path.read_text() == domains(5)


# -- through an outbound proxy, several at once ----------------------------------------------

def test_a_source_is_downloaded_through_the_outbound_proxy_named(server, tmp_path):
    server.replies["/list.txt"] = Reply(body=domains(5).encode())
    with ConnectProxy() as proxy:
        source = source_for(server, tmp_path, proxy=proxy.url)
        outcome = fetch(source)
        assert outcome.result == "updated", outcome
        assert proxy.tunnels == [f"127.0.0.1:{server.port}"]
        proxy.refuse = True
        failed = fetch(source, force=True)
        assert failed.result == "failed" and "outbound proxy" in failed.message, failed
    gone = fetch(source, force=True)                  # the proxy is down: it says which
    assert gone.result == "failed" and f"through the outbound proxy {proxy.url}" in gone.message
    assert source.path.read_text() == domains(5)


def test_the_environment_proxy_is_used_only_when_the_policy_says_env(server, tmp_path,
                                                                     monkeypatch):
    server.replies["/list.txt"] = Reply(body=domains(5).encode())
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert fetch(source_for(server, tmp_path)).ok
        assert proxy.tunnels == [], "HTTPS_PROXY is not read unless the policy says env"
        source = source_for(server, tmp_path, proxy="env")
        assert remote.outbound_proxy(source) == proxy.url
        assert fetch(source, force=True).ok and len(proxy.tunnels) == 1
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert remote.outbound_proxy(source) is None
        assert fetch(source, force=True).ok and len(proxy.tunnels) == 1


def test_due_sources_are_fetched_in_parallel_up_to_the_bound(server, tmp_path):
    sources = []
    for n in range(6):
        server.replies[f"/l{n}.txt"] = Reply(body=domains(3, f"s{n}-").encode(), delay=0.3)
        sources.append(RemoteSource(list=f"l{n}", url=server.url(f"/l{n}.txt"), ca=server.ca,
                                    path=tmp_path / f"l{n}" / "copy.txt", format="domains"))
    outcomes = remote.fetch_due(sources, parallel=2)
    assert [o.source.list for o in outcomes] == [f"l{n}" for n in range(6)], "in order"
    assert all(o.result == "updated" for o in outcomes)
    assert server.most_in_flight == 2
    server.most_in_flight = 0
    outcomes = remote.fetch_due(sources, force=True, parallel=6)
    assert len(outcomes) == 6 and server.most_in_flight > 2
    threads = set()
    original = remote.fetch

    def spy(source, **options):
        threads.add(threading.current_thread().name)
        return original(source, **options)

    remote.fetch = spy
    try:
        remote.fetch_due(sources[:1], force=True, parallel=4)
    finally:
        remote.fetch = original
    assert all(name.startswith("webpolicy-fetch") for name in threads), threads
