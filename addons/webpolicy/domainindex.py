"""Compact, memory-mappable index of millions of blocklisted domains.

Every proxied request asks "is this host, or a domain above it, on a list?", so
the lookup is on the hot path; lists reach 5M entries, so memory matters.  A
``set[str]`` costs 90-130 bytes per entry (strings included) and tens of ms of
freeing per million on reload.  This index costs ~14-15 bytes per entry, lives in
one flat file that the proxy memory-maps (no per-entry Python objects; open() of a
5M index takes a few ms), and answers a lookup in about a microsecond.

Semantics
    An entry matches itself and every subdomain: ``example.com`` matches
    ``example.com`` and ``a.b.example.com`` but not ``badexample.com``.  An
    IP-literal entry (dotted quad, or anything containing ``:``) matches only that
    exact host, and an IP-literal host is never walked label by label.  Each entry
    carries a 64-bit mask (bit i = list i); a domain given twice gets the OR.
    ``match()`` returns every matching suffix as ``(name, mask)``, shortest first,
    in a new list, or the shared empty tuple ``NO_MATCH`` on a miss.

Keys
    A name's key is the xxh3-64 hash of the whole name (UTF-8)::

        key("example.com") = xxh3_64(b"example.com")

    A lookup walking ``com -> example.com -> www.example.com`` hashes each suffix
    (a slice of the host).  Version 1 chained per-label hashes instead, which made
    a lookup no cheaper but the build ~40% dearer: every entry needed its parent's
    key as a seed.  No key value is reserved (0 is an ordinary key); the largest
    value is the end sentinel, see below.

Layout (little-endian; each section 8-byte aligned; see ``_HEADER``)
    header  64 bytes: b"WPIDX", version, parameters, counts, xxh3-64 checksum
    keys    uint64[n+1]  sorted; keys[n] is the sentinel 2**hash_bits - 1
    dir     uint32[2**d] dir[b] = index of the first key whose top d bits >= b
    vals    uint16 or uint32[n+1]  word = combo << 2 | exact << 1 | below
    combos  uint64[c+1]  the distinct list masks; combo 0 means "not an entry"
    tlds    "\n"-joined single-label names (empty above _TLD_DICT_MAX of them)

    ``below`` marks a name with a longer entry under it.  Every proper parent of an
    entry is stored (as an entry, or as a bare marker), so a lookup walking out
    from the TLD stops at the first absent name: a typical miss costs one dict
    lookup (the TLD level, exact) and one hashed probe.

    A probe is ``j = dir[key >> shift]``, then step while ``keys[j] < key``: keys
    are sorted and the sentinel ends the array, so no bucket end is needed; with
    1-2 keys per bucket that is ~1.5 steps.  A real key equal to the sentinel
    value sorts before it, and the sentinel's word is 0 (absent).

    open() checks magic, version, parameters, exact file size and the checksum
    (header and body, ~10 GB/s), raising ValueError naming the file.  save()
    writes a temporary file and os.replace()s it, so a proxy that still maps the
    old file keeps a valid index until it swaps in the new one.

Build
    Entries and the distinct proper parents are hashed in C-level passes over the
    names (see _hash_names).  Then one record per entry and per marker is sorted with numpy;
    repeated keys (an entry on several lists, an entry that is also a parent) end up
    adjacent and are OR-merged.  About 0.8 s of CPU per million entries in all, of
    which two processes can share the hashing (scripts/bench_index.py prints
    current figures; the list compiler, compiler.py, runs builds in a worker).

False positives
    A key collision makes an unlisted name look listed.  With N stored names
    (entries and markers) and b-bit keys, one hashed probe collides with
    probability about N / 2**b, so a lookup making p hashed probes (the TLD level
    is exact; p is 1 for a typical miss, rarely above 3) falsely matches with
    probability at most about p * N / 2**b: ~1e-12 for 6M names and b = 64.
    Callers that must not over-block (statutory lists) confirm a hit against the
    exact entry.  A collision can add a match or a list bit, never hide one.
    Tests build with ``_hash_bits=16`` to measure the rate against this bound.
"""

from __future__ import annotations

import gc
import json
import mmap
import operator
import os
import re
import struct
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate, compress, count, groupby, repeat
from operator import itemgetter, not_
from typing import Any, NamedTuple

import xxhash

__all__ = ["DomainIndex", "NO_MATCH", "hash_half", "hash_part", "is_ip_literal"]

MAGIC = b"WPIDX"
VERSION = 2
# magic, version, hash_bits, dir_bits, val_size, flags, pad,
# n_entries, n_items, n_combos, tld_len, checksum, pad -> 64 bytes.  The checksum
# (xxh3-64) covers the header up to itself and everything after the header.
_HEADER = struct.Struct("<5sBBBBB2xQQQQQ12x")
_CHECKSUM_AT = 44
_FLAG_TLD_DICT = 1
# Above this many single-label names the TLD level is hashed like any other,
# so that open() stays O(1) in the number of entries.
_TLD_DICT_MAX = 1 << 16

# A vals word is combo << _SHIFT | _EXACT? | _BELOW? (match() spells these as literals).
_BELOW = 1  # a longer entry exists under this name
_EXACT = 2  # IP literal: matches only a host equal to it
_SHIFT = 2  # vals >> _SHIFT = combo index

NO_MATCH: tuple[()] = ()
"""Shared result for a miss (immutable, so callers cannot corrupt it)."""

_DIGITS = frozenset("0123456789")
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_xxh3: Callable[..., int] = xxhash.xxh3_64_intdigest


def is_ip_literal(name: str) -> bool:
    """True for a canonical IPv6 (contains ':') or dotted-quad IPv4 name."""
    return ":" in name or (name[-1:] in _DIGITS and _IPV4.fullmatch(name) is not None)


def _hash_fn(bits: int) -> Callable[..., int]:
    """xxh3-64 itself, or (tests only) its top ``bits`` bits to provoke collisions."""
    if bits == 64:
        return _xxh3
    drop = 64 - bits

    def truncated(data: bytes) -> int:
        return _xxh3(data) >> drop

    return truncated


def _key(name: str, hashf: Callable[..., int]) -> int:
    return hashf(name.encode())


# --------------------------------------------------------------------------- build
#
# build() runs in the list compiler's worker process (compiler.py) at start-up and on
# reload, and must handle 5M entries in a few seconds.  Hashing is whole-list C-level
# passes (map, set), with no bytecode per entry.  Everything after that -- sorting,
# merging repeated keys, numbering the list masks, the directory -- is whole-array numpy
# work, which does it 10-20x faster than list.sort() over packed Python ints did.  numpy
# is imported inside build() only: the proxy process never builds (it maps files the
# worker wrote), and the lookup path uses none.  The hashing can be shared with a second
# process (hash_half, build_runs(other_half=)): the compiler's worker uses both CPUs so.

_M64 = (1 << 64) - 1


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: the passes allocate millions of short-lived tuples, and
    each generation-2 collection would re-walk every live container (2x slower)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _columns(entries: Iterable[tuple[str, int]]) -> tuple[list[str], list[int], set[int]]:
    """Names, masks and the distinct masks."""
    pairs = entries if isinstance(entries, list) else list(entries)
    names = list(map(itemgetter(0), pairs))
    masks = list(map(itemgetter(1), pairs))
    return names, masks, set(masks)  # usually a handful of shared objects: one fast pass


def _check_masks(distinct: Iterable[int]) -> None:
    distinct = list(distinct)
    if distinct and (min(distinct) <= 0 or max(distinct) > _M64):
        raise ValueError("list masks must be non-zero unsigned 64-bit integers")


def _parents(names: Iterable[str]) -> Iterator[str]:
    """Stream of each name's parent ('' for a single label).

    Streams rather than lists: first-touch page faults cost ~0.4-2 s per GB on the
    VM measured, so materialising millions of tuples costs more than recomputing.
    """
    return map(itemgetter(2), map(str.partition, names, repeat(".")))


def _proper_parents(names: Iterable[str]) -> tuple[set[str], bool]:
    """Every proper parent of the names, up to the TLDs, each once; and whether some name
    is a single label.  One C-level pass per level: the distinct parents of each level are
    far fewer than the names."""
    level = set(_parents(names))
    single_label_entries = "" in level
    found: set[str] = set()
    while level:
        level.discard("")
        found |= level
        level = set(_parents(level)) - found
    return found, single_label_entries


def _find_ips(names: list[str], parents: set[str], single_label_entries: bool) -> list[int]:
    """Positions of IP-literal names.  A dotted quad (or an IPv6 literal with an IPv4 tail)
    ends in a digit and so has a parent ending in one; any other IPv6 literal has no dot,
    hence no parent.  So a list with neither kind of parent (most lists) needs no pass at
    all, and otherwise only names ending in a digit, or holding ':', go through the regex."""
    if not single_label_entries and \
            not any(map(_DIGITS.__contains__, map(itemgetter(-1), parents))):
        return []
    last_digit = map(_DIGITS.__contains__, map(itemgetter(-1), names))
    candidates = set(compress(count(), last_digit))
    if single_label_entries:
        candidates.update(compress(count(), map(str.__contains__, names, repeat(":"))))
    return sorted(i for i in candidates if is_ip_literal(names[i]))


class _Hashed(NamedTuple):
    """What hashing the names yields; keys and markers are uint64 arrays (array("Q")
    from one process, numpy from two)."""

    keys: Any  # the key of every name, in order
    markers: Any  # the keys of every proper parent (two processes may both report one)
    tlds: list[str]  # single-label parents
    ips: list[int]  # positions of IP-literal names
    single_label_entries: bool  # some name has no dot
    singles: list[str] | None = None  # _singles(), when names from elsewhere are included


def _hash_names(names: list[str], hashf: Callable[..., int], part: int = 0,
                parts: int = 1) -> _Hashed:
    """Hash names[part::parts]; IP positions are positions in `names`."""
    share = names if parts == 1 else names[part::parts]
    keys = array("Q", map(hashf, map(str.encode, share)))
    parents, single = _proper_parents(share)
    markers = array("Q", map(hashf, map(str.encode, parents)))
    ips = [i * parts + part for i in _find_ips(share, parents, single)]
    dotted = map(operator.contains, parents, repeat("."))       # C-level, like the rest
    tlds = sorted(compress(parents, map(not_, dotted)))
    return _Hashed(keys, markers, tlds, ips, single)


def hash_half(names: list[str], part: int) -> bytes:
    """Hash names[part::2] for a build in another process (see build_runs(other_half=));
    the result as bytes, to send there.  Interleaved, not halves: lists cluster their
    costly names (subdomains under many distinct parents), and halves would leave one
    process idle."""
    hashed = _hash_names(names, _xxh3, part, 2)
    meta = json.dumps([part, len(names), len(hashed.keys), len(hashed.markers), hashed.tlds,
                       hashed.ips, hashed.single_label_entries]).encode()
    return b"".join([struct.pack("<Q", len(meta)), meta, memoryview(hashed.keys).cast("B"),
                     memoryview(hashed.markers).cast("B")])


def _merge_halves(names: list[str], mine: _Hashed, data: bytes) -> _Hashed:
    """Put this process's half (part 0) and another's (hash_half(names, 1)) together."""
    import numpy as np

    size = struct.unpack_from("<Q", data)[0]
    part, n_names, n_keys, n_markers, tlds, ips, single = json.loads(data[8:8 + size])
    if (part, n_names, n_keys) != (1, len(names), len(names) // 2):
        raise ValueError("domain index: the other half was hashed from other names")
    theirs = np.frombuffer(data, np.uint64, n_keys + n_markers, 8 + size)
    keys = np.empty(len(names), np.uint64)
    keys[0::2] = np.frombuffer(mine.keys, np.uint64)
    keys[1::2] = theirs[:n_keys]
    markers = np.concatenate([np.frombuffer(mine.markers, np.uint64), theirs[n_keys:]])
    return _Hashed(keys, markers, sorted(set(mine.tlds).union(tlds)), sorted(mine.ips + ips),
                   mine.single_label_entries or single)


def hash_part(names: list[str]) -> bytes:
    """Hash all of `names`, a piece of a list that another process indexes after its own
    names (see build_runs(other_part=)); the result as bytes, to send there.  For one big
    list file that two processes parse half each (the list compiler's worker)."""
    hashed = _hash_names(names, _xxh3)
    meta = json.dumps([len(hashed.keys), len(hashed.markers), hashed.tlds, hashed.ips,
                       hashed.single_label_entries, _singles(names, hashed)]).encode()
    return b"".join([struct.pack("<Q", len(meta)), meta, memoryview(hashed.keys).cast("B"),
                     memoryview(hashed.markers).cast("B")])


def _merge_part(names: list[str], mine: _Hashed, data: bytes) -> tuple[_Hashed, int]:
    """This process's names, then another's (hash_part()): the hashes of both, and how many
    names the other had."""
    import numpy as np

    size = struct.unpack_from("<Q", data)[0]
    n_keys, n_markers, tlds, ips, single, singles = json.loads(data[8:8 + size])
    theirs = np.frombuffer(data, np.uint64, n_keys + n_markers, 8 + size)
    keys = np.concatenate([np.asarray(mine.keys, np.uint64), theirs[:n_keys]])
    markers = np.concatenate([np.asarray(mine.markers, np.uint64), theirs[n_keys:]])
    merged = _Hashed(keys, markers, sorted(set(mine.tlds).union(tlds)),
                     mine.ips + [len(names) + i for i in ips], mine.single_label_entries or single,
                     sorted(set(_singles(names, mine)).union(singles)))
    return merged, n_keys


def _singles(names: list[str], hashed: _Hashed) -> list[str]:
    """Single-label names: TLD parents, plus single-label entries other than IPv6 literals."""
    if hashed.singles is not None:
        return hashed.singles
    if not hashed.single_label_entries:
        return hashed.tlds
    ipset = {names[i] for i in hashed.ips}
    single_entries = compress(names, map(not_, _parents(names)))
    return sorted(set(hashed.tlds).union(n for n in single_entries if n not in ipset))


class _Segments(NamedTuple):
    """Every record (entry or marker) in segments that share mask and flags, each segment
    sorted by key, all in one array."""

    keys: Any  # numpy uint64, segment after segment
    lengths: list[int]
    masks: list[int]  # per segment; 0 for the markers
    exact: list[bool]  # IP literals: match only themselves
    below: list[bool]  # markers: a longer entry exists under the name


def _segments(np: Any, hashed: _Hashed, runs: Sequence[tuple[int, int]]) -> _Segments:
    """Per run of one mask its plain entries and its IP literals, then the markers.
    Sorting segments apart and merging them (a stable sort of presorted runs) beats one
    argsort of random keys 3x, and each record's mask and flags then come from a segment
    number instead of three gathers."""
    keys = np.asarray(hashed.keys, np.uint64)
    markers = np.asarray(hashed.markers, np.uint64)
    ips = np.asarray(hashed.ips, np.intp)
    out = np.empty(len(keys) + len(markers), np.uint64)
    table = _Segments(out, [], [], [], [])
    at = start = 0

    def add(part: Any, mask: int, exact: bool, below: bool) -> None:
        nonlocal at
        view = out[at:at + len(part)]
        view[:] = part
        view.sort()
        at += len(part)
        for column, value in zip(table[1:], (len(part), mask, exact, below)):
            column.append(value)

    for mask, length in runs:
        run = keys[start:start + length]
        lo, hi = np.searchsorted(ips, [start, start + length]) if len(ips) else (0, 0)
        if hi > lo:
            local = ips[lo:hi] - start
            add(run[local], mask, True, False)
            run = np.delete(run, local)
        add(run, mask, False, False)
        start += length
    add(markers, 0, False, True)
    return table


def _image(names: list[str], runs: Sequence[tuple[int, int]], hashed: _Hashed,
           hash_bits: int) -> bytearray:
    """The whole file image.  ``runs`` gives (mask, count) for consecutive names.

    One record per entry and per marker (a marker's mask is 0), sorted by key, so an
    entry on two lists, an entry that is also a parent, or a hash collision end up
    adjacent and are merged: OR of masks and flags, except that the exact-only flag
    survives only if no record in the group is a plain domain entry (a collision may
    add a false positive but must never hide a real entry).
    """
    import numpy as np

    segments = _segments(np, hashed, runs)
    order = np.argsort(segments.keys, kind="stable")
    keys = segments.keys[order]
    number = np.repeat(np.arange(len(segments.lengths), dtype=np.intp), segments.lengths)[order]
    del order
    masks = np.array(segments.masks, np.uint64)[number]
    exact = np.array(segments.exact, np.bool_)[number]
    below = np.array(segments.below, np.bool_)[number]
    del number
    distinct = set(segments.masks) | {0}
    first = np.ones(len(keys), np.bool_)      # the record starts a group of equal keys
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    if not first.all():
        # Merge only the groups of two or more records (a minority), then keep one record
        # per group: cheaper than reducing over every group.
        last = np.ones_like(first)            # the record ends its group
        last[:-1] = first[1:]
        multi = ~(first & last)
        starts = np.flatnonzero(first[multi])
        group_masks = masks[multi]
        group_exact = exact[multi]
        plain = (group_masks != 0) & ~group_exact
        group_masks = np.bitwise_or.reduceat(group_masks, starts)
        group_exact = np.logical_or.reduceat(group_exact, starts)
        group_exact &= ~np.logical_or.reduceat(plain, starts)
        group_below = np.logical_or.reduceat(below[multi], starts)
        where = np.flatnonzero(~last[first])  # which groups those are
        keys, masks, exact, below = keys[first], masks[first], exact[first], below[first]
        masks[where], exact[where], below[where] = group_masks, group_exact, group_below
        distinct.update(np.unique(group_masks).tolist())
        del last, multi, starts, plain, where
    del first
    combos = np.array(sorted(distinct), np.uint64)  # combos[0] = 0: "not an entry"
    combo = np.searchsorted(combos, masks).astype(np.uint16 if len(combos) <= 1 << 14
                                                   else np.uint32)
    del masks
    n = len(keys)
    n_entries = int(np.count_nonzero(combo))
    combo <<= _SHIFT
    combo |= exact.view(np.uint8) << 1
    combo |= below.view(np.uint8)
    words = combo
    dir_bits = min(hash_bits, 30, max(0, n.bit_length() - 1))
    singles = _singles(names, hashed)
    use_tlds = len(singles) <= _TLD_DICT_MAX and not any("\n" in s for s in singles)
    tld_blob = "\n".join(singles).encode() if use_tlds else b""
    sizes = [(n + 1) * 8, (1 << dir_bits) * 4, (n + 1) * words.itemsize, len(combos) * 8,
             len(tld_blob)]
    image = bytearray(_HEADER.size + sum(size + (-size % 8) for size in sizes))
    offsets = list(accumulate([_HEADER.size] + [size + (-size % 8) for size in sizes]))
    view = memoryview(image)
    _fill(np, view, offsets[0], np.uint64, keys, (1 << hash_bits) - 1)
    _directory(np, keys, hash_bits, np.frombuffer(view, np.uint32, 1 << dir_bits, offsets[1]))
    _fill(np, view, offsets[2], words.dtype, words, 0)
    _fill(np, view, offsets[3], np.uint64, combos, None)
    image[offsets[4]:offsets[4] + len(tld_blob)] = tld_blob
    flags = _FLAG_TLD_DICT if use_tlds else 0
    fields = [MAGIC, VERSION, hash_bits, dir_bits, words.itemsize, flags]
    fields += [n_entries, n, len(combos) - 1, len(tld_blob)]
    _HEADER.pack_into(image, 0, *fields, 0)
    _HEADER.pack_into(image, 0, *fields, _checksum(view))
    return image


def _fill(np: Any, view: memoryview, offset: int, dtype: Any, values: Any, last: int | None) -> None:
    """Copy `values` (and then `last`, if given) into the image at `offset`."""
    target = np.frombuffer(view, dtype, len(values) + (last is not None), offset)
    target[:len(values)] = values
    if last is not None:
        target[-1] = last


def _directory(np: Any, keys: Any, hash_bits: int, directory: Any) -> None:
    """Fill dir[b] = index of the first key whose top ``dir_bits`` bits are >= b."""
    directory[0] = 0
    if len(directory) > 1:
        tops = (keys >> np.uint64(hash_bits - (len(directory).bit_length() - 1))).view(np.int64)
        np.cumsum(np.bincount(tops, minlength=len(directory))[:-1], out=directory[1:],
                  dtype=np.uint32)


def _checksum(image: memoryview) -> int:
    """xxh3-64 of the header (up to the checksum field) and the body (~10 GB/s)."""
    digest = xxhash.xxh3_64(image[:_CHECKSUM_AT])
    digest.update(image[_HEADER.size :])
    return digest.intdigest()


# --------------------------------------------------------------------------- open


class _Header(NamedTuple):
    magic: bytes
    version: int
    hash_bits: int
    dir_bits: int
    val_size: int
    flags: int
    n_entries: int
    n_items: int
    n_combos: int
    tld_len: int
    checksum: int


def _section_sizes(h: _Header) -> list[int]:
    """Byte size of each section (before 8-byte padding), in file order."""
    return [
        (h.n_items + 1) * 8,
        (1 << h.dir_bits) * 4,
        (h.n_items + 1) * h.val_size,
        (h.n_combos + 1) * 8,
        h.tld_len,
    ]


def _parse(view: memoryview, source: str) -> tuple[_Header, list[memoryview]]:
    """Validate the image and return its header and section views (keys, dir, vals,
    combos, tlds).  Any inconsistency is a ValueError naming the file."""
    if len(view) < _HEADER.size:
        raise ValueError(f"{source}: truncated domain index ({len(view)} bytes)")
    h = _Header(*_HEADER.unpack_from(view, 0))
    if h.magic != MAGIC:
        raise ValueError(f"{source}: not a domain index (bad magic)")
    if h.version != VERSION:
        raise ValueError(f"{source}: unsupported domain index version {h.version}")
    if not (8 <= h.hash_bits <= 64 and h.dir_bits <= min(h.hash_bits, 30) and h.val_size in (2, 4)):
        raise ValueError(f"{source}: corrupt domain index header")
    if sys.byteorder != "little":
        raise ValueError(f"{source}: domain index files are little-endian; this host is not")
    sizes = _section_sizes(h)
    expected = _HEADER.size + sum(size + (-size % 8) for size in sizes)
    if expected != len(view):
        raise ValueError(f"{source}: truncated or oversized domain index "
                         f"({len(view)} bytes, expected {expected})")
    if _checksum(view) != h.checksum:
        raise ValueError(f"{source}: domain index checksum mismatch (corrupt file)")
    sections, offset = [], _HEADER.size
    for size, code in zip(sizes, ("Q", "I", "H" if h.val_size == 2 else "I", "Q", "B")):
        sections.append(view[offset : offset + size].cast(code))
        offset += size + (-size % 8)
    if sections[0][h.n_items] != (1 << h.hash_bits) - 1:
        raise ValueError(f"{source}: corrupt domain index (sentinel)")
    return h, sections


class DomainIndex:
    """Read-only suffix index; see the module docstring for layout and guarantees.

    ``match`` is an instance attribute (a closure over the mapped arrays) rather
    than a method: that saves the attribute loads of ``self._keys`` etc. on every
    call, about 5% of a lookup.
    """

    match: Callable[[str], Sequence[tuple[str, int]]]

    def __init__(self, buffer: bytearray | mmap.mmap, *, _source: str = "<memory>") -> None:
        """Wrap a complete file image (use build() or open(), not this)."""
        self._buffer = buffer
        self._source = _source
        h, (keys, directory, vals, combos, tld_blob) = _parse(memoryview(buffer), _source)
        self._len = h.n_entries
        self.nbytes = len(buffer)
        self.hash_bits = h.hash_bits
        hashf = _hash_fn(h.hash_bits)
        shift = h.hash_bits - h.dir_bits
        probe = _make_probe(keys, directory, vals, shift)
        use_dict = bool(h.flags & _FLAG_TLD_DICT)
        tlds = bytes(tld_blob).decode().split("\n") if use_dict and h.tld_len else []
        tld_get = _tld_getter(tlds, probe, hashf, use_dict, _source)
        self.match = _make_match(keys, directory, vals, combos, shift, hashf, tld_get, probe)

    # -- construction ---------------------------------------------------------

    @classmethod
    def build(cls, entries: Iterable[tuple[str, int]], *, _hash_bits: int = 64) -> DomainIndex:
        """Index (canonical domain, list mask) pairs; a repeated domain ORs its masks.

        ``_hash_bits`` < 64 exists only so tests can provoke and measure collisions.
        """
        with _gc_paused():
            names, masks, distinct = _columns(entries)
            _check_masks(distinct)
            runs = [(mask, sum(1 for _ in group)) for mask, group in groupby(masks)]
            del masks
            return cls._build(names, runs, _hash_bits)

    @classmethod
    def build_runs(cls, runs: Iterable[tuple[list[str], int]], *,
                   other_half: Callable[[], bytes] | None = None,
                   other_part: Callable[[], tuple[int, bytes]] | None = None,
                   _hash_bits: int = 64) -> DomainIndex:
        """build() for names that come in runs sharing one mask, as a list's sources do:
        no per-entry tuple is made.  With ``other_half``, this process hashes only the
        even-numbered names, and other_half() returns hash_half(names, 1) as computed,
        meanwhile, by another process from the same runs (the list compiler's worker).
        With ``other_part``, another process parsed and hashed more names (a piece of a big
        file): other_part() returns their mask and hash_part(), indexed as a last run."""
        runs = [(run, mask) for run, mask in runs if run]
        names: list[str] = runs[0][0] if len(runs) == 1 else []   # read, never changed
        for run, _ in runs if len(runs) > 1 else ():
            names += run
        counts = [(mask, len(run)) for run, mask in runs]
        _check_masks(mask for mask, _ in counts)
        with _gc_paused():
            return cls._build(names, counts, _hash_bits, other_half, other_part)

    @classmethod
    def _build(cls, names: list[str], runs: list[tuple[int, int]], hash_bits: int,
               other_half: Callable[[], bytes] | None = None,
               other_part: Callable[[], tuple[int, bytes]] | None = None) -> DomainIndex:
        if not 8 <= hash_bits <= 64:
            raise ValueError("_hash_bits must be between 8 and 64")
        if "" in names:
            raise ValueError("empty domain name in entries")
        hashf = _hash_fn(hash_bits)
        if other_part is not None:
            if hash_bits != 64:
                raise ValueError("other_part needs 64-bit keys")
            mine = _hash_names(names, hashf)          # while the other process hashes its own
            mask, data = other_part()
            _check_masks([mask])
            hashed, count = _merge_part(names, mine, data)
            runs = [*runs, (mask, count)]
        elif other_half is None:
            hashed = _hash_names(names, hashf)
        else:
            if hash_bits != 64:
                raise ValueError("other_half needs 64-bit keys")
            hashed = _merge_halves(names, _hash_names(names, hashf, 0, 2), other_half())
        return cls(_image(names, runs, hashed, hash_bits))

    def save(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        """Write the file atomically: a reader sees the old file or the new one, never half.

        ``durable=False`` skips the fsync (~0.2 s for 5M entries): for a cache whose loss or
        corruption (the checksum tells) only means building it again.
        """
        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(prefix=".domainindex-", dir=os.path.dirname(path) or ".")
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would hide it from a proxy user
                out.write(self._buffer)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> DomainIndex:
        """Memory-map a saved index read-only; ValueError if it is not a valid index."""
        path = os.fspath(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _HEADER.size:
                raise ValueError(f"{path}: truncated domain index ({size} bytes)")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mapped, _source=path)

    # -- queries ----------------------------------------------------------------

    def __len__(self) -> int:
        """Number of distinct entries given to build(); parent markers are not counted
        (nor, in theory, a second name whose 64-bit key collides with the first)."""
        return self._len

    def __repr__(self) -> str:
        return f"<DomainIndex {self._len} entries, {self.nbytes} bytes, {self._source}>"


# --------------------------------------------------------------------------- lookup


def _make_probe(
    keys: memoryview, directory: memoryview, vals: memoryview, shift: int
) -> Callable[[int], int]:
    """key -> its vals word, or 0 when absent (slow path helper; match() inlines it)."""

    def probe(key: int) -> int:
        j = directory[key >> shift]
        while (k := keys[j]) < key:
            j += 1
        return vals[j] if k == key else 0

    return probe


def _tld_getter(
    tlds: list[str],
    probe: Callable[[int], int],
    hashf: Callable[..., int],
    enabled: bool,
    source: str,
) -> Callable[[str, tuple[int, int]], tuple[int, int]]:
    """label -> (vals word, key) for the first level of a walk, or the default.

    A dict when the single-label names are few (always, for real lists): exact, and
    it saves one hash and one probe per lookup.  Otherwise a hashed probe.  Either way
    an all-digit label answers "absent", so that match() only has to look for a
    dotted-quad host when the TLD is unknown (see match()).
    """
    if not enabled:

        def hashed(label: str, default: tuple[int, int]) -> tuple[int, int]:
            if label.isdigit():
                return default
            key = hashf(label.encode())
            return probe(key), key

        return hashed
    table: dict[str, tuple[int, int]] = {}
    for label in tlds:
        key = hashf(label.encode())
        word = probe(key)
        if not word:
            raise ValueError(f"{source}: corrupt domain index (TLD table)")
        if not label.isdigit():
            table[label] = (word, key)
    return table.get


def _make_match(
    keys: memoryview,
    directory: memoryview,
    vals: memoryview,
    combos: memoryview,
    shift: int,
    hashf: Callable[..., int],
    tld_get: Callable[[str, tuple[int, int]], tuple[int, int]],
    probe: Callable[[int], int],
) -> Callable[[str], Sequence[tuple[str, int]]]:
    """Build the hot-path lookup as a closure (locals and cells are the cheapest loads)."""
    absent = (0, 0)
    ipv4 = _IPV4.fullmatch

    def exact(host: str) -> Sequence[tuple[str, int]]:
        """An IP-literal host matches only an entry equal to it; no walk."""
        word = probe(hashf(host.encode()))
        return [(host, combos[word >> _SHIFT])] if word >> _SHIFT else NO_MATCH

    def match(host: str) -> Sequence[tuple[str, int]]:
        """Every suffix of ``host`` (at label boundaries, host included) that is an entry,
        as (name, mask), shortest first; NO_MATCH (an empty tuple) when none."""
        if ":" in host:
            return exact(host)
        labels = host.split(".")
        n = len(labels) - 1
        word, key = tld_get(labels[n], absent)
        start = len(host) - len(labels[n])     # where the suffix being looked at begins
        if not word:
            # Unknown TLD: usually a miss.  tld_get never knows an all-digit label, so
            # dotted quads land here and are recognised only here, off the common path.
            if not labels[n].isdigit():
                return NO_MATCH
            if ipv4(host):
                return exact(host)
            key = hashf(labels[n].encode())
            word = probe(key)
        found: Sequence[tuple[str, int]] = NO_MATCH
        # Literals, not the named constants, on the hot path: word > 3 is "an entry"
        # (combo != 0), word & 2 is _EXACT, word & 1 is _BELOW, word >> 2 the combo.
        while word:
            if word > 3 and not word & 2:
                hit = (host[start:] if start else host, combos[word >> 2])
                if found:
                    found.append(hit)  # type: ignore[union-attr]
                else:
                    found = [hit]
            if not word & 1 or not n:
                return found
            n -= 1
            start -= len(labels[n]) + 1
            key = hashf(host[start:].encode())
            j = directory[key >> shift]
            while (k := keys[j]) < key:
                j += 1
            if k != key:
                return found
            word = vals[j]
        return found

    return match
