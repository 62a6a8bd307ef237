"""Validated reading of YAML with line numbers.

Admins edit policy.yaml by hand, so every problem must name the file and line.  PyYAML's
plain `safe_load` forgets positions and silently keeps the last of two duplicate keys; reading
the composed node tree keeps both facts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input file, ready to print as `file:line: message`."""

    file: str
    line: int | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        kind = "warning: " if self.warning else ""
        return f"{where}: {kind}{self.message}"


@dataclass
class Reader:
    """Collects problems while walking one YAML document, instead of stopping at the first."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def error(self, node: yaml.Node | None, message: str) -> None:
        self.problems.append(Problem(self.file, line_of(node), message))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    # -- structure ------------------------------------------------------------------------

    def mapping(self, node: yaml.Node | None, where: str, known: tuple[str, ...],
                required: tuple[str, ...] = ()) -> dict[str, yaml.Node]:
        """Return key -> value node; report wrong types, duplicates and unknown keys."""
        if node is None or _is_null(node):
            for key in required:
                self.error(node, f"{where}: missing required key '{key}'")
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{where}: expected a mapping of keys, got {describe(node)}")
            return {}
        result: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in result:
                self.error(key_node, f"{where}: key '{key}' appears twice")
            elif known and key not in known:
                self.error(key_node, f"{where}: unknown key '{key}'{suggest(key, known)}")
            else:
                result[key] = value_node
        for key in required:
            if key not in result:
                self.error(node, f"{where}: missing required key '{key}'")
        return result

    def free_mapping(self, node: yaml.Node | None, where: str) -> dict[str, yaml.Node]:
        """A mapping whose keys are names chosen by the admin (profiles, lists, users)."""
        return self.mapping(node, where, known=())

    def sequence(self, node: yaml.Node | None, where: str) -> list[yaml.Node]:
        if node is None or _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{where}: expected a list, got {describe(node)}")
            return []
        return list(node.value)

    # -- scalars --------------------------------------------------------------------------

    def string(self, node: yaml.Node | None, where: str, default: str | None = None) -> str | None:
        if node is None or _is_null(node):
            return default
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{where}: expected text, got {describe(node)}")
            return default
        return str(node.value).strip()

    def strings(self, node: yaml.Node | None, where: str) -> list[tuple[str, yaml.Node]]:
        """A list of text items, each with its node so later checks can name its line."""
        items = []
        for item in self.sequence(node, where):
            value = self.string(item, where)
            if value:
                items.append((value, item))
            elif value is not None:
                self.error(item, f"{where}: empty item")
        return items

    def boolean(self, node: yaml.Node | None, where: str, default: bool) -> bool:
        value = self.scalar(node)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(node, f"{where}: expected true or false, got '{node.value}'")
            return default
        return value

    def integer(self, node: yaml.Node | None, where: str, default: int,
                minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.scalar(node)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(node, f"{where}: expected a whole number, got '{node.value}'")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(node, f"{where}: {value} is out of range {minimum}..{maximum}")
            return default
        return value

    def choice(self, node: yaml.Node | None, where: str, choices: tuple[str, ...],
               default: str) -> str:
        value = self.string(node, where)
        if value is None:
            return default
        if value not in choices:
            self.error(node, f"{where}: '{value}' is not one of {', '.join(choices)}"
                             f"{suggest(value, choices)}")
            return default
        return value

    def scalar(self, node: yaml.Node | None) -> Any:
        if node is None or _is_null(node):
            return None
        if not isinstance(node, yaml.ScalarNode):
            return node
        return yaml.SafeLoader("").construct_object(node)


def load_document(path: Path) -> tuple[yaml.Node | None, list[Problem]]:
    """Parse a YAML file into its node tree; syntax errors become problems with a line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None, [Problem(str(path), None, "file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(path), None, f"cannot read: {exc}")]
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        detail = f"{exc.context + ': ' if exc.context else ''}{exc.problem}"
        return None, [Problem(str(path), line, f"YAML syntax error: {detail}")]
    except yaml.YAMLError as exc:
        return None, [Problem(str(path), None, f"YAML error: {exc}")]


def line_of(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"'{node.value}'"


def suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
