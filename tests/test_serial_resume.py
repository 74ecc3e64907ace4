"""Resuming a serial run: the board's physics state (noise streams, counters) travels in the
host's checkpoint through the protocol's SAVE and RESTORE requests, so a run resumed on a
restarted emulator reaches the numbers an uninterrupted one does; a board without the STATE
capability (the reference firmware) cannot do that, and the resume says so."""

import copy
import gc
import io
import logging
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tomli_w
import torch
from test_firmware import N_IN, board  # noqa: F401 - the C firmware on a pty, as a fixture

from physnn.core import make_device
from physnn.experiments.config import load_config
from physnn.experiments.runlog import read_run
from physnn.experiments.runner import run
from physnn.hardware.memory import LineScript, memory_board
from physnn.hardware.protocol import Cap
from physnn.hardware.serial_device import SerialDevice

OPTICAL = {
    "kind": "sim:optical", "camera_shape": [8, 8],
    "camera": [{"kind": "shot", "photons": 200.0}, {"kind": "readout", "sigma": 0.05}],
}


def inputs(b, n=16, seed=0):
    return torch.rand(b, n, generator=torch.Generator().manual_seed(seed))


def through_a_checkpoint(state):
    """``state`` saved and loaded back as a run log's checkpoint is (safe loading included)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def on_memory_board(name, state_capability=True, **kw):
    transport, emulated = memory_board(OPTICAL, max_payload=512, script=kw.pop("script", None))
    if not state_capability:
        emulated.caps &= ~Cap.STATE
    dev = SerialDevice(f"mem://{name}", transport=transport, clock=transport.clock, n_in=16,
                       seed=3, **kw)
    return dev, emulated


def test_a_fresh_emulator_continues_the_noise_streams_of_a_checkpoint():
    a, board_a = on_memory_board("resume-a")
    for i in range(3):
        a(inputs(20, seed=i))
    state = through_a_checkpoint(a.state_dict())

    # a new emulator (a new Lab: nothing measured yet) and a new host device (a new token);
    # a RESTORE reply is lost on the way, so the restore is retried
    b, board_b = on_memory_board("resume-b", script=LineScript(drop_replies={4}))
    b.load_state_dict(state)
    for i in range(3, 6):
        x = inputs(20, seed=i)
        assert torch.equal(b(x), a(x))  # the noise streams continue where A's were
    saved = state["board"]
    assert saved["exact"] and saved["measured"] == 60 and saved["board"] == a.board
    assert saved["state"].dtype == torch.uint8 and saved["state"].numel() > 512  # chunked
    assert b.accounting.samples == a.accounting.samples == 120
    assert b.link_stats.timeouts == 1 and b.link_stats.duplicated == b.link_stats.state_losses == 0
    assert board_b.lab.instruments[b.token].measured == board_a.lab.instruments[a.token].measured
    assert b.accounting.inexact_resumes == b.link_stats.inexact_resumes == 0
    a.close()
    b.close()


def test_a_board_without_the_state_capability_resumes_inexactly_and_says_so(caplog):
    a, board_a = on_memory_board("plain-a", state_capability=False)
    a(inputs(5))
    state = through_a_checkpoint(a.state_dict())
    assert state["board"]["exact"] is False and state["board"]["state"].numel() == 0
    b, board_b = on_memory_board("plain-b", state_capability=False)
    with caplog.at_level(logging.WARNING, logger="physnn.serial"):
        b.load_state_dict(state)
    assert len(caplog.records) == 1
    text = caplog.records[0].getMessage()
    assert "'physnn-memory sim:optical'" in text and "continues from the board's current state" in text
    assert b.accounting.inexact_resumes == b.link_stats.inexact_resumes == 1
    assert b.accounting.as_dict()["inexact_resumes"] == 1  # what the run log's accounting holds
    for emulated in (board_a, board_b):  # neither board was sent a request it does not know
        assert emulated.stats.errors == {}
    # a checkpoint of a board with the capability, resumed on one without: inexact as well
    c, _ = on_memory_board("plain-c")
    c(inputs(5))
    d, _ = on_memory_board("plain-d", state_capability=False)
    d.load_state_dict(through_a_checkpoint(c.state_dict()))
    assert d.accounting.inexact_resumes == 1
    for dev in (a, b, c, d):
        dev.close()


def test_the_reference_firmware_resume_is_reported_as_inexact(board, caplog):  # noqa: F811
    desc = {"kind": "serial", "port": board, "n_in": N_IN, "timeout": 0.5}
    dev = make_device(desc)
    try:
        assert not Cap(dev.link.hello.caps) & Cap.STATE
        dev(torch.rand(2, N_IN))
        state = through_a_checkpoint(dev.state_dict())
    finally:
        dev.close()
    assert state["board"] == {**state["board"], "exact": False, "board": "physnn-fw-avr 1.0"}
    fresh = make_device(desc)
    try:
        with caplog.at_level(logging.WARNING, logger="physnn.serial"):
            fresh.load_state_dict(state)
        assert "'physnn-fw-avr 1.0'" in caplog.text and fresh.accounting.inexact_resumes == 1
        y = fresh(torch.rand(2, N_IN))  # the firmware still answers: no unknown request was sent
        assert y.shape == (2, 7) and fresh.link_stats.lost == 0
    finally:
        fresh.close()


# -- end to end: a training run interrupted, the emulator restarted, the run resumed ----------


@contextmanager
def emulator_process(device_toml: Path, link: Path):
    """``physnn emulate`` in its own process on a pty behind ``link``, as a user runs it."""
    p = subprocess.Popen(
        [sys.executable, "-m", "physnn", "emulate", str(device_toml), "--pty", "--link", str(link)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = []
        while not banner or "Ctrl-C" not in banner[-1]:
            line = p.stdout.readline()
            assert line, p.stderr.read()
            banner.append(line)
        yield p
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err


def test_a_serial_run_resumed_on_a_restarted_emulator_equals_an_uninterrupted_one(tmp_path):
    cfg = load_config("digits-optical").to_dict()
    cfg["device"]["camera_shape"] = [8, 8]
    cfg["network"]["hidden"] = [32, 32]
    cfg["train"].update(epochs=3, eval_every=3, inner_steps=2, lr=2e-3)
    device_toml = tmp_path / "device.toml"
    device_toml.write_text(tomli_w.dumps({"device": cfg["device"]}))
    link = tmp_path / "emulator.tty"
    cfg = copy.deepcopy(cfg)
    cfg["device"].update(kind="serial", port=str(link), timeout=0.5, retries=8,
                         reconnect_delay=0.05)
    with emulator_process(device_toml, link):
        whole = read_run(run(cfg, tmp_path / "whole.h5", progress=False).path)
        part = read_run(run(cfg, tmp_path / "resumed.h5", progress=False, stop_after=1).path)
        gc.collect()  # the devices of both runs release the port
    assert part["status"] == "running" and len(part["metrics"]["loss"]) == 1
    with emulator_process(device_toml, link):  # a new process: its noise streams start afresh
        resumed = read_run(run(cfg, tmp_path / "resumed.h5", progress=False).path)
        gc.collect()
    assert resumed["status"] == "complete"
    for key in ("test_acc", "train_acc", "loss", "train_queries", "eval_queries"):
        assert np.array_equal(resumed["metrics"][key], whole["metrics"][key], equal_nan=True), (
            key, resumed["metrics"][key], whole["metrics"][key])
    for block in ("block0", "block1"):
        got, want = resumed["accounting"][block], whole["accounting"][block]
        assert got["samples"] == want["samples"] and got["device_time_s"] == want["device_time_s"]
        assert got["inexact_resumes"] == 0
