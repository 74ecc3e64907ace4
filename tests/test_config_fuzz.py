"""Fuzzing the config loader (issue 18): random keys, types and values through ``--set``
(``parse_assignment`` / ``apply_overrides``), through ``load_config`` of a dict and of a TOML
file. Every outcome is either a checked config (it reloads unchanged, every typed key holds
its declared type and every numeric key is finite and in its declared range) or a one-line
``ValueError`` naming the key; never another exception, never a value silently changed.

Derandomized and bounded, so CI sees the same examples every time in a few seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import string
import tomllib
import typing
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from physnn.experiments.config import (
    DEFAULTS,
    ExperimentConfig,
    apply_overrides,
    load_config,
    parse_assignment,
)
from physnn.experiments.config_checks import RANGES

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
BASE = load_config("digits-optical")


def _dotted(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += _dotted(value, f"{prefix}{key}.")
    return out


REAL_KEYS = sorted(set(_dotted(DEFAULTS)) | {"data.n_train", "device.camera_shape"})
JUNK_KEYS = st.text(string.ascii_letters + string.digits + "._- ", min_size=1, max_size=12)
KEYS = st.one_of(
    st.sampled_from(REAL_KEYS),
    st.builds(lambda k, j: f"{k}.{j}", st.sampled_from(REAL_KEYS), JUNK_KEYS),
    JUNK_KEYS,
)
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=8)
SCALARS = st.one_of(
    st.integers(),  # huge ones too: beyond 64 bits and beyond a float's range
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e-320, 1e308, 2.0**53 + 2, 4294967295, 2**53 + 1,
                     2**63, -(2**63) - 1, 10**400]),
    st.booleans(),
    TEXT,
    st.sampled_from(["batch_max", "phyll", "ff", "linear", "digits", "sim:optical", "1e-3"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.sampled_from([k.rpartition(".")[2] for k in REAL_KEYS]) | TEXT, kids,
                      max_size=3),
    max_leaves=6,
)


def _inline(value: Any) -> str:
    """``value`` as a TOML inline value (what a user types after ``--set key=``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_inline(v)}"
                           for k, v in value.items()) + "}"


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and a float never equal to a bool or an int's type."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _declared(key: str) -> tuple[str, Any]:
    """The part of ``key`` a message must name (up to its first unknown part or typed leaf)
    and that leaf's declared type (None for a section or an unknown key)."""
    cls: Any = ExperimentConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return ".".join(parts[: i + 1]), None
        if not dataclasses.is_dataclass(hints[part]):
            return ".".join(parts[: i + 1]), hints[part]
        cls = hints[part]
    return key, None


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _check_config(cfg: ExperimentConfig) -> None:
    """A checked config: it reloads unchanged, through a dict and through TOML, and every
    numeric key is finite and in its declared range."""
    assert isinstance(cfg, ExperimentConfig)
    data = cfg.to_dict()
    assert _same(load_config(data).to_dict(), data)
    assert _same(load_config(tomllib.loads(cfg.to_toml())).to_dict(), data)
    for key, allowed in RANGES.items():
        value = _lookup(data, key)
        for v in value if isinstance(value, list) else [value]:
            if key == "train.label_amplitude" and isinstance(v, str):
                assert v == "batch_max"
                continue
            assert isinstance(v, int | float) and not isinstance(v, bool), (key, v)
            assert allowed.allows(v) and (isinstance(v, int) or math.isfinite(v)), (key, v)


def _names(msg: str, keys: list[str]) -> bool:
    """Whether a one-line message names one of ``keys`` (as given or as ``repr`` shows it)."""
    culprits = [_declared(k)[0] for k in keys]
    return any(c in msg or repr(c)[1:-1] in msg for c in culprits)


def _outcome(make: Any, key: str, value: Any = None, *, given: bool = False,
             others: tuple[str, ...] = ()) -> None:
    """Run ``make``: a checked config holding ``value`` unchanged at ``key`` (when ``given``)
    or a one-line ValueError naming the key (or one of ``others``, set with it)."""
    tp = _declared(key)[1]
    try:
        cfg = make()
    except ValueError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        assert _names(msg, [key, *others]), (key, others, msg)
        event("refused")
        return
    event("accepted")
    _check_config(cfg)
    if given and tp is not None and not isinstance(value, dict):  # a typed leaf
        stored = _lookup(cfg.to_dict(), key)
        widened = type(value) is int and type(stored) is float and stored == value
        assert widened or _same(stored, value), (key, value, stored)  # nothing coerced


@FUZZ
@given(KEYS, VALUES)
def test_set_assignments(key: str, value: Any) -> None:
    item = f"{key}={_inline(value)}"
    try:
        parsed = parse_assignment(item)
    except ValueError as e:  # an empty key or an empty part of one
        assert "\n" not in str(e) and repr(item) in str(e)
        return
    assert _same(_lookup(parsed, key.strip()), value)  # the TOML value read back exactly
    _outcome(lambda: apply_overrides(BASE, [item]), key.strip(), value, given=True)


@FUZZ
@given(st.builds("{}={}".format, KEYS, st.text(string.printable, max_size=20))
       | st.text(string.printable, max_size=30))
def test_raw_set_items(item: str) -> None:
    try:
        parse_assignment(item)
    except ValueError as e:
        assert "\n" not in str(e) and repr(item) in str(e)
        return
    _outcome(lambda: apply_overrides(BASE, [item]), item.partition("=")[0].strip())


@FUZZ
@given(KEYS, VALUES)
def test_dicts(key: str, value: Any) -> None:
    doc: Any = value
    for part in reversed(key.split(".")):  # as given: nested() would strip the spaces
        doc = {part: doc}
    _outcome(lambda: load_config(doc), key, value, given=True)


@FUZZ
@given(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3))
def test_toml_files(tmp_path_factory: Any, items: list[tuple[str, Any]]) -> None:
    doc: dict[str, Any] = {}
    for key, value in items:  # later keys replace what an earlier one put at their place
        node, (*parents, leaf) = doc, key.split(".")
        for part in parents:
            node = node[part] if isinstance(node.get(part), dict) else node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = value
    path = Path(tmp_path_factory.getbasetemp()) / "fuzz.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    keys = [k for k, _ in items]
    _outcome(lambda: load_config(path), keys[0], others=tuple(keys))


@FUZZ
@given(st.binary(max_size=40) | st.text(string.printable, max_size=40).map(str.encode))
def test_arbitrary_file_bytes(tmp_path_factory: Any, raw: bytes) -> None:
    path = Path(tmp_path_factory.getbasetemp()) / "raw.toml"
    path.write_bytes(raw)
    try:
        _check_config(load_config(path))
    except ValueError as e:
        assert "\n" not in str(e) and str(e).strip(), str(e)
