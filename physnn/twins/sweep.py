"""``calibrate``: characterise any device behind the contract with one call.

The measurement plan, in the order the device sees it:

1. drift checkpoint 0 (``drift_inputs`` fixed reference inputs);
2. repeatability: ``repeat_inputs`` inputs measured ``repeats`` times in a row;
3. response curves: one input coordinate stepped across its range, the rest held;
4. the sweep (random inputs over the domain, or inputs the caller gives), with a drift
   checkpoint after every ``samples / drift_checks`` sweep samples and one at the end.

The device is only ever called through ``device(x)``, so the same code drives a simulator,
a surrogate or hardware on the serial link. With ``out`` the record is rewritten (atomically,
status ``running``) at every drift checkpoint, and finally with status ``complete``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .._version import __version__
from ..core.device import Device, DeviceSpec, Domain
from .record import CalibrationRecord, Section, write_record


@dataclass
class CalibrationSettings:
    """How much to measure. The defaults cost about ``samples + 700`` device queries."""

    samples: int = 10_000
    """Random sweep samples (ignored when explicit sweep inputs are given)."""
    repeats: int = 10
    """Passes over the repeatability inputs (noise floor); 0 skips, 1 is not enough."""
    repeat_inputs: int = 32
    drift_inputs: int = 16
    """Reference inputs re-measured at every drift checkpoint; 0 skips drift."""
    drift_checks: int = 10
    """Drift checkpoints during the sweep (plus one before it)."""
    response_coordinates: int = 4
    """Input coordinates stepped one at a time for the response curves; 0 skips."""
    response_points: int = 21
    """Steps per response curve (a discrete domain uses each of its levels)."""
    batch_size: int = 500
    seed: int | None = None
    """Seed of the calibration's own random inputs; default: the device's seed."""

    def __post_init__(self) -> None:
        checks = {
            "samples": self.samples >= 1,
            "repeats": self.repeats == 0 or self.repeats >= 2,
            "repeat_inputs": self.repeat_inputs >= 1,
            "drift_inputs": self.drift_inputs >= 0,
            "drift_checks": self.drift_checks >= 1,
            "response_coordinates": self.response_coordinates >= 0,
            "response_points": self.response_points >= 2,
            "batch_size": self.batch_size >= 1,
        }
        allowed = {
            "samples": ">= 1", "repeats": "0 (skip) or >= 2", "repeat_inputs": ">= 1",
            "drift_inputs": ">= 0", "drift_checks": ">= 1", "response_coordinates": ">= 0",
            "response_points": ">= 2", "batch_size": ">= 1",
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"calibration: {key}={getattr(self, key)} is not allowed; use {allowed[key]}"
                )


def read_inputs_file(path: str | Path) -> np.ndarray:
    """Sweep inputs from a .npy / .npz (array ``inputs``) / .csv file (``physnn calibrate
    --inputs FILE``), one row per input."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sweep inputs file {p} does not exist")
    if p.suffix == ".npy":
        return np.load(p)
    if p.suffix == ".npz":
        with np.load(p) as z:
            if "inputs" not in z.files:
                raise ValueError(f"{p} has no array 'inputs'; it holds {sorted(z.files)}")
            return z["inputs"]
    return np.loadtxt(p, delimiter=",", ndmin=2)


def uniform_inputs(domain: Domain, n: int, n_in: int, gen: torch.Generator,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` inputs drawn uniformly over the domain: the range, or each level equally often."""
    if domain.levels is None:
        return domain.lo + (domain.hi - domain.lo) * torch.rand(n, n_in, generator=gen, dtype=dtype)
    lv = torch.tensor(domain.levels, dtype=dtype)
    return lv[torch.randint(len(domain.levels), (n, n_in), generator=gen)]


def _response_plan(domain: Domain, n_in: int, s: CalibrationSettings, gen: torch.Generator,
                   dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Response-curve inputs: a random base input with one coordinate stepped at a time."""
    k = min(s.response_coordinates, n_in)
    if k == 0:
        return torch.empty(0, n_in, dtype=dtype), np.empty(0, np.int64), np.empty(0)
    coords = torch.randperm(n_in, generator=gen)[:k].sort().values
    base = uniform_inputs(domain, 1, n_in, gen, dtype)
    if domain.levels is not None:
        values = torch.tensor(domain.levels, dtype=dtype)
    else:
        values = torch.linspace(domain.lo, domain.hi, s.response_points, dtype=dtype)
    rows, cs, vs = [], [], []
    for c in coords.tolist():
        x = base.repeat(values.numel(), 1)
        x[:, c] = values
        rows.append(x)
        cs += [c] * values.numel()
        vs += values.tolist()
    return torch.cat(rows), np.asarray(cs, np.int64), np.asarray(vs, np.float64)


def _provenance(device: Device, settings: CalibrationSettings, seed: int, command: str | None,
                inputs_kind: str, started: str, wall: float) -> dict[str, Any]:
    """Who measured what, when and how: enough to rerun the calibration."""
    return {
        "source": "calibrate",
        "created": started,
        "physnn_version": __version__,
        "command": command if command is not None else " ".join(sys.argv),
        "seed": seed,
        "settings": {**asdict(settings), "seed": seed, "inputs": inputs_kind},
        "torch_version": torch.__version__,
        "wall_time_s": wall,
        "device_accounting": device.accounting.as_dict(),
    }


def _with_overrides(
    settings: CalibrationSettings | None, overrides: dict[str, Any],
) -> CalibrationSettings:
    """``settings`` (or the defaults) with keyword overrides; an unknown key is a ValueError."""
    s = settings or CalibrationSettings()
    if not overrides:
        return s
    try:
        return CalibrationSettings(**{**asdict(s), **overrides})
    except TypeError as e:
        raise ValueError(f"calibration: {e}; allowed settings: "
                         f"{sorted(CalibrationSettings.__dataclass_fields__)}") from None


@dataclass
class _Plan:
    """Every input the calibration will measure, drawn before the device sees any of them."""

    sweep: torch.Tensor
    kind: str
    """``uniform`` or ``given``: where the sweep inputs came from."""
    reference: torch.Tensor
    repeat: torch.Tensor
    response: torch.Tensor
    response_coordinate: np.ndarray
    response_value: np.ndarray


def _sweep_inputs(inputs: str | np.ndarray | torch.Tensor, spec: DeviceSpec, samples: int,
                  gen: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, str]:
    """The sweep inputs (drawn, or the caller's, checked) and which of the two they are."""
    if isinstance(inputs, str):
        if inputs != "uniform":
            raise ValueError(f"calibration inputs must be 'uniform' or an array, got {inputs!r}")
        return uniform_inputs(spec.domain, samples, spec.n_in, gen, dtype), "uniform"
    x = torch.as_tensor(np.asarray(inputs), dtype=dtype)
    if x.ndim != 2 or x.shape[1] != spec.n_in or x.shape[0] < 1:
        raise ValueError(
            f"calibration sweep inputs have shape {tuple(x.shape)}; expected "
            f"[samples, {spec.n_in}] for {spec.name}"
        )
    return x, "given"


def _plan(spec: DeviceSpec, s: CalibrationSettings, seed: int,
          inputs: str | np.ndarray | torch.Tensor, dtype: torch.dtype) -> _Plan:
    """Draw in a fixed order from a stream of its own, so a seed always plans the same inputs."""
    gen = torch.Generator().manual_seed(seed * 7919 + 17)  # not the device's own noise stream
    sweep_x, kind = _sweep_inputs(inputs, spec, s.samples, gen, dtype)
    ref_x = uniform_inputs(spec.domain, s.drift_inputs, spec.n_in, gen, dtype)
    rep_x = uniform_inputs(spec.domain, s.repeat_inputs, spec.n_in, gen, dtype)
    resp_x, resp_c, resp_v = _response_plan(spec.domain, spec.n_in, s, gen, dtype)
    return _Plan(sweep_x, kind, ref_x, rep_x, resp_x, resp_c, resp_v)


class _Session:
    """One calibration in progress: measures the plan and keeps what came back.

    Query indices count from the device's query total when the session starts, so a device
    that was used before still starts its record's clock at zero.
    """

    def __init__(self, device: Device, s: CalibrationSettings, plan: _Plan, seed: int,
                 command: str | None) -> None:
        self.device, self.s, self.plan, self.seed, self.command = device, s, plan, seed, command
        self.q0 = device.accounting.samples
        self.t_start = time.perf_counter()
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self.drift_y: list[np.ndarray] = []
        self.drift_q: list[int] = []
        self.drift_wall: list[float] = []
        self.sweep_y: list[np.ndarray] = []
        self.sweep_q: list[np.ndarray] = []
        self.repeats: Section | None = None
        self.response: Section | None = None

    def measure(self, x: torch.Tensor) -> tuple[np.ndarray, int]:
        """Outputs for ``x`` in batches, and the query index the first row was measured at."""
        q = self.device.accounting.samples - self.q0
        b = self.s.batch_size
        ys = [self.device(x[i : i + b]) for i in range(0, x.shape[0], b)]
        return torch.cat(ys).double().cpu().numpy(), q

    def checkpoint(self) -> None:
        """Re-measure the drift references (nothing when drift is off)."""
        if self.s.drift_inputs == 0:
            return
        y, q = self.measure(self.plan.reference)
        self.drift_y.append(y)
        self.drift_q.append(q)
        self.drift_wall.append(time.perf_counter() - self.t_start)

    def measure_repeats(self) -> None:
        """Pass over the repeatability inputs ``repeats`` times in a row (the noise floor)."""
        if not self.s.repeats:
            return
        rep_x = self.plan.repeat
        passes, qs = zip(*(self.measure(rep_x) for _ in range(self.s.repeats)), strict=True)
        self.repeats = Section(rep_x.double().numpy(), np.stack(passes), np.asarray(qs))

    def measure_response(self) -> None:
        """Measure the response curves, if the plan has any."""
        x = self.plan.response
        if not x.shape[0]:
            return
        y, q = self.measure(x)
        self.response = Section(
            x.double().numpy(), y, q + np.arange(x.shape[0]),
            {"coordinate": self.plan.response_coordinate, "value": self.plan.response_value},
        )

    def measure_sweep(self, out: str | Path | None, progress: bool) -> None:
        """The sweep in chunks, a drift checkpoint after each; with ``out`` a running record."""
        sweep_x = self.plan.sweep
        n = sweep_x.shape[0]
        interval = math.ceil(n / self.s.drift_checks)
        bar = tqdm(total=n, desc=f"calibrating {self.device.spec.name}", unit="sample",
                   disable=None if progress else True, leave=False)
        for start in range(0, n, interval):
            chunk = sweep_x[start : start + interval]
            y, q = self.measure(chunk)
            self.sweep_y.append(y)
            self.sweep_q.append(q + np.arange(chunk.shape[0]))
            bar.update(chunk.shape[0])
            self.checkpoint()
            if out is not None and start + interval < n:
                write_record(out, self.record("running"))
        bar.close()

    def record(self, status: str) -> CalibrationRecord:
        """What has been measured so far as a record with ``status``."""
        spec, plan = self.device.spec, self.plan
        done = sum(len(v) for v in self.sweep_y)
        return CalibrationRecord(
            spec=spec.to_dict(),
            sweep=Section(
                plan.sweep[:done].double().numpy(),
                np.concatenate(self.sweep_y) if self.sweep_y else np.empty((0, spec.n_out)),
                np.concatenate(self.sweep_q) if self.sweep_q else np.empty(0, np.int64),
            ),
            repeats=self.repeats,
            drift=Section(
                plan.reference.double().numpy(), np.stack(self.drift_y), np.asarray(self.drift_q),
                {"wall_time_s": np.asarray(self.drift_wall)},
            ) if self.drift_y else None,
            response=self.response,
            device=self.device.describe(),
            provenance=_provenance(self.device, self.s, self.seed, self.command, plan.kind,
                                   self.started, time.perf_counter() - self.t_start),
            status=status,
        )


def calibrate(
    device: Device,
    *,
    settings: CalibrationSettings | None = None,
    inputs: str | np.ndarray | torch.Tensor = "uniform",
    out: str | Path | None = None,
    command: str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    **overrides: Any,
) -> CalibrationRecord:
    """Measure ``device`` as planned in the module docstring and return the record.

    ``inputs`` is ``"uniform"`` (random over the domain) or an array ``[N, n_in]`` of sweep
    inputs to measure instead (e.g. inputs drawn like a network's real ones). Keyword
    ``overrides`` set ``CalibrationSettings`` fields (``samples=2000``, ``repeats=5``...).
    With ``out`` (a ``.h5`` path) the record is written there atomically; while the
    calibration runs the file, if any, says ``status = running``.
    """
    s = _with_overrides(settings, overrides)
    seed = device.seed if s.seed is None else int(s.seed)
    plan = _plan(device.spec, s, seed, inputs, dtype)
    if out is not None:
        # from here on, the file at `out` is this calibration (running, then complete) or
        # nothing: never an older record that a failed recalibration would leave looking current
        Path(out).unlink(missing_ok=True)
    opened = not device.is_open
    device.open()
    session = _Session(device, s, plan, seed, command)
    try:
        session.checkpoint()
        session.measure_repeats()
        session.measure_response()
        session.measure_sweep(out, progress)
    finally:
        if opened:
            device.close()
    rec = session.record("complete")
    if out is not None:
        write_record(out, rec)
    return rec
