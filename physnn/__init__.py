"""physnn: train physical neural networks with model-free physical local learning."""

import os as _os

# torch's OpenMP threads spin-wait for each other at every parallel op by default; beside
# other busy processes that makes a run many times slower (docs/getting-started.md,
# "Threads"). PASSIVE lets them sleep. libgomp reads it once, when torch loads, so it is set
# here, before torch, unless the user set it; processes physnn spawns inherit it.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__  # noqa: E402 - after the environment above
from .core import Device, DeviceSpec, Domain, make_device  # noqa: E402

__all__ = ["Device", "DeviceSpec", "Domain", "make_device", "__version__"]
