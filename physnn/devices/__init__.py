"""Devices: the contract every physical layer obeys, non-idealities and the factory."""

from .base import Accounting, Device, DeviceSpec, Domain
from .factory import KINDS, make_device
from .nonideal import (
    Effect,
    NonIdealDevice,
    Quantization,
    ReadoutNoise,
    Saturation,
    ShotNoise,
    make_effects,
)

__all__ = [
    "Accounting", "Device", "DeviceSpec", "Domain", "Effect", "KINDS", "NonIdealDevice",
    "Quantization", "ReadoutNoise", "Saturation", "ShotNoise", "make_device", "make_effects",
]
