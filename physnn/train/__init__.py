"""Physical networks and the learning rules that train their digital parameters."""

from .backprop import Backprop, EndToEndSettings
from .ensemble import Ensemble, member_network
from .ff import FFSettings, ForwardForward
from .flops import FlopMeter
from .ledger import LedgerFlopMeter, PeakMemory, ledger
from .methods import METHODS, make_trainer
from .network import Block, PhysicalNetwork
from .pat import PhysicsAware
from .phyll import PhyLL, PhyLLSettings, goodness, overlay_label, phyll_loss, wrong_labels
from .readout import BlockWeights, weighted_goodness

__all__ = [
    "Backprop", "Block", "BlockWeights", "EndToEndSettings", "Ensemble", "FFSettings",
    "FlopMeter", "ForwardForward", "LedgerFlopMeter", "METHODS", "PeakMemory", "PhyLL",
    "PhyLLSettings", "PhysicalNetwork", "PhysicsAware", "goodness", "ledger", "make_trainer",
    "member_network", "overlay_label", "phyll_loss", "weighted_goodness", "wrong_labels",
]
