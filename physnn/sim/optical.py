"""Optical multimode cavity / fibre: SLM -> complex transmission matrix -> camera.

The nonlinearity a physical network exploits here is interference followed by square-law
detection: with phase encoding each camera pixel is ``|sum_j T_ij exp(i phi_j)|^2``, a sum of
cosines of *differences* of input values, so inputs (and an overlaid label) interact
multiplicatively. Unused SLM pixels hold a constant background and act as a reference field.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import torch
import torch.nn.functional as F

from ..core.device import Device, DeviceSpec, Domain, check_memory, finite_fields, finite_number
from ..core.effects import Effect, apply_effects, make_effects
from ..core.perturbation import Perturbable, Sudden


def haar_unitary(n: int, gen: torch.Generator, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    """A Haar-random ``n x n`` unitary (QR of a complex Gaussian with the phase fix-up).

    Large ones are remembered in this process (see ``_HaarCache``): the QR of a 2809-mode
    matrix takes seconds, and the same cavity is built again by every run, test or comparison
    arm that uses the same seed. A hit returns the same bits and leaves ``gen`` where a fresh
    draw would have left it."""
    if n < _HAAR_CACHE.min_n:
        return _draw_haar(n, gen, dtype)
    return _HAAR_CACHE.get(n, gen, dtype)


def _draw_haar(n: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    z = torch.complex(
        torch.randn(n, n, generator=gen, dtype=torch.float64),
        torch.randn(n, n, generator=gen, dtype=torch.float64),
    ) / math.sqrt(2)
    q, r = torch.linalg.qr(z)
    d = torch.diagonal(r)
    return (q * (d / d.abs()).unsqueeze(0)).to(dtype)


class _HaarCache:
    """Least-recently-used unitaries, keyed on everything that decides their bits: the size,
    the dtype, the generator's whole state and the torch thread count (LAPACK's blocking may
    round differently with more threads). Bounded in bytes, so a sweep over many seeds keeps
    only the last few."""

    def __init__(self, min_n: int = 256, max_bytes: int = 512 * 2**20) -> None:
        self.min_n, self.max_bytes = min_n, max_bytes
        self._entries: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, n: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        state = gen.get_state()
        key = (n, dtype, torch.get_num_threads(), hashlib.sha256(state.numpy().tobytes()).digest())
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
        if hit is not None:
            gen.set_state(hit[1])
            return hit[0].clone()  # callers may change theirs in place
        u = _draw_haar(n, gen, dtype)
        with self._lock:
            self._entries[key] = (u.clone(), gen.get_state())
            while self.nbytes > self.max_bytes and self._entries:
                self._entries.popitem(last=False)
        return u

    @property
    def nbytes(self) -> int:
        return sum(u.numel() * u.element_size() for u, _ in self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_HAAR_CACHE = _HaarCache()


def _shape(value: Any, name: str) -> tuple[int, int]:
    """A (rows, cols) pixel grid from a tuple or a TOML list."""
    if len(value) != 2:
        raise ValueError(f"{name} must be (rows, cols), got {value!r}")
    return value[0], value[1]


def _grid(n: int) -> tuple[int, int]:
    """The squarest grid holding ``n`` pixels."""
    h = math.ceil(math.sqrt(n))
    return h, math.ceil(n / h)


@dataclass
class OpticalConfig:
    """Every parameter of ``sim:optical`` with its default: the keys of a device description."""

    n_in: int = 74
    """Inputs: SLM pixels driven by the network (the rest hold ``background``)."""
    encoding: str = "phase"
    """``phase``: input x sets phase x * phase_range; ``amplitude``: input sets the field."""
    phase_range: float = math.pi
    """Phase (rad) of input 1 with ``phase`` encoding."""
    slm_shape: tuple[int, int] | None = None
    """SLM pixel grid; inputs fill it row-major, the rest hold ``background``."""
    background: float = 0.0
    """Input value held by the SLM pixels beyond ``n_in`` (a reference field)."""
    camera_shape: tuple[int, int] = (20, 20)
    """Camera pixel grid (rows, cols)."""
    n_modes: int | None = None
    """Modes of the fibre/cavity; at least max(SLM pixels, camera pixels). Default: that max."""
    pool: int = 1
    """Side of the average-pooling window over camera pixels (1: no pooling)."""
    pool_stride: int | None = None
    """Stride of the pooling; default ``pool`` (non-overlapping windows)."""
    readout: str = "intensity"
    """``intensity`` (what the camera measures) or ``amplitude`` (its square root)."""
    gain: float | None = None
    """Camera counts per unit intensity; default = camera pixels (mean pixel about 1)."""
    camera: list[dict[str, Any]] = field(default_factory=list)
    """Camera non-idealities, per pixel before pooling, e.g. saturation, shot, readout noise."""
    frame_rate_hz: float = 100.0
    """Camera frames per second: one query costs one frame (time accounting)."""
    power_w: float = 1e-3
    """Laser power (energy accounting)."""
    perturbations: list[dict[str, Any]] = field(default_factory=list)
    """Drift and sudden changes (see physnn.core.perturbation); empty: a stable cavity."""
    seed: int = 0
    """Seed of the transmission matrix, the perturbations and the camera noise."""
    clip: bool = False
    """Project out-of-domain inputs onto [0, 1] instead of rejecting them."""
    arithmetic: str = "exact"
    """``exact``: the arithmetic of the published runs, bit for bit. ``fast``: the same physics
    with fewer operations, so the last bits differ: only the ``n_in`` live SLM columns are
    multiplied (the background pixels' field on the camera is precomputed once) and the
    intensity is ``re^2 + im^2`` instead of ``|E|^2`` through a complex ``abs``."""

    def __post_init__(self) -> None:
        if self.encoding not in ("phase", "amplitude"):
            raise ValueError(f"encoding must be 'phase' or 'amplitude', got {self.encoding!r}")
        if self.arithmetic not in ("exact", "fast"):
            raise ValueError(f"arithmetic must be 'exact' or 'fast', got {self.arithmetic!r}")
        if self.readout not in ("intensity", "amplitude"):
            raise ValueError(f"readout must be 'intensity' or 'amplitude', got {self.readout!r}")
        if self.n_in < 1:
            raise ValueError(f"n_in must be >= 1, got {self.n_in}")
        slm = _shape(self.slm_shape, "slm_shape") if self.slm_shape else _grid(self.n_in)
        self.slm_shape = slm
        self.camera_shape = _shape(self.camera_shape, "camera_shape")
        n_slm = slm[0] * slm[1]
        if n_slm < self.n_in:
            raise ValueError(f"slm_shape {self.slm_shape} has {n_slm} pixels < n_in={self.n_in}")
        n_cam = self.camera_shape[0] * self.camera_shape[1]
        need = max(n_slm, n_cam)
        if self.n_modes is None:
            self.n_modes = need
        elif self.n_modes < need:
            raise ValueError(
                f"n_modes={self.n_modes} must be >= max(SLM pixels {n_slm}, camera pixels {n_cam})"
            )
        check_memory("n_in, camera_shape or n_modes", 16 * self.n_modes**2,
                     f"sim:optical: the {self.n_modes}-mode transmission matrix")
        finite_fields("sim:optical", self)
        for key in ("gain", "frame_rate_hz"):
            if getattr(self, key) is not None:
                finite_number(f"sim:optical: {key}", getattr(self, key), lo=0, strict=True)
        finite_number("sim:optical: power_w", self.power_w, lo=0)
        stride = self.pool_stride or self.pool
        if self.pool < 1 or stride < 1 or self.pool > min(self.camera_shape):
            raise ValueError(f"pool={self.pool} does not fit camera_shape {self.camera_shape}")

    @property
    def modes(self) -> int:
        """``n_modes`` as resolved (the default filled in)."""
        return self.n_modes if self.n_modes is not None else max(self.slm_pixels, self.camera_pixels)

    @property
    def slm_pixels(self) -> int:
        """Pixels of the SLM grid (``n_in`` of them carry inputs)."""
        rows, cols = self.slm_shape if self.slm_shape is not None else _grid(self.n_in)
        return rows * cols

    @property
    def camera_pixels(self) -> int:
        """Pixels of the camera, before pooling."""
        return self.camera_shape[0] * self.camera_shape[1]


class OpticalCavity(Perturbable, Device):
    """``sim:optical``: a seeded, batched multimode optical cavity.

    The transmission matrix is a ``camera x SLM`` block of a Haar-random unitary over
    ``n_modes`` modes: exactly energy conserving when both match ``n_modes``, lossy
    (light scattered into unobserved modes) otherwise.

    Perturbations (``perturbations`` in the description): the fibre is modelled as two
    mode-mixing sections around a thermally sensitive one, ``U(dT) = A diag(exp(i kappa dT))
    A^H U_s`` (``A`` a seeded Haar unitary, ``kappa`` per-mode phase sensitivities drawn from
    N(0, coupling^2) rad/K, ``U_s`` the structure), which stays exactly unitary and equals the
    stable cavity at ``dT = 0``. Sudden ``redraw``: a bend or a squeezed connector re-mixes a
    ``fraction`` of the modes, ``U_s[:, S] <- U_s[:, S] H`` with ``H`` a fresh Haar unitary on
    the modes ``S``.
    """

    differentiable = True
    SUDDEN_ACTIONS = {"redraw": {"fraction": 0.5}}
    DRIFT_COUPLING = 1.0
    """rad/K: spread of the modes' differential thermal phase, about 1 m of multimode silica
    fibre (dn/dT = 1.1e-5 /K; a mode-to-mode spread of the optical path of order 1e-7 m/K at
    1 um wavelength). Speckle decorrelates for dT of about 1-2 K, as measured in the lab."""
    DRIFT_UNIT = "rad/K"

    def __init__(self, config: OpticalConfig | None = None) -> None:
        cfg = config if config is not None else OpticalConfig()
        self.config = cfg
        self.camera_effects: list[Effect] = make_effects(cfg.camera)
        n_cam = cfg.camera_pixels
        h, w = self._pooled_shape()
        period = 1.0 / cfg.frame_rate_hz
        spec = DeviceSpec(
            name="sim:optical",
            n_in=cfg.n_in,
            n_out=h * w,
            domain=Domain(0.0, 1.0),
            output_units="camera counts" + (" (amplitude)" if cfg.readout == "amplitude" else ""),
            time_per_query_s=period,
            energy_per_query_j=cfg.power_w * period,
        )
        super().__init__(spec, seed=cfg.seed, clip=cfg.clip)
        self.n_slm = cfg.slm_pixels
        self.n_cam = n_cam
        g = torch.Generator().manual_seed(cfg.seed)
        u = haar_unitary(cfg.modes, g)
        self.transmission = u[:n_cam, : self.n_slm].contiguous()
        self.gain = float(cfg.gain) if cfg.gain is not None else float(n_cam)
        self._tm_cache: dict[tuple[Any, ...], torch.Tensor] = {}
        self._tm_source: torch.Tensor | None = None  # the matrix the cache was built from
        self._tm_version = -1
        self._init_perturbations(cfg.perturbations)
        if self.perturbed:  # the structure and the thermal section, drawn from the seed
            self._u_pristine = u
            self._u_struct = u.clone()
            gp = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 8191)
            self._mixer = haar_unitary(cfg.modes, gp)
            self._kappa = torch.randn(cfg.modes, generator=gp, dtype=torch.float64)

    @classmethod
    def from_description(cls, **description: Any) -> Self:
        """Build from a description's keys (the ``sim:optical`` entry point); an unknown key
        is a TypeError naming it."""
        return cls(OpticalConfig(**description))

    def apply_to_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply ``fn`` to the transmission matrix (and the perturbation structure)."""
        self.transmission = fn(self.transmission)
        if self.perturbed:
            self._u_pristine = fn(self._u_pristine)
            self._u_struct = fn(self._u_struct)
            self._mixer = fn(self._mixer)
            self._kappa = fn(self._kappa)
        self._tm_cache.clear()

    # -- perturbation hooks (see physnn.core.perturbation) ------------------------------
    def _perturb_reset(self) -> None:
        self._u_struct = self._u_pristine.clone()

    def _perturb_sudden(self, event: Sudden, gen: torch.Generator) -> str:
        n = self.config.modes
        k = max(1, min(n, round(event.params["fraction"] * n)))
        modes = torch.randperm(n, generator=gen)[:k]
        mix = haar_unitary(k, gen).to(self._u_struct.device)
        self._u_struct[:, modes] = self._u_struct[:, modes] @ mix
        return f"re-mixed {k} of {n} modes"

    def _perturb_rebuild(self, delta_k: float, coupling: float) -> None:
        u_s = self._u_struct[:, : self.n_slm]
        if delta_k == 0.0:
            tm = u_s[: self.n_cam]
        else:
            phase = torch.polar(torch.ones_like(self._kappa), self._kappa * (coupling * delta_k))
            a = self._mixer
            tm = (a[: self.n_cam] * phase) @ (a.conj().T @ u_s)
        self.transmission = tm.contiguous()
        self._tm_cache.clear()

    def _pooled_shape(self) -> tuple[int, int]:
        cfg = self.config
        s = cfg.pool_stride or cfg.pool
        h, w = ((n - cfg.pool) // s + 1 for n in cfg.camera_shape)
        return h, w

    def _cached(self, key: tuple[Any, ...], build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A tensor derived from the transmission matrix, built once per torch device and dtype
        and rebuilt whenever the matrix changes: a new tensor (perturbations,
        ``apply_to_tensors``, an assignment) or an in-place edit (its version counter)."""
        tm = self.transmission
        if tm is not self._tm_source or tm._version != self._tm_version:
            self._tm_cache.clear()
            self._tm_source, self._tm_version = tm, tm._version
        if key not in self._tm_cache:
            self._tm_cache[key] = build()
        return self._tm_cache[key]

    def _tm(self, device: torch.device, cdtype: torch.dtype) -> torch.Tensor:
        return self._cached(("tm", str(device), cdtype), lambda: self.transmission.to(device, cdtype))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """The SLM field of the pixels ``x`` drive (any number of columns), ``scale`` each."""
        cfg = self.config
        scale = 1.0 / math.sqrt(self.n_slm)
        if cfg.encoding == "phase":
            phi = x * cfg.phase_range
            return torch.polar(torch.full_like(phi, scale), phi)
        return torch.complex(x * scale, torch.zeros_like(x))

    def _encode_real(self, x: torch.Tensor) -> torch.Tensor:
        """``arithmetic = "fast"``: the live pixels' field as ``[re | im]``, ``[B, 2 n_in]``
        (vectorised cos and sin; ``polar`` is a scalar loop)."""
        cfg = self.config
        scale = 1.0 / math.sqrt(self.n_slm)
        if cfg.encoding == "phase":
            phi = x * cfg.phase_range
            return torch.cat([torch.cos(phi), torch.sin(phi)], dim=1).mul_(scale)
        return torch.cat([x * scale, torch.zeros_like(x)], dim=1)

    def _background_field(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[1, background pixels]``: their SLM field, by the very operations ``slm_field``
        applies to a row of inputs (so it is bit-identical), computed once."""
        pad = self.n_slm - self.config.n_in
        value = self.config.background
        return self._cached(
            ("bg_slm", str(device), dtype, value),
            lambda: self._encode(torch.full((1, pad), value, dtype=dtype, device=device)),
        )

    def _real_operator(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``arithmetic = "fast"``: the live columns ``T = C + iD`` as one real matrix,
        ``[re | im] @ [[C^T, D^T], [-D^T, C^T]] = [Re | Im]`` of ``E @ T^T``, and the field
        the constant background pixels put on the camera as ``[Re | Im]`` (summed once, in
        complex128)."""
        n_in, key = self.config.n_in, (str(device), dtype, self.config.background)

        root_gain = math.sqrt(self.gain)  # folded in: the intensity needs no extra pass

        def operator() -> torch.Tensor:
            t = self.transmission[:, :n_in].T.to(torch.complex128) * root_gain
            c, d = t.real, t.imag
            return torch.cat([torch.cat([c, d], 1), torch.cat([-d, c], 1)]).to(device, dtype)

        def background_on_camera() -> torch.Tensor:
            if self.n_slm == n_in:
                return torch.zeros(2 * self.n_cam, dtype=dtype, device=device)
            bg = self._background_field(self.transmission.device, torch.float64)[0]
            out = self.transmission[:, n_in:].to(torch.complex128) @ bg * root_gain
            return torch.cat([out.real, out.imag]).to(device, dtype)

        return self._cached(("op", *key), operator), self._cached(("bg_cam", *key), background_on_camera)

    def slm_field(self, x: torch.Tensor) -> torch.Tensor:
        """Complex field leaving the SLM, ``[B, SLM pixels]``, total power 1 per sample at most."""
        field = self._encode(x)
        if self.n_slm == self.config.n_in:
            return field
        bg = self._background_field(x.device, x.dtype)
        return torch.cat([field, bg.expand(x.shape[0], -1)], dim=1)

    def propagate(self, field_in: torch.Tensor) -> torch.Tensor:
        """Field on the camera: the transmission matrix applied to the SLM field."""
        tm = self._tm(field_in.device, field_in.dtype)
        return field_in @ tm.T

    def _camera_field(self, x: torch.Tensor) -> torch.Tensor:
        """Field on the camera for inputs ``x``: complex (``exact``), or ``[Re | Im]`` of the
        live columns plus the precomputed background in real arithmetic (``fast``)."""
        if self.config.arithmetic == "exact":
            return self.propagate(self.slm_field(x))
        op, bg = self._real_operator(x.device, x.dtype)
        return torch.addmm(bg, self._encode_real(x), op)

    def _intensity(self, field_out: torch.Tensor) -> torch.Tensor:
        """``gain * |E|^2`` per camera pixel (in place where no gradient is recorded)."""
        in_place = not (torch.is_grad_enabled() and field_out.requires_grad)
        if not field_out.is_complex():  # the fast path's [Re | Im], the gain folded in
            re, im = field_out[:, : self.n_cam], field_out[:, self.n_cam :]
            return re.square().addcmul_(im, im) if in_place else re.square() + im.square()
        if self.config.arithmetic == "fast":
            re, im = field_out.real, field_out.imag
            y = re.square().addcmul_(im, im) if in_place else re.square() + im.square()
        else:
            y = field_out.abs()
            y = y.square_() if in_place else y.square()
        return y.mul_(self.gain) if in_place else self.gain * y

    def _detect(self, y: torch.Tensor) -> torch.Tensor:
        """Camera non-idealities per pixel, readout, pooling, on intensities ``[B, pixels]``."""
        cfg = self.config
        y = apply_effects(y, self.camera_effects, self.generator(y.device))
        if cfg.readout == "amplitude":
            y = y.clamp_min(1e-12).sqrt()
        if cfg.pool > 1:
            y = y.reshape(-1, 1, *cfg.camera_shape)
            y = F.avg_pool2d(y, cfg.pool, stride=cfg.pool_stride or cfg.pool).flatten(1)
        return y

    def camera(self, field_out: torch.Tensor) -> torch.Tensor:
        """Square-law detection, camera non-idealities per pixel, readout, pooling."""
        return self._detect(self._intensity(field_out))

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return self.camera(self._camera_field(x))

    def _measure_calls(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """One pass of the optics for all rows (row by row the same arithmetic), then the
        camera's noise drawn call by call, in order: what consecutive calls would measure."""
        y = self._intensity(self._camera_field(x))
        return torch.cat([self._detect(y[i : i + rows]) for i in range(0, x.shape[0], rows)])

    def plot(self, fig: Any, x: torch.Tensor) -> bool:
        """Camera images (before pooling) for the first few inputs."""
        n = min(3, x.shape[0])
        with torch.no_grad():
            img = self.camera(self.propagate(self.slm_field(self.validate(x[:n]))).detach())
        if self.config.pool > 1:  # show the pooled image the network actually sees
            img = img.reshape(n, *self._pooled_shape())
        else:
            img = img.reshape(n, *self.config.camera_shape)
        axes = fig.subplots(1, n, squeeze=False)[0]
        for i, ax in enumerate(axes):
            im = ax.imshow(img[i].cpu().numpy(), cmap="inferno")  # numpy 2: not a tensor
            ax.set(title=f"input {i}", xticks=[], yticks=[])
            fig.colorbar(im, ax=ax, shrink=0.7, label=self.spec.output_units)
        fig.suptitle("sim:optical: camera images")
        return True

    def describe(self) -> dict[str, Any]:
        """The resolved description (defaults filled in); it rebuilds this very cavity."""
        d = asdict(self.config)
        d["slm_shape"] = list(d["slm_shape"])
        d["camera_shape"] = list(d["camera_shape"])
        d["perturbations"] = self.describe_perturbations()
        if not d["perturbations"]:
            del d["perturbations"]
        return {"kind": "sim:optical", **d}
