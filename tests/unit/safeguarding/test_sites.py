"""Registrable domains for reports (offline tldextract) and the sites-most-tried grouping."""

from __future__ import annotations

import socket

import pytest

from webpolicy.safeguarding import sites as report_sites
from webpolicy.safeguarding.sites import most_tried, site_of


@pytest.fixture
def fresh_extractor():
    """Forget the built extractor and cached answers, so a test sees them built anew."""
    report_sites._extractor.cache_clear()
    site_of.cache_clear()
    yield
    report_sites._extractor.cache_clear()
    site_of.cache_clear()


@pytest.mark.parametrize("host, site", [
    ("www.bet365.com", "bet365.com"),
    ("mobile.bet365.com", "bet365.com"),
    ("bet365.com", "bet365.com"),
    ("www.google.co.uk", "google.co.uk"),                # a multi-part public suffix
    ("a.b.bbc.co.uk", "bbc.co.uk"),
    ("www.gov.uk", "www.gov.uk"),                        # gov.uk is itself a public suffix
    ("one.github.io", "one.github.io"),                  # private suffixes keep owners apart
    ("www.gambling.test", "gambling.test"),              # unknown suffix: the default rule *
    ("co.uk", "co.uk"),                                  # a bare suffix stays itself
    ("printer", "printer"),
    ("WWW.Bet365.COM.", "bet365.com"),
])
def test_site_of(host, site):
    assert site_of(host) == site


@pytest.mark.parametrize("host", ["10.1.2.3", "192.168.0.10", "2001:db8::1", "::1",
                                  "[2001:db8::1]"])
def test_ip_literals_stay_as_they_are(host):
    assert site_of(host) == host


def test_extractor_is_offline_and_built_once(fresh_extractor, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tldextract tried to use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    extractor = report_sites._extractor()
    assert tuple(extractor.suffix_list_urls) == ()           # the bundled snapshot only
    assert site_of("www.example.co.uk") == "example.co.uk"   # loads the list: still no network
    assert report_sites._extractor() is extractor
    assert report_sites._extractor.cache_info().misses == 1


def test_answers_are_cached_per_host(fresh_extractor):
    for _ in range(3):
        site_of("www.bet365.com")
    assert site_of.cache_info().hits == 2 and site_of.cache_info().misses == 1


def record(host, action="blocked", user="alice", category="Gambling", statutory=False,
           time="2026-11-25T10:00:00.000Z", client_ip="10.0.0.1") -> dict:
    return {"host": host, "action": action, "user": user, "category": category,
            "statutory": statutory, "time": time, "client_ip": client_ip}


def test_most_tried_groups_counts_and_ranks():
    records = [
        record("www.bet365.com", user="alice"),
        record("mobile.bet365.com", user="Alice", time="2026-11-25T11:00:00.000Z"),
        record("bet365.com", action="refused_passthrough", user=None, client_ip="10.0.0.9"),
        record("sports.bet365.com", category="Sport"),
        record("www.google.co.uk", action="flagged", category="Self-harm", user="bob"),
        record("www.google.co.uk", action="flagged", category="Self-harm", user="carol"),
        record("10.9.9.9", category="Circumvention"),
        record("www.bet365.com", action="logged"),              # allowed: not an attempt
        record("www.bet365.com", action="failed_closed"),        # the filter failed, not a try
        record("", category="No host"),
    ]
    sites = most_tried(records)
    assert [(s.name, s.blocked, s.flagged, len(s.people), s.category) for s in sites] == [
        ("bet365.com", 4, 0, 2, "Gambling"),       # alice (any case) and the 10.0.0.9 device
        ("google.co.uk", 0, 2, 2, "Self-harm"),
        ("10.9.9.9", 1, 0, 1, "Circumvention"),
    ]
    assert sites[0].last == "2026-11-25T11:00:00.000Z"
    assert [s.name for s in most_tried(records, limit=1)] == ["bet365.com"]


def test_statutory_entries_are_grouped_by_host_only():
    records = [record("images.host.co.uk", statutory=True, category="IWF"),
               record("images.host.co.uk", statutory=True, category="IWF"),
               record("cdn.host.co.uk", statutory=True, category="IWF"),
               record("www.host.co.uk")]
    sites = {(s.name, s.statutory): s.blocked for s in most_tried(records)}
    assert sites == {("images.host.co.uk", True): 2, ("cdn.host.co.uk", True): 1,
                     ("host.co.uk", False): 1}
