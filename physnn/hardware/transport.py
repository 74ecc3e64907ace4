"""How bytes reach a board: a small ``Transport`` protocol and its pyserial implementation.

The retry state machine (``physnn.hardware.link``) only ever opens, closes, reads and
writes bytes, so anything that can do that can carry the protocol: a serial port or a
``socket://`` URL through pyserial (``SerialTransport``, the default), or an in-memory
line (``physnn.hardware.memory.MemoryTransport``) that lets tests drive the driver
against a board in the same thread, with scripted faults and a virtual clock.

Failures are reported as ``OSError`` (pyserial's ``SerialException`` is one), which the
link treats as a lost connection: it reopens the transport a bounded number of times.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import serial

POLL_S = 0.02
"""Longest single blocking read: deadlines are checked at least this often."""


@runtime_checkable
class Transport(Protocol):
    """A byte stream to one board that can be closed and opened again after a disconnect."""

    def open(self) -> None:
        """Connect (again); raise OSError if the board cannot be reached."""

    def close(self) -> None:
        """Disconnect; never raises for a transport that is already closed."""

    def read(self, n: int, timeout: float) -> bytes:
        """At least what is already waiting and up to ``n`` bytes, waiting at most ``timeout``
        seconds for them (b"" when nothing came); OSError if the connection is gone."""

    def write(self, data: bytes) -> None:
        """Send all of ``data``; OSError if the connection is gone."""

    def reset_input(self) -> None:
        """Discard whatever has been received and not read yet."""


class Clock(Protocol):
    """Where the link reads the time and waits: real time, or a test's virtual clock."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass."""


class SystemClock:
    """The wall clock: ``time.monotonic`` and ``time.sleep``."""

    def now(self) -> float:
        """Seconds on the process's monotonic clock."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class SerialTransport:
    """A device path (``/dev/ttyACM0``) or a pyserial URL (``socket://HOST:PORT``).

    A device path is opened exclusively (another process on the same board would interleave
    its frames with ours); a URL cannot be, pyserial has no lock for it.
    """

    def __init__(self, url: str, baudrate: int = 115200, write_timeout: float = 5.0):
        self.url, self.baudrate, self.write_timeout = url, baudrate, write_timeout
        self.ser: serial.SerialBase | None = None

    def open(self) -> None:
        """Open the port; a bad URL or a missing device is an OSError naming why."""
        is_url = "://" in self.url
        try:
            self.ser = serial.serial_for_url(
                self.url, baudrate=self.baudrate, timeout=POLL_S,
                write_timeout=self.write_timeout, exclusive=None if is_url else True,
            )
        except ValueError as e:  # an unknown URL scheme or a bad setting
            self.ser = None
            raise OSError(str(e)) from None
        except OSError:
            self.ser = None
            raise

    def close(self) -> None:
        """Close the port, ignoring a port that has already vanished."""
        if self.ser is not None:
            try:
                self.ser.close()
            except OSError:
                pass
        self.ser = None

    def _port(self) -> serial.SerialBase:
        if self.ser is None:
            raise OSError(f"{self.url} is not open")
        return self.ser

    def read(self, n: int, timeout: float) -> bytes:
        """pyserial's blocking read, for at least everything already buffered."""
        ser = self._port()
        if ser.timeout != timeout:  # reconfiguring a port costs a system call: only on change
            ser.timeout = timeout
        return bytes(ser.read(max(n, ser.in_waiting)))

    def write(self, data: bytes) -> None:
        """Write all of ``data`` (bounded by ``write_timeout``)."""
        self._port().write(data)

    def reset_input(self) -> None:
        """Flush the operating system's receive buffer."""
        self._port().reset_input_buffer()
