"""UT1 categories downloaded as UT1 publishes them, kept with their attribution.

Université Toulouse 1 Capitole publishes its blacklists (CC BY-SA 4.0) at
https://dsi.ut-capitole.fr/blacklists/download/ both as one archive, `blacklists.tar.gz`
(`blacklists/<category>/domains`, `urls`, `expressions`; aliases such as porn -> adult are
symbolic links), and as one archive per category, `<category>.tar.gz` (`<category>/domains`,
...).  A `{ut1: URL, categories: [...]}` source (policy/model.py) names either: a URL ending
in "/" is the directory (one download per category), one ending in .tar.gz the archive.

lists/remote.py downloads (and gunzips) each archive and checks it is whole; this module
takes the categories out of it and keeps them as UT1 category directories, the form
lists/formats.py reads.  The source's copy is a directory holding, per category, a symbolic
link `<category>` to a version directory `.<category>.<n>`: a new version is written and
checked beside the one in force, then the link is replaced in one rename, so the proxy's
reloader never sees a half-written category, and the version before stays on disk for a
reader still in it.  Nothing is extracted by tarfile itself: only the three list files of the
categories asked for are copied, into names this module chooses.

Each category is checked before it goes in: it has entries, no more bad lines than good
ones, it still has every file the last good copy had (a category that lost its `domains` is
refused, never loaded smaller), and it did not shrink beyond the source's `max_shrink`.
Each version carries a SOURCE note (the attribution, where and when it was downloaded, and
the files it holds, which lists/formats.py then expects) like scripts/import_ut1.py's.

UT1 publishes the MD5 sum of every archive in one file beside them, `MD5SUM.LST` (md5sum's
output: `<32 hex digits>  <name>.tar.gz` per line, the archive and every category; the
aliases too).  sum_urls() says where to look (that file, then a per-archive `<name>.md5`, as
a mirror may publish it, which may also be a bare hex line) and published_md5() reads one.
MD5 only catches an archive corrupted or cut short on the way (or a mirror's stale copy):
anyone who can change the archive can change the sum beside it, so HTTPS, not the sum,
says the archive comes from UT1.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from webpolicy.lists.formats import UT1_FILES, UT1_NOTE, SourceError, parse_source

ATTRIBUTION = "UT1 blacklists, Université Toulouse 1 Capitole, CC BY-SA 4.0"
SHORT_ATTRIBUTION = "UT1 blacklists (Université Toulouse 1 Capitole)"
LICENCE = "CC BY-SA 4.0"
LICENCE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
UT1_HOME = "https://dsi.ut-capitole.fr/blacklists/"
# On a block page whose list came from UT1: short, for a learner, and what the licence asks.
BLOCK_PAGE_CREDIT = f"Category list: {SHORT_ATTRIBUTION}, {LICENCE}"
_CHUNK = 1 << 20
_VERSION = re.compile(r"\.(?P<category>.+)\.(?P<n>\d+)")
SUMS_FILE = "MD5SUM.LST"
# md5sum's line (`<hex>  <name>`, `<hex> *<name>` in binary mode; any white space, since the
# exact spacing of UT1's file is not documented) and BSD md5's (`MD5 (<name>) = <hex>`).
_MD5_LINE = re.compile(r"(?P<hex>[0-9a-fA-F]{32})\s+\*?(?P<name>\S.*)")
_MD5_BSD = re.compile(r"MD5 \((?P<name>.+)\) = (?P<hex>[0-9a-fA-F]{32})")
_MD5_BARE = re.compile(r"[0-9a-fA-F]{32}")


class UT1Error(Exception):
    """A downloaded UT1 archive that may not replace the last good copy (the reason)."""


@dataclass(frozen=True)
class Staged:
    """A category taken out of a download, checked, not yet in force."""
    category: str
    directory: Path                      # the new version directory beside the one in force
    entries: int
    files: tuple[str, ...]               # of UT1_FILES, those it has


def downloads(url: str, categories: Iterable[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(URL to fetch, the categories in it): the archive once, or one file per category."""
    categories = tuple(categories)
    parts = urlsplit(url)
    if not parts.path.endswith("/"):
        return [(url, categories)]
    return [(urlunsplit(parts._replace(path=f"{parts.path}{name}.tar.gz")), (name,))
            for name in categories]


def sum_urls(archive_url: str) -> tuple[str, str]:
    """Where an archive's MD5 may be published: UT1's MD5SUM.LST in the archive's directory,
    and `<archive>.md5` beside it."""
    parts = urlsplit(archive_url)
    directory = parts.path.rsplit("/", 1)[0] + "/"
    return (urlunsplit(parts._replace(path=directory + SUMS_FILE)),
            urlunsplit(parts._replace(path=parts.path + ".md5")))


def archive_name(archive_url: str) -> str:
    """The name a sums file lists an archive under: the last part of its URL's path."""
    return urlsplit(archive_url).path.rsplit("/", 1)[-1]


def published_md5(text: str, name: str, *, bare: bool = False) -> str | None:
    """The MD5 (lower case) a sums file gives for the file `name`, or None if it names none.
    `bare`: a file for this archive alone, whose sum may stand alone on its line."""
    lines = [line.strip() for line in text.splitlines()]
    for line in lines:
        found = _MD5_LINE.fullmatch(line) or _MD5_BSD.fullmatch(line)
        if found and PurePosixPath(found["name"].strip()).name == name:
            return found["hex"].lower()
    if bare:
        sums = [line for line in lines if line and not line.startswith("#")]
        if len(sums) == 1 and _MD5_BARE.fullmatch(sums[0]):
            return sums[0].lower()
    return None


def has_copy(copy: Path, categories: Iterable[str]) -> bool:
    """Whether every category has a version in force."""
    return all((copy / name).is_dir() for name in categories)


def files_of(directory: Path) -> tuple[str, ...]:
    """The UT1 list files a category directory holds."""
    return tuple(name for name in UT1_FILES
                 if (directory / name).is_file() or (directory / f"{name}.gz").is_file())


# -- taking categories out of an archive ---------------------------------------------------

class Archive:
    """A UT1 tar archive, indexed: `blacklists/<category>/<file>` or `<category>/<file>`.
    Also what scripts/import_ut1.py reads a downloaded blacklists.tar.gz with."""

    def __init__(self, path: Path, label: str) -> None:
        self.label = label
        try:
            self.tar = tarfile.open(path, "r:*")
            members = self.tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UT1Error(f"{label}: not a readable tar archive ({exc})") from None
        self.members: dict[tuple[str, str], tarfile.TarInfo] = {}
        self.links: dict[str, str] = {}
        for member in members:
            parts = PurePosixPath(member.name.removeprefix("./")).parts
            if parts[:1] == ("blacklists",):
                parts = parts[1:]
            if len(parts) == 1 and member.issym():
                self.links[parts[0]] = PurePosixPath(member.linkname.rstrip("/")).name
            elif len(parts) == 2 and parts[1] in UT1_FILES and (
                    member.isfile() or member.issym() or member.islnk()):
                self.members[(parts[0], parts[1])] = member

    def names(self) -> dict[str, str]:
        """Every category with a list file -> the directory holding it (itself, or the
        target of an alias)."""
        real = {category for category, _ in self.members}
        found = {name: name for name in real}
        found.update({alias: target for alias, target in self.links.items()
                      if target in real and alias not in real})
        return dict(sorted(found.items()))

    def categories(self) -> list[str]:
        return list(self.names())

    def real(self, name: str) -> str:
        """The directory holding `name` (itself, or an alias's target)."""
        found = self.names().get(name)
        if found is None:
            shown = ", ".join(self.categories()[:40]) or "none"
            raise UT1Error(f"{self.label}: no UT1 category '{name}' in it (it has: {shown})")
        return found

    def files(self, name: str) -> tuple[str, ...]:
        """The UT1 list files category `name` has in the archive."""
        real = self.real(name)
        return tuple(file for file in UT1_FILES if (real, file) in self.members)

    def copy(self, name: str, directory: Path, max_bytes: int) -> dict[str, int]:
        """The category's list files into `directory`; returns lines per file."""
        wanted = [(name, file, directory / file) for file in self.files(name)]
        return {target.name: lines for target, lines in self.copy_files(wanted, max_bytes)}

    def copy_files(self, wanted: Iterable[tuple[str, str, Path]],
                   max_bytes: int) -> Iterator[tuple[Path, int]]:
        """Each (category, file, target): the member copied, unmodified, to target; yields
        (target, lines) in the archive's order, since a compressed tar only reads forward
        cheaply."""
        chosen = [(self.members[(self.real(name), file)], target)
                  for name, file, target in wanted]
        for member, target in sorted(chosen, key=lambda item: item[0].offset):
            try:
                source = self.tar.extractfile(member)
            except (tarfile.TarError, KeyError) as exc:
                raise UT1Error(f"{self.label}: {member.name}: cannot be read ({exc})") from None
            if source is None:
                raise UT1Error(f"{self.label}: {member.name} is not a regular file")
            try:
                with source, open(target, "wb") as out:
                    lines = copy_counting(source, out, max_bytes)
            except (tarfile.TarError, EOFError, zlib.error) as exc:
                raise UT1Error(f"{self.label}: {member.name}: cut short ({exc})") from None
            yield target, lines

    def close(self) -> None:
        self.tar.close()


def copy_counting(source: BinaryIO, out: BinaryIO, max_bytes: int) -> int:
    """Copy bytes unmodified; the line count (wc -l, plus an unterminated last line)."""
    lines, last, size = 0, b"\n", 0
    while chunk := source.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise UT1Error(f"more than {max_bytes >> 20} MB in one file")
        out.write(chunk)
        lines += chunk.count(b"\n")
        last = chunk[-1:]
    return lines + (last != b"\n")


def stage(copy: Path, archive: Path, categories: Iterable[str], *, label: str, url: str,
          when: float, max_bytes: int) -> list[Staged]:
    """Take `categories` out of the (decompressed) tar `archive` into new version
    directories in `copy`, each with its SOURCE note, and parse each (not yet checked
    against the last good copy: see check).  UT1Error if one is missing or unreadable."""
    copy.mkdir(parents=True, exist_ok=True)
    tar = Archive(archive, label)
    staged: list[Staged] = []
    try:
        for name in categories:
            directory = copy / f".{name}.{time.time_ns()}"
            directory.mkdir()
            staged.append(Staged(name, directory, 0, ()))       # so discard() finds it
            counts = tar.copy(name, directory, max_bytes)
            day = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
            write_note(directory / UT1_NOTE, name, tar.real(name), counts,
                       f"Downloaded: {day} from {url} by webpolicy")
            staged[-1] = validate(name, directory, counts)
    except BaseException:
        discard(staged)
        raise
    finally:
        tar.close()
    return staged


def validate(name: str, directory: Path, counts: Mapping[str, int]) -> Staged:
    """UT1Error unless the category copied into `directory` (`counts`: lines per file) has a
    domains or urls file, parses, has entries, and no more bad lines than entries."""
    if "domains" not in counts and "urls" not in counts:
        raise UT1Error(f"category {name}: neither a domains nor a urls file in the download")
    try:
        parsed = parse_source(directory, "ut1")
    except SourceError as exc:
        raise UT1Error(f"category {name}: {exc.message}") from None
    if parsed.entries == 0:
        raise UT1Error(f"category {name}: no entries ({parsed.lines:,} lines)")
    if parsed.skipped > parsed.entries:
        raise UT1Error(f"category {name}: more bad lines ({parsed.skipped:,}) than entries "
                       f"({parsed.entries:,}), e.g. {parsed.skipped_examples[0]}")
    return Staged(name, directory, parsed.entries, files_of(directory))


def write_note(path: Path, name: str, real: str, counts: Mapping[str, int],
               provenance: str) -> None:
    """The SOURCE note: the attribution the licence asks for, the category, `provenance`
    (one line: when, from where, by what), and the files (lists/formats.py expects them)."""
    origin = real if real == name else f"{real} (UT1 alias {name} -> {real})"
    files = ", ".join(f"{file} ({counts[file]:,} lines)" for file in UT1_FILES if file in counts)
    path.write_text(
        f"{ATTRIBUTION}\n{UT1_HOME}\n\n"
        f"Category: {name}, from UT1 directory {origin}\n"
        f"{provenance}\n"
        f"Files: {files}, copied unmodified (one domain, or host/path, per line).\n\n"
        f"Licence: Creative Commons Attribution-ShareAlike 4.0, {LICENCE_URL}\n"
        "Anyone redistributing these files, or lists derived from them, must keep this\n"
        "attribution and the same licence.\n", encoding="utf-8")


# -- checking against the last good copy, and putting in force ------------------------------

def check(copy: Path, staged: list[Staged], previous: Mapping[str, int], max_shrink: float,
          accept_shrink: bool) -> None:
    """UT1Error if a category lost a file its last good copy has, or shrank beyond
    max_shrink (unless accepted).  `previous`: entries per category at the last success."""
    for item in staged:
        current = copy / item.category
        if not current.is_dir():
            continue
        lost = [file for file in files_of(current) if file not in item.files]
        if lost:
            raise UT1Error(f"category {item.category}: the download has no {lost[0]} file, "
                           "which the last good copy has; a category that loses a part is "
                           "refused, never loaded smaller")
        before = previous.get(item.category) or _entries(current)
        if before and item.entries < before * (1 - max_shrink) and not accept_shrink:
            gone = 1 - item.entries / before
            raise UT1Error(f"category {item.category}: {item.entries:,} entries where the last "
                           f"good copy has {before:,}: {gone:.0%} lost, more than max_shrink "
                           f"{max_shrink:g} allows (`webpolicy update --accept-shrink` takes it)")


def _entries(directory: Path) -> int:
    try:
        return parse_source(directory, "ut1").entries
    except SourceError:
        return 0


def install(copy: Path, staged: list[Staged]) -> None:
    """Put each staged version in force (one rename of its link), then remove the versions
    older than the one it replaced."""
    for item in staged:
        link = copy / item.category
        temporary = copy / f".{item.category}.link.tmp"
        temporary.unlink(missing_ok=True)
        os.symlink(item.directory.name, temporary)
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        os.replace(temporary, link)
        _prune(copy, item.category)
    _sync(copy)


def _prune(copy: Path, category: str) -> None:
    """Remove every version of a category but the one in force and the one before it (a
    reader may still be in that), stale ones left by a killed download included."""
    versions = []
    for entry in copy.iterdir():
        found = _VERSION.fullmatch(entry.name)
        if found and found["category"] == category and entry.is_dir() \
                and not entry.is_symlink():
            versions.append((int(found["n"]), entry.name))
    in_force = os.readlink(copy / category) if (copy / category).is_symlink() else ""
    current = _VERSION.fullmatch(in_force)
    older = [name for n, name in sorted(versions) if current and n < int(current["n"])]
    keep = {in_force, *older[-1:]}
    for _, name in versions:
        if name not in keep:
            shutil.rmtree(copy / name, ignore_errors=True)


def discard(staged: list[Staged]) -> None:
    for item in staged:
        shutil.rmtree(item.directory, ignore_errors=True)


def _sync(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
