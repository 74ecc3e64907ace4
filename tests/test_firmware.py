"""The reference firmware (devices/firmware): it compiles for the AVR with Debian's toolchain,
and its protocol core, built natively, answers the real driver over a pseudo-terminal."""

import os
import re
import shutil
import subprocess
import tty
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn.core import make_device
from physnn.hardware.protocol import (
    REPLY,
    Err,
    ErrorReply,
    Format,
    FrameDecoder,
    Hello,
    HelloReply,
    Load,
    Msg,
    Open,
    Run,
    RunReply,
    crc32,
    encode_frame,
)

FIRMWARE = Path(__file__).resolve().parents[1] / "devices" / "firmware"
N_IN, N_OUT, MAX_BATCH, MAX_PAYLOAD = 5, 7, 3, 64  # small: batches and samples span frames


def _make(build: Path, *targets: str, defs: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(FIRMWARE), f"BUILD={build}", f"DEFS={defs}",
                           *targets], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("avr-gcc") is None or shutil.which("make") is None,
                    reason="avr-gcc not installed (apt-get install gcc-avr avr-libc; .ci/run "
                    "installs it)")
def test_avr_firmware_compiles_and_fits_an_atmega328p(tmp_path):
    p = _make(tmp_path, "avr", "size")
    assert p.returncode == 0, p.stdout + p.stderr  # -Wall -Wextra -Werror
    hexfile = (tmp_path / "firmware.hex").read_text()
    assert hexfile.startswith(":") and hexfile.rstrip().endswith(":00000001FF")
    flash = int(re.search(r"Program:\s+(\d+) bytes", p.stdout).group(1))
    ram = int(re.search(r"Data:\s+(\d+) bytes", p.stdout).group(1))
    assert flash < 32256 - 512 and ram < 2048 - 512, p.stdout  # room for stack and bootloader


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """The firmware's protocol core as a native program behind a pseudo-terminal."""
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("no C compiler / make to build the firmware natively")
    build = tmp_path_factory.mktemp("fw")
    defs = (f"-DFW_N_IN={N_IN} -DFW_N_OUT={N_OUT} -DFW_MAX_BATCH={MAX_BATCH} "
            f"-DFW_MAX_PAYLOAD={MAX_PAYLOAD}")
    p = _make(build, "host", defs=defs)
    assert p.returncode == 0, p.stdout + p.stderr
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([str(build / "physnn-fw-host")], stdin=master, stdout=master)
    os.close(master)
    yield os.ttyname(slave)
    proc.kill()
    proc.wait()
    os.close(slave)


def expected(x: torch.Tensor) -> torch.Tensor:
    """board_host.c's device: y[j] = 2 * x[j % n_in] + j, in float32."""
    j = torch.arange(N_OUT)
    return 2.0 * x[:, j % N_IN] + j.to(torch.float32)


def test_driver_measures_through_the_c_firmware(board):
    dev = make_device({"kind": "serial", "port": board, "n_in": N_IN, "timeout": 0.5})
    try:
        s = dev.spec
        assert (s.n_in, s.n_out, s.domain.lo, s.domain.hi) == (N_IN, N_OUT, 0.0, 1.0)
        assert s.name == "serial:avr-pwm-adc" and s.time_per_query_s == float(np.float32(0.002))
        assert dev.board == "physnn-fw-avr 1.0"
        x = torch.rand(11, N_IN, generator=torch.Generator().manual_seed(0))
        assert torch.equal(dev(x), expected(x))  # 4 board batches, 2 LOADs each
        st = dev.link_stats
        assert st.batches == 4 and st.samples_received == 11
        assert st.lost == st.duplicated == st.retries == 0
    finally:
        dev.close()


def test_fixed_board_refuses_what_it_cannot_be(board):
    with pytest.raises(ValueError, match=f"n_in={N_IN}.*n_in=74"):
        make_device({"kind": "serial", "port": board, "n_in": 74, "timeout": 0.5})
    with pytest.raises(ValueError, match="unknown serial setting.*camera_shape"):
        make_device({"kind": "serial", "port": board, "camera_shape": [8, 8], "timeout": 0.5})


class Raw:
    """Frames straight onto the firmware's line, replies straight off it."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.decoder = FrameDecoder()

    def ask(self, raw: bytes, n: int = 1) -> list:
        os.write(self.fd, raw)
        out = []
        while len(out) < n:
            out += self.decoder.feed(os.read(self.fd, 4096))
        return out


def test_firmware_resyncs_naks_damage_and_never_runs_a_batch_twice(board):
    line = Raw(board)
    try:
        hello = encode_frame(Msg.HELLO, 0xFF, 10, Hello(500).pack())
        (r1,) = line.ask(b"\x00\xa5garbage\xa5\x5a\x01" + hello)  # noise, a false sync
        info = HelloReply.unpack(r1.payload)
        assert (info.max_batch, info.max_payload, info.n_channels) == (MAX_BATCH, MAX_PAYLOAD, 1)
        (r2,) = line.ask(hello)  # the same request again: the same reply, byte for byte
        assert r2 == r1

        bad = bytearray(encode_frame(Msg.OPEN, 0, 11, Open(N_IN, None, 99).pack()))
        bad[14] ^= 0xFF  # payload damage: the header still names the request
        (nak,) = line.ask(bytes(bad))
        assert nak.type == Msg.ERROR | REPLY and nak.seq == 11
        assert ErrorReply.unpack(nak.payload).code == Err.CRC
        (spec,) = line.ask(encode_frame(Msg.OPEN, 0, 11, Open(N_IN, None, 99).pack()))
        assert spec.type == Msg.OPEN | REPLY

        x = np.arange(2 * N_IN, dtype="<f4") / 10
        line.ask(encode_frame(Msg.LOAD, 0, 12, Load(1, Format.F32, 2, 0, x.tobytes()).pack()))
        run = Run(1, Format.F32, 2, crc32(x.tobytes())).pack()
        (a,) = line.ask(encode_frame(Msg.RUN, 0, 13, run))
        (b,) = line.ask(encode_frame(Msg.RUN, 0, 14, run))  # a new request, the same batch
        ra, rb = RunReply.unpack(a.payload), RunReply.unpack(b.payload)
        assert ra.measured == rb.measured == 2 and ra.output_crc == rb.output_crc
        y = expected(torch.from_numpy(x.reshape(2, N_IN))).numpy().astype("<f4").tobytes()
        assert ra.output_crc == crc32(y)
    finally:
        os.close(line.fd)


@pytest.mark.skipif(not os.environ.get("PHYSNN_SERIAL_PORT"),
                    reason="opt-in hardware test: set PHYSNN_SERIAL_PORT=/dev/ttyACM0 (a board "
                    "running devices/firmware or any firmware speaking devices/PROTOCOL.md)")
def test_a_real_board():
    dev = make_device({"kind": "serial", "port": os.environ["PHYSNN_SERIAL_PORT"],
                       "timeout": 1.0, "reconnect_delay": 2.0})
    try:
        x = dev.spec.domain.from_unit(torch.rand(10, dev.spec.n_in))
        y = dev(x)
        assert y.shape == (10, dev.spec.n_out) and torch.isfinite(y).all()
        st = dev.link_stats
        assert st.samples_received == 10 and st.lost == st.duplicated == 0
    finally:
        dev.close()
