"""The reference firmware image itself (devices/firmware, built with avr-gcc) on a simulated
ATmega328P: simavr runs the .elf, devices/firmware/simavr_pty.c puts its UART0 on a
pseudo-terminal, and the real ``serial`` device drives it. This covers what
tests/test_firmware.py cannot: board_avr.c (UART setup and baud divisor, the receive
interrupt and ring, the PWM/ADC code, .noinit state across a reset) and the AVR build of
protocol.c (8-bit ints, avr-libc floats), with line faults and resets injected between the
driver and the board."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn.core import make_device
from physnn.hardware.protocol import Cap, Damaged, Frame, FrameDecoder, Msg

FIRMWARE = Path(__file__).resolve().parents[1] / "devices" / "firmware"
SIMAVR_H = Path("/usr/include/simavr/sim_avr.h")
INSTALL = "apt-get install gcc-avr avr-libc simavr libsimavr-dev; .ci/run installs them"
# short waits: the simulated board answers in milliseconds, so a lost reply costs little
FAST = {"timeout": 0.3, "reconnect_delay": 0.05, "retries": 5, "reconnects": 3}


def _missing() -> str | None:
    for tool in ("avr-gcc", "make", "cc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed ({INSTALL})"
    if not SIMAVR_H.exists():
        return f"simavr not installed: no {SIMAVR_H} ({INSTALL})"
    return None


def _build(build: Path, baud: int) -> Path:
    """firmware.elf for ``baud`` and the simavr-pty harness, in ``build``."""
    p = subprocess.run(["make", "-C", str(FIRMWARE), f"BUILD={build}", f"BAUD={baud}", "sim"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return build


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    why = _missing()
    if why:
        pytest.skip(why)
    return _build(tmp_path_factory.mktemp("simavr"), 115200)


class SimBoard:
    """The simulated board: simavr-pty running firmware.elf behind the symlink ``link``, its
    EEPROM kept in a file beside it (it survives ``stop``/``start`` as across a power cycle)."""

    def __init__(self, build: Path, link: Path, *options: str):
        self.build, self.link, self.options = build, link, options
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Power the board up: a fresh process, SRAM cleared, the EEPROM as it was left."""
        self.proc = subprocess.Popen(
            [str(self.build / "simavr-pty"), str(self.build / "firmware.elf"), "-l",
             str(self.link), "-e", str(self.link) + ".eeprom", *self.options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # "pty PATH" once the firmware's UART listens
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            line = self.proc.stdout.readline() if ready else b""  # unbuffered: select sees all
            if line.startswith(b"pty "):
                return
            if not line and self.proc.poll() is not None:
                break
        self.proc.kill()
        raise AssertionError(f"simavr-pty did not start: {self.proc.communicate()}")

    def reset(self) -> None:
        """Pull the RESET pin: the MCU reboots, its SRAM (.noinit state) survives."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> str:
        """Stop the simulation; its log (UART setup, resets, simulated time) on stderr."""
        assert self.proc is not None
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err.decode()


@pytest.fixture
def board(build, tmp_path):
    b = SimBoard(build, tmp_path / "tty")
    yield b
    b.stop()


class Relay(threading.Thread):
    """A pty between the driver and the board that damages chosen frames on the line.

    Frames are counted per direction from 0 as they pass (resends count too).
    ``damage_payload`` requests get one payload byte flipped (the board NAKs them),
    ``damage_header`` requests one header byte (the board sees noise and stays silent),
    ``damage_replies`` replies one payload byte (the driver sees a damaged frame);
    the ``reset_in_run``-th RUN request (counted from 1) goes out without its last byte and
    the board's RESET is pulled at once: the MCU reboots while it receives that request.
    """

    def __init__(self, board: SimBoard, *, damage_payload=(), damage_header=(),
                 damage_replies=(), reset_in_run: int | None = None):
        super().__init__(daemon=True)
        self.board = board
        self.rules = {"payload": set(damage_payload), "header": set(damage_header),
                      "reply": set(damage_replies)}
        self.reset_in_run = reset_in_run
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.to_board = os.open(board.link, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.to_board)
        self.dec = {self.master: FrameDecoder(), self.to_board: FrameDecoder()}
        self.count = {self.master: 0, self.to_board: 0}
        self.runs, self.damaged, self.resets = 0, 0, 0
        self.stop = threading.Event()
        self.start()

    def _pass(self, src: int, frame: Frame) -> bytes:
        raw, i = bytearray(frame.encode()), self.count[src]
        self.count[src] += 1
        if src == self.master:
            if i in self.rules["payload"]:
                raw[12] ^= 0xFF
            if i in self.rules["header"]:
                raw[6] ^= 0xFF
            if frame.type == Msg.RUN:
                self.runs += 1
                if self.runs == self.reset_in_run:
                    os.write(self.to_board, bytes(raw[:-1]))
                    self.board.reset()
                    self.resets += 1
                    return b""
        elif i in self.rules["reply"]:
            raw[12] ^= 0xFF
        self.damaged += bytes(raw) != frame.encode()
        return bytes(raw)

    def run(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.master, self.to_board], [], [], 0.02)
            for src in ready:
                dst = self.to_board if src == self.master else self.master
                for ev in self.dec[src].feed(os.read(src, 4096)):
                    if not isinstance(ev, Damaged):  # a reply cut by a reset: dropped
                        os.write(dst, self._pass(src, ev))

    def close(self) -> None:
        self.stop.set()
        self.join(2)
        for fd in (self.master, self.slave, self.to_board):
            os.close(fd)


def expected(x: torch.Tensor) -> torch.Tensor:
    """What board_avr.c measures through simavr-pty's wiring (PWM i -> RC -> ADC i):
    duty = (uint8)(x * 255 + 0.5), ADC = (duty * 5000 / 255 mV) * 1023 / 5000 (integer
    steps, simavr's 10-bit ADC against AVcc = 5 V), y = ADC * (5 / 1023) in float32."""
    xf = x.numpy().astype(np.float32)
    duty = (xf * np.float32(255.0) + np.float32(0.5)).astype(np.uint8).astype(np.int64)
    adc = (duty * 5000 // 255) * 1023 // 5000
    y = adc.astype(np.float32) * (np.float32(5.0) / np.float32(1023.0))
    return torch.from_numpy(y[:, np.arange(6) % 6])


def _inputs(n: int) -> torch.Tensor:
    x = torch.rand(n, 6, generator=torch.Generator().manual_seed(n))
    x[0] = torch.tensor([0.0, 1.0, 0.5, 0.1, 0.9, 0.25])  # both ends of the domain
    return x


def test_handshake_reports_the_firmware_spec(build, board):
    dev = make_device({"kind": "serial", "port": str(board.link), **FAST})
    try:
        s = dev.spec
        assert (s.n_in, s.n_out, s.domain.lo, s.domain.hi) == (6, 6, 0.0, 1.0)
        assert s.name == "serial:avr-pwm-adc" and s.output_units == "V"
        assert s.time_per_query_s == float(np.float32(0.002))  # put_f64 of a float, exactly
        assert dev.board == "physnn-fw-avr 1.0"
        hello = dev.link.hello
        assert (hello.max_batch, hello.max_payload, hello.n_channels) == (4, 128, 1)
        assert hello.caps == Cap.PERSISTENT
        assert hello.boot_id == 1  # the .elf's EEPROM image holds boots = 0: the first boot is 1
    finally:
        dev.close()
    log = board.stop()
    # board_avr.c's UBRR for 115200 baud from 16 MHz: 16 with U2X, 2.1 % fast (117647 baud)
    assert "uart: UBRR0=16 U2X0=1 -> 117647 baud" in log, log


def test_a_call_runs_load_run_fetch_on_the_mcu(board):
    dev = make_device({"kind": "serial", "port": str(board.link), **FAST})
    try:
        x = _inputs(10)
        y = dev(x)
        assert torch.equal(y, expected(x)), (y, expected(x))
        assert y[0].tolist()[:2] == [0.0, 5.0]
        st = dev.link_stats
        assert st.batches == 3 and st.samples_received == 10  # 4 + 4 + 2 (max_batch 4)
        assert st.frames_sent == 2 + 3 * 3  # HELLO, OPEN; LOAD, RUN, FETCH per board batch
        assert st.retries == st.timeouts == st.lost == st.duplicated == 0
    finally:
        dev.close()


def test_crc_errors_on_the_line_are_recovered(board):
    # requests: 0 HELLO, 1 OPEN, 2 LOAD, 3 LOAD again (after the NAK), 4 RUN, 5 FETCH,
    # 6 FETCH again (after the damaged reply), 7 LOAD of batch 2, 8 LOAD again (timeout) ...
    relay = Relay(board, damage_payload=(2,), damage_header=(7,), damage_replies=(5,))
    dev = make_device({"kind": "serial", "port": relay.path, **FAST})
    try:
        x = _inputs(7)
        assert torch.equal(dev(x), expected(x))
        st = dev.link_stats
        assert relay.damaged == 3
        assert st.naks == 1  # the board's ERROR CRC for the damaged LOAD
        assert st.crc_errors == 1  # the damaged FETCH reply
        assert st.timeouts == 1  # the board ignored the LOAD with the damaged header
        assert st.retries == 3 and st.batches == 2 and st.samples_received == 7
        assert st.lost == st.duplicated == st.restarts == 0
    finally:
        dev.close()
        relay.close()


def _check_reset_story(dev, n: int) -> None:
    """One reset during batch 2 of ``n`` samples: its RUN went unanswered (a timeout, a
    resend), the rebooted board said NOT_OPEN (a restart of the batch), the new handshake
    showed the new boot id; the pty stayed, and nothing was lost or measured twice."""
    st = dev.link_stats
    assert (st.timeouts, st.retries, st.restarts, st.board_resets) == (1, 1, 1, 1)
    assert st.reconnects == 0
    assert st.batches == 3 and st.samples_received == n
    assert st.lost == st.duplicated == 0
    assert dev.link.hello.boot_id == 2  # the EEPROM boot counter went on


def test_a_reset_while_receiving_a_run_restarts_the_batch(board):
    relay = Relay(board, reset_in_run=2)  # batch 2's RUN, cut short by the reset
    dev = make_device({"kind": "serial", "port": relay.path, **FAST})
    try:
        x = _inputs(11)
        assert torch.equal(dev(x), expected(x))
        assert relay.resets == 1
        _check_reset_story(dev, 11)
        assert dev.link_stats.state_losses == 0  # the .noinit record and count survived
    finally:
        dev.close()
        relay.close()
    assert "reset at cycle" in board.stop()


def test_a_reset_while_measuring_restarts_the_batch(build, tmp_path):
    # RESET right after ADC conversion 31: batch 1 took 4 samples x 6 channels, so this is
    # the first conversion of batch 2's second sample, halfway through its measurement
    b = SimBoard(build, tmp_path / "tty", "-r", "31")
    dev = make_device({"kind": "serial", "port": str(b.link), **FAST})
    try:
        x = _inputs(11)
        assert torch.equal(dev(x), expected(x))
        _check_reset_story(dev, 11)
        # on_run measures into scratch RAM and seals the record after: the previous batch's
        # record and the count survive a reset mid-measurement (this failed before)
        assert dev.link_stats.state_losses == 0
    finally:
        dev.close()
        log = b.stop()
    assert "reset at cycle" in log, log


def test_a_board_power_cycled_behind_its_port_reconnects(board):
    dev = make_device({"kind": "serial", "port": str(board.link), **FAST})
    try:
        x = _inputs(5)
        assert torch.equal(dev(x), expected(x))
        board.stop()  # unplugged: the pty goes away, a new one appears behind the same link
        board.start()
        assert torch.equal(dev(x), expected(x))
        st = dev.link_stats
        assert st.reconnects == 1  # the write to the vanished pty failed: port reopened
        assert dev.link.hello.boot_id == 2  # the EEPROM boot counter survived the power cycle
        assert st.state_losses == 1  # SRAM lost with the power: the board's count restarted
        assert st.batches == 4 and st.samples_received == 10
        assert st.lost == st.duplicated == 0
    finally:
        dev.close()


def test_the_firmware_at_1_mbaud(tmp_path):
    why = _missing()
    if why:
        pytest.skip(why)
    b = SimBoard(_build(tmp_path / "fw", 1_000_000), tmp_path / "tty")
    try:
        dev = make_device({"kind": "serial", "port": str(b.link), "baudrate": 1_000_000, **FAST})
        x = _inputs(6)
        assert torch.equal(dev(x), expected(x))
        assert dev.link_stats.retries == 0
        dev.close()
    finally:
        log = b.stop()
    assert "uart: UBRR0=0 U2X0=0 -> 1000000 baud" in log, log  # exact from 16 MHz
