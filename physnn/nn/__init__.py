"""Devices as torch layers, and physics-aware differentiation as an autograd Function.

``physnn.nn`` is how a physical device meets ``torch.nn``: ``PhysicalLayer`` wraps any
``physnn.core.Device`` as a module (black box, or differentiable through a twin), and
``physics_aware`` measures on the device while taking the gradient from a twin, so
backprop and physics-aware training are ordinary autograd. It depends on ``physnn.core``
only, so a user's own model and training loop need nothing else from physnn.
"""

from .counting import TwinFlops, TwinMeter, hidden_from_flop_counters
from .layer import PhysicalLayer
from .physics_aware import PhysicsAwareFunction, Twin, physics_aware

__all__ = [
    "PhysicalLayer", "PhysicsAwareFunction", "Twin", "TwinFlops", "TwinMeter",
    "hidden_from_flop_counters", "physics_aware",
]
