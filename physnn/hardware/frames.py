"""Frames of the physnn serial protocol: the header, the checksums, a resyncing decoder, and
the codes (message types, errors, capabilities, sample formats) a frame carries.

A frame is ``sync(2) version type channel flags seq(2) length(2) hcrc(2) payload crc32(4)``:
16 bytes of overhead around at most 65,535 payload bytes. The header has its own CRC-16 so
a corrupted length is rejected at once (the decoder never waits for a frame that is not
coming) and a frame whose payload is damaged still names its sequence number, so the
receiver can ask for it again immediately instead of waiting for a timeout. Everything is
little-endian. ``physnn.hardware.protocol`` adds the payloads and re-exports all of this.
"""

from __future__ import annotations

import binascii
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag

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
    SAVE = 0x06
    """Only to boards with ``Cap.STATE``: a chunk of the channel's physics state."""
    RESTORE = 0x07
    """Only to boards with ``Cap.STATE``: a chunk of a state to put back (applied when whole)."""
    BUSY = 0x7E
    """Only as a reply (type 0xFE): still working on this request; keep waiting."""
    ERROR = 0x7F
    """Only as a reply (type 0xFF): the request failed, see ``Err``."""


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
    STATE = 16  # SAVE and RESTORE a channel's physics state: a resumed run continues exactly


class Format(IntEnum):
    """Sample formats on the wire (IEEE 754, little-endian)."""

    F32 = 0
    F64 = 1

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of one sample in this format."""
        return np.dtype("<f4") if self is Format.F32 else np.dtype("<f8")


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): the header check."""
    return binascii.crc_hqx(data, 0xFFFF)


def crc32(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 (IEEE 802.3, as zlib): the frame check and the batch checks."""
    return zlib.crc32(data) & 0xFFFFFFFF


def type_name(t: int) -> str:
    """A frame type's name for traces and errors (``RUN``, ``RUN_REPLY``, ``0x42``)."""
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
        """The frame's bytes on the wire."""
        return encode_frame(self.type, self.channel, self.seq, self.payload, self.version)

    @property
    def name(self) -> str:
        """The frame type's name (see ``type_name``)."""
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
        """The frame type's name (see ``type_name``)."""
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
    """What the decoder has seen: frames, damaged frames and the bytes it skipped."""

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
        """Every frame (intact or damaged) that ``data`` completes, in order."""
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
