"""The reference firmware on a simulated ATmega328P (simavr): device calls per second.

    python benchmarks/firmware_simavr.py [--baud 115200 1000000] [--seconds 5] [--samples 1]
                                         [--speed 1]

For each baud rate it builds devices/firmware (``make sim BAUD=...``: the AVR image and the
simavr-pty harness), runs the image on simavr behind a pseudo-terminal and drives it with the
real ``serial`` device: calls of ``--samples`` samples (one LOAD, RUN and FETCH exchange each
while the batch fits the board's 4 samples) for ``--seconds`` of wall time.

Reported per baud rate: calls/s and request+reply exchanges/s on the wall clock; the
simulator's speed (MHz of simulated clock per wall second; a real board runs 16); calls per
*simulated* second, the rate the same exchange takes in the MCU's own time (what a real
16 MHz board would sustain with a host as quick, relative to the board, as this one); and the
line's share: wire bytes per call at simavr's 11 bits a byte (it counts a parity bit even
for 8N1; a real 8N1 line sends 10). Needs avr-gcc, make, a C compiler and simavr
(``apt-get install gcc-avr avr-libc simavr libsimavr-dev``). Absolute numbers depend on the
machine and its load: simavr runs the MCU on one host core.
"""

from __future__ import annotations

import argparse
import re
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from physnn.core import make_device

FIRMWARE = Path(__file__).resolve().parents[1] / "devices" / "firmware"


def _line(proc: subprocess.Popen, prefix: bytes, timeout: float = 20.0) -> bytes:
    """The harness's next stdout line starting with ``prefix`` (stdout is unbuffered)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        line = proc.stdout.readline() if ready else b""
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"simavr-pty gave no {prefix!r} line: {proc.communicate()}")


def _stats(proc: subprocess.Popen) -> dict[str, float]:
    proc.send_signal(signal.SIGHUP)
    line = _line(proc, b"stats ").decode()
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def measure(baud: int, seconds: float, samples: int, speed: float) -> dict[str, float]:
    """Calls of ``samples`` samples against the simulated board at ``baud``, for ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp)
        p = subprocess.run(["make", "-C", str(FIRMWARE), f"BUILD={build}", f"BAUD={baud}", "sim"],
                           capture_output=True, text=True, timeout=300)
        if p.returncode:
            raise SystemExit(f"make sim failed:\n{p.stdout}{p.stderr}")
        proc = subprocess.Popen([str(build / "simavr-pty"), str(build / "firmware.elf"), "-l",
                                 str(build / "tty"), "-s", str(speed)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            _line(proc, b"pty ")
            dev = make_device({"kind": "serial", "port": str(build / "tty"), "baudrate": baud,
                               "timeout": 1.0})
            x = torch.rand(samples, dev.spec.n_in, generator=torch.Generator().manual_seed(0))
            for _ in range(3):  # warm-up
                dev(x)
            st0, s0, t0, n = dev.link_stats.as_dict(), _stats(proc), time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                dev(x)
                n += 1
            wall, s1, st1 = time.perf_counter() - t0, _stats(proc), dev.link_stats.as_dict()
            dev.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    sim = s1["sim_s"] - s0["sim_s"]
    exchanges = (st1["frames_sent"] - st0["frames_sent"]) / n
    wire = (st1["bytes_sent"] + st1["bytes_received"] - st0["bytes_sent"]
            - st0["bytes_received"]) / n
    return {"calls_s": n / wall, "exchanges_s": n * exchanges / wall, "exchanges": exchanges,
            "mhz": 16.0 * sim / (s1["wall_s"] - s0["wall_s"]), "sim_calls_s": n / sim,
            "wire": wire, "line_ms": 1e3 * wire * 11 / baud,
            "retries": st1["retries"] - st0["retries"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baud", type=int, nargs="+", default=[115200, 1_000_000])
    p.add_argument("--seconds", type=float, default=5.0, help="wall time per baud rate")
    p.add_argument("--samples", type=int, default=1, help="samples per device call")
    p.add_argument("--speed", type=float, default=1.0, help="simavr-pty -s: simulated seconds "
                   "per wall second (1: real time where the host keeps up; 0: free-running)")
    a = p.parse_args()
    print(f"reference firmware on simavr (ATmega328P, 16 MHz), calls of {a.samples} sample(s), "
          f"{a.seconds:g} s each\n")
    print("| baud | calls/s | exchanges/s | simulator MHz | calls per simulated s | "
          "wire B/call | line time/call (11 bit/B) | retries |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for baud in a.baud:
        r = measure(baud, a.seconds, a.samples, a.speed)
        print(f"| {baud} | {r['calls_s']:.1f} | {r['exchanges_s']:.1f} ({r['exchanges']:.0f}/call)"
              f" | {r['mhz']:.1f} | {r['sim_calls_s']:.1f} | {r['wire']:.0f} | "
              f"{r['line_ms']:.2f} ms | {r['retries']:.0f} |")


if __name__ == "__main__":
    main()
