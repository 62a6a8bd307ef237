"""yamlnodes: YAML read as nodes, so every problem names its file and line, and a walk
collects every problem instead of stopping at the first."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webpolicy.policy.yamlnodes import Problem, Reader, load_document, suggest


def nodes(text: str) -> yaml.Node:
    return yaml.compose(text, Loader=yaml.SafeLoader)


def test_problem_prints_as_file_line_message():
    assert str(Problem("policy.yaml", 7, "bad")) == "policy.yaml:7: bad"
    assert str(Problem("policy.yaml", None, "file not found")) == "policy.yaml: file not found"
    assert str(Problem("p.yaml", 3, "old", warning=True)) == "p.yaml:3: warning: old"


def test_mapping_reports_unknown_duplicate_and_missing_keys_with_lines():
    reader = Reader("p.yaml")
    found = reader.mapping(nodes("a: 1\nbb: 2\na: 3\nverison: x\n"), "top",
                           known=("a", "bb", "version"), required=("version", "a"))
    assert set(found) == {"a", "bb"}
    assert [str(p) for p in reader.errors] == [
        "p.yaml:3: top: key 'a' appears twice",
        "p.yaml:4: top: unknown key 'verison' (did you mean 'version'?)",
        "p.yaml:1: top: missing required key 'version'",
    ]


def test_wrong_types_are_named():
    reader = Reader("p.yaml")
    doc = reader.mapping(nodes("m: [1]\nl: {a: 1}\ns: [x]\nb: maybe\ni: 1.5\n"), "top", known=())
    assert reader.mapping(doc["m"], "m", known=()) == {}
    assert reader.sequence(doc["l"], "l") == []
    assert reader.string(doc["s"], "s", "default") == "default"
    assert reader.boolean(doc["b"], "b", True) is True
    assert reader.integer(doc["i"], "i", 3) == 3
    assert [p.message for p in reader.errors] == [
        "m: expected a mapping of keys, got a list",
        "l: expected a list, got a mapping",
        "s: expected text, got a list",
        "b: expected true or false, got 'maybe'",
        "i: expected a whole number, got '1.5'",
    ]
    assert [p.line for p in reader.errors] == [1, 2, 3, 4, 5]


def test_empty_and_null_values_take_the_default():
    reader = Reader("p.yaml")
    doc = reader.mapping(nodes("a:\nb: ~\n"), "top", known=())
    assert reader.string(doc["a"], "a", "d") == "d"
    assert reader.sequence(doc["b"], "b") == []
    assert reader.integer(None, "n", 4) == 4
    assert not reader.problems


def test_strings_keep_each_items_node_and_refuse_empty_items():
    reader = Reader("p.yaml")
    items = reader.strings(nodes("- one\n- ''\n- two\n"), "list")
    assert [value for value, _ in items] == ["one", "two"]
    assert [node.start_mark.line + 1 for _, node in items] == [1, 3]
    assert [str(p) for p in reader.errors] == ["p.yaml:2: list: empty item"]


@pytest.mark.parametrize("value, kwargs, message", [
    ("0", {"minimum": 1}, "n: 0 is out of range 1..None"),
    ("99", {"minimum": 1, "maximum": 10}, "n: 99 is out of range 1..10"),
])
def test_integer_range(value, kwargs, message):
    reader = Reader("p.yaml")
    assert reader.integer(nodes(value), "n", 5, **kwargs) == 5
    assert [p.message for p in reader.errors] == [message]


def test_choice_suggests_the_nearest():
    reader = Reader("p.yaml")
    assert reader.choice(nodes("blok"), "action", ("block", "log"), "block") == "block"
    assert reader.errors[0].message == "action: 'blok' is not one of block, log (did you mean 'block'?)"


def test_suggest_only_when_close():
    assert suggest("profils", ("profiles", "clients")) == " (did you mean 'profiles'?)"
    assert suggest("zzz", ("profiles", "clients")) == ""


def test_load_document_syntax_error_names_the_line(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nprofiles:\n  learner: [a\n  staff: b\n")
    node, problems = load_document(path)
    assert node is None and len(problems) == 1
    assert problems[0].file == str(path) and problems[0].line in (3, 4, 5)
    assert problems[0].message.startswith("YAML syntax error")


def test_load_document_missing_file_and_bom(tmp_path: Path):
    assert load_document(tmp_path / "nope.yaml") == (None, [Problem(str(tmp_path / "nope.yaml"),
                                                                    None, "file not found")])
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffversion: '1'\n".encode())
    node, problems = load_document(path)
    assert not problems and Reader("x").mapping(node, "top", known=())["version"].value == "1"
