"""Experiment configs are typed data: a tree of dataclasses, read from and written to TOML.

A config names a data set, a device description, a network and a learning rule. Presets are
TOML files merged onto the defaults declared here; ``--set section.key=value`` merges one
more layer. Every layer goes through the same check: an unknown key or a value of the wrong
type is a one-line ``ValueError`` naming the key and what is allowed, before anything runs.
The ``[train]`` section extends the local rules' own settings class, so a rule's parameter
has one name, one type and one default everywhere. ``[data]`` and ``[device]`` stay
free-form tables: the data set's loader and the device kind check their own keys.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import tomli_w

from ..train.phyll import LocalRuleSettings

READOUTS = ("goodness", "linear", "both")
"""Prediction: the paper's goodness per candidate label, a neutral-label linear read-out
(one device pass per sample instead of one per class), or both side by side."""


@dataclass
class NetworkConfig:
    """The digital side of each block: its width, and whether the block input skips the device."""

    hidden: list[int] = field(default_factory=lambda: [200, 200])
    """Output width of each block's Linear; one block per entry."""
    skip: bool = True
    """Concatenate the block's input to the device output before the Linear."""


@dataclass(kw_only=True)
class TrainConfig(LocalRuleSettings):
    """``[train]``: the learning rule, its schedule and how a run is evaluated."""

    method: str = "phyll"
    """The learning rule: phyll, ff, pat or backprop (``physnn.train.methods.METHODS``)."""
    epochs: int = 60
    eval_every: int = 5
    """Evaluate every this many epochs (and always after the last)."""
    eval_train: bool = True
    """Also measure training accuracy at each evaluation (costs device passes)."""
    ff_threshold: float = 2.0
    """Forward-forward's goodness threshold (``ff`` only)."""
    pat_twin: str | dict[str, Any] | list[Any] = ""
    """PAT's twin: '' = the simulator itself; a device description; or one per block."""
    pat_mismatch: float = 0.0
    """PAT with the simulator twin: weight of a twin built from another seed (0 = exact)."""
    digital_j_per_flop: float = 1e-11
    """Assumed digital energy per FLOP for the ledger."""
    readout: str = "goodness"
    """``goodness``, ``linear`` or ``both`` (see ``READOUTS``)."""
    average: float = 0.0
    """Per-epoch decay of the weight average used for evaluation; 0 = off."""


@dataclass
class ContinualConfig:
    """``[continual]``: training while the device changes (``physnn continual``)."""

    eval_every: int = 1
    monitor_window: int = 3
    """Evaluations the drop monitor averages as its reference."""
    drop_points: float = 10.0
    """A drop of more than this many accuracy points raises an alarm."""
    recover_points: float = 2.0
    """Back within this many points of the reference counts as recovered."""
    freeze_at: int = 0
    """Epoch after which a ``:frozen`` arm stops training; 0 = the onset of the first change."""
    track_twin: bool = False
    """Advance PAT's twin with the device (an oracle twin) instead of keeping it stale."""
    tail_fraction: float = 0.25
    """Fraction of the epochs after the onset whose mean accuracy is the tail figure."""


@dataclass
class ExperimentConfig:
    """A whole experiment; what a preset file, a run log and ``physnn train`` hold."""

    name: str = "experiment"
    seed: int = 0
    data: dict[str, Any] = field(default_factory=lambda: {"name": "digits"})
    """Free-form: ``name`` picks the loader, the other keys are its arguments."""
    device: dict[str, Any] = field(default_factory=lambda: {"kind": "sim:optical"})
    """Free-form: a device description (``kind`` and the kind's parameters)."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (what run logs store as JSON)."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as a TOML document that ``load_config`` reads back unchanged."""
        return tomli_w.dumps(self.to_dict())

    def merged(self, data: dict[str, Any]) -> ExperimentConfig:
        """A new config with ``data`` (nested tables, as in TOML) merged on top, checked."""
        return _from_dict(_merge(self.to_dict(), data, ExperimentConfig, ""))

    def __post_init__(self) -> None:
        _check_values(self)


# -- reading: types -------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return "a list" if arg is Any else f"a list of {plural.get(arg, _type_name(arg))}"
    if origin is dict or tp is dict:
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _fits(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as TOML gives it) has type ``tp``; an integer fits a float."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_fits(v, arg) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, tp)


def _convert(value: Any, tp: Any) -> Any:
    """An integer where a plain float is declared becomes that float (lossless: TOML ``1``)."""
    floats = tp is float or (
        typing.get_origin(tp) in (Union, types.UnionType)
        and float in typing.get_args(tp) and int not in typing.get_args(tp)
    )
    if floats and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return copy.deepcopy(value)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _merge(base: dict[str, Any], new: dict[str, Any], cls: type, path: str) -> dict[str, Any]:
    """``new`` merged onto ``base`` (both plain dicts of ``cls``), every key and type checked."""
    if not isinstance(new, dict):
        raise ValueError(f"config {path.rstrip('.') or 'root'} must be a table")
    hints = _hints(cls)
    out = copy.deepcopy(base)
    for key, value in new.items():
        where = f"{path}{key}"
        if key not in hints:
            raise ValueError(f"unknown config key {where!r}; allowed here: {', '.join(sorted(hints))}")
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where!r} must be a table")
            out[key] = _merge(base[key], value, tp, where + ".")
        elif not _fits(value, tp):
            raise ValueError(
                f"config key {where!r} must be {_type_name(tp)}, got {value!r} "
                f"({type(value).__name__})"
            )
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = {**base[key], **copy.deepcopy(value)}  # free-form: merged key by key
        else:
            out[key] = _convert(value, tp)
    return out


def _from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """A config from a complete, already checked plain dict."""
    return ExperimentConfig(
        name=data["name"], seed=data["seed"], data=data["data"], device=data["device"],
        network=NetworkConfig(**data["network"]), train=TrainConfig(**data["train"]),
        continual=ContinualConfig(**data["continual"]),
    )


# -- values ---------------------------------------------------------------------------------


def _check_values(cfg: ExperimentConfig) -> None:
    """The ranges and choices the types cannot say; the first problem, in one line."""
    from ..train.methods import METHODS  # the registry is the one list of learning rules

    t, methods = cfg.train, sorted(METHODS)
    checks = [
        (t.method in methods, f"train.method {t.method!r} is not available; allowed: {methods}"),
        (t.ff_threshold > 0, f"train.ff_threshold must be > 0, got {t.ff_threshold}"),
        (0.0 <= t.pat_mismatch <= 1.0, f"train.pat_mismatch must be in [0, 1], got {t.pat_mismatch}"),
        (t.digital_j_per_flop >= 0,
         f"train.digital_j_per_flop must be >= 0, got {t.digital_j_per_flop}"),
        (t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}"),
        (t.inner_steps >= 1, f"train.inner_steps must be >= 1, got {t.inner_steps}"),
        (t.lr > 0, f"train.lr must be > 0, got {t.lr}"),
        (t.batch_size >= 0, f"train.batch_size must be >= 0, got {t.batch_size}"),
        (
            0.0 <= t.average < 1.0,
            "train.average (the per-epoch decay of the weight average used for evaluation) "
            f"must be in [0, 1), 0 = off; got {t.average}",
        ),
        (t.eval_every >= 1, f"train.eval_every must be >= 1, got {t.eval_every}"),
        (t.readout in READOUTS,
         f"train.readout must be one of {', '.join(READOUTS)}, got {t.readout!r}"),
        (
            not isinstance(t.label_amplitude, str) or t.label_amplitude == "batch_max",
            f"train.label_amplitude must be a number or 'batch_max', got {t.label_amplitude!r}",
        ),
        (
            len(cfg.network.hidden) >= 1 and all(h >= 1 for h in cfg.network.hidden),
            f"network.hidden must list >= 1 positive widths, got {cfg.network.hidden}",
        ),
        ("kind" in cfg.device, "device.kind is required, e.g. 'sim:optical'"),
        (cfg.continual.eval_every >= 1,
         f"continual.eval_every must be >= 1, got {cfg.continual.eval_every}"),
        (0.0 < cfg.continual.tail_fraction <= 1.0,
         f"continual.tail_fraction must be in (0, 1], got {cfg.continual.tail_fraction}"),
        (cfg.continual.freeze_at >= 0,
         f"continual.freeze_at must be >= 0, got {cfg.continual.freeze_at}"),
        ("name" in cfg.data, "data.name is required, e.g. 'digits'"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


# -- the public entry points ----------------------------------------------------------------


def presets() -> list[str]:
    """Names of the built-in presets."""
    folder = resources.files("physnn.experiments") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_text(name: str) -> str:
    """The TOML text of a built-in preset."""
    return (resources.files("physnn.experiments") / "presets" / f"{name}.toml").read_text()


ConfigSource = str | Path | dict[str, Any] | ExperimentConfig
"""A preset name, a TOML path, a nested dict (as TOML gives) or a config."""


def load_config(source: ConfigSource) -> ExperimentConfig:
    """A complete, checked config from a preset name, a TOML path, a dict or a config.

    A dict or a file is merged onto the defaults; a config is checked again (it may have been
    changed in place) and returned as a new object.
    """
    if isinstance(source, ExperimentConfig):
        return _from_dict(_merge(DEFAULTS, source.to_dict(), ExperimentConfig, ""))
    if isinstance(source, dict):
        data = source
    else:
        text = str(source)
        path = Path(text)
        if path.suffix == ".toml" and path.is_file():
            with path.open("rb") as f:
                data = tomllib.load(f)
        elif text in presets():
            data = tomllib.loads(preset_text(text))
        else:
            raise ValueError(
                f"{text!r} is neither a preset nor an existing .toml file; presets: {presets()}"
            )
    return _from_dict(_merge(DEFAULTS, data, ExperimentConfig, ""))


def parse_assignment(item: str) -> dict[str, Any]:
    """``section.key=value`` (the value parsed as TOML, else taken as text) as a nested dict."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects KEY=VALUE (e.g. train.lr=1e-3), got {item!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return nested(key, value)


def nested(key: str, value: Any) -> dict[str, Any]:
    """``"train.lr", 1e-3`` as ``{"train": {"lr": 1e-3}}``, what ``merged`` takes (it checks
    the key)."""
    *parents, leaf = key.strip().split(".")
    top: dict[str, Any] = {}
    node = top
    for part in parents:
        node[part] = {}
        node = node[part]
    node[leaf] = value
    return top


def apply_overrides(cfg: ConfigSource, assignments: list[str]) -> ExperimentConfig:
    """``cfg`` with ``section.key=value`` strings applied in order (what ``--set`` does)."""
    out = load_config(cfg)
    for item in assignments:
        out = out.merged(parse_assignment(item))
    return out


DEFAULTS = ExperimentConfig().to_dict()
"""Every key a config may set, with its default, as plain data."""
