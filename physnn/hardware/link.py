"""The host side of the serial protocol: one request and its reply, and one batch, recovered.

What makes a night of training on a flaky link safe:

- every request is retried a bounded number of times (``retries``), every wait has an explicit
  silence limit (``timeout``), the port is reopened a bounded number of times per batch
  (``reconnects``) and then ``SerialLinkError`` says what happened: nothing loops forever;
- a retried batch is never measured twice: RUN is idempotent on the board (same token, batch
  id and input CRC -> the stored outputs), and the board's running count of measured samples
  is checked after every batch, so a duplicate would show in ``LinkStats.duplicated``;
- a reply is matched to its request by channel and sequence number, so a late reply to an
  earlier try is discarded (``stale``) and a damaged one triggers a resend at once;
- after a board reset the link sees the new boot id or a NOT_OPEN error, handshakes again and
  restarts the batch; after a disconnect it reopens the transport.

Each ``Link`` is one device's conversation on its own channel of a shared
``physnn.hardware.port.Port``. Waits are timed on an injectable clock, so the whole
state machine runs deterministically against an in-memory board in tests.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO, TypeVar

from ..core.atomic import atomic_path
from .port import (
    PORTS,
    LinkDown,
    LinkSettings,
    LinkStats,
    Port,
    Reopen,
    Restart,
    SerialLinkError,
    slug,
)
from .protocol import (
    BROADCAST,
    OVERHEAD,
    REPLY,
    VERSION,
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
    Run,
    RunReply,
    SpecReply,
    crc32,
    hexdump,
    summarize,
)
from .transport import POLL_S, SYSTEM_CLOCK, Clock, Transport

__all__ = ["PORTS", "Link", "LinkSettings", "LinkStats", "Port", "SerialLinkError"]

T = TypeVar("T")


class Link:
    """One device's channel on a shared port: handshake, OPEN, and batches with bounded recovery.

    ``shape`` is ``(n_in, n_out)`` when known in advance (a declared spec): a board that
    reports another shape is refused. ``expect`` holds description keys the board must
    match (sent in OPEN, checked by boards with ``CHECKS_DESCRIPTION``).
    """

    def __init__(
        self,
        port: str,
        settings: LinkSettings,
        *,
        n_in: int | None = None,
        seed: int | None = None,
        channel: int | str = "auto",
        user_name: str | None = None,
        expect: Mapping[str, Any] | None = None,
        allowed_keys: tuple[str, ...] = (),
        trace: str | None = None,
        stats_file: Path | None = None,
        shape: tuple[int, int] | None = None,
        transport: Transport | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self.port_name, self.settings, self.clock = port, settings, clock
        self.n_in_wanted, self.seed_wanted, self.channel_wanted = n_in, seed, channel
        self.user_name, self.trace_target, self.stats_file = user_name, trace, stats_file
        self.expect = dict(expect or {})
        self.allowed_keys = allowed_keys
        self.shape = shape
        self.transport = transport
        self.stats = LinkStats()
        self.token = secrets.randbits(64)
        self.port: Port | None = None
        self.channel: int | None = None
        self._release: weakref.finalize | None = None
        self._ready = False
        self._opened_boot: int | None = None
        self._board_base: int | None = None
        self._completed = 0
        self._batch_id = 0
        self._trace_file: TextIO | None = None
        self._t0 = clock.now()
        self.log = logging.getLogger(f"physnn.serial.{slug(user_name or port)}")

    @property
    def name(self) -> str:
        """The device's name in logs, traces and the stats file."""
        return self.user_name or f"{slug(self.port_name)}-ch{self.channel}"

    @property
    def hello(self) -> HelloReply | None:
        """The board's handshake (None while not connected)."""
        return self.port.hello if self.port is not None else None

    def _port(self) -> Port:
        if self.port is None:
            raise LinkDown(f"{self.port_name} is not connected")
        return self.port

    def _hello_now(self) -> HelloReply:
        hello = self._port().hello
        if hello is None:
            raise LinkDown(f"{self.port_name}: no handshake")
        return hello

    # -- lifecycle ------------------------------------------------------------------------
    def connect(self, owner: object) -> SpecReply:
        """Open (or share) the port, handshake, take a channel, OPEN it; the board's spec.

        The channel is released when ``owner`` (the device) is garbage collected.
        """
        s = self.settings
        port = PORTS.get(self.port_name, s.baudrate, s.write_timeout, self.transport)
        self.port = port
        failure: BaseException | None = None
        with port.lock:
            try:
                if not port.is_open:
                    port.open()
                if port.hello is None:
                    self._hello()
                self.channel = self._take_channel(port)
                self._release = weakref.finalize(owner, PORTS.release, self.port_name, self.channel)
                self.log = logging.getLogger(f"physnn.serial.{slug(self.name)}")
                reply = self._open_channel()
            except (LinkDown, Reopen, Restart) as e:
                failure = SerialLinkError(f"{self.port_name}: handshake failed: {e}")
                if (self.transport is None and "://" not in self.port_name
                        and not os.path.exists(self.port_name)):
                    failure = FileNotFoundError(
                        f"serial port {self.port_name} does not exist: is the board plugged in "
                        "(or `physnn emulate` running)?"
                    )
            except BaseException as e:
                failure = e
        if failure is not None:
            self._abandon()
            raise failure
        self.log.info("connected to %r on %s channel %d: %s", self.board, self.port_name,
                      self.channel, reply)
        return reply

    @property
    def board(self) -> str:
        """The board's identity from its handshake ('' before the first connection)."""
        hello = self.hello
        return hello.identity if hello else ""

    def close(self) -> None:
        """Free the channel (the last device closes the port) and the trace file."""
        if self._release is not None:
            self._release()
        self._release, self.port, self.channel, self._ready = None, None, None, False
        if self._trace_file is not None:
            self._trace_file.close()
            self._trace_file = None

    def _abandon(self) -> None:
        if self._release is not None:
            self._release()
        else:
            PORTS.release(self.port_name, None)
        self._release, self.port, self.channel = None, None, None

    def _take_channel(self, port: Port) -> int:
        n = self._hello_now().n_channels
        if self.channel_wanted != "auto":
            c = int(self.channel_wanted)
            if c >= n:
                raise ValueError(f"{self.port_name}: channel {c} does not exist; the board has {n}")
            if c in port.users:
                raise ValueError(
                    f"{self.port_name}: channel {c} is already used by {port.users[c]}")
        else:
            free = [c for c in range(n) if c not in port.users]
            if not free:
                raise ValueError(
                    f"{self.port_name}: all {n} channels of {self._hello_now().identity!r} are "
                    "in use by devices of this process; close one, or connect more hardware"
                )
            c = free[0]
        port.users[c] = self.user_name or f"channel {c}"
        return c

    # -- one board batch, with bounded recovery ---------------------------------------------
    def batch(self, data: bytes, n: int, fmt: Format) -> bytes:
        """Measure ``n`` samples (``data``: their inputs on the wire) once; their outputs."""
        st = self.stats
        self._batch_id = self._batch_id % 0xFFFFFFFF + 1
        batch_id, in_crc = self._batch_id, crc32(data)
        st.samples_sent += n
        try:
            out = self.recovering(f"batch of {n} samples not measured", f"batch {batch_id}",
                                  lambda: self._transfer(batch_id, fmt, n, data, in_crc))
        except BaseException:
            st.lost += n
            self.publish()
            raise
        st.samples_received += n
        st.batches += 1
        self.publish()
        return out

    def recovering(self, what: str, label: str, op: Callable[[], T]) -> T:
        """``op()`` on a ready link, run again after a board reset (``Reopen``/``Restart``) or
        a reconnect (``LinkDown``), within the settings' bounds; then a ``SerialLinkError``
        saying ``what`` failed. Batches and state transfers recover the same way; ``label``
        names the attempt in the trace."""
        downs = restarts = 0
        while True:
            try:
                self._ensure_ready()
                return op()
            except LinkDown as e:
                downs += 1
                if downs > self.settings.reconnects:
                    raise SerialLinkError(
                        f"{self.name}: {what}: {e}; gave up after {self.settings.reconnects} "
                        f"reconnects (counters: {self.stats.as_dict()})"
                    ) from None
                self._reconnect(str(e))
            except (Reopen, Restart) as e:
                restarts += 1
                self.stats.restarts += 1
                if isinstance(e, Reopen):  # handshake again: the new boot id counts it
                    self.forget_handshake()
                self._event(f"restart {label}: {e}")
                if restarts > self.settings.retries + 1:
                    raise SerialLinkError(
                        f"{self.name}: {what}: the board kept losing it ({e}) after {restarts} "
                        "restarts"
                    ) from None

    def _ensure_ready(self) -> None:
        if self.port is None:
            raise SerialLinkError(f"{self.port_name}: the link is closed; connect() it first")
        port = self.port
        with port.lock:
            if not port.is_open:
                port.open()
            if port.hello is None:
                self._hello()
            if not self._ready or self._opened_boot != port.boot_id:
                self._open_channel()

    def forget_handshake(self) -> None:
        """The board lost the channel (it has reset): HELLO and OPEN again before going on."""
        self._ready = False
        self._port().hello = None

    @property
    def board_measured(self) -> int:
        """The board's running count of measured samples on this channel, as the host keeps it."""
        return (self._board_base or 0) + self._completed

    def counts_from(self, measured: int) -> None:
        """The board's running count continues from ``measured`` (a restored state), so
        the duplicate and state-loss checks of later batches compare with that."""
        self._board_base = measured - self._completed

    def _reconnect(self, why: str) -> None:
        self.stats.reconnects += 1
        self.log.warning("link down (%s); reopening %s", why, self.port_name)
        self._event(f"reconnect: {why}")
        port = self._port()
        with port.lock:
            port.close()
            self._ready = False
        self.clock.sleep(self.settings.reconnect_delay)

    def _hello(self) -> None:
        port = self._port()
        msg = Hello(int(self.settings.timeout * 1000))
        reply = HelloReply.unpack(self._exchange(msg, BROADCAST).payload)
        if reply.version != VERSION:
            raise SerialLinkError(
                f"{self.port_name}: the board speaks protocol version {reply.version}; this "
                f"driver speaks {VERSION}"
            )
        if port.boot_id is not None and reply.boot_id != port.boot_id:
            self.stats.board_resets += 1
            self.log.warning("%s has reset (boot id %08x -> %08x)", self.port_name, port.boot_id,
                             reply.boot_id)
            self._event("board reset detected (new boot id)")
        port.hello, port.boot_id = reply, reply.boot_id

    def _open_channel(self) -> SpecReply:
        port, hello = self._port(), self._hello_now()
        description = ""
        if self.expect:
            if not Cap(hello.caps) & Cap.CHECKS_DESCRIPTION:
                raise ValueError(
                    f"unknown serial setting(s) {sorted(self.expect)}; allowed: "
                    f"{sorted(self.allowed_keys)} (other keys describe the served "
                    f"device, and the board {hello.identity!r} does not check them)"
                )
            description = json.dumps(self.expect, sort_keys=True)
        msg = Open(self.n_in_wanted or 0, self.seed_wanted, self.token, description)
        if len(msg.pack()) > min(self.settings.max_payload, hello.max_payload):
            raise ValueError(f"{self.port_name}: the description keys do not fit in one frame")
        reply = SpecReply.unpack(self._exchange(msg).payload)
        if self.n_in_wanted is not None and reply.n_in != self.n_in_wanted:
            raise ValueError(
                f"{self.port_name} channel {self.channel}: the board's device {reply.name!r} has "
                f"n_in={reply.n_in}, but n_in={self.n_in_wanted} is needed here (a network "
                "block's input width); use a board or channel with that many inputs"
            )
        if self.shape is not None and (reply.n_in, reply.n_out) != self.shape:
            raise SerialLinkError(f"{self.port_name}: the board's device changed its shape")
        self.shape = (reply.n_in, reply.n_out)
        expected = self.board_measured
        if self._board_base is None:
            self._board_base = reply.measured - self._completed
        elif reply.measured < expected:
            self._state_loss(reply.measured, expected)
        self._ready, self._opened_boot = True, port.boot_id
        return reply

    def _state_loss(self, measured: int, expected: int) -> None:
        self.stats.state_losses += 1
        self._board_base = measured - self._completed
        self.log.warning(
            "the board counts %d measured samples, %d were expected: it lost its state (power "
            "loss?); a batch in flight may have been measured twice", measured, expected
        )

    def _transfer(self, batch_id: int, fmt: Format, n: int, data: bytes, in_crc: int) -> bytes:
        """LOAD the inputs, RUN once, FETCH the outputs: the batch's outputs."""
        es = fmt.dtype.itemsize
        limit = min(self.settings.max_payload, self._hello_now().max_payload)
        assert self.shape is not None  # set by the OPEN that made the link ready
        n_in, n_out = self.shape
        total = n * n_in
        per = max(1, (limit - Load.S.size) // es)
        view = memoryview(data)
        for off in range(0, total, per):
            chunk = bytes(view[off * es : (off + per) * es])
            r = LoadReply.unpack(self._exchange(Load(batch_id, fmt, n, off, chunk)).payload)
            if r.batch_id != batch_id or r.filled < min(off + per, total):
                raise Restart(f"LOAD reply for batch {r.batch_id} filled {r.filled}")
        rr = RunReply.unpack(self._exchange(Run(batch_id, fmt, n, in_crc)).payload)
        if rr.batch_id != batch_id:
            raise Restart(f"RUN reply for batch {rr.batch_id}, expected {batch_id}")
        self._check_count(rr.measured, n)
        out = self._fetch(batch_id, n * n_out, es, limit, rr.output_crc)
        self._completed += n
        return out

    def _check_count(self, measured: int, n: int) -> None:
        """Compare the board's running count with ours: duplicates and lost state show here."""
        base = self._board_base or 0
        expected = base + self._completed + n
        if measured > expected:
            dup = measured - expected
            self.stats.duplicated += dup
            self._board_base = base + dup
            self.log.warning("the board measured %d sample(s) more than asked", dup)
        elif measured < expected:
            self._state_loss(measured - n, expected - n)

    def _fetch(self, batch_id: int, total: int, es: int, limit: int, out_crc: int) -> bytes:
        per = max(1, (limit - FetchReply.S.size) // es)
        out = bytearray()
        for off in range(0, total, per):
            count = min(per, total - off)
            fr = FetchReply.unpack(self._exchange(Fetch(batch_id, off, count)).payload)
            if fr.batch_id != batch_id or fr.offset != off or len(fr.data) != count * es:
                raise Restart(f"FETCH reply batch {fr.batch_id} offset {fr.offset}")
            out += fr.data
        if crc32(out) != out_crc:
            raise Restart("outputs do not match the board's CRC")
        return bytes(out)

    # -- one request and its reply ----------------------------------------------------------
    def _exchange(self, msg: Any, channel: int | None = None) -> Frame:
        """Send ``msg`` and return its reply, resending it at most ``retries`` times."""
        port = self._port()
        chan = self.channel if channel is None else channel
        assert chan is not None
        retries = self.settings.retries
        with port.lock:
            seq = port.next_seq()
            frame = Frame(msg.TYPE, chan, seq, msg.pack())
            raw = frame.encode()
            for attempt in range(retries + 1):
                if attempt:
                    self.stats.retries += 1
                self._write(port, raw, frame)
                reply = self._await(port, msg.TYPE, chan, seq)
                if reply is not None:
                    return reply
            raise LinkDown(
                f"no valid reply to {Msg(msg.TYPE).name} after {retries + 1} tries "
                f"({self.settings.timeout:g} s timeout each)"
            )

    def _write(self, port: Port, raw: bytes, frame: Frame) -> None:
        st = self.stats
        try:
            port.transport.write(raw)
        except OSError as e:
            raise LinkDown(f"write failed: {e}") from None
        st.frames_sent += 1
        st.bytes_sent += len(raw)
        if self.trace_target:
            self._trace(">", frame)

    def _await(self, port: Port, want: int, chan: int, seq: int) -> Frame | None:
        """The reply to (chan, seq), or None to resend now (timeout, damage, NAK)."""
        s, st, clock = self.settings, self.stats, self.clock
        limit = min(s.max_payload, port.hello.max_payload if port.hello else s.max_payload)
        frame_s = 20.0 * (OVERHEAD + limit) / s.baudrate
        start = clock.now()
        quiet_until, hard = start + s.timeout, start + 2 * s.timeout + frame_s
        while True:
            while port.pending:
                verdict = self._judge(port.pending.popleft(), want, chan, seq)
                if verdict == "busy":
                    now = clock.now()
                    quiet_until, hard = now + s.timeout, max(hard, start + s.run_timeout)
                elif verdict == "resend":
                    return None
                elif isinstance(verdict, Frame):
                    return verdict
            now = clock.now()
            if now >= quiet_until or now >= hard:
                st.timeouts += 1
                self._event(f"timeout waiting for the reply to seq {seq}")
                return None
            try:
                data = port.transport.read(port.decoder.wanted(), POLL_S)
            except OSError as e:
                raise LinkDown(f"read failed: {e}") from None
            if data:
                st.bytes_received += len(data)
                quiet_until = clock.now() + s.timeout
                skipped = port.decoder.stats.skipped_bytes
                port.pending.extend(port.decoder.feed(data))
                garbage = port.decoder.stats.skipped_bytes - skipped
                if garbage:
                    st.skipped_bytes += garbage
                    self._event(f"skipped {garbage} byte(s) (noise or a damaged frame)")

    def _judge(self, ev: Frame | Damaged, want: int, chan: int, seq: int) -> Frame | str | None:
        """What one received frame means for the request (chan, seq): the reply, "busy",
        "resend", or None (not ours: discarded)."""
        st = self.stats
        mine = ev.seq == seq and ev.channel == chan and bool(ev.type & REPLY)
        if isinstance(ev, Damaged):
            st.crc_errors += 1
            self._trace("<", ev)
            return "resend" if mine else None
        st.frames_received += 1
        if not mine or ev.type not in (want | REPLY, Msg.ERROR | REPLY, Msg.BUSY | REPLY):
            st.stale += 1
            self._trace("<", ev, " (stale: discarded)")
            return None
        self._trace("<", ev)
        try:
            if ev.type == Msg.ERROR | REPLY:
                self._board_error(ErrorReply.unpack(ev.payload), want)
                st.naks += 1
                return "resend"
            if ev.type == Msg.BUSY | REPLY:
                st.busy += 1
                return "busy"
        except ProtocolError as e:
            raise SerialLinkError(f"{self.port_name}: malformed reply from the board: {e}") from None
        return ev

    def _board_error(self, err: ErrorReply, want: int) -> None:
        """Raise what an ERROR reply means; return for a NAK (resend)."""
        what = f"the board answered {Msg(want).name} with {err.code_name}: {err.message}"
        code = err.code
        if code == Err.CRC:
            return
        if code == Err.NOT_OPEN:
            raise Reopen(what)
        if code in (Err.SEQUENCE, Err.DATA_CRC, Err.NO_RESULT):
            raise Restart(what)
        if code in (Err.CONFIG, Err.TOO_LARGE, Err.DEVICE, Err.FORMAT, Err.CHANNEL):
            raise ValueError(f"{self.port_name} channel {self.channel}: {what}")
        raise SerialLinkError(f"{self.port_name}: {what}")

    # -- trace and counters -----------------------------------------------------------------
    def _trace(self, arrow: str, ev: Frame | Damaged, note: str = "") -> None:
        if not self.trace_target:
            return
        text = summarize(ev) + note
        raw = ev.encode() if isinstance(ev, Frame) else b""
        line = f"{text} | {hexdump(raw, self.settings.trace_bytes)}" if raw else text
        self._trace_line(f"{arrow} {line}")

    def _event(self, text: str) -> None:
        self.log.debug(text)
        if self.trace_target:
            self._trace_line(f"! {text}")

    def _trace_line(self, text: str) -> None:
        stamp = f"{self.clock.now() - self._t0:11.6f}"
        if self.trace_target == "log":
            self.log.debug("%s %s", stamp, text)
            return
        if self._trace_file is None:
            assert self.trace_target is not None
            self._trace_file = open(self.trace_target, "a", buffering=1)  # noqa: SIM115
        self._trace_file.write(f"{stamp} {self.name} {text}\n")

    def publish(self) -> None:
        """Share this device's counters on its port and rewrite ``stats_file`` with them."""
        if self.port is None:
            return
        self.port.published[self.name] = self.stats.as_dict()
        if self.stats_file is not None:
            with atomic_path(self.stats_file) as tmp:
                tmp.write_text(json.dumps(self.port.published, indent=2))
