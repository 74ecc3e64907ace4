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
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.device import Device, DeviceSpec
from ..core.effects import Effect, apply_effects, make_effects
from ..core.registry import make_device
from .fit import FitSettings, fit_surrogate
from .importer import import_measurements
from .mlp import ACTIVATIONS, ARCH_KEYS, Fourier, Square, build_mlp
from .sweep import CalibrationSettings, calibrate
from .twin import TWIN_FORMAT, TWIN_FORMAT_VERSION, Twin, fidelity

__all__ = [
    "ACTIVATIONS", "ARCH_KEYS", "FitSettings", "Fourier", "Square", "Surrogate", "TWIN_FORMAT",
    "TWIN_FORMAT_VERSION", "Twin", "build_mlp", "fidelity", "fit_surrogate",
]

Noise = str | list[Mapping[str, Any] | Effect] | None
"""``"measured"``, ``"none"``, a list of non-idealities, or none."""

log = logging.getLogger("physnn.surrogate")

SIMULATED_KINDS = ("sim:", "surrogate")
"""Device kinds (prefixes) whose calibration is a simulation; a twin of any other source (an
imported file, the serial board, a lab's plug-in instrument) is a twin of measured data."""


def twin_of_measurements(twin: Twin) -> bool:
    """Whether ``twin`` was fitted to measured data (imported pairs or a calibrated device
    that is not a simulator): such data already carry the device's real noise, so synthetic
    noise on the twin's outputs counts it twice unless a config asks for it on purpose."""
    provenance = twin.source.get("record_provenance") or {}
    if provenance.get("source") == "import":
        return True
    kind = str((twin.source.get("device") or {}).get("kind", ""))
    return not kind.startswith(SIMULATED_KINDS)


def _key(payload: dict[str, Any]) -> str:
    """A cache key: the hash of everything that decides what a fitted twin is."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _slug(text: str) -> str:
    """``text`` as a safe file-name stem."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "device"


def _load_or_fit(target: Path, key: str, fit_fn: Callable[[], Twin]) -> Twin:
    """The twin cached at ``target`` if it was fitted for ``key``, else a fresh fit."""
    if target.is_file():
        twin = Twin.load(target)
        if twin.source.get("key") != key:
            raise ValueError(
                f"surrogate: {target} was fitted from a different source or with different "
                "settings than this description asks for; delete it or choose another path"
            )
        return twin
    return fit_fn()


def _twin_of_device(of: str | Mapping[str, Any], params: dict[str, Any], n_in: int | None,
                    seed: int, calibration: Mapping[str, Any] | None,
                    fit: Mapping[str, Any] | None, cache: Path, path: Path | None,
                    progress: bool) -> Twin:
    """Calibrate the described device and fit a twin to it, both cached under ``cache``."""
    desc: dict[str, Any] = {"kind": of} if isinstance(of, str) else dict(of)
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

    return _load_or_fit(target, key, fit_fn)


def _twin_of_record(record: Path, fit: Mapping[str, Any] | None, cache: Path, path: Path | None,
                    progress: bool) -> Twin:
    """Fit a twin to a record or measured pairs (imported on the fly), cached under ``cache``."""
    rec = import_measurements(record, command=f"surrogate record={record}")
    fs = FitSettings.from_dict(fit)
    key = _key({"record": rec.fingerprint(), "fit": asdict(fs), "format": TWIN_FORMAT_VERSION})
    target = path or cache / f"{_slug(record.stem)}-{key[:12]}.pt"
    if rec.path is None:
        rec.path = record
    return _load_or_fit(
        target, key,
        lambda: fit_surrogate(rec, settings=fs, out=target, source_key=key, progress=progress),
    )


def _find_twin(path: str | Path | None, record: str | Path | None,
               of: str | Mapping[str, Any] | None, params: dict[str, Any], n_in: int | None,
               seed: int, calibration: Mapping[str, Any] | None, fit: Mapping[str, Any] | None,
               cache: Path, progress: bool) -> Twin:
    """The twin a description names: fitted to ``of`` or ``record`` (cached), or a file."""
    fill = {"seed": seed, "block": seed % 1000}
    target = Path(str(path).format(**fill)) if path is not None else None
    if of is not None:
        return _twin_of_device(of, params, n_in, seed, calibration, fit, cache, target, progress)
    if record is not None:
        return _twin_of_record(Path(str(record).format(**fill)), fit, cache, target, progress)
    if target is not None:
        return Twin.load(target)
    raise ValueError(
        "surrogate: say where the twin comes from: path=TWIN.pt (from 'physnn fit'), "
        "record=RECORD.h5|PAIRS.csv, or of=DEVICE (calibrated and fitted on first use)"
    )


def _noise_effects(noise: Noise, twin: Twin, synthetic_noise: bool) -> list[Effect]:
    """The non-idealities ``noise`` asks for; ``"measured"`` needs a twin with a noise floor.

    A list on a twin of measured data is ignored with a warning unless ``synthetic_noise``:
    a preset's ``noise`` is a simulator's stand-in for readout noise, and ``--set
    device.kind=surrogate`` keeps it, so without this a twin of real measurements would
    silently get noise the measurements never had on top of the noise they had."""
    if noise == "measured" and twin.noise_floor is None:
        raise ValueError("surrogate: noise='measured' needs a record with a noise floor "
                         "(calibrate with repeats, or import data with repeated inputs)")
    if isinstance(noise, str) and noise not in ("measured", "none"):
        raise ValueError(
            f"surrogate: noise must be 'measured', 'none' or a list of non-idealities, got {noise!r}"
        )
    effects = [] if isinstance(noise, str) else make_effects(noise)
    if effects and not synthetic_noise and twin_of_measurements(twin):
        log.warning(
            "surrogate: the twin %s was fitted to measured data, which already hold the "
            "device's noise; the synthetic noise %s in the description (a preset's 'noise'?) is "
            "ignored. Set synthetic_noise = true to add it anyway, or noise = \"measured\" for "
            "Gaussian noise at the record's noise floor",
            twin.path or f"of {twin.spec.get('name')}", [e.describe() for e in effects])
        return []
    return effects


class Surrogate(Device):
    """``surrogate``: a fitted twin behind the device contract (see the module docstring).

    ``noise`` adds noise to the twin's outputs: a list of non-idealities (as on the
    simulators), ``"measured"`` (Gaussian, each channel at the record's noise floor) or
    ``"none"``. On a twin of measured data a list applies only with ``synthetic_noise=True``
    (see ``twin_of_measurements``); ``describe()`` states the noise actually applied.
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
        noise: Noise = None,
        synthetic_noise: bool = False,
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
                "of, n_in, seed, clip, noise, synthetic_noise, calibration, fit, cache "
                "(parameters of a twinned device go with 'of')"
            )
        if of is not None and record is not None:
            raise ValueError("surrogate: give either 'of' (a device to calibrate) or 'record', not both")
        if not isinstance(synthetic_noise, bool):
            raise ValueError(
                f"surrogate: synthetic_noise must be true or false, got {synthetic_noise!r}")
        if twin is None:
            twin = _find_twin(path, record, of, device_params, n_in, seed, calibration, fit,
                              Path(cache), progress)
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
        self.synthetic_noise = bool(synthetic_noise)
        self.noise = _noise_effects(noise, twin, self.synthetic_noise)
        self._models: dict[str, nn.Module] = {}

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
        floor = self.twin.noise_floor
        if self.measured_noise and floor is not None:  # __init__ refuses measured without one
            sigma = floor.to(device=x.device, dtype=x.dtype)
            y = y + sigma * torch.randn(y.shape, generator=gen, device=x.device, dtype=x.dtype)
        return apply_effects(y, self.noise, gen)

    def plot(self, fig: Any, x: torch.Tensor) -> bool:
        """The twin's outputs for a few inputs, with its held-out fidelity."""
        ax = fig.subplots()
        with torch.no_grad():
            y = self.twin.predict(self.validate(x[:3])).cpu()
        for i, row in enumerate(y):
            ax.plot(row.numpy(), ".-", ms=3, label=f"input {i}")
        f = self.fidelity
        ax.set(xlabel="output channel", ylabel=self.spec.output_units,
               title=f"surrogate of {self.twin.spec['name']}: held-out pooled NMSE "
                     f"{f['nmse_pooled']:.3g}, per-output mean {f['nmse_overall']:.3g}")
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
        # the noise applied, not the noise asked for (a run log says what the network met)
        d["noise"] = ("measured" if self.measured_noise
                      else [e.describe() for e in self.noise] if self.noise else "none")
        if twin_of_measurements(self.twin):
            d["synthetic_noise"] = self.synthetic_noise
        return json.loads(json.dumps(d, default=str))

    def about(self) -> dict[str, Any]:
        """What ``physnn device TWIN.pt`` shows besides the description: the twinned device's
        spec, what the twin was fitted on and how close it came (pooled figures first)."""
        f = self.fidelity
        return {
            "twin_of": self.twin.spec,
            "measured_data": twin_of_measurements(self.twin),
            "fitted_on": {
                "record_path": self.twin.source.get("record_path"),
                "record_fingerprint": self.twin.source.get("record_fingerprint"),
                "record_source": (self.twin.source.get("record_provenance") or {}).get("source"),
                "split": self.twin.fit.get("split"),
                "settings": self.twin.fit.get("settings"),
                "epochs_run": self.twin.fit.get("epochs_run"),
                "best_epoch": self.twin.fit.get("best_epoch"),
            },
            "test_fidelity": {k: f[k] for k in (
                "n", "nmse_pooled", "r2_pooled", "nmse_overall", "r2_overall", "near_constant",
                "nmse_overall_without_near_constant", "nmse_noise_floor") if k in f},
            "noise": self.describe()["noise"],
            "created": self.twin.created,
        }

