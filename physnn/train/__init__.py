"""Physical networks and the learning rules that train their digital parameters."""

from .flops import FlopMeter
from .network import Block, PhysicalNetwork
from .phyll import PhyLL, PhyLLSettings, goodness, overlay_label, phyll_loss, wrong_labels

__all__ = [
    "Block", "FlopMeter", "PhyLL", "PhyLLSettings", "PhysicalNetwork", "goodness",
    "overlay_label", "phyll_loss", "wrong_labels",
]
