"""The layers hold: no import circle among workbench's modules (imports inside functions included), the
core never imports the UI, only workbench.ui imports ipywidgets, and no module grows past ~400 lines
without saying why at its top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The workbench modules a file imports anywhere in it (top level, in functions, under TYPE_CHECKING).
    `from .pkg import name` counts as an import of pkg.name when that is a module, else of pkg."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "workbench")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "workbench":
                continue
            for a in node.names:
                out.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    return out & known


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, set(found)) - {name} for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "workbench.engine.resolve" in graph["workbench.engine.layout"]  # imported inside ModelLayout.for_model
    assert "workbench.data.formats" in graph["workbench.data.tasks"]  # a relative import
    assert "workbench.data" in graph["workbench.engine.train"]


def test_no_import_circle_among_workbench_modules():
    found = cycles(import_graph())
    assert not found, f"import circles: {found}"


def test_the_core_never_imports_the_ui():
    bad = {
        m: sorted(d for d in deps if d.startswith("workbench.ui"))
        for m, deps in import_graph().items()
        if not m.startswith("workbench.ui")
    }
    assert not {m: d for m, d in bad.items() if d}


def test_the_ground_floor_imports_nothing_of_workbench():
    graph = import_graph()
    for name in ("workbench.core.files", "workbench.core.events", "workbench.core.paths", "workbench.core.config"):
        assert graph[name] == set(), (name, graph[name])


def test_only_the_ui_imports_ipywidgets():
    for name, path in modules().items():
        if name.startswith("workbench.ui"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not any(n.split(".")[0] == "ipywidgets" for n in names), name


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_small_or_say_why(name):
    path = modules()[name]
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) > MAX_LINES:
        doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
        assert "Long because" in doc, f"{name} has {len(lines)} lines; split it or say why at its top"
