"""Three PhyLL networks on the same two cavities, and goodness with learned block weights.

A lab has one set of devices, so an ensemble shares them: each member is its own digital
weights (``member_network``) trained by its own copy of the rule, and a label's score is
the members' summed goodness (``Ensemble``). ``weighted_goodness`` then fits one weight per
block and one offset per label on the training split's scores, instead of the paper's equal
sum; with ``or_sum=True`` it keeps the plain sum unless the fitted weights win a 5-fold
cross-validation on the training split (``train.readout = "weighted-or-sum"``). Run it as
``python examples/ensemble_api.py``; ``main()`` returns the test accuracies and the device
queries each prediction cost.
"""

from __future__ import annotations

import torch

from physnn.core import make_device
from physnn.data import load_digits
from physnn.train import (
    Block,
    Ensemble,
    PhyLL,
    PhyLLSettings,
    PhysicalNetwork,
    member_network,
    weighted_goodness,
)


def main(members: int = 3, epochs: int = 20, width: int = 64, seed: int = 0) -> dict[str, float]:
    """Train on scikit-learn's digits; test accuracy of one member, of the ensemble's summed
    goodness and of its weighted goodness, and the device queries of one test prediction."""
    data = load_digits(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    blocks, n_in = [], data.n_features
    for k in range(2):
        cavity = make_device({"kind": "sim:optical", "n_in": n_in, "seed": k})
        blocks.append(Block(cavity, width, gen=gen))
        n_in = width
    net = PhysicalNetwork(blocks)
    settings = PhyLLSettings(n_classes=10, lr=2e-3)
    nets = [net] + [member_network(net, torch.Generator().manual_seed(seed + 1 + m))
                    for m in range(1, members)]
    rule = Ensemble([PhyLL(n, settings, torch.Generator().manual_seed(100 + m))
                     for m, n in enumerate(nets)])
    for _ in range(epochs):
        rule.train_epoch(data.x_train, data.y_train)

    def accuracy(pred: torch.Tensor) -> float:
        return (pred == data.y_test).float().mean().item()

    queries = sum(d.accounting.samples for d in net.devices)
    summed = accuracy(rule.predict(data.x_test))
    queries = sum(d.accounting.samples for d in net.devices) - queries
    weighted = weighted_goodness(rule, net, data.x_train, data.y_train, data.x_test, data.y_test,
                                 or_sum=True)  # the plain sum where the weights over-fit
    return {"one member": accuracy(rule.members[0].predict(data.x_test)), "ensemble": summed,
            "ensemble, weighted blocks": weighted["test_acc"],
            "weighted blocks or the plain sum (1 = sum)": weighted["readout_summed"],
            "queries per test set": queries}


if __name__ == "__main__":
    for name, value in main().items():
        print(f"{name}: {value:.3f}" if value < 1 or "1 = sum" in name else f"{name}: {value:,.0f}")
