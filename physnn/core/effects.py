"""Composable non-idealities: what makes a measured output differ from the ideal physics.

An ``Effect`` is a seeded tensor transform. The same effects serve two places: inside a
simulator (the optical camera applies them per pixel, before pooling) and around any device
through ``NonIdealDevice`` (DAC quantisation of inputs, noise on outputs). Effects keep
gradients flowing straight through their random or discrete parts, so a differentiable
simulator stays differentiable with noise switched on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch

from .device import Device, finite_number, whole_number


def _straight_through(y: torch.Tensor, y_measured: torch.Tensor) -> torch.Tensor:
    """Value of ``y_measured`` (a fresh tensor it may overwrite), gradient of ``y``.

    The value is ``y + (y_measured - y)``, rounded as such (the published runs' arithmetic);
    without a gradient to carry it is computed in place (addition commutes bit for bit)."""
    if y.requires_grad:
        return y + (y_measured - y).detach()
    return y_measured.sub_(y).add_(y)


@dataclass
class Effect:
    """One non-ideality: a seeded transform of a batch, described by plain data.

    Subclasses set ``kind`` (the name descriptions use) and implement ``__call__(y, gen)``;
    all randomness comes from ``gen``, the device's own stream, so runs are reproducible.
    """

    kind: ClassVar[str] = ""

    def __call__(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The description ``make_effects`` rebuilds this effect from."""
        return {"kind": self.kind, **asdict(self)}


@dataclass
class ReadoutNoise(Effect):
    """Additive Gaussian noise of standard deviation ``sigma`` (detector read noise)."""

    kind: ClassVar[str] = "readout"
    sigma: float = 0.01

    def __post_init__(self) -> None:
        finite_number("readout: sigma", self.sigma, lo=0)

    def __call__(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.sigma <= 0:
            return y
        noise = torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
        return y + self.sigma * noise if y.requires_grad else noise.mul_(self.sigma).add_(y)


@dataclass
class ShotNoise(Effect):
    """Poisson photon/phonon counting: ``photons`` counts correspond to one output unit.

    ``sampler = "poisson"`` draws every count exactly (torch.poisson; the published runs).
    ``sampler = "gaussian"`` is the fast approximation: where the mean count is at least
    ``exact_below`` the count is Gaussian with variance = mean (exact mean and variance;
    what it drops is the skewness ``1/sqrt(mean)``, at most 0.22 at the default threshold
    of 20 counts), below it the exact Poisson (``exact_below = 0``: Gaussian everywhere,
    cheaper still: no search for small counts). A Gaussian ``readout`` effect right after it
    is folded into the same draw (one normal per pixel, the variances added). Not the same
    random stream as ``poisson``: the published runs keep ``poisson``.
    """

    kind: ClassVar[str] = "shot"
    photons: float = 1000.0
    sampler: str = "poisson"
    exact_below: float = 20.0

    def __post_init__(self) -> None:
        finite_number("shot: photons (per output unit)", self.photons, lo=0, strict=True)
        if self.sampler not in ("poisson", "gaussian"):
            raise ValueError(f"shot: sampler must be 'poisson' or 'gaussian', got {self.sampler!r}")
        finite_number("shot: exact_below (counts)", self.exact_below, lo=0)

    def __call__(
        self, y: torch.Tensor, gen: torch.Generator, readout_sigma: float = 0.0
    ) -> torch.Tensor:
        if self.sampler == "gaussian":
            return self._gaussian(y, gen, readout_sigma)
        counts = torch.poisson(y.detach().clamp_min(0).mul_(self.photons), generator=gen)
        out = _straight_through(y, counts.to(y.dtype).div_(self.photons))
        return ReadoutNoise(readout_sigma)(out, gen) if readout_sigma else out

    def _gaussian(self, y: torch.Tensor, gen: torch.Generator, readout_sigma: float) -> torch.Tensor:
        """mean + sqrt(mean / photons + readout_sigma^2) * N(0, 1) in output units; the exact
        Poisson (plus the readout's share of the same normal) where the mean is small."""
        mean = y.detach().clamp_min(0)
        var = mean * (1.0 / self.photons)
        if readout_sigma:
            var += readout_sigma**2
        z = torch.randn(mean.shape, generator=gen, device=mean.device, dtype=mean.dtype)
        out = torch.addcmul(mean, var.sqrt_(), z)
        if not self.exact_below > 0:  # Gaussian everywhere: no search for small counts
            return _straight_through(y, out) if y.requires_grad else out
        small = (mean < self.exact_below / self.photons).view(-1).nonzero().squeeze(1)
        if small.numel():  # index lists: much cheaper than boolean masks for a few percent
            lam = mean.view(-1).index_select(0, small).mul_(self.photons)
            exact = torch.poisson(lam, generator=gen).div_(self.photons)
            if readout_sigma:
                exact.add_(z.view(-1).index_select(0, small), alpha=readout_sigma)
            out.view(-1).index_copy_(0, small, exact)
        return _straight_through(y, out) if y.requires_grad else out


@dataclass
class Saturation(Effect):
    """Saturation at ``+-level``: ``soft`` (tanh) or ``hard`` (clip), symmetric like tanh."""

    kind: ClassVar[str] = "saturation"
    level: float = 1.0
    mode: str = "soft"

    def __post_init__(self) -> None:
        if self.mode not in ("soft", "hard"):
            raise ValueError(f"saturation: mode must be 'soft' or 'hard', got {self.mode!r}")
        finite_number("saturation: level", self.level, lo=0, strict=True)

    def __call__(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.mode == "soft":
            if y.requires_grad:
                return self.level * torch.tanh(y / self.level)
            return (y / self.level).tanh_().mul_(self.level)
        return y.clamp(-self.level, self.level)


@dataclass
class Quantization(Effect):
    """Uniform quantisation to ``bits`` over ``[lo, hi]`` (an ADC on outputs, a DAC on inputs)."""

    kind: ClassVar[str] = "quantize"
    bits: int = 8
    lo: float = 0.0
    hi: float = 1.0

    def __post_init__(self) -> None:
        whole_number("quantize: bits", self.bits, lo=1, hi=32)
        finite_number("quantize: lo", self.lo)
        finite_number("quantize: hi", self.hi)
        if not self.lo < self.hi:
            raise ValueError(f"quantize: range needs lo < hi, got [{self.lo}, {self.hi}]")

    def __call__(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        steps = 2 ** int(self.bits) - 1
        scale = (self.hi - self.lo) / steps
        q = y.detach().clamp(self.lo, self.hi).sub_(self.lo).div_(scale).round_()
        return _straight_through(y, q.mul_(scale).add_(self.lo))


EFFECTS: dict[str, type[Effect]] = {
    cls.kind: cls for cls in (ReadoutNoise, ShotNoise, Saturation, Quantization)
}


def make_effects(specs: Iterable[Mapping[str, Any] | Effect] | None) -> list[Effect]:
    """Build effects from descriptions like ``{"kind": "readout", "sigma": 0.01}``."""
    out: list[Effect] = []
    for spec in specs or ():
        if isinstance(spec, Effect):
            out.append(spec)
            continue
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if kind not in EFFECTS:
            raise ValueError(f"unknown non-ideality {kind!r}; allowed: {sorted(EFFECTS)}")
        try:
            out.append(EFFECTS[kind](**spec))
        except TypeError as e:
            raise ValueError(f"bad parameters for non-ideality {kind!r}: {e}") from None
    return out


def apply_effects(y: torch.Tensor, effects: list[Effect], gen: torch.Generator) -> torch.Tensor:
    """Apply ``effects`` in order, all drawing from the one stream ``gen``; a Gaussian shot
    sampler takes the readout noise that follows it into its own draw."""
    i = 0
    while i < len(effects):
        eff, nxt = effects[i], effects[i + 1] if i + 1 < len(effects) else None
        if isinstance(eff, ShotNoise) and eff.sampler == "gaussian" and isinstance(nxt, ReadoutNoise):
            y, i = eff(y, gen, readout_sigma=nxt.sigma), i + 2
        else:
            y, i = eff(y, gen), i + 1
    return y


class NonIdealDevice(Device):
    """Wrap any device with input effects (e.g. DAC quantisation) and output effects."""

    def __init__(
        self,
        inner: Device,
        *,
        inputs: Iterable[Mapping[str, Any] | Effect] | None = None,
        outputs: Iterable[Mapping[str, Any] | Effect] | None = None,
        seed: int | None = None,
    ):
        super().__init__(inner.spec, seed=inner.seed + 1 if seed is None else seed, clip=inner.clip)
        self.inner = inner
        self.input_effects = make_effects(inputs)
        self.output_effects = make_effects(outputs)
        self.differentiable = inner.differentiable

    def open(self) -> NonIdealDevice:
        """Open the inner device with this wrapper."""
        self.inner.open()
        super().open()
        return self

    def close(self) -> None:
        """Close the inner device with this wrapper."""
        self.inner.close()
        super().close()

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The wrapper's effects and the inner device both measure on a copy of their noise."""
        with super().evaluating(), self.inner.evaluating():
            yield

    def apply_to_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """The inner device's tensors (effects keep none of their own)."""
        self.inner.apply_to_tensors(fn)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        gen = self.generator(x.device)
        x = self.spec.domain.project(apply_effects(x, self.input_effects, gen))
        y = self.inner(x) if not torch.is_grad_enabled() else self.inner.forward_with_grad(x)
        return apply_effects(y, self.output_effects, gen)

    def state_dict(self) -> dict[str, Any]:
        """The wrapper's streams and accounting, and the inner device's under ``inner``."""
        return {**super().state_dict(), "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved."""
        super().load_state_dict(state)
        if "inner" in state:
            self.inner.load_state_dict(state["inner"])

    def describe(self) -> dict[str, Any]:
        """The inner description plus ``inputs``/``outputs``: what make_device rebuilds it from."""
        return {
            **self.inner.describe(),
            "inputs": [e.describe() for e in self.input_effects],
            "outputs": [e.describe() for e in self.output_effects],
        }


@dataclass
class LinearDrift(Effect):
    """Slow drift: every output moves by ``rate`` units per sample measured (the device's
    query clock), so the k-th sample this effect sees is offset by ``rate * k``.

    A minimal model with a known rate, for testing calibration and drift checks; its clock is
    not part of a device's ``state_dict`` (a resumed run restarts it at zero).
    """

    kind: ClassVar[str] = "linear_drift"
    rate: float = 1e-6

    def __post_init__(self) -> None:
        finite_number("linear_drift: rate", self.rate)
        self._seen = 0

    def __call__(self, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        t = self._seen + torch.arange(y.shape[0], device=y.device, dtype=y.dtype)
        self._seen += y.shape[0]
        return y + self.rate * t.unsqueeze(1)


EFFECTS[LinearDrift.kind] = LinearDrift
