"""The device contract: a physical layer is a black box that maps a batch of inputs to outputs.

Everything in physnn that touches a physical system (simulator, fitted twin, serial hardware)
goes through ``Device``. The base class owns what must be identical for every backend:
input validation before anything reaches hardware, accounting, seeded randomness and the
open/close lifecycle. Backends implement only ``Device._measure``.
"""

from __future__ import annotations

import math
import numbers
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

MAX_WIDTH = 2**20
"""Most inputs (``n_in``) or outputs (``n_out``) a device may have: far beyond any physical
set-up (a megapixel SLM), so a typo such as ``n_in = 10000000`` is a one-line error instead
of an allocator failure deep inside a simulator."""

MEMORY_BUDGET_BYTES = 8 * 2**30
"""Most memory (8 GiB) a simulator may allocate for its fixed tensors (a transmission
matrix, a Green's function table); a description needing more is refused before allocating."""

INPUT_DTYPES = (torch.float32, torch.float64)
"""Input dtypes a device accepts: half precision (float16, bfloat16) would pass a floating
check and then fail (or silently lose digits) inside a simulator's complex arithmetic."""


def whole_number(key: str, value: Any, *, lo: int = 1, hi: int = MAX_WIDTH) -> int:
    """``value`` as an ``int`` in ``lo..hi``, or a ValueError naming ``key``.

    A bool, ``2.5`` or ``16.0`` is refused, never rounded: a description's typo must not
    quietly build a different device. NumPy integers are accepted (records store them).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= int(value) <= hi:
        raise ValueError(f"{key} must be a whole number in {lo}..{hi}, got {value!r}")
    return int(value)


def finite_number(key: str, value: Any, *, lo: float | None = None, strict: bool = False) -> None:
    """Refuse ``value`` unless it is a finite real number (``>= lo``, or ``> lo`` when
    ``strict``), naming ``key``: an infinite noise level or gain would turn every output
    into inf or NaN instead of failing where the mistake was made."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if strict else value >= lo
    if not ok:
        bound = "" if lo is None else f" {'>' if strict else '>='} {lo:g}"
        raise ValueError(f"{key} must be a finite number{bound}, got {value!r}")


def finite_fields(owner: str, config: Any, *, allow_inf: tuple[str, ...] = ()) -> None:
    """Refuse a NaN or infinite number in any float field of a simulator's config dataclass,
    naming the key (``allow_inf``: fields where ``inf`` means something, e.g. an undamped
    quality factor). Range checks such as ``not x > 0`` let ``inf`` through; this does not."""
    for f in fields(config):
        v = getattr(config, f.name)
        if isinstance(v, float) and not math.isfinite(v) and not (f.name in allow_inf and v > 0):
            raise ValueError(f"{owner}: {f.name} must be a finite number, got {v!r}")


def check_memory(key: str, nbytes: float, what: str) -> None:
    """Refuse a description whose fixed tensors (``what``) would need more than
    ``MEMORY_BUDGET_BYTES``, naming the size key to lower and the budget."""
    if nbytes > MEMORY_BUDGET_BYTES:
        raise ValueError(
            f"{what} would need {nbytes / 2**30:,.1f} GiB, over the budget of "
            f"{MEMORY_BUDGET_BYTES / 2**30:g} GiB (physnn.core.device.MEMORY_BUDGET_BYTES); "
            f"lower {key}"
        )


@dataclass(frozen=True)
class Domain:
    """Allowed input values: a continuous range ``[lo, hi]`` or a finite set of ``levels``."""

    lo: float = 0.0
    hi: float = 1.0
    levels: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.levels is not None:
            levels = tuple(sorted(float(v) for v in self.levels))
            if len(levels) < 2:
                raise ValueError(f"a discrete domain needs at least 2 levels, got {levels}")
            object.__setattr__(self, "levels", levels)
            object.__setattr__(self, "lo", levels[0])
            object.__setattr__(self, "hi", levels[-1])
        elif not self.lo < self.hi:
            raise ValueError(f"domain needs lo < hi, got [{self.lo}, {self.hi}]")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Domain:
        """The domain ``DeviceSpec.to_dict`` wrote: ``{"lo", "hi"}`` or ``{"levels"}``."""
        if "levels" in d:
            return cls(levels=tuple(float(v) for v in d["levels"]))
        return cls(float(d["lo"]), float(d["hi"]))

    def describe(self) -> str:
        """The domain in words, for error messages: ``[0, 1]`` or ``levels {0, 1, 2, 3}``."""
        if self.levels is not None:
            return "levels {" + ", ".join(f"{v:g}" for v in self.levels) + "}"
        return f"[{self.lo:g}, {self.hi:g}]"

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Map values in [0, 1] linearly onto the domain (snapped to the levels if any)."""
        return self.project(self.lo + (self.hi - self.lo) * u)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clip into the range, or snap to the nearest level."""
        if self.levels is None:
            return x.clamp(self.lo, self.hi)
        lv = torch.tensor(self.levels, dtype=x.dtype, device=x.device)
        return lv[(x.unsqueeze(-1) - lv).abs().argmin(-1)]

    def violations(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean mask of entries outside the domain."""
        if self.levels is None:
            return (x < self.lo) | (x > self.hi)
        lv = torch.tensor(self.levels, dtype=x.dtype, device=x.device)
        tol = 1e-6 * max(1.0, max(abs(v) for v in self.levels))
        return ((x.unsqueeze(-1) - lv).abs() > tol).all(-1)


@dataclass(frozen=True)
class DeviceSpec:
    """What a user must know to wire a device into a network."""

    name: str
    n_in: int
    n_out: int
    domain: Domain = field(default_factory=Domain)
    output_units: str = "a.u."
    time_per_query_s: float = 0.0
    """Device time one sample costs (frame period, settling time); used for accounting."""
    energy_per_query_j: float = 0.0
    """Energy one sample costs on the physical system (from the device description)."""

    def __post_init__(self) -> None:
        for key in ("n_in", "n_out"):  # every backend's widths, checked in one place
            object.__setattr__(self, key, whole_number(f"{self.name}: {key}", getattr(self, key)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (run logs store it as JSON); an unset ``levels`` is left out."""
        d = asdict(self)
        d["domain"] = {k: v for k, v in d["domain"].items() if v is not None}
        return d


@dataclass
class Accounting:
    """Running totals every device keeps; trainers read them into the run log."""

    samples: int = 0
    calls: int = 0
    device_time_s: float = 0.0
    energy_j: float = 0.0
    wall_time_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The totals as plain numbers (for the run log and checkpoints)."""
        return asdict(self)

    def load(self, d: dict[str, float]) -> None:
        """Continue from totals saved with ``as_dict``."""
        for k, v in d.items():
            setattr(self, k, type(getattr(self, k))(v))


class Device:
    """Base class of every physical layer.

    ``device(x)`` validates ``x`` (shape ``[B, n_in]``, floating dtype, finite, inside the
    input domain), measures it without joining the autograd graph, and returns a detached
    ``[B, n_out]`` tensor on ``x``'s torch device. Set ``clip=True`` to project out-of-domain
    inputs instead of rejecting them.
    """

    differentiable = False
    """True when ``forward_with_grad`` exists (simulators, surrogates; never hardware)."""
    _call_rows = 0
    """Set by ``calls_of``: rows per call a larger batch stands for (0: one call)."""

    def __init__(self, spec: DeviceSpec, *, seed: int = 0, clip: bool = False):
        self.spec = spec
        self.seed = int(seed)
        self.clip = bool(clip)
        self.accounting = Accounting()
        self._generators: dict[str, torch.Generator] = {}
        self.is_open = False

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> Device:
        """Acquire the system (a serial link, an instrument); the first query opens it anyway."""
        self.is_open = True
        return self

    def close(self) -> None:
        """Release what ``open`` acquired."""
        self.is_open = False

    def __enter__(self) -> Device:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- randomness: a device owns its seed and nothing global -----------------------------
    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        """This device's random stream on a torch device (created on first use, seeded)."""
        key = str(torch.device(device))
        if key not in self._generators:
            g = torch.Generator(device=key)
            g.manual_seed(self.seed * 1_000_003 + zlib.crc32(key.encode()))
            self._generators[key] = g
        return self._generators[key]

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Measure on a copy of the noise streams, put back on exit: evaluating never
        changes training.

        Training then draws exactly the noise it would have drawn had the evaluation not
        happened, so how often a run evaluates changes what is measured, never what is
        learned, and a checkpoint holds nothing of evaluation. A board with ``Cap.STATE``
        does the same with its own streams (``SerialDevice``), so a run through the emulator
        still equals the direct run; wrappers do it for the device they wrap.
        """
        saved = {k: g.get_state() for k, g in self._generators.items()}
        try:
            yield
        finally:
            for key in list(self._generators):
                if key in saved:
                    self._generators[key].set_state(saved[key])
                else:  # first drawn inside: it restarts from its seeded start
                    del self._generators[key]

    def state_dict(self) -> dict[str, Any]:
        """Mutable state (random streams, accounting and any ``trainable_tensors``' values)
        so a resumed run continues identically."""
        state: dict[str, Any] = {
            "generators": {k: g.get_state() for k, g in self._generators.items()},
            "accounting": self.accounting.as_dict(),
        }
        trainable = self.trainable_tensors()
        if trainable:
            state["trainable"] = [t.detach().clone() for t in trainable]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s streams and accounting, so a resumed run draws the same noise."""
        self._generators.clear()  # streams not in the state restart from their seeded start
        for key, st in state.get("generators", {}).items():
            self.generator(key).set_state(st)
        self.accounting.load(state.get("accounting", {}))
        saved, own = state.get("trainable", []), self.trainable_tensors()
        if saved and len(saved) != len(own):
            raise ValueError(f"{self.spec.name}: the state holds {len(saved)} trainable tensors, "
                             f"this device has {len(own)}")
        with torch.no_grad():  # in place: an optimiser holding them keeps training them
            for t, v in zip(own, saved, strict=False):
                t.copy_(v)

    # -- the device's own trainable tensors (wavetorch's material) ---------------------------
    def trainable_tensors(self) -> list[torch.Tensor]:
        """Leaf tensors of the physics itself that ``forward_with_grad`` differentiates and a
        rule may train (``train.train_device`` adds them to backprop's optimiser): a wave
        cavity's wave speed. ``[]`` (the default): the device is fixed. Their values are part
        of ``state_dict``, so a checkpoint resumes them."""
        return []

    def project_trainable(self) -> None:
        """Put ``trainable_tensors`` back where they are allowed after an optimiser step (a
        wave speed into its range); the default does nothing."""

    # -- the contract ----------------------------------------------------------------------
    def validate(self, x: Any) -> torch.Tensor:
        """Return ``x`` as a tensor fit for the device, or raise a ValueError saying why."""
        name, spec = self.spec.name, self.spec
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: input must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in INPUT_DTYPES:
            raise ValueError(
                f"{name}: input dtype {x.dtype} is not allowed; use torch.float32 or torch.float64"
            )
        if x.ndim != 2 or x.shape[1] != spec.n_in:
            raise ValueError(
                f"{name}: input shape {tuple(x.shape)} is not allowed; expected [batch, {spec.n_in}]"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{name}: empty batch; send at least one sample")
        if spec.domain.levels is None:  # one pass for the common case (NaN fails every test)
            lo, hi = torch.aminmax(x)
            ok = (lo >= spec.domain.lo) & (hi <= spec.domain.hi) & lo.isfinite() & hi.isfinite()
            if bool(ok):
                return x
        bad = ~torch.isfinite(x)
        if bad.any():
            b, i = (int(v) for v in bad.nonzero()[0])
            raise ValueError(
                f"{name}: input[{b}, {i}] = {x[b, i].item()} is not finite; "
                f"allowed domain is {spec.domain.describe()}"
            )
        out = spec.domain.violations(x)
        if out.any():
            if self.clip:
                return spec.domain.project(x)
            b, i = (int(v) for v in out.nonzero()[0])
            raise ValueError(
                f"{name}: input[{b}, {i}] = {x[b, i].item():.6g} is outside the allowed domain "
                f"{spec.domain.describe()} ({int(out.sum())} entries out of domain); rescale "
                "the input or build the device with clip=True"
            )
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_open:
            self.open()
        x = self.validate(x)
        t0 = time.perf_counter()
        n, rows = x.shape[0], self._call_rows
        stacked = 0 < rows < n  # inside calls_of: the batch stands for several calls
        with torch.no_grad():
            y = self._measure_calls(x, rows) if stacked else self._measure(x)
        wall = time.perf_counter() - t0
        if not stacked:
            self._account(n, wall)
        else:
            for start in range(0, n, rows):
                size = min(rows, n - start)
                self._account(size, wall * size / n)
        return y.detach()

    @contextmanager
    def calls_of(self, rows: int) -> Iterator[None]:
        """Inside this block a batch of ``k * rows`` rows is measured as ``k`` consecutive
        calls of ``rows`` rows: the same outputs, noise draws and accounting as sending each
        slice in turn. So a caller can stack calls (PhyLL scores every candidate label at
        once) and keep its numbers; a device batches what its physics allows."""
        if rows < 1:
            raise ValueError(f"{self.spec.name}: rows per call must be >= 1, got {rows}")
        before, self._call_rows = self._call_rows, int(rows)
        try:
            yield
        finally:
            self._call_rows = before

    def _measure_calls(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """``_measure`` of each slice of ``rows`` rows in turn; a device whose measurement is
        row by row the same for any batch overrides this to batch its deterministic part."""
        return torch.cat([self._measure(x[i : i + rows]) for i in range(0, x.shape[0], rows)])

    def forward_with_grad(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable forward pass (for baselines such as PAT and backprop).

        Only simulators and surrogates have one; a physical system cannot be differentiated.
        """
        if not self.differentiable:
            raise NotImplementedError(f"{self.spec.name} is a black box: it has no gradient")
        x = self.validate(x)
        t0 = time.perf_counter()
        y = self._measure(x)
        self._account(x.shape[0], time.perf_counter() - t0)
        return y

    def apply_to_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace every tensor this device keeps (a transmission matrix, a geometry) by
        ``fn(tensor)`` and drop any cache derived from them.

        What ``physnn.nn.PhysicalLayer`` calls from ``.to()``, ``.double()``, ``.cuda()``:
        torch's ``nn.Module._apply`` hands ``fn``. A device without tensors of its own (a
        serial link) keeps the default, which does nothing; a device still follows each
        input to its torch device, as the contract says. ``PhysicalLayer`` hands a ``fn``
        that keeps complex tensors complex (torch's own ``.to(torch.float64)`` would keep
        only the real part). Wrappers forward the call to the device they wrap.
        """

    def _account(self, n: int, wall: float) -> None:
        a = self.accounting
        a.samples += n
        a.calls += 1
        a.device_time_s += n * self.spec.time_per_query_s
        a.energy_j += n * self.spec.energy_per_query_j
        a.wall_time_s += wall

    def _measure(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def plot(self, fig: Any, x: torch.Tensor) -> bool:
        """Draw what this device does to inputs ``x`` on a matplotlib Figure.

        Returns False when the device has nothing to show (the default).
        """
        return False

    def describe(self) -> dict[str, Any]:
        """The description this device was built from (saved in run logs)."""
        return {"kind": self.spec.name}

    def __repr__(self) -> str:
        s = self.spec
        return f"{type(self).__name__}({s.name}: {s.n_in} -> {s.n_out}, domain {s.domain.describe()})"
