"""The package's layering: each folder one concern, imports only pointing down.

Walks the import statements of every module (static: the AST, so a function-level import
counts as much as a top-level one) and fails on any import of a layer above or beside the
importing one. Also keeps modules and functions at a size a reader can hold.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "physnn"

LAYERS: dict[str, set[str]] = {
    "_version": set(),
    "_plugins": set(),
    "core": {"_version", "_plugins"},
    "data": {"_version", "_plugins"},
    "sim": {"core", "_version"},
    "hardware": {"core", "_version"},
    "twins": {"core", "_version"},
    "nn": {"core", "_version"},
    "train": {"core", "nn", "_version"},
    "experiments": {"core", "data", "nn", "train", "twins", "_version"},
    "cli": {"core", "data", "sim", "hardware", "twins", "nn", "train", "experiments", "_version"},
    "__main__": {"cli"},
    "__init__": {"core", "_version"},
}
"""What each top-level part of physnn may import (besides itself). ``_plugins`` (the lazy
entry-point mapping) sits under ``core`` and ``data``, which both register through it."""


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out.append((name, p))
    return out


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """Every physnn module ``module`` imports, absolute, with its line."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("physnn")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("physnn"):
                continue
            if target == "physnn":  # from physnn import x: x names a subpackage or the root
                found += [(node.lineno, f"physnn.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def test_every_import_points_down() -> None:
    known = {p.stem if p.is_file() else p.name for p in PKG.iterdir() if not p.name.startswith(".")}
    bad = []
    for module, path in _modules():
        layer = _layer(module)
        assert layer in LAYERS, f"{module}: layer {layer!r} is not in LAYERS; place it"
        for line, target in _imports(module, path):
            dest = _layer(target)
            if dest == layer:
                continue
            if dest not in known and dest != "__init__":
                continue  # a name imported from the root package, e.g. __version__
            if dest not in LAYERS[layer]:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} ({layer}) imports {target}")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(bad)


def test_core_imports_no_other_physnn_package() -> None:
    for module, path in _modules():
        if _layer(module) != "core":
            continue
        for line, target in _imports(module, path):
            assert _layer(target) in {"core", "_version", "_plugins"}, \
                f"{path}:{line} imports {target}"


@pytest.mark.parametrize("limit", [600])
def test_no_module_over_the_limit(limit: int) -> None:
    big = [f"{p.relative_to(PKG.parent)} ({n})" for _, p in _modules()
           if (n := p.read_text().count("\n")) > limit]
    assert not big, f"modules over {limit} lines: {big}"


def test_no_function_over_80_lines() -> None:
    long = []
    for _, p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "parser" not in node.name:
                n = node.end_lineno - node.lineno + 1 if node.end_lineno else 0
                if n > 80:
                    long.append(f"{p.relative_to(PKG.parent)}:{node.lineno} {node.name} ({n})")
    assert not long, f"functions over 80 lines: {long}"


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md draws the package tree; a module it does not name is a module a
    newcomer cannot place."""
    page = (PKG.parent / "docs" / "architecture.md").read_text()
    missing = [str(p.relative_to(PKG.parent)) for _, p in _modules()
               if p.name != "__init__.py" and p.name not in page]
    assert not missing, f"docs/architecture.md does not name: {missing}"
