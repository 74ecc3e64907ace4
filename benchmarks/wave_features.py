"""What the untrained raw-audio cavity's probes carry: logistic regression on their energies.

    python benchmarks/wave_features.py --data ../shared/data/hillenbrand [--vowels 3|7]
        [--seeds 0-4]

The reference beside ``vowels-wave-phyll``'s accuracy: the preset's cavity, fixed and
untrained, queried once per recording with no label (the label slots silent), and
multinomial logistic regression (``physnn.experiments.reference``, ``C = 1``) fitted on the
training recordings' log probe fractions, standardised with the training split's mean and
standard deviation (the fractions differ by a few percent between recordings: unscaled, the
penalty alone decides the fit), and scored on the test recordings, on the same
speaker-disjoint split as ``physnn train vowels-wave-phyll --seed S`` (``--vowels 7``: the
preset's seven-vowel ``--set`` lines). It bounds what a linear read-out of these 8 numbers
gives; PhyLL's digital layer sees the same numbers, but with the label played into the cavity.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from physnn.core import make_device
from physnn.experiments.config import apply_overrides, load_config
from physnn.experiments.reference import logistic_regression_accuracy
from physnn.experiments.runner import load_data, map_into_domain

SEVEN = ['data.vowels=["ae","ah","aw","er","ih","iy","uw"]',
         "device.label_tones=[700,850,1000,1150,1300,1450,1600]"]
"""The seven-vowel lines of the preset's documentation."""


def seeds_arg(text: str) -> list[int]:
    """``0-4`` or ``0,3,7``."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def accuracy(data_path: str, seed: int, seven: bool) -> float:
    """Test accuracy of logistic regression on the untrained cavity's log probe fractions."""
    cfg = apply_overrides(load_config("vowels-wave-phyll"),
                          [f"data.path={data_path}", *(SEVEN if seven else [])])
    raw = load_data(cfg, seed)
    dev = make_device({**dict(cfg.device), "n_in": raw.n_features, "seed": seed * 1000})
    data = map_into_domain(raw, dev.spec.domain)

    def features(x: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(x, dtype=torch.float32).clone()
        z[:, : raw.label_slots] = 0.0  # silent: no label tone
        with torch.no_grad():
            return np.log(dev(z).double().numpy() + 1e-12)

    f_train, f_test = features(data.x_train), features(data.x_test)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-12  # standardised on the training split
    return logistic_regression_accuracy((f_train - mean) / std, raw.y_train,
                                        (f_test - mean) / std, raw.y_test, seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the folder holding wav/ (Hillenbrand)")
    p.add_argument("--vowels", type=int, choices=(3, 7), default=3)
    p.add_argument("--seeds", type=seeds_arg, default=list(range(5)), help="e.g. 0-4")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    accs = []
    for seed in a.seeds:
        accs.append(100 * accuracy(a.data, seed, a.vowels == 7))
        print(f"seed {seed}: {accs[-1]:.2f} %", flush=True)
    std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
    print(f"{a.vowels} vowels, seeds {a.seeds[0]}-{a.seeds[-1]}: logistic regression on the "
          f"untrained probes {np.mean(accs):.2f} ± {std:.2f} %")


if __name__ == "__main__":
    main()
