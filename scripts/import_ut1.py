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
Each category is written to a temporary directory, checked, and renamed into place, so a proxy
watching blocklists/ never reads a half-written list.  A tarball is read, and each category
checked (entries, no more bad lines than good), by webpolicy's lists/ut1.py, the code that
downloads UT1 for `{ut1: ...}` sources, so both take the same files and refuse the same
damage; run it with the project's .venv/bin/python (python3 finds that by itself).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addons"))
try:
    from webpolicy.lists import ut1
except ImportError:                   # python3 without the project's packages: use its venv
    VENV = ROOT / ".venv" / "bin" / "python"
    if __name__ == "__main__" and VENV.is_file() and Path(sys.executable) != VENV:
        os.execv(VENV, [str(VENV), __file__, *sys.argv[1:]])
    raise

ATTRIBUTION = ut1.ATTRIBUTION
UT1_HOME = ut1.UT1_HOME
FILES = ut1.UT1_FILES
DEFAULT_DEST = ROOT / "blocklists" / "ut1"

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
MAX_BYTES = 2 << 30              # one list file; as lists/remote.py allows a download

# A problem the admin must fix (bad source, unknown category, a damaged category): its
# message, exit code 2.  The same error lists/ut1.py raises.
UT1Error = ut1.UT1Error


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
            with open(reference, "rb") as source, open(target, "wb") as out:
                yield target, ut1.copy_counting(source, out, MAX_BYTES)


class TarSource:
    """blacklists.tar.gz (any compression tarfile reads), through lists/ut1.py's Archive."""

    def __init__(self, path: Path) -> None:
        self.label = path.name
        self.archive = ut1.Archive(path, str(path))
        if not self.archive.members:
            raise UT1Error(f"{path}: no blacklists/<category>/domains members (not a UT1 tarball)")

    def categories(self) -> dict[str, str]:
        return self.archive.names()

    def category(self, name: str, real: str) -> Category:
        return Category(name, real, {file: f"{name}/{file}" for file in self.archive.files(name)})

    def close(self) -> None:
        self.archive.close()

    def copy(self, wanted: list[tuple[str, Path]]) -> Iterator[tuple[Path, int]]:
        """In archive order (Archive.copy_files): a gzip stream only seeks forward cheaply."""
        return self.archive.copy_files(
            [(*reference.split("/"), target) for reference, target in wanted], MAX_BYTES)


def open_source(path: Path) -> DirectorySource | TarSource:
    if not path.exists():
        raise UT1Error(f"{path}: no such file or directory (download {UT1_HOME}"
                       "download/blacklists.tar.gz, or pass an extracted directory)")
    return DirectorySource(path) if path.is_dir() else TarSource(path)


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
    """Copy each category into a staging directory, write SOURCE, check every one (lists/
    ut1.py's checks, as for a download), then swap them into place: nothing is replaced
    unless all are good."""
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
    try:
        for c in chosen:
            ut1.write_note(staging[c.name] / "SOURCE", c.name, c.real, counts[c.name],
                           f"Imported: {today} from {source.label} by scripts/import_ut1.py")
            ut1.validate(c.name, staging[c.name], counts[c.name])
    except UT1Error:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    for c in chosen:
        _swap_into_place(staging[c.name], dest / c.name)
    return counts


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
