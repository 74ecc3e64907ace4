"""The driver's retry state machine against an emulated board over the in-memory transport:
one thread, scripted faults, a virtual clock, so every recovery is exact and instant.

Requests and replies are numbered from 1 in each direction: the handshake is request 1
(HELLO) and 2 (OPEN), and with the default payload limit a small batch is 3 (LOAD), 4 (RUN),
5 (FETCH). Every test checks the outputs against the simulator called directly (noise
included: the streams must stay in step) and the counters that prove the fault happened
and was handled the one right way.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from physnn.core import make_device
from physnn.hardware.memory import GARBAGE, LineScript, MemoryTransport, VirtualClock, memory_board
from physnn.hardware.serial_device import SerialDevice, SerialLinkError
from physnn.hardware.transport import Transport

OPTICAL = {
    "kind": "sim:optical", "camera_shape": [8, 8],
    "camera": [{"kind": "shot", "photons": 200.0}, {"kind": "readout", "sigma": 0.05}],
}
SETTINGS = {"timeout": 0.1, "retries": 2, "reconnects": 1, "reconnect_delay": 0.5}
_names = itertools.count()


def connect(script: LineScript | None = None, **settings):
    """A serial device on an in-memory board, and the same simulator built directly."""
    transport, board = memory_board(OPTICAL, script=script)
    dev = SerialDevice(f"mem://board-{next(_names)}", transport=transport, clock=transport.clock,
                       n_in=16, seed=5, **{**SETTINGS, **settings})
    ref = make_device({**OPTICAL, "n_in": 16, "seed": 5})
    return dev, ref, transport, board


def inputs(b: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 16, generator=torch.Generator().manual_seed(seed))


def waited(timeouts: int, transport: MemoryTransport, delay: float = 0.5) -> bool:
    """The virtual clock shows ``timeouts`` waits of 0.1 s (each ends within one 0.02 s poll),
    at most one reconnect delay besides."""
    return timeouts * 0.1 <= transport.clock.now() <= timeouts * 0.12 + delay + 1e-9


def executions(board, dev) -> int:
    return board.lab.instruments[dev.token].executions


def test_a_clean_line_needs_no_recovery():
    dev, ref, transport, board = connect()
    for i in range(2):
        x = inputs(4, seed=i)
        assert torch.equal(dev(x), ref(x))
    st = dev.link_stats
    assert st.frames_sent == transport.requests == 2 + 2 * 3
    assert st.retries == st.timeouts == st.crc_errors == st.stale == st.skipped_bytes == 0
    assert executions(board, dev) == st.batches == 2 and transport.clock.now() == 0.0
    assert isinstance(transport, Transport)
    dev.close()


def test_a_dropped_reply_is_retried_and_the_result_arrives_once():
    dev, ref, transport, board = connect(LineScript(drop_replies={4}))  # RUN's reply
    x = inputs(4)
    assert torch.equal(dev(x), ref(x))
    st = dev.link_stats
    assert (st.timeouts, st.retries, st.stale) == (1, 1, 0)
    assert board.stats.replayed == 1  # the resent RUN was answered from the reply cache
    assert executions(board, dev) == 1 and board.lab.instruments[dev.token].measured == 4
    assert st.samples_received == 4 and st.duplicated == 0
    assert waited(1, transport)  # one timeout of virtual time
    dev.close()


def test_a_corrupted_reply_counts_a_crc_error_and_is_resent_at_once():
    dev, ref, transport, board = connect(LineScript(corrupt_replies={3}))  # LOAD's reply
    x = inputs(4)
    assert torch.equal(dev(x), ref(x))
    st = dev.link_stats
    assert (st.crc_errors, st.retries, st.timeouts) == (1, 1, 0)  # no wait for a timeout
    assert transport.clock.now() == 0.0 and executions(board, dev) == 1
    dev.close()


def test_a_corrupted_request_is_nakked_by_the_board_and_resent():
    dev, ref, transport, board = connect(LineScript(corrupt_requests={4}))  # RUN
    x = inputs(4)
    assert torch.equal(dev(x), ref(x))
    st = dev.link_stats
    assert (st.naks, st.retries, st.crc_errors, st.timeouts) == (1, 1, 0, 0)
    assert board.stats.naks == 1 and executions(board, dev) == 1
    dev.close()


def test_garbage_before_a_reply_is_skipped_and_the_reply_found():
    dev, ref, transport, board = connect(LineScript(garbage_before={3, 5}))
    x = inputs(4)
    assert torch.equal(dev(x), ref(x))
    st = dev.link_stats
    assert st.skipped_bytes == 2 * len(GARBAGE)  # a false sync in it, too
    assert st.retries == st.timeouts == st.crc_errors == 0
    dev.close()


def test_a_duplicate_reply_is_ignored_and_no_sample_is_duplicated():
    # max_payload 256: 4 samples are 2 LOADs (requests 3, 4), RUN (5), 5 FETCHes (6-10); the
    # copies of LOAD's and FETCH's replies arrive while the next LOAD or FETCH is awaited
    dev, ref, transport, board = connect(LineScript(duplicate_replies={3, 5, 7}), max_payload=256)
    for i in range(2):
        x = inputs(4, seed=i)
        assert torch.equal(dev(x), ref(x))
    st = dev.link_stats
    assert st.stale == 3  # the copies, each discarded: an earlier sequence number
    assert st.duplicated == st.retries == st.restarts == 0 and st.samples_received == 8
    assert executions(board, dev) == 2
    dev.close()


def test_every_attempt_timing_out_ends_in_a_connection_error_not_a_loop():
    dev, ref, transport, board = connect(LineScript(silent_from=6))  # after one clean batch
    x = inputs(4)
    assert torch.equal(dev(x), ref(x))
    with pytest.raises(ConnectionError, match="not measured.*gave up after 1 reconnects"):
        dev(inputs(3, seed=1))
    st = dev.link_stats
    tries = SETTINGS["retries"] + 1
    # LOAD: 3 tries; reconnect; HELLO: 3 tries; then the second link-down is one too many
    assert st.timeouts == 2 * tries and st.frames_sent == 5 + 2 * tries
    assert st.reconnects == 1 and transport.connections == 2
    assert st.lost == 3 and st.samples_received == 4
    assert waited(2 * tries, transport) and transport.clock.now() - 2 * tries * 0.1 >= 0.5
    with pytest.raises(SerialLinkError, match="no valid reply to HELLO after 3 tries"):
        connect(LineScript(silent_from=1))
    dev.close()


def test_a_disconnect_mid_batch_reopens_and_the_batch_completes_identically():
    # max_payload 256: 20 samples are 6 LOADs (requests 3-8), RUN (9), 21 FETCHes (10-30)
    dev, ref, transport, board = connect(LineScript(disconnect_at={15}), max_payload=256)
    for i in range(2):
        x = inputs(20, seed=i)
        assert torch.equal(dev(x), ref(x))
    st = dev.link_stats
    assert st.reconnects == 1 and transport.connections == 2 and st.board_resets == 0
    assert board.stats.cached_runs == 1  # the RUN after the reopen: the stored outputs
    assert executions(board, dev) == 2 and st.duplicated == st.lost == 0
    assert st.samples_received == 40 == board.lab.instruments[dev.token].measured
    dev.close()


def test_the_in_memory_line_refuses_use_while_unplugged_and_bad_scripts():
    t = MemoryTransport(clock=VirtualClock(3.0))
    with pytest.raises(OSError, match="not connected"):
        t.write(b"x")
    t.open()
    assert t.read(1, 0.25) == b"" and t.clock.now() == 3.25
    with pytest.raises(ValueError, match=r"drop_replies needs frame numbers >= 1"):
        LineScript(drop_replies={0})
    with pytest.raises(ValueError, match="transport must be a Transport object"):
        SerialDevice("mem://x", transport="pyserial")
