"""Torch simulators of physical substrates (batched, seeded, black boxes by default)."""

from .acoustic import AcousticCavity
from .microwave import MetasurfaceCavity
from .optical import OpticalCavity, haar_unitary

__all__ = ["AcousticCavity", "MetasurfaceCavity", "OpticalCavity", "haar_unitary"]
