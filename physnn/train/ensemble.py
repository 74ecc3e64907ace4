"""An ensemble of local-rule networks on the same physical devices (``train.ensemble = M``).

A lab has one set of devices, so the members share them: each member is its own digital
weights (Linears and goodness directions ``zeta``, drawn from its own generator) around the
same black boxes, trained by its own copy of the rule, one after another every epoch.
A label's score is the members' summed goodness, so prediction costs M times the device
passes of one network, and so does training: every member queries the devices for its own
positives and negatives. The device accounting (and so the run ledger) counts all of it.

Member 0 is the network the runner built, trained from the rule's usual generator, so
``ensemble = 1`` is the single network, number for number. On a noiseless device member 0
trains exactly as that single network would (``tests/test_ensemble.py``); with noise the
members take turns on the device's noise stream.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .flops import FlopMeter
from .network import Block, PhysicalNetwork
from .phyll import PhyLL

GOODNESS_RULES = ("phyll", "ff")
"""The rules that score every label by goodness: what ``train.ensemble > 1`` and the
weighted read-out (``train.readout = "weighted"``) apply to."""


def member_network(net: PhysicalNetwork, gen: torch.Generator) -> PhysicalNetwork:
    """A network on ``net``'s own devices with fresh digital weights drawn from ``gen``."""
    blocks = [Block(b.device, b.linear.out_features, skip=b.skip, gen=gen) for b in net.blocks]
    return PhysicalNetwork(blocks).to(net.blocks[0].linear.weight.device)


def _digital_state(net: PhysicalNetwork) -> dict[str, torch.Tensor]:
    """A member's weights and directions, without the devices (member 0's net carries those)."""
    return {k: v for k, v in net.state_dict().items() if ".physical." not in k}


class Ensemble:
    """M members of one local rule sharing devices; the trainer contract of
    ``physnn.train.methods``, scoring a label by the members' summed goodness."""

    def __init__(self, members: list[PhyLL]):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = members
        self.net = members[0].net
        self.flops: FlopMeter = members[0].flops
        for m in members[1:]:
            m.flops = self.flops  # one meter: the ledger charges every member's digital work

    @property
    def s(self) -> Any:
        """The members' shared settings (what label-overlaying code reads)."""
        return self.members[0].s

    def digital_modules(self) -> list[nn.Module]:
        """Every member's Linears (what ``train.average`` averages)."""
        return [mod for m in self.members for mod in m.digital_modules()]

    def train_epoch(self, x: Any, y: torch.Tensor) -> list[float]:
        """One epoch of every member in turn; the members' mean loss per block."""
        losses = [m.train_epoch(x, y) for m in self.members]
        return [sum(col) / len(col) for col in zip(*losses, strict=True)]

    @torch.no_grad()
    def scores(self, x: torch.Tensor, phase: str = "eval", per_block: bool = False) -> torch.Tensor:
        """Summed goodness of every member for every candidate label, ``[N, n_classes]``
        (``per_block``: block by block, summed over members, ``[N, n_classes, blocks]``)."""
        total = self.members[0].scores(x, phase=phase, per_block=per_block)
        for m in self.members[1:]:
            total += m.scores(x, phase=phase, per_block=per_block)
        return total

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The label with the largest summed goodness over members (M x n_classes passes)."""
        return self.scores(x).argmax(1)

    def state_dict(self) -> dict:
        """Every member's rule state, and the weights of members 1.. (member 0's network is
        the runner's and is saved with it)."""
        return {
            "members": [m.state_dict() for m in self.members],
            "networks": [_digital_state(m.net) for m in self.members[1:]],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state_dict``."""
        if len(state["members"]) != len(self.members):
            raise ValueError(f"checkpoint has {len(state['members'])} ensemble members, this "
                             f"run {len(self.members)}: train.ensemble differs")
        for m, s in zip(self.members, state["members"], strict=True):
            m.load_state_dict(s)
        for m, s in zip(self.members[1:], state["networks"], strict=True):
            missing, unexpected = m.net.load_state_dict(s, strict=False)
            if unexpected or any(".physical." not in k for k in missing):
                raise ValueError(f"ensemble member state does not fit its network: missing "
                                 f"{missing}, unexpected {unexpected}")
