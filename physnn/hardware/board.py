"""The emulated board: the firmware's state machine and the simulated physics behind it.

Two layers, as on a lab bench:

- the physics (``Lab``, one ``Instrument`` per host device, keyed by the host's
  token): the simulated device built from the served description with the host's ``n_in``
  and ``seed``, its random streams, its count of measured samples and the outputs of its last
  batch. It outlives a board reset, as a cavity does when its microcontroller reboots, so a
  retried batch is never measured twice and the noise streams advance exactly as in a direct
  run;
- the board (``Board``): the firmware's state (channel bindings, upload buffers, the
  reply to the last request, the boot id), which a reset wipes. It answers decoded frames and
  knows nothing of the line that carries them (``physnn.hardware.lines``,
  ``physnn.hardware.memory``).
"""

from __future__ import annotations

import io
import json
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.registry import make_device
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
    Hello,
    HelloReply,
    Load,
    LoadReply,
    Msg,
    Open,
    ProtocolError,
    Restore,
    RestoreReply,
    Run,
    RunReply,
    Save,
    SaveReply,
    SpecReply,
    crc32,
)

STATE_FORMAT = 1
"""Layout of the emulator's state blob: ``torch.save`` of ``{format, device, state}`` (the
served description as JSON, the device's ``state_dict``), read with ``weights_only=True``."""
MAX_STATE = 64 << 20
"""The largest state blob a RESTORE may announce (bytes)."""

HOST_SIDE_KEYS = ("inputs", "outputs")
"""Non-idealities physnn applies around any device kind on the host (a serial one too): the
emulator serves the bare device, so they are applied once, as in a direct run."""


class InlineExecutor(Executor):
    """Runs submitted work at once in the caller's thread: a board that never sends BUSY,
    for tests that drive it in the same thread as the host."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """The finished future of ``fn(*args, **kwargs)`` (its exception stored, not raised)."""
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - the future carries it, as a pool's would
            future.set_exception(e)
        return future


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


class Instrument:
    """One host device's simulated physics: survives board resets and disconnects."""

    def __init__(self, device: Any, token: int, served: str = ""):
        self.device, self.token = device, token
        self.served = served
        """The description it was built from (JSON): a saved state only loads into the same."""
        self.n_in, self.n_out = device.spec.n_in, device.spec.n_out
        self.measured = 0
        self.record: _Record | None = None
        self.job: _Job | None = None
        self.executions = 0

    def execute(self, data: bytes, fmt: Format, n: int, batch_id: int, input_crc: int) -> None:
        """Measure one batch and keep its outputs (RUN is answered from them when retried)."""
        dtype = torch.float64 if fmt is Format.F64 else torch.float32
        x = torch.empty((n, self.n_in), dtype=dtype)  # torch's own (aligned) memory, as direct
        x.numpy()[:] = np.frombuffer(data, fmt.dtype).reshape(n, self.n_in)
        y = self.device(x)
        out = y.detach().to("cpu", dtype).contiguous().numpy().tobytes()
        self.record = _Record(batch_id, input_crc, int(fmt), n, out, crc32(out))
        self.measured += n
        self.executions += 1

    def save_state(self) -> bytes:
        """The physics state as SAVE sends it (see ``STATE_FORMAT``)."""
        if self.job is not None:
            self.job.future.exception()  # a batch still measuring belongs to this state
        buf = io.BytesIO()
        torch.save({"format": STATE_FORMAT, "device": self.served,
                    "state": self.device.state_dict()}, buf)
        return buf.getvalue()

    def load_state(self, blob: bytes, measured: int) -> None:
        """Continue from a blob of ``save_state`` (never unpickles anything but tensors and
        plain data); the last batch's outputs are forgotten, as they belong to the old state."""
        try:
            saved = torch.load(io.BytesIO(blob), weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable blob is the same error
            raise _Fail(Err.PAYLOAD, f"not a state this board saved: {e}") from None
        fmt = saved.get("format") if isinstance(saved, dict) else None
        if fmt != STATE_FORMAT:
            raise _Fail(Err.PAYLOAD, f"state format {fmt}; this board reads {STATE_FORMAT}")
        if saved.get("device") != self.served:
            raise _Fail(Err.CONFIG, f"the state was saved from another device: {saved.get('device')}")
        if self.job is not None:
            self.job.future.exception()
            self.job = None
        try:
            self.device.load_state_dict(saved["state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise _Fail(Err.DEVICE, f"the device refused the state: {e}") from None
        self.measured, self.record = measured, None


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
        self.instruments: OrderedDict[int, Instrument] = OrderedDict()
        self.capacity = capacity

    def attach(self, msg: Open) -> Instrument:
        """The instrument of ``msg.token``, built on its first OPEN (a ``_Fail`` if it cannot be)."""
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
            inst = Instrument(device, msg.token, json.dumps(desc, sort_keys=True, default=str))
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
class _Restoring:
    key: tuple[int, int, int]  # measured, total, blob_crc
    data: bytearray
    filled: int = 0


@dataclass
class BoardStats:
    """What the board has answered, and how."""

    requests: int = 0
    replayed: int = 0
    """Requests answered from the reply cache (a retry of an already-handled request)."""
    cached_runs: int = 0
    """RUNs answered from the instrument's stored outputs (the batch ran before)."""
    busy: int = 0
    naks: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Board:
    """The firmware's state machine, as devices/firmware implements it, around a ``Lab``."""

    def __init__(
        self,
        lab: Lab,
        executor: Executor,
        *,
        n_channels: int = 255,
        max_payload: int = MAX_PAYLOAD,
        max_batch: int = 1 << 20,
        identity: str = "physnn-emulator",
    ):
        self.lab, self.executor = lab, executor
        self.n_channels, self.max_payload, self.max_batch = n_channels, max_payload, max_batch
        self.identity = identity
        self.caps = Cap.CONFIGURABLE | Cap.CHECKS_DESCRIPTION | Cap.BUSY | Cap.PERSISTENT | Cap.STATE
        """What HELLO announces (tests clear ``Cap.STATE`` to play a board without it)."""
        self.stats = BoardStats()
        self.rng = random.Random()
        self.reset()

    def reset(self) -> None:
        """What a reset wipes: everything but the physics."""
        self.boot_id = self.rng.getrandbits(32) or 1
        self.channels: dict[int, int] = {}
        self.uploads: dict[int, _Upload] = {}
        self.snapshots: dict[int, tuple[int, bytes]] = {}
        self.restores: dict[int, _Restoring] = {}
        self.cache: tuple[tuple, Frame] | None = None
        self.busy_s = 0.25

    def handle(self, ev: Frame | Damaged, send: Callable[[Frame], None]) -> None:
        """Answer one received frame through ``send`` (a retried request from the cache)."""
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
            return self._reply(ev, HelloReply(VERSION, self.n_channels, 0b11, int(self.caps),
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
        if t in (Msg.SAVE, Msg.RESTORE) and self.caps & Cap.STATE:
            if t == Msg.SAVE:
                return self._save(ev, Save.unpack(ev.payload))
            return self._restore(ev, Restore.unpack(ev.payload))
        raise _Fail(Err.TYPE, f"unknown request type 0x{t:02x}")

    def _instrument(self, chan: int) -> Instrument:
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

    def _check_batch(self, inst: Instrument, fmt: int, n: int) -> Format:
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
        assert rec is not None  # execute() stores it before the job completes
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

    def _save(self, ev: Frame, msg: Save) -> Frame:
        inst = self._instrument(ev.channel)
        if msg.offset == 0:  # a new save: the state as it is now, for every chunk of it
            self.snapshots[ev.channel] = (inst.measured, inst.save_state())
        snap = self.snapshots.get(ev.channel)
        if snap is None:
            raise _Fail(Err.SEQUENCE, "a SAVE starts at offset 0")
        measured, blob = snap
        if msg.offset > len(blob) or msg.count + SaveReply.S.size > self.max_payload:
            raise _Fail(Err.PAYLOAD, f"SAVE {msg.offset}+{msg.count} of {len(blob)} bytes")
        data = blob[msg.offset : msg.offset + msg.count]
        return self._reply(ev, SaveReply(measured, len(blob), crc32(blob), msg.offset, data))

    def _restore(self, ev: Frame, msg: Restore) -> Frame:
        inst = self._instrument(ev.channel)
        up = self.restores.get(ev.channel)
        key = (msg.measured, msg.total, msg.blob_crc)
        if up is None or up.key != key:
            if msg.offset != 0:
                raise _Fail(Err.SEQUENCE, "a RESTORE starts at offset 0")
            if msg.total > MAX_STATE:
                raise _Fail(Err.TOO_LARGE, f"a state of {msg.total} bytes; this board takes {MAX_STATE}")
            up = self.restores[ev.channel] = _Restoring(key, bytearray(msg.total))
        end = msg.offset + len(msg.data)
        if msg.offset > up.filled:
            raise _Fail(Err.SEQUENCE, f"RESTORE at {msg.offset} leaves a gap after {up.filled}")
        if end > msg.total:
            raise _Fail(Err.PAYLOAD, f"RESTORE past the end of the state ({msg.total} bytes)")
        up.data[msg.offset : end] = msg.data
        up.filled = max(up.filled, end)
        if up.filled < msg.total:
            return self._reply(ev, RestoreReply(up.filled, 0, inst.measured))
        del self.restores[ev.channel]
        if crc32(up.data) != msg.blob_crc:
            raise _Fail(Err.DATA_CRC, "the state does not match its CRC")
        inst.load_state(bytes(up.data), msg.measured)
        return self._reply(ev, RestoreReply(up.filled, 1, inst.measured))
