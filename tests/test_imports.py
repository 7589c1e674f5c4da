"""The product's modules import in one direction: no import runs back up a layer, none closes a circle.

Every ``import`` counts, those under ``TYPE_CHECKING`` and inside functions included: a circle that only
type checkers see still ties the modules together for a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("rkllm_runtime", "custom_components/rkllm")

# Lowest first: a module may import its own layer and those below it.
LAYERS = (
    "rkllm_runtime",
    "rkllm_runtime.chat",
    "rkllm_runtime.remote",
    "rkllm_runtime.server",
    "custom_components",
)
# Re-exports only: the package's public names, gathered from every layer.
FACADES = {"rkllm_runtime"}


def modules() -> dict[str, Path]:
    """Every product module by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The product modules ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        yield from (target for target in targets if target in known and target != name)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(name, path, known)) for name, path in known.items()}


def layer(name: str) -> int:
    """The highest layer whose name prefixes ``name``."""
    return max(i for i, prefix in enumerate(LAYERS) if name == prefix or name.startswith(f"{prefix}."))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            if group:
                found.append(sorted([node, *group]))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "rkllm_runtime.chat.engine" in edges["rkllm_runtime.chat"]
    assert "rkllm_runtime.runtime" in edges["rkllm_runtime.chat.engine"]
    assert "custom_components.rkllm.entity" in edges["custom_components.rkllm.conversation"]
    assert layer("rkllm_runtime.remote.client") == 2
    assert layer("rkllm_runtime.errors") == 0


def test_no_import_runs_back_up_a_layer() -> None:
    upward = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if name not in FACADES
        for target in targets
        if layer(target) > layer(name)
    ]
    assert upward == []


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_the_runtime_package_never_imports_home_assistant() -> None:
    for name, path in modules().items():
        if name.startswith("rkllm_runtime"):
            text = path.read_text()
            assert "import homeassistant" not in text
            assert "from homeassistant" not in text
            assert "custom_components" not in text, name


def test_a_circle_is_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
