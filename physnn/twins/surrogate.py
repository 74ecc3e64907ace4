"""``surrogate`` devices: a digital twin fitted to a calibration record, usable like any device.

A twin is an MLP (configurable widths and activation) trained on a record's sweep with a
train / validation / test split: the validation split stops training early, the test split,
never seen during fitting, gives the fidelity figures (NMSE and R^2 per output and overall).
A fitted twin is one ``.pt`` file holding the weights, the normalisation, the fidelity and
where it came from (the record's fingerprint and provenance, the device description).

As a device (``make_device({"kind": "surrogate", ...})``) a twin comes from one of:

- ``path``: a fitted twin file;
- ``record``: a calibration record, or measured pairs (CSV / NPZ / HDF5) imported on the fly;
  the twin is fitted on first use and cached;
- ``of``: a device description: the device is calibrated, the twin fitted and both cached.
  Keys the surrogate does not know join this description, so ``--set device.kind=surrogate
  --set device.of=sim:optical`` turns any preset's device into its twin.

``{seed}`` and ``{block}`` in ``path`` and ``record`` are replaced by the device seed the runner
gives a block (``seed*1000 + k``) and the block index ``k``, so a preset can name one twin per
block. A cached twin is reused only if it was fitted from the same source with the same
settings; the twin's input width must equal the ``n_in`` asked for.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .._version import __version__
from ..core.atomic import atomic_path
from ..core.device import Device, DeviceSpec, Domain
from ..core.effects import Effect, apply_effects, make_effects

TWIN_FORMAT = "physnn-surrogate"
TWIN_FORMAT_VERSION = 1
class Square(nn.Module):
    """``x**2``: the response of a square-law detector (camera, power meter), so a twin of
    one can represent ``|T x|^2`` exactly with one hidden layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


ARCH_KEYS = ("hidden", "activation", "fourier")
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "square": Square,
}


@dataclass
class FitSettings:
    """How a twin is fitted. ``holdout`` and ``validation`` are fractions of the sweep."""

    hidden: tuple[int, ...] = (256, 256)
    activation: str = "silu"
    fourier: int = 0
    """Periodic input features cos/sin(k pi u), k = 1..fourier (0: none); see :class:`Fourier`."""
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
        try:
            return cls(**dict(d or {}))
        except TypeError as e:
            raise ValueError(
                f"surrogate fit: {e}; allowed settings: {sorted(cls.__dataclass_fields__)}"
            ) from None


class Fourier(nn.Module):
    """Input features ``[u, cos(k pi u), sin(k pi u)]`` for ``k = 1..terms``, ``u`` in [-1, 1]:
    periodic responses (phase-encoded inputs) become easy for the layers above."""

    def __init__(self, terms: int):
        super().__init__()
        self.register_buffer("k", math.pi * torch.arange(1, terms + 1, dtype=torch.float32))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a = (u.unsqueeze(-1) * self.k).flatten(-2)
        return torch.cat([u, torch.cos(a), torch.sin(a)], dim=-1)


def build_mlp(
    n_in: int, n_out: int, arch: Mapping[str, Any], gen: torch.Generator | None = None,
) -> nn.Sequential:
    """The twin's MLP (``arch``: hidden widths, activation, Fourier terms). With ``gen`` its
    weights are drawn from it (torch's default initialisation, uniform in +-1/sqrt(fan_in)),
    leaving the global random stream alone; without, they are left uninitialised, to be loaded.
    """
    terms = int(arch.get("fourier", 0))
    layers: list[nn.Module] = [Fourier(terms)] if terms else []
    width = n_in * (1 + 2 * terms)
    with torch.device("meta"):
        for h in arch["hidden"]:
            layers += [nn.Linear(width, h), ACTIVATIONS[arch["activation"]]()]
            width = h
        layers.append(nn.Linear(width, n_out))
    model = nn.Sequential(*layers).to_empty(device="cpu")
    if terms:
        model[0].k = math.pi * torch.arange(1, terms + 1, dtype=torch.float32)
    with torch.no_grad():
        for m in model if gen is not None else ():
            if isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
    return model


def fidelity(pred: np.ndarray, target: np.ndarray, noise_floor: np.ndarray | None = None) -> dict:
    """NMSE (MSE over the target's variance) and R^2 = 1 - NMSE per output, and overall (the
    mean over outputs with non-zero variance); ``nmse_pooled`` weighs outputs by variance;
    ``nmse_noise_floor`` is the NMSE that measurement noise alone would cause."""
    mse = np.mean((pred - target) ** 2, axis=0)
    var = np.var(target, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        nmse = np.where(var > 0, mse / var, np.nan)
    ok = np.isfinite(nmse)
    overall = float(np.mean(nmse[ok])) if ok.any() else float("nan")
    out = {
        "n": int(target.shape[0]),
        "nmse": nmse.tolist(),
        "r2": (1 - nmse).tolist(),
        "nmse_overall": overall,
        "r2_overall": 1 - overall,
        "nmse_pooled": float(mse.sum() / var.sum()) if var.sum() > 0 else float("nan"),
        "constant_outputs": int((~ok).sum()),
    }
    if noise_floor is not None and np.isfinite(noise_floor).all():
        with np.errstate(divide="ignore", invalid="ignore"):
            floor = np.where(var > 0, noise_floor**2 / var, np.nan)
        out["nmse_noise_floor"] = float(np.mean(floor[ok])) if ok.any() else float("nan")
    return out


@dataclass
class Twin:
    """A fitted model of a device: the MLP, its normalisation, fidelity and provenance."""

    model: nn.Sequential
    spec: dict[str, Any]
    y_mean: torch.Tensor
    y_std: torch.Tensor
    fidelity: dict[str, Any]
    source: dict[str, Any]
    fit: dict[str, Any]
    noise_floor: torch.Tensor | None = None
    created: str = ""
    path: Path | None = None

    @property
    def n_in(self) -> int:
        return int(self.spec["n_in"])

    @property
    def n_out(self) -> int:
        return int(self.spec["n_out"])

    @property
    def domain(self) -> Domain:
        d = self.spec["domain"]
        return Domain(levels=tuple(d["levels"])) if "levels" in d else Domain(d["lo"], d["hi"])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs from the device's domain to [-1, 1]."""
        d = self.spec["domain"]
        return (x - d["lo"]) * (2.0 / (d["hi"] - d["lo"])) - 1.0

    def predict(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """The twin's output for ``x`` (differentiable when autograd is on)."""
        m = model if model is not None else self.model
        z = m(self.normalize(x).to(torch.float32))
        return (z * self.y_std.to(z.device) + self.y_mean.to(z.device)).to(x.dtype)

    def save(self, path: str | Path) -> Path:
        """Write the twin to ``path`` atomically (a ``.pt`` file loadable with weights_only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": TWIN_FORMAT,
            "format_version": TWIN_FORMAT_VERSION,
            "physnn_version": __version__,
            "created": self.created,
            "spec": self.spec,
            "arch": {k: self.fit["settings"][k] for k in ARCH_KEYS},
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "y_mean": self.y_mean.cpu(),
            "y_std": self.y_std.cpu(),
            "noise_floor": None if self.noise_floor is None else self.noise_floor.cpu(),
            "fidelity": self.fidelity,
            "source": self.source,
            "fit": self.fit,
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path) -> Twin:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"surrogate twin {path} does not exist")
        try:
            p = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a twin"
            raise ValueError(f"{path} is not a readable surrogate twin file: {e}") from None
        if not isinstance(p, dict) or p.get("format") != TWIN_FORMAT:
            raise ValueError(f"{path} is not a physnn surrogate twin (see 'physnn fit')")
        if int(p["format_version"]) > TWIN_FORMAT_VERSION:
            raise ValueError(f"{path} has twin format version {p['format_version']}; upgrade physnn")
        spec = p["spec"]
        model = build_mlp(spec["n_in"], spec["n_out"], p["arch"])
        model.load_state_dict(p["state_dict"])
        model.eval()
        return cls(model=model, spec=spec, y_mean=p["y_mean"], y_std=p["y_std"],
                   fidelity=p["fidelity"], source=p["source"], fit=p["fit"],
                   noise_floor=p["noise_floor"], created=p.get("created", ""), path=path)

    def fidelity_text(self, split: str = "test") -> str:
        f = self.fidelity[split]
        nmse = np.asarray(f["nmse"], dtype=float)
        ok = np.isfinite(nmse)
        lines = [
            f"twin of {self.spec['name']} ({self.n_in} -> {self.n_out}), MLP "
            f"{list(self.fit['settings']['hidden'])} {self.fit['settings']['activation']}, "
            f"best epoch {self.fit['best_epoch']} of {self.fit['epochs_run']}",
            f"held-out {split} split ({f['n']} samples): NMSE {f['nmse_overall']:.4g} "
            f"(R^2 {f['r2_overall']:.4f}); pooled NMSE {f['nmse_pooled']:.4g}",
        ]
        if ok.any():
            worst = int(np.nanargmax(nmse))
            lines.append(
                f"per output NMSE: median {np.median(nmse[ok]):.4g}, worst {nmse[worst]:.4g} "
                f"(output {worst})"
            )
        if "nmse_noise_floor" in f:
            lines.append(f"NMSE that the measurement noise alone causes: {f['nmse_noise_floor']:.4g}")
        if f["constant_outputs"]:
            lines.append(f"{f['constant_outputs']} constant outputs excluded from the averages")
        return "\n".join(lines)


def fit_surrogate(
    record: Any,
    *,
    settings: FitSettings | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    source_key: str | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Twin:
    """Fit a twin to a calibration record (object or path) and optionally save it to ``out``.

    ``overrides`` set :class:`FitSettings` fields (``hidden=(128, 128)``, ``epochs=50``...).
    """
    from .record import CalibrationRecord, read_record

    rec = record if isinstance(record, CalibrationRecord) else read_record(record)
    base = settings if isinstance(settings, FitSettings) else FitSettings.from_dict(settings)
    s = FitSettings.from_dict({**asdict(base), **overrides}) if overrides else base
    x_all = torch.as_tensor(rec.inputs, dtype=torch.float32)
    y_all = torch.as_tensor(rec.outputs, dtype=torch.float32)
    n = x_all.shape[0]
    n_test, n_val = round(s.holdout * n), round(s.validation * n)
    if n < 10 or min(n_test, n_val, n - n_test - n_val) < 1:
        raise ValueError(
            f"surrogate fit: {n} samples are too few for a train / validation / test split "
            f"({s.holdout:g} / {s.validation:g} held out); measure at least 10, better thousands"
        )
    gen = torch.Generator().manual_seed(s.seed)
    perm = torch.randperm(n, generator=gen)
    i_test, i_val, i_train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]

    y_mean = y_all[i_train].mean(0)
    y_std = y_all[i_train].std(0) if i_train.numel() > 1 else torch.ones(rec.n_out)
    y_std = torch.where(y_std > 1e-8 * (1 + y_mean.abs()), y_std, torch.ones_like(y_std))
    init = torch.Generator().manual_seed(s.seed)
    model = build_mlp(rec.n_in, rec.n_out, asdict(s), gen=init)
    twin = Twin(model=model, spec=rec.spec, y_mean=y_mean, y_std=y_std, fidelity={}, source={}, fit={})
    xn = twin.normalize(x_all)
    zn = (y_all - y_mean) / y_std
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, s.patience // 3))
    loss_fn = nn.MSELoss()

    def val_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(xn[i_val]), zn[i_val]))

    best, best_epoch, best_state = val_loss(), 0, copy.deepcopy(model.state_dict())
    history: list[float] = [best]
    t0 = time.perf_counter()
    bar = tqdm(range(1, s.epochs + 1), desc=f"fitting twin of {rec.spec['name']}", unit="epoch",
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

    summary = rec.summary()
    noise = summary["noise_floor"] if summary["noise_source"] != "none" else None
    with torch.no_grad():
        fid = {}
        for name, idx in (("train", i_train), ("validation", i_val), ("test", i_test)):
            pred = twin.predict(x_all[idx]).double().numpy()
            fid[name] = fidelity(pred, rec.outputs[idx.numpy()], noise)
    twin.fidelity = fid
    twin.noise_floor = None if noise is None else torch.as_tensor(noise, dtype=torch.float32)
    twin.source = {
        "key": source_key,
        "record_fingerprint": rec.fingerprint(),
        "record_path": str(rec.path.resolve()) if rec.path is not None else None,
        "record_provenance": rec.provenance,
        "device": rec.device,
    }
    twin.fit = {
        "settings": {**asdict(s), "hidden": list(s.hidden)},
        "epochs_run": epoch,
        "best_epoch": best_epoch,
        "validation_loss": history,
        "split": {"train": int(i_train.numel()), "validation": int(i_val.numel()),
                  "test": int(i_test.numel())},
        "wall_time_s": time.perf_counter() - t0,
    }
    twin.created = datetime.now(UTC).isoformat(timespec="seconds")
    twin.source = json.loads(json.dumps(twin.source, default=str))  # plain types: weights_only
    if out is not None:
        twin.save(out)
    return twin


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "device"


class Surrogate(Device):
    """``surrogate``: a fitted twin behind the device contract (see the module docstring).

    ``noise`` adds noise to the twin's outputs: a list of non-idealities (as on the
    simulators) or ``"measured"`` (Gaussian, each channel at the record's noise floor).
    """

    differentiable = True

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        record: str | Path | None = None,
        of: str | Mapping[str, Any] | None = None,
        n_in: int | None = None,
        seed: int = 0,
        clip: bool = False,
        noise: str | list[Mapping[str, Any] | Effect] | None = None,
        calibration: Mapping[str, Any] | None = None,
        fit: Mapping[str, Any] | None = None,
        cache: str | Path = "twins",
        twin: Twin | None = None,
        progress: bool = True,
        **device_params: Any,
    ):
        seed = int(seed)
        self._given = {"path": path, "record": record, "of": of, "calibration": calibration,
                       "fit": fit, "cache": str(cache), "noise": noise, **device_params}
        if device_params and of is None:
            raise ValueError(
                f"surrogate: unknown parameter(s) {sorted(device_params)}; allowed: path, record, "
                "of, n_in, seed, clip, noise, calibration, fit, cache (parameters of a twinned "
                "device go with 'of')"
            )
        if of is not None and record is not None:
            raise ValueError("surrogate: give either 'of' (a device to calibrate) or 'record', not both")
        fill = {"seed": seed, "block": seed % 1000}
        path = Path(str(path).format(**fill)) if path is not None else None
        if twin is None:
            if of is not None:
                twin = self._from_device(of, device_params, n_in, seed, calibration, fit,
                                         Path(cache), path, progress)
            elif record is not None:
                twin = self._from_record(Path(str(record).format(**fill)), fit, Path(cache), path,
                                         progress)
            elif path is not None:
                twin = Twin.load(path)
            else:
                raise ValueError(
                    "surrogate: say where the twin comes from: path=TWIN.pt (from 'physnn fit'), "
                    "record=RECORD.h5|PAIRS.csv, or of=DEVICE (calibrated and fitted on first use)"
                )
        if n_in is not None and int(n_in) != twin.n_in:
            raise ValueError(
                f"surrogate: the twin {twin.path or '(in memory)'} was fitted to a device with "
                f"{twin.n_in} inputs, but n_in={n_in} is asked for (in a network: the block's "
                "input width); fit a twin of the right width or use '{block}' in the path"
            )
        self.twin = twin
        spec = DeviceSpec(
            name="surrogate",
            n_in=twin.n_in,
            n_out=twin.n_out,
            domain=twin.domain,
            output_units=twin.spec.get("output_units", "a.u."),
        )
        super().__init__(spec, seed=seed, clip=clip)
        self.measured_noise = noise == "measured"
        if self.measured_noise and twin.noise_floor is None:
            raise ValueError("surrogate: noise='measured' needs a record with a noise floor "
                             "(calibrate with repeats, or import data with repeated inputs)")
        if isinstance(noise, str) and not self.measured_noise:
            raise ValueError(
                f"surrogate: noise must be 'measured' or a list of non-idealities, got {noise!r}"
            )
        self.noise = [] if isinstance(noise, str) else make_effects(noise)
        self._models: dict[str, nn.Module] = {}

    # -- where the twin comes from ----------------------------------------------------------------
    @staticmethod
    def _load_or_fit(target: Path, key: str, fit_fn) -> Twin:
        if target.is_file():
            twin = Twin.load(target)
            if twin.source.get("key") != key:
                raise ValueError(
                    f"surrogate: {target} was fitted from a different source or with different "
                    "settings than this description asks for; delete it or choose another path"
                )
            return twin
        return fit_fn()

    @classmethod
    def _from_device(cls, of, params, n_in, seed, calibration, fit, cache, path, progress) -> Twin:
        from ..core.registry import make_device
        from .sweep import CalibrationSettings, calibrate

        desc = {"kind": of} if isinstance(of, str) else dict(of)
        desc.update(params)
        if n_in is not None:
            desc["n_in"] = int(n_in)
        desc["seed"] = seed
        if desc.get("kind") == "surrogate":
            raise ValueError("surrogate: 'of' must name a device to calibrate, not another surrogate")
        try:
            cal = CalibrationSettings(**dict(calibration or {}))
        except TypeError as e:
            raise ValueError(f"surrogate calibration: {e}; allowed: "
                             f"{sorted(CalibrationSettings.__dataclass_fields__)}") from None
        fs = FitSettings.from_dict(fit)
        key = _key({"of": desc, "calibration": asdict(cal), "fit": asdict(fs),
                    "format": TWIN_FORMAT_VERSION})
        stem = f"{_slug(str(desc.get('kind')))}-n{desc.get('n_in', 'default')}-s{seed}-{key[:12]}"
        target = path or cache / f"{stem}.pt"

        def fit_fn() -> Twin:
            dev = make_device(desc)
            rec = calibrate(dev, settings=cal, out=target.with_suffix(".h5"), progress=progress,
                            command=f"surrogate of {desc.get('kind')} (seed {seed})")
            return fit_surrogate(rec, settings=fs, out=target, source_key=key, progress=progress)

        return cls._load_or_fit(target, key, fit_fn)

    @classmethod
    def _from_record(cls, record: Path, fit, cache, path, progress) -> Twin:
        from .importer import import_measurements

        rec = import_measurements(record, command=f"surrogate record={record}")
        fs = FitSettings.from_dict(fit)
        key = _key({"record": rec.fingerprint(), "fit": asdict(fs), "format": TWIN_FORMAT_VERSION})
        target = path or cache / f"{_slug(record.stem)}-{key[:12]}.pt"
        if rec.path is None:
            rec.path = record
        return cls._load_or_fit(
            target, key,
            lambda: fit_surrogate(rec, settings=fs, out=target, source_key=key, progress=progress),
        )

    # -- the contract --------------------------------------------------------------------------
    @property
    def fidelity(self) -> dict[str, Any]:
        """The twin's fidelity on its held-out test split (NMSE, R^2 per output and overall)."""
        return self.twin.fidelity["test"]

    def _model(self, device: torch.device) -> nn.Module:
        key = str(device)
        if key not in self._models:
            self._models[key] = copy.deepcopy(self.twin.model).to(device)
        return self._models[key]

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        y = self.twin.predict(x, self._model(x.device))
        gen = self.generator(x.device)
        if self.measured_noise:
            sigma = self.twin.noise_floor.to(device=x.device, dtype=x.dtype)
            y = y + sigma * torch.randn(y.shape, generator=gen, device=x.device, dtype=x.dtype)
        return apply_effects(y, self.noise, gen)

    def plot(self, fig, x: torch.Tensor) -> bool:
        """The twin's outputs for a few inputs, with its held-out fidelity."""
        ax = fig.subplots()
        with torch.no_grad():
            y = self.twin.predict(self.validate(x[:3])).cpu()
        for i, row in enumerate(y):
            ax.plot(row.numpy(), ".-", ms=3, label=f"input {i}")
        f = self.fidelity
        ax.set(xlabel="output channel", ylabel=self.spec.output_units,
               title=f"surrogate of {self.twin.spec['name']}: held-out NMSE {f['nmse_overall']:.3g}, "
                     f"R^2 {f['r2_overall']:.3f}")
        ax.legend()
        return True

    def describe(self) -> dict[str, Any]:
        """A description that rebuilds this surrogate (the twin file's absolute path included)."""
        d: dict[str, Any] = {"kind": "surrogate"}
        for k, v in self._given.items():
            if v is not None and k != "path":
                d[k] = v
        if "record" in d:
            d["record"] = str(Path(str(d["record"])).resolve())
        if self.twin.path is not None:
            d["path"] = str(Path(self.twin.path).resolve())
        d.update(n_in=self.spec.n_in, seed=self.seed, clip=self.clip)
        if self.noise and not self.measured_noise:
            d["noise"] = [e.describe() for e in self.noise]
        return json.loads(json.dumps(d, default=str))

