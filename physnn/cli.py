"""Command line: ``physnn train``, ``physnn report``, ``physnn presets``, ``physnn device``.

Each command is a thin layer over the Python API of the same name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_train(a: argparse.Namespace) -> int:
    import torch

    from .experiments.runner import train

    if a.threads:
        torch.set_num_threads(a.threads)
    summary = train(
        a.config, out=a.out, seed=a.seed, seeds=a.seeds, epochs=a.epochs, overrides=a.set,
        torch_device=a.device, progress=not a.no_progress, overwrite=a.overwrite,
    )
    print(summary.markdown())
    print(f"\nrun logs: {Path(a.out) / summary.name}/  (plots: physnn report RUN.h5)")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from .report import report

    paths = []
    for p in a.runs:
        p = Path(p)
        runs = sorted(p.glob("*.h5")) if p.is_dir() else [p]
        if not runs:
            raise ValueError(f"no run logs (*.h5) in {p}")
        for r in runs:
            paths += report(r, a.out)
    for p in paths:
        print(p)
    return 0


def _cmd_presets(a: argparse.Namespace) -> int:
    from .experiments.config import presets

    print("\n".join(presets()))
    return 0


def _cmd_device(a: argparse.Namespace) -> int:
    from .devices import make_device

    dev = make_device(a.description)
    print(json.dumps({"spec": dev.spec.to_dict(), "description": dev.describe()}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="physnn", description="Train physical neural networks with model-free local learning."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset or a TOML config (resumes unfinished runs)")
    t.add_argument("config", help="preset name (see 'physnn presets') or path to a .toml config")
    t.add_argument("--epochs", type=int, help="override train.epochs")
    t.add_argument("--seed", type=int, help="first seed (default: the config's seed)")
    t.add_argument("--seeds", type=int, default=1, help="number of consecutive seeds (default 1)")
    t.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    t.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=1e-3 --set data.path=DIR (repeatable)",
    )
    t.add_argument("--out", default="runs", help="output folder (default: runs)")
    t.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")
    t.set_defaults(func=_cmd_train)

    r = sub.add_parser("report", help="write PNG plots (learning curves, confusion matrix)")
    r.add_argument("runs", nargs="+", help="run logs (.h5) or folders of them")
    r.add_argument("--out", help="folder for the PNGs (default: beside each run log)")
    r.set_defaults(func=_cmd_report)

    ps = sub.add_parser("presets", help="list the built-in presets")
    ps.set_defaults(func=_cmd_presets)

    d = sub.add_parser("device", help="build a device from a description and print its spec")
    d.add_argument("description", help="a kind such as sim:optical, or a .toml description")
    d.set_defaults(func=_cmd_device)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"physnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
