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
    A name's key is a chain of xxh3-64 hashes over its labels, from the TLD out::

        key("com") = xxh3_64(b"com")
        key("example.com") = xxh3_64(b"example", seed=key("com"))

    This is an ordinary 64-bit hash of the name, but a lookup walking
    ``com -> example.com -> www.example.com`` hashes one label per level instead
    of finding, slicing and re-hashing every suffix.  No key value is reserved
    (0 is an ordinary key); the largest value is the end sentinel, see below.

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
    Records ``key << 32 | word`` for every entry and every marker go through one
    list.sort(); repeated keys (an entry on several lists, an entry that is also a
    parent) end up adjacent and are OR-merged.  Parents' keys are computed on
    demand while the entries are hashed (see _Seeds).  Everything per entry is a
    C-level pass; about 2 s of CPU per million entries on the 2-core VM measured
    (scripts/bench_index.py prints current figures).

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
import mmap
import os
import re
import struct
import sys
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate, compress, count, islice, repeat, tee
from operator import and_, eq, itemgetter, lshift, not_, or_, rshift
from typing import NamedTuple

import xxhash

__all__ = ["DomainIndex", "NO_MATCH", "is_ip_literal"]

MAGIC = b"WPIDX"
VERSION = 1
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

    def truncated(data: bytes, seed: int = 0) -> int:
        return _xxh3(data, seed) >> drop

    return truncated


def _chain_key(name: str, hashf: Callable[..., int]) -> int:
    """Key of one name, label by label (used for IP literals and TLDs only)."""
    key = 0
    for label in reversed(name.encode().split(b".")):
        key = hashf(label, key)
    return key


# --------------------------------------------------------------------------- build
#
# build() runs in a worker process at reload time but must still handle 5M entries
# in seconds, so it is a pipeline of whole-list C-level passes (map, tee, compress,
# list.sort) with Python bytecode only per distinct parent name and per repeated
# key, never per entry.  Each pass costs ~50-200 ns per item on the 2-core VM these
# figures come from (more at 5M, where few accesses hit the cache), so the number
# of passes, and of random accesses into big structures, is what the code minimises.

_M64 = (1 << 64) - 1
_KEY_SHIFT = 32  # a build record is key << 32 | vals word
_WORD = (1 << _KEY_SHIFT) - 1


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
    """Names, masks and the distinct masks; masks must be non-zero unsigned 64-bit."""
    pairs = entries if isinstance(entries, list) else list(entries)
    names = list(map(itemgetter(0), pairs))
    masks = list(map(itemgetter(1), pairs))
    distinct = set(masks)  # usually a handful of shared objects: one fast pass
    if distinct and (min(distinct) <= 0 or max(distinct) > _M64):
        raise ValueError("list masks must be non-zero unsigned 64-bit integers")
    return names, masks, distinct


def _parents(names: Iterable[str]) -> Iterator[str]:
    """Stream of each name's parent ('' for a single label).

    Streams rather than lists: first-touch page faults cost ~0.4-2 s per GB on the
    VM measured, so materialising millions of tuples costs more than recomputing.
    """
    return map(itemgetter(2), map(str.partition, names, repeat(".")))


def _chain_keys(
    names: Iterable[str], seeds: dict[str, int], hashf: Callable[..., int]
) -> Iterator[int]:
    """Stream of chain keys: each name's first label hashed with its parent's key as seed."""
    left, right = tee(map(str.partition, names, repeat(".")))
    labels = map(str.encode, map(itemgetter(0), left))
    return map(hashf, labels, map(seeds.__getitem__, map(itemgetter(2), right)))


class _Seeds(dict[str, int]):
    """Parent name -> chain key, filled on demand while the entries are hashed.

    An entry's key needs its parent's key as the seed; a missing parent is hashed
    (recursively up to its TLD) the first time an entry asks for it.  The filled
    dict is then exactly the set of markers, found in the same single pass over the
    entries, with Python code running once per distinct parent, not per entry.
    """

    def __init__(self, hashf: Callable[..., int]) -> None:
        super().__init__()
        self.hashf = hashf
        self.tlds: list[str] = []  # single-label parents
        self.single_label_entries = False  # some entry had no dot (parent "")

    def __missing__(self, parent: str) -> int:
        if not parent:
            self.single_label_entries = True
            self[""] = 0
            return 0
        label, _, grand = parent.partition(".")
        if grand:
            key = self.hashf(label.encode(), self[grand])
        else:
            key = self.hashf(label.encode())
            self.tlds.append(parent)
        self[parent] = key
        return key


def _find_ips(names: list[str], seeds: _Seeds) -> list[int]:
    """Positions of IP-literal names.  A dotted quad's parent ends in a digit and an
    IPv6 literal has no dot (parent "") or an IPv4 tail, so only names under such
    parents go through the regex - for a normal list, none, and no pass at all."""
    odd = set(compress(seeds, map(_DIGITS.__contains__, map(itemgetter(-1), seeds))))
    if seeds.single_label_entries:
        odd.add("")
    if not odd:
        return []
    candidates = compress(range(len(names)), map(odd.__contains__, _parents(names)))
    return [i for i in candidates if is_ip_literal(names[i])]


class _Combos:
    """The distinct list masks, numbered from 1 (0 = "not an entry")."""

    def __init__(self) -> None:
        self.masks: list[int] = [0]
        self.numbers: dict[int, int] = {0: 0}

    def word(self, mask: int) -> int:
        """vals word (flags clear) for an entry with this mask."""
        number = self.numbers.get(mask)
        if number is None:
            number = self.numbers[mask] = len(self.masks)
            self.masks.append(mask)
        return number << _SHIFT

    def merge(self, a: int, b: int) -> int:
        """One word for two records with the same key: OR of masks and flags.  The
        exact-only flag survives only if neither side is a plain (domain) entry: a
        collision may add a false positive but must never hide a real entry."""
        word = self.word(self.masks[a >> _SHIFT] | self.masks[b >> _SHIFT])
        word |= (a | b) & (_EXACT | _BELOW)
        if word & _EXACT and (_plain_entry(a) or _plain_entry(b)):
            word &= ~_EXACT
        return word


def _plain_entry(word: int) -> bool:
    """A domain entry (not a bare marker, not an exact-only IP entry)."""
    return word >> _SHIFT != 0 and not word & _EXACT


def _records(
    names: list[str], masks: list[int], word_of: dict[int, int], hashf: Callable[..., int]
) -> tuple[list[int], list[str]]:
    """One packed record per entry and per marker (unsorted, keys may repeat), and
    the single-label names.  ``word_of`` maps each list mask to its vals word.

    A record is a single int, ``key << 32 | word`` (the word as in the file): one
    sort() then orders by key and brings repeats together, so no dict over millions
    of keys is needed (a random access into one costs up to ~1 us at 5M entries).

    IP-literal entries get the exact-only flag afterwards (their chain key is the
    same); the parents they created ("2.3.4", "3.4", "4") stay as harmless markers:
    an IP host is never walked, and a walk that reaches the IP's own name finds
    an exact-only entry it does not report.
    """
    seeds = _Seeds(hashf)
    entry_keys = map(lshift, _chain_keys(names, seeds, hashf), repeat(_KEY_SHIFT))
    records = list(map(or_, entry_keys, map(word_of.__getitem__, masks)))
    seeds.pop("", None)
    ips = _find_ips(names, seeds)
    for i in ips:
        records[i] |= _EXACT
    records += map(or_, map(lshift, seeds.values(), repeat(_KEY_SHIFT)), repeat(_BELOW))
    singles = seeds.tlds
    if seeds.single_label_entries:
        ipset = {names[i] for i in ips}
        single_entries = compress(names, map(not_, _parents(names)))
        singles = sorted(set(singles).union(n for n in single_entries if n not in ipset))
    return records, singles


def _merge_repeats(records: list[int], keys: array, combos: _Combos) -> tuple[list[int], array]:
    """Merge sorted records with equal keys (an entry on two lists, an entry that is
    also a parent, a hash collision).  Repeats are common, but a Python loop over
    just those is cheap."""
    repeats = list(compress(count(1), map(eq, islice(keys, 1, None), keys)))
    if not repeats:
        return records, keys
    merge = combos.merge
    for i in reversed(repeats):
        a, b = records[i - 1], records[i]
        if a & _WORD == _BELOW:  # the usual repeat: a bare marker sorts just before its entry
            records[i - 1] = a | b
        else:
            records[i - 1] = a & ~_WORD | merge(a & _WORD, b & _WORD)
    keep = bytearray(b"\1") * len(records)
    for i in repeats:
        keep[i] = 0
    return list(compress(records, keep)), array("Q", compress(keys, keep))


def _layout(records: list[int], combos: _Combos, singles: list[str], hash_bits: int) -> bytearray:
    """Sort the records (consuming the list), derive keys/words/dir/combos and return
    the whole file image."""
    records.sort()
    keys = array("Q", map(rshift, records, repeat(_KEY_SHIFT)))
    merged, keys = _merge_repeats(records, keys, combos)
    words = array("I", map(and_, merged, repeat(_WORD)))
    records.clear()
    del merged
    if len(combos.masks) <= 1 << (16 - _SHIFT):
        words = array("H", words)
    n = len(keys)
    n_entries = n - words.count(_BELOW)  # a bare marker's word is exactly _BELOW
    words.append(0)
    dir_bits = min(hash_bits, 30, max(0, n.bit_length() - 1))
    directory = _directory(keys, hash_bits, dir_bits)
    keys.append((1 << hash_bits) - 1)
    use_tlds = len(singles) <= _TLD_DICT_MAX and not any("\n" in s for s in singles)
    tld_blob = "\n".join(singles).encode() if use_tlds else b""
    image = bytearray(_HEADER.size)
    for part in (keys, directory, words, array("Q", combos.masks), tld_blob):
        image += memoryview(part).cast("B")
        image += bytes(-len(image) % 8)
    flags = _FLAG_TLD_DICT if use_tlds else 0
    fields = [MAGIC, VERSION, hash_bits, dir_bits, words.itemsize, flags]
    fields += [n_entries, n, len(combos.masks) - 1, len(tld_blob)]
    _HEADER.pack_into(image, 0, *fields, 0)
    _HEADER.pack_into(image, 0, *fields, _checksum(memoryview(image)))
    return image


def _checksum(image: memoryview) -> int:
    """xxh3-64 of the header (up to the checksum field) and the body (~10 GB/s)."""
    digest = xxhash.xxh3_64(image[:_CHECKSUM_AT])
    digest.update(image[_HEADER.size :])
    return digest.intdigest()


def _directory(keys: array, hash_bits: int, dir_bits: int) -> array:
    """dir[b] = index of the first key whose top ``dir_bits`` bits are >= b."""
    counts = Counter(map(rshift, keys, repeat(hash_bits - dir_bits)))
    directory = array("I", [0])
    directory.extend(accumulate(map(counts.get, range((1 << dir_bits) - 1), repeat(0))))
    return directory


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
        if not 8 <= _hash_bits <= 64:
            raise ValueError("_hash_bits must be between 8 and 64")
        with _gc_paused():
            names, masks, distinct = _columns(entries)
            if "" in names:
                raise ValueError("empty domain name in entries")
            combos = _Combos()
            word_of = {mask: combos.word(mask) for mask in sorted(distinct)}
            records, singles = _records(names, masks, word_of, _hash_fn(_hash_bits))
            del names, masks
            image = _layout(records, combos, singles, _hash_bits)
        return cls(image)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the file atomically: a reader sees the old file or the new one, never half."""
        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(prefix=".domainindex-", dir=os.path.dirname(path) or ".")
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would hide it from a proxy user
                out.write(self._buffer)
                out.flush()
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
        word = probe(_chain_key(host, hashf))
        return [(host, combos[word >> _SHIFT])] if word >> _SHIFT else NO_MATCH

    def match(host: str) -> Sequence[tuple[str, int]]:
        """Every suffix of ``host`` (at label boundaries, host included) that is an entry,
        as (name, mask), shortest first; NO_MATCH (an empty tuple) when none."""
        if ":" in host:
            return exact(host)
        labels = host.split(".")
        n = len(labels) - 1
        word, key = tld_get(labels[n], absent)
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
                hit = (".".join(labels[n:]) if n else host, combos[word >> 2])
                if found:
                    found.append(hit)  # type: ignore[union-attr]
                else:
                    found = [hit]
            if not word & 1 or not n:
                return found
            n -= 1
            key = hashf(labels[n].encode(), key)
            j = directory[key >> shift]
            while (k := keys[j]) < key:
                j += 1
            if k != key:
                return found
            word = vals[j]
        return found

    return match
