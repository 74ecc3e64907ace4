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
from ..core.device import Device, Domain
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


def uniform_inputs(domain: Domain, n: int, n_in: int, gen: torch.Generator,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` inputs drawn uniformly over the domain: the range, or each level equally often."""
    if domain.levels is None:
        return domain.lo + (domain.hi - domain.lo) * torch.rand(n, n_in, generator=gen, dtype=dtype)
    lv = torch.tensor(domain.levels, dtype=dtype)
    return lv[torch.randint(len(domain.levels), (n, n_in), generator=gen)]


def _response_plan(domain: Domain, n_in: int, s: CalibrationSettings, gen: torch.Generator,
                   dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
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
    ``overrides`` set :class:`CalibrationSettings` fields (``samples=2000``, ``repeats=5``...).
    With ``out`` (a ``.h5`` path) the record is written there atomically; while the
    calibration runs the file, if any, says ``status = running``.
    """
    s = settings or CalibrationSettings()
    if overrides:
        try:
            s = CalibrationSettings(**{**asdict(s), **overrides})
        except TypeError as e:
            raise ValueError(f"calibration: {e}; allowed settings: "
                             f"{sorted(CalibrationSettings.__dataclass_fields__)}") from None
    spec, dom = device.spec, device.spec.domain
    seed = device.seed if s.seed is None else int(s.seed)
    gen = torch.Generator().manual_seed(seed * 7919 + 17)  # not the device's own noise stream
    if isinstance(inputs, str):
        if inputs != "uniform":
            raise ValueError(f"calibration inputs must be 'uniform' or an array, got {inputs!r}")
        sweep_x = uniform_inputs(dom, s.samples, spec.n_in, gen, dtype)
        inputs_kind = "uniform"
    else:
        sweep_x = torch.as_tensor(np.asarray(inputs), dtype=dtype)
        if sweep_x.ndim != 2 or sweep_x.shape[1] != spec.n_in or sweep_x.shape[0] < 1:
            raise ValueError(
                f"calibration sweep inputs have shape {tuple(sweep_x.shape)}; expected "
                f"[samples, {spec.n_in}] for {spec.name}"
            )
        inputs_kind = "given"
    n = sweep_x.shape[0]
    ref_x = uniform_inputs(dom, s.drift_inputs, spec.n_in, gen, dtype)
    rep_x = uniform_inputs(dom, s.repeat_inputs, spec.n_in, gen, dtype)
    resp_x, resp_c, resp_v = _response_plan(dom, spec.n_in, s, gen, dtype)

    if out is not None:
        # from here on, the file at `out` is this calibration (running, then complete) or
        # nothing: never an older record that a failed recalibration would leave looking current
        Path(out).unlink(missing_ok=True)
    opened = not device.is_open
    device.open()
    q0 = device.accounting.samples
    t_start = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")

    def measure(x: torch.Tensor) -> tuple[np.ndarray, int]:
        q = device.accounting.samples - q0
        ys = [device(x[i : i + s.batch_size]) for i in range(0, x.shape[0], s.batch_size)]
        return torch.cat(ys).double().cpu().numpy(), q

    drift_y: list[np.ndarray] = []
    drift_q: list[int] = []
    drift_wall: list[float] = []

    def checkpoint() -> None:
        if s.drift_inputs == 0:
            return
        y, q = measure(ref_x)
        drift_y.append(y)
        drift_q.append(q)
        drift_wall.append(time.perf_counter() - t_start)

    def build(status: str, sweep_y: list[np.ndarray], sweep_q: list[np.ndarray]) -> CalibrationRecord:
        done = sum(len(v) for v in sweep_y)
        return CalibrationRecord(
            spec=spec,
            sweep=Section(
                sweep_x[:done].double().numpy(),
                np.concatenate(sweep_y) if sweep_y else np.empty((0, spec.n_out)),
                np.concatenate(sweep_q) if sweep_q else np.empty(0, np.int64),
            ),
            repeats=repeats,
            drift=Section(
                ref_x.double().numpy(), np.stack(drift_y), np.asarray(drift_q),
                {"wall_time_s": np.asarray(drift_wall)},
            ) if drift_y else None,
            response=response,
            device=device.describe(),
            provenance=_provenance(device, s, seed, command, inputs_kind, started,
                                   time.perf_counter() - t_start),
            status=status,
        )

    try:
        checkpoint()
        repeats = None
        if s.repeats:
            passes, qs = zip(*(measure(rep_x) for _ in range(s.repeats)), strict=True)
            repeats = Section(rep_x.double().numpy(), np.stack(passes), np.asarray(qs))
        response = None
        if resp_x.shape[0]:
            y, q = measure(resp_x)
            response = Section(
                resp_x.double().numpy(), y, q + np.arange(resp_x.shape[0]),
                {"coordinate": resp_c, "value": resp_v},
            )
        interval = math.ceil(n / s.drift_checks)
        sweep_y: list[np.ndarray] = []
        sweep_q: list[np.ndarray] = []
        bar = tqdm(total=n, desc=f"calibrating {spec.name}", unit="sample",
                   disable=None if progress else True, leave=False)
        for start in range(0, n, interval):
            chunk = sweep_x[start : start + interval]
            y, q = measure(chunk)
            sweep_y.append(y)
            sweep_q.append(q + np.arange(chunk.shape[0]))
            bar.update(chunk.shape[0])
            checkpoint()
            if out is not None and start + interval < n:
                write_record(out, build("running", sweep_y, sweep_q))
        bar.close()
    finally:
        if opened:
            device.close()
    rec = build("complete", sweep_y, sweep_q)
    if out is not None:
        write_record(out, rec)
    return rec
