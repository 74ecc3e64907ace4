"""The examples run (small sizes) and learn; every example is exercised by some test."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phyll_from_the_python_api_learns() -> None:
    assert _example("phyll_api").main(epochs=4, width=32) > 0.5  # chance is 0.1


def test_every_example_is_run_by_a_test() -> None:
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    missing = [p.name for p in EXAMPLES.glob("*.py") if f'"{p.stem}' not in tests]
    assert not missing, f"examples no test runs: {missing}"
