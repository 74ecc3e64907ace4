"""Torch simulators of physical substrates (batched, seeded, black boxes by default)."""

from .optical import OpticalCavity, haar_unitary

__all__ = ["OpticalCavity", "haar_unitary"]
