"""Experiment configs are data: TOML presets merged onto defaults, validated, saved in every run."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "seed": 0,
    "data": {"name": "digits"},
    "device": {"kind": "sim:optical"},
    "network": {"hidden": [200, 200], "skip": True},
    "train": {
        "method": "phyll",
        "epochs": 60,
        "batch_size": 0,
        "lr": 5e-4,
        "inner_steps": 10,
        "alpha": 4.0,
        "label_amplitude": 1.0,
        "eval_every": 5,
        "eval_train": True,
        "ff_threshold": 2.0,
        "pat_twin": "",
        "pat_mismatch": 0.0,
        "digital_j_per_flop": 1e-11,
        "readout": "goodness",
        "average": 0.0,
    },
    "continual": {  # physnn.experiments.continual: training while the device changes
        "eval_every": 1,
        "monitor_window": 3,
        "drop_points": 10.0,
        "recover_points": 2.0,
        "freeze_at": 0,
        "track_twin": False,
        "tail_fraction": 0.25,
    },
}
"""Every key a config may set. ``device`` and ``data`` are free-form: the device factory and
the data set's loader validate them (their keyword arguments)."""

FREE_FORM = {"device", "data"}
READOUTS = ("goodness", "linear", "both")
"""Prediction: the paper's goodness per candidate label, a neutral-label linear read-out
(one device pass per sample instead of one per class), or both side by side."""


def presets() -> list[str]:
    """Names of the built-in presets."""
    folder = resources.files("physnn.experiments") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _merge(base: dict, new: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        where = f"{path}{key}"
        if path.rstrip(".") in FREE_FORM:
            out[key] = copy.deepcopy(value)
        elif key not in base:
            allowed = ", ".join(sorted(base))
            raise ValueError(f"unknown config key {where!r}; allowed here: {allowed}")
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where!r} must be a table")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A complete config from a preset name, a TOML path or a dict (merged onto DEFAULTS)."""
    if isinstance(source, dict):
        data = source
    else:
        text = str(source)
        path = Path(text)
        if path.suffix == ".toml" and path.is_file():
            with path.open("rb") as f:
                data = tomllib.load(f)
        elif text in presets():
            ref = resources.files("physnn.experiments") / "presets" / f"{text}.toml"
            data = tomllib.loads(ref.read_text())
        else:
            raise ValueError(
                f"{text!r} is neither a preset nor an existing .toml file; presets: {presets()}"
            )
    cfg = _merge(DEFAULTS, data)
    validate(cfg)
    return cfg


def apply_overrides(cfg: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as TOML, else taken as text)."""
    new = copy.deepcopy(cfg)
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE (e.g. train.lr=1e-3), got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node: dict[str, Any] = {}
        top = node
        for part in parents:
            node[part] = {}
            node = node[part]
        node[leaf] = value
        new = _merge(new, top)
    validate(new)
    return new


def validate(cfg: dict[str, Any]) -> None:
    from ..train.methods import METHODS  # the registry is the one list of learning rules

    t = cfg["train"]
    methods = sorted(METHODS)
    checks = [
        (t["method"] in methods, f"train.method {t['method']!r} is not available; allowed: {methods}"),
        (float(t["ff_threshold"]) > 0, f"train.ff_threshold must be > 0, got {t['ff_threshold']}"),
        (
            0.0 <= float(t["pat_mismatch"]) <= 1.0,
            f"train.pat_mismatch must be in [0, 1], got {t['pat_mismatch']}",
        ),
        (
            isinstance(t["pat_twin"], str | dict | list),
            "train.pat_twin must be '' (the simulator itself), a device description (kind, "
            f".toml path or table) or a list of them, one per block; got {t['pat_twin']!r}",
        ),
        (
            float(t["digital_j_per_flop"]) >= 0,
            f"train.digital_j_per_flop must be >= 0, got {t['digital_j_per_flop']}",
        ),
        (int(t["epochs"]) >= 1, f"train.epochs must be >= 1, got {t['epochs']}"),
        (int(t["inner_steps"]) >= 1, f"train.inner_steps must be >= 1, got {t['inner_steps']}"),
        (float(t["lr"]) > 0, f"train.lr must be > 0, got {t['lr']}"),
        (int(t["batch_size"]) >= 0, f"train.batch_size must be >= 0, got {t['batch_size']}"),
        (
            0.0 <= float(t["average"]) < 1.0,
            "train.average (the per-epoch decay of the weight average used for evaluation) "
            f"must be in [0, 1), 0 = off; got {t['average']}",
        ),
        (int(t["eval_every"]) >= 1, f"train.eval_every must be >= 1, got {t['eval_every']}"),
        (
            t["readout"] in READOUTS,
            f"train.readout must be one of {', '.join(READOUTS)}, got {t['readout']!r}",
        ),
        (
            t["label_amplitude"] == "batch_max" or isinstance(t["label_amplitude"], int | float),
            f"train.label_amplitude must be a number or 'batch_max', got {t['label_amplitude']!r}",
        ),
        (
            len(cfg["network"]["hidden"]) >= 1
            and all(int(h) >= 1 for h in cfg["network"]["hidden"]),
            f"network.hidden must list >= 1 positive widths, got {cfg['network']['hidden']}",
        ),
        ("kind" in cfg["device"], "device.kind is required, e.g. 'sim:optical'"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
