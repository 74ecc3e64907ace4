"""physnn: train physical neural networks with model-free physical local learning."""

from .devices import Device, DeviceSpec, Domain, make_device

__version__ = "0.1.0"
__all__ = ["Device", "DeviceSpec", "Domain", "make_device", "__version__"]
