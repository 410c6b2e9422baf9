"""The house by its layers. The order of the imports is import-linter's job (the contracts in pyproject.toml,
run by `make test` as `lint-imports`); this file keeps the rest true: docs/architecture.md draws the layers the
contract holds, `ls workbench/` shows exactly those layers, no module reaches for another's `_private` name (nor
does a test), every command lives in workbench/cli/, no module grows past ~400 lines without saying why at its
top, and tests/unit/ mirrors workbench/: each module with code has its test file there, and nothing else is."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib
PACKAGE = REPO / "workbench"
UNIT = REPO / "tests" / "unit"
MAX_LINES = 400


def contract_layers() -> list[list[str]]:
    """The layers contract's layers, top to bottom, each as its side-by-side parts."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [[part.strip() for part in layer.split("|")] for layer in layers["layers"]]


def drawn_layers() -> list[list[str]]:
    """The picture in docs/architecture.md: the code block after the `layers` marker, one layer per line."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:", 1)[1].split("```", 2)[1]
    rows = [line.split("  ")[0].strip() for line in block.strip().splitlines()]
    return [[re.fullmatch(r"workbench/(\w+)/", part.strip()).group(1) for part in row.split("|")] for row in rows]


def test_the_drawn_layers_are_the_contracts():
    assert drawn_layers() == contract_layers()


def test_the_package_folder_shows_the_layers_and_nothing_else():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py"}
    assert folders == {part for layer in contract_layers() for part in layer}
    assert not loose, f"modules outside the layers: {sorted(loose)}"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def private_reaches(path: Path) -> list[str]:
    """`from workbench.x import _name`, and `module._name` on a workbench module imported by name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, module_names = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbench"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                module_names.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            module_names.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("workbench"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in module_names
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_private_name_finder_finds_both_ways_of_reaching(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from workbench.core.files import _tmp_beside\nfrom workbench.core import files\nfiles._x()\n")
    assert private_reaches(probe) == ["line 1: from workbench.core.files import _tmp_beside", "line 3: files._x"]


@pytest.mark.parametrize("folder", ["workbench", "tests", "bench"])
def test_nothing_imports_a_private_name_from_another_module(folder):
    found = {
        str(p.relative_to(REPO)): hits for p in sorted((REPO / folder).rglob("*.py")) if (hits := private_reaches(p))
    }
    assert not found, f"make these names public, or leave them alone: {found}"


def test_every_command_lives_in_the_cli():
    """No `if __name__ == "__main__":` outside workbench/cli/: a command a user runs is one of the CLI's."""
    outside = [
        name
        for name, path in modules().items()
        if not name.startswith("workbench.cli") and '__name__ == "__main__"' in path.read_text(encoding="utf-8")
    ]
    assert outside == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_small_or_say_why(name):
    path = modules()[name]
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) > MAX_LINES:
        doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
        assert "Long because" in doc, f"{name} has {len(lines)} lines; split it or say why at its top"


def has_code(path: Path) -> bool:
    """Anything but a docstring: a package whose __init__.py only describes it needs no tests of its own."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def unit_tests_of(path: Path) -> Path:
    """Where a module's unit tests live: workbench/engine/train.py in tests/unit/engine/test_train.py; a package's
    __init__.py (and __main__.py) in its folder's test_<package>.py, the top package's in tests/unit/test_workbench.py.
    """
    rel = path.relative_to(PACKAGE)
    if path.name in ("__init__.py", "__main__.py"):
        return UNIT / rel.parent / f"test_{rel.parent.name or PACKAGE.name}.py"
    return UNIT / rel.parent / f"test_{path.stem}.py"


def test_the_unit_tests_mirror_the_package():
    """Every module with code has its tests/unit/ file, and every file there is some module's (or this one)."""
    wanted = {unit_tests_of(path) for path in modules().values() if has_code(path)}
    missing = sorted(str(p.relative_to(REPO)) for p in wanted if not p.is_file())
    assert not missing, f"modules without their unit tests: {missing}"
    known = {unit_tests_of(path) for path in modules().values()} | {Path(__file__).resolve()}
    stray = sorted(str(p.relative_to(REPO)) for p in UNIT.rglob("test_*.py") if p.resolve() not in known)
    assert not stray, f"unit test files that name no module (a story belongs in tests/scenarios/): {stray}"
