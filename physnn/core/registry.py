"""Device kinds and the one factory that builds any device from a description.

The registry knows no implementation by name: kinds join it, either through the
``physnn.devices`` entry-point group (how physnn's own simulators, twins and hardware driver
register, in ``pyproject.toml``, and how a lab's plug-in package adds its instruments) or at
run time with ``register_kind``. So ``physnn.core`` imports nothing above it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._plugins import EntryPointRegistry
from .device import Device, whole_number
from .effects import NonIdealDevice

ENTRY_POINT_GROUP = "physnn.devices"
"""Entry-point group of device kinds: ``"sim:optical" = "physnn.sim.optical:OpticalCavity"``."""

DeviceFactory = Callable[..., Device]


KINDS: EntryPointRegistry[DeviceFactory] = EntryPointRegistry(ENTRY_POINT_GROUP, "device kind")
"""Every registered device kind (a read-only mapping kind -> class or factory); entry points
are imported on first use, ``KINDS.provider(kind)`` names the package behind one."""


def register_kind(name: str, factory: DeviceFactory, *, replace: bool = False) -> None:
    """Make ``kind = name`` build devices with ``factory(**description)``."""
    KINDS.register(name, factory, replace=replace)


def _allowed() -> str:
    names = list(KINDS)
    if not names:
        return "none registered (is physnn installed? run pip install -e .)"
    return ", ".join(names)


def load_description(desc: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A device description as a dict, from a kind name, a dict, a TOML file or a fitted twin
    (``.pt``: a ``surrogate`` with that path), so every command that takes a device takes a twin."""
    if isinstance(desc, Mapping):
        return dict(desc)
    text = str(desc)
    if text in KINDS:
        return {"kind": text}
    path = Path(text)
    if path.suffix == ".pt":  # a fitted twin from 'physnn fit': a surrogate device
        return {"kind": "surrogate", "path": text}
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(f"device description {path} does not exist")
        raw = path.read_bytes()
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:  # TOML is UTF-8 by definition
            raise ValueError(
                f"device description {path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at "
                f"offset {e.start} (line {raw[:e.start].count(10) + 1}) cannot be decoded; "
                "save it as UTF-8"
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"device description {path} is not valid TOML: {e}") from None
        return dict(data.get("device", data))
    raise ValueError(
        f"unknown device {text!r}; allowed: {_allowed()}, a .toml description or a .pt twin"
    )


def make_device(desc: str | Path | Mapping[str, Any], **overrides: Any) -> Device:
    """Build a device, e.g. ``make_device("sim:optical")`` or ``make_device({"kind": ...})``.

    Keys ``inputs`` and ``outputs`` (lists of non-idealities) wrap the device in a
    ``physnn.core.effects.NonIdealDevice``; every other key goes to the kind's class.
    """
    d = load_description(desc)
    d.update(overrides)
    kind = d.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"unknown device kind {kind!r}; allowed: {_allowed()}")
    inputs, outputs = d.pop("inputs", None), d.pop("outputs", None)
    _check_keys(kind, d)
    try:
        dev = KINDS[kind](**d)
    except TypeError as e:
        raise ValueError(f"bad parameters for device {kind!r}: {e}") from None
    if inputs or outputs:
        dev = NonIdealDevice(dev, inputs=inputs, outputs=outputs)
    return dev


def _check_keys(kind: str, d: Mapping[str, Any]) -> None:
    """What holds for every kind, checked before a kind sees the description: widths are
    whole numbers in range (``n_in = 2.5`` or ``true`` is refused, not truncated) and no
    number is NaN (which passes every ``x < limit`` test a kind might make)."""
    for key in ("n_in", "n_out"):
        if d.get(key) is not None:
            whole_number(f"{kind}: {key}", d[key])
    for key, value in d.items():
        if isinstance(value, float) and value != value:
            raise ValueError(f"{kind}: {key} is NaN; give a number")
