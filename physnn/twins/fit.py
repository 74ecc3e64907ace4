"""``fit_surrogate``: fit a twin to a calibration record.

The sweep is split once (seeded) into train, validation and test rows. Training stops early
on the validation loss (and halves the learning rate when it stalls); the test rows, never
seen during fitting, give the fidelity figures a twin carries.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .mlp import ACTIVATIONS, build_mlp
from .record import CalibrationRecord, read_record
from .twin import Twin, fidelity


@dataclass
class FitSettings:
    """How a twin is fitted. ``holdout`` and ``validation`` are fractions of the sweep."""

    hidden: tuple[int, ...] = (256, 256)
    activation: str = "silu"
    fourier: int = 0
    """Periodic input features cos/sin(k pi u), k = 1..fourier (0: none); see ``Fourier``."""
    holdout: float = 0.15
    """Test split: never used in fitting; the fidelity figures come from it."""
    validation: float = 0.15
    """Validation split: early stopping and learning-rate decay watch it."""
    epochs: int = 400
    """Upper bound on epochs; early stopping usually ends sooner."""
    patience: int = 25
    lr: float = 2e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        problems = [
            (all(h >= 1 for h in self.hidden), f"hidden widths must be >= 1, got {self.hidden}"),
            (self.activation in ACTIVATIONS,
             f"activation {self.activation!r} is unknown; allowed: {sorted(ACTIVATIONS)}"),
            (0 < self.holdout < 1 and 0 < self.validation < 1 and self.holdout + self.validation < 1,
             f"holdout={self.holdout} and validation={self.validation} must be in (0, 1) and sum "
             "to less than 1"),
            (self.fourier >= 0, f"fourier must be >= 0, got {self.fourier}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
        ]
        for ok, msg in problems:
            if not ok:
                raise ValueError(f"surrogate fit: {msg}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> FitSettings:
        """Settings from a config mapping; an unknown key is a ValueError listing the known."""
        try:
            return cls(**dict(d or {}))
        except TypeError as e:
            raise ValueError(
                f"surrogate fit: {e}; allowed settings: {sorted(cls.__dataclass_fields__)}"
            ) from None


@dataclass
class _Split:
    """Row indices of the three splits of the sweep."""

    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor

    def items(self) -> tuple[tuple[str, torch.Tensor], ...]:
        """``(name, rows)`` in the order the fidelity figures are reported."""
        return ("train", self.train), ("validation", self.validation), ("test", self.test)

    def sizes(self) -> dict[str, int]:
        """Rows per split, as stored in a twin's fit facts."""
        return {name: int(idx.numel()) for name, idx in self.items()}


@dataclass
class _Training:
    """How training went: what a twin file keeps besides the weights."""

    epochs_run: int
    best_epoch: int
    history: list[float]
    """Validation loss before training and after every epoch."""


def fit_surrogate(
    record: CalibrationRecord | str | Path,
    *,
    settings: FitSettings | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    source_key: str | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Twin:
    """Fit a twin to a calibration record (object or path) and optionally save it to ``out``.

    ``overrides`` set ``FitSettings`` fields (``hidden=(128, 128)``, ``epochs=50``...).
    """
    rec = record if isinstance(record, CalibrationRecord) else read_record(record)
    s = _settings(settings, overrides)
    x_all = torch.as_tensor(rec.inputs, dtype=torch.float32)
    y_all = torch.as_tensor(rec.outputs, dtype=torch.float32)
    gen = torch.Generator().manual_seed(s.seed)  # the split, then the batch order
    split = _split(x_all.shape[0], s, gen)
    y_mean, y_std = _output_scale(y_all[split.train], rec.n_out)
    model = build_mlp(rec.n_in, rec.n_out, asdict(s), gen=torch.Generator().manual_seed(s.seed))
    twin = Twin(model=model, spec=rec.spec, y_mean=y_mean, y_std=y_std, fidelity={}, source={}, fit={})
    t0 = time.perf_counter()
    training = _train(model, twin.normalize(x_all), (y_all - y_mean) / y_std, split, s, gen,
                      f"fitting twin of {rec.spec['name']}", progress)
    summary = rec.summary()
    noise = summary["noise_floor"] if summary["noise_source"] != "none" else None
    with torch.no_grad():
        twin.fidelity = {
            name: fidelity(twin.predict(x_all[idx]).double().numpy(), rec.outputs[idx.numpy()], noise)
            for name, idx in split.items()
        }
    twin.noise_floor = None if noise is None else torch.as_tensor(noise, dtype=torch.float32)
    twin.source = _source(rec, source_key)
    twin.fit = {
        "settings": {**asdict(s), "hidden": list(s.hidden)},
        "epochs_run": training.epochs_run,
        "best_epoch": training.best_epoch,
        "validation_loss": training.history,
        "split": split.sizes(),
        "wall_time_s": time.perf_counter() - t0,
    }
    twin.created = datetime.now(UTC).isoformat(timespec="seconds")
    if out is not None:
        twin.save(out)
    return twin


def _settings(
    settings: FitSettings | Mapping[str, Any] | None, overrides: dict[str, Any],
) -> FitSettings:
    """``settings`` (object, mapping or defaults) with keyword overrides applied."""
    base = settings if isinstance(settings, FitSettings) else FitSettings.from_dict(settings)
    return FitSettings.from_dict({**asdict(base), **overrides}) if overrides else base


def _split(n: int, s: FitSettings, gen: torch.Generator) -> _Split:
    """A seeded random split of ``n`` rows; each split needs at least one row."""
    n_test, n_val = round(s.holdout * n), round(s.validation * n)
    if n < 10 or min(n_test, n_val, n - n_test - n_val) < 1:
        raise ValueError(
            f"surrogate fit: {n} samples are too few for a train / validation / test split "
            f"({s.holdout:g} / {s.validation:g} held out); measure at least 10, better thousands"
        )
    perm = torch.randperm(n, generator=gen)
    return _Split(train=perm[n_test + n_val :], validation=perm[n_test : n_test + n_val],
                  test=perm[:n_test])


def _output_scale(y_train: torch.Tensor, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the training outputs; 1 where a channel is constant."""
    y_mean = y_train.mean(0)
    y_std = y_train.std(0) if y_train.shape[0] > 1 else torch.ones(n_out)
    y_std = torch.where(y_std > 1e-8 * (1 + y_mean.abs()), y_std, torch.ones_like(y_std))
    return y_mean, y_std


def _train(model: nn.Module, xn: torch.Tensor, zn: torch.Tensor, split: _Split, s: FitSettings,
           gen: torch.Generator, desc: str, progress: bool) -> _Training:
    """Adam on normalised data until the validation loss stops improving; the best epoch's
    weights are left in ``model``."""
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, s.patience // 3))
    loss_fn = nn.MSELoss()
    i_train, i_val = split.train, split.validation

    def val_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(xn[i_val]), zn[i_val]))

    best, best_epoch, best_state = val_loss(), 0, copy.deepcopy(model.state_dict())
    history: list[float] = [best]
    bar = tqdm(range(1, s.epochs + 1), desc=desc, unit="epoch",
               disable=None if progress else True, leave=False)
    epoch = 0
    for epoch in bar:
        model.train()
        order = i_train[torch.randperm(i_train.numel(), generator=gen)]
        for start in range(0, order.numel(), s.batch_size):
            idx = order[start : start + s.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xn[idx]), zn[idx])
            loss.backward()
            opt.step()
        model.eval()
        v = val_loss()
        history.append(v)
        sched.step(v)
        if v < best * (1 - 1e-4):
            best, best_epoch, best_state = v, epoch, copy.deepcopy(model.state_dict())
        bar.set_postfix(val_nmse=f"{v:.4g}", best=f"{best:.4g}")
        if epoch - best_epoch >= s.patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return _Training(epochs_run=epoch, best_epoch=best_epoch, history=history)


def _source(rec: CalibrationRecord, key: str | None) -> dict[str, Any]:
    """Where the twin came from, as plain JSON types (a twin file loads with weights_only)."""
    source = {
        "key": key,
        "record_fingerprint": rec.fingerprint(),
        "record_path": str(rec.path.resolve()) if rec.path is not None else None,
        "record_provenance": rec.provenance,
        "device": rec.device,
    }
    return json.loads(json.dumps(source, default=str))
