"""docs/architecture.md's map of the package matches the tree: every module is on it, and
nothing on it is missing, so a newcomer's first page is not a stale one."""

from __future__ import annotations

import re

from tests.unit.helpers import ADDONS, REPO

DOC = REPO / "docs" / "architecture.md"


def _mapped_files() -> set[str]:
    """Paths (relative to addons/) named in the Map's code block, by indentation."""
    block = DOC.read_text().split("## Map", 1)[1].split("```", 2)[1]
    stack: list[tuple[int, str]] = []
    files = set()
    for line in block.splitlines():
        entry = re.match(r"^( *)([\w.-]+/?)\s*(?:#.*)?$", line)
        if not entry:
            continue
        indent, name = len(entry.group(1)), entry.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([d for _, d in stack] + [name.rstrip("/")])
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
        else:
            files.add(path.removeprefix("addons/"))
    return files


def _tree_files() -> set[str]:
    found = set()
    for path in ADDONS.rglob("*"):
        relative = path.relative_to(ADDONS).as_posix()
        if path.suffix in (".py", ".json") and "egg-info" not in relative:
            if path.name != "__init__.py" or relative.startswith("webpolicy/proxy/stages/"):
                found.add(relative)
    return found


def test_the_map_names_every_module_and_only_those():
    mapped, tree = _mapped_files(), _tree_files()
    assert mapped, "no map found in docs/architecture.md"
    assert not tree - mapped, f"modules missing from the map: {sorted(tree - mapped)}"
    assert not mapped - tree, f"the map names files that do not exist: {sorted(mapped - tree)}"
