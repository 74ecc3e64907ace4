"""Score a trained run again from its run log's checkpoint, with another read-out: no
training, the devices queried only for the evaluation itself.

A read-out changes what a run predicts, never what it learns (``train.readout`` is read at
evaluation only), so a read-out can be chosen on the tune seeds' finished runs and applied to
the report seeds' finished runs, instead of training every seed again. The evaluation
measures on the same copies of the devices' noise streams as the run's own evaluation after
its last epoch, so re-scoring with the run's own read-out gives its logged numbers exactly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .config import load_config
from .loop import CHECKPOINT_FORMAT
from .runlog import read_run
from .runner import TrainSession, check_torch_device
from .summary import mean_std


def evaluate_run(path: str | Path, *, readout: str | None = None,
                 torch_device: str = "cpu") -> dict[str, Any]:
    """The figures of ``train.readout = readout`` (default: the run's own) on the network
    ``path``'s checkpoint holds: ``test_acc``, ``train_acc`` (NaN where the read-out does not
    give one) and the read-out's own scalars (``test_acc_summed``, ``readout_summed``, ...),
    beside the run's ``seed``, ``epoch`` and ``logged_test_acc`` (its last evaluation)."""
    check_torch_device(torch_device)
    rec = read_run(path, checkpoint=True)
    ck = rec.get("checkpoint")
    if ck is None or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} holds no checkpoint this physnn can load (format "
                         f"{CHECKPOINT_FORMAT}); rerun it with this physnn to evaluate it")
    cfg = load_config(rec["config"])
    if readout is not None:
        cfg = cfg.merged({"train": {"readout": readout}})
    session = TrainSession(cfg, cfg.seed, torch_device, progress=False)
    try:
        session.load_state_dict(ck["state"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}'s checkpoint does not fit the network its config builds "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
                         ) from None
    train_acc, test_acc, found = session.evaluate()
    logged = np.asarray(rec["metrics"]["test_acc"], dtype=float)
    logged = logged[~np.isnan(logged)]
    scalars = {k: float(v) for k, v in found.items() if isinstance(v, (int, float))}
    return {
        "run": str(path), "seed": cfg.seed, "epoch": int(ck["epoch"]),
        "readout": cfg.train.readout,
        "logged_test_acc": float(logged[-1]) if logged.size else math.nan,
        "test_acc": test_acc, "train_acc": train_acc, **scalars,
    }


def evaluation_markdown(rows: list[dict[str, Any]]) -> str:
    """``physnn evaluate``'s table: one row per run, then the mean over them."""
    extra = [k for k in ("test_acc_summed", "readout_summed") if any(k in r for r in rows)]
    head = ["run", "seed", "epoch", "read-out", "test_acc", "logged test_acc", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [Path(r["run"]).name, r["seed"], r["epoch"], r["readout"],
                 *(f"{100 * r[k]:.2f} %" for k in ("test_acc", "logged_test_acc")),
                 *(f"{r.get(k, math.nan):.4g}" if k == "readout_summed"
                   else f"{100 * r.get(k, math.nan):.2f} %" for k in extra)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if len(rows) > 1:
        mu, sd = mean_std([r["test_acc"] for r in rows])
        lines.append(f"\ntest_acc over {len(rows)} runs: {100 * mu:.2f} ± {100 * sd:.2f} %")
    return "\n".join(lines)
