"""Band-limited resampling of audio onto the time steps of the FDTD grid, a chunk at a time.

A waveform ``x[k]`` (``k = 0 .. T - 1``) sampled at ``sample_rate`` stands for the
band-limited signal ``x(t) = sum_k x[k] h(t sample_rate - k)``; the grid needs its value at
the half steps ``t_n = (n + 1/2) dt``, where the source enters the pressure update of step
``n`` (``p^n -> p^{n+1}``). ``h`` is a Kaiser-windowed sinc:

    h(u) = r sinc(r u) I0(beta sqrt(1 - (u / a)^2)) / I0(beta)   for |u| < a, else 0

with ``r = min(1, 1 / (sample_rate dt))`` (1 when the grid runs faster than the audio, the
usual case: pure interpolation; below 1 it is also the anti-aliasing low-pass of a
downsampling), ``a = HALF_WIDTH / r`` input samples and ``beta = BETA``. The kernel passes
frequencies up to about 0.42 ``sample_rate`` with a ripple below 1e-4 and stops the images
above 0.58 ``sample_rate`` by about 80 dB; the waveform is zero outside ``0 .. T - 1``.

Why not linear interpolation: it attenuates a tone by a factor that depends on where the
grid's instants fall between the samples (up to 8 % in amplitude at a quarter of the sample
rate), so a sub-sample shift of the input would change the probe energies by percent; the
windowed sinc makes the drive a faithful band-limited signal and the energies shift-invariant
to about 1e-4 (``tests/test_wave_audio.py``).

Memory: ``Resampler.values`` returns the source for steps ``start .. stop - 1`` only, so a
query holds one chunk of the drive at a time, whatever the waveform's length.
"""

from __future__ import annotations

import math

import torch

HALF_WIDTH = 16
"""Zero crossings of the sinc on each side of the kernel (32 taps when interpolating)."""

BETA = 8.0
"""Kaiser window shape: about 80 dB of image rejection, 1e-4 passband ripple."""

_I0_BETA = float(torch.special.i0(torch.tensor(BETA, dtype=torch.float64)))


class Resampler:
    """The grid's source values ``x((n + 1/2) dt)`` of waveforms sampled at ``sample_rate``."""

    def __init__(self, sample_rate: float, dt: float, n_samples: int) -> None:
        self.sample_rate = float(sample_rate)
        self.dt = float(dt)
        self.n_samples = int(n_samples)
        self.ratio = min(1.0, 1.0 / (self.sample_rate * self.dt))
        """Cut-off as a fraction of the input's Nyquist frequency (1: interpolation only)."""
        self.support = HALF_WIDTH / self.ratio
        """Half-width of the kernel in input samples."""
        self.taps = 2 * math.ceil(self.support)
        """Input samples each output value reads."""

    def positions(self, start: int, stop: int) -> torch.Tensor:
        """Times of steps ``start .. stop - 1``'s source, in input samples (float64)."""
        n = torch.arange(start, stop, dtype=torch.float64)
        return (n + 0.5) * (self.dt * self.sample_rate)

    def kernel(self, u: torch.Tensor) -> torch.Tensor:
        """``h(u)``: the windowed sinc at offsets ``u`` (input samples, float64)."""
        v = (u / self.support).clamp(-1.0, 1.0)
        window = torch.special.i0(BETA * (1 - v * v).clamp_min(0).sqrt()) / _I0_BETA
        h = self.ratio * torch.sinc(self.ratio * u) * window
        return torch.where(u.abs() < self.support, h, torch.zeros_like(h))

    def weights(self, start: int, stop: int) -> tuple[int, torch.Tensor]:
        """The kernel of steps ``start .. stop - 1`` as a band matrix: ``(lo, W)`` with
        ``W [stop - start, span]`` (float64) the weights of input samples ``lo .. lo + span - 1``,
        so the source values are ``x[:, lo : lo + span] @ W.T`` (samples outside the waveform
        are zero: clip ``lo`` and ``W``'s columns to them)."""
        tau = self.positions(start, stop)
        lo = int(torch.floor(tau[0])) - self.taps // 2 + 1
        span = int(torch.floor(tau[-1])) + self.taps // 2 + 1 - lo
        k = lo + torch.arange(span, dtype=torch.float64)
        return lo, self.kernel(tau[:, None] - k[None, :])

    def values(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """``[B, stop - start]``: the band-limited ``x`` at steps ``start .. stop - 1``'s
        source times (differentiable in ``x``; ``x`` is ``[B, n_samples]``)."""
        lo, w = self.weights(start, stop)
        a, b = max(lo, 0), min(lo + w.shape[1], self.n_samples)
        if b <= a:
            return x.new_zeros(x.shape[0], stop - start)
        w = w[:, a - lo : b - lo].to(device=x.device, dtype=x.dtype)
        return x[:, a:b] @ w.T

    def last_step(self) -> int:
        """The first step whose source time is past the waveform's last non-zero kernel:
        the source is zero from there on (``tail_s``)."""
        return math.ceil((self.n_samples - 1 + self.support) / (self.dt * self.sample_rate))
