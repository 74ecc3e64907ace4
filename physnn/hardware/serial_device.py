"""``serial`` devices: a board behind a serial port (lab hardware or ``physnn emulate``).

:class:`SerialDevice` is a :class:`~physnn.core.device.Device` like any simulator, so every
preset, calibration and comparison runs on hardware by changing the device description. The
board reports its spec in the handshake; the driver checks it against what the network needs.

What makes a night of training on a flaky link safe:

- every request is retried a bounded number of times (``retries``), every wait has an explicit
  silence limit (``timeout``), the port is reopened a bounded number of times per batch
  (``reconnects``) and then :class:`SerialLinkError` says what happened: nothing loops forever;
- a retried batch is never measured twice: RUN is idempotent on the board (same token, batch
  id and input CRC -> the stored outputs), and the board's running count of measured samples
  is checked after every batch, so a duplicate would show in ``link_stats.duplicated``;
- after a board reset the driver sees the new boot id or a NOT_OPEN error, handshakes again
  and restarts the batch; after a disconnect it reopens the port;
- inputs are checked against the domain and the description's ``limits`` before any byte is
  sent, and the outputs are checked against the board's CRC of the whole batch.

One port is opened once per process and shared by every device on it; each device has its
own channel (``channel = "auto"`` takes the lowest free one), so one board or one emulator
serves all blocks of a network.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import serial
import torch

from ..core.atomic import atomic_path
from ..core.device import Device, DeviceSpec, Domain
from .protocol import (
    BROADCAST,
    OVERHEAD,
    REPLY,
    VERSION,
    Cap,
    Damaged,
    Err,
    ErrorReply,
    Fetch,
    FetchReply,
    Format,
    Frame,
    FrameDecoder,
    Hello,
    HelloReply,
    Load,
    LoadReply,
    Msg,
    Open,
    ProtocolError,
    Run,
    RunReply,
    SpecReply,
    crc32,
    hexdump,
    summarize,
)

POLL_S = 0.02
"""Longest single blocking read: deadlines are checked at least this often."""


class SerialLinkError(ConnectionError):
    """The link failed after every bounded retry and reconnect; the batch was not measured."""


class _LinkDown(Exception):
    """No valid reply after all retries, or the port failed: reopen it."""


class _Reopen(Exception):
    """The board lost the channel (it has reset): handshake, OPEN, restart the batch."""


class _Restart(Exception):
    """The board lost or rejected the batch's data: send the batch again."""


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


@dataclass
class LinkStats:
    """Counters of one serial device: what crossed the wire and what went wrong."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retries: int = 0
    """Requests sent again (after a timeout, a damaged reply or a NAK)."""
    timeouts: int = 0
    crc_errors: int = 0
    """Damaged frames received (header intact, payload CRC wrong)."""
    naks: int = 0
    """Requests the board received damaged and asked for again."""
    stale: int = 0
    """Valid frames that answered an earlier request (late replies), discarded."""
    skipped_bytes: int = 0
    """Bytes discarded while resynchronising: line noise, damaged and truncated frames."""
    busy: int = 0
    reconnects: int = 0
    board_resets: int = 0
    """Board resets this device noticed first (a new boot id in the handshake)."""
    restarts: int = 0
    """Batches sent again from the start."""
    state_losses: int = 0
    """The board had lost its counters (power loss): a batch in flight may have run twice."""
    batches: int = 0
    samples_sent: int = 0
    samples_received: int = 0
    lost: int = 0
    """Samples of batches that failed for good (the call raised)."""
    duplicated: int = 0
    """Samples the board measured more often than the host asked (from the board's count)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# -- one open port, shared by its devices ---------------------------------------------------


class _Link:
    """An open port, its decoder and handshake, shared by every device on it."""

    def __init__(self, port: str, baudrate: int, write_timeout: float):
        self.port, self.baudrate, self.write_timeout = port, baudrate, write_timeout
        self.ser: serial.SerialBase | None = None
        self.decoder = FrameDecoder()
        self.pending: deque[Frame | Damaged] = deque()
        self.lock = threading.RLock()
        self.seq = secrets.randbelow(0x10000)
        self.hello: HelloReply | None = None
        self.boot_id: int | None = None
        self.users: dict[int, str] = {}
        self.published: dict[str, dict[str, int]] = {}

    def open(self) -> None:
        url = "://" in self.port
        try:
            self.ser = serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=POLL_S,
                write_timeout=self.write_timeout, exclusive=None if url else True,
            )
        except (serial.SerialException, OSError, ValueError) as e:
            self.ser = None
            raise _LinkDown(f"cannot open {self.port}: {e}") from None
        self.decoder.reset()
        self.pending.clear()

    def close(self) -> None:
        if self.ser is not None:
            try:
                self.ser.close()
            except (serial.SerialException, OSError):
                pass
        self.ser = None
        self.hello = None

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq


class _Registry:
    """The ports this process has open: a port opens once, its devices share it."""

    def __init__(self) -> None:
        self.links: dict[str, _Link] = {}
        self.lock = threading.Lock()

    def get(self, port: str, baudrate: int, write_timeout: float) -> _Link:
        with self.lock:
            link = self.links.get(port)
            if link is None:
                link = self.links[port] = _Link(port, baudrate, write_timeout)
            elif link.baudrate != baudrate:
                raise ValueError(
                    f"{port} is already open at {link.baudrate} baud; every device on one "
                    f"port must use the same baudrate (got {baudrate})"
                )
            return link

    def release(self, port: str, channel: int | None) -> None:
        with self.lock:
            link = self.links.get(port)
            if link is None:
                return
            with link.lock:
                link.users.pop(channel, None)
                if not link.users:
                    link.close()
                    del self.links[port]


_PORTS = _Registry()


def _atomic_write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


# -- the device -----------------------------------------------------------------------------


class SerialDevice(Device):
    """``serial``: a device on a board behind a serial port, e.g.
    ``make_device({"kind": "serial", "port": "/dev/ttyACM0", "n_in": 6})``.

    ``port`` is a device path or a pyserial URL (``socket://127.0.0.1:5555``). ``n_in`` and
    ``seed`` say what the network needs: a configurable board (the emulator) builds its
    device from them, a fixed board must match ``n_in``. ``limits = {lo, hi}`` narrows the
    input range beyond the board's domain (hardware safety; ``clip`` clips into it instead of
    raising). ``trace`` is ``"log"`` (DEBUG lines on the device's logger) or a file path for a
    wire trace; ``stats_file`` a JSON file rewritten with the counters after every batch.
    ``spec`` (as :meth:`describe` writes it) declares what the board must report; with it the
    port is opened on first use instead of at construction. Numeric settings: :data:`SETTINGS`.
    Any other key describes the device the board is expected to serve; only a board that
    checks descriptions (the emulator) accepts such keys, and it refuses a mismatch.
    """

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
        **options: Any,
    ):
        if not isinstance(port, str) or not port:
            raise ValueError(f"serial: port must be a device path or URL, got {port!r}")
        self.port = port
        self.settings = {k: s.check(options.pop(k, s.default)) for k, s in SETTINGS.items()}
        for key, value in self.settings.items():
            setattr(self, key, value)
        self.expect = options
        """Description keys the board is expected to match (checked by the emulator)."""
        if n_in is not None and (isinstance(n_in, bool) or not isinstance(n_in, int) or n_in < 1):
            raise ValueError(f"serial: n_in must be a positive integer, got {n_in!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"serial: seed must be an integer, got {seed!r}")
        if channel != "auto" and (isinstance(channel, bool) or not isinstance(channel, int)
                                  or not 0 <= channel < BROADCAST):
            raise ValueError(f"serial: channel must be 'auto' or 0..254, got {channel!r}")
        self.limits = self._check_limits(limits)
        self.n_in_wanted, self.seed_wanted, self.channel_wanted = n_in, seed, channel
        self.user_name, self.trace_target = name, trace
        self.stats_file = Path(stats_file) if stats_file else None
        self.link_stats = LinkStats()
        self.token = secrets.randbits(64)
        self._link: _Link | None = None
        self._channel: int | None = None
        self._release: Callable[[], Any] | None = None
        self._ready = False
        self._opened_boot: int | None = None
        self._board_base: int | None = None
        self._completed = 0
        self._batch_id = 0
        self._trace_file = None
        self._t0 = time.monotonic()
        self._warned_f64 = False
        self.is_open = False
        self.log = logging.getLogger(f"physnn.serial.{self._slug(name or self.port)}")
        if spec is not None:
            declared = self._spec_from_dict(spec)
            super().__init__(declared, seed=seed or 0, clip=clip)
            self.declared: DeviceSpec | None = declared
        else:
            self.declared = None
            self.clip = bool(clip)  # the spec comes from the board: connect now
            self.spec = self._connect()
            super().__init__(self.spec, seed=seed or 0, clip=clip)
            self.is_open = True

    # -- settings -------------------------------------------------------------------------
    @staticmethod
    def _slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]+", "_", os.path.basename(text.rstrip("/")) or text)

    @staticmethod
    def _check_limits(limits: Mapping[str, float] | None) -> tuple[float, float] | None:
        if limits is None:
            return None
        if not isinstance(limits, Mapping) or set(limits) - {"lo", "hi"}:
            raise ValueError(f"serial: limits must be a table {{lo = ..., hi = ...}}, got {limits!r}")
        lo, hi = float(limits.get("lo", -np.inf)), float(limits.get("hi", np.inf))
        if not lo < hi:
            raise ValueError(f"serial: limits need lo < hi, got [{lo}, {hi}]")
        return lo, hi

    @staticmethod
    def _spec_from_dict(d: Mapping[str, Any]) -> DeviceSpec:
        try:
            dom = dict(d["domain"])
            return DeviceSpec(**{**dict(d), "domain": Domain(**dom)})
        except (KeyError, TypeError) as e:
            raise ValueError(f"serial: spec must be a table as describe() writes it ({e})") from None

    @property
    def name(self) -> str:
        return self.user_name or f"{self._slug(self.port)}-ch{self._channel}"

    @property
    def board(self) -> str:
        """The board's identity from its handshake ('' before the first connection)."""
        hello = self._link.hello if self._link else None
        return hello.identity if hello else ""

    @property
    def channel(self) -> int | None:
        return self._channel

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> SerialDevice:
        if self._link is None:
            spec = self._connect()
            if self.declared is not None:
                self._check_declared(spec)
        self.is_open = True
        return self

    def close(self) -> None:
        if self._release is not None:
            self._release()
        self._release, self._link, self._channel, self._ready = None, None, None, False
        if self._trace_file is not None:
            self._trace_file.close()
            self._trace_file = None
        self.log.info("closed; counters %s", self.link_stats.as_dict())
        self.is_open = False

    def _connect(self) -> DeviceSpec:
        """Open (or share) the port, handshake, take a channel, OPEN it; the board's spec."""
        link = _PORTS.get(self.port, self.baudrate, self.write_timeout)
        self._link = link
        failure: BaseException | None = None
        with link.lock:
            try:
                if link.ser is None:
                    link.open()
                if link.hello is None:
                    self._hello()
                self._channel = self._take_channel(link)
                self._release = weakref.finalize(self, _PORTS.release, self.port, self._channel)
                self.log = logging.getLogger(f"physnn.serial.{self._slug(self.name)}")
                reply = self._open_channel()
            except (_LinkDown, _Reopen, _Restart) as e:
                failure = SerialLinkError(f"{self.port}: handshake failed: {e}")
                if "://" not in self.port and not os.path.exists(self.port):
                    failure = FileNotFoundError(
                        f"serial port {self.port} does not exist: is the board plugged in (or "
                        "`physnn emulate` running)?"
                    )
            except BaseException as e:
                failure = e
        if failure is not None:
            self._abandon()
            raise failure
        self.log.info("connected to %r on %s channel %d: %s", self.board, self.port,
                      self._channel, reply)
        return self._spec_from_reply(reply)

    def _abandon(self) -> None:
        if self._release is not None:
            self._release()
        else:
            _PORTS.release(self.port, None)
        self._release, self._link, self._channel = None, None, None

    def _take_channel(self, link: _Link) -> int:
        n = link.hello.n_channels
        if self.channel_wanted != "auto":
            c = int(self.channel_wanted)
            if c >= n:
                raise ValueError(f"{self.port}: channel {c} does not exist; the board has {n}")
            if c in link.users:
                raise ValueError(f"{self.port}: channel {c} is already used by {link.users[c]}")
        else:
            free = [c for c in range(n) if c not in link.users]
            if not free:
                raise ValueError(
                    f"{self.port}: all {n} channels of {link.hello.identity!r} are in use by "
                    "devices of this process; close one, or connect more hardware"
                )
            c = free[0]
        link.users[c] = self.user_name or f"channel {c}"
        return c

    def _spec_from_reply(self, r: SpecReply) -> DeviceSpec:
        domain = Domain(levels=r.levels) if r.levels else Domain(r.lo, r.hi)
        return DeviceSpec(
            name=f"serial:{r.name or 'board'}", n_in=r.n_in, n_out=r.n_out, domain=domain,
            output_units=r.units or "a.u.", time_per_query_s=r.time_per_query_s,
            energy_per_query_j=r.energy_per_query_j,
        )

    def _check_declared(self, spec: DeviceSpec) -> None:
        d = self.declared
        if (spec.n_in, spec.n_out, spec.domain) != (d.n_in, d.n_out, d.domain):
            raise ValueError(
                f"{self.port} channel {self._channel}: the board reports {spec.n_in} -> "
                f"{spec.n_out}, domain {spec.domain.describe()}, but the description declares "
                f"{d.n_in} -> {d.n_out}, domain {d.domain.describe()}"
            )

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
        fmt = self._wire_format(x.dtype)
        wire = torch.float64 if fmt is Format.F64 else torch.float32
        host = x.detach().to("cpu", wire).contiguous().numpy()
        n = host.shape[0]
        cap = self._link.hello.max_batch if self._link and self._link.hello else n
        per = min(n, cap, self.max_batch or n)
        out = np.empty((n, self.spec.n_out), dtype=fmt.dtype)
        for start in range(0, n, max(1, per)):
            chunk = host[start : start + per]
            raw = self._board_batch(chunk.tobytes(), chunk.shape[0], fmt)
            out[start : start + chunk.shape[0]] = np.frombuffer(raw, fmt.dtype).reshape(
                chunk.shape[0], self.spec.n_out
            )
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def _wire_format(self, dtype: torch.dtype) -> Format:
        formats = self._link.hello.formats if self._link and self._link.hello else 1
        if dtype == torch.float64 and formats & (1 << Format.F64):
            return Format.F64
        if dtype == torch.float64 and not self._warned_f64:
            self.log.warning("the board takes float32 only: float64 inputs are rounded")
            self._warned_f64 = True
        return Format.F32

    # -- one board batch, with bounded recovery ---------------------------------------------
    def _board_batch(self, data: bytes, n: int, fmt: Format) -> bytes:
        st = self.link_stats
        self._batch_id = self._batch_id % 0xFFFFFFFF + 1
        batch_id, in_crc = self._batch_id, crc32(data)
        st.samples_sent += n
        downs = restarts = 0
        try:
            while True:
                try:
                    self._ensure_ready()
                    out = self._transfer(batch_id, fmt, n, data, in_crc)
                    st.samples_received += n
                    st.batches += 1
                    self._publish()
                    return out
                except _LinkDown as e:
                    downs += 1
                    if downs > self.reconnects:
                        raise SerialLinkError(
                            f"{self.name}: batch of {n} samples not measured: {e}; gave up after "
                            f"{self.reconnects} reconnects (counters: {st.as_dict()})"
                        ) from None
                    self._reconnect(str(e))
                except (_Reopen, _Restart) as e:
                    restarts += 1
                    st.restarts += 1
                    if isinstance(e, _Reopen):  # handshake again: the new boot id counts it
                        self._ready = False
                        self._link.hello = None
                    self._event(f"restart batch {batch_id}: {e}")
                    if restarts > self.retries + 1:
                        raise SerialLinkError(
                            f"{self.name}: batch of {n} samples not measured: the board kept "
                            f"losing it ({e}) after {restarts} restarts"
                        ) from None
        except BaseException:
            st.lost += n
            self._publish()
            raise

    def _ensure_ready(self) -> None:
        link = self._link
        if link is None:
            self.open()
            link = self._link
        with link.lock:
            if link.ser is None:
                link.open()
            if link.hello is None:
                self._hello()
            if not self._ready or self._opened_boot != link.boot_id:
                self._open_channel()

    def _reconnect(self, why: str) -> None:
        st = self.link_stats
        st.reconnects += 1
        self.log.warning("link down (%s); reopening %s", why, self.port)
        self._event(f"reconnect: {why}")
        link = self._link
        with link.lock:
            link.close()
            self._ready = False
        time.sleep(self.reconnect_delay)

    def _hello(self) -> None:
        link = self._link
        reply = HelloReply.unpack(self._exchange(Hello(int(self.timeout * 1000)), BROADCAST).payload)
        if reply.version != VERSION:
            raise SerialLinkError(
                f"{self.port}: the board speaks protocol version {reply.version}; this driver "
                f"speaks {VERSION}"
            )
        if link.boot_id is not None and reply.boot_id != link.boot_id:
            self.link_stats.board_resets += 1
            self.log.warning("%s has reset (boot id %08x -> %08x)", self.port, link.boot_id,
                             reply.boot_id)
            self._event("board reset detected (new boot id)")
        link.hello, link.boot_id = reply, reply.boot_id

    def _open_channel(self) -> SpecReply:
        link = self._link
        caps = Cap(link.hello.caps)
        description = ""
        if self.expect:
            if not caps & Cap.CHECKS_DESCRIPTION:
                raise ValueError(
                    f"unknown serial setting(s) {sorted(self.expect)}; allowed: "
                    f"{sorted(OTHER_KEYS + tuple(SETTINGS))} (other keys describe the served "
                    f"device, and the board {link.hello.identity!r} does not check them)"
                )
            description = json.dumps(self.expect, sort_keys=True)
        msg = Open(self.n_in_wanted or 0, self.seed_wanted, self.token, description)
        if len(msg.pack()) > min(self.max_payload, link.hello.max_payload):
            raise ValueError(f"{self.port}: the description keys do not fit in one frame")
        reply = SpecReply.unpack(self._exchange(msg).payload)
        if self.n_in_wanted is not None and reply.n_in != self.n_in_wanted:
            raise ValueError(
                f"{self.port} channel {self._channel}: the board's device {reply.name!r} has "
                f"n_in={reply.n_in}, but n_in={self.n_in_wanted} is needed here (a network "
                "block's input width); use a board or channel with that many inputs"
            )
        spec = getattr(self, "spec", None)
        if spec is not None and (reply.n_out, reply.n_in) != (spec.n_out, spec.n_in):
            raise SerialLinkError(f"{self.port}: the board's device changed its shape")
        expected = (self._board_base or 0) + self._completed
        if self._board_base is None:
            self._board_base = reply.measured - self._completed
        elif reply.measured < expected:
            self._state_loss(reply.measured, expected)
        self._ready, self._opened_boot = True, link.boot_id
        return reply

    def _state_loss(self, measured: int, expected: int) -> None:
        self.link_stats.state_losses += 1
        self._board_base = measured - self._completed
        self.log.warning(
            "the board counts %d measured samples, %d were expected: it lost its state (power "
            "loss?); a batch in flight may have been measured twice", measured, expected
        )

    def _transfer(self, batch_id: int, fmt: Format, n: int, data: bytes, in_crc: int) -> bytes:
        es = fmt.dtype.itemsize
        limit = min(self.max_payload, self._link.hello.max_payload)
        total = n * self.spec.n_in
        per = max(1, (limit - Load.S.size) // es)
        view = memoryview(data)
        for off in range(0, total, per):
            chunk = bytes(view[off * es : (off + per) * es])
            r = LoadReply.unpack(self._exchange(Load(batch_id, fmt, n, off, chunk)).payload)
            if r.batch_id != batch_id or r.filled < min(off + per, total):
                raise _Restart(f"LOAD reply for batch {r.batch_id} filled {r.filled}")
        rr = RunReply.unpack(self._exchange(Run(batch_id, fmt, n, in_crc)).payload)
        if rr.batch_id != batch_id:
            raise _Restart(f"RUN reply for batch {rr.batch_id}, expected {batch_id}")
        expected = self._board_base + self._completed + n
        if rr.measured > expected:
            dup = rr.measured - expected
            self.link_stats.duplicated += dup
            self._board_base += dup
            self.log.warning("the board measured %d sample(s) more than asked", dup)
        elif rr.measured < expected:
            self._state_loss(rr.measured - n, expected - n)
        total = n * self.spec.n_out
        per = max(1, (limit - FetchReply.S.size) // es)
        out = bytearray()
        for off in range(0, total, per):
            count = min(per, total - off)
            fr = FetchReply.unpack(self._exchange(Fetch(batch_id, off, count)).payload)
            if fr.batch_id != batch_id or fr.offset != off or len(fr.data) != count * es:
                raise _Restart(f"FETCH reply batch {fr.batch_id} offset {fr.offset}")
            out += fr.data
        if crc32(out) != rr.output_crc:
            raise _Restart("outputs do not match the board's CRC")
        self._completed += n
        return bytes(out)

    # -- one request and its reply ----------------------------------------------------------
    def _exchange(self, msg: Any, channel: int | None = None) -> Frame:
        """Send ``msg`` and return its reply, resending it at most ``retries`` times."""
        link = self._link
        chan = self._channel if channel is None else channel
        with link.lock:
            seq = link.next_seq()
            frame = Frame(msg.TYPE, chan, seq, msg.pack())
            raw = frame.encode()
            for attempt in range(self.retries + 1):
                if attempt:
                    self.link_stats.retries += 1
                self._write(raw, frame)
                reply = self._await(msg.TYPE, chan, seq)
                if reply is not None:
                    return reply
            raise _LinkDown(
                f"no valid reply to {Msg(msg.TYPE).name} after {self.retries + 1} tries "
                f"({self.timeout:g} s timeout each)"
            )

    def _write(self, raw: bytes, frame: Frame) -> None:
        st = self.link_stats
        try:
            self._link.ser.write(raw)
        except (serial.SerialException, OSError, AttributeError) as e:
            raise _LinkDown(f"write failed: {e}") from None
        st.frames_sent += 1
        st.bytes_sent += len(raw)
        if self.trace_target:
            self._trace(">", frame)

    def _await(self, want: int, chan: int, seq: int) -> Frame | None:
        """The reply to (chan, seq), or None to resend now (timeout, damage, NAK)."""
        link, st = self._link, self.link_stats
        limit = min(self.max_payload, link.hello.max_payload if link.hello else self.max_payload)
        frame_s = 20.0 * (OVERHEAD + limit) / self.baudrate
        start = time.monotonic()
        quiet_until, hard = start + self.timeout, start + 2 * self.timeout + frame_s
        while True:
            while link.pending:
                ev = link.pending.popleft()
                verdict = self._judge(ev, want, chan, seq)
                if verdict == "busy":
                    now = time.monotonic()
                    quiet_until, hard = now + self.timeout, max(hard, start + self.run_timeout)
                elif verdict == "resend":
                    return None
                elif verdict is not None:
                    return verdict
            now = time.monotonic()
            if now >= quiet_until or now >= hard:
                st.timeouts += 1
                self._event(f"timeout waiting for the reply to seq {seq}")
                return None
            try:
                data = link.ser.read(max(link.decoder.wanted(), link.ser.in_waiting))
            except (serial.SerialException, OSError, AttributeError) as e:
                raise _LinkDown(f"read failed: {e}") from None
            if data:
                st.bytes_received += len(data)
                quiet_until = time.monotonic() + self.timeout
                skipped = link.decoder.stats.skipped_bytes
                link.pending.extend(link.decoder.feed(data))
                garbage = link.decoder.stats.skipped_bytes - skipped
                if garbage:
                    st.skipped_bytes += garbage
                    self._event(f"skipped {garbage} byte(s) (noise or a damaged frame)")

    def _judge(self, ev: Frame | Damaged, want: int, chan: int, seq: int) -> Any:
        st = self.link_stats
        mine = ev.seq == seq and ev.channel == chan and bool(ev.type & REPLY)
        if isinstance(ev, Damaged):
            st.crc_errors += 1
            self._trace("<", ev)
            return "resend" if mine else None
        st.frames_received += 1
        if not mine or ev.type not in (want | REPLY, Msg.ERROR | REPLY, Msg.BUSY | REPLY):
            st.stale += 1
            self._trace("<", ev, " (stale: discarded)")
            return None
        self._trace("<", ev)
        try:
            if ev.type == Msg.ERROR | REPLY:
                self._board_error(ErrorReply.unpack(ev.payload), want)
                st.naks += 1
                return "resend"
            if ev.type == Msg.BUSY | REPLY:
                st.busy += 1
                return "busy"
        except ProtocolError as e:
            raise SerialLinkError(f"{self.port}: malformed reply from the board: {e}") from None
        return ev

    def _board_error(self, err: ErrorReply, want: int) -> None:
        """Raise what an ERROR reply means; return for a NAK (resend)."""
        what = f"the board answered {Msg(want).name} with {err.code_name}: {err.message}"
        code = err.code
        if code == Err.CRC:
            return
        if code == Err.NOT_OPEN:
            raise _Reopen(what)
        if code in (Err.SEQUENCE, Err.DATA_CRC, Err.NO_RESULT):
            raise _Restart(what)
        if code in (Err.CONFIG, Err.TOO_LARGE, Err.DEVICE, Err.FORMAT, Err.CHANNEL):
            raise ValueError(f"{self.port} channel {self._channel}: {what}")
        raise SerialLinkError(f"{self.port}: {what}")

    # -- logging, trace, counters -----------------------------------------------------------
    def _trace(self, arrow: str, ev: Frame | Damaged, note: str = "") -> None:
        if not self.trace_target:
            return
        text = summarize(ev) + note
        raw = ev.encode() if isinstance(ev, Frame) else b""
        line = f"{text} | {hexdump(raw, self.trace_bytes)}" if raw else text
        self._trace_line(f"{arrow} {line}")

    def _event(self, text: str) -> None:
        self.log.debug(text)
        if self.trace_target:
            self._trace_line(f"! {text}")

    def _trace_line(self, text: str) -> None:
        stamp = f"{time.monotonic() - self._t0:11.6f}"
        if self.trace_target == "log":
            self.log.debug("%s %s", stamp, text)
            return
        if self._trace_file is None:
            self._trace_file = open(self.trace_target, "a", buffering=1)  # noqa: SIM115
        self._trace_file.write(f"{stamp} {self.name} {text}\n")

    def _publish(self) -> None:
        if self._link is None:
            return
        self._link.published[self.name] = self.link_stats.as_dict()
        if self.stats_file is not None:
            _atomic_write_json(self.stats_file, self._link.published)

    # -- descriptions ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
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
        return f"{super().__repr__()[:-1]}, {self.port} channel {self._channel})"
