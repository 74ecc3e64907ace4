"""A fitted twin: the MLP, its normalisation, its fidelity and where it came from, in one file.

The file is a ``torch.save`` of plain types and tensors only, so it loads with
``weights_only=True``: opening a twin someone sent runs no code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..core.atomic import atomic_path
from ..core.device import Domain
from .mlp import ARCH_KEYS, build_mlp

TWIN_FORMAT = "physnn-surrogate"
TWIN_FORMAT_VERSION = 1


NEAR_CONSTANT_FRACTION = 0.01
"""An output is *near-constant* when its spread (standard deviation over the evaluated rows)
is below this fraction of the median output's spread. Its variance is tiny, so a small
absolute error is a large NMSE: a few such channels dominate the per-channel mean NMSE (on a
measured 20 -> 20 acoustic set-up 8 of 20 did, 0.18 against a pooled 0.016), while the pooled
figure weighs each channel by the variance it has to explain."""


def fidelity(
    pred: np.ndarray, target: np.ndarray, noise_floor: np.ndarray | None = None,
) -> dict[str, Any]:
    """How close ``pred`` comes to ``target``, in the figures a twin carries.

    ``nmse_pooled`` (squared error summed over all outputs over their variance summed) and
    ``r2_pooled = 1 - nmse_pooled`` are the headline: they do not let a near-constant output
    dominate. Beside them: NMSE (MSE over the target's variance) and R^2 per output, their
    mean over outputs with non-zero variance (``nmse_overall``, ``r2_overall``), the outputs
    whose spread is below ``NEAR_CONSTANT_FRACTION`` of the median (``near_constant``) and
    the mean NMSE without them, and ``nmse_noise_floor``, the NMSE that measurement noise
    alone would cause.
    """
    mse = np.mean((pred - target) ** 2, axis=0)
    var = np.var(target, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        nmse = np.where(var > 0, mse / var, np.nan)
    ok = np.isfinite(nmse)
    overall = float(np.mean(nmse[ok])) if ok.any() else float("nan")
    pooled = float(mse.sum() / var.sum()) if var.sum() > 0 else float("nan")
    std = np.sqrt(var)
    near = (std < NEAR_CONSTANT_FRACTION * float(np.median(std))) | (std == 0)
    typical = ok & ~near
    out = {
        "n": int(target.shape[0]),
        "nmse": nmse.tolist(),
        "r2": (1 - nmse).tolist(),
        "nmse_pooled": pooled,
        "r2_pooled": 1 - pooled,
        "nmse_overall": overall,
        "r2_overall": 1 - overall,
        "near_constant": [int(c) for c in np.flatnonzero(near)],
        "near_constant_fraction": NEAR_CONSTANT_FRACTION,
        "nmse_overall_without_near_constant":
            float(np.mean(nmse[typical])) if typical.any() else float("nan"),
        "constant_outputs": int((~ok).sum()),
    }
    if noise_floor is not None and np.isfinite(noise_floor).all():
        with np.errstate(divide="ignore", invalid="ignore"):
            floor = np.where(var > 0, noise_floor**2 / var, np.nan)
        out["nmse_noise_floor"] = float(np.mean(floor[ok])) if ok.any() else float("nan")
        out["nmse_noise_floor_pooled"] = (
            float(np.sum(noise_floor**2) / var.sum()) if var.sum() > 0 else float("nan"))
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
        """Input width of the twinned device."""
        return int(self.spec["n_in"])

    @property
    def n_out(self) -> int:
        """Output width of the twinned device."""
        return int(self.spec["n_out"])

    @property
    def domain(self) -> Domain:
        """The twinned device's input domain: the twin is only trusted inside it."""
        return Domain.from_dict(self.spec["domain"])

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
        """Read a twin written by ``save``; anything else is a ValueError naming the file."""
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
        """How close the twin came on ``split`` (what ``physnn fit`` prints): the pooled
        figures first, since a per-channel mean is at the mercy of near-constant channels."""
        f = self.fidelity[split]
        nmse = np.asarray(f["nmse"], dtype=float)
        ok = np.isfinite(nmse)
        pooled = f["nmse_pooled"]
        lines = [
            f"twin of {self.spec['name']} ({self.n_in} -> {self.n_out}), MLP "
            f"{list(self.fit['settings']['hidden'])} {self.fit['settings']['activation']}, "
            f"best epoch {self.fit['best_epoch']} of {self.fit['epochs_run']}",
            f"held-out {split} split ({f['n']} samples): pooled NMSE {pooled:.4g} "
            f"(R^2 {f.get('r2_pooled', 1 - pooled):.4f}; all outputs' squared errors over all "
            "outputs' variance)",
            f"per-output mean NMSE {f['nmse_overall']:.4g} (R^2 {f['r2_overall']:.4f})",
        ]
        if ok.any():
            worst = int(np.nanargmax(nmse))
            lines.append(
                f"per output NMSE: median {np.median(nmse[ok]):.4g}, worst {nmse[worst]:.4g} "
                f"(output {worst})"
            )
        near = f.get("near_constant", [])
        if near:
            lines.append(
                f"{len(near)} near-constant outputs (spread < {100 * f['near_constant_fraction']:g} % "
                f"of the median output's; their NMSE weighs heavily in the per-output mean, little "
                f"in the pooled one): {', '.join(map(str, near))}; per-output mean NMSE without "
                f"them {f['nmse_overall_without_near_constant']:.4g}"
            )
        if "nmse_noise_floor" in f:
            extra = (f"; pooled {f['nmse_noise_floor_pooled']:.4g}"
                     if "nmse_noise_floor_pooled" in f else "")
            lines.append("NMSE that the measurement noise alone causes: per-output mean "
                         f"{f['nmse_noise_floor']:.4g}{extra}")
        if f["constant_outputs"]:
            lines.append(f"{f['constant_outputs']} constant outputs excluded from the per-output "
                         "averages")
        return "\n".join(lines)
