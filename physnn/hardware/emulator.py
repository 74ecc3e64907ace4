"""``physnn emulate``: a simulated device served with the serial protocol, faults included.

The emulator lets the real driver (``physnn.hardware.serial_device.SerialDevice``) and a
whole training run use the hardware path without hardware, over a pseudo-terminal (the
driver opens it like any serial port) or a loopback TCP socket (``socket://HOST:PORT``). It
is built in three layers, as a lab bench is, one module each:

- the physics and the board (``physnn.hardware.board``: ``Lab``, ``Board``):
  the simulated devices, which survive a board reset, and the firmware's state, which does not;
- the line (``physnn.hardware.lines``): a pseudo-terminal or a socket;
- the faults on the line (``physnn.hardware.faults``: ``Faults``,
  ``FaultInjector``): corrupted and dropped frames in both directions, replies delayed
  past the host's timeout, bursts of garbage, disconnects and board resets, all seeded.

This module wires them together and serves from a background thread (``Emulator``) or
until Ctrl-C (``emulate``, what the CLI runs).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_path
from ..core.registry import KINDS, load_description
from .board import HOST_SIDE_KEYS, Board, BoardStats, InlineExecutor, Instrument, Lab
from .faults import FaultInjector, Faults, FaultStats
from .lines import Line, PtyLine, SocketLine
from .protocol import MAX_PAYLOAD, Frame, FrameDecoder

__all__ = ["BOOT_BANNER", "HOST_SIDE_KEYS", "Board", "BoardStats", "Emulator", "FaultInjector",
           "FaultStats", "Faults", "InlineExecutor", "Instrument", "Lab", "Line", "PtyLine",
           "SocketLine", "emulate", "served_description"]

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


class Emulator:
    """Serve ``device`` (see ``served_description``) over a pty or a loopback socket.

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
        self.line: PtyLine | SocketLine = SocketLine(socket) if socket else PtyLine(link)
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
        """Counters of the line, the faults injected, the board and the physics."""
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
        """Serve from a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name="physnn-emulator",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the line (a host sees a disconnect)."""
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
        """Serve until ``stop`` (or Ctrl-C in the calling thread)."""
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
                seen = self.injector.inbound(ev)
                if seen is not None:
                    self.board.handle(seen, self._send)
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
         + (f" (now {emu.line.tty_name})" if isinstance(emu.line, PtyLine) else ""))
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
