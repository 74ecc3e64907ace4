"""The physnn serial protocol, version 1: frames, checksums, message payloads, a resyncing decoder.

This module is the one source of truth of the wire format. ``devices/PROTOCOL.md`` documents
the same bytes for firmware authors, ``devices/firmware/`` implements them in C and
``tests/test_protocol.py`` pins them byte for byte. Everything is little-endian.

A frame is ``sync(2) version type channel flags seq(2) length(2) hcrc(2) payload crc32(4)``:
16 bytes of overhead around at most 65,535 payload bytes. The header has its own CRC-16 so
a corrupted length is rejected at once (the decoder never waits for a frame that is not
coming) and a frame whose payload is damaged still names its sequence number, so the
receiver can ask for it again immediately instead of waiting for a timeout.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar

import numpy as np

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER = struct.Struct("<2sBBBBHH")  # sync, version, type, channel, flags, seq, length
HEADER_SIZE = HEADER.size + 2  # + header CRC-16
TRAILER_SIZE = 4  # CRC-32 of header and payload
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
MAX_PAYLOAD = 0xFFFF
REPLY = 0x80
"""A reply's type is its request's type with this bit set."""
BROADCAST = 0xFF
"""Channel byte of frames that concern the board, not one of its devices (HELLO)."""


class ProtocolError(ValueError):
    """A frame or payload that does not follow the protocol."""


class Msg(IntEnum):
    """Request types; the reply to a request has type ``request | REPLY``."""

    HELLO = 0x01
    OPEN = 0x02
    LOAD = 0x03
    RUN = 0x04
    FETCH = 0x05
    BUSY = 0x7E
    """Only as a reply (type 0xFE): still working on this request; keep waiting."""
    ERROR = 0x7F
    """Only as a reply (type 0xFF): the request failed, see :class:`Err`."""


class Err(IntEnum):
    """Error codes of an ERROR reply and what the host does about each."""

    CRC = 1  # the request arrived damaged: resend it now
    VERSION = 2  # unsupported protocol version: give up
    TYPE = 3  # unknown request type: give up
    PAYLOAD = 4  # malformed payload: give up
    CHANNEL = 5  # no such channel on this board: give up
    NOT_OPEN = 6  # channel not opened (the board has reset): HELLO, OPEN, restart the batch
    CONFIG = 7  # the board cannot be what OPEN asked for (n_in, description): give up
    TOO_LARGE = 8  # batch larger than the board can hold: give up (lower max_batch)
    SEQUENCE = 9  # LOAD gap or unknown batch: restart the batch
    DATA_CRC = 10  # the loaded inputs do not match RUN's CRC: restart the batch
    NO_RESULT = 11  # FETCH of a batch that has not run: restart the batch
    DEVICE = 12  # the device rejected the inputs or failed to measure: give up
    FORMAT = 13  # sample format not supported: give up


class Cap(IntFlag):
    """Capabilities a board announces in its HELLO reply."""

    CONFIGURABLE = 1  # OPEN's n_in and seed choose what the channel serves (the emulator)
    CHECKS_DESCRIPTION = 2  # OPEN's description keys are compared with what is served
    BUSY = 4  # sends BUSY replies while a slow request (OPEN, RUN) is being worked on
    PERSISTENT = 8  # the last batch's outputs and counters survive a board reset


class Format(IntEnum):
    """Sample formats on the wire (IEEE 754, little-endian)."""

    F32 = 0
    F64 = 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<f4") if self is Format.F32 else np.dtype("<f8")


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): the header check."""
    return binascii.crc_hqx(data, 0xFFFF)


def crc32(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 (IEEE 802.3, as zlib): the frame check and the batch checks."""
    return zlib.crc32(data) & 0xFFFFFFFF


def type_name(t: int) -> str:
    base = t & ~REPLY & 0xFF
    try:
        name = Msg(base).name
    except ValueError:
        name = f"0x{base:02x}"
    return name + ("_REPLY" if t & REPLY else "")


# -- frames ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One decoded (or to-be-encoded) frame."""

    type: int
    channel: int
    seq: int
    payload: bytes = b""
    version: int = VERSION

    def encode(self) -> bytes:
        return encode_frame(self.type, self.channel, self.seq, self.payload, self.version)

    @property
    def name(self) -> str:
        return type_name(self.type)


@dataclass(frozen=True)
class Damaged:
    """A frame whose header is intact but whose payload failed its CRC: ask for it again."""

    type: int
    channel: int
    seq: int
    length: int

    @property
    def name(self) -> str:
        return type_name(self.type)


def encode_frame(
    type: int, channel: int, seq: int, payload: bytes = b"", version: int = VERSION
) -> bytes:
    """The bytes of one frame on the wire."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds the maximum {MAX_PAYLOAD}")
    for what, v, hi in (("type", type, 0xFF), ("channel", channel, 0xFF), ("seq", seq, 0xFFFF)):
        if not 0 <= v <= hi:
            raise ProtocolError(f"frame {what} must be in 0..{hi}, got {v}")
    head = HEADER.pack(SYNC, version, type, channel, 0, seq, len(payload))
    head += crc16(head).to_bytes(2, "little")
    body = head + payload
    return body + crc32(body).to_bytes(4, "little")


@dataclass
class DecoderStats:
    frames: int = 0
    damaged: int = 0
    header_errors: int = 0
    skipped_bytes: int = 0


class FrameDecoder:
    """Turns a byte stream into frames, whatever arrives: garbage, split or damaged frames.

    ``feed`` never raises on any input and never waits for more than one frame's bytes: it
    hunts for the sync pair, checks the header CRC and the length limit before trusting a
    length, and on any failure resumes the hunt one byte after the failed sync, so a valid
    frame hidden behind garbage or a truncated frame is still found. The buffer never holds
    more than ``OVERHEAD + max_payload`` bytes between calls.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in 0..{MAX_PAYLOAD}, got {max_payload}")
        self.max_payload = max_payload
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._wanted = HEADER_SIZE

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def wanted(self) -> int:
        """How many more bytes would complete what is pending (a read size hint, >= 1)."""
        return max(1, self._wanted)

    def reset(self) -> None:
        """Forget a partial frame (after a reconnect: its rest will never come)."""
        self.stats.skipped_bytes += len(self._buf)
        self._buf.clear()
        self._wanted = HEADER_SIZE

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | Damaged]:
        buf = self._buf
        buf += data
        out: list[Frame | Damaged] = []
        st = self.stats
        pos, n = 0, len(buf)
        self._wanted = HEADER_SIZE
        while True:
            i = buf.find(SYNC, pos)
            if i < 0:  # keep a trailing first sync byte: its partner may come next
                keep = 1 if n > pos and buf[-1] == SYNC[0] else 0
                st.skipped_bytes += n - keep - pos
                pos = n - keep
                self._wanted = HEADER_SIZE - keep
                break
            st.skipped_bytes += i - pos
            pos = i
            if n - pos < HEADER_SIZE:
                self._wanted = HEADER_SIZE - (n - pos)
                break
            _, version, typ, chan, _flags, seq, length = HEADER.unpack_from(buf, pos)
            hcrc = int.from_bytes(buf[pos + HEADER.size : pos + HEADER_SIZE], "little")
            if crc16(buf[pos : pos + HEADER.size]) != hcrc or length > self.max_payload:
                st.header_errors += 1
                st.skipped_bytes += 1
                pos += 1
                continue
            end = pos + HEADER_SIZE + length + TRAILER_SIZE
            if n < end:
                self._wanted = end - n
                break
            with memoryview(buf) as mv:
                ok = crc32(mv[pos : end - TRAILER_SIZE]) == int.from_bytes(
                    mv[end - TRAILER_SIZE : end], "little"
                )
            if not ok:
                st.damaged += 1
                st.skipped_bytes += 1
                out.append(Damaged(typ, chan, seq, length))
                pos += 1  # resume the hunt inside it: the length may have been garbage
                continue
            st.frames += 1
            payload = bytes(buf[pos + HEADER_SIZE : end - TRAILER_SIZE])
            out.append(Frame(typ, chan, seq, payload, version))
            pos = end
        del buf[:pos]
        return out


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
        return self.S.pack(min(self.timeout_ms, 0xFFFFFFFF))

    @classmethod
    def unpack(cls, p: bytes) -> Hello:
        return cls(*_unpack(cls.S, p, "HELLO", exact=True))


@dataclass(frozen=True)
class HelloReply:
    """Who the board is and what it can do."""

    TYPE: ClassVar[int] = Msg.HELLO | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<BBBBHII")
    version: int
    n_channels: int
    formats: int
    """Bit ``f`` set: :class:`Format` ``f`` is supported."""
    caps: int
    max_payload: int
    max_batch: int
    boot_id: int
    """Changes at every boot: the host sees that the board has reset."""
    identity: str

    def pack(self) -> bytes:
        head = self.S.pack(self.version, self.n_channels, self.formats, self.caps,
                           self.max_payload, self.max_batch, self.boot_id)
        return head + _pack_str(self.identity)

    @classmethod
    def unpack(cls, p: bytes) -> HelloReply:
        head = _unpack(cls.S, p, "HELLO reply")
        identity, _ = _unpack_str(p, cls.S.size)
        return cls(*head, identity)


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
        raw = self.description.encode("utf-8")
        return self.S.pack(self.n_in, self.seed is not None, self.seed or 0, self.token,
                           len(raw)) + raw

    @classmethod
    def unpack(cls, p: bytes) -> Open:
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
        return (
            self.S.pack(self.n_in, self.n_out, len(self.levels), self.lo, self.hi)
            + struct.pack(f"<{len(self.levels)}d", *self.levels)
            + self.T.pack(self.time_per_query_s, self.energy_per_query_j, self.measured)
            + _pack_str(self.name) + _pack_str(self.units)
        )

    @classmethod
    def unpack(cls, p: bytes) -> SpecReply:
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
        return self.S.pack(self.batch_id, self.fmt, self.n_samples, self.offset) + self.data

    @classmethod
    def unpack(cls, p: bytes) -> Load:
        return cls(*_unpack(cls.S, p, "LOAD"), p[cls.S.size :])


@dataclass(frozen=True)
class LoadReply:
    TYPE: ClassVar[int] = Msg.LOAD | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<II")
    batch_id: int
    filled: int
    """Elements of the batch received so far (contiguous from 0)."""

    def pack(self) -> bytes:
        return self.S.pack(self.batch_id, self.filled)

    @classmethod
    def unpack(cls, p: bytes) -> LoadReply:
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
        return self.S.pack(self.batch_id, self.fmt, self.n_samples, self.input_crc)

    @classmethod
    def unpack(cls, p: bytes) -> Run:
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
        return self.S.pack(self.batch_id, self.output_crc, self.measured)

    @classmethod
    def unpack(cls, p: bytes) -> RunReply:
        return cls(*_unpack(cls.S, p, "RUN reply", exact=True))


@dataclass(frozen=True)
class Fetch:
    TYPE: ClassVar[int] = Msg.FETCH
    S: ClassVar[struct.Struct] = struct.Struct("<III")
    batch_id: int
    offset: int
    count: int

    def pack(self) -> bytes:
        return self.S.pack(self.batch_id, self.offset, self.count)

    @classmethod
    def unpack(cls, p: bytes) -> Fetch:
        return cls(*_unpack(cls.S, p, "FETCH", exact=True))


@dataclass(frozen=True)
class FetchReply:
    TYPE: ClassVar[int] = Msg.FETCH | REPLY
    S: ClassVar[struct.Struct] = struct.Struct("<II")
    batch_id: int
    offset: int
    data: bytes = b""

    def pack(self) -> bytes:
        return self.S.pack(self.batch_id, self.offset) + self.data

    @classmethod
    def unpack(cls, p: bytes) -> FetchReply:
        return cls(*_unpack(cls.S, p, "FETCH reply"), p[cls.S.size :])


@dataclass(frozen=True)
class Busy:
    """BUSY reply (no payload): the silence timer restarts, the host keeps waiting."""

    TYPE: ClassVar[int] = Msg.BUSY | REPLY

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, p: bytes) -> Busy:
        if p:
            raise ProtocolError(f"BUSY reply: payload of {len(p)} bytes, expected 0")
        return cls()


@dataclass(frozen=True)
class ErrorReply:
    TYPE: ClassVar[int] = Msg.ERROR | REPLY
    code: int
    message: str = ""

    def pack(self) -> bytes:
        return bytes([self.code]) + _pack_str(self.message)

    @classmethod
    def unpack(cls, p: bytes) -> ErrorReply:
        if not p:
            raise ProtocolError("ERROR reply: empty payload")
        message, _ = _unpack_str(p, 1)
        return cls(p[0], message)

    @property
    def code_name(self) -> str:
        try:
            return Err(self.code).name
        except ValueError:
            return f"error {self.code}"


MESSAGES: dict[int, type] = {
    cls.TYPE: cls
    for cls in (Hello, HelloReply, Open, SpecReply, Load, LoadReply, Run, RunReply, Fetch,
                FetchReply, Busy, ErrorReply)
}
"""Frame type -> payload class."""


def decode_payload(frame: Frame):
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
        elif k in ("input_crc", "output_crc", "token", "boot_id"):
            v = f"0x{v:08x}"
        elif k == "code":
            v = msg.code_name
        fields.append(f"{k}={v}")
    return " ".join([head, *fields])


def hexdump(data: bytes, limit: int) -> str:
    """``data``'s first ``limit`` bytes in hex, with the number of bytes left out."""
    shown = data[:limit].hex(" ")
    return shown + (f" ...(+{len(data) - limit})" if len(data) > limit else "")

