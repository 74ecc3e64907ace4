"""A shared serial port, the link's counters, settings and errors.

A ``Port`` (one transport, its frame decoder, its handshake and the sequence numbers of
its requests) is opened once per process and shared by every device on it, each on its own
channel: one board or one emulator serves all blocks of a network. ``PORTS`` is the
registry that hands out ports by name and closes one when its last device leaves.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from .protocol import Damaged, Frame, FrameDecoder, HelloReply
from .transport import SerialTransport, Transport


class SerialLinkError(ConnectionError):
    """The link failed after every bounded retry and reconnect; the batch was not measured."""


class LinkDown(Exception):
    """No valid reply after all retries, or the port failed: reopen it."""


class Reopen(Exception):
    """The board lost the channel (it has reset): handshake, OPEN, restart the batch."""


class Restart(Exception):
    """The board lost or rejected the batch's data: send the batch again."""


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
    inexact_resumes: int = 0
    """Checkpoints loaded whose board state could not be restored (a board without
    ``Cap.STATE``): the run went on from the board's current noise streams."""

    def as_dict(self) -> dict[str, int]:
        """The counters by name (what ``stats_file`` holds per device)."""
        return asdict(self)


@dataclass(frozen=True)
class LinkSettings:
    """The numbers that bound every wait and retry (ranges: ``serial_device.SETTINGS``)."""

    baudrate: int = 115200
    timeout: float = 1.0
    write_timeout: float = 5.0
    retries: int = 5
    reconnects: int = 3
    reconnect_delay: float = 0.5
    run_timeout: float = 600.0
    max_payload: int = 65535
    max_batch: int = 0
    trace_bytes: int = 32

    @classmethod
    def from_mapping(cls, values: Mapping[str, float | int]) -> LinkSettings:
        """Settings from checked values (integers stay integers, the rest become floats)."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown link setting(s) {unknown}; allowed: {sorted(known)}")
        out = cls()
        for key, value in values.items():
            object.__setattr__(out, key, int(value) if known[key] == "int" else float(value))
        return out


def slug(text: str) -> str:
    """A port or device name as a logger name: its last path part, other characters as _."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", os.path.basename(text.rstrip("/")) or text)


class Port:
    """An open transport, its decoder and handshake, shared by every device on it."""

    def __init__(self, name: str, transport: Transport, baudrate: int):
        self.name, self.transport, self.baudrate = name, transport, baudrate
        self.is_open = False
        self.decoder = FrameDecoder()
        self.pending: deque[Frame | Damaged] = deque()
        self.lock = threading.RLock()
        self.seq = secrets.randbelow(0x10000)
        self.hello: HelloReply | None = None
        self.boot_id: int | None = None
        self.users: dict[int, str] = {}
        self.published: dict[str, dict[str, int]] = {}

    def open(self) -> None:
        """Open the transport and forget any partial frame of an earlier connection."""
        try:
            self.transport.open()
        except OSError as e:
            self.is_open = False
            raise LinkDown(f"cannot open {self.name}: {e}") from None
        self.is_open = True
        self.decoder.reset()
        self.pending.clear()

    def close(self) -> None:
        """Close the transport; the next request handshakes again."""
        if self.is_open:
            try:
                self.transport.close()
            except OSError:
                pass
        self.is_open = False
        self.hello = None

    def next_seq(self) -> int:
        """A fresh sequence number: replies to earlier requests can never match it."""
        self.seq = (self.seq + 1) & 0xFFFF
        return self.seq


class Ports:
    """The ports this process has open: a port opens once, its devices share it."""

    def __init__(self) -> None:
        self.ports: dict[str, Port] = {}
        self.lock = threading.Lock()

    def get(self, name: str, baudrate: int, write_timeout: float,
            transport: Transport | None = None) -> Port:
        """The port called ``name``, opened on first use over ``transport`` (default: pyserial)."""
        with self.lock:
            port = self.ports.get(name)
            if port is None:
                transport = transport or SerialTransport(name, baudrate, write_timeout)
                port = self.ports[name] = Port(name, transport, baudrate)
            elif port.baudrate != baudrate:
                raise ValueError(
                    f"{name} is already open at {port.baudrate} baud; every device on one "
                    f"port must use the same baudrate (got {baudrate})"
                )
            elif transport is not None and transport is not port.transport:
                raise ValueError(
                    f"{name} is already open over another transport; give every device on "
                    "one port the same transport object"
                )
            return port

    def release(self, name: str, channel: int | None) -> None:
        """``channel`` is free again; the last device to leave closes the port."""
        with self.lock:
            port = self.ports.get(name)
            if port is None:
                return
            with port.lock:
                if channel is not None:
                    port.users.pop(channel, None)
                if not port.users:
                    port.close()
                    del self.ports[name]


PORTS = Ports()
