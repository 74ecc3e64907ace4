"""PhyLL from the Python API: a physical network trained model-free, in about 15 lines.

Two blocks, each a simulated optical cavity (a black box: it is measured, never
differentiated) followed by a digital Linear; ``PhyLL`` trains each Linear alone with the
paper's goodness, querying each cavity once per sample per batch. Run it as
``python examples/phyll_api.py``; ``main()`` returns the test accuracy.
"""

from __future__ import annotations

import torch

from physnn.core import make_device
from physnn.data import load_digits
from physnn.train import Block, PhyLL, PhyLLSettings, PhysicalNetwork


def main(epochs: int = 30, width: int = 100, seed: int = 0) -> float:
    """Train on scikit-learn's digits; the test accuracy of the goodness prediction."""
    data = load_digits(seed=seed)  # 10 label slots + 64 pixels, scaled to [0, 1]
    gen = torch.Generator().manual_seed(seed)
    blocks, n_in = [], data.n_features
    for k in range(2):
        cavity = make_device({"kind": "sim:optical", "n_in": n_in, "seed": k})
        blocks.append(Block(cavity, width, gen=gen))
        n_in = width
    rule = PhyLL(PhysicalNetwork(blocks), PhyLLSettings(n_classes=10, lr=2e-3), gen)
    for _ in range(epochs):
        rule.train_epoch(data.x_train, data.y_train)
    return (rule.predict(data.x_test) == data.y_test).float().mean().item()


if __name__ == "__main__":
    print(f"PhyLL test accuracy on the digits: {main():.3f}")
