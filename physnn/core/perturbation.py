"""Physical systems that change under you: slow drift and scheduled sudden changes.

A simulator that mixes in ``Perturbable`` accepts ``perturbations`` in its description,
for example::

    [device]
    kind = "sim:optical"
    perturbations = [
      { kind = "drift", sigma = 0.2, rate = 0.0, start = 0 },      # temperature random walk
      { kind = "sudden", at = 40, action = "redraw", fraction = 0.5 },
    ]

Time is counted by the device's own *clock*, in ticks: whoever runs the experiment says how
much lab time passes with ``Perturbable.advance`` (the continual-training loop advances
one tick per epoch). A description without ``perturbations`` gives exactly the device it gave
before: no clock, no extra state, bit-identical outputs.

- ``drift``: a temperature-like offset ``dT`` (kelvin) performs a seeded random walk from tick
  ``start`` on: each tick adds ``rate + sigma * N(0, 1)``. Each substrate maps ``dT`` onto its
  physics with a documented ``coupling`` (speed of sound, resonance frequencies, modal phases;
  see the ``DRIFT`` table of each simulator and docs/perturbations.md).
- ``sudden``: at tick ``at`` the structure changes once (``action``: the substrate's list,
  e.g. re-draw part of the transmission matrix, move or remove a scatterer, flip metasurface
  elements), with the action's own parameters.

Reproducibility: the drift walk and every sudden event draw from their own generators,
seeded from the device seed, so the physics at clock ``t`` is a pure function of
``(description, t)``. A device's ``state_dict`` therefore stores only the clock (and the
temperature, as a check); ``load_state_dict`` rebuilds the pristine structure and replays the
schedule, so a resumed run continues the very same drift.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from .device import DeviceSpec

DRIFT_KEYS = ("sigma", "rate", "start", "coupling")


@dataclass
class Drift:
    """Random walk of a temperature offset ``dT`` (K): ``+= rate + sigma * N(0, 1)`` per tick."""

    sigma: float = 0.0
    """Standard deviation of one tick's step (K per sqrt(tick))."""
    rate: float = 0.0
    """Deterministic trend (K per tick), e.g. a laser or amplifier warming up."""
    start: int = 0
    """First tick that moves (before it the device is stable)."""
    coupling: float | None = None
    """How strongly ``dT`` changes the physics; ``None``: the substrate's default."""

    def describe(self) -> dict[str, Any]:
        """The table this drift was parsed from, so a run's record can rebuild the device."""
        d = {"kind": "drift", "sigma": self.sigma, "rate": self.rate, "start": self.start}
        if self.coupling is not None:
            d["coupling"] = self.coupling
        return d


@dataclass
class Sudden:
    """A one-off structural change at tick ``at`` (``action`` with its ``params``)."""

    at: int
    action: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The table this event was parsed from, so a run's record can rebuild the device."""
        return {"kind": "sudden", "at": self.at, "action": self.action, **self.params}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _tick(value: Any, what: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{what} must be an integer tick >= {lo}, got {value!r}")
    return int(value)


def parse_perturbations(
    specs: Iterable[Mapping[str, Any]] | None,
    device: str,
    actions: Mapping[str, Mapping[str, Any]],
) -> tuple[Drift | None, list[Sudden]]:
    """Validate ``perturbations`` descriptions for a substrate with sudden ``actions``.

    ``actions`` maps each allowed action to its parameters' defaults (the first action is the
    default one). Returns the drift (at most one) and the sudden events sorted by tick.
    """
    drift: Drift | None = None
    events: list[Sudden] = []
    if specs is None:
        return None, []
    if isinstance(specs, Mapping) or isinstance(specs, str):
        raise ValueError(f"{device}: perturbations must be a list of tables, got {specs!r}")
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ValueError(f"{device}: perturbations[{i}] must be a table, got {spec!r}")
        spec = dict(spec)
        kind = spec.pop("kind", None)
        where = f"{device}: perturbations[{i}]"
        if kind == "drift":
            if drift is not None:
                raise ValueError(f"{where}: only one drift per device is allowed")
            unknown = sorted(set(spec) - set(DRIFT_KEYS))
            if unknown:
                raise ValueError(f"{where}: unknown drift key(s) {unknown}; allowed: {list(DRIFT_KEYS)}")
            sigma = _number(spec.get("sigma", 0.0), f"{where}.sigma")
            if sigma < 0:
                raise ValueError(f"{where}.sigma must be >= 0 (K per sqrt(tick)), got {sigma}")
            coupling = spec.get("coupling")
            drift = Drift(
                sigma=sigma,
                rate=_number(spec.get("rate", 0.0), f"{where}.rate"),
                start=_tick(spec.get("start", 0), f"{where}.start", 0),
                coupling=None if coupling is None else _number(coupling, f"{where}.coupling"),
            )
        elif kind == "sudden":
            if "at" not in spec:
                raise ValueError(f"{where}: a sudden change needs 'at' (the tick it happens)")
            at = _tick(spec.pop("at"), f"{where}.at", 1)
            action = spec.pop("action", next(iter(actions)))
            if action not in actions:
                raise ValueError(f"{where}: unknown action {action!r}; allowed: {sorted(actions)}")
            defaults = dict(actions[action])
            unknown = sorted(set(spec) - set(defaults))
            if unknown:
                raise ValueError(
                    f"{where}: unknown key(s) {unknown} for action {action!r}; "
                    f"allowed: {sorted(defaults)}"
                )
            params = {k: spec.get(k, v) for k, v in defaults.items()}
            for k, v in params.items():
                num = _number(v, f"{where}.{k}")
                if isinstance(defaults[k], int) and num != int(num):
                    raise ValueError(f"{where}.{k} must be a whole number, got {v!r}")
                params[k] = type(defaults[k])(num)
            events.append(Sudden(at, action, params))
        else:
            raise ValueError(f"{where}: unknown kind {kind!r}; allowed: 'drift', 'sudden'")
    events.sort(key=lambda e: e.at)
    return drift, events


def event_generator(seed: int, index: int) -> torch.Generator:
    """The generator of sudden event ``index`` of a device with ``seed`` (independent streams)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"sudden{index}".encode()))


class Perturbable:
    """Mixin for a ``physnn.core.device.Device`` whose physics drifts or changes.

    The substrate implements four hooks: ``_perturb_reset()`` (back to the pristine
    structure), ``_perturb_sudden(event, gen)`` (change the structure, return a short text),
    ``_perturb_rebuild(dT, coupling)`` (recompute the physics from the structure and the
    temperature offset) and declares ``SUDDEN_ACTIONS`` (action -> parameter defaults) and
    ``DRIFT_COUPLING`` (default coupling, with its unit in ``DRIFT_UNIT``).
    """

    SUDDEN_ACTIONS: ClassVar[dict[str, dict[str, Any]]] = {}
    DRIFT_COUPLING: ClassVar[float] = 0.0
    DRIFT_UNIT: ClassVar[str] = ""

    # Provided by the Device this class is mixed into (annotations only: no class attribute).
    spec: DeviceSpec
    seed: int
    drift: Drift | None = None
    events: list[Sudden] = []
    clock: int = 0
    """Ticks advanced so far (the device's drift clock)."""
    temperature: float = 0.0
    """Current drift offset dT (K)."""

    def _init_perturbations(self, specs: Iterable[Mapping[str, Any]] | None) -> None:
        self.drift, self.events = parse_perturbations(specs, self.spec.name, self.SUDDEN_ACTIONS)
        self.clock, self.temperature = 0, 0.0
        self.event_log: list[dict[str, Any]] = []
        self._walk = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(b"drift"))

    @property
    def perturbed(self) -> bool:
        """True when this device has a drift or a sudden change configured."""
        return self.drift is not None or bool(self.events)

    @property
    def coupling(self) -> float:
        """The drift's own coupling when its description sets one, else the substrate's default."""
        if self.drift is not None and self.drift.coupling is not None:
            return self.drift.coupling
        return self.DRIFT_COUPLING

    def describe_perturbations(self) -> list[dict[str, Any]]:
        """The ``perturbations`` list as configured, for the device's description and run records."""
        out = [self.drift.describe()] if self.drift is not None else []
        return out + [e.describe() for e in self.events]

    def advance(self, ticks: int = 1) -> list[dict[str, Any]]:
        """Let ``ticks`` of lab time pass: drift the temperature, fire due sudden changes.

        Returns the sudden events that fired (tick, action, what changed). A device without
        perturbations only counts the ticks.
        """
        ticks = _tick(ticks, "ticks", 0)
        fired: list[dict[str, Any]] = []
        changed = False
        for _ in range(ticks):
            self.clock += 1
            d = self.drift
            if d is not None and self.clock > d.start:
                step = float(torch.randn((), generator=self._walk, dtype=torch.float64))
                self.temperature += d.rate + d.sigma * step
                changed = changed or d.rate != 0 or d.sigma != 0
            for i, ev in enumerate(self.events):
                if ev.at == self.clock:
                    what = self._perturb_sudden(ev, event_generator(self.seed, i))
                    entry = {"tick": self.clock, "action": ev.action, "what": what}
                    self.event_log.append(entry)
                    fired.append(entry)
                    changed = True
        if changed:
            self._perturb_rebuild(self.temperature, self.coupling)
        return fired

    def reset_perturbations(self) -> None:
        """Back to clock 0: the pristine structure at the reference temperature."""
        self.clock, self.temperature = 0, 0.0
        self.event_log = []
        self._walk = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(b"drift"))
        self._perturb_reset()
        self._perturb_rebuild(0.0, self.coupling)

    # -- checkpoints: the clock is the state; the physics is replayed from the seed -----------
    def state_dict(self) -> dict[str, Any]:
        """The device's state plus the clock: the perturbed physics is replayed from it on load."""
        state = super().state_dict()  # type: ignore[misc]
        if self.perturbed:
            state["perturbation"] = {"clock": self.clock, "temperature": self.temperature}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay the schedule to the saved tick (a temperature mismatch: the description changed)."""
        super().load_state_dict(state)  # type: ignore[misc]
        p = state.get("perturbation")
        if p is None or not self.perturbed:
            return
        if self.clock != 0 or self.event_log:
            self.reset_perturbations()
        self.advance(int(p["clock"]))
        if not math.isclose(self.temperature, float(p["temperature"]), rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(
                f"{self.spec.name}: replaying the perturbation schedule to tick {p['clock']} gave "
                f"dT = {self.temperature:.6g} K, the checkpoint says {p['temperature']:.6g} K: "
                "the device description changed since the checkpoint was written"
            )

    # -- substrate hooks -------------------------------------------------------------------
    def _perturb_reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _perturb_sudden(self, event: Sudden, gen: torch.Generator) -> str:  # pragma: no cover
        raise NotImplementedError

    def _perturb_rebuild(self, delta_k: float, coupling: float) -> None:  # pragma: no cover
        raise NotImplementedError


def perturbable(device: Any) -> Perturbable | None:
    """The ``Perturbable`` simulator inside ``device`` (unwrapping non-ideality wrappers),
    or None when there is none."""
    while device is not None:
        if isinstance(device, Perturbable):
            return device
        device = getattr(device, "inner", None)
    return None


def advance(device: Any, ticks: int = 1) -> list[dict[str, Any]]:
    """Advance the drift clock of ``device`` (any wrapper around a perturbable simulator).

    Devices without a clock (hardware, surrogates) drift on their own: nothing to do.
    """
    dev = perturbable(device)
    return dev.advance(ticks) if dev is not None else []
