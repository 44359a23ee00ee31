"""The rules of the code's layout that `lint-imports` cannot check (see ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "packages").glob("*/src/*/**/*.py"))
MAX_MODULE_LINES = 600
GRAB_BAG_NAMES = {"ops.py", "types.py", "utils.py", "helpers.py", "misc.py", "common.py"}


def _core_layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (core,) = [c for c in contracts if c.get("containers") == ["horsies"]]
    return core["layers"]


def _layer_modules(layer: str) -> list[str]:
    return [f"horsies.{name.strip()}" for name in layer.replace("|", ":").split(":")]


def test_the_broker_names_no_upper_layer_even_for_the_type_checker() -> None:
    """The broker learns about workflows through the hooks the caller hands in, never by import;
    the contracts ignore imports made under TYPE_CHECKING, so this checks those too."""
    layers = _core_layers()
    above = layers[: layers.index("broker")]
    upper = [module for layer in above for module in _layer_modules(layer)]
    graph = grimp.build_graph("horsies", exclude_type_checking_imports=False, cache_dir=None)
    broker = {"horsies.broker", *graph.find_descendants("horsies.broker")}
    offenders = sorted(
        f"{importer} -> {imported}"
        for importer in broker
        for imported in graph.find_modules_directly_imported_by(importer)
        if any(imported == top or imported.startswith(f"{top}.") for top in upper)
    )
    assert offenders == []


def _function_local_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            found.extend(
                node for node in ast.walk(function) if isinstance(node, ast.Import | ast.ImportFrom)
            )
    return found


def test_every_function_local_import_says_why() -> None:
    """Imports belong at the top of the module; one made inside a function (an optional
    distribution, a heavy driver, an import that must wait for the environment) carries a comment
    on its line or the line above saying why."""
    unexplained: list[str] = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for node in _function_local_imports(ast.parse("\n".join(lines), filename=str(path))):
            line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
            if "#" not in line and not above.startswith("#"):
                unexplained.append(f"{path.relative_to(REPO)}:{node.lineno}: {line.strip()}")
    assert unexplained == []


def test_modules_are_short_and_named_by_what_they_hold() -> None:
    too_long = [
        f"{path.relative_to(REPO)}: {count} lines"
        for path in SOURCES
        if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    grab_bags = [str(path.relative_to(REPO)) for path in SOURCES if path.name in GRAB_BAG_NAMES]
    assert too_long == []
    assert grab_bags == []
