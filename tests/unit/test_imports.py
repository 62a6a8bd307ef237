"""The package's import graph: subpackages by responsibility, imports that run one way.

policy -> lists -> engine -> {safeguarding, monitoring, identity} -> {proxy, console} -> cli:
a module may import from its own subpackage or from a lower layer, never from a higher one
or a sibling on the same layer; no module imports itself back in a circle (lazy imports
inside functions count too); mitmproxy is imported only under proxy/; the console never
imports the proxy.  Read with the standard library's ast, so nothing here runs the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "addons" / "webpolicy"

LAYERS = {
    "policy": 0,
    "lists": 1,
    "engine": 2,
    "safeguarding": 3,
    "monitoring": 3,
    "identity": 3,
    "proxy": 4,
    "console": 4,
    "cli": 5,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports, at module level or inside a function, absolute."""
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from webpolicy.engine import decision` imports a module, not a name
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name}
         for name, path in MODULES.items()}


def _layer(module: str) -> tuple[str, int | None]:
    parts = module.split(".")
    sub = parts[1] if len(parts) > 1 else ""
    return sub, LAYERS.get(sub)


def test_every_module_is_in_a_layer():
    loose = [m for m in MODULES if m != "webpolicy" and _layer(m)[1] is None]
    assert not loose, f"modules outside the layered subpackages: {loose}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    sub, rank = _layer(module)
    if rank is None:
        return
    for target in GRAPH[module]:
        target_sub, target_rank = _layer(target)
        if target_rank is None or target_sub == sub:
            continue
        assert target_rank < rank, f"{module} imports {target}: {target_sub}/ is not below {sub}/"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_mitmproxy_only_under_proxy(module):
    uses = {m for m in _imports(MODULES[module]) if m.split(".")[0] in ("mitmproxy", "OpenSSL")}
    if _layer(module)[0] != "proxy":
        assert not uses, f"{module} imports {sorted(uses)}: only webpolicy.proxy may"


def test_the_console_never_imports_the_proxy():
    for module, targets in GRAPH.items():
        if _layer(module)[0] == "console":
            assert not [t for t in targets if _layer(t)[0] == "proxy"], module


def test_the_check_sees_imports():
    """The graph is not empty: a check that reads nothing would pass anything."""
    assert "webpolicy.engine.engine" in GRAPH["webpolicy.engine.decision"]
    assert any("webpolicy.proxy.flows" in t for t in GRAPH.values())
