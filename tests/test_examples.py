"""The examples run (small sizes) and learn; every example is exercised by some test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_phyll_from_the_python_api_learns(example: Callable[[str], ModuleType]) -> None:
    assert example("phyll_api").main(epochs=4, width=32) > 0.5  # chance is 0.1


def test_an_ensemble_on_shared_devices_from_the_python_api(example: Callable[[str], ModuleType]) -> None:
    from physnn.data import load_digits

    out = example("ensemble_api").main(members=2, epochs=4, width=32)
    n_test = load_digits(seed=0).x_test.shape[0]
    assert out["queries per test set"] == 2 * 10 * 2 * n_test  # members x labels x blocks x tests
    assert min(out["one member"], out["ensemble"], out["ensemble, weighted blocks"]) > 0.5
    assert out["weighted blocks or the plain sum (1 = sum)"] in (0.0, 1.0)


def test_every_example_is_run_by_a_test() -> None:
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    missing = [p.name for p in EXAMPLES.glob("*.py") if f'"{p.stem}"' not in tests]
    assert not missing, f"examples no test runs: {missing}"
