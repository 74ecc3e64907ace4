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


def fidelity(
    pred: np.ndarray, target: np.ndarray, noise_floor: np.ndarray | None = None,
) -> dict[str, Any]:
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
        """How close the twin came on ``split`` (what ``physnn fit`` prints)."""
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
