"""The tree stays the architecture: no import cycle, few top-level modules, small documented modules."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_import_cycle_counting_imports_inside_functions() -> None:
    """No two gateway modules import each other, directly or round a circle, wherever the import stands."""
    graph = grimp.build_graph("gateway", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_a_planted_cycle_is_found() -> None:
    """The cycle finder itself sees a circle of three modules."""
    graph = grimp.ImportGraph()
    for name in ("x.a", "x.b", "x.c"):
        graph.add_module(name)
    graph.add_import(importer="x.a", imported="x.b")
    graph.add_import(importer="x.b", imported="x.c")
    graph.add_import(importer="x.c", imported="x.a")
    assert _cycles(graph) == [["x.a", "x.b", "x.c"]]


def test_few_modules_at_the_top_and_a_docstring_on_every_package() -> None:
    """At most 8 modules stand at the top of gateway/; every module and subpackage says what it holds."""
    assert len(list(PACKAGE.glob("*.py"))) <= 8
    for path in PACKAGE.rglob("*.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring, f"{path.relative_to(PACKAGE)} has no docstring"


def test_no_module_over_400_lines() -> None:
    """Modules stay small enough to read in one sitting."""
    long = [
        (str(p.relative_to(PACKAGE)), n)
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    ]
    assert long == []
