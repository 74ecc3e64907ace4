"""Input-side data augmentation a lab could apply: change what is sent to the device.

A physical network sees only its inputs, so augmentation here is something an experimenter
could do at the source (move the image on the SLM, perturb a synthesised vowel), never a
change to the measurement. Chosen by ``train.augment``, sized by ``train.augment_size``:

- ``shift`` (images): each training image moved by a random whole number of pixels in
  ``[-s, s]`` along rows and along columns (``s = augment_size``, default 1), the pixels
  moved in from outside blank (the value a zero pixel has on the device:
  ``domain.from_unit(0)``, which is ``domain.lo``);
- ``jitter`` (feature vectors, e.g. formants): each feature, in the [0, 1] units it had
  before it was mapped into the device's domain, multiplied by ``1 + e`` with
  ``e ~ N(0, augment_size)`` (default 0.02), then mapped back with ``Domain.from_unit``,
  which clips into the range (or snaps to the levels), so the device's domain is never left.
  When ``data.digits`` wrote each feature over several inputs, the noise moves the feature
  the digits encode (rounded back to its ``levels ** digits`` steps and written as digits
  again), never one digit alone: a flip of a leading digit would move the feature by a
  quarter of its range.

An augmentation is ``fn(x, gen) -> x_aug`` of the batch's shape; it draws only from ``gen``
(the trainer's generator, so a resumed run draws the same), never touches the label slots,
and is applied to training batches only, afresh every epoch: test and evaluation data are
never augmented. Neither costs a device query; each costs a few digital operations per input
that the ledger does not count (they happen where the inputs are made, not in the network).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from ..core.device import Domain

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``(training batch, generator) -> augmented batch`` of the same shape."""


class DigitCodec(Protocol):
    """Features written over several inputs each, as ``jitter`` needs to see them:
    ``physnn.data.DigitLayout`` (``Dataset.digit_layout``) is one. A protocol, so the rules
    need not import the data layer."""

    @property
    def width(self) -> int:
        """Inputs the features take, right after the label slots."""
        ...

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, width]`` inputs in [0, 1] -> ``[n, features]`` in [0, 1]."""
        ...

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """``[n, features]`` in [0, 1] -> ``[n, width]`` inputs in [0, 1] (rounded)."""
        ...


AUGMENTS = ("none", "shift", "jitter")
"""The values ``train.augment`` takes."""

DEFAULT_SIZES = {"shift": 1.0, "jitter": 0.02}
"""``augment_size = 0`` stands for these: one pixel, 2 % relative noise."""


def shift_images(x: torch.Tensor, gen: torch.Generator, slots: int,
                 image_shape: tuple[int, int], size: int, fill: float) -> torch.Tensor:
    """Each image of ``x`` moved by its own random offset in ``[-size, size]`` pixels along
    rows and columns, ``fill`` moved in; the label slots and anything after the image as
    they are."""
    rows, cols = image_shape
    n = x.shape[0]
    offsets = torch.randint(-size, size + 1, (n, 2), generator=gen).to(x.device)
    image = x[:, slots : slots + rows * cols].reshape(n, rows, cols)
    padded = F.pad(image, (size, size, size, size), value=fill)
    r = torch.arange(rows, device=x.device).unsqueeze(0) - offsets[:, :1] + size  # [n, rows]
    c = torch.arange(cols, device=x.device).unsqueeze(0) - offsets[:, 1:] + size  # [n, cols]
    moved = padded[torch.arange(n, device=x.device)[:, None, None], r[:, :, None], c[:, None, :]]
    out = x.clone()
    out[:, slots : slots + rows * cols] = moved.reshape(n, rows * cols)
    return out


def jitter_features(x: torch.Tensor, gen: torch.Generator, slots: int, sigma: float,
                    domain: Domain, digits: DigitCodec | None = None) -> torch.Tensor:
    """Every feature after the label slots times ``1 + N(0, sigma)``, in [0, 1] units, kept
    inside ``domain``; with ``digits``, the features those inputs encode (see the module)."""
    end = x.shape[1] if digits is None else slots + digits.width
    unit = (x[:, slots:end] - domain.lo) / (domain.hi - domain.lo)
    if digits is not None:
        unit = digits.decode(unit)
    e = torch.randn(*unit.shape, generator=gen).to(x.device, x.dtype)
    moved = unit * (1 + sigma * e)
    if digits is not None:
        moved = digits.encode(moved)
    out = x.clone()
    out[:, slots:end] = domain.from_unit(moved)  # clipped (or snapped) into it
    return out


def check_augment(name: str) -> None:
    """Refuse, in one line, a ``train.augment`` outside ``AUGMENTS`` (``make_augment`` and the
    config both ask here)."""
    if name not in AUGMENTS:
        raise ValueError(f"train.augment must be one of {', '.join(AUGMENTS)}, got {name!r}")


def make_augment(name: str, size: float, slots: int, image_shape: tuple[int, int] | None,
                 domain: Domain, digits: DigitCodec | None = None) -> AugmentFn | None:
    """The augmentation ``train.augment = name`` sized ``size`` (0: ``DEFAULT_SIZES``) for
    data with ``slots`` label slots, ``image_shape`` and ``digits`` (``Dataset``'s) fed to a
    device with ``domain``; None for ``none``. Refuses, in one line, what the data cannot
    take."""
    check_augment(name)
    if name == "none":
        return None
    size = float(size) or DEFAULT_SIZES[name]
    if name == "jitter":
        return lambda x, gen: jitter_features(x, gen, slots, size, domain, digits)
    if image_shape is None:
        raise ValueError("train.augment = 'shift' needs image data (a data set with an "
                         "image_shape, e.g. digits or mnist); use 'jitter' for feature vectors")
    if not size.is_integer() or not 1 <= size < min(image_shape):
        raise ValueError(f"train.augment_size for 'shift' must be a whole number of pixels in "
                         f"[1, {min(image_shape) - 1}] for {image_shape} images, got {size:g}")
    fill = float(domain.from_unit(torch.zeros(1)).item())
    pixels = int(size)
    return lambda x, gen: shift_images(x, gen, slots, image_shape, pixels, fill)
