"""A sweep from Python, with the held-out protocol: two learning rates x two inner-step counts
of PhyLL on the digits, chosen on seeds 100-101, the choice reported once on seeds 0-1.

    python examples/sweep_api.py            # a few minutes on 2 cores (--jobs 2 inside)

The same spec as TOML runs with ``physnn sweep SPEC.toml --jobs 2`` (docs/cluster.md);
``ray="local"`` instead of ``jobs=2`` runs it on a local Ray instance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from physnn.experiments.sweep import sweep


def main(epochs: int = 10, jobs: int = 2, out: str | None = None) -> float:
    """Run the sweep; print its table; return the chosen candidate's report-seed accuracy."""
    spec = {
        "name": "digits-lr-steps",
        "base": "digits-optical",
        "set": [f"train.epochs={epochs}", "train.eval_train=false"],
        "tune_seeds": [100, 101],     # these choose ...
        "report_seeds": [0, 1],       # ... these report the choice, once
        "axes": {"train.lr": [5e-4, 2e-3], "train.inner_steps": [3, 10]},
        "tie_break": ["flops_train_total:min"],  # equal accuracy: the cheaper digital training
    }
    with tempfile.TemporaryDirectory() as tmp:
        result = sweep(spec, out=Path(out or tmp), jobs=jobs, progress=True)
        print(result.markdown())
    assert result.report is not None
    return result.report.mean("test_acc")


if __name__ == "__main__":
    main()
