#!/usr/bin/env python3
"""Import categories of the UT1 blacklists into blocklists/ut1/<category>/.

UT1 (Université Toulouse 1 Capitole, https://dsi.ut-capitole.fr/blacklists/) publishes
blacklists.tar.gz, whose members are blacklists/<category>/{domains,urls,expressions}.  This
copies the chosen categories unmodified (webpolicy reads them with `format: ut1`), adds a
SOURCE note with the date and the CC BY-SA 4.0 attribution the licence requires, and prints
line counts so a truncated download shows up before it reaches policy.yaml.

    scripts/import_ut1.py blacklists.tar.gz                       # the default set
    scripts/import_ut1.py blacklists/ --categories adult,gambling  # an extracted tarball
    scripts/import_ut1.py blacklists.tar.gz --list                 # what the source holds

Some UT1 names are aliases (symbolic links): porn -> adult, drugs -> drogue, aggressive and
violence -> agressif, proxy -> redirector.  An alias is imported under the name asked for.
Each category is written to a temporary directory and renamed into place, so a proxy
watching blocklists/ never reads a half-written list.  Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

ATTRIBUTION = "UT1 blacklists, Université Toulouse 1 Capitole, CC BY-SA 4.0"
UT1_HOME = "https://dsi.ut-capitole.fr/blacklists/"
LICENCE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
FILES = ("domains", "urls", "expressions")
DEFAULT_DEST = Path(__file__).resolve().parents[1] / "blocklists" / "ut1"

# For a UK training provider (KCSIE-style "appropriate filtering"): illegal and harmful
# content, malware, piracy and filter bypass.  "violence" is the same UT1 data as
# "aggressive" (agressif), so only one is in the default set.  Categories that over-block
# for adult learners (social_networks, chat, games, shopping, ...) are left for the admin.
DEFAULT_CATEGORIES = (
    "adult", "gambling", "drugs", "aggressive", "hacking", "malware", "phishing", "warez",
    "vpn", "redirector", "doh", "remote-control", "residential-proxies", "dating", "sect",
    "cryptojacking", "ddos", "stalkerware", "dangerous_material",
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ALIAS_MAX_BYTES = 64            # a symlink flattened into a file: "adult\n"
_CHUNK = 1 << 20


class UT1Error(Exception):
    """A problem the admin must fix (bad source, unknown category): message, exit code 2."""


@dataclass
class Category:
    """A requested category: its UT1 directory (after aliases) and the files it holds."""

    name: str
    real: str
    files: dict[str, str] = field(default_factory=dict)    # file name -> source reference


# --- sources ------------------------------------------------------------------------------

class DirectorySource:
    """An extracted tarball: the `blacklists` directory, or the directory holding it."""

    def __init__(self, path: Path) -> None:
        root = path / "blacklists" if (path / "blacklists").is_dir() else path
        self.root = root
        self.label = str(path)
        if not any(self._files(child.name) for child in self._children() if child.is_dir()):
            raise UT1Error(f"{path}: not a UT1 blacklists directory (no <category>/domains)")

    def _children(self) -> list[Path]:
        return sorted(self.root.iterdir())

    def _files(self, real: str) -> dict[str, str]:
        folder = self.root / real
        return {name: str(folder / name) for name in FILES if (folder / name).is_file()}

    def categories(self) -> dict[str, str]:
        """Every category name -> the UT1 directory it stands for (itself unless an alias)."""
        found = {}
        for child in self._children():
            real = self._real(child)
            if real is not None:
                found[child.name] = real
        return found

    def _real(self, child: Path) -> str | None:
        if child.is_dir():
            return child.resolve().name if child.is_symlink() else child.name
        if child.is_file() and child.stat().st_size <= _ALIAS_MAX_BYTES:
            target = child.read_bytes().decode("utf-8", "replace").strip()
            if _NAME.fullmatch(target) and (self.root / target).is_dir():
                return target            # a symlink flattened into a file by a copy
        return None

    def category(self, name: str, real: str) -> Category:
        return Category(name, real, self._files(real))

    def close(self) -> None:
        pass

    def copy(self, wanted: list[tuple[str, Path]]) -> Iterator[tuple[Path, int]]:
        for reference, target in wanted:
            with open(reference, "rb") as source:
                yield target, _copy_counting(source, target)


class TarSource:
    """blacklists.tar.gz (any compression tarfile reads); members read in archive order."""

    def __init__(self, path: Path) -> None:
        self.label = path.name
        try:
            self.tar = tarfile.open(path, "r:*")
            members = self.tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UT1Error(f"{path}: not a readable tar archive ({exc})") from None
        self.links: dict[str, str] = {}
        self.members: dict[tuple[str, str], tarfile.TarInfo] = {}
        self.dirs: set[str] = set()
        for member in members:
            self._index(member)
        if not self.members:
            raise UT1Error(f"{path}: no blacklists/<category>/domains members (not a UT1 tarball)")

    def _index(self, member: tarfile.TarInfo) -> None:
        parts = PurePosixPath(member.name.removeprefix("./")).parts
        if len(parts) == 2 and member.isdir():
            self.dirs.add(parts[1])
        elif len(parts) == 2 and member.issym():
            target = PurePosixPath(os.path.normpath(f"{parts[0]}/{member.linkname}"))
            if len(target.parts) == 2:
                self.links[parts[1]] = target.parts[1]
        elif len(parts) == 3 and parts[2] in FILES and (member.isfile() or member.issym()
                                                         or member.islnk()):
            self.dirs.add(parts[1])
            self.members[(parts[1], parts[2])] = member

    def categories(self) -> dict[str, str]:
        found = {name: name for name in self.dirs}
        found.update({name: real for name, real in self.links.items() if real in self.dirs})
        return dict(sorted(found.items()))

    def category(self, name: str, real: str) -> Category:
        files = {file: f"{real}/{file}" for file in FILES if (real, file) in self.members}
        return Category(name, real, files)

    def close(self) -> None:
        self.tar.close()

    def copy(self, wanted: list[tuple[str, Path]]) -> Iterator[tuple[Path, int]]:
        """Read in archive order: a gzip stream only seeks forward cheaply."""
        def offset(item: tuple[str, Path]) -> int:
            return self.members[tuple(item[0].split("/"))].offset
        for reference, target in sorted(wanted, key=offset):
            member = self.members[tuple(reference.split("/"))]
            source = self.tar.extractfile(member)
            if source is None:
                raise UT1Error(f"{self.label}: {member.name} is not a regular file")
            with source:
                yield target, _copy_counting(source, target)


def open_source(path: Path) -> DirectorySource | TarSource:
    if not path.exists():
        raise UT1Error(f"{path}: no such file or directory (download {UT1_HOME}"
                       "download/blacklists.tar.gz, or pass an extracted directory)")
    return DirectorySource(path) if path.is_dir() else TarSource(path)


def _copy_counting(source: BinaryIO, target: Path) -> int:
    """Copy bytes unmodified; return the line count (wc -l, plus an unterminated last line)."""
    lines, last = 0, b"\n"
    with open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            out.write(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


# --- import -------------------------------------------------------------------------------

def resolve(source: DirectorySource | TarSource, names: list[str]) -> list[Category]:
    """Check every requested category before anything is written."""
    available = source.categories()
    unknown = [name for name in names if not _NAME.fullmatch(name) or name not in available]
    if unknown:
        raise UT1Error(f"unknown UT1 categor{'y' if len(unknown) == 1 else 'ies'}: "
                       f"{', '.join(unknown)} (available: {', '.join(available)})")
    chosen = [source.category(name, available[name]) for name in names]
    empty = [c.name for c in chosen if "domains" not in c.files and "urls" not in c.files]
    if empty:
        raise UT1Error(f"no domains or urls file in: {', '.join(empty)}")
    return chosen


def import_categories(source: DirectorySource | TarSource, chosen: list[Category],
                      dest: Path, today: str) -> dict[str, dict[str, int]]:
    """Copy each category into a staging directory, write SOURCE, then swap it into place."""
    dest.mkdir(parents=True, exist_ok=True)
    staging = {c.name: dest / f".{c.name}.importing" for c in chosen}
    for folder in staging.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    owner = {staging[c.name] / file: (c.name, file) for c in chosen for file in c.files}
    wanted = [(reference, staging[c.name] / file)
              for c in chosen for file, reference in c.files.items()]
    counts: dict[str, dict[str, int]] = {c.name: {} for c in chosen}
    for target, lines in source.copy(wanted):
        name, file = owner[target]
        counts[name][file] = lines
    for c in chosen:
        _write_note(staging[c.name] / "SOURCE", c, counts[c.name], source.label, today)
        _swap_into_place(staging[c.name], dest / c.name)
    return counts


def _write_note(path: Path, category: Category, counts: dict[str, int], label: str,
                today: str) -> None:
    origin = category.real if category.real == category.name else \
        f"{category.real} (UT1 alias {category.name} -> {category.real})"
    files = ", ".join(f"{name} ({counts[name]:,} lines)" for name in FILES if name in counts)
    path.write_text(
        f"{ATTRIBUTION}\n"
        f"{UT1_HOME}\n\n"
        f"Category: {category.name}, from UT1 directory {origin}\n"
        f"Imported: {today} from {label} by scripts/import_ut1.py\n"
        f"Files: {files}, copied unmodified (one domain, or host/path, per line).\n\n"
        f"Licence: Creative Commons Attribution-ShareAlike 4.0, {LICENCE_URL}\n"
        "Anyone redistributing these files, or lists derived from them, must keep this\n"
        "attribution and the same licence.\n",
        encoding="utf-8")


def _swap_into_place(staging: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _report(chosen: list[Category], counts: dict[str, dict[str, int]], dest: Path) -> str:
    rows = [f"{'category':<22}{'domains':>12}{'urls':>10}{'expressions':>13}  UT1 directory"]
    for c in chosen:
        n = counts[c.name]
        cells = [f"{n[f]:,}" if f in n else "-" for f in FILES]
        rows.append(f"{c.name:<22}{cells[0]:>12}{cells[1]:>10}{cells[2]:>13}  {c.real}")
    rows.append(f"{len(chosen)} categories written to {dest}")
    return "\n".join(rows)


# --- command line -------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="import_ut1.py",
        description="Import UT1 blacklist categories into blocklists/ut1/<category>/ "
                    f"(unmodified, with a SOURCE note: {ATTRIBUTION}).")
    parser.add_argument("source", type=Path,
                        help="blacklists.tar.gz from UT1, or an extracted blacklists directory")
    parser.add_argument("--categories", default=",".join(DEFAULT_CATEGORIES),
                        help="comma-separated UT1 categories (default: %(default)s)")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help="where the category directories go (default: blocklists/ut1)")
    parser.add_argument("--list", action="store_true",
                        help="list the categories the source holds, and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [name.strip() for name in args.categories.split(",") if name.strip()]
    source = None
    try:
        source = open_source(args.source)
        if args.list:
            for name, real in source.categories().items():
                print(name if name == real else f"{name} -> {real}")
            return 0
        if not names:
            raise UT1Error("--categories names no category")
        chosen = resolve(source, list(dict.fromkeys(names)))
        counts = import_categories(source, chosen, args.dest, datetime.date.today().isoformat())
    except UT1Error as exc:
        print(f"import_ut1.py: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"import_ut1.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if source is not None:
            source.close()
    print(_report(chosen, counts, args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
