"""An in-memory line: the driver against a board in the same thread, faults scripted, time virtual.

A pty or a socket needs a second thread and real time, so a test of a timeout waits for it
and a loaded machine can turn a reply into a late one. Here the host's end
(``MemoryTransport``) and the board's end (``BoardEnd``) are two byte pipes in one
object; each read by the host first lets the board answer what has arrived, and a read that
finds nothing lets the ``VirtualClock`` run on instead of sleeping. Faults are not
drawn at random but scripted by frame number (``LineScript``), so every test says
exactly what goes wrong and when:

    transport, board = memory_board({"kind": "sim:optical", "camera_shape": [8, 8]},
                                    script=LineScript(drop_replies={5}))
    dev = SerialDevice("mem://optical", transport=transport, clock=transport.clock, n_in=16)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .board import Board, InlineExecutor, Lab
from .emulator import served_description
from .protocol import MAX_PAYLOAD, Frame, FrameDecoder

GARBAGE = b"\x00\xa5noise\xa5\x5a\x01"
"""Line noise with a false sync pair in it: what a scripted garbage burst puts on the line."""


class VirtualClock:
    """Time that passes only when someone waits: timeouts cost nothing and never race."""

    def __init__(self, start: float = 0.0):
        self.t = float(start)

    def now(self) -> float:
        """The virtual time in seconds."""
        return self.t

    def sleep(self, seconds: float) -> None:
        """Advance the time by ``seconds`` at once."""
        self.t += max(0.0, seconds)


@dataclass(frozen=True)
class LineScript:
    """Faults at given frames, numbered from 1 in each direction over the transport's life:
    requests are what the host writes, replies what the board writes (BUSY included)."""

    drop_replies: Collection[int] = frozenset()
    corrupt_replies: Collection[int] = frozenset()
    """The reply's last CRC byte is flipped: the header is intact, the frame reads as damaged."""
    duplicate_replies: Collection[int] = frozenset()
    garbage_before: Collection[int] = frozenset()
    """``GARBAGE`` goes on the line just before these replies."""
    drop_requests: Collection[int] = frozenset()
    corrupt_requests: Collection[int] = frozenset()
    disconnect_at: Collection[int] = frozenset()
    """The cable is pulled as the host writes these requests: the write fails, bytes in
    flight are lost, reads and writes fail until the host opens the transport again."""
    silent_from: int | None = None
    """From this request on the board hears nothing (a hung board: only timeouts)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            numbers = (value,) if f.name == "silent_from" else value
            if value is None:
                continue
            if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in numbers):
                raise ValueError(f"LineScript.{f.name} needs frame numbers >= 1, got {value!r}")
            if f.name != "silent_from":
                object.__setattr__(self, f.name, frozenset(value))


def _damage(raw: bytes) -> bytes:
    """``raw`` with its last CRC-32 byte flipped: still a frame, but a damaged one."""
    return raw[:-1] + bytes([raw[-1] ^ 0xFF])


class MemoryTransport:
    """The host's end of an in-memory line (a ``physnn.hardware.transport.Transport``).

    ``peer`` is called at every read before the host looks for bytes: it is how the far
    end (a ``BoardEnd``) answers in the same thread. ``clock`` runs on by ``timeout``
    whenever a read finds nothing; give the device the same clock.
    """

    def __init__(self, script: LineScript | None = None, clock: VirtualClock | None = None):
        self.script = script or LineScript()
        self.clock = clock or VirtualClock()
        self.peer: Callable[[], None] | None = None
        self.is_open = False
        self.to_board = bytearray()
        self.to_host = bytearray()
        self.connections = 0
        """Times the host has opened the line (the far end resets its decoder on a new one)."""
        self.requests = 0
        self.replies = 0

    # -- the host's end ---------------------------------------------------------------------
    def open(self) -> None:
        """Plug the cable (back) in: a fresh connection, nothing in flight."""
        self.to_board.clear()
        self.to_host.clear()
        self.is_open = True
        self.connections += 1

    def close(self) -> None:
        """Unplug; bytes in flight are lost."""
        self.is_open = False
        self.to_board.clear()
        self.to_host.clear()

    def _check_open(self) -> None:
        if not self.is_open:
            raise OSError("the in-memory line is not connected")

    def read(self, n: int, timeout: float) -> bytes:
        """Everything the board has sent (the far end answers first); b"" after ``timeout``
        virtual seconds if nothing came."""
        self._check_open()
        if self.peer is not None:
            self.peer()
        self._check_open()
        if not self.to_host:
            self.clock.sleep(timeout)
            return b""
        data = bytes(self.to_host)
        self.to_host.clear()
        return data

    def write(self, data: bytes) -> None:
        """One request onto the line, as the script has it arrive (or not)."""
        self._check_open()
        self.requests += 1
        k, s = self.requests, self.script
        if k in s.disconnect_at:
            self.close()
            raise OSError(f"the line went down (scripted disconnect at request {k})")
        if k in s.drop_requests or (s.silent_from is not None and k >= s.silent_from):
            return
        self.to_board += _damage(data) if k in s.corrupt_requests else data

    def reset_input(self) -> None:
        """Forget what the board has sent and the host has not read."""
        self.to_host.clear()

    # -- the far end ------------------------------------------------------------------------
    def far_read(self) -> bytes:
        """What the host has written since the far end last looked."""
        data = bytes(self.to_board)
        self.to_board.clear()
        return data

    def far_write(self, raw: bytes) -> None:
        """One reply frame onto the line, as the script has it arrive (or not)."""
        self.replies += 1
        k, s = self.replies, self.script
        out = GARBAGE if k in s.garbage_before else b""
        if k not in s.drop_replies:
            raw = _damage(raw) if k in s.corrupt_replies else raw
            out += raw * (2 if k in s.duplicate_replies else 1)
        if self.is_open:
            self.to_host += out


class BoardEnd:
    """Serves ``board`` at the far end of ``transport``, in the thread that reads the host's end."""

    def __init__(self, board: Board, transport: MemoryTransport):
        self.board, self.transport = board, transport
        self.decoder = FrameDecoder(board.max_payload)
        self.connection = transport.connections
        transport.peer = self.pump

    def pump(self) -> None:
        """Decode what the host has sent and answer every complete request."""
        t = self.transport
        if t.connections != self.connection:  # a new connection: a partial frame never ends
            self.decoder.reset()
            self.connection = t.connections
        for ev in self.decoder.feed(t.far_read()):
            self.board.handle(ev, self._send)

    def _send(self, frame: Frame) -> None:
        self.transport.far_write(frame.encode())


def memory_board(
    device: str | Path | Mapping[str, Any],
    *,
    script: LineScript | None = None,
    clock: VirtualClock | None = None,
    max_payload: int = MAX_PAYLOAD,
    max_batch: int = 1 << 20,
    n_channels: int = 255,
) -> tuple[MemoryTransport, Board]:
    """An emulated board serving ``device`` (as ``physnn.hardware.emulator.emulate``
    takes it) behind an in-memory line; the board does its work inline and never sends BUSY."""
    lab = Lab(served_description(device))
    board = Board(lab, InlineExecutor(), n_channels=n_channels, max_payload=max_payload,
                  max_batch=max_batch, identity=f"physnn-memory {lab.description['kind']}")
    transport = MemoryTransport(script, clock)
    BoardEnd(board, transport)
    return transport, board
