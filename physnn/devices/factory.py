"""One factory builds any device from a description: a name, a dict or a TOML file."""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import Device
from .nonideal import NonIdealDevice

KINDS: dict[str, str] = {
    "sim:optical": "physnn.sim.optical:OpticalCavity",
    "sim:acoustic": "physnn.sim.acoustic:AcousticCavity",
    "sim:microwave": "physnn.sim.microwave:MetasurfaceCavity",
    "surrogate": "physnn.devices.surrogate:Surrogate",
    "serial": "physnn.devices.serial_link:SerialDevice",
}
"""Device kinds and the class that implements each (imported on first use)."""


def _load_description(desc: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(desc, Mapping):
        return dict(desc)
    text = str(desc)
    if text in KINDS:
        return {"kind": text}
    path = Path(text)
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(f"device description {path} does not exist")
        with path.open("rb") as f:
            data = tomllib.load(f)
        return dict(data.get("device", data))
    raise ValueError(f"unknown device {text!r}; allowed: {sorted(KINDS)} or a .toml description")


def make_device(desc: str | Path | Mapping[str, Any], **overrides: Any) -> Device:
    """Build a device, e.g. ``make_device("sim:optical")`` or ``make_device({"kind": ...})``.

    Keys ``inputs`` and ``outputs`` (lists of non-idealities) wrap the device in a
    :class:`~physnn.devices.nonideal.NonIdealDevice`; every other key goes to the class.
    """
    d = _load_description(desc)
    d.update(overrides)
    kind = d.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"unknown device kind {kind!r}; allowed: {sorted(KINDS)}")
    inputs, outputs = d.pop("inputs", None), d.pop("outputs", None)
    module, cls_name = KINDS[kind].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    try:
        dev = cls(**d)
    except TypeError as e:
        raise ValueError(f"bad parameters for device {kind!r}: {e}") from None
    if inputs or outputs:
        dev = NonIdealDevice(dev, inputs=inputs, outputs=outputs)
    return dev
