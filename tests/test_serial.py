"""The serial device and the emulator on real pseudo-terminals and sockets: bit-exact against
the simulator, bounded failure, safety limits, trace and counters, the emulate command, and
training through a faulty link that still gives the direct run's numbers exactly."""

import copy
import gc
import json
import os
import re
import subprocess
import sys
import time
import tty
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn.core import make_device
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import run
from physnn.hardware.emulator import Board, Emulator, Faults, Lab, served_description
from physnn.hardware.protocol import (
    REPLY,
    Fetch,
    FetchReply,
    Format,
    Frame,
    Load,
    Msg,
    Open,
    Run,
    RunReply,
    crc32,
)
from physnn.hardware.serial_device import SETTINGS, SerialLinkError

OPTICAL = {
    "kind": "sim:optical", "camera_shape": [8, 8],
    "camera": [{"kind": "shot", "photons": 200.0}, {"kind": "readout", "sigma": 0.05}],
}
FAST = {"timeout": 0.1, "retries": 8, "reconnect_delay": 0.02}  # tolerant of a loaded CI machine


def inputs(b, n=16, seed=0, dtype=torch.float32):
    return torch.rand(b, n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def serial(port, **kw):
    return make_device({"kind": "serial", "port": port, **FAST, **kw})


@pytest.fixture
def emu():
    with Emulator(OPTICAL) as e:
        yield e
    gc.collect()  # devices left open release the port


def test_serial_devices_equal_the_simulator_bit_for_bit(emu):
    a = serial(emu.address, n_in=16, seed=5)
    b = serial(emu.address, n_in=9, seed=6)  # a second device on the same port
    da = make_device({**OPTICAL, "n_in": 16, "seed": 5})
    db = make_device({**OPTICAL, "n_in": 9, "seed": 6})
    assert (a.channel, b.channel) == (0, 1)
    assert (a.spec.n_in, a.spec.n_out, a.spec.domain) == (16, 64, da.spec.domain)
    for i, dtype in enumerate((torch.float32, torch.float64, torch.float32)):
        for size in (1, 300):
            x = inputs(size, 16, seed=i, dtype=dtype)
            assert torch.equal(a(x), da(x))  # the noise streams stay in step call after call
            assert a(x).dtype == dtype
            assert torch.equal(b(x[:, :9]), db(x[:, :9]))
            da(x)  # keep the direct device in step with the extra call above
    assert a.accounting.device_time_s == da.accounting.device_time_s
    assert a.accounting.energy_j == da.accounting.energy_j
    st = a.link_stats
    assert st.samples_sent == st.samples_received == a.accounting.samples and st.lost == 0
    assert emu.stats()["samples_measured"] == a.accounting.samples + b.accounting.samples
    a.close()
    b.close()


def test_settings_are_declared_and_range_checked():
    for bad, match in (
        ({"timeout": 0}, r"timeout = 0 .*\[0.005, 60\]"),
        ({"retries": 1.5}, "retries = 1.5 .*integer"),
        ({"baudrate": True}, "baudrate"),
        ({"max_payload": 10}, "max_payload"),
        ({"channel": 300}, "channel must be 'auto' or 0..254"),
        ({"limits": {"lo": 1, "hi": 0}}, "limits need lo < hi"),
        ({"limits": {"low": 0}}, "limits must be a table"),
        ({"n_in": 0}, r"serial: n_in must be a whole number in 1\.\.1048576, got 0"),
    ):
        with pytest.raises(ValueError, match=match):
            serial("/dev/null-never-opened", **bad)
    with pytest.raises(ValueError, match="port must be"):
        make_device({"kind": "serial", "port": ""})
    assert all(s.lo <= s.default <= s.hi and s.doc for s in SETTINGS.values())


def test_the_documented_serial_description_builds(emu):
    path = Path(__file__).resolve().parents[1] / "devices" / "serial-emulated.toml"
    dev = make_device(path, port=emu.address, n_in=16)  # the runner overrides port-free keys too
    desc = dev.describe()
    assert desc["timeout"] == 0.5 and desc["limits"] == {"lo": 0.0, "hi": 1.0}
    assert dev.spec.n_in == 16 and dev(inputs(2)).shape == (2, 64)
    dev.close()


def test_limits_are_enforced_before_anything_is_sent(emu):
    dev = serial(emu.address, n_in=16, limits={"lo": 0.0, "hi": 0.5})
    x = inputs(4) * 0.4
    x[2, 3] = 0.7
    sent = dev.link_stats.frames_sent
    with pytest.raises(ValueError, match=r"input\[2, 3\] = 0.7 is outside the safety limits"):
        dev(x)
    with pytest.raises(ValueError, match="outside the allowed domain"):
        dev(x + 1)
    assert dev.link_stats.frames_sent == sent
    clipped = serial(emu.address, n_in=16, seed=1, limits={"hi": 0.5}, clip=True)
    ref = make_device({**OPTICAL, "n_in": 16, "seed": 1})
    assert torch.equal(clipped(x), ref(x.clamp(max=0.5)))


def test_the_emulator_refuses_a_description_it_does_not_serve(emu):
    with pytest.raises(ValueError, match=r"description mismatch: camera_shape: host has \[4, 4\]"):
        serial(emu.address, n_in=16, camera_shape=[4, 4])
    ok = serial(emu.address, n_in=16, camera_shape=[8, 8], encoding="phase")  # matching keys
    assert ok.spec.n_out == 64
    with pytest.raises(ValueError, match="serves simulated devices"):
        served_description({"kind": "serial", "port": "x"})
    with pytest.raises(ValueError, match="give a device kind"):
        served_description("no-such-thing")
    assert served_description("sim:optical") == {"kind": "sim:optical"}


def test_wire_trace_stats_file_and_a_description_that_rebuilds_offline(emu, tmp_path):
    trace, stats = tmp_path / "wire.txt", tmp_path / "link.json"
    dev = serial(emu.address, n_in=16, name="cavity", trace=str(trace), stats_file=str(stats))
    dev(inputs(3))
    dev.close()
    lines = trace.read_text().splitlines()
    assert re.match(r"\s*\d+\.\d{6} cavity > HELLO ch=255 seq=\d+ len=4 timeout_ms=100 \| a5 5a 01 01",
                    lines[0])
    text = "\n".join(lines)
    for kind in ("< HELLO_REPLY", "> OPEN", "< OPEN_REPLY", "> LOAD", "> RUN", "< RUN_REPLY",
                 "> FETCH", "< FETCH_REPLY"):
        assert kind in text
    counters = json.loads(stats.read_text())["cavity"]
    assert counters["samples_received"] == 3 and counters["frames_sent"] == len(
        [ln for ln in lines if " > " in ln])
    desc = dev.describe()
    assert desc["kind"] == "serial" and desc["spec"]["n_out"] == 64
    emu.stop()
    offline = make_device(desc)  # a run log's description: no port needed until first use
    assert offline.spec == dev.spec and not offline.is_open
    with pytest.raises(FileNotFoundError, match="does not exist: is the board plugged in"):
        offline.open()


def test_a_silent_or_vanished_board_fails_within_bounded_time(emu):
    master, slave = os.openpty()  # a port where nobody answers
    tty.setraw(slave)
    t0 = time.monotonic()
    with pytest.raises(SerialLinkError, match="no valid reply to HELLO after 3 tries"):
        serial(os.ttyname(slave), retries=2)
    assert time.monotonic() - t0 < 2.0
    os.close(master)
    os.close(slave)

    dev = serial(emu.address, n_in=16, retries=3, reconnects=1)
    dev(inputs(2))
    emu.stop()  # the cable is gone for good
    t0 = time.monotonic()
    with pytest.raises(SerialLinkError, match="not measured.*gave up after 1 reconnects"):
        dev(inputs(5))
    assert time.monotonic() - t0 < 5.0  # about (3 + 1) tries x 0.1 s x 2 connections
    assert dev.link_stats.lost == 5 and dev.link_stats.samples_received == 2


def test_socket_transport():
    with Emulator(OPTICAL, socket="127.0.0.1:0") as emu:
        assert emu.address.startswith("socket://127.0.0.1:")
        dev = serial(emu.address, n_in=16, seed=3)
        ref = make_device({**OPTICAL, "n_in": 16, "seed": 3})
        for i in range(3):
            x = inputs(50, seed=i)
            assert torch.equal(dev(x), ref(x))
        dev.close()


def test_a_batch_is_never_measured_twice_across_a_board_reset():
    """The board's state machine directly: RUN, reset, OPEN again, RUN the same batch."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        board = Board(Lab(OPTICAL), pool)
        sent: list[Frame] = []

        def ask(typ, msg, seq):
            board.handle(Frame(typ, 0, seq, msg.pack()), sent.append)
            return sent[-1]

        x = inputs(20).numpy().tobytes()
        run_msg = Run(1, Format.F32, 20, crc32(x))
        outputs = []
        for attempt in range(2):
            ask(Msg.OPEN, Open(16, 4, 1234), 10 * attempt + 1)
            assert ask(Msg.LOAD, Load(1, Format.F32, 20, 0, x), 10 * attempt + 2).type == (
                Msg.LOAD | REPLY)
            done = RunReply.unpack(ask(Msg.RUN, run_msg, 10 * attempt + 3).payload)
            fetched = ask(Msg.FETCH, Fetch(1, 0, 20 * 64), 10 * attempt + 4)
            assert fetched.type == Msg.FETCH | REPLY
            outputs.append(FetchReply.unpack(fetched.payload).data)
            assert done.measured == 20 and done.output_crc == crc32(outputs[-1])
            board.reset()
        inst = board.lab.instruments[1234]
        assert inst.executions == 1 and outputs[0] == outputs[1]
        assert board.stats.cached_runs == 1
        ref = make_device({**OPTICAL, "n_in": 16, "seed": 4})
        assert np.frombuffer(outputs[0], "<f4").tobytes() == ref(inputs(20)).numpy().tobytes()


# -- training through the emulator: the direct run's numbers, exactly ------------------------


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory):
    from physnn.experiments.config import load_config

    cfg = load_config("digits-optical").to_dict()
    cfg["device"]["camera_shape"] = [8, 8]
    cfg["network"]["hidden"] = [32, 32]
    cfg["train"].update(epochs=3, eval_every=1, inner_steps=2, lr=2e-3)
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("direct") / "run.h5"
    run(copy.deepcopy(cfg), path, progress=False)
    return cfg, read_run(path)


FAULTS = Faults(corrupt=0.06, drop=0.015, garbage=0.02, delay=0.01, delay_s=0.08,
                disconnect_after=(150,), reset_after=(400,), reset_s=0.05, seed=1)


@pytest.mark.parametrize("faults", [None, FAULTS], ids=["clean", "faults"])
def test_training_through_the_emulator_equals_the_direct_run(direct_run, faults, tmp_path):
    cfg, direct = direct_run
    stats = tmp_path / "link.json"
    with Emulator(cfg["device"], faults=faults) as emu:
        cfg = copy.deepcopy(cfg)  # the description changes, nothing else
        cfg["device"].update(kind="serial", port=emu.address, stats_file=str(stats), **FAST)
        rec = read_run(run(cfg, tmp_path / "serial.h5", progress=False).path)
        served = emu.stats()
    gc.collect()
    for key in ("test_acc", "train_acc", "loss", "train_queries", "eval_queries"):
        assert np.array_equal(rec["metrics"][key], direct["metrics"][key], equal_nan=True), key
    assert rec["accounting"]["block1"]["device_time_s"] == direct["accounting"]["block1"][
        "device_time_s"]
    links = json.loads(stats.read_text())
    assert len(links) == 2  # one channel per block, on one port
    total = {k: sum(c[k] for c in links.values()) for k in next(iter(links.values()))}
    queries = int(direct["metrics"]["train_queries"].sum() + direct["metrics"]["eval_queries"].sum())
    assert total["lost"] == total["duplicated"] == 0
    assert total["samples_received"] == queries == served["samples_measured"]
    assert total["batches"] == served["batches_executed"]  # no batch ran twice
    if faults is not None:
        f = served["faults"]
        # faults were injected at about their rates (0.06, 0.015 of ~1,100 frames, whose count
        # depends on the retries: half the rate is about 3 standard deviations below it)
        assert f["corrupted_fraction"] >= 0.03 and f["dropped_fraction"] >= 0.0075, f
        assert f["disconnects"] == 1 and f["resets"] == 1
        assert total["reconnects"] >= 1 and total["board_resets"] >= 1 and total["retries"] > 0


def test_emulate_command_serves_until_stopped(tmp_path):
    stats = tmp_path / "emu.json"
    p = subprocess.Popen(
        [sys.executable, "-m", "physnn", "emulate", "sim:optical", "--socket", "127.0.0.1:0",
         "--stats", str(stats), "--drop", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = [p.stdout.readline() for _ in range(4)]  # serving..., faults, use, Ctrl-C
        address = re.search(r"on (socket://\S+)", banner[0]).group(1)
        dev = serial(address, n_in=74, seed=2, timeout=0.2)
        ref = make_device({"kind": "sim:optical", "seed": 2})
        x = inputs(100, 74)
        assert torch.equal(dev(x), ref(x))
        dev.close()
    finally:
        p.terminate()
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert json.loads(stats.read_text())["samples_measured"] == 100
    assert "faults: Faults(corrupt=0.0, drop=0.05" in banner[1] and '"resets": 0' in out
    bad = subprocess.run([sys.executable, "-m", "physnn", "emulate", "sim:optical",
                          "--corrupt", "0.9"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "fault rate corrupt=0.9 is not allowed" in bad.stderr


def test_the_serial_emulator_example_trains_to_the_simulators_numbers(example):
    example = example("serial_emulator")
    lines: list[str] = []
    t0 = time.monotonic()
    out = example.main(epochs=2, n_train=120, n_test=40, echo=lines.append)
    assert time.monotonic() - t0 < 30
    assert out["identical"] and len(out["serial"]["loss"]) == 2
    assert out["serial"]["test_acc"] == out["direct"]["test_acc"]
    assert out["emulator"]["samples_measured"] == sum(s["samples_received"] for s in out["link"])
    assert lines[0].startswith("emulator serving sim:optical on ") and "bit-identical: True" in lines[-1]
