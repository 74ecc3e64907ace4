"""Command line: ``physnn train``, ``compare``, ``continual``, ``sweep``, ``report``,
``evaluate``, ``presets``, ``device``, ``emulate``, ``calibrate``, ``import``, ``fit``, ``check``.

Each command is a thin layer over the Python API of the same name.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path


def _run_kwargs(a: argparse.Namespace) -> dict:
    """What train, compare and continual share: seeds, overrides, device, jobs and threads
    (the job runner sets the torch threads, in this process or in each worker)."""
    return dict(
        seed=a.seed, seeds=a.seeds, epochs=a.epochs, overrides=a.set, out=a.out,
        torch_device=a.device, progress=not a.no_progress, overwrite=a.overwrite, jobs=a.jobs,
        threads=a.threads, ray=a.ray, gpus_per_run=a.gpus_per_run, retries=a.retries,
        name=a.name,
    )


def _cmd_train(a: argparse.Namespace) -> int:
    from .experiments.summary import train

    summary = train(a.config, **_run_kwargs(a))
    print(summary.markdown())
    print(f"\nrun logs: {Path(a.out) / summary.name}/  (plots: physnn report RUN.h5)")
    return 0


def _run_logs(names: list[str]) -> list[Path]:
    """The run logs named: files as given, folders as the ``*.h5`` in them (sorted)."""
    paths: list[Path] = []
    for p in map(Path, names):
        runs = sorted(p.glob("*.h5")) if p.is_dir() else [p]
        if not runs:
            raise ValueError(f"no run logs (*.h5) in {p}")
        paths += runs
    return paths


def _cmd_report(a: argparse.Namespace) -> int:
    from .experiments.report import report

    for r in _run_logs(a.runs):
        for p in report(r, a.out):
            print(p)
    return 0


DEFAULT_METHODS_ARG = "phyll,ff,pat,backprop"


def _cmd_evaluate(a: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .experiments.evaluate import evaluate_run, evaluation_markdown

    if a.threads:  # as the runs had it, for their last digits (docs/cluster.md)
        torch.set_num_threads(a.threads)
    runs = tqdm(_run_logs(a.runs), desc="evaluate", unit="run", disable=a.no_progress)
    rows = [evaluate_run(r, readout=a.readout, torch_device=a.device) for r in runs]
    print(json.dumps(rows, indent=1) if a.json else evaluation_markdown(rows))
    return 0


def _cmd_compare(a: argparse.Namespace) -> int:
    from .experiments.compare import compare, from_logs, write_outputs

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if a.from_logs:  # no training: the table and plot of the logs already in OUT/NAME
        from .experiments.config import load_config, run_label

        folder = Path(a.out) / run_label(load_config(a.config).name, a.set, a.name)
        comp = from_logs(folder, methods if a.methods != DEFAULT_METHODS_ARG else None)
        write_outputs(comp, folder)
        print(comp.markdown())
        return 0
    comp = compare(a.config, methods=methods, settings=a.settings,
                   command=_command_line(a, ("config",)), **_run_kwargs(a))
    print(comp.markdown())
    print(f"\ntable, plot and run logs: {Path(a.out) / comp.name}/")
    return 0


def _cmd_continual(a: argparse.Namespace) -> int:
    from .experiments.continual import continual

    arms = [m.strip() for m in a.methods.split(",") if m.strip()]
    summary = continual(a.config, methods=arms, settings=a.settings,
                        command=_command_line(a, ("config",)), **_run_kwargs(a))
    print(summary.markdown())
    print(f"\ntable, plot and run logs: {Path(a.out) / summary.name}/")
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    from .experiments.sweep import dry_run, load_spec, sweep

    spec = load_spec(a.spec)
    spec.set += a.set
    if a.dry_run:
        print(dry_run(spec, a.out))
        return 0
    result = sweep(
        spec, out=a.out, jobs=a.jobs, threads=a.threads, ray=a.ray,
        gpus_per_run=a.gpus_per_run, retries=a.retries, torch_device=a.device,
        progress=not a.no_progress, command=_command_line(a, ("spec",)),
    )
    print(result.markdown())
    print(f"\ntable, plot and run logs: {result.folder}/")
    failed = [r for r in [*result.rows, *([result.report] if result.report else [])] if r.errors]
    if failed:
        print(f"{len(failed)} candidate(s) failed on some seeds (see status); rerunning the same "
              "command resumes them", file=sys.stderr)
    return 1 if failed else 0


def _cmd_presets(a: argparse.Namespace) -> int:
    from .experiments.config import presets

    print("\n".join(presets()))
    return 0


def _cmd_device(a: argparse.Namespace) -> int:
    from .core import KINDS, make_device

    if a.list or a.description is None:  # names and packages only: nothing is imported
        from .data import DATASETS

        print("\n\n".join(f"{title}:\n" + "\n".join(f"  {n:<24} {reg.provider(n)}" for n in reg)
                          for title, reg in (("device kinds", KINDS), ("data sets", DATASETS))))
        return 0
    dev = make_device(a.description)
    shown = {"spec": dev.spec.to_dict(), "description": dev.describe()}
    if callable(about := getattr(dev, "about", None)):  # a twin: what it was fitted on, how well
        shown["about"] = about()
    print(json.dumps(shown, indent=2, default=str))
    return 0


def _frame_counts(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected frame counts like 500 or 500,2000, got {text!r}") from None


def _device_or_preset(text: str) -> str | dict:
    """A preset's ``[device]`` table, or ``text`` itself (a kind or a .toml description)."""
    from .experiments.config import load_config, presets

    return dict(load_config(text).device) if text in presets() else text


def _cmd_emulate(a: argparse.Namespace) -> int:
    import torch

    from .hardware.emulator import Faults, emulate

    if a.threads:
        torch.set_num_threads(a.threads)
    faults = Faults(
        corrupt=a.corrupt, drop=a.drop, delay=a.delay, delay_s=a.delay_s, garbage=a.garbage,
        disconnect=a.disconnect, reset=a.reset, disconnect_after=_frame_counts(a.disconnect_after),
        reset_after=_frame_counts(a.reset_after), reset_s=a.reset_s, seed=a.fault_seed,
    )
    emulate(
        _device_or_preset(a.device), socket=a.socket, link=a.link, faults=faults,
        max_payload=a.max_payload, max_batch=a.max_batch, duration=a.duration, stats_file=a.stats,
    )
    return 0


def _command_line(a: argparse.Namespace, positional: tuple[str, ...]) -> str:
    """The command that reproduces this one (stored in a record's provenance)."""
    import shlex

    argv = ["physnn", a.command] + [str(getattr(a, k)) for k in positional if getattr(a, k)]
    for key, value in vars(a).items():
        if key in ("func", "command", *positional) or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            for v in value:
                argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    return shlex.join(argv)


def _device_from(description: str | None, assignments: list[str], record=None):
    """A device from a kind / .toml description with KEY=VALUE overrides, or, without one,
    from the description stored in ``record``."""
    import tomllib

    from .core import make_device

    overrides = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. n_in=16), got {item!r}")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = raw
    if description is None:
        if record is None:
            raise ValueError("name the device: a kind such as sim:optical, or a .toml description")
        return record.make_device(**overrides)
    return make_device(description, **overrides)


def _cmd_calibrate(a: argparse.Namespace) -> int:
    import torch

    from .twins import calibrate
    from .twins.sweep import read_inputs_file

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = _device_from(a.description, a.set)
    inputs = "uniform" if a.inputs == "uniform" else read_inputs_file(a.inputs)
    settings = {k: v for k, v in (
        ("samples", a.samples), ("repeats", a.repeats), ("drift_checks", a.drift_checks),
        ("seed", a.seed)) if v is not None}
    rec = calibrate(dev, inputs=inputs, out=a.out, command=_command_line(a, ("description",)),
                    progress=not a.no_progress, **settings)
    return _print_record(rec, a)


def _print_record(rec, a: argparse.Namespace) -> int:
    """A calibration record's summary, where it is and (unless --no-plot) its response plot."""
    from .twins import plot_record, summary_text

    print(summary_text(rec))
    print(f"\nrecord: {a.out}")
    if not a.no_plot:
        print(f"response plot: {plot_record(rec, Path(a.out).with_suffix('.png'))}")
    return 0


def _numbers(flag: str, text: str, form: str) -> list[float]:
    """The finite numbers of a comma-separated flag value; a bad one names the flag and the
    form it takes (float()'s own message names neither)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} expects {form}, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{flag} expects {form}; {text!r} holds a value that is not finite")
    return values


def _domain_flag(text: str | None) -> list[float] | None:
    """``--domain LO,HI``: two finite numbers with LO < HI."""
    if text is None:
        return None
    form = "two numbers LO,HI with LO < HI (e.g. 0,1)"
    values = _numbers("--domain", text, form)
    if len(values) != 2 or not values[0] < values[1]:
        raise ValueError(f"--domain expects {form}, got {text!r}")
    return values


def _levels_flag(text: str | None) -> list[float] | None:
    """``--levels A,B,...``: at least two distinct finite numbers (a discrete domain)."""
    if text is None:
        return None
    form = "at least two distinct numbers A,B,... (e.g. 0,1,2,3)"
    values = _numbers("--levels", text, form)
    if len(set(values)) < 2 or len(set(values)) != len(values):
        raise ValueError(f"--levels expects {form}, got {text!r}")
    return values


def _cmd_import(a: argparse.Namespace) -> int:
    from .twins import import_measurements, write_record

    rec = import_measurements(
        a.inputs, a.outputs, fmt=a.format,
        domain=_domain_flag(a.domain), levels=_levels_flag(a.levels),
        name=a.name, output_units=a.units, n_in=a.n_in, n_out=a.n_out,
        in_prefix=a.in_prefix, out_prefix=a.out_prefix, input_key=a.input_key,
        output_key=a.output_key, command=_command_line(a, ("inputs",)),
    )
    write_record(a.out, rec)
    return _print_record(rec, a)


def _cmd_fit(a: argparse.Namespace) -> int:
    import torch

    from .twins.surrogate import fit_surrogate

    if a.threads:
        torch.set_num_threads(a.threads)
    settings = {k: v for k, v in (
        ("hidden", [int(h) for h in a.hidden.split(",")] if a.hidden else None),
        ("activation", a.activation), ("fourier", a.fourier), ("epochs", a.epochs),
        ("patience", a.patience), ("lr", a.lr), ("batch_size", a.batch_size),
        ("holdout", a.holdout), ("validation", a.validation), ("seed", a.seed)) if v is not None}
    twin = fit_surrogate(a.record, settings=settings, out=a.out, progress=not a.no_progress)
    print(twin.fidelity_text())
    print(f"\ntwin: {a.out}  (use it as a device: {{kind = \"surrogate\", path = \"{a.out}\"}})")
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    from .twins import check, read_record

    rec = read_record(a.against)
    dev = _device_from(a.description, a.set, rec)
    report = check(dev, rec, repeats=a.repeats)
    print(report.json() if a.json else report.text())
    return 1 if report.drifted else 0


def _bounded(kind: type, least: float, most: float | None = None) -> Callable[[str], int | float]:
    """An argparse ``type``: an integer (``kind=int``) or a finite number at least ``least``
    (and at most ``most``). A bad value is argparse's one-line error naming the flag, before
    anything runs, instead of a torch error or a run that trains nothing."""
    allowed = f">= {least}" if most is None else f"in [{least}, {most}]"
    what = "an integer" if kind is int else "a finite number"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value) and value >= least
        if not ok or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"expected {what} {allowed}, got {text!r}")
        return value

    return parse


_COUNT = _bounded(int, 1)
_SEED = _bounded(int, 0, 2**32 - 1)  # the config's seed range (config_checks.RANGES["seed"])


def _add_run_options(p: argparse.ArgumentParser, *, seeds: int, out: str) -> None:
    """The options of every command that trains (train, compare, continual)."""
    p.add_argument("config", help="preset name (see 'physnn presets') or path to a .toml config")
    p.add_argument("--seeds", type=_COUNT, default=seeds,
                   help=f"number of consecutive seeds (default {seeds})")
    p.add_argument("--seed", type=_SEED, help="first seed (default: the config's seed)")
    p.add_argument("--epochs", type=_COUNT, help="override train.epochs")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=1e-3 --set data.path=DIR (repeatable)",
    )
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    p.add_argument("--name", help="folder under --out for these runs (default: the config's "
                   "name, plus a suffix naming any --set device.*/data.* override)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--jobs", type=_COUNT, default=1,
                   help="runs at once, each in its own process (default 1: one after another)")
    p.add_argument("--threads", type=_COUNT,
                   help="torch CPU threads per run (default: all cores, shared out between --jobs)")
    _add_executor_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    """Ray and retries: what train, compare, continual and sweep share (docs/cluster.md)."""
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray: a local instance, or the cluster at ADDRESS (auto, "
                   "HOST:6379, ray://HOST:10001); needs pip install -e '.[cluster]'")
    p.add_argument("--gpus-per-run", type=_bounded(float, 0), default=0.0, metavar="F",
                   help="GPUs each run asks Ray for; fractions share a GPU (default 0)")
    p.add_argument("--retries", type=_bounded(int, 0), default=2,
                   help="times a run whose worker process died starts again (default 2)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (what ``physnn --help`` prints)."""
    p = argparse.ArgumentParser(
        prog="physnn", description="Train physical neural networks with model-free local learning."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset or a TOML config (resumes unfinished runs)")
    _add_run_options(t, seeds=1, out="runs")
    t.set_defaults(func=_cmd_train)

    r = sub.add_parser("report", help="write PNG plots (learning curves, confusion matrix)")
    r.add_argument("runs", nargs="+", help="run logs (.h5) or folders of them")
    r.add_argument("--out", help="folder for the PNGs (default: beside each run log)")
    r.set_defaults(func=_cmd_report)

    ev = sub.add_parser("evaluate", help="score trained runs again from their checkpoints, "
                        "e.g. with another read-out (no training)")
    ev.add_argument("runs", nargs="+", help="run logs (.h5) or folders of them")
    ev.add_argument("--readout", help="train.readout to score with (default: each run's own)")
    ev.add_argument("--device", default="cpu", help="torch device to simulate on")
    ev.add_argument("--threads", type=_COUNT, help="torch CPU threads (default: all cores)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)

    c = sub.add_parser(
        "compare", help="train several learning rules x seeds; table, plots and every run log"
    )
    _add_run_options(c, seeds=5, out="runs/compare")
    c.add_argument(
        "--methods", default=DEFAULT_METHODS_ARG,
        help="comma-separated learning rules (default: phyll,ff,pat,backprop)",
    )
    c.add_argument(
        "--settings", help="TOML of per-method [PRESET.METHOD] train settings (default: built-in)"
    )
    c.add_argument(
        "--from-logs", action="store_true",
        help="train nothing: rebuild the table and plot from the complete run logs in OUT/NAME",
    )
    c.set_defaults(func=_cmd_compare)

    cn = sub.add_parser("continual", help="train while the device drifts or changes suddenly; "
                        "accuracy on the current device, drop monitor, recovery figures and plot")
    _add_run_options(cn, seeds=1, out="runs/continual")
    cn.add_argument("--methods", default="phyll,pat",
                    help="comma-separated arms: learning rules, METHOD:frozen for a network that "
                    "stops training at the first perturbation (default: phyll,pat)")
    cn.add_argument("--settings", help="TOML of per-method [PRESET.METHOD] train settings")
    cn.set_defaults(func=_cmd_continual)

    sw = sub.add_parser(
        "sweep", help="a grid or random draws of settings x seeds; held-out tuning "
        "(tune_seeds choose, report_seeds report); in this process, a pool or on Ray"
    )
    sw.add_argument("spec", help="sweep spec (.toml; format in docs/cluster.md)")
    sw.add_argument("--out", default="runs/sweeps", help="output folder (default: runs/sweeps)")
    sw.add_argument("--jobs", type=_COUNT, default=1,
                    help="trials at once, each in its own process (default 1: one after another)")
    sw.add_argument("--threads", type=_COUNT,
                    help="torch CPU threads per trial, whichever executor runs it (default: the "
                    "spec's resources.cpus, else 1)")
    sw.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one more config override for every trial, after the spec's set "
                    "(e.g. --set data.path=DIR; repeatable)")
    _add_executor_options(sw)
    sw.set_defaults(gpus_per_run=None, retries=None)  # default: the spec's
    sw.add_argument("--dry-run", action="store_true", help="list the candidates and trials; run nothing")
    sw.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sw.set_defaults(func=_cmd_sweep)

    ps = sub.add_parser("presets", help="list the built-in presets")
    ps.set_defaults(func=_cmd_presets)

    d = sub.add_parser("device", help="build a device from a description and print its spec")
    d.add_argument("description", nargs="?",
                   help="a kind such as sim:optical, or a .toml description (none: --list)")
    d.add_argument("--list", action="store_true",
                   help="list the registered device kinds and data sets (plug-ins included)")
    d.set_defaults(func=_cmd_device)

    e = sub.add_parser("emulate", help="serve a simulated device with the serial protocol over a "
                       "pseudo-terminal or a loopback socket, with fault injection")
    e.add_argument("device", help="a preset (its [device]), a kind such as sim:optical, or a .toml")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal (default)")
    where.add_argument("--socket", metavar="HOST:PORT", help="serve TCP, e.g. 127.0.0.1:5555")
    e.add_argument("--link", help="fixed path of the pty's symlink (default: printed temp path)")
    for flag, what in (("corrupt", "frames with flipped bytes"), ("drop", "frames lost"),
                       ("delay", "replies held back by --delay-s"),
                       ("garbage", "bursts of random bytes before a reply"),
                       ("disconnect", "disconnects per frame"), ("reset", "board resets per frame")):
        e.add_argument(f"--{flag}", type=float, default=0.0, metavar="RATE",
                       help=f"fraction of {what} (default 0)")
    e.add_argument("--delay-s", type=float, default=1.0, help="seconds a delayed reply waits")
    e.add_argument("--disconnect-after", metavar="N[,N...]", help="disconnect after N frames")
    e.add_argument("--reset-after", metavar="N[,N...]", help="reset the board after N frames")
    e.add_argument("--reset-s", type=float, default=0.3, help="boot time after a reset (s)")
    e.add_argument("--fault-seed", type=int, default=0, help="seed of the fault injector")
    e.add_argument("--max-payload", type=int, default=65535, help="largest frame payload")
    e.add_argument("--max-batch", type=int, default=1 << 20, help="samples per board batch")
    e.add_argument("--duration", type=float, help="stop after this many seconds")
    e.add_argument("--stats", help="write the emulator's counters (JSON) here when it stops")
    e.add_argument("--threads", type=_COUNT, default=1, help="torch CPU threads (default 1)")
    e.set_defaults(func=_cmd_emulate)

    c = sub.add_parser("calibrate", help="characterise a device: sweep, noise floor, SNR, dynamic "
                       "range, saturation, drift -> an HDF5 calibration record and a response plot")
    c.add_argument("description", help="a kind such as sim:optical, or a .toml description")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a device parameter, e.g. --set n_in=16 --set seed=3 (repeatable)")
    c.add_argument("--out", required=True, help="the record to write (.h5); the plot goes beside it")
    c.add_argument("--samples", type=int, help="random sweep samples (default 10000)")
    c.add_argument("--repeats", type=int, help="passes over the repeatability inputs (default 10)")
    c.add_argument("--drift-checks", type=int, help="drift checkpoints during the sweep (default 10)")
    c.add_argument("--inputs", default="uniform",
                   help="'uniform' (default) or a .npy/.npz/.csv file of sweep inputs to measure")
    c.add_argument("--seed", type=int, help="seed of the random inputs (default: the device's)")
    c.add_argument("--no-plot", action="store_true", help="skip the response plot")
    c.add_argument("--threads", type=_COUNT, help="torch CPU threads")
    c.add_argument("--no-progress", action="store_true", help="hide progress bars")
    c.set_defaults(func=_cmd_calibrate)

    im = sub.add_parser("import", help="turn measured input/output pairs (CSV, NPZ, HDF5) into a "
                        "calibration record")
    im.add_argument("inputs", help="inputs CSV, or one CSV with in_*/out_* columns, or .npz/.h5")
    im.add_argument("--outputs", help="outputs CSV (when inputs and outputs are two files)")
    im.add_argument("--out", required=True, help="the record to write (.h5)")
    im.add_argument("--format", choices=["csv", "npz", "h5"], help="default: from the suffix")
    im.add_argument("--domain", metavar="LO,HI", help="input range (default: inferred)")
    im.add_argument("--levels", metavar="A,B,...", help="discrete input levels (default: inferred)")
    im.add_argument("--name", default="imported", help="device name stored in the record")
    im.add_argument("--units", default="a.u.", help="output units stored in the record")
    im.add_argument("--n-in", type=int, help="expected input width (checked)")
    im.add_argument("--n-out", type=int, help="expected output width (checked)")
    im.add_argument("--in-prefix", default="in_", help="input column prefix in a single CSV")
    im.add_argument("--out-prefix", default="out_", help="output column prefix in a single CSV")
    im.add_argument("--input-key", default="inputs", help="input array / dataset name (NPZ, HDF5)")
    im.add_argument("--output-key", default="outputs", help="output array / dataset name")
    im.add_argument("--no-plot", action="store_true", help="skip the response plot")
    im.set_defaults(func=_cmd_import)

    f = sub.add_parser("fit", help="fit a surrogate twin (MLP) to a calibration record")
    f.add_argument("record", help="calibration record (.h5)")
    f.add_argument("--out", required=True, help="the twin to write (.pt)")
    f.add_argument("--hidden", metavar="W1,W2,...", help="hidden widths (default 256,256)")
    f.add_argument("--activation", choices=["relu", "gelu", "silu", "tanh"], help="default silu")
    f.add_argument("--fourier", type=int, help="periodic input features, terms (default 0)")
    f.add_argument("--epochs", type=int, help="most epochs (default 400; early stopping)")
    f.add_argument("--patience", type=int, help="epochs without improvement before stopping")
    f.add_argument("--lr", type=float, help="Adam learning rate (default 2e-3)")
    f.add_argument("--batch-size", type=int, help="default 256")
    f.add_argument("--holdout", type=float, help="test fraction (default 0.15)")
    f.add_argument("--validation", type=float, help="validation fraction (default 0.15)")
    f.add_argument("--seed", type=int, help="split and initialisation seed (default 0)")
    f.add_argument("--threads", type=_COUNT, help="torch CPU threads")
    f.add_argument("--no-progress", action="store_true", help="hide progress bars")
    f.set_defaults(func=_cmd_fit)

    ck = sub.add_parser("check", help="re-measure a record's reference inputs and report drift "
                        "(exit status 1 when channels moved)")
    ck.add_argument("description", nargs="?",
                    help="a kind or .toml description (default: the device stored in the record)")
    ck.add_argument("--against", required=True, help="calibration record (.h5)")
    ck.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a device parameter (repeatable)")
    ck.add_argument("--repeats", type=int, default=3, help="passes over the reference inputs")
    ck.add_argument("--json", action="store_true", help="print the full per-channel report as JSON")
    ck.set_defaults(func=_cmd_check)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds as Ctrl-C does: temporary files
    removed, run logs left at their last complete epoch."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run the command line; a user's error is one line on stderr and exit status 2.

    Ctrl-C exits with status 130 and SIGTERM (a scheduler's or ``kill``'s) with 143, both
    after the same clean-up and with the same advice.
    """
    args = build_parser().parse_args(argv)
    from .experiments.jobs import USER_ERRORS  # a full disk and a lost link are users' too

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"physnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"{what}; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
