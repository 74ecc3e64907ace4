"""``physnn emulate``: a simulated device served with the serial protocol, faults included.

The emulator lets the real driver (:class:`~physnn.hardware.serial_device.SerialDevice`) and a
whole training run use the hardware path without hardware, over a pseudo-terminal (the
driver opens it like any serial port) or a loopback TCP socket (``socket://HOST:PORT``). It
is built in three layers, as a lab bench is:

- the physics (one instrument per host device, keyed by the host's token): the simulated
  device built from the served description with the host's ``n_in`` and ``seed``, its random
  streams, its count of measured samples and the outputs of its last batch. It outlives a
  board reset, as a cavity does when its microcontroller reboots, so a retried batch is never
  measured twice and the noise streams advance exactly as in a direct run;
- the board (:class:`Board`): the firmware's state (channel bindings, upload buffers, the
  reply to the last request, the boot id), which a reset wipes;
- the line (pseudo-terminal or socket) with a :class:`FaultInjector` on it: corrupted and
  dropped frames in both directions, replies delayed past the host's timeout, bursts of
  garbage, disconnects and board resets, all seeded.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
import tty
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import atomic_path
from ..core.registry import KINDS, load_description, make_device
from .protocol import (
    MAX_PAYLOAD,
    REPLY,
    VERSION,
    Busy,
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
)

HOST_SIDE_KEYS = ("inputs", "outputs")
"""Non-idealities physnn applies around any device kind on the host (a serial one too): the
emulator serves the bare device, so they are applied once, as in a direct run."""

BOOT_BANNER = b"\r\nphysnn emulator boot\r\n"
"""What the board prints when it comes out of a reset: garbage the driver must skip."""


def served_description(device: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The description to serve: a device kind such as ``sim:optical``, a device TOML or a
    dict (the CLI resolves a preset to its ``[device]`` table before it gets here)."""
    if isinstance(device, Mapping):
        desc = dict(device)
    else:
        text = str(device)
        try:
            desc = load_description(text)
        except ValueError:
            raise ValueError(
                f"cannot serve {text!r}: give a device kind "
                f"({', '.join(k for k in KINDS if k != 'serial')}), a .toml file, or (on the "
                "command line) a preset"
            ) from None
    kind = desc.get("kind")
    if kind == "serial" or kind not in KINDS:
        allowed = sorted(k for k in KINDS if k != "serial")
        raise ValueError(f"the emulator serves simulated devices {allowed}, not {kind!r}")
    return desc


# -- faults -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """What goes wrong on the emulated line. Rates are per frame, in either direction."""

    corrupt: float = 0.0
    """Probability that a frame has 1-3 bytes flipped."""
    drop: float = 0.0
    """Probability that a frame is lost."""
    delay: float = 0.0
    """Probability that a reply is held back by ``delay_s`` (set it past the host's timeout)."""
    delay_s: float = 1.0
    garbage: float = 0.0
    """Probability of a burst of random bytes on the line before a reply."""
    disconnect: float = 0.0
    """Probability per frame of pulling the cable (the pty hangs up, the socket closes)."""
    reset: float = 0.0
    """Probability per frame of a board reset (state wiped, silent for ``reset_s``)."""
    disconnect_after: tuple[int, ...] = ()
    """Frame counts at which to disconnect, e.g. (500,)."""
    reset_after: tuple[int, ...] = ()
    reset_s: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("corrupt", "drop", "delay", "garbage", "disconnect", "reset"):
            v = getattr(self, name)
            if not 0.0 <= v <= 0.5:
                raise ValueError(f"fault rate {name}={v} is not allowed; use a rate in [0, 0.5]")
        if self.corrupt + self.drop > 0.5:
            raise ValueError("corrupt + drop must stay <= 0.5, or nothing gets through")
        for name, hi in (("delay_s", 600.0), ("reset_s", 60.0)):
            if not 0.0 <= getattr(self, name) <= hi:
                raise ValueError(f"{name}={getattr(self, name)} is not allowed; use 0..{hi:g} s")
        for name in ("disconnect_after", "reset_after"):
            counts = tuple(int(v) for v in getattr(self, name))
            if any(v < 1 for v in counts):
                raise ValueError(f"{name} needs positive frame counts, got {counts}")
            object.__setattr__(self, name, counts)

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self)
                   if f.name not in ("delay_s", "reset_s", "seed"))


@dataclass
class FaultStats:
    frames_in: int = 0
    frames_out: int = 0
    corrupted_in: int = 0
    corrupted_out: int = 0
    dropped_in: int = 0
    dropped_out: int = 0
    delayed: int = 0
    garbage_bursts: int = 0
    disconnects: int = 0
    resets: int = 0

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = asdict(self)
        frames = max(1, self.frames_in + self.frames_out)
        d["corrupted_fraction"] = (self.corrupted_in + self.corrupted_out) / frames
        d["dropped_fraction"] = (self.dropped_in + self.dropped_out) / frames
        return d


class FaultInjector:
    """Decides, frame by frame and seeded, what the line does to the traffic."""

    def __init__(self, faults: Faults):
        self.f = faults
        self.rng = random.Random(faults.seed)
        self.stats = FaultStats()
        self.pending: str | None = None
        """'disconnect' or 'reset', to be carried out by the emulator now."""
        self._frames = 0

    def _tick(self) -> None:
        self._frames += 1
        f, rng, n = self.f, self.rng, self._frames
        if n in f.reset_after or (f.reset and rng.random() < f.reset):
            self.pending = "reset"
        elif n in f.disconnect_after or (f.disconnect and rng.random() < f.disconnect):
            self.pending = self.pending or "disconnect"

    def _flip(self, raw: bytes) -> bytes:
        b = bytearray(raw)
        for _ in range(self.rng.randint(1, 3)):
            b[self.rng.randrange(len(b))] ^= self.rng.randint(1, 255)
        return bytes(b)

    def inbound(self, ev: Frame | Damaged) -> Frame | Damaged | None:
        """A request as the board receives it: as sent, damaged, or lost."""
        self.stats.frames_in += 1
        self._tick()
        if not isinstance(ev, Frame):
            return ev
        r = self.rng.random()
        if r < self.f.drop:
            self.stats.dropped_in += 1
            return None
        if r < self.f.drop + self.f.corrupt:
            self.stats.corrupted_in += 1
            seen = FrameDecoder().feed(self._flip(ev.encode()))
            return seen[0] if seen else None  # a hit in the header: the frame is just noise
        return ev

    def outbound(self, raw: bytes) -> list[tuple[float, bytes]]:
        """What goes on the line for one reply: (delay in s, bytes) pieces."""
        st, f, rng = self.stats, self.f, self.rng
        st.frames_out += 1
        self._tick()
        out: list[tuple[float, bytes]] = []
        if f.garbage and rng.random() < f.garbage:
            st.garbage_bursts += 1
            out.append((0.0, rng.randbytes(rng.randint(1, 64))))
        r = rng.random()
        if r < f.drop:
            st.dropped_out += 1
            return out
        if r < f.drop + f.corrupt:
            st.corrupted_out += 1
            raw = self._flip(raw)
        if f.delay and rng.random() < f.delay:
            st.delayed += 1
            out.append((f.delay_s, raw))
        else:
            out.append((0.0, raw))
        return out


# -- the physics ------------------------------------------------------------------------------


@dataclass
class _Record:
    batch_id: int
    input_crc: int
    fmt: int
    n: int
    outputs: bytes
    output_crc: int


@dataclass
class _Job:
    batch_id: int
    input_crc: int
    future: Future


class _Instrument:
    """One host device's simulated physics: survives board resets and disconnects."""

    def __init__(self, device: Any, token: int):
        self.device, self.token = device, token
        self.n_in, self.n_out = device.spec.n_in, device.spec.n_out
        self.measured = 0
        self.record: _Record | None = None
        self.job: _Job | None = None
        self.executions = 0

    def execute(self, data: bytes, fmt: Format, n: int, batch_id: int, input_crc: int) -> None:
        dtype = torch.float64 if fmt is Format.F64 else torch.float32
        x = torch.empty((n, self.n_in), dtype=dtype)  # torch's own (aligned) memory, as direct
        x.numpy()[:] = np.frombuffer(data, fmt.dtype).reshape(n, self.n_in)
        y = self.device(x)
        out = y.detach().to("cpu", dtype).contiguous().numpy().tobytes()
        self.record = _Record(batch_id, input_crc, int(fmt), n, out, crc32(out))
        self.measured += n
        self.executions += 1


class _Fail(Exception):
    def __init__(self, code: Err, message: str):
        super().__init__(message)
        self.code = code


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value))


class Lab:
    """The physics behind the board: one instrument per host device token (LRU-bounded)."""

    def __init__(self, description: Mapping[str, Any], capacity: int = 256):
        self.description = {k: v for k, v in description.items() if k not in HOST_SIDE_KEYS}
        self.instruments: OrderedDict[int, _Instrument] = OrderedDict()
        self.capacity = capacity

    def attach(self, msg: Open) -> _Instrument:
        inst = self.instruments.get(msg.token)
        if inst is None:
            desc = dict(self.description)
            if msg.n_in:
                desc["n_in"] = msg.n_in
            if msg.seed is not None:
                desc["seed"] = msg.seed
            try:
                device = make_device(desc)
            except (ValueError, TypeError) as e:
                raise _Fail(Err.CONFIG, f"cannot build the served device: {e}") from None
            self._check_expected(msg.description, device)
            inst = _Instrument(device, msg.token)
            self.instruments[msg.token] = inst
            while len(self.instruments) > self.capacity:
                self.instruments.popitem(last=False)
        elif msg.n_in and msg.n_in != inst.n_in:
            raise _Fail(Err.CONFIG, f"token already serves n_in={inst.n_in}, not {msg.n_in}")
        self.instruments.move_to_end(msg.token)
        return inst

    def _check_expected(self, text: str, device: Any) -> None:
        if not text:
            return
        try:
            expected = json.loads(text)
        except json.JSONDecodeError as e:
            raise _Fail(Err.CONFIG, f"OPEN description is not JSON: {e}") from None
        resolved = device.describe()
        wrong = []
        for key, want in sorted(expected.items()):
            have = self.description.get(key, resolved.get(key, "<not a parameter>"))
            if _norm(have) != _norm(want):
                wrong.append(f"{key}: host has {want!r}, emulator serves {have!r}")
        if wrong:
            raise _Fail(Err.CONFIG, "description mismatch: " + "; ".join(wrong))


# -- the board --------------------------------------------------------------------------------


@dataclass
class _Upload:
    batch_id: int
    fmt: int
    n: int
    data: bytearray
    filled: int = 0


@dataclass
class BoardStats:
    requests: int = 0
    replayed: int = 0
    """Requests answered from the reply cache (a retry of an already-handled request)."""
    cached_runs: int = 0
    """RUNs answered from the instrument's stored outputs (the batch ran before)."""
    busy: int = 0
    naks: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Board:
    """The firmware's state machine, as devices/firmware implements it, around a :class:`Lab`."""

    def __init__(
        self,
        lab: Lab,
        executor: ThreadPoolExecutor,
        *,
        n_channels: int = 255,
        max_payload: int = MAX_PAYLOAD,
        max_batch: int = 1 << 20,
        identity: str = "physnn-emulator",
    ):
        self.lab, self.executor = lab, executor
        self.n_channels, self.max_payload, self.max_batch = n_channels, max_payload, max_batch
        self.identity = identity
        self.stats = BoardStats()
        self.rng = random.Random()
        self.reset()

    def reset(self) -> None:
        """What a reset wipes: everything but the physics."""
        self.boot_id = self.rng.getrandbits(32) or 1
        self.channels: dict[int, int] = {}
        self.uploads: dict[int, _Upload] = {}
        self.cache: tuple[tuple, Frame] | None = None
        self.busy_s = 0.25

    def handle(self, ev: Frame | Damaged, send: Callable[[Frame], None]) -> None:
        if isinstance(ev, Damaged):
            if not ev.type & REPLY:
                self.stats.naks += 1
                send(self._error(ev.channel, ev.seq, Err.CRC, "frame damaged; send it again"))
            return
        if ev.type & REPLY:
            return
        self.stats.requests += 1
        if ev.version != VERSION:
            send(self._error(ev.channel, ev.seq, Err.VERSION, f"this board speaks v{VERSION}"))
            return
        key = (ev.channel, ev.seq, ev.type, crc32(ev.payload))
        if self.cache is not None and self.cache[0] == key:
            self.stats.replayed += 1
            send(self.cache[1])
            return
        try:
            reply = self._dispatch(ev, send)
        except ProtocolError as e:
            reply = self._error(ev.channel, ev.seq, Err.PAYLOAD, str(e))
        except _Fail as e:
            reply = self._error(ev.channel, ev.seq, e.code, str(e))
        if reply is None:  # the board reset while measuring
            return
        self.cache = (key, reply)
        send(reply)

    def _error(self, chan: int, seq: int, code: Err, message: str) -> Frame:
        name = Err(code).name
        self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
        return Frame(Msg.ERROR | REPLY, chan, seq, ErrorReply(code, message).pack())

    def _reply(self, req: Frame, msg: Any) -> Frame:
        return Frame(msg.TYPE, req.channel, req.seq, msg.pack())

    def _dispatch(self, ev: Frame, send: Callable[[Frame], None]) -> Frame | None:
        t = ev.type
        if t == Msg.HELLO:
            msg = Hello.unpack(ev.payload)
            self.busy_s = max(0.005, min(msg.timeout_ms / 4000, 5.0))
            caps = Cap.CONFIGURABLE | Cap.CHECKS_DESCRIPTION | Cap.BUSY | Cap.PERSISTENT
            return self._reply(ev, HelloReply(VERSION, self.n_channels, 0b11, int(caps),
                                              self.max_payload, self.max_batch, self.boot_id,
                                              self.identity))
        if t == Msg.OPEN:
            return self._open(ev, Open.unpack(ev.payload), send)
        if t == Msg.LOAD:
            return self._load(ev, Load.unpack(ev.payload))
        if t == Msg.RUN:
            return self._run(ev, Run.unpack(ev.payload), send)
        if t == Msg.FETCH:
            return self._fetch(ev, Fetch.unpack(ev.payload))
        raise _Fail(Err.TYPE, f"unknown request type 0x{t:02x}")

    def _instrument(self, chan: int) -> _Instrument:
        token = self.channels.get(chan)
        inst = self.lab.instruments.get(token) if token is not None else None
        if inst is None:
            raise _Fail(Err.NOT_OPEN, f"channel {chan} is not open (the board has reset?)")
        return inst

    def _wait(self, future: Future, ev: Frame, send: Callable[[Frame], None]) -> bool:
        """Wait for slow work, sending BUSY now and then; False if the board reset meanwhile."""
        boot = self.boot_id
        while True:
            try:
                future.result(timeout=self.busy_s)
                break
            except FutureTimeout:
                self.stats.busy += 1
                send(self._reply(ev, Busy()))
                if self.boot_id != boot:
                    return False
            except Exception:  # noqa: BLE001 - the caller reports the work's own error
                break
        return self.boot_id == boot

    def _open(self, ev: Frame, msg: Open, send: Callable[[Frame], None]) -> Frame | None:
        if ev.channel >= self.n_channels:
            raise _Fail(Err.CHANNEL, f"channel {ev.channel} does not exist (0..{self.n_channels - 1})")
        work = self.executor.submit(self.lab.attach, msg)  # building a simulator takes a while
        if not self._wait(work, ev, send):
            return None
        inst = work.result()  # raises its _Fail
        self.channels[ev.channel] = msg.token
        self.uploads.pop(ev.channel, None)
        spec = inst.device.spec
        dom = spec.domain
        return self._reply(ev, SpecReply(
            spec.n_in, spec.n_out, dom.lo, dom.hi, tuple(dom.levels or ()),
            spec.time_per_query_s, spec.energy_per_query_j, inst.measured, spec.name,
            spec.output_units,
        ))

    def _check_batch(self, inst: _Instrument, fmt: int, n: int) -> Format:
        if fmt not in (Format.F32, Format.F64):
            raise _Fail(Err.FORMAT, f"sample format {fmt} is not supported (0: f32, 1: f64)")
        if not 1 <= n <= self.max_batch:
            raise _Fail(Err.TOO_LARGE, f"batch of {n} samples; this board takes 1..{self.max_batch}")
        return Format(fmt)

    def _load(self, ev: Frame, msg: Load) -> Frame:
        inst = self._instrument(ev.channel)
        fmt = self._check_batch(inst, msg.fmt, msg.n_samples)
        es, total = fmt.dtype.itemsize, msg.n_samples * inst.n_in
        up = self.uploads.get(ev.channel)
        if up is None or (up.batch_id, up.fmt, up.n) != (msg.batch_id, msg.fmt, msg.n_samples):
            if msg.offset != 0:
                raise _Fail(Err.SEQUENCE, f"batch {msg.batch_id} must start at offset 0")
            up = self.uploads[ev.channel] = _Upload(msg.batch_id, msg.fmt, msg.n_samples,
                                                    bytearray(total * es))
        if len(msg.data) % es:
            raise _Fail(Err.PAYLOAD, f"LOAD data of {len(msg.data)} bytes is not whole samples")
        count = len(msg.data) // es
        if msg.offset > up.filled:
            raise _Fail(Err.SEQUENCE, f"LOAD at {msg.offset} leaves a gap after {up.filled}")
        if msg.offset + count > total:
            raise _Fail(Err.PAYLOAD, f"LOAD past the end of the batch ({total} elements)")
        up.data[msg.offset * es : (msg.offset + count) * es] = msg.data
        up.filled = max(up.filled, msg.offset + count)
        return self._reply(ev, LoadReply(msg.batch_id, up.filled))

    def _run(self, ev: Frame, msg: Run, send: Callable[[Frame], None]) -> Frame | None:
        inst = self._instrument(ev.channel)
        fmt = self._check_batch(inst, msg.fmt, msg.n_samples)
        same = (msg.batch_id, msg.input_crc)
        job = inst.job
        if job is not None and (job.batch_id, job.input_crc) != same:
            job.future.result()  # an earlier batch still running: it completes first
            job = None
        rec = inst.record
        if job is None and rec is not None and (rec.batch_id, rec.input_crc, rec.fmt, rec.n) == (
            *same, msg.fmt, msg.n_samples
        ):
            self.stats.cached_runs += 1
            return self._reply(ev, RunReply(msg.batch_id, rec.output_crc, inst.measured))
        if job is None:
            up = self.uploads.get(ev.channel)
            if up is None or (up.batch_id, up.fmt, up.n) != (msg.batch_id, msg.fmt, msg.n_samples):
                raise _Fail(Err.SEQUENCE, f"batch {msg.batch_id} was not loaded")
            if up.filled != msg.n_samples * inst.n_in:
                raise _Fail(Err.SEQUENCE, f"batch {msg.batch_id} is incomplete ({up.filled})")
            if crc32(up.data) != msg.input_crc:
                raise _Fail(Err.DATA_CRC, f"batch {msg.batch_id}: inputs do not match the CRC")
            data = bytes(up.data)
            job = inst.job = _Job(*same, self.executor.submit(
                inst.execute, data, fmt, msg.n_samples, msg.batch_id, msg.input_crc))
        if not self._wait(job.future, ev, send):
            return None
        inst.job = None
        exc = job.future.exception()
        if exc is not None:
            raise _Fail(Err.DEVICE, f"{type(exc).__name__}: {exc}")
        rec = inst.record
        return self._reply(ev, RunReply(msg.batch_id, rec.output_crc, inst.measured))

    def _fetch(self, ev: Frame, msg: Fetch) -> Frame:
        inst = self._instrument(ev.channel)
        rec = inst.record
        if rec is None or rec.batch_id != msg.batch_id:
            raise _Fail(Err.NO_RESULT, f"batch {msg.batch_id} has not run")
        es = Format(rec.fmt).dtype.itemsize
        total = rec.n * inst.n_out
        if msg.offset + msg.count > total or msg.count * es + FetchReply.S.size > self.max_payload:
            raise _Fail(Err.PAYLOAD, f"FETCH {msg.offset}+{msg.count} of {total} elements")
        data = rec.outputs[msg.offset * es : (msg.offset + msg.count) * es]
        return self._reply(ev, FetchReply(msg.batch_id, msg.offset, data))


# -- the line ---------------------------------------------------------------------------------


class _Line:
    """Bytes to and from the host. Writes queue and drain as the host reads, as a USB serial
    adapter holds them back (flow control); nothing is ever dropped mid-frame, except when
    the host is gone for good and ``OVERFLOW`` bytes have piled up."""

    OVERFLOW = 16 << 20

    def __init__(self) -> None:
        self.out = bytearray()
        self.overflows = 0

    def _fds(self) -> tuple[int, int] | None:
        """(read fd, write fd), or None while no host is connected."""
        raise NotImplementedError

    def _recv(self) -> bytes:
        raise NotImplementedError

    def _send(self, view: memoryview) -> int:
        raise NotImplementedError

    def _idle(self, timeout: float) -> None:
        time.sleep(timeout)

    def read(self, timeout: float) -> bytes:
        """Bytes from the host (b"" if none within ``timeout``); drains queued output too."""
        fds = self._fds()
        if fds is None:
            self.out.clear()
            self._idle(timeout)
            return b""
        r, w, _ = select.select([fds[0]], [fds[1]] if self.out else [], [], timeout)
        if w:
            self._pump()
        return self._recv() if r else b""

    def write(self, data: bytes) -> None:
        self.out += data
        if len(self.out) > self.OVERFLOW:
            self.overflows += 1
            self.out.clear()
        self._pump()

    def _pump(self) -> None:
        if self.out and self._fds() is not None:
            try:
                with memoryview(self.out) as view:
                    n = self._send(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.hangup()
                return
            del self.out[:n]

    def hangup(self) -> None:
        self.out.clear()


class _PtyLine(_Line):
    """A pseudo-terminal behind a stable symlink (as /dev/serial/by-id/... for USB boards):
    a disconnect hangs the pty up and puts a fresh one behind the same path."""

    def __init__(self, link: str | Path | None):
        super().__init__()
        self._tmpdir = None
        if link is None:
            self._tmpdir = tempfile.mkdtemp(prefix="physnn-emulator-")
            link = os.path.join(self._tmpdir, "tty")
        self.link = Path(link)
        if self.link.exists() and not self.link.is_symlink():
            raise ValueError(f"{self.link} exists and is not a symlink; choose another --link")
        self.master = self.slave = -1
        self._fresh()

    def _fresh(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass unchanged
        os.set_blocking(master, False)
        self.tty_name = os.ttyname(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(self.tty_name, tmp)
        os.replace(tmp, self.link)
        old = (self.master, self.slave)
        self.master, self.slave = master, slave  # the slave stays open: no EIO between hosts
        for fd in old:
            if fd >= 0:
                os.close(fd)

    @property
    def address(self) -> str:
        return str(self.link)

    def _fds(self) -> tuple[int, int] | None:
        return (self.master, self.master) if self.master >= 0 else None

    def _recv(self) -> bytes:
        try:
            return os.read(self.master, 1 << 16)
        except OSError:  # BlockingIOError, or EIO while nobody holds the slave
            return b""

    def _send(self, view: memoryview) -> int:
        return os.write(self.master, view)

    def hangup(self) -> None:
        super().hangup()
        self._fresh()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1
        if self.link.is_symlink():
            self.link.unlink()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


class _SocketLine(_Line):
    """A TCP server for one client at a time; pyserial opens it as ``socket://HOST:PORT``."""

    def __init__(self, address: str):
        super().__init__()
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"--socket expects HOST:PORT (e.g. 127.0.0.1:5555), got {address!r}")
        self.server = socket.create_server((host, int(port)))
        self.host, self.port = host, self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    @property
    def address(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def _fds(self) -> tuple[int, int] | None:
        return (self.conn.fileno(),) * 2 if self.conn is not None else None

    def _idle(self, timeout: float) -> None:
        r, _, _ = select.select([self.server], [], [], timeout)
        if r:  # a host connects
            self.conn, _ = self.server.accept()
            self.conn.setblocking(False)
            self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _recv(self) -> bytes:
        try:
            data = self.conn.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:  # the host closed the connection
            self.hangup()
        return data

    def _send(self, view: memoryview) -> int:
        return self.conn.send(view)

    def hangup(self) -> None:
        super().hangup()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.hangup()
        self.server.close()


# -- the emulator -----------------------------------------------------------------------------


class Emulator:
    """Serve ``device`` (see :func:`served_description`) over a pty or a loopback socket.

    ``with Emulator("sim:optical", faults=Faults(corrupt=0.05)) as emu:`` serves from a
    background thread; point a serial device at ``emu.address``. ``socket="HOST:PORT"``
    (port 0: any free one) serves TCP instead of a pty; ``link`` puts the pty behind a fixed
    path. ``max_batch`` below the host's batch size splits batches (the noise streams then
    advance differently from a direct run).
    """

    def __init__(
        self,
        device: str | Path | Mapping[str, Any],
        *,
        socket: str | None = None,
        link: str | Path | None = None,
        faults: Faults | None = None,
        max_payload: int = MAX_PAYLOAD,
        max_batch: int = 1 << 20,
        n_channels: int = 255,
    ):
        if not 64 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in 64..{MAX_PAYLOAD}, got {max_payload}")
        if not 1 <= max_batch <= 2**32 - 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 1 <= n_channels <= 255:
            raise ValueError(f"n_channels must be in 1..255, got {n_channels}")
        self.description = served_description(device)
        self.lab = Lab(self.description)
        self.faults = faults or Faults()
        self.injector = FaultInjector(self.faults)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="physnn-emulator-physics")
        kind = self.description["kind"]
        self.board = Board(self.lab, self._executor, n_channels=n_channels,
                           max_payload=max_payload, max_batch=max_batch,
                           identity=f"physnn-emulator {kind}")
        self.line: _PtyLine | _SocketLine = _SocketLine(socket) if socket else _PtyLine(link)
        self.decoder = FrameDecoder(max_payload)
        self._delayed: list[tuple[float, bytes]] = []
        self._silent_until = 0.0
        self._booting = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = time.monotonic()

    @property
    def address(self) -> str:
        """What to give the driver as ``port``."""
        return self.line.address

    @property
    def instruments(self) -> list[Any]:
        """The simulated devices served so far (oldest first)."""
        return [inst.device for inst in self.lab.instruments.values()]

    def stats(self) -> dict[str, Any]:
        insts = list(self.lab.instruments.values())
        return {
            "address": self.address,
            "faults": self.injector.stats.as_dict(),
            "board": asdict(self.board.stats),
            "instruments": len(insts),
            "samples_measured": sum(i.measured for i in insts),
            "batches_executed": sum(i.executions for i in insts),
            "garbage_bytes_received": self.decoder.stats.skipped_bytes,
            "line_overflows": self.line.overflows,
        }

    # -- running ---------------------------------------------------------------------------
    def start(self) -> Emulator:
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name="physnn-emulator",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.line.close()
        self._executor.shutdown(wait=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (or Ctrl-C in the calling thread)."""
        while not self._stop.is_set():
            self._send_due()
            if self._booting:  # after a reset: deaf and mute until booted, then a banner
                now = time.monotonic()
                if now < self._silent_until:
                    self.line.read(min(0.02, self._silent_until - now))
                    continue
                self._booting = False
                self.decoder.reset()
                self._write(BOOT_BANNER)
            data = self.line.read(0.02)
            if not data:
                continue
            for ev in self.decoder.feed(data):
                ev = self.injector.inbound(ev)
                if ev is not None:
                    self.board.handle(ev, self._send)
                if self._carry_out():
                    break

    def _send(self, frame: Frame) -> None:
        now = time.monotonic()
        for delay, raw in self.injector.outbound(frame.encode()):
            if delay:
                self._delayed.append((now + delay, raw))
            else:
                self._write(raw)
        self._carry_out()

    def _write(self, raw: bytes) -> None:
        self.line.write(raw)

    def _send_due(self) -> None:
        if not self._delayed:
            return
        now = time.monotonic()
        due = [d for d in self._delayed if d[0] <= now]
        self._delayed = [d for d in self._delayed if d[0] > now]
        for _, raw in due:
            self._write(raw)

    def _carry_out(self) -> bool:
        """Disconnect or reset if the injector says so; True if one happened."""
        what, self.injector.pending = self.injector.pending, None
        if what is None:
            return False
        self._delayed.clear()
        self.decoder.reset()
        if what == "disconnect":
            self.injector.stats.disconnects += 1
            self.line.hangup()
        else:
            self.injector.stats.resets += 1
            self.board.reset()
            self._silent_until = time.monotonic() + self.faults.reset_s
            self._booting = True
        return True


def emulate(
    device: str | Path | Mapping[str, Any],
    *,
    socket: str | None = None,
    link: str | Path | None = None,
    faults: Faults | None = None,
    max_payload: int = MAX_PAYLOAD,
    max_batch: int = 1 << 20,
    duration: float | None = None,
    stats_file: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """What ``physnn emulate`` runs: serve until Ctrl-C, SIGTERM or ``duration`` seconds;
    returns (and writes to ``stats_file``) the emulator's counters."""
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    emu = Emulator(device, socket=socket, link=link, faults=faults, max_payload=max_payload,
                   max_batch=max_batch)
    desc = emu.description
    dropped = [k for k in HOST_SIDE_KEYS if desc.get(k)]
    echo(f"physnn emulator: serving {desc['kind']} on {emu.address}"
         + (f" (now {emu.line.tty_name})" if isinstance(emu.line, _PtyLine) else ""))
    if dropped:
        echo(f"  {', '.join(dropped)} are applied by the host around the serial device, not here")
    if emu.faults.any:
        echo(f"  faults: {emu.faults}")
    echo(f"  use it with: --set device.kind=serial --set device.port={emu.address}")
    echo("  Ctrl-C stops it")
    previous = None
    if threading.current_thread() is threading.main_thread():
        def _term(*_: object) -> None:
            raise KeyboardInterrupt
        previous = signal.signal(signal.SIGTERM, _term)
    emu.start()
    try:
        if duration is None:
            while True:
                time.sleep(3600)
        time.sleep(duration)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    stats = emu.stats()
    text = json.dumps(stats, indent=2)
    if stats_file is not None:
        with atomic_path(stats_file) as tmp:
            tmp.write_text(text + "\n")
    echo(text)
    return stats
