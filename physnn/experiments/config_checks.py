"""What a config's types cannot say: every numeric key's range and the choices that only
make sense together, each problem refused in one line before anything runs.

``physnn.experiments.config`` reads and merges configs and calls ``check_values`` on every
one it builds; the ranges live here so that the reading and the rules stay small apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ExperimentConfig, TrainConfig

WEIGHTED_READOUTS = ("weighted", "weighted-or-sum")
"""Goodness with block weights fitted on the training split (``phyll`` and ``ff``); the
second falls back to the plain sum when the weights do not pass cross-validation there."""

READOUTS = ("goodness", "linear", "both", *WEIGHTED_READOUTS)
"""Prediction: the paper's goodness per candidate label, a neutral-label linear read-out
(one device pass per sample instead of one per class), both side by side, or a weighted
goodness (``WEIGHTED_READOUTS``)."""

INT64_MAX = 2**63 - 1
"""TOML's largest integer: an integer key never holds more, whatever its range says."""


@dataclass(frozen=True)
class Allowed:
    """The values one numeric config key may take: a finite number between ``lo`` and ``hi``.

    NaN and infinities are never allowed (they reach the devices as NaN inputs or train
    nothing), integers never exceed TOML's 64 bits, and ``why`` says what the key means in
    the error, so a user sees why the range is what it is.
    """

    lo: float
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""
    alternative: str = ""
    """A non-numeric value the key also takes (checked elsewhere), named in the error."""

    def allows(self, value: float) -> bool:
        """Whether ``value`` (an int or a float, as the type check let through) is allowed."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def text(self) -> str:
        """The range as a user reads it: ``> 0``, ``>= 1``, ``in [0, 1)``."""
        if self.hi == math.inf:
            text = f"{'>' if self.lo_open else '>='} {self.lo}"
        else:
            text = f"in {'(' if self.lo_open else '['}{self.lo}, {self.hi}" \
                f"{')' if self.hi_open else ']'}"
        return f"{text} or {self.alternative}" if self.alternative else text

    def error(self, key: str, value: float) -> str:
        """The one-line message for ``key = value`` outside the range."""
        where = f"{key} ({self.why})" if self.why else key
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where} must be a finite number {self.text()}, got {value!r}"
        if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
            return f"{where} must be an integer {self.text()} within TOML's 64 bits, got {value!r}"
        return f"{where} must be {self.text()}, got {value!r}"


_POSITIVE, _COUNT = Allowed(0, lo_open=True), Allowed(1)
RANGES: dict[str, Allowed] = {
    "seed": Allowed(0, 2**32 - 1, why="seeds the data split, the devices and the reference fit"),
    "network.hidden": Allowed(1, why="each block's output width"),
    "train.lr": _POSITIVE,
    "train.inner_steps": _COUNT,
    "train.alpha": Allowed(
        0, lo_open=True, why="the loss's sharpness; <= 0 rewards the wrong label or nothing"),
    "train.label_amplitude": Allowed(
        0, lo_open=True, why="the label overlay's amplitude", alternative="'batch_max'"),
    "train.batch_size": Allowed(0, why="0 = full batch"),
    "train.epochs": _COUNT,
    "train.eval_every": _COUNT,
    "train.ff_threshold": _POSITIVE,
    "train.directions": _COUNT,
    "train.ensemble": Allowed(1, why="networks on the same devices; 1 = one network"),
    "train.negatives_per_positive": Allowed(
        1, why="distinct wrong labels per sample; at most n_classes - 1, checked with the data"),
    "train.augment_size": Allowed(
        0, why="pixels (shift) or relative noise (jitter); 0 = the augmentation's default"),
    "train.pat_mismatch": Allowed(0, 1),
    "train.device_lr": Allowed(
        0, lo_open=True, why="Adam's step for the device's own tensors, in their units"),
    "train.digital_j_per_flop": Allowed(0),
    "train.average": Allowed(
        0, 1, hi_open=True,
        why="the per-epoch decay of the weight average used for evaluation; 0 = off"),
    "continual.eval_every": _COUNT,
    "continual.monitor_window": _COUNT,
    "continual.drop_points": Allowed(0, 100, lo_open=True, why="accuracy points"),
    "continual.recover_points": Allowed(0, 100, why="accuracy points"),
    "continual.freeze_at": Allowed(0, why="0 = the onset of the first change"),
    "continual.tail_fraction": Allowed(0, 1, lo_open=True),
}
"""Every numeric key of every config section and its range: the one place they are declared
(``tests/test_config.py`` checks that no numeric key is missing). A list's range applies to
each entry; a number-or-text key's to its numbers."""


def _check_ranges(cfg: ExperimentConfig) -> None:
    """Every key of ``RANGES`` finite and in range; the first problem, in one line."""
    for key, allowed in RANGES.items():
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        items = list(enumerate(node)) if isinstance(node, list) else [(None, node)]
        for i, value in items:
            if isinstance(value, int | float) and not allowed.allows(value):
                raise ValueError(allowed.error(key if i is None else f"{key}[{i}]", value))


LABELLED_NEGATIVES = ("phyll", "ff")
"""The rules whose negatives carry a wrong label (``train.wrong_label``,
``train.negatives_per_positive``)."""
AUGMENTED = ("phyll", "ff", "phyll-unsupervised")
"""The rules that augment their training batches (``train.augment``): the local rules."""


def _check_negatives_and_augment(t: TrainConfig) -> None:
    """``train.wrong_label``, ``negatives_per_positive``, ``augment`` and ``augment_size``:
    known values, and only for the rules they apply to; the first problem, in one line."""
    from ..train.augment import check_augment
    from ..train.phyll import check_wrong_label

    check_wrong_label(t.wrong_label)
    check_augment(t.augment)
    k, size = t.negatives_per_positive, t.augment_size
    checks = [
        (t.wrong_label == "random" or t.method in LABELLED_NEGATIVES,
         f"train.wrong_label = {t.wrong_label!r} applies to train.method "
         f"{' or '.join(LABELLED_NEGATIVES)} (negatives with a wrong label), not {t.method!r}; "
         "leave it at 'random'"),
        (k == 1 or t.method in LABELLED_NEGATIVES,
         f"train.negatives_per_positive = {k} applies to train.method "
         f"{' or '.join(LABELLED_NEGATIVES)} (negatives with a wrong label), not {t.method!r}; "
         "leave it at 1"),
        (t.augment == "none" or t.method in AUGMENTED,
         f"train.augment = {t.augment!r} applies to train.method {', '.join(AUGMENTED)}, "
         f"not {t.method!r}; leave it at 'none'"),
        (size == 0 or t.augment != "none",
         f"train.augment_size = {size:g} needs train.augment = 'shift' or 'jitter' "
         "(it is 'none'); leave it at 0"),
        (t.augment != "shift" or float(size).is_integer(),
         f"train.augment_size for train.augment = 'shift' must be a whole number of pixels, "
         f"got {size:g}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


def check_values(cfg: ExperimentConfig) -> None:
    """The ranges and choices the types cannot say; the first problem, in one line."""
    from ..train.ensemble import GOODNESS_RULES
    from ..train.methods import METHODS  # the registry is the one list of learning rules
    from ..train.negatives import NEGATIVES

    _check_ranges(cfg)
    _check_negatives_and_augment(cfg.train)
    t, methods = cfg.train, sorted(METHODS)
    checks = [
        (t.method in methods, f"train.method {t.method!r} is not available; allowed: {methods}"),
        (t.readout in READOUTS,
         f"train.readout must be one of {', '.join(READOUTS)}, got {t.readout!r}"),
        (t.negatives in ("auto", *NEGATIVES),
         f"train.negatives must be one of auto, {', '.join(NEGATIVES)}, got {t.negatives!r}"),
        (not t.train_device or t.method == "backprop",
         f"train.train_device = true needs train.method = 'backprop' (got {t.method!r}): only "
         "in-silico backprop differentiates the device's own tensors"),
        (t.ensemble == 1 or t.method in GOODNESS_RULES,
         f"train.ensemble = {t.ensemble} applies to train.method {' or '.join(GOODNESS_RULES)} "
         f"(scored by goodness), not {t.method!r}; leave it at 1"),
        (t.ensemble == 1 or t.readout in ("goodness", *WEIGHTED_READOUTS),
         f"train.ensemble = {t.ensemble} is scored by the members' summed goodness; set "
         f"train.readout = 'goodness', 'weighted' or 'weighted-or-sum' (got {t.readout!r})"),
        (t.readout not in WEIGHTED_READOUTS or t.method in GOODNESS_RULES,
         f"train.readout = {t.readout!r} weighs the blocks' goodness: train.method "
         f"{' or '.join(GOODNESS_RULES)}, not {t.method!r}"),
        (t.method != "phyll-unsupervised" or t.readout == "linear",
         "train.method 'phyll-unsupervised' is scored by the linear read-out only; set "
         f"train.readout = 'linear' (got {t.readout!r})"),
        (
            not isinstance(t.label_amplitude, str) or t.label_amplitude == "batch_max",
            f"train.label_amplitude must be a number or 'batch_max', got {t.label_amplitude!r}",
        ),
        (len(cfg.network.hidden) >= 1,
         f"network.hidden must list >= 1 positive widths, got {cfg.network.hidden}"),
        ("kind" in cfg.device, "device.kind is required, e.g. 'sim:optical'"),
        ("name" in cfg.data, "data.name is required, e.g. 'digits'"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
