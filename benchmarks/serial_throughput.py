"""Serial path vs direct simulator: throughput ratio and frame overhead, in one run.

    python benchmarks/serial_throughput.py [--batch 1437] [--n-in 74] [--repeats 5]
                                           [--transport pty socket] [--max-payload 65535]

The direct device and ``physnn emulate`` (a separate process, as in the lab) serve the same
``sim:optical`` cavity; each batch goes through the real driver (frames, CRCs, chunking)
and must come back bit-identical to the direct call. Absolute numbers depend on the machine
and its load; compare numbers from one invocation.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from physnn.core import make_device
from physnn.hardware.protocol import OVERHEAD, Fetch, FetchReply, Load, LoadReply, Run, RunReply

DEVICE = "sim:optical"


def best_time(fn, x: torch.Tensor, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t0)
    return best


def start_emulator(transport: str, folder: Path, max_payload: int, threads: int):
    where = ["--socket", "127.0.0.1:0"] if transport == "socket" else [
        "--pty", "--link", str(folder / "tty")]
    p = subprocess.Popen(
        [sys.executable, "-m", "physnn", "emulate", DEVICE, *where, "--threads", str(threads),
         "--max-payload", str(max_payload)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first = p.stdout.readline()
    m = re.search(r" on (\S+)", first)
    if not m:
        p.kill()
        raise SystemExit(f"the emulator did not start: {first}{p.stderr.read()}")
    return p, m.group(1)


def expected_overhead(n: int, n_in: int, n_out: int, payload: int) -> float:
    """Protocol bytes per sample beyond the samples themselves, for one batch of ``n``."""
    per_load = (payload - Load.S.size) // 4
    per_fetch = (payload - FetchReply.S.size) // 4
    loads = -(-n * n_in // per_load)
    fetches = -(-n * n_out // per_fetch)
    total = (
        loads * (2 * OVERHEAD + Load.S.size + LoadReply.S.size)
        + 2 * OVERHEAD + Run.S.size + RunReply.S.size
        + fetches * (2 * OVERHEAD + Fetch.S.size + FetchReply.S.size)
    )
    return total / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1437, help="samples per call (digits: 1437)")
    p.add_argument("--n-in", type=int, default=74)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--transport", nargs="+", default=["pty", "socket"], choices=["pty", "socket"])
    p.add_argument("--max-payload", type=int, default=65535)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), {DEVICE} n_in={a.n_in}, "
          f"batch {a.batch}, max payload {a.max_payload} B\n")
    print("| path | samples/s | serial/direct | wire B/sample | sample data B/sample | "
          "overhead B/sample (measured / protocol) |")
    print("|---|---:|---:|---:|---:|---:|")
    for transport in a.transport:
        with tempfile.TemporaryDirectory() as tmp:
            proc, address = start_emulator(transport, Path(tmp), a.max_payload, a.threads)
            try:
                seed = 7
                direct = make_device({"kind": DEVICE, "n_in": a.n_in, "seed": seed})
                dev = make_device({"kind": "serial", "port": address, "n_in": a.n_in,
                                   "seed": seed, "max_payload": a.max_payload})
                x = direct.spec.domain.from_unit(
                    torch.rand(a.batch, a.n_in, generator=torch.Generator().manual_seed(0)))
                if not torch.equal(dev(x), direct(x)):  # warm-up, and the noise stays in step
                    raise SystemExit("serial and direct outputs differ")
                t_direct = best_time(direct, x, a.repeats)
                before = dev.link_stats.as_dict()
                t_serial = best_time(dev, x, a.repeats)
                st = dev.link_stats.as_dict()
                n = a.repeats * a.batch
                wire = (st["bytes_sent"] + st["bytes_received"]
                        - before["bytes_sent"] - before["bytes_received"]) / n
                data = 4 * (a.n_in + direct.spec.n_out)
                hello = dev.link.hello
                board_payload = hello.max_payload if hello else a.max_payload
                proto = expected_overhead(a.batch, a.n_in, direct.spec.n_out,
                                          min(a.max_payload, board_payload))
                if transport == a.transport[0]:
                    print(f"| direct {DEVICE} | {a.batch / t_direct:,.0f} | 1 | | | |")
                print(f"| serial over {transport} | {a.batch / t_serial:,.0f} | "
                      f"{t_direct / t_serial:.3f} | {wire:,.1f} | {data} | "
                      f"{wire - data:.2f} / {proto:.2f} |")
                dev.close()
            finally:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
