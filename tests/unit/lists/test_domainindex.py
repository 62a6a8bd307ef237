"""Tests for webpolicy.lists.domainindex: suffix semantics, file format, collision bounds."""

from __future__ import annotations

import os
import random
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webpolicy.lists import domainindex
from webpolicy.lists.domainindex import NO_MATCH, DomainIndex, is_ip_literal

# --------------------------------------------------------------------------- helpers


def reference(entries: list[tuple[str, int]]) -> dict[str, int]:
    ref: dict[str, int] = {}
    for name, mask in entries:
        ref[name] = ref.get(name, 0) | mask
    return ref


def ref_match(ref: dict[str, int], host: str) -> list[tuple[str, int]]:
    """The specification, slowly: every label-boundary suffix that is an entry, shortest
    first; IP literals (as host or as entry) only ever match exactly."""
    if is_ip_literal(host):
        return [(host, ref[host])] if host in ref else []
    labels = host.split(".")
    suffixes = (".".join(labels[i:]) for i in range(len(labels) - 1, -1, -1))
    return [(s, ref[s]) for s in suffixes if s in ref and not is_ip_literal(s)]


def roundtrip(index: DomainIndex, tmp_path, name: str = "idx.wpidx") -> DomainIndex:
    path = tmp_path / name
    index.save(path)
    return DomainIndex.open(path)


def random_label(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(6, 12)))


ENTRIES = [
    ("example.com", 1),
    ("a.example.com", 2),
    ("xxx", 4),
    ("1.2.3.4", 8),
    ("::1", 16),
    ("2001:db8::a", 16),
    ("deep.x.y.z.org", 32),
    ("example.com", 64),
    ("co.uk", 128),
    ("bbc.co.uk", 1 << 63),
]


@pytest.fixture(params=["built", "opened"])
def index(request, tmp_path) -> DomainIndex:
    built = DomainIndex.build(ENTRIES)
    return built if request.param == "built" else roundtrip(built, tmp_path)


# --------------------------------------------------------------------------- semantics


def test_entry_matches_itself_and_subdomains(index):
    assert index.match("example.com") == [("example.com", 65)]
    assert index.match("www.example.com") == [("example.com", 65)]
    assert index.match("x.y.z.b.example.com") == [("example.com", 65)]


def test_lookalike_and_parent_names_do_not_match(index):
    lookalikes = ("badexample.com", "example.co", "com", "ample.com", "example.com.evil.net")
    for host in lookalikes + ("z.org", "x.y.z.org"):
        assert index.match(host) == NO_MATCH, host


def test_every_matching_suffix_is_returned_shortest_first(index):
    assert index.match("a.example.com") == [("example.com", 65), ("a.example.com", 2)]
    assert index.match("q.a.example.com") == [("example.com", 65), ("a.example.com", 2)]
    assert index.match("news.bbc.co.uk") == [("co.uk", 128), ("bbc.co.uk", 1 << 63)]
    assert index.match("q.deep.x.y.z.org") == [("deep.x.y.z.org", 32)]


def test_duplicate_entries_or_their_masks():
    entries = [("a.com", 1), ("b.com", 2), ("a.com", 4), ("a.com", 1), ("a.com", 1 << 40)]
    index = DomainIndex.build(entries)
    assert len(index) == 2
    assert index.match("x.a.com") == [("a.com", 1 | 4 | 1 << 40)]
    assert index.match("b.com") == [("b.com", 2)]


def test_single_label_entry_matches_whole_tld(index):
    assert index.match("a.xxx") == [("xxx", 4)]
    assert index.match("xxx") == [("xxx", 4)]
    assert index.match("b.a.xxx") == [("xxx", 4)]
    assert index.match("xxxx") == NO_MATCH


def test_ip_literals_match_exactly(index):
    assert index.match("1.2.3.4") == [("1.2.3.4", 8)]
    assert index.match("::1") == [("::1", 16)]
    assert index.match("2001:db8::a") == [("2001:db8::a", 16)]
    for host in ("2.3.4", "1.2.3.5", "01.2.3.4", "::2", "1.2.3.4.5", "x.1.2.3.4"):
        assert index.match(host) == NO_MATCH, host


def test_ip_entry_never_matches_as_a_suffix():
    """Even when a (strange) domain entry lies under the IP's name."""
    index = DomainIndex.build([("1.2.3.4", 1), ("z.1.2.3.4", 2)])
    assert index.match("y.z.1.2.3.4") == [("z.1.2.3.4", 2)]
    assert index.match("y.1.2.3.4") == NO_MATCH
    assert index.match("1.2.3.4") == [("1.2.3.4", 1)]


def test_ip_host_is_not_walked():
    index = DomainIndex.build([("4", 1), ("3.4", 2), ("10.0.0.1", 4)])
    assert index.match("1.2.3.4") == NO_MATCH
    assert index.match("10.0.0.1") == [("10.0.0.1", 4)]
    assert index.match("x.4") == [("4", 1)]


def test_miss_returns_the_shared_immutable_constant(index):
    assert index.match("nothing.example") is NO_MATCH
    assert index.match("") is NO_MATCH
    assert not NO_MATCH and isinstance(NO_MATCH, tuple)


def test_len_counts_distinct_entries(index):
    assert len(index) == len(reference(ENTRIES)) == 9


def test_masks_use_all_64_bits():
    index = DomainIndex.build([("a.com", (1 << 64) - 1), ("b.com", 1 << 63)])
    assert index.match("a.com") == [("a.com", (1 << 64) - 1)]
    assert index.match("b.com") == [("b.com", 1 << 63)]


@pytest.mark.parametrize("entries", [[("a.com", 0)], [("a.com", -1)], [("a.com", 1 << 64)],
                                     [("", 1)]])
def test_invalid_entries_are_rejected(entries):
    with pytest.raises(ValueError):
        DomainIndex.build(entries)


def test_empty_index(tmp_path):
    empty = DomainIndex.build([])
    assert len(empty) == 0
    for idx in (empty, roundtrip(empty, tmp_path)):
        assert idx.match("a.com") is NO_MATCH
        assert idx.match("1.2.3.4") is NO_MATCH
        assert idx.match("com") is NO_MATCH


def test_build_accepts_any_iterable():
    index = DomainIndex.build((f"d{i}.com", 1 << (i % 64)) for i in range(1000))
    assert len(index) == 1000
    assert index.match("w.d77.com") == [("d77.com", 1 << 13)]


def test_many_distinct_masks_widen_the_value_words(tmp_path):
    """More than 2**14 distinct list combinations switch vals from uint16 to uint32."""
    entries = [(f"d{i}.net", i + 1) for i in range(20_000)]
    index = DomainIndex.build(entries)
    for idx in (index, roundtrip(index, tmp_path)):
        for i in (0, 16_383, 16_384, 19_999):
            assert idx.match(f"x.d{i}.net") == [(f"d{i}.net", i + 1)]


def test_single_label_entries_set_the_flag_that_probes_the_last_label(tmp_path):
    """Without single-label entries a lookup never hashes the last label; with them it does,
    at every level of the walk."""
    plain = DomainIndex.build([("a.com", 8), ("b.c.net", 16), ("1.2.3.4", 1), ("::1", 2)])
    header = domainindex._Header(*domainindex._HEADER.unpack_from(plain._buffer, 0))
    assert header.flags & domainindex._FLAG_SINGLE_LABELS == 0
    entries = [("xxx", 1), ("yyy", 2), ("zzz", 4), ("a.com", 8), ("b.c.net", 16)]
    ref = reference(entries)
    index = DomainIndex.build(entries)
    header = domainindex._Header(*domainindex._HEADER.unpack_from(index._buffer, 0))
    assert header.flags & domainindex._FLAG_SINGLE_LABELS
    for idx in (index, roundtrip(index, tmp_path)):
        for host in ("q.xxx", "yyy", "zzz", "a.com", "x.a.com", "b.c.net", "c.net", "com", "qqq",
                     "d.b.c.net", "1.2.3.4", "a.b.yyy"):
            assert list(idx.match(host)) == ref_match(ref, host), host


def test_bytes_runs_are_indexed_like_str_runs():
    """The list parser hands its clean lines over as bytes (dotted, no IP literals)."""
    from_bytes = DomainIndex.build_runs([([b"a.com", b"b.c.net"], 1), (["1.2.3.4", "xxx"], 2),
                                         ([b"a.com"], 4)])
    from_str = DomainIndex.build([("a.com", 1), ("b.c.net", 1), ("1.2.3.4", 2), ("xxx", 2),
                                  ("a.com", 4)])
    assert from_bytes._buffer == from_str._buffer
    assert from_bytes.match("w.a.com") == [("a.com", 5)]
    assert from_bytes.match("x.1.2.3.4") == NO_MATCH and from_bytes.match("q.xxx") == [("xxx", 2)]


def test_deep_names():
    deep = ".".join(f"l{i}" for i in range(40)) + ".com"
    index = DomainIndex.build([(deep, 1), ("l39.com", 2)])
    assert index.match("x." + deep) == [("l39.com", 2), (deep, 1)]
    assert index.match(deep.split(".", 1)[1]) == [("l39.com", 2)]


# --------------------------------------------------------------------------- property test

LABELS = st.sampled_from(["a", "b", "c", "com", "uk", "co", "xn--p1ai", "x-y", "0", "1", "ab"])
DOMAINS = st.lists(LABELS, min_size=1, max_size=5).map(".".join)
IPS = st.sampled_from(["1.2.3.4", "10.0.0.1", "0.0.0.0", "::1", "2001:db8::a", "::ffff:1.2.3.4"])
NAMES = st.one_of(DOMAINS, DOMAINS, DOMAINS, IPS)
MASKS = st.one_of(st.integers(1, 255), st.integers(1, 2**64 - 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(st.tuples(NAMES, MASKS), max_size=40), hosts=st.lists(NAMES, max_size=30))
def test_matches_reference_implementation(entries, hosts, tmp_path_factory):
    ref = reference(entries)
    index = DomainIndex.build(entries)
    assert len(index) == len(ref)
    probes = hosts + list(ref) + [f"a.{name}" for name in ref] + [f"b.a.{name}" for name in ref]
    opened = roundtrip(index, tmp_path_factory.mktemp("prop"))
    for host in probes:
        expected = ref_match(ref, host)
        assert list(index.match(host)) == expected, host
        assert list(opened.match(host)) == expected, host


@settings(max_examples=150, deadline=None)
@given(entries=st.lists(st.tuples(NAMES, MASKS), max_size=60), hosts=st.lists(NAMES, max_size=30))
def test_collisions_only_ever_add_matches(entries, hosts):
    """With an 8-bit hash almost everything collides, yet no real match or bit is lost."""
    ref = reference(entries)
    index = DomainIndex.build(entries, _hash_bits=8)
    for host in hosts + list(ref) + [f"a.{name}" for name in ref]:
        got = dict(index.match(host))
        for name, mask in ref_match(ref, host):
            assert name in got and got[name] & mask == mask, (host, name)


# --------------------------------------------------------------------------- file format


def test_save_open_roundtrip_is_identical(tmp_path):
    rng = random.Random(7)
    bases = [f"{random_label(rng)}.{rng.choice(['com', 'net', 'co.uk'])}" for _ in range(3000)]
    entries = [(b, 1 << rng.randrange(64)) for b in bases]
    entries += [(f"{random_label(rng)}.{rng.choice(bases)}", 1 << rng.randrange(64))
                for _ in range(2000)]
    entries += [("192.168.0.1", 1), ("::1", 2), ("xxx", 4)]
    built = DomainIndex.build(entries)
    opened = roundtrip(built, tmp_path)
    assert len(opened) == len(built) and opened.nbytes == built.nbytes
    assert os.path.getsize(tmp_path / "idx.wpidx") == built.nbytes
    hosts = [f"w.{name}" for name, _ in entries] + [f"{random_label(rng)}.{b}" for b in bases]
    hosts.append("192.168.0.1")
    for host in hosts:
        assert opened.match(host) == built.match(host), host
    assert sum(1 for h in hosts if built.match(h)) > len(entries) // 2


def test_save_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "lists.wpidx"
    DomainIndex.build([("old.com", 1)]).save(path)
    old = DomainIndex.open(path)
    DomainIndex.build([("new.com", 2)]).save(str(path))
    assert os.listdir(tmp_path) == ["lists.wpidx"]  # no temporary left behind
    assert os.stat(path).st_mode & 0o777 == 0o644  # readable by a proxy running as another user
    assert DomainIndex.open(path).match("new.com") == [("new.com", 2)]
    assert old.match("old.com") == [("old.com", 1)]  # a mapped old file stays valid


@pytest.fixture
def saved(tmp_path) -> bytes:
    path = tmp_path / "good.wpidx"
    DomainIndex.build([(f"d{i}.com", 1) for i in range(100)] + [("xxx", 2)]).save(path)
    return path.read_bytes()


def corruptions(data: bytes) -> dict[str, bytes]:
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    version = bytearray(data)
    version[5] = 99
    header = bytearray(data)
    header[8] = 255  # val_size
    count = bytearray(data)
    count[12] ^= 1  # n_entries: covered by the checksum
    return {
        "empty": b"",
        "short header": data[:20],
        "header only": data[:64],
        "truncated": data[:-8],
        "truncated by one": data[:-1],
        "extended": data + b"\0" * 8,
        "bad magic": b"XXIDX" + data[5:],
        "bad version": bytes(version),
        "bad header field": bytes(header),
        "header count": bytes(count),
        "flipped body byte": bytes(flipped),
        "garbage": os.urandom(len(data)),
    }


@pytest.mark.parametrize("kind", list(corruptions(b"x" * 200)))
def test_corrupt_file_raises_value_error(kind, saved, tmp_path):
    path = tmp_path / "bad.wpidx"
    path.write_bytes(corruptions(saved)[kind])
    with pytest.raises(ValueError, match="bad.wpidx"):
        DomainIndex.open(path)


def test_open_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        DomainIndex.open(tmp_path / "missing.wpidx")


# --------------------------------------------------------------------------- false positives


def test_false_positive_rate_matches_the_bound_with_a_16_bit_hash():
    """Docstring bound: a lookup with p hashed probes over N names falsely matches with
    probability <= p * N / 2**bits.  'rand.com' misses make exactly one hashed probe (no
    single-label entries: the last label is not probed), so they collide iff their key is
    one of the D distinct entry keys: expected rate D / 2**16, itself just under N / 2**16."""
    rng = random.Random(16)
    hashf = domainindex._hash_fn(16)
    names = sorted({f"{random_label(rng)}.com" for _ in range(20_000)})
    index = DomainIndex.build([(name, 1) for name in names], _hash_bits=16)
    distinct = len({hashf(name.encode()) for name in names})
    listed = set(names)
    queries = [h for h in (f"q{random_label(rng)}.com" for _ in range(50_000)) if h not in listed]
    false_hits = [h for h in queries if index.match(h)]
    rate = len(false_hits) / len(queries)
    expected = distinct / 2**16
    sigma = (expected * (1 - expected) / len(queries)) ** 0.5
    assert abs(rate - expected) < 5 * sigma, (rate, expected)
    assert rate <= 1 * len(names) / 2**16
    assert all(index.match(h) == [(h, 1)] for h in false_hits[:100])  # the host itself "matched"


def test_false_positive_rate_for_deeper_walks_with_a_16_bit_hash():
    """'r.base.com' makes two hashed probes (base.com, then the host), and either can hit
    an entry's key: rate ~ 1 - (1 - E/2**16)**2 for E distinct entry keys, within the
    docstring's bound p * N / 2**16 with p = 2."""
    rng = random.Random(17)
    bases = [f"{random_label(rng)}.com" for _ in range(5_000)]
    names = sorted({f"{random_label(rng)}.{rng.choice(bases)}" for _ in range(15_000)})
    index = DomainIndex.build([(name, 1) for name in names], _hash_bits=16)
    listed = set(names)
    queries = [f"r{random_label(rng)}.{rng.choice(bases)}" for _ in range(30_000)]
    rate = sum(1 for h in queries if h not in listed and index.match(h)) / len(queries)
    assert 0.5 * len(names) / 2**16 < rate <= 2 * len(names) / 2**16, rate


def test_no_false_positives_with_the_default_64_bit_hash():
    rng = random.Random(64)
    bases = [f"{random_label(rng)}.{tld}" for tld in ("com", "net", "org", "co.uk")
             for _ in range(12_500)]
    entries = [(b, 1) for b in bases[::2]] + [(f"www.{b}", 2) for b in bases[1::2]]
    index = DomainIndex.build(entries)
    match = index.match
    marker_only = bases[1::2]  # parents of listed names, not listed themselves (two probes)
    false_hits = 0
    for i in range(1_000_000):
        label = f"{i:x}z{rng.getrandbits(32):x}"
        host = f"{label}.{marker_only[i % len(marker_only)]}" if i & 1 else f"{label}.com"
        if match(host):
            false_hits += 1
    assert false_hits == 0
