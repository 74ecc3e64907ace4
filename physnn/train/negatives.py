"""Negative samples built without labels, for unsupervised PhyLL.

A label-free local rule still needs something to push its goodness down on: inputs that look
like data locally but not globally. Two recipes are built in, chosen by ``train.negatives``:

- ``hybrid`` (images; Hinton's forward-forward paper, 2022): two real images joined through a
  smooth random mask, ``m * a + (1 - m) * b``. The mask is a random binary image blurred
  several times with the filter ``[1/4, 1/2, 1/4]`` along rows and columns and thresholded
  at 0.5, so it has large connected regions: each region shows strokes of one real image,
  while the whole is no digit at all. Short-range correlations survive, long-range ones do not.
- ``shuffle`` (feature vectors, e.g. formants): each feature permuted across the batch on
  its own, so every marginal distribution is exact and every correlation between features
  is gone.
- ``mix``: a convex mix ``lam * a + (1 - lam) * b`` of two different samples, ``lam`` uniform
  in [0.3, 0.7]: a point between two tokens, where (for vowels) few real tokens lie.

A negative generator is ``fn(x, gen, slots, image_shape) -> x_neg``: ``x`` the batch with its
label slots (left as they are), ``gen`` the trainer's generator (the only randomness, so a
resumed run draws the same negatives), ``image_shape`` the data set's (None for vectors).
``NEGATIVES`` maps names to generators; add one there to plug in another recipe.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

NegativeFn = Callable[[torch.Tensor, torch.Generator, int, "tuple[int, int] | None"], torch.Tensor]
"""``(x, gen, label_slots, image_shape) -> negatives`` of ``x``'s shape."""


def _partners(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """For each sample another one of the batch (a random nonzero cyclic shift: never itself;
    a batch of one sample is its own partner, so its negative carries no signal)."""
    shift = int(torch.randint(1, n, (1,), generator=gen)) if n > 1 else 0
    return ((torch.arange(n) + shift) % n).to(device)


def smooth_masks(n: int, shape: tuple[int, int], gen: torch.Generator,
                 blurs: int | None = None) -> torch.Tensor:
    """``n`` random binary masks ``[n, rows, cols]`` with large connected regions.

    ``blurs``: passes of the ``[1/4, 1/2, 1/4]`` filter along rows and columns; None picks
    ``max(1, min(shape) // 4)`` (6 on 28x28 images, 2 on 8x8), enough that regions span a
    few strokes on either size.
    """
    rows, cols = shape
    k = blurs if blurs is not None else max(1, min(rows, cols) // 4)
    m = torch.rand(n, 1, rows, cols, generator=gen)
    m = (m > 0.5).to(torch.float32)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    for _ in range(k):
        m = F.conv2d(F.pad(m, (1, 1, 0, 0), mode="replicate"), kernel.view(1, 1, 1, 3))
        m = F.conv2d(F.pad(m, (0, 0, 1, 1), mode="replicate"), kernel.view(1, 1, 3, 1))
    return (m[:, 0] > 0.5).to(torch.float32)


def hybrid(x: torch.Tensor, gen: torch.Generator, slots: int,
           image_shape: tuple[int, int] | None) -> torch.Tensor:
    """Two images of the batch joined through a smooth random mask (see the module)."""
    if image_shape is None:
        raise ValueError("train.negatives='hybrid' needs image data (a data set with an "
                         "image_shape, e.g. digits or mnist); use 'shuffle' or 'mix' for vectors")
    rows, cols = image_shape
    b = x[_partners(x.shape[0], gen, x.device)]
    masks = smooth_masks(x.shape[0], image_shape, gen).reshape(x.shape[0], rows * cols)
    masks = masks.to(device=x.device, dtype=x.dtype)
    out = x.clone()
    image = slice(slots, slots + rows * cols)
    out[:, image] = masks * x[:, image] + (1 - masks) * b[:, image]
    return out


def shuffle(x: torch.Tensor, gen: torch.Generator, slots: int,
            image_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Each feature permuted across the batch independently (label slots untouched)."""
    n, d = x.shape
    order = torch.argsort(torch.rand(n, d - slots, generator=gen), dim=0).to(x.device)
    out = x.clone()
    out[:, slots:] = torch.gather(x[:, slots:], 0, order)
    return out


def mix(x: torch.Tensor, gen: torch.Generator, slots: int,
        image_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """``lam * a + (1 - lam) * b`` of two different samples, ``lam`` in [0.3, 0.7]."""
    b = x[_partners(x.shape[0], gen, x.device)]
    lam = (0.3 + 0.4 * torch.rand(x.shape[0], 1, generator=gen)).to(device=x.device, dtype=x.dtype)
    out = x.clone()
    out[:, slots:] = lam * x[:, slots:] + (1 - lam) * b[:, slots:]
    return out


NEGATIVES: dict[str, NegativeFn] = {"hybrid": hybrid, "shuffle": shuffle, "mix": mix}
"""Label-free negative generators by ``train.negatives`` (``auto``: hybrid for images,
shuffle for feature vectors)."""


def negative_generator(name: str, image_shape: tuple[int, int] | None) -> NegativeFn:
    """The generator ``train.negatives`` names (``auto`` resolved by the data)."""
    if name == "auto":
        name = "hybrid" if image_shape is not None else "shuffle"
    if name not in NEGATIVES:
        raise ValueError(f"unknown train.negatives {name!r}; allowed: auto, "
                         f"{', '.join(NEGATIVES)}")
    return NEGATIVES[name]
