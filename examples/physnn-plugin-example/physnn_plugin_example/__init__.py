"""An example physnn plug-in: the ``example:tanh-mixer`` device kind and the ``example-blobs``
data set. physnn finds both through the entry points in this package's ``pyproject.toml``;
nothing here is imported until a config names one of them."""

from .blobs import load_blobs
from .mixer import TanhMixer

__all__ = ["TanhMixer", "load_blobs"]
