"""A physical layer in your own torch model and your own training loop.

Two ways a physical device joins a model built with ``torch.nn``:

1. As a frozen *physical feature map*: ``PhysicalLayer(device)`` is a black box (as real
   hardware is); it measures its inputs and returns detached outputs, and a digital
   ``nn.Linear`` after it learns to read them. Nothing before the device can train.
2. Trained *through* the device: ``PhysicalLayer(device, twin=device)`` still measures in
   the forward pass, and its backward pass is the simulator's vector-Jacobian product
   (``physnn.nn.physics_aware`` with the simulator as its own twin), so a Linear *before*
   the device trains with an ordinary ``loss.backward()``.

The task is scikit-learn's 8x8 digits on a small simulated optical cavity (``sim:optical``).
Run ``python examples/torch_layer.py``; ``main()`` returns the test accuracy so the tests can
run it with small sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from physnn.core import make_device
from physnn.nn import PhysicalLayer


def digits(seed: int = 0, n_train: int = 1200) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits, pixels scaled to [0, 1] (the cavity's input domain), split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(d.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = order[:n_train], order[n_train:]
    return x[train], y[train], x[test], y[test]


def build(train_before_device: bool, seed: int = 0, width: int = 32) -> nn.Sequential:
    """The model: [Linear -> Sigmoid ->] optical cavity -> Linear read-out."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the Linears' initial weights
    n_in = width if train_before_device else 64
    cavity = make_device({"kind": "sim:optical", "n_in": n_in, "camera_shape": [6, 6],
                          "seed": int(torch.randint(0, 1000, (1,), generator=gen))})
    if not train_before_device:
        return nn.Sequential(PhysicalLayer(cavity), nn.Linear(cavity.spec.n_out, 10))
    return nn.Sequential(
        nn.Linear(64, width), nn.Sigmoid(),  # into the cavity's input domain [0, 1]
        PhysicalLayer(cavity, twin=cavity),  # measured forward, simulator's gradient
        nn.Linear(cavity.spec.n_out, 10),
    )


def main(epochs: int = 30, train_before_device: bool = False, n_train: int = 1200,
         batch_size: int = 64, lr: float = 1e-2, seed: int = 0) -> float:
    """Train with a plain torch loop; return the test accuracy."""
    torch.set_num_threads(1)
    x, y, x_test, y_test = digits(seed, n_train)
    model = build(train_before_device, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


if __name__ == "__main__":
    print(f"frozen physical feature map: test accuracy {main():.3f}")
    print(f"Linear trained through the cavity: test accuracy {main(train_before_device=True):.3f}")
