"""physnn: train physical neural networks with model-free physical local learning."""

from ._version import __version__
from .core import Device, DeviceSpec, Domain, make_device

__all__ = ["Device", "DeviceSpec", "Domain", "make_device", "__version__"]
