"""lists/ut1.py through lists/remote.py: UT1 categories downloaded as UT1 publishes them (the
whole archive, or one archive per category), built at test time from the UT1 snapshot in
/work/shared/data/ut1 (CC BY-SA 4.0) and served by a real local HTTPS server."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from tests.unit.lists.listserver import (UT1_SNAPSHOT, ListServer, Reply, snapshot,
                                         ut1_archive)
from webpolicy.lists import remote, ut1
from webpolicy.lists.formats import parse_source
from webpolicy.lists.remote import RemoteSource, fetch, read_state

pytestmark = pytest.mark.skipif(not (UT1_SNAPSHOT / "gambling" / "domains").is_file(),
                                reason="the UT1 snapshot is not on this machine")


@pytest.fixture
def server(tmp_path: Path):
    with ListServer(tmp_path) as server:
        yield server


def ut1_source(server: ListServer, tmp_path: Path, path: str, categories: tuple[str, ...],
               **options) -> RemoteSource:
    options.setdefault("ca", server.ca)
    return RemoteSource(list="ut1", url=server.url(path), format="ut1",
                        path=tmp_path / "sources" / "ut1" / "copy.ut1",
                        ut1_categories=categories, **options)


def entries(directory: Path) -> int:
    return parse_source(directory, "ut1").entries


def archives(server: ListServer) -> list[str]:
    """The archives asked for (not the MD5 sums beside them)."""
    return [path for path, _ in server.requests if path.endswith(".tar.gz")]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_the_archive_gives_each_category_with_its_attribution(server, tmp_path):
    data = snapshot("gambling", "phishing", "drogue")
    server.replies["/download/blacklists.tar.gz"] = Reply(body=ut1_archive(
        data, aliases={"drugs": "drogue"}))
    source = ut1_source(server, tmp_path, "/download/blacklists.tar.gz",
                        ("gambling", "phishing", "drugs"))
    outcome = fetch(source)
    assert outcome.result == "updated", outcome
    for name, real in (("gambling", "gambling"), ("phishing", "phishing"), ("drugs", "drogue")):
        copy = source.path / name
        assert copy.is_symlink() and copy.is_dir()
        for file, body in data[real].items():
            assert (copy / file).read_bytes() == body, "copied unmodified"
        note = (copy / "SOURCE").read_text()
        assert ut1.ATTRIBUTION in note and "Creative Commons Attribution-ShareAlike 4.0" in note
        assert f"Category: {name}" in note and "Downloaded: " in note
        assert server.url("/download/blacklists.tar.gz") in note
    assert "(UT1 alias drugs -> drogue)" in (source.path / "drugs" / "SOURCE").read_text()
    gambling = entries(source.path / "gambling")
    assert gambling > 30_000
    state = read_state(source)
    assert state.categories["gambling"] == gambling
    assert state.entries == sum(state.categories.values())
    assert archives(server) == ["/download/blacklists.tar.gz"], "one archive for every category"
    assert remote.has_copy(source)


def test_per_category_files_are_fetched_one_each_and_not_again_when_unchanged(server,
                                                                               tmp_path):
    data = snapshot("gambling", "phishing")
    for name in data:
        server.replies[f"/download/{name}.tar.gz"] = Reply(
            body=ut1_archive(data, per_category=name), etag=f'"{name}-1"')
    source = ut1_source(server, tmp_path, "/download/", ("gambling", "phishing"))
    assert fetch(source).result == "updated"
    assert sorted(archives(server)) == ["/download/gambling.tar.gz",
                                        "/download/phishing.tar.gz"]
    assert (source.path / "phishing" / "urls").read_bytes() == data["phishing"]["urls"]
    again = fetch(source)
    assert again.result == "unchanged", again
    assert server.requests[-1][1].get("If-None-Match") == '"phishing-1"'
    # One category changed: only it gets a new version; the other stays as it was.
    before = os.readlink(source.path / "phishing")
    grown = {"gambling": {**data["gambling"],
                          "domains": data["gambling"]["domains"] + b"new-casino.example\n"}}
    server.replies["/download/gambling.tar.gz"] = Reply(
        body=ut1_archive(grown, per_category="gambling"), etag='"gambling-2"')
    outcome = fetch(source)
    assert outcome.result == "updated" and "gambling" in outcome.message
    assert b"new-casino.example" in (source.path / "gambling" / "domains").read_bytes()
    assert os.readlink(source.path / "phishing") == before


def test_a_category_that_lost_its_domains_file_is_refused(server, tmp_path):
    data = snapshot("gambling")
    server.replies["/b.tar.gz"] = Reply(body=ut1_archive(data))
    source = ut1_source(server, tmp_path, "/b.tar.gz", ("gambling",))
    assert fetch(source).result == "updated"
    in_force = os.readlink(source.path / "gambling")
    server.replies["/b.tar.gz"] = Reply(body=ut1_archive(
        {"gambling": {"urls": data["gambling"]["urls"] * 1}}))
    outcome = fetch(source, accept_shrink=True)
    assert outcome.result == "refused", outcome
    assert "category gambling: the download has no domains file" in outcome.message
    assert "stays in force" in outcome.message
    assert os.readlink(source.path / "gambling") == in_force
    assert (source.path / "gambling" / "domains").is_file()
    assert read_state(source).failures == 1
    hidden = [p.name for p in source.path.iterdir() if p.name.startswith(".gambling.")]
    assert hidden == [in_force], "the refused version is removed"


def test_a_category_that_shrank_too_far_is_refused_unless_accepted(server, tmp_path):
    data = snapshot("gambling")
    server.replies["/b.tar.gz"] = Reply(body=ut1_archive(data))
    source = ut1_source(server, tmp_path, "/b.tar.gz", ("gambling",))
    assert fetch(source).result == "updated"
    full = entries(source.path / "gambling")
    lines = data["gambling"]["domains"].splitlines(keepends=True)
    small = {"gambling": {**data["gambling"], "domains": b"".join(lines[:len(lines) // 10])}}
    server.replies["/b.tar.gz"] = Reply(body=ut1_archive(small))
    outcome = fetch(source)
    assert outcome.result == "refused" and "90% lost" in outcome.message, outcome
    assert entries(source.path / "gambling") == full
    assert fetch(source, accept_shrink=True).result == "updated"
    assert entries(source.path / "gambling") < full // 5


@pytest.mark.parametrize("body, reason", [
    (lambda a: a[:len(a) // 2], "ends early (truncated download)"),
    (lambda a: gzip.compress(b"this is not a tar archive\n" * 100), "not a readable tar"),
    (lambda a: ut1_archive(snapshot("phishing")), "no UT1 category 'gambling' in it"),
    (lambda a: ut1_archive({"gambling": {"domains": b"<html>\n" * 50 + b"a.example\n"}}),
     "more bad lines"),
])
def test_a_bad_archive_keeps_the_last_good_copy(server, tmp_path, body, reason):
    data = snapshot("gambling")
    archive = ut1_archive(data)
    server.replies["/b.tar.gz"] = Reply(body=archive)
    source = ut1_source(server, tmp_path, "/b.tar.gz", ("gambling",))
    assert fetch(source).result == "updated"
    server.replies["/b.tar.gz"] = Reply(body=body(archive))
    outcome = fetch(source, force=True)
    assert outcome.result == "refused" and reason in outcome.message, outcome
    assert (source.path / "gambling" / "domains").read_bytes() == data["gambling"]["domains"]


def test_a_missing_per_category_file_fails_and_names_it(server, tmp_path):
    source = ut1_source(server, tmp_path, "/download/", ("gambling",))
    outcome = fetch(source)
    assert outcome.result == "failed"
    assert "/download/gambling.tar.gz: HTTP 404" in outcome.message
    assert "no good copy yet" in outcome.message and not remote.has_copy(source)


def test_old_versions_are_pruned_to_the_one_in_force_and_the_one_before(server, tmp_path):
    data = snapshot("gambling")
    source = ut1_source(server, tmp_path, "/b.tar.gz", ("gambling",))
    for extra in range(4):
        body = data["gambling"]["domains"] + f"extra{extra}.example\n".encode()
        server.replies["/b.tar.gz"] = Reply(body=ut1_archive({"gambling": {"domains": body}}))
        assert fetch(source).result == "updated"
    versions = sorted(p.name for p in source.path.iterdir() if p.name.startswith(".gambling."))
    assert len(versions) == 2 and os.readlink(source.path / "gambling") == versions[-1]


def test_downloads_names_the_archive_or_one_file_per_category():
    assert ut1.downloads("https://u.example/download/", ["adult", "gambling"]) == [
        ("https://u.example/download/adult.tar.gz", ("adult",)),
        ("https://u.example/download/gambling.tar.gz", ("gambling",))]
    assert ut1.downloads("https://u.example/d/blacklists.tar.gz", ["adult", "gambling"]) == [
        ("https://u.example/d/blacklists.tar.gz", ("adult", "gambling"))]


# -- the MD5 sums UT1 publishes ------------------------------------------------------------

def test_archives_are_checked_against_md5sum_lst_fetched_once(server, tmp_path):
    data = snapshot("gambling", "phishing")
    bodies = {name: ut1_archive(data, per_category=name) for name in data}
    for name, body in bodies.items():
        server.replies[f"/download/{name}.tar.gz"] = Reply(body=body)
    server.replies["/download/MD5SUM.LST"] = Reply(body="".join(
        f"{md5(body)}  {name}.tar.gz\n" for name, body in bodies.items()).encode()
        + b"0123456789abcdef0123456789abcdef  blacklists.tar.gz\n")
    source = ut1_source(server, tmp_path, "/download/", ("gambling", "phishing"))
    outcome = fetch(source)
    assert outcome.result == "updated", outcome
    assert "MD5 checked (gambling.tar.gz, phishing.tar.gz)" in outcome.message
    sums = [path for path, _ in server.requests if not path.endswith(".tar.gz")]
    assert sums == ["/download/MD5SUM.LST"], "one sums file for every archive"


def test_an_archive_that_does_not_match_its_md5_is_refused_and_the_copy_kept(server,
                                                                               tmp_path):
    data = snapshot("gambling")
    good = ut1_archive(data)
    server.replies["/d/blacklists.tar.gz"] = Reply(body=good)
    server.replies["/d/MD5SUM.LST"] = Reply(body=f"{md5(good)}  blacklists.tar.gz\n".encode())
    source = ut1_source(server, tmp_path, "/d/blacklists.tar.gz", ("gambling",))
    assert fetch(source).result == "updated"
    in_force = os.readlink(source.path / "gambling")
    grown = {"gambling": {"domains": data["gambling"]["domains"] + b"new.example\n"}}
    server.replies["/d/blacklists.tar.gz"] = Reply(body=ut1_archive(grown))   # sum not updated
    outcome = fetch(source)
    assert outcome.result == "refused", outcome
    assert f"does not match the sum {md5(good)} published in " in outcome.message
    assert server.url("/d/MD5SUM.LST") in outcome.message
    assert "stays in force" in outcome.message
    assert os.readlink(source.path / "gambling") == in_force
    assert b"new.example" not in (source.path / "gambling" / "domains").read_bytes()
    state = read_state(source)
    assert state.failures == 1 and "does not match" in state.last_error


@pytest.mark.parametrize("line", ["{sum}\n", "{sum} *blacklists.tar.gz\n",
                                  "MD5 (blacklists.tar.gz) = {sum}\n"])
def test_a_per_archive_md5_file_is_read_when_there_is_no_md5sum_lst(server, tmp_path, line):
    archive = ut1_archive(snapshot("gambling"))
    server.replies["/d/blacklists.tar.gz"] = Reply(body=archive)
    server.replies["/d/blacklists.tar.gz.md5"] = Reply(
        body=line.format(sum=md5(archive).upper()).encode())
    source = ut1_source(server, tmp_path, "/d/blacklists.tar.gz", ("gambling",))
    outcome = fetch(source)
    assert outcome.result == "updated" and "MD5 checked" in outcome.message, outcome
    server.replies["/d/blacklists.tar.gz.md5"] = Reply(body=f"{md5(b'x')}\n".encode())
    assert fetch(source, force=True).result == "refused"


def test_without_a_published_md5_an_archive_is_taken_with_a_warning(server, tmp_path, caplog):
    server.replies["/d/blacklists.tar.gz"] = Reply(body=ut1_archive(snapshot("gambling")))
    server.replies["/d/MD5SUM.LST"] = Reply(body=b"<html>maintenance</html>\n",
                                            headers={"Content-Type": "text/html"})
    source = ut1_source(server, tmp_path, "/d/blacklists.tar.gz", ("gambling",))
    outcome = fetch(source)
    assert outcome.result == "updated", outcome
    assert "no published MD5 for blacklists.tar.gz: not checked" in outcome.message
    assert any("no published MD5 sum" in r.getMessage() and "checksum: required" in
               r.getMessage() for r in caplog.records)


def test_checksum_required_refuses_an_archive_without_a_published_md5(server, tmp_path):
    server.replies["/d/blacklists.tar.gz"] = Reply(body=ut1_archive(snapshot("gambling")))
    server.replies["/d/MD5SUM.LST"] = Reply(body=f"{md5(b'x')}  adult.tar.gz\n".encode())
    source = ut1_source(server, tmp_path, "/d/blacklists.tar.gz", ("gambling",),
                        checksum="required")
    outcome = fetch(source)
    assert outcome.result == "refused", outcome
    assert "no published MD5 sum" in outcome.message and "checksum: required" in outcome.message
    assert "no good copy yet" in outcome.message and not remote.has_copy(source)


def test_an_unchanged_archive_asks_for_no_sums(server, tmp_path):
    archive = ut1_archive(snapshot("gambling"))
    server.replies["/d/blacklists.tar.gz"] = Reply(body=archive, etag='"1"')
    server.replies["/d/MD5SUM.LST"] = Reply(body=f"{md5(archive)}  blacklists.tar.gz\n".encode())
    source = ut1_source(server, tmp_path, "/d/blacklists.tar.gz", ("gambling",))
    assert fetch(source).result == "updated"
    asked = len(server.requests)
    assert fetch(source).result == "unchanged"
    assert [path for path, _ in server.requests[asked:]] == ["/d/blacklists.tar.gz"]


def test_published_md5_reads_md5sum_and_bsd_lines_and_a_bare_sum_only_when_asked():
    sums = ("d41d8cd98f00b204e9800998ecf8427e  adult.tar.gz\n"
            "0123456789ABCDEF0123456789abcdef *./blacklists.tar.gz\n"
            "fedcba9876543210fedcba9876543210\tgambling.tar.gz\n")
    assert ut1.published_md5(sums, "blacklists.tar.gz") == "0123456789abcdef0123456789abcdef"
    assert ut1.published_md5(sums, "gambling.tar.gz") == "fedcba9876543210fedcba9876543210"
    assert ut1.published_md5(sums, "phishing.tar.gz") is None
    bare = "d41d8cd98f00b204e9800998ecf8427e\n"
    assert ut1.published_md5(bare, "adult.tar.gz") is None
    assert ut1.published_md5(bare, "adult.tar.gz", bare=True) == "d41d8cd98f00b204e9800998ecf8427e"
    assert ut1.published_md5("not a sum\n", "adult.tar.gz", bare=True) is None
    assert ut1.sum_urls("https://u.example/download/adult.tar.gz") == (
        "https://u.example/download/MD5SUM.LST", "https://u.example/download/adult.tar.gz.md5")
