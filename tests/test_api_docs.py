"""Every public class, function and method of physnn says why it exists (the API reference
is generated from these docstrings), and the package ships its type information."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "physnn"


def _public(name: str) -> bool:
    return not name.startswith("_")


def _missing(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG.parent)
    out = []
    if ast.get_docstring(tree) is None:
        out.append(f"{rel}: module")

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and _public(node.name):
                if ast.get_docstring(node) is None:
                    out.append(f"{rel}:{node.lineno} class {prefix}{node.name}")
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _public(node.name):
                overrides = {"forward", "extra_repr"}  # documented by torch's nn.Module
                decorated = {getattr(d, "attr", getattr(d, "id", "")) for d in node.decorator_list}
                if ast.get_docstring(node) is None and node.name not in overrides \
                        and not decorated & {"overload", "setter"}:
                    out.append(f"{rel}:{node.lineno} def {prefix}{node.name}")

    visit(tree.body, "")
    return out


def test_every_public_name_has_a_docstring() -> None:
    missing = [m for p in sorted(PKG.rglob("*.py")) for m in _missing(p)]
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def test_the_package_ships_py_typed() -> None:
    assert (PKG / "py.typed").is_file()
