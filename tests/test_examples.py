"""The examples run (small sizes) and learn; every example is exercised by some test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_phyll_from_the_python_api_learns(example: Callable[[str], ModuleType]) -> None:
    assert example("phyll_api").main(epochs=4, width=32) > 0.5  # chance is 0.1


def test_every_example_is_run_by_a_test() -> None:
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    missing = [p.name for p in EXAMPLES.glob("*.py") if f'"{p.stem}"' not in tests]
    assert not missing, f"examples no test runs: {missing}"
