"""Plots of a run log: learning curves, the first device and the test confusion matrix, as PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.atomic import save_figure_atomic
from .runlog import read_run

if TYPE_CHECKING:
    import torch

    from ..core import Device


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) label pairs, ``[n_classes, n_classes]``."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


WAVE_KIND = "sim:acoustic-wave"
"""The raw-audio cavity: its device figure shows one of the run's own test recordings."""


def _plot_device(fig: Any, rec: dict[str, Any]) -> bool:
    """Rebuild the first block's device from its stored description and let it draw itself:
    a few random inputs, or for ``sim:acoustic-wave`` one test recording of the run's data
    (random when the recordings cannot be loaded), named in the figure's title."""
    import torch

    from ..core import make_device

    description = rec["devices"][0]
    dev = make_device(description)
    dom = dev.spec.domain
    gen = torch.Generator().manual_seed(0)
    x = dom.from_unit(torch.rand(4, dev.spec.n_in, generator=gen))
    if description.get("kind") != WAVE_KIND:
        return dev.plot(fig, x)
    try:
        x, title = _test_recording(dev, rec)
    except Exception as e:  # the recordings are not shipped: a user's machine lacks them
        reason = str(e).split(". ")[0].splitlines()[0][:100] if str(e) else type(e).__name__
        x[:, : len(description.get("label_tones") or [])] = 0.0  # no label: neutral
        title = f"field for a random input (the run's recordings could not be loaded: {reason})"
    if not dev.plot(fig, x):
        return False
    fig.suptitle(f"{WAVE_KIND}: {title}")
    return True


def _test_recording(dev: Device, rec: dict[str, Any]) -> tuple[torch.Tensor, str]:
    """The first test recording of the run's data set (rebuilt from the run log's config and
    seed, mapped onto the device's domain as the runner does, label slots zero: no label)
    and the words naming it; raises when the data cannot be loaded or do not fit."""
    import torch

    from .runner import load_data, map_into_domain

    raw = load_data(rec["config"], int(rec.get("seed", 0)))
    if raw.n_features != dev.spec.n_in:
        raise ValueError(
            f"the data have {raw.n_features} features, the device takes {dev.spec.n_in} inputs"
        )
    data = map_into_domain(raw, dev.spec.domain)
    x = torch.as_tensor(data.x_test[:1]).to(torch.float64).clone()
    x[:, : raw.label_slots] = 0.0
    vowel = raw.class_names[int(raw.y_test[0])]
    tokens = getattr(raw, "test_tokens", ())
    who = f", speaker {tokens[0][:3]} ({tokens[0]}.wav)" if tokens else ""
    return x, f"field for one test recording: vowel {vowel}{who}"


def report(run_path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<run>_curves.png``, ``<run>_confusion.png`` and ``<run>_device.png`` (what the
    first block's device does to a few random inputs; for ``sim:acoustic-wave``, the field
    of one of the run's test recordings when they can be loaded); return their paths."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    run_path = Path(run_path)
    rec = read_run(run_path)
    out_dir = Path(out_dir) if out_dir is not None else run_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    m = rec["metrics"]
    title = f"{rec.get('name', run_path.stem)} · seed {rec.get('seed', '?')}"
    if rec.get("status") != "complete":
        title += f" · {rec.get('status', 'incomplete')}"
    paths = []

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_l, ax_a = fig.subplots(1, 2)
    epoch = m["epoch"]
    loss = np.atleast_2d(m["loss"])
    for k in range(loss.shape[1]):
        ax_l.plot(epoch, loss[:, k], label=f"block {k + 1}")
    ax_l.set(xlabel="epoch", ylabel="PhyLL loss (last inner step)", yscale="log", title="loss")
    ax_l.legend()
    for key, label in (("train_acc", "train"), ("test_acc", "test")):
        ok = ~np.isnan(m[key])
        ax_a.plot(epoch[ok], 100 * m[key][ok], "o-", label=label)
    ref = rec["reference"].get("logistic_regression_test_acc")
    if ref is not None:
        ax_a.axhline(100 * ref, color="gray", ls="--", label="logistic regression (test)")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_a.legend()
    fig.suptitle(title)
    paths.append(out_dir / f"{run_path.stem}_curves.png")
    save_figure_atomic(paths[-1], fig)

    if rec["devices"]:
        wave = rec["devices"][0].get("kind") == WAVE_KIND
        fig = Figure(figsize=(13, 7.5) if wave else (11, 4.2), layout="constrained")
        if _plot_device(fig, rec):
            paths.append(out_dir / f"{run_path.stem}_device.png")
            save_figure_atomic(paths[-1], fig)

    pred = rec["predictions"]
    if "test_true" in pred:
        n = int(max(pred["test_true"].max(), pred["test_pred"].max())) + 1
        cm = confusion_matrix(pred["test_true"], pred["test_pred"], n)
        fig = Figure(figsize=(5.5, 5), layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(cm, cmap="Blues")
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    color = "white" if cm[i, j] > cm.max() / 2 else "black"
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, fontsize=8)
        acc = np.trace(cm) / cm.sum()
        ax.set(
            xlabel="predicted",
            ylabel="true",
            xticks=range(n),
            yticks=range(n),
            title=f"test confusion matrix (accuracy {100 * acc:.2f} %)",
        )
        fig.colorbar(im, ax=ax, shrink=0.8)
        paths.append(out_dir / f"{run_path.stem}_confusion.png")
        save_figure_atomic(paths[-1], fig)
    return paths
