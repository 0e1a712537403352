"""The package imports in one direction: no module imports names from a module that imports
it back at the top level (a circle works only by the order of its imports)."""

from __future__ import annotations

import ast
from pathlib import Path

from conformance import PACKAGE_DIR


def _top_level_imports() -> dict[str, set[str]]:
    """Module -> the conformance modules its top-level ``from ... import`` statements read
    (a name that is a submodule counts as that submodule)."""
    root = PACKAGE_DIR.parent
    graph: dict[str, set[str]] = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                module = base + (f".{node.module}" if node.module else "")
            else:
                module = node.module or ""
            if module.split(".")[0] != "conformance":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                is_module = (root / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    root / Path(*sub.split(".")) / "__init__.py").exists()
                deps.add(sub if is_module else module)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        for dep in graph.get(node, ()):
            if dep in stack:
                found.add(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep in graph and len(stack) < 40:
                visit(dep, [*stack, dep])

    for name in graph:
        visit(name, [name])
    return found


def test_no_import_circle():
    assert _cycles(_top_level_imports()) == set()


def test_the_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == {"a -> b -> a", "b -> a -> b"}
