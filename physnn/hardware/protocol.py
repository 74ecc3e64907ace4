"""The physnn serial protocol, version 1: frames, checksums, message payloads, a resyncing decoder.

This module (with ``physnn.hardware.frames``, whose names it re-exports) is the one source
of truth of the wire format. ``devices/PROTOCOL.md`` documents the same bytes for firmware
authors, ``devices/firmware/`` implements them in C and ``tests/test_protocol.py`` pins them
byte for byte. Everything is little-endian. The frames live in ``frames``; here are the
payloads of each message, and a one-line summary of a frame for wire traces.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from .frames import (
    BROADCAST,
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    OVERHEAD,
    REPLY,
    SYNC,
    TRAILER_SIZE,
    VERSION,
    Cap,
    Damaged,
    DecoderStats,
    Err,
    Format,
    Frame,
    FrameDecoder,
    Msg,
    ProtocolError,
    crc16,
    crc32,
    encode_frame,
    type_name,
)

__all__ = [
    "SYNC",
    "VERSION",
    "HEADER",
    "HEADER_SIZE",
    "TRAILER_SIZE",
    "OVERHEAD",
    "MAX_PAYLOAD",
    "REPLY",
    "BROADCAST",
    "ProtocolError",
    "Msg",
    "Err",
    "Cap",
    "Format",
    "crc16",
    "crc32",
    "type_name",
    "Frame",
    "Damaged",
    "encode_frame",
    "DecoderStats",
    "FrameDecoder",
    "Hello", "HelloReply", "Open", "SpecReply", "Load", "LoadReply", "Run", "RunReply",
    "Fetch", "FetchReply", "Save", "SaveReply", "Restore", "RestoreReply", "Busy", "ErrorReply",
    "MESSAGES", "decode_payload", "summarize",
    "hexdump",
]


# -- message payloads -----------------------------------------------------------------------


def _pack_str(s: str) -> bytes:
    raw = s.encode("utf-8")[:255]
    return bytes([len(raw)]) + raw


def _unpack_str(p: bytes, at: int) -> tuple[str, int]:
    if at >= len(p) or at + 1 + p[at] > len(p):
        raise ProtocolError("payload ends inside a string")
    n = p[at]
    return p[at + 1 : at + 1 + n].decode("utf-8", errors="replace"), at + 1 + n


def _unpack(st: struct.Struct, p: bytes, what: str, exact: bool = False) -> tuple:
    if len(p) < st.size or (exact and len(p) != st.size):
        raise ProtocolError(f"{what}: payload of {len(p)} bytes, expected {st.size}")
    return st.unpack_from(p)


@dataclass(frozen=True)
class Hello:
    """HELLO request: the host's reply timeout, so a board knows when to send BUSY."""

    TYPE: ClassVar[int] = Msg.HELLO
    S: ClassVar[struct.Struct] = struct.Struct("<I")
    timeout_ms: int = 1000

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(min(self.timeout_ms, 0xFFFFFFFF))

    @classmethod
    def unpack(cls, p: bytes) -> Hello:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        return cls(*_unpack(cls.S, p, "HELLO", exact=True))


@dataclass(frozen=True)
class HelloReply:
    """Who the board is and what it can do."""

    TYPE: ClassVar[int] = Msg.HELLO | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<BBBBHII")
    version: int
    n_channels: int
    formats: int
    """Bit ``f`` set: ``Format`` ``f`` is supported."""
    caps: int
    max_payload: int
    max_batch: int
    boot_id: int
    """Changes at every boot: the host sees that the board has reset."""
    identity: str

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        head = self.S.pack(self.version, self.n_channels, self.formats, self.caps,
                           self.max_payload, self.max_batch, self.boot_id)
        return head + _pack_str(self.identity)

    @classmethod
    def unpack(cls, p: bytes) -> HelloReply:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        version, n_channels, formats, caps, max_payload, max_batch, boot_id = _unpack(
            cls.S, p, "HELLO reply")
        identity, _ = _unpack_str(p, cls.S.size)
        return cls(version, n_channels, formats, caps, max_payload, max_batch, boot_id, identity)


@dataclass(frozen=True)
class Open:
    """OPEN request: bind a channel to a device; what the host needs and expects of it."""

    TYPE: ClassVar[int] = Msg.OPEN
    S: ClassVar[struct.Struct] = struct.Struct("<HBqQH")
    n_in: int = 0
    """0: whatever the board has."""
    seed: int | None = None
    token: int = 0
    """The host device's identity: a re-OPEN with the same token reattaches to the same state."""
    description: str = ""
    """JSON of description keys the host expects (checked by CHECKS_DESCRIPTION boards)."""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        raw = self.description.encode("utf-8")
        return self.S.pack(self.n_in, self.seed is not None, self.seed or 0, self.token,
                           len(raw)) + raw

    @classmethod
    def unpack(cls, p: bytes) -> Open:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        n_in, has_seed, seed, token, n = _unpack(cls.S, p, "OPEN")
        if len(p) != cls.S.size + n:
            raise ProtocolError(f"OPEN: description of {n} bytes does not fit the payload")
        text = p[cls.S.size :].decode("utf-8", errors="replace")
        return cls(n_in, seed if has_seed else None, token, text)


@dataclass(frozen=True)
class SpecReply:
    """OPEN reply: the channel's device spec (f64 numbers: the host's domain is exact)."""

    TYPE: ClassVar[int] = Msg.OPEN | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<HHBdd")
    T: ClassVar[struct.Struct] = struct.Struct("<ddQ")
    n_in: int
    n_out: int
    lo: float
    hi: float
    levels: tuple[float, ...] = ()
    time_per_query_s: float = 0.0
    energy_per_query_j: float = 0.0
    measured: int = 0
    """Samples this device has measured for this token so far (0 for a new token)."""
    name: str = ""
    units: str = ""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return (
            self.S.pack(self.n_in, self.n_out, len(self.levels), self.lo, self.hi)
            + struct.pack(f"<{len(self.levels)}d", *self.levels)
            + self.T.pack(self.time_per_query_s, self.energy_per_query_j, self.measured)
            + _pack_str(self.name) + _pack_str(self.units)
        )

    @classmethod
    def unpack(cls, p: bytes) -> SpecReply:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        n_in, n_out, n_lv, lo, hi = _unpack(cls.S, p, "OPEN reply")
        at = cls.S.size + 8 * n_lv
        if len(p) < at + cls.T.size:
            raise ProtocolError("OPEN reply: payload too short for its levels")
        levels = struct.unpack_from(f"<{n_lv}d", p, cls.S.size)
        t, e, measured = cls.T.unpack_from(p, at)
        name, at = _unpack_str(p, at + cls.T.size)
        units, _ = _unpack_str(p, at)
        return cls(n_in, n_out, lo, hi, tuple(levels), t, e, measured, name, units)


@dataclass(frozen=True)
class Load:
    """LOAD request: ``data`` goes to element ``offset`` of batch ``batch_id``'s inputs."""

    TYPE: ClassVar[int] = Msg.LOAD
    S: ClassVar[struct.Struct] = struct.Struct("<IBII")
    batch_id: int
    fmt: int
    n_samples: int
    offset: int
    data: bytes = b""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.batch_id, self.fmt, self.n_samples, self.offset) + self.data

    @classmethod
    def unpack(cls, p: bytes) -> Load:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        batch_id, fmt, n_samples, offset = _unpack(cls.S, p, "LOAD")
        return cls(batch_id, fmt, n_samples, offset, p[cls.S.size :])


@dataclass(frozen=True)
class LoadReply:
    """LOAD reply: how much of the batch the board holds, so a gap shows at once."""

    TYPE: ClassVar[int] = Msg.LOAD | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<II")
    batch_id: int
    filled: int
    """Elements of the batch received so far (contiguous from 0)."""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.batch_id, self.filled)

    @classmethod
    def unpack(cls, p: bytes) -> LoadReply:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        return cls(*_unpack(cls.S, p, "LOAD reply", exact=True))


@dataclass(frozen=True)
class Run:
    """RUN request: measure the loaded batch once; idempotent per (token, batch_id, crc)."""

    TYPE: ClassVar[int] = Msg.RUN
    S: ClassVar[struct.Struct] = struct.Struct("<IBII")
    batch_id: int
    fmt: int
    n_samples: int
    input_crc: int

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.batch_id, self.fmt, self.n_samples, self.input_crc)

    @classmethod
    def unpack(cls, p: bytes) -> Run:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        return cls(*_unpack(cls.S, p, "RUN", exact=True))


@dataclass(frozen=True)
class RunReply:
    """The batch has been measured (now, or before: then nothing ran again)."""

    TYPE: ClassVar[int] = Msg.RUN | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<IIQ")
    batch_id: int
    output_crc: int
    measured: int
    """Samples measured for this token so far, this batch included once."""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.batch_id, self.output_crc, self.measured)

    @classmethod
    def unpack(cls, p: bytes) -> RunReply:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        return cls(*_unpack(cls.S, p, "RUN reply", exact=True))


@dataclass(frozen=True)
class Fetch:
    """FETCH request: ``count`` output elements of batch ``batch_id`` from ``offset``."""

    TYPE: ClassVar[int] = Msg.FETCH
    S: ClassVar[struct.Struct] = struct.Struct("<III")
    batch_id: int
    offset: int
    count: int

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.batch_id, self.offset, self.count)

    @classmethod
    def unpack(cls, p: bytes) -> Fetch:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        return cls(*_unpack(cls.S, p, "FETCH", exact=True))


@dataclass(frozen=True)
class FetchReply:
    """FETCH reply: the output elements asked for, echoing batch and offset to be checked."""

    TYPE: ClassVar[int] = Msg.FETCH | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<II")
    batch_id: int
    offset: int
    data: bytes = b""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.batch_id, self.offset) + self.data

    @classmethod
    def unpack(cls, p: bytes) -> FetchReply:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        batch_id, offset = _unpack(cls.S, p, "FETCH reply")
        return cls(batch_id, offset, p[cls.S.size :])


@dataclass(frozen=True)
class Save:
    """SAVE request (``Cap.STATE`` boards only): ``count`` bytes of the channel's physics
    state from byte ``offset``, so a checkpoint can carry the noise streams the board owns."""

    TYPE: ClassVar[int] = Msg.SAVE
    S: ClassVar[struct.Struct] = struct.Struct("<II")
    offset: int
    count: int

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.offset, self.count)

    @classmethod
    def unpack(cls, p: bytes) -> Save:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        return cls(*_unpack(cls.S, p, "SAVE", exact=True))


@dataclass(frozen=True)
class SaveReply:
    """SAVE reply: a chunk of the state blob, with the whole blob's size and CRC-32 (the same
    in every chunk: a board snapshots the state at offset 0) and the ``measured`` count."""

    TYPE: ClassVar[int] = Msg.SAVE | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<QIII")
    measured: int
    total: int
    """Bytes in the whole blob."""
    blob_crc: int
    offset: int
    data: bytes = b""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.measured, self.total, self.blob_crc, self.offset) + self.data

    @classmethod
    def unpack(cls, p: bytes) -> SaveReply:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        measured, total, blob_crc, offset = _unpack(cls.S, p, "SAVE reply")
        return cls(measured, total, blob_crc, offset, p[cls.S.size :])


@dataclass(frozen=True)
class Restore:
    """RESTORE request (``Cap.STATE`` boards only): ``data`` goes to byte ``offset`` of a
    state blob of ``total`` bytes; the board applies it once whole and matching ``blob_crc``."""

    TYPE: ClassVar[int] = Msg.RESTORE
    S: ClassVar[struct.Struct] = struct.Struct("<QIII")
    measured: int
    """The ``measured`` count the channel continues from."""
    total: int
    blob_crc: int
    offset: int
    data: bytes = b""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.measured, self.total, self.blob_crc, self.offset) + self.data

    @classmethod
    def unpack(cls, p: bytes) -> Restore:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        measured, total, blob_crc, offset = _unpack(cls.S, p, "RESTORE")
        return cls(measured, total, blob_crc, offset, p[cls.S.size :])


@dataclass(frozen=True)
class RestoreReply:
    """RESTORE reply: how much of the blob the board holds, and whether it has been applied
    (then ``measured`` is the restored count), so the host knows the resume is exact."""

    TYPE: ClassVar[int] = Msg.RESTORE | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<IBQ")
    filled: int
    """Bytes of the blob received so far (contiguous from 0)."""
    applied: int
    measured: int

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return self.S.pack(self.filled, self.applied, self.measured)

    @classmethod
    def unpack(cls, p: bytes) -> RestoreReply:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        return cls(*_unpack(cls.S, p, "RESTORE reply", exact=True))


@dataclass(frozen=True)
class Busy:
    """BUSY reply (no payload): the silence timer restarts, the host keeps waiting."""

    TYPE: ClassVar[int] = Msg.BUSY | REPLY

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return b""

    @classmethod
    def unpack(cls, p: bytes) -> Busy:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        if p:
            raise ProtocolError(f"BUSY reply: payload of {len(p)} bytes, expected 0")
        return cls()


@dataclass(frozen=True)
class ErrorReply:
    """ERROR reply: why a request failed (``Err`` says what the host does about it)."""

    TYPE: ClassVar[int] = Msg.ERROR | REPLY
    code: int
    message: str = ""

    def pack(self) -> bytes:
        """The payload bytes of this message (little-endian, as PROTOCOL.md lays them out)."""
        return bytes([self.code]) + _pack_str(self.message)

    @classmethod
    def unpack(cls, p: bytes) -> ErrorReply:
        """The message a payload carries; ProtocolError if the payload is malformed."""
        if not p:
            raise ProtocolError("ERROR reply: empty payload")
        message, _ = _unpack_str(p, 1)
        return cls(p[0], message)

    @property
    def code_name(self) -> str:
        """The error code's name, or ``error N`` for a code this host does not know."""
        try:
            return Err(self.code).name
        except ValueError:
            return f"error {self.code}"


MESSAGES: dict[int, Any] = {
    cls.TYPE: cls
    for cls in (Hello, HelloReply, Open, SpecReply, Load, LoadReply, Run, RunReply, Fetch,
                FetchReply, Save, SaveReply, Restore, RestoreReply, Busy, ErrorReply)
}
"""Frame type -> payload class."""


def decode_payload(frame: Frame) -> Any:
    """The message a frame carries (raises ProtocolError for an unknown type or bad payload)."""
    cls = MESSAGES.get(frame.type)
    if cls is None:
        raise ProtocolError(f"unknown frame type 0x{frame.type:02x}")
    return cls.unpack(frame.payload)


def summarize(frame: Frame | Damaged) -> str:
    """One line for a wire trace: type, channel, sequence number and the message's fields."""
    if isinstance(frame, Damaged):
        return f"{frame.name} ch={frame.channel} seq={frame.seq} len={frame.length} DAMAGED"
    head = f"{frame.name} ch={frame.channel} seq={frame.seq} len={len(frame.payload)}"
    try:
        msg = decode_payload(frame)
    except ProtocolError as e:
        return f"{head} ({e})"
    fields = []
    for k, v in vars(msg).items():
        if isinstance(v, bytes):
            v = f"<{len(v)} bytes>"
        elif k in ("input_crc", "output_crc", "blob_crc", "token", "boot_id"):
            v = f"0x{v:08x}"
        elif k == "code":
            v = msg.code_name
        fields.append(f"{k}={v}")
    return " ".join([head, *fields])


def hexdump(data: bytes, limit: int) -> str:
    """``data``'s first ``limit`` bytes in hex, with the number of bytes left out."""
    shown = data[:limit].hex(" ")
    return shown + (f" ...(+{len(data) - limit})" if len(data) > limit else "")

