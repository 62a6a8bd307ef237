"""Watchlist matching: whole words and phrases, case- and accent-insensitive; terms files."""

from __future__ import annotations

import pytest

from tests.unit.helpers import REPO
from webpolicy.engine.watchlist import RecentHits, Watchlist, words
from webpolicy.policy.model import WatchlistSpec, load_policy


def compile_terms(*terms: str, severity: str = "high", name: str = "test") -> Watchlist:
    return Watchlist.compile([WatchlistSpec(name, name.title(), severity, terms=terms)])


def test_words_fold_case_accents_and_punctuation():
    assert words("Self-HARM, Suïcide! ÉCOLE ﬁsh straße under_score") == \
        ["self", "harm", "suicide", "ecole", "fish", "strasse", "under", "score"]


@pytest.mark.parametrize("text", [
    "self harm", "SELF HARM", "Self-Harm", "self   harm tips", "how to stop self-harm",
    "sélf hârm", "ＳＥＬＦ ＨＡＲＭ", "self_harm",
])
def test_phrase_matches_however_written(text):
    hit = compile_terms("self harm").match(text)
    assert hit is not None and hit.term == "self harm"


@pytest.mark.parametrize("text", [
    "selfharming", "myself harmony", "herself harm", "harm self", "self", "",
])
def test_no_match_inside_words_or_out_of_order(text):
    assert compile_terms("self harm").match(text) is None


def test_whole_words_only():
    watch = compile_terms("kys", "bomb")
    assert watch.match("kys") is not None
    assert watch.match("skys the limit") is None
    assert watch.match("bombay mix") is None
    assert watch.match("a bomb.") is not None


def test_term_written_with_accents_or_capitals_matches_plain_text():
    assert compile_terms("Suïcide Note").match("suicide note") is not None


def test_prefix_terms():
    watch = compile_terms("thinspo*", "how to purg*")
    assert watch.match("thinspoooo pics").term == "thinspo*"
    assert watch.match("THINSPIRATION") is None
    assert watch.match("how to purge").term == "how to purg*"
    assert watch.match("how to") is None


def test_most_severe_hit_first_across_lists():
    watch = Watchlist.compile([
        WatchlistSpec("low", "Low", "low", terms=("knife",)),
        WatchlistSpec("crit", "Critical", "critical", terms=("kill myself",)),
        WatchlistSpec("high", "High", "high", terms=("buy a knife",)),
    ])
    hits = watch.matches("buy a knife to kill myself")
    assert [h.list for h in hits] == ["crit", "high", "low"]
    assert watch.match("buy a knife").list == "high"


def test_same_term_in_two_lists_keeps_the_more_severe():
    watch = Watchlist.compile([
        WatchlistSpec("a", "A", "medium", terms=("x y",)),
        WatchlistSpec("b", "B", "critical", terms=("X-Y",)),
    ])
    assert watch.match("x y").list == "b"


def test_terms_file_comments_blank_lines_bom(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("\ufeff# header\n\n  pro ana  \n# thinspo\nbonespo\n", encoding="utf-8")
    watch = Watchlist.compile([WatchlistSpec("ed", "Eating disorders", "medium",
                                             sources=(path,))])
    assert len(watch) == 2
    assert watch.match("pro-ana tips").category == "Eating disorders"
    assert watch.match("thinspo") is None


def test_unreadable_file_and_empty_terms_are_warnings(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("!!!\nfine term\n")
    watch = Watchlist.compile([WatchlistSpec("x", "X", "high",
                                             sources=(tmp_path / "missing.txt", bad))])
    messages = [str(p) for p in watch.problems]
    assert all(p.warning for p in watch.problems)
    assert any("missing.txt" in m for m in messages)
    assert any(f"{bad}:1" in m and "no letters or digits" in m for m in messages)
    assert watch.match("a fine term") is not None


def test_empty_watchlist_matches_nothing():
    assert Watchlist().match("anything at all") is None


def test_shipped_starter_files_load_and_match():
    policy = load_policy(REPO / "policy.yaml")
    watch = Watchlist.compile(policy.watchlist.values(), str(policy.path))
    assert not watch.problems
    assert set(watch.counts()) == {"suicide", "self_harm", "extremism", "weapons",
                                   "eating_disorders"}
    assert watch.match("how to kill myself").severity == "critical"
    assert watch.match("Self-Harm scars").category == "Self-harm"
    for ordinary in ("suicide squad cast", "gcse maths revision", "national action plan",
                     "harmony korine", "bombay sapphire"):
        assert watch.match(ordinary) is None, ordinary


def test_recent_hits_suppresses_repeats_within_window():
    recent = RecentHits(seconds=60, size=3)
    assert not recent.repeated(("a",), 0)
    assert recent.repeated(("a",), 30)
    assert not recent.repeated(("a",), 91)        # window passed (measured from last kept)
    for i in range(10):                           # bounded
        recent.repeated((i,), 100)
    assert len(recent._seen) <= 3
