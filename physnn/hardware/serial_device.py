"""``serial`` devices: a board behind a serial port (lab hardware or ``physnn emulate``).

``SerialDevice`` is a ``physnn.core.device.Device`` like any simulator, so every
preset, calibration and comparison runs on hardware by changing the device description. The
board reports its spec in the handshake; the driver checks it against what the network needs.

This module is the device: its settings, its spec, input validation (the domain and the
description's ``limits`` are checked before any byte is sent) and the split of a call into
board batches. What happens on the wire, and how a flaky link is recovered without ever
measuring a batch twice, is ``physnn.hardware.link``; how bytes travel is a
``physnn.hardware.transport.Transport`` (pyserial by default, injectable).

One port is opened once per process and shared by every device on it; each device has its
own channel (``channel = "auto"`` takes the lowest free one), so one board or one emulator
serves all blocks of a network.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.device import Accounting, Device, DeviceSpec, Domain
from . import board_state
from .link import PORTS, Link, LinkSettings, LinkStats, SerialLinkError
from .protocol import BROADCAST, Format, SpecReply
from .transport import POLL_S, SYSTEM_CLOCK, Clock, Transport

__all__ = ["OTHER_KEYS", "POLL_S", "PORTS", "SETTINGS", "LinkStats", "SerialAccounting",
           "SerialDevice", "SerialLinkError", "Setting"]

# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A declared, range-checked numeric setting of a serial device."""

    name: str
    default: float
    lo: float
    hi: float
    doc: str
    integer: bool = False

    def check(self, value: Any) -> float | int:
        """``value`` as this setting's type, or a ValueError naming the allowed range."""
        allowed = f"a{'n integer' if self.integer else ' number'} in [{self.lo:g}, {self.hi:g}]"
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and self.integer and value != int(value):
            ok = False
        if not ok or not self.lo <= value <= self.hi:
            raise ValueError(
                f"serial setting {self.name} = {value!r} is not allowed; use {allowed} "
                f"({self.doc})"
            )
        return int(value) if self.integer else float(value)


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("baudrate", 115200, 300, 4_000_000, "line speed in bit/s; pseudo-terminals "
                "and sockets ignore it", integer=True),
        Setting("timeout", 1.0, 0.005, 60.0, "seconds of silence after which a request is "
                "sent again"),
        Setting("write_timeout", 5.0, 0.01, 600.0, "seconds one write may block before the "
                "link counts as down"),
        Setting("retries", 5, 0, 100, "times one request is sent again before the port is "
                "reopened", integer=True),
        Setting("reconnects", 3, 0, 100, "port reopens (each with a new handshake) per batch "
                "before giving up", integer=True),
        Setting("reconnect_delay", 0.5, 0.0, 60.0, "seconds between closing and reopening the "
                "port (a reset board needs time to boot)"),
        Setting("run_timeout", 600.0, 0.01, 86400.0, "the longest one batch may keep a board "
                "BUSY"),
        Setting("max_payload", 65535, 64, 65535, "largest frame payload this host sends or "
                "accepts; the board's own limit also applies", integer=True),
        Setting("max_batch", 0, 0, 2**32 - 1, "samples per board batch; 0: as many as the "
                "board holds", integer=True),
        Setting("trace_bytes", 32, 0, 65551, "bytes of each frame shown in the wire trace",
                integer=True),
    )
}
"""Every numeric setting of a ``serial`` description, with its default and allowed range."""

OTHER_KEYS = ("port", "n_in", "seed", "channel", "name", "limits", "trace", "stats_file",
              "clip", "spec")
"""The non-numeric keys of a ``serial`` description; any other key describes the served device."""


@dataclass
class SerialAccounting(Accounting):
    """A serial device's totals (in the run log's accounting), plus the resumes that could
    not be exact."""

    inexact_resumes: int = 0
    """Checkpoints resumed without the board's physics state (a board without
    ``Cap.STATE``): from each on, the noise is the board's current one, not what an
    uninterrupted run would have drawn."""


def _check_limits(limits: Mapping[str, float] | None) -> tuple[float, float] | None:
    if limits is None:
        return None
    if not isinstance(limits, Mapping) or set(limits) - {"lo", "hi"}:
        raise ValueError(f"serial: limits must be a table {{lo = ..., hi = ...}}, got {limits!r}")
    lo, hi = float(limits.get("lo", -np.inf)), float(limits.get("hi", np.inf))
    if not lo < hi:
        raise ValueError(f"serial: limits need lo < hi, got [{lo}, {hi}]")
    return lo, hi


def _spec_from_dict(d: Mapping[str, Any]) -> DeviceSpec:
    try:
        dom = dict(d["domain"])
        return DeviceSpec(**{**dict(d), "domain": Domain(**dom)})
    except (KeyError, TypeError) as e:
        raise ValueError(f"serial: spec must be a table as describe() writes it ({e})") from None


def _spec_from_reply(r: SpecReply) -> DeviceSpec:
    domain = Domain(levels=r.levels) if r.levels else Domain(r.lo, r.hi)
    return DeviceSpec(
        name=f"serial:{r.name or 'board'}", n_in=r.n_in, n_out=r.n_out, domain=domain,
        output_units=r.units or "a.u.", time_per_query_s=r.time_per_query_s,
        energy_per_query_j=r.energy_per_query_j,
    )


def _check_args(port: Any, n_in: Any, seed: Any, channel: Any, transport: Any) -> None:
    if not isinstance(port, str) or not port:
        raise ValueError(f"serial: port must be a device path or URL, got {port!r}")
    if n_in is not None and (isinstance(n_in, bool) or not isinstance(n_in, int) or n_in < 1):
        raise ValueError(f"serial: n_in must be a positive integer, got {n_in!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"serial: seed must be an integer, got {seed!r}")
    if channel != "auto" and (isinstance(channel, bool) or not isinstance(channel, int)
                              or not 0 <= channel < BROADCAST):
        raise ValueError(f"serial: channel must be 'auto' or 0..254, got {channel!r}")
    if transport is not None and not isinstance(transport, Transport):
        raise ValueError(
            f"serial: transport must be a Transport object (open/close/read/write/reset_input), "
            f"got {type(transport).__name__}; a description names a port instead"
        )


class SerialDevice(Device):
    """``serial``: a device on a board behind a serial port, e.g.
    ``make_device({"kind": "serial", "port": "/dev/ttyACM0", "n_in": 6})``.

    ``port`` is a device path or a pyserial URL (``socket://127.0.0.1:5555``). ``n_in`` and
    ``seed`` say what the network needs: a configurable board (the emulator) builds its
    device from them, a fixed board must match ``n_in``. ``limits = {lo, hi}`` narrows the
    input range beyond the board's domain (hardware safety; ``clip`` clips into it instead of
    raising). ``trace`` is ``"log"`` (DEBUG lines on the device's logger) or a file path for a
    wire trace; ``stats_file`` a JSON file rewritten with the counters after every batch.
    ``spec`` (as ``describe`` writes it) declares what the board must report; with it the
    port is opened on first use instead of at construction. Numeric settings: ``SETTINGS``.
    Any other key describes the device the board is expected to serve; only a board that
    checks descriptions (the emulator) accepts such keys, and it refuses a mismatch.

    From Python only: ``transport`` carries the bytes instead of pyserial (``port`` then just
    names it; every device on that port must share the object), and ``clock`` is where waits
    are timed (a ``physnn.hardware.memory.VirtualClock`` makes tests instant).
    """

    accounting: SerialAccounting
    _pending_board: dict[str, Any] | None = None

    def __init__(
        self,
        port: str,
        *,
        n_in: int | None = None,
        seed: int | None = None,
        channel: int | str = "auto",
        name: str | None = None,
        limits: Mapping[str, float] | None = None,
        trace: str | None = None,
        stats_file: str | None = None,
        clip: bool = False,
        spec: Mapping[str, Any] | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        **options: Any,
    ):
        _check_args(port, n_in, seed, channel, transport)
        self.port = port
        self.settings = {k: s.check(options.pop(k, s.default)) for k, s in SETTINGS.items()}
        for key, value in self.settings.items():
            setattr(self, key, value)
        self.expect = options
        """Description keys the board is expected to match (checked by the emulator)."""
        self.limits = _check_limits(limits)
        self.n_in_wanted, self.seed_wanted, self.channel_wanted = n_in, seed, channel
        self.user_name, self.trace_target = name, trace
        self.stats_file = Path(stats_file) if stats_file else None
        self.declared = _spec_from_dict(spec) if spec is not None else None
        self.link = Link(
            port, LinkSettings.from_mapping(self.settings), n_in=n_in, seed=seed,
            channel=channel, user_name=name, expect=options,
            allowed_keys=OTHER_KEYS + tuple(SETTINGS), trace=trace,
            stats_file=self.stats_file,
            shape=None if self.declared is None else (self.declared.n_in, self.declared.n_out),
            transport=transport, clock=clock or SYSTEM_CLOCK,
        )
        self._warned_f64 = False
        if self.declared is not None:
            super().__init__(self.declared, seed=seed or 0, clip=clip)
        else:
            self.clip = bool(clip)  # the spec comes from the board: connect now
            spec_now = _spec_from_reply(self.link.connect(self))
            super().__init__(spec_now, seed=seed or 0, clip=clip)
            self.is_open = True
        self.accounting = SerialAccounting()

    # -- what the link knows ----------------------------------------------------------------
    @property
    def link_stats(self) -> LinkStats:
        """The counters of this device's link (see ``physnn.hardware.link.LinkStats``)."""
        return self.link.stats

    @property
    def token(self) -> int:
        """This device's identity on the board: a re-OPEN reattaches to the same physics."""
        return self.link.token

    @property
    def log(self) -> Any:
        """The device's logger, ``physnn.serial.<name>``."""
        return self.link.log

    @property
    def name(self) -> str:
        """The name in logs, traces and the stats file: ``name``, or port and channel."""
        return self.link.name

    @property
    def board(self) -> str:
        """The board's identity from its handshake ('' before the first connection)."""
        return self.link.board

    @property
    def channel(self) -> int | None:
        """The board channel this device has (None while closed)."""
        return self.link.channel

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> SerialDevice:
        """Connect if not connected (a declared spec must match what the board reports)."""
        if self.link.port is None:
            spec = _spec_from_reply(self.link.connect(self))
            if self.declared is not None:
                self._check_declared(spec)
            if self._pending_board is not None:
                self._restore_board()
        self.is_open = True
        return self

    def close(self) -> None:
        """Free the channel; the last device on a port closes it."""
        self.link.close()
        self.log.info("closed; counters %s", self.link_stats.as_dict())
        self.is_open = False

    def _check_declared(self, spec: DeviceSpec) -> None:
        d = self.declared
        assert d is not None
        if (spec.n_in, spec.n_out, spec.domain) != (d.n_in, d.n_out, d.domain):
            raise ValueError(
                f"{self.port} channel {self.channel}: the board reports {spec.n_in} -> "
                f"{spec.n_out}, domain {spec.domain.describe()}, but the description declares "
                f"{d.n_in} -> {d.n_out}, domain {d.domain.describe()}"
            )

    # -- checkpoints: the board's physics state travels with the host's ----------------------
    def state_dict(self) -> dict[str, Any]:
        """The host's state and, under ``board``, the board's: its noise streams and counters
        as an opaque uint8 tensor (``exact``; the checkpoint still loads with
        ``weights_only=True``), or ``exact = False`` and no state for a board without
        ``Cap.STATE`` (or a device not connected): such a resume cannot be exact."""
        state = super().state_dict()
        saved = board_state.save(self.link) if self.link.port is not None else None
        measured, blob = saved if saved is not None else (0, b"")
        state["board"] = {
            "board": self.board, "exact": saved is not None, "measured": measured,
            "state": torch.from_numpy(np.frombuffer(blob, dtype=np.uint8).copy()),
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The host's state now; the board's as soon as the device is connected (now, or at
        ``open``). A board state that cannot be put back is warned about and counted."""
        super().load_state_dict(state)
        self._pending_board = dict(state.get("board") or {"board": "", "exact": False})
        if self.link.port is not None:
            self._restore_board()

    def _restore_board(self) -> None:
        saved, self._pending_board = self._pending_board, None
        assert saved is not None
        if saved.get("exact"):
            blob = saved["state"].cpu().numpy().tobytes()
            if board_state.restore(self.link, int(saved["measured"]), blob):
                self.log.info("resumed with the board's state (%d bytes, %d samples measured)",
                              len(blob), int(saved["measured"]))
                return
        why = (f"the board {self.board!r} cannot restore its physics state (no STATE capability)"
               if not board_state.has_state(self.link) else
               f"the checkpoint holds no state of the board {saved.get('board') or self.board!r}")
        self.accounting.inexact_resumes += 1
        self.link_stats.inexact_resumes += 1
        self.link.publish()
        self.log.warning(
            "%s: resumed from a checkpoint, but %s: the resumed run continues from the board's "
            "current state (its noise streams and counters), so it is not bit-identical to an "
            "uninterrupted run", self.name, why)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Evaluation that leaves training's noise alone. The board's noise lives on the
        board: one with ``Cap.STATE`` has its state saved before and put back after, as a
        simulator's streams are (its count of measured samples keeps the evaluation's). A
        board without it (the AVR firmware) serves evaluation from training's own noise, so
        there the evaluation schedule does change training (docs/hardware.md)."""
        saved = board_state.save(self.link) if self.link.port is not None else None
        try:
            with super().evaluating():
                yield
        finally:  # the noise goes back; the count keeps what evaluation measured
            if saved is not None:
                board_state.restore(self.link, self.link.board_measured, saved[1])

    # -- the contract ---------------------------------------------------------------------
    def validate(self, x: Any) -> torch.Tensor:
        """The domain check of every device, then the description's stricter ``limits``."""
        x = super().validate(x)
        if self.limits is not None:
            lo, hi = self.limits
            bad = (x < lo) | (x > hi)
            if bad.any():
                if self.clip:
                    return x.clamp(lo, hi)
                b, i = (int(v) for v in bad.nonzero()[0])
                raise ValueError(
                    f"{self.spec.name} on {self.port}: input[{b}, {i}] = {x[b, i].item():.6g} "
                    f"is outside the safety limits [{lo:g}, {hi:g}] of the description "
                    f"({int(bad.sum())} entries); nothing was sent"
                )
        return x

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        """Split the call into board batches (the board's and the description's max_batch)."""
        fmt = self._wire_format(x.dtype)
        wire = torch.float64 if fmt is Format.F64 else torch.float32
        host = x.detach().to("cpu", wire).contiguous().numpy()
        n = host.shape[0]
        hello = self.link.hello
        cap = hello.max_batch if hello else n
        per = min(n, cap, int(self.settings["max_batch"]) or n)
        out = np.empty((n, self.spec.n_out), dtype=fmt.dtype)
        for start in range(0, n, max(1, per)):
            chunk = host[start : start + per]
            raw = self.link.batch(chunk.tobytes(), chunk.shape[0], fmt)
            out[start : start + chunk.shape[0]] = np.frombuffer(raw, fmt.dtype).reshape(
                chunk.shape[0], self.spec.n_out
            )
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def _wire_format(self, dtype: torch.dtype) -> Format:
        hello = self.link.hello
        formats = hello.formats if hello else 1
        if dtype == torch.float64 and formats & (1 << Format.F64):
            return Format.F64
        if dtype == torch.float64 and not self._warned_f64:
            self.log.warning("the board takes float32 only: float64 inputs are rounded")
            self._warned_f64 = True
        return Format.F32

    # -- descriptions ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The description that rebuilds this device offline (its spec declared, no port opened)."""
        d: dict[str, Any] = {"kind": "serial", "port": self.port, "channel": self.channel_wanted}
        d.update(n_in=self.spec.n_in, **({"seed": self.seed_wanted} if self.seed_wanted is not
                                         None else {}))
        d.update(self.settings)
        for key, value in (("name", self.user_name), ("trace", self.trace_target or None),
                           ("stats_file", str(self.stats_file) if self.stats_file else None)):
            if value is not None:
                d[key] = value
        if self.limits is not None:
            d["limits"] = {"lo": self.limits[0], "hi": self.limits[1]}
        d.update(clip=self.clip, spec=self.spec.to_dict(), **self.expect)
        return d

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, {self.port} channel {self.channel})"
