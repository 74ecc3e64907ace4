"""Physics-aware training against a device you can only measure, with a fitted twin.

Real hardware answers queries but has no gradient. Physics-aware training (PAT) keeps the
forward pass on the device and takes the backward pass from a differentiable *twin*. Here
the twin is not handed to us: it is fitted from measurements, as it would be in a lab:

1. ``physnn.twins.calibrate`` sweeps the "real" device (a small simulated optical cavity
   with camera saturation and read-out noise, used strictly as a black box) and records
   input/output pairs, the noise floor and drift;
2. ``physnn.twins.surrogate.fit_surrogate`` fits a small MLP to the record (train,
   validation and held-out test splits, early stopping);
3. the model ``Linear -> Sigmoid -> PhysicalLayer(device, twin=surrogate) -> Linear`` trains
   with a plain torch loop: every forward pass is a counted device query, every backward
   pass goes through the surrogate (``physnn.nn.physics_aware``), and a ``TwinFlops`` meter
   keeps the twin's FLOPs apart.

Run ``python examples/pat_with_surrogate.py``; ``main()`` returns the test accuracy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from physnn.core import Device, make_device
from physnn.nn import PhysicalLayer, TwinFlops
from physnn.twins import calibrate
from physnn.twins.surrogate import Twin, fit_surrogate

DEVICE = {"kind": "sim:optical", "n_in": 8, "camera_shape": [4, 4], "seed": 7,
          "camera": [{"kind": "saturation", "level": 4.0}],
          "outputs": [{"kind": "readout", "sigma": 0.02}]}
"""The 'real' device: 8 SLM pixels, a 4x4 camera that saturates, read-out noise."""


def digits(seed: int = 0, n_train: int = 1200) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits, pixels scaled to [0, 1], split at random."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(d.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[order[:n_train]], y[order[:n_train]], x[order[n_train:]], y[order[n_train:]]


def fit_twin(device_description: dict[str, Any], samples: int, fit_epochs: int,
             folder: Path) -> tuple[Device, Twin]:
    """Calibrate an instance of the device (its queries are the twin's building cost, apart
    from training's) and fit a surrogate twin to the record."""
    record = calibrate(make_device(device_description), samples=samples, progress=False)
    twin = fit_surrogate(record, out=folder / "twin.pt", progress=False, hidden=[64, 64],
                         epochs=fit_epochs, patience=10, lr=3e-3)
    return make_device({"kind": "surrogate", "path": str(twin.path)}), twin


def main(epochs: int = 20, samples: int = 3000, fit_epochs: int = 150, n_train: int = 1200,
         batch_size: int = 64, lr: float = 1e-2, seed: int = 0, verbose: bool = False) -> float:
    """Fit the twin, train with PAT against the device; return the test accuracy."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    x, y, x_test, y_test = digits(seed, n_train)
    with tempfile.TemporaryDirectory() as folder:
        surrogate, twin = fit_twin(DEVICE, samples, fit_epochs, Path(folder))
    device = make_device(DEVICE)
    meter = TwinFlops()
    model = nn.Sequential(
        nn.Linear(64, device.spec.n_in), nn.Sigmoid(),
        PhysicalLayer(device, twin=surrogate, flops=meter, name="cavity"),
        nn.Linear(device.spec.n_out, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
    if verbose:
        print(f"twin: held-out NMSE {twin.fidelity['test']['nmse_overall']:.3g}; "
              f"device queries {device.accounting.samples}; twin FLOPs "
              + ", ".join(f"{k} {v:.3g}" for k, v in meter.totals.items()))
    return acc


if __name__ == "__main__":
    print(f"PAT with a fitted surrogate twin: test accuracy {main(verbose=True):.3f}")
