"""Compact, memory-mappable index of millions of blocklisted domains.

Every proxied request asks "is this host, or a domain above it, on a list?", so
the lookup is on the hot path; lists reach 5M entries, so memory matters.  A
``set[str]`` costs 90-130 bytes per entry (strings included) and tens of ms of
freeing per million on reload.  This index costs ~13 bytes per entry, lives in
one flat file that the proxy memory-maps (no per-entry Python objects; open() of a
5M index takes a few ms), and answers a lookup in a microsecond or two (one probe,
~0.5 us, per label of the host but the last).

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

    A lookup walking ``example.com -> www.example.com`` hashes each suffix (a slice of
    the host).  No key value is reserved (0 is an ordinary key); the largest value is the
    end sentinel, see below.

Layout (little-endian; each section 8-byte aligned; see ``_HEADER``)
    header  64 bytes: b"WPIDX", version, parameters, flags, counts, xxh3-64 checksum
    keys    uint64[n+1]  sorted; keys[n] is the sentinel 2**hash_bits - 1
    dir     uint32[2**d] dir[b] = index of the first key whose top d bits >= b
    vals    uint16 or uint32[n+1]  word = combo << 1 | exact
    combos  uint64[c+1]  the distinct list masks; combo 0 means "not an entry"

    A lookup probes every suffix of the host that has a dot, shortest first, and the
    last label too when the index holds single-label entries (a header flag; real lists
    have none or a handful): one probe for ``example.com``, two for ``www.example.com``.
    Versions 1 and 2 also stored every proper parent of an entry as a marker, so that
    a walk could stop at the first absent name; finding those parents for 5M names was
    the largest part of the build (1-2 s of CPU per process on the VM measured), and
    saved about one probe (~0.3 us) per lookup.  Version 3 stores entries only.

    A probe is ``j = dir[key >> shift]``, then step while ``keys[j] < key``: keys
    are sorted and the sentinel ends the array, so no bucket end is needed; with
    1-2 keys per bucket that is ~1.5 steps.  A real key equal to the sentinel
    value sorts before it, and the sentinel's word is 0 (absent).

    open() checks magic, version, parameters, exact file size and the checksum
    (header and body, ~10 GB/s), raising ValueError naming the file.  save()
    writes a temporary file and os.replace()s it, so a proxy that still maps the
    old file keeps a valid index until it swaps in the new one.

Build
    Names come as UTF-8 bytes.  Most are the list parser's clean lines, handed over as
    ``bytes`` with a promise (dotted, not an IP literal: see build_runs), so the build
    only hashes them, one C-level pass.  Names given as ``str`` are checked for IP
    literals and single labels first.  Then one record per name is sorted with numpy;
    repeated keys (an entry on several lists, a collision) end up adjacent and are
    OR-merged.  Two processes can share the hashing (hash_half, hash_part; the list
    compiler, compiler.py, runs builds in a worker; scripts/bench_index.py prints
    current figures).

False positives
    A key collision makes an unlisted name look listed.  With N entries and b-bit keys,
    one hashed probe collides with probability about N / 2**b, so a lookup making p
    probes (one per label of the host, less one) falsely matches with probability at
    most about p * N / 2**b: ~1e-12 for 5M names, b = 64 and a 5-label host.  Callers
    that must not over-block (statutory lists) confirm a hit against the exact entry.
    A collision can add a match or a list bit, never hide one.  Tests build with
    ``_hash_bits=16`` to measure the rate against this bound.
"""

from __future__ import annotations

import gc
import mmap
import os
import re
import struct
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate, chain, compress, count, groupby, islice, repeat
from operator import itemgetter, not_
from typing import Any, NamedTuple

import xxhash

__all__ = ["DomainIndex", "NO_MATCH", "hash_half", "hash_part", "is_ip_literal"]

MAGIC = b"WPIDX"
VERSION = 3
# magic, version, hash_bits, dir_bits, val_size, flags, pad,
# n_entries, n_items, n_combos, checksum, pad -> 64 bytes.  The checksum
# (xxh3-64) covers the header up to itself and everything after the header.
_HEADER = struct.Struct("<5sBBBBB2xQQQQ20x")
_CHECKSUM_AT = 36
_FLAG_SINGLE_LABELS = 1  # some entry is a single label: lookups probe the last label too

# A vals word is combo << 1 | exact, where exact (bit 0) marks an IP literal, which matches
# only a host equal to it; match() tests the bits as literals, on the hot path.

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


# --------------------------------------------------------------------------- build
#
# build() runs in the list compiler's worker process (compiler.py) at start-up and on
# reload, and must handle 5M entries in a few seconds.  Hashing is one C-level pass (map)
# over bytes the list parser cut from the file, with no bytecode per entry.  Everything
# after that -- sorting, merging repeated keys, numbering the list masks, the directory --
# is whole-array numpy work, which does it 10-20x faster than list.sort() over packed
# Python ints did.  numpy is imported inside build() only: the proxy process never builds
# (it maps files the worker wrote), and the lookup path uses none.  The hashing can be
# shared with a second process (hash_half, hash_part): the compiler's worker uses both
# CPUs so.

_M64 = (1 << 64) - 1

Run = tuple[Sequence[str] | Sequence[bytes], int]
"""Names sharing one list mask: ``str`` (any canonical hosts) or ``bytes`` (see build_runs)."""


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: the passes allocate millions of objects, and each
    generation-2 collection would re-walk every live container (2x slower)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_masks(distinct: Iterable[int]) -> None:
    distinct = list(distinct)
    if distinct and (min(distinct) <= 0 or max(distinct) > _M64):
        raise ValueError("list masks must be non-zero unsigned 64-bit integers")


def _find_ips(names: Sequence[str]) -> list[int]:
    """Positions of IP-literal names.  Only names ending in a digit or holding ':' can be
    one; those are found in C-level passes and only they go through the regex."""
    last_digit = map(_DIGITS.__contains__, map(itemgetter(-1), names))
    candidates = set(compress(count(), last_digit))
    candidates.update(compress(count(), map(str.__contains__, names, repeat(":"))))
    return sorted(i for i in candidates if is_ip_literal(names[i]))


def _has_single_labels(names: Sequence[str]) -> bool:
    """Whether a name other than an IPv6 literal has no dot."""
    undotted = compress(names, map(not_, map(str.__contains__, names, repeat("."))))
    return any(":" not in name for name in undotted)


class _Names(NamedTuple):
    """The runs' names as bytes, run by run (not copied into one list: 5M pointers take
    ~0.1 s to copy on the VM measured); and what the str runs held."""

    runs: list[Sequence[bytes]]
    size: int
    ips: list[int]  # positions of IP literals, counted over all the runs
    single_labels: bool  # some entry (not an IP literal) has no dot

    def all(self) -> Iterator[bytes]:
        return chain.from_iterable(self.runs)


def _gather(runs: Sequence[Sequence[str] | Sequence[bytes]]) -> _Names:
    """A run of str is checked (IP literals, single labels, empty names) and encoded; a run
    of bytes is taken as it is (build_runs' promise)."""
    encoded: list[Sequence[bytes]] = []
    ips: list[int] = []
    single_labels = False
    size = 0
    for run in runs:
        if isinstance(run[0], str):
            if "" in run:
                raise ValueError("empty domain name in entries")
            ips += (size + i for i in _find_ips(run))        # type: ignore[arg-type]
            single_labels = single_labels or _has_single_labels(run)  # type: ignore[arg-type]
            run = list(map(str.encode, run))                   # type: ignore[arg-type]
        encoded.append(run)                                    # type: ignore[arg-type]
        size += len(run)
    return _Names(encoded, size, ips, single_labels)


def _hash(names: Iterable[bytes], hashf: Callable[..., int]) -> array:
    return array("Q", map(hashf, names))


def hash_half(runs: Sequence[Run], part: int) -> bytes:
    """The keys of the runs' names number part, part + 2, ... (as build_runs gathers them),
    for a build in another process (see build_runs(other_half=)); as bytes, to send there.
    Interleaved, not halves: lists cluster their long names."""
    names = _gather([run for run, _ in runs if run])
    keys = _hash(islice(names.all(), part, None, 2), _xxh3)
    return struct.pack("<QQ", part, names.size) + memoryview(keys).cast("B")


def _merge_halves(size: int, mine: array, data: bytes) -> Any:
    """This process's keys (of names 0, 2, ...) and another's (hash_half(runs, 1)),
    interleaved."""
    import numpy as np

    part, n_names = struct.unpack_from("<QQ", data)
    if (part, n_names, len(data) - 16) != (1, size, size // 2 * 8):
        raise ValueError("domain index: the other half was hashed from other names")
    keys = np.empty(size, np.uint64)
    keys[0::2] = np.frombuffer(mine, np.uint64)
    keys[1::2] = np.frombuffer(data, np.uint64, offset=16)
    return keys


def hash_part(names: Sequence[bytes]) -> bytes:
    """The keys of `names`, a piece of a list that another process indexes after its own
    names (see build_runs(other_part=)), as bytes, to send there.  The names are bytes, as
    build_runs takes them (dotted, no IP literals); the list compiler's worker parses one
    big list file half in each process and sends this for its half."""
    return memoryview(_hash(names, _xxh3)).cast("B").tobytes()


def _merge_part(mine: array, data: bytes) -> tuple[Any, int]:
    """This process's keys, then another's (hash_part()); and how many the other had."""
    import numpy as np

    if len(data) % 8:
        raise ValueError("domain index: the other part's keys are not whole")
    theirs = np.frombuffer(data, np.uint64)
    return np.concatenate([np.asarray(mine, np.uint64), theirs]), len(theirs)


class _Segments(NamedTuple):
    """Every record in segments that share mask and flag, each segment sorted by key,
    all in one array."""

    keys: Any  # numpy uint64, segment after segment
    lengths: list[int]
    masks: list[int]  # per segment
    exact: list[bool]  # IP literals: match only themselves


def _segments(np: Any, keys: Any, ips: Sequence[int], runs: Sequence[tuple[int, int]]
              ) -> _Segments:
    """Per run of one mask its plain entries and its IP literals.  Sorting segments apart
    and merging them (a stable sort of presorted runs) beats one argsort of random keys
    3x, and each record's mask and flag then come from a segment number instead of
    gathers."""
    keys = np.asarray(keys, np.uint64)
    ip_positions = np.asarray(ips, np.intp)
    out = np.empty(len(keys), np.uint64)
    table = _Segments(out, [], [], [])
    at = start = 0

    def add(part: Any, mask: int, exact: bool) -> None:
        nonlocal at
        view = out[at:at + len(part)]
        view[:] = part
        view.sort()
        at += len(part)
        for column, value in zip(table[1:], (len(part), mask, exact)):
            column.append(value)

    for mask, length in runs:
        run = keys[start:start + length]
        lo, hi = (np.searchsorted(ip_positions, [start, start + length])
                  if len(ip_positions) else (0, 0))
        if hi > lo:
            local = ip_positions[lo:hi] - start
            add(run[local], mask, True)
            run = np.delete(run, local)
        add(run, mask, False)
        start += length
    return table


def _image(keys: Any, ips: Sequence[int], runs: Sequence[tuple[int, int]],
           single_labels: bool, hash_bits: int) -> bytearray:
    """The whole file image.  ``runs`` gives (mask, count) for consecutive keys.

    Records sorted by key, so an entry on two lists or a hash collision end up adjacent
    and are merged: OR of masks, and the exact-only flag survives only if every record
    in the group is an IP literal (a collision may add a false positive but must never
    hide a real entry).
    """
    import numpy as np

    segments = _segments(np, keys, ips, runs)
    del keys
    # Per record its segment number (few segments: 8 or 16 bits), which gives its mask and
    # flag; per-record masks (8 bytes each) would be gathered only to be numbered again.
    number_type = np.uint8 if len(segments.lengths) <= 1 << 8 else np.uint16 \
        if len(segments.lengths) <= 1 << 16 else np.intp
    if len(segments.lengths) == 1:
        keys = segments.keys                    # one segment: sorted already
        number = np.zeros(len(keys), number_type)
    else:
        order = np.argsort(segments.keys, kind="stable")
        keys = segments.keys[order]
        number = np.repeat(np.arange(len(segments.lengths), dtype=number_type),
                           segments.lengths)[order]
        del order
    seg_masks = np.array(segments.masks, np.uint64)
    seg_exact = np.array(segments.exact, np.bool_)
    distinct = set(segments.masks) | {0}
    first = np.ones(len(keys), np.bool_)      # the record starts a group of equal keys
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    groups = None
    if not first.all():
        # Merge only the groups of two or more records (a minority), then keep one record
        # per group: cheaper than reducing over every group.
        last = np.ones_like(first)            # the record ends its group
        last[:-1] = first[1:]
        multi = ~(first & last)
        starts = np.flatnonzero(first[multi])
        in_groups = number[multi]
        group_masks = np.bitwise_or.reduceat(seg_masks[in_groups], starts)
        group_exact = np.logical_and.reduceat(seg_exact[in_groups], starts)
        groups = np.flatnonzero(~last[first]), group_masks, group_exact  # which groups, what
        keys, number = keys[first], number[first]
        distinct.update(np.unique(group_masks).tolist())
        del last, multi, starts, in_groups
    del first
    combos = np.array(sorted(distinct), np.uint64)  # combos[0] = 0: "not an entry"
    word_type = np.uint16 if len(combos) <= 1 << 15 else np.uint32
    seg_words = (np.searchsorted(combos, seg_masks).astype(word_type) << 1) | seg_exact
    words = seg_words[number]
    del number
    if groups is not None:
        where, group_masks, group_exact = groups
        words[where] = (np.searchsorted(combos, group_masks).astype(word_type) << 1) | group_exact
    n = len(keys)
    dir_bits = min(hash_bits, 30, max(0, n.bit_length() - 1))
    sizes = [(n + 1) * 8, (1 << dir_bits) * 4, (n + 1) * words.itemsize, len(combos) * 8]
    image = bytearray(_HEADER.size + sum(size + (-size % 8) for size in sizes))
    offsets = list(accumulate([_HEADER.size] + [size + (-size % 8) for size in sizes]))
    view = memoryview(image)
    _fill(np, view, offsets[0], np.uint64, keys, (1 << hash_bits) - 1)
    _directory(np, keys, hash_bits, np.frombuffer(view, np.uint32, 1 << dir_bits, offsets[1]))
    _fill(np, view, offsets[2], words.dtype, words, 0)
    _fill(np, view, offsets[3], np.uint64, combos, None)
    flags = _FLAG_SINGLE_LABELS if single_labels else 0
    fields = [MAGIC, VERSION, hash_bits, dir_bits, words.itemsize, flags, n, n, len(combos) - 1]
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
    checksum: int


def _section_sizes(h: _Header) -> list[int]:
    """Byte size of each section (before 8-byte padding), in file order."""
    return [
        (h.n_items + 1) * 8,
        (1 << h.dir_bits) * 4,
        (h.n_items + 1) * h.val_size,
        (h.n_combos + 1) * 8,
    ]


def _parse(view: memoryview, source: str) -> tuple[_Header, list[memoryview]]:
    """Validate the image and return its header and section views (keys, dir, vals,
    combos).  Any inconsistency is a ValueError naming the file."""
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
    for size, code in zip(sizes, ("Q", "I", "H" if h.val_size == 2 else "I", "Q")):
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
        h, (keys, directory, vals, combos) = _parse(memoryview(buffer), _source)
        self._len = h.n_entries
        self.nbytes = len(buffer)
        self.hash_bits = h.hash_bits
        self.match = _make_match(keys, directory, vals, combos, h.hash_bits - h.dir_bits,
                                 _hash_fn(h.hash_bits), bool(h.flags & _FLAG_SINGLE_LABELS))

    # -- construction ---------------------------------------------------------

    @classmethod
    def build(cls, entries: Iterable[tuple[str, int]], *, _hash_bits: int = 64) -> DomainIndex:
        """Index (canonical domain, list mask) pairs; a repeated domain ORs its masks.

        ``_hash_bits`` < 64 exists only so tests can provoke and measure collisions.
        """
        with _gc_paused():
            pairs = list(entries)
            masks = list(map(itemgetter(1), pairs))
            counts = [(mask, sum(1 for _ in group)) for mask, group in groupby(masks)]
            if len(counts) > len(set(masks)):   # masks interleaved: one run per mask instead
                pairs.sort(key=itemgetter(1))
                counts = [(mask, sum(1 for _ in group))
                          for mask, group in groupby(map(itemgetter(1), pairs))]
            names = list(map(itemgetter(0), pairs))
            return cls._build([names] if names else [], counts, _hash_bits)

    @classmethod
    def build_runs(cls, runs: Iterable[Run], *,
                   other_half: Callable[[], bytes] | None = None,
                   other_part: Callable[[], tuple[int, bytes]] | None = None,
                   _hash_bits: int = 64) -> DomainIndex:
        """build() for names that come in runs sharing one mask, as a list's sources do:
        no per-entry tuple is made.  A run of ``str`` may hold any canonical hosts; a run
        of ``bytes`` promises names that are canonical ASCII hosts with a dot and no IP
        literal among them (the list parser's clean lines), and is not checked: an IP
        literal there would match as a domain, a dotless name never.

        With ``other_half``, this process hashes only the even-numbered names, and
        other_half() returns hash_half(runs, 1) as computed, meanwhile, by another process
        from the same runs (the list compiler's worker).  With ``other_part``, another
        process parsed and hashed more names (a piece of a big file): other_part()
        returns their mask and hash_part(), indexed as a last run."""
        runs = [(run, mask) for run, mask in runs if run]
        with _gc_paused():
            return cls._build([run for run, _ in runs], [(mask, len(run)) for run, mask in runs],
                              _hash_bits, other_half, other_part)

    @classmethod
    def _build(cls, names: list[Sequence[str] | Sequence[bytes]], counts: list[tuple[int, int]],
               hash_bits: int, other_half: Callable[[], bytes] | None = None,
               other_part: Callable[[], tuple[int, bytes]] | None = None) -> DomainIndex:
        """Index the names, given as sequences (see build_runs); counts: (mask, how many) for
        consecutive names."""
        _check_masks(mask for mask, _ in counts)
        if not 8 <= hash_bits <= 64:
            raise ValueError("_hash_bits must be between 8 and 64")
        if (other_half or other_part) and hash_bits != 64:
            raise ValueError("another process hashes with 64-bit keys only")
        gathered = _gather(names)
        hashf = _hash_fn(hash_bits)
        if other_part is not None:
            mine = _hash(gathered.all(), hashf)  # while the other process hashes its own
            mask, data = other_part()
            _check_masks([mask])
            keys, count = _merge_part(mine, data)
            counts.append((mask, count))
        elif other_half is not None:
            mine = _hash(islice(gathered.all(), 0, None, 2), hashf)
            keys = _merge_halves(gathered.size, mine, other_half())
        else:
            keys = _hash(gathered.all(), hashf)
        return cls(_image(keys, gathered.ips, counts, gathered.single_labels, hash_bits))

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
        """Number of distinct entries given to build() (less, in theory, a second name
        whose 64-bit key collides with the first)."""
        return self._len

    def __repr__(self) -> str:
        return f"<DomainIndex {self._len} entries, {self.nbytes} bytes, {self._source}>"


# --------------------------------------------------------------------------- lookup


def _make_match(
    keys: memoryview,
    directory: memoryview,
    vals: memoryview,
    combos: memoryview,
    shift: int,
    hashf: Callable[..., int],
    single_labels: bool,
) -> Callable[[str], Sequence[tuple[str, int]]]:
    """Build the hot-path lookup as a closure (locals and cells are the cheapest loads)."""
    ipv4 = _IPV4.fullmatch

    def probe(key: int) -> int:
        j = directory[key >> shift]
        while (k := keys[j]) < key:
            j += 1
        return vals[j] if k == key else 0

    def exact(host: str) -> Sequence[tuple[str, int]]:
        """An IP-literal host matches only an entry equal to it; no walk."""
        word = probe(hashf(host.encode()))
        return [(host, combos[word >> 1])] if word else NO_MATCH

    def match(host: str) -> Sequence[tuple[str, int]]:
        """Every suffix of ``host`` (at label boundaries, host included) that is an entry,
        as (name, mask), shortest first; NO_MATCH (an empty tuple) when none."""
        if ":" in host:
            return exact(host)
        dot = host.rfind(".")
        if dot < 0:
            if not single_labels or not host:
                return NO_MATCH
            word = probe(hashf(host.encode()))
            return [(host, combos[word >> 1])] if word > 1 and not word & 1 else NO_MATCH
        if host[-1] in "0123456789" and ipv4(host):
            return exact(host)
        found: Sequence[tuple[str, int]] = NO_MATCH
        if single_labels:
            word = probe(hashf(host[dot + 1:].encode()))
            if word > 1 and not word & 1:    # an entry (combo != 0), not an IP literal's
                found = [(host[dot + 1:], combos[word >> 1])]
        while True:
            start = host.rfind(".", 0, dot) + 1     # 0 once the whole host is reached
            name = host[start:] if start else host
            key = hashf(name.encode())
            j = directory[key >> shift]
            while (k := keys[j]) < key:
                j += 1
            if k == key and (word := vals[j]) > 1 and not word & 1:
                if found:
                    found.append((name, combos[word >> 1]))  # type: ignore[union-attr]
                else:
                    found = [(name, combos[word >> 1])]
            if not start:
                return found
            dot = start - 1

    return match
