"""The emulator's end of the line: a pseudo-terminal or a loopback TCP socket.

Writes queue and drain as the host reads, as a USB serial adapter holds them back (flow
control); a simulated disconnect hangs the pty up (a fresh one appears behind the same path,
as udev does for a USB board) or closes the socket.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import tempfile
import time
import tty
from pathlib import Path


class Line:
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

    @property
    def address(self) -> str:
        """What the host opens to reach this line."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the line for good."""

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
        """Queue ``data`` for the host and send what the line takes now."""
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
        """Drop the connection and what was queued for it."""
        self.out.clear()


class PtyLine(Line):
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
        """The stable symlink the host opens."""
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
        """Hang the pty up and put a fresh one behind the same path."""
        super().hangup()
        self._fresh()

    def close(self) -> None:
        """Close the pty and remove its symlink (and the temporary folder, if ours)."""
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1
        if self.link.is_symlink():
            self.link.unlink()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


class SocketLine(Line):
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
        """The pyserial URL of this server."""
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
        if self.conn is None:
            return b""
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
        if self.conn is None:
            raise OSError("no host is connected")
        return self.conn.send(view)

    def hangup(self) -> None:
        """Close the client's connection; the next host may connect."""
        super().hangup()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        """Stop serving."""
        self.hangup()
        self.server.close()
