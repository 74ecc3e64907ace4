"""Device kinds and the one factory that builds any device from a description.

The registry knows no implementation by name: kinds join it, either through the
``physnn.devices`` entry-point group (how physnn's own simulators, twins and hardware driver
register, in ``pyproject.toml``, and how a lab's plug-in package adds its instruments) or at
run time with ``register_kind``. So ``physnn.core`` imports nothing above it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .device import Device, whole_number
from .effects import NonIdealDevice

ENTRY_POINT_GROUP = "physnn.devices"
"""Entry-point group of device kinds: ``"sim:optical" = "physnn.sim.optical:OpticalCavity"``."""

DeviceFactory = Callable[..., Device]


class _Kinds(Mapping[str, DeviceFactory]):
    """Registered kinds, name -> factory; entry points are loaded on first access."""

    def __init__(self) -> None:
        self._runtime: dict[str, DeviceFactory] = {}
        self._entry_points: dict[str, Any] | None = None

    def _eps(self) -> dict[str, Any]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._entry_points

    def __getitem__(self, name: str) -> DeviceFactory:
        if name in self._runtime:
            return self._runtime[name]
        ep = self._eps()[name]
        try:
            factory = ep.load()
        except (ImportError, AttributeError) as e:  # stale metadata, a broken plug-in
            raise ValueError(
                f"device kind {name!r} is registered as {ep.value!r}, which cannot be loaded "
                f"({e}); reinstall the package that provides it (for physnn: pip install -e .)"
            ) from None
        self._runtime[name] = factory
        return factory

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._eps()) | set(self._runtime)))

    def __len__(self) -> int:
        return len(set(self._eps()) | set(self._runtime))

    def __contains__(self, name: object) -> bool:
        return name in self._runtime or name in self._eps()

    def register(self, name: str, factory: DeviceFactory, *, replace: bool = False) -> None:
        if not replace and name in self:
            raise ValueError(f"device kind {name!r} is already registered")
        self._runtime[name] = factory


KINDS = _Kinds()
"""Every registered device kind (a read-only mapping kind -> class or factory)."""


def register_kind(name: str, factory: DeviceFactory, *, replace: bool = False) -> None:
    """Make ``kind = name`` build devices with ``factory(**description)``."""
    KINDS.register(name, factory, replace=replace)


def _allowed() -> str:
    names = list(KINDS)
    if not names:
        return "none registered (is physnn installed? run pip install -e .)"
    return ", ".join(names)


def load_description(desc: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A device description as a dict, from a kind name, a dict or a TOML file."""
    if isinstance(desc, Mapping):
        return dict(desc)
    text = str(desc)
    if text in KINDS:
        return {"kind": text}
    path = Path(text)
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
    raise ValueError(f"unknown device {text!r}; allowed: {_allowed()} or a .toml description")


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
