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
import hashlib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import tomli_w

from ..train.phyll import LocalRuleSettings
from .config_checks import check_values


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
    """The learning rule: phyll, phyll-unsupervised, ff, pat or backprop
    (``physnn.train.methods.METHODS``)."""
    negatives: str = "auto"
    """phyll-unsupervised's label-free negatives: auto (hybrid for images, else shuffle),
    hybrid, shuffle or mix (``physnn.train.negatives``)."""
    directions: int = 1
    """phyll-unsupervised: fixed goodness directions per block (goodness = the best cosine
    over them); 1 = the block's one ``zeta``, as supervised PhyLL."""
    ensemble: int = 1
    """phyll and ff: this many networks on the same devices, each with its own digital
    weights, a label scored by their summed goodness (M times the device queries;
    ``physnn.train.ensemble``); 1 = one network."""
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
    train_device: bool = False
    """backprop only: also train each block's device's own tensors (``Device.trainable_tensors``:
    ``sim:acoustic-wave``'s wave speed in its design region), wavetorch's way."""
    device_lr: float = 1.0
    """Adam's step size for those device tensors, in their units (m/s for a wave speed)."""
    digital_j_per_flop: float = 1e-11
    """Assumed digital energy per FLOP for the ledger."""
    readout: str = "goodness"
    """``goodness``, ``linear``, ``both``, ``weighted`` or ``weighted-or-sum`` (see
    ``config_checks.READOUTS``)."""
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
        check_values(self)


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


def _convert(value: Any, tp: Any, where: str) -> Any:
    """An integer where a plain float is declared becomes that float (lossless: TOML ``1``);
    one no float holds exactly (beyond 2**53, or beyond a float's range) is refused, not
    rounded or overflowed."""
    floats = tp is float or (
        typing.get_origin(tp) in (Union, types.UnionType)
        and float in typing.get_args(tp) and int not in typing.get_args(tp)
    )
    if floats and isinstance(value, int) and not isinstance(value, bool):
        try:
            exact = float(value) == value
        except OverflowError:
            exact = False
        if not exact:
            raise ValueError(
                f"config key {where!r} must be a number a float holds exactly, got the integer "
                f"{value!r}; write it as a float (e.g. 1e20) if a rounded value is meant"
            )
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
            out[key] = _convert(value, tp, where)
    return out


def _from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """A config from a complete, already checked plain dict."""
    return ExperimentConfig(
        name=data["name"], seed=data["seed"], data=data["data"], device=data["device"],
        network=NetworkConfig(**data["network"]), train=TrainConfig(**data["train"]),
        continual=ContinualConfig(**data["continual"]),
    )


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


def _read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; a file that is not UTF-8 or not TOML is one line naming the file
    and the line and column of the problem, not a traceback."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        raise ValueError(
            f"config {path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line}, "
            f"column {column} cannot be decoded; save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config {path} is not valid TOML: {e}") from None


def base_source(value: Any, folder: Path, where: str) -> str:
    """A ``base``: a preset name, or a config file (relative to ``folder``, the folder of the
    file that names it) as an absolute path; anything else is refused in one line."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: a base must be a preset name or a .toml path, got {value!r}")
    if value in presets():
        return value
    path = Path(value) if Path(value).is_absolute() else folder / value
    if path.suffix == ".toml" and path.is_file():
        return str(path.resolve())
    raise ValueError(f"{where}: base {value!r} is neither a preset nor an existing .toml file; "
                     f"presets: {', '.join(presets())}")


def _source_data(text: str) -> tuple[dict[str, Any], Path, str]:
    """The tables of a preset or a config file, the folder its relative ``base`` is in, and
    its name in a chain of bases (a file's absolute path)."""
    path = Path(text)
    if path.suffix == ".toml" and path.is_file():
        return _read_toml(path), path.parent, str(path.resolve())
    if text in presets():
        return tomllib.loads(preset_text(text)), Path.cwd(), text
    raise ValueError(f"{text!r} is neither a preset nor an existing .toml file; presets: {presets()}")


def _resolved(data: dict[str, Any], folder: Path, chain: tuple[str, ...]) -> dict[str, Any]:
    """``data`` merged onto its ``base`` (itself resolved first), or onto the defaults.

    A preset or file that names a ``base`` lists only what it changes; the result is the
    complete config, so a run log never holds a ``base``.
    """
    if "base" not in data:
        return _merge(DEFAULTS, data, ExperimentConfig, "")
    own = {k: v for k, v in data.items() if k != "base"}
    where = f"config {chain[-1]!r}" if chain else "config"
    base = base_source(data["base"], folder, where)
    if base in chain:
        raise ValueError(f"config bases form a loop: {' -> '.join((*chain, base))}")
    under, under_folder, key = _source_data(base)
    return _merge(_resolved(under, under_folder, (*chain, key)), own, ExperimentConfig, "")


def load_config(source: ConfigSource) -> ExperimentConfig:
    """A complete, checked config from a preset name, a TOML path, a dict or a config.

    A dict or a file is merged onto its ``base`` (a preset or another file) if it names one,
    else onto the defaults; a config is checked again (it may have been changed in place) and
    returned as a new object.
    """
    if isinstance(source, ExperimentConfig):
        return _from_dict(_merge(DEFAULTS, source.to_dict(), ExperimentConfig, ""))
    if isinstance(source, dict):
        return _from_dict(_resolved(source, Path.cwd(), ()))
    data, folder, key = _source_data(str(source))
    return _from_dict(_resolved(data, folder, (key,)))


def parse_assignment(item: str) -> dict[str, Any]:
    """``section.key=value`` (the value parsed as TOML, else taken as text) as a nested dict."""
    key, sep, raw = item.partition("=")
    if not sep or not all(part.strip() for part in key.split(".")):
        raise ValueError(f"--set expects KEY=VALUE (e.g. train.lr=1e-3), got {item!r}")
    try:
        doc = tomllib.loads(f"v = {raw}")
        value = doc["v"] if list(doc) == ["v"] else raw  # '1\nx = 2' is text, not 1
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


LABELLED_SECTIONS = ("device", "data")
"""Sections whose overrides change what an experiment is (its physics or its data): a run
with such an override is written under a name that says so (``run_label``)."""


def run_label(name: str, assignments: list[str], label: str | None = None) -> str:
    """The folder name of a command's runs: ``label`` if given, else the config's ``name``
    with a suffix naming every ``device``/``data`` override, so that two different
    experiments never share a folder (and resume each other's logs) by accident:
    ``vowels-microwave`` + ``--set data.subset=momeni2023`` -> ``vowels-microwave+subset=momeni2023``.
    A path value contributes its file name; a long suffix is shortened with a digest.
    """
    if label is not None:
        if not label.strip() or any(c in label for c in "/\\\0") or label in (".", ".."):
            raise ValueError(f"--name must be a plain folder name, got {label!r}")
        return label
    parts = []
    for item in assignments:
        key, _, raw = item.partition("=")
        section, _, leaf = key.strip().partition(".")
        if section not in LABELLED_SECTIONS:
            continue
        value = raw.strip().strip("'\"")
        if "/" in value or "\\" in value:
            value = Path(value).name or value
        text = f"{leaf or section}={value}".replace(", ", ",")
        text = "".join(c for c in text if c not in "[]{}'\" ")  # [6, 6] -> 6,6
        parts.append("".join(c if c.isalnum() or c in "._-=," else "-" for c in text))
    if not parts:
        return name
    suffix = ",".join(parts)
    if len(suffix) > 60:
        digest = hashlib.sha1(suffix.encode()).hexdigest()[:8]
        suffix = f"{suffix[:48]}~{digest}"
    return f"{name}+{suffix}"


def same_config(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a run log's ``stored`` config is the run ``current`` describes (both
    ``ExperimentConfig.to_dict()``). The stored one is read through today's schema first: a
    key added since stands at its default, which is what the older run did (a new key's
    default keeps the old behaviour, number for number), so a run logged before the key
    existed still resumes and still counts as finished."""
    if stored == current:
        return True
    try:
        return load_config(stored).to_dict() == current
    except (ValueError, TypeError):  # a key removed since, or a value no longer allowed
        return False


def apply_overrides(cfg: ConfigSource, assignments: list[str]) -> ExperimentConfig:
    """``cfg`` with ``section.key=value`` strings applied in order (what ``--set`` does).

    The config is checked once, with every assignment in place, so settings that only make
    sense together (``train.method`` and ``train.readout``) can be given in any order.
    """
    out = load_config(cfg)
    changes: dict[str, Any] = {}
    for item in assignments:
        _update_nested(changes, parse_assignment(item))
    return out.merged(changes) if changes else out


def _update_nested(into: dict[str, Any], new: dict[str, Any]) -> None:
    """Deep update of plain nested dicts: a later value of the same key wins."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _update_nested(into[key], value)
        else:
            into[key] = value


DEFAULTS = ExperimentConfig().to_dict()
"""Every key a config may set, with its default, as plain data."""
