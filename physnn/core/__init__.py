"""The device contract: what every physical layer is, whatever stands behind it.

``physnn.core`` is the bottom of the package: it imports no other physnn package. It holds
the ``Device`` contract (spec, domain, validation, accounting, seeded randomness,
lifecycle), composable non-idealities, perturbations of a device over time, the registry of
device kinds with its factory ``make_device``, and atomic file writes.
"""

from .device import Accounting, Device, DeviceSpec, Domain
from .effects import (
    Effect,
    NonIdealDevice,
    Quantization,
    ReadoutNoise,
    Saturation,
    ShotNoise,
    make_effects,
)
from .registry import KINDS, load_description, make_device, register_kind

__all__ = [
    "Accounting", "Device", "DeviceSpec", "Domain", "Effect", "KINDS", "NonIdealDevice",
    "Quantization", "ReadoutNoise", "Saturation", "ShotNoise", "load_description", "make_device",
    "make_effects", "register_kind",
]
