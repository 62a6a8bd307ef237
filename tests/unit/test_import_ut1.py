"""scripts/import_ut1.py: from the real UT1 snapshot and from a small tarball."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from webpolicy.lists.formats import parse_source

REPO = Path(__file__).resolve().parents[2]
UT1 = Path(__file__).resolve().parents[3] / "shared/data/ut1"
needs_ut1 = pytest.mark.skipif(not (UT1 / "gambling").is_dir(),
                               reason="no UT1 snapshot beside the repo")


def load_script():
    spec = importlib.util.spec_from_file_location("import_ut1", REPO / "scripts" / "import_ut1.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module            # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


import_ut1 = load_script()


@needs_ut1
def test_imports_from_the_snapshot(tmp_path, capsys):
    dest = tmp_path / "ut1"
    code = import_ut1.main([str(UT1), "--dest", str(dest),
                            "--categories", "gambling,vpn,adult,porn,drugs"])
    assert code == 0
    for name, real in [("gambling", "gambling"), ("vpn", "vpn"), ("adult", "adult"),
                       ("porn", "adult"), ("drugs", "drogue")]:
        for file in ("domains", "urls", "expressions"):
            original = UT1 / real / file
            copied = dest / name / file
            assert copied.is_file() == original.is_file(), (name, file)
            if original.is_file():
                assert copied.read_bytes() == original.read_bytes()
        note = (dest / name / "SOURCE").read_text(encoding="utf-8")
        assert "UT1 blacklists, Université Toulouse 1 Capitole, CC BY-SA 4.0" in note
        assert "Imported: 20" in note and real in note
    assert not (dest / "adult" / "very_restrictive_expression").exists()
    assert not list(dest.glob(".*"))                        # no staging directories left
    out = capsys.readouterr().out
    gambling_line = next(line for line in out.splitlines() if line.startswith("gambling"))
    assert gambling_line.split()[1:3] == ["32,247", "5"]
    assert "drogue" in next(line for line in out.splitlines() if line.startswith("drugs"))
    # the imported directory reads exactly like the original
    assert parse_source(dest / "gambling").domains == parse_source(UT1 / "gambling").domains


@needs_ut1
def test_default_categories_all_exist_in_ut1(tmp_path):
    assert import_ut1.main([str(UT1), "--dest", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(import_ut1.DEFAULT_CATEGORIES)


@needs_ut1
def test_reimport_replaces_a_category(tmp_path):
    stale = tmp_path / "vpn"
    stale.mkdir()
    (stale / "urls").write_text("stale.example.com/x\n")
    assert import_ut1.main([str(UT1), "--dest", str(tmp_path), "--categories", "vpn"]) == 0
    assert sorted(p.name for p in stale.iterdir()) == ["SOURCE", "domains"]


@needs_ut1
def test_unknown_category_writes_nothing(tmp_path, capsys):
    code = import_ut1.main([str(UT1), "--dest", str(tmp_path / "out"),
                            "--categories", "adult,no-such-thing"])
    assert code == 2
    assert "unknown UT1 category: no-such-thing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@needs_ut1
def test_list(capsys):
    assert import_ut1.main([str(UT1), "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "adult" in out and "porn -> adult" in out and "drugs -> drogue" in out


def test_missing_source(tmp_path, capsys):
    assert import_ut1.main([str(tmp_path / "blacklists.tar.gz")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_not_a_ut1_source(tmp_path, capsys):
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    assert import_ut1.main([str(tmp_path / "junk.tar.gz")]) == 2
    assert "not a readable tar archive" in capsys.readouterr().err
    assert import_ut1.main([str(tmp_path)]) == 2


def test_help():
    with pytest.raises(SystemExit) as info:
        import_ut1.main(["--help"])
    assert info.value.code == 0


def make_tarball(path: Path) -> None:
    """A miniature blacklists.tar.gz, with UT1's symlinked alias porn -> adult."""
    with tarfile.open(path, "w:gz") as tar:
        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)

        def add_file(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add_dir("blacklists")
        add_dir("blacklists/adult")
        add_file("blacklists/adult/domains", b"porn.example.com\nxxx.example.net\n")
        add_file("blacklists/adult/urls", b"host.example.org/adult/\n")
        add_file("blacklists/adult/expressions", b"")
        add_file("blacklists/adult/usage", b"black\n")
        link = tarfile.TarInfo("blacklists/porn")
        link.type = tarfile.SYMTYPE
        link.linkname = "adult"
        tar.addfile(link)
        add_dir("blacklists/gambling")
        add_file("blacklists/gambling/domains", b"casino.example.com")   # no final newline


def test_imports_from_a_tarball(tmp_path, capsys):
    tarball = tmp_path / "blacklists.tar.gz"
    make_tarball(tarball)
    dest = tmp_path / "ut1"
    assert import_ut1.main([str(tarball), "--dest", str(dest),
                            "--categories", "gambling,porn"]) == 0
    assert (dest / "porn" / "domains").read_bytes() == b"porn.example.com\nxxx.example.net\n"
    assert (dest / "porn" / "urls").read_bytes() == b"host.example.org/adult/\n"
    assert (dest / "porn" / "expressions").read_bytes() == b""
    assert not (dest / "porn" / "usage").exists()
    assert "UT1 alias porn -> adult" in (dest / "porn" / "SOURCE").read_text(encoding="utf-8")
    out = capsys.readouterr().out
    assert next(l for l in out.splitlines() if l.startswith("gambling")).split()[1] == "1"
    result = parse_source(dest / "porn")
    assert result.domains == ["porn.example.com", "xxx.example.net"]
    assert result.urls == [("host.example.org", "/adult/")]
    assert import_ut1.main([str(tarball), "--dest", str(dest), "--categories", "warez"]) == 2


def test_a_damaged_category_is_refused_and_nothing_replaced(tmp_path, capsys):
    """The checks lists/ut1.py makes of a download: here, a category that is mostly junk."""
    tarball = tmp_path / "blacklists.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in (("blacklists/adult/domains", b"porn.example.com\n"),
                           ("blacklists/gambling/domains",
                            b"<html>\n" * 20 + b"casino.example.com\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "ut1"
    (dest / "adult").mkdir(parents=True)
    (dest / "adult" / "domains").write_bytes(b"old.example.com\n")
    assert import_ut1.main([str(tarball), "--dest", str(dest),
                            "--categories", "adult,gambling"]) == 2
    assert "category gambling: more bad lines (20) than entries (1)" in capsys.readouterr().err
    assert (dest / "adult" / "domains").read_bytes() == b"old.example.com\n", "all or nothing"
    assert sorted(p.name for p in dest.iterdir()) == ["adult"], "no staging left behind"


def test_runs_as_a_script(tmp_path):
    tarball = tmp_path / "blacklists.tar.gz"
    make_tarball(tarball)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "import_ut1.py"),
                           str(tarball), "--list"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["adult", "gambling", "porn -> adult"]
