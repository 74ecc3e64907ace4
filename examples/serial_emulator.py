"""Train through the serial link, without hardware: the emulator serves a simulator on a pty.

    python examples/serial_emulator.py [--epochs 5] [--train 300] [--test 100]

The same small PhyLL network (sklearn digits, ``sim:optical`` blocks with an 8x8 camera and
its shot and read-out noise) is trained twice from the same seeds: once on the simulators
directly, once with each block's device replaced by a ``serial`` device on the emulator's
pseudo-terminal, exactly as a board on ``/dev/ttyACM0`` would be used. Frames, CRCs, channels
and the emulator's noise streams are all in the loop, and the losses and accuracies come
out bit for bit the same. Add ``--faults`` to corrupt, drop and delay frames on the line:
the numbers still do not change, only the link's counters do.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable
from typing import Any

import torch

from physnn.core import Device, make_device
from physnn.data.digits import load_digits
from physnn.hardware.emulator import Emulator, Faults
from physnn.hardware.serial_device import SerialDevice
from physnn.train.network import Block, PhysicalNetwork
from physnn.train.phyll import PhyLL, PhyLLSettings

OPTICAL: dict[str, Any] = {
    "kind": "sim:optical", "camera_shape": [8, 8],
    "camera": [{"kind": "shot", "photons": 200.0}, {"kind": "readout", "sigma": 0.05}],
}
LINE_FAULTS = Faults(corrupt=0.05, drop=0.01, garbage=0.02, delay=0.01, delay_s=0.3, seed=1)


def train(make: Callable[[int, int], Device], data: Any, *, hidden: tuple[int, ...],
          epochs: int, n_train: int, n_test: int, seed: int) -> dict[str, list[float]]:
    """PhyLL on a network whose block ``k`` (input width ``n_in``) is ``make(k, n_in)``."""
    gen = torch.Generator().manual_seed(seed)
    widths = (data.n_features, *hidden)
    net = PhysicalNetwork([Block(make(k, widths[k]), h, gen=gen) for k, h in enumerate(hidden)])
    settings = PhyLLSettings(n_classes=data.n_classes, lr=1e-2, inner_steps=5,
                             label_width=data.label_width)
    trainer = PhyLL(net, settings, gen)
    x, y = data.x_train[:n_train], data.y_train[:n_train]
    x_test, y_test = data.x_test[:n_test], data.y_test[:n_test]
    out: dict[str, list[float]] = {"loss": [], "test_acc": []}
    for _ in range(epochs):
        out["loss"].append(trainer.train_epoch(x, y)[-1])
        out["test_acc"].append(float((trainer.predict(x_test) == y_test).float().mean()))
    for device in net.devices:
        device.close()
    return out


def main(epochs: int = 5, n_train: int = 300, n_test: int = 100, hidden: tuple[int, ...] = (16,),
         seed: int = 0, faults: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train on the simulator and through the emulator; both runs' numbers and the counters."""
    torch.set_num_threads(1)  # the emulator's thread count too: bit-identical arithmetic
    data = load_digits(seed=seed)
    kw: dict[str, Any] = dict(hidden=hidden, epochs=epochs, n_train=n_train, n_test=n_test,
                              seed=seed)
    keys = {k: v for k, v in OPTICAL.items() if k != "kind"}  # the emulator checks they match

    def direct(k: int, n_in: int) -> Device:
        return make_device({**OPTICAL, "n_in": n_in, "seed": seed * 1000 + k})

    results: dict[str, Any] = {"direct": train(direct, data, **kw)}
    with Emulator(OPTICAL, faults=LINE_FAULTS if faults else None) as emu:  # a pty by default
        echo(f"emulator serving {OPTICAL['kind']} on {emu.address}")
        links: list[Any] = []

        def serial(k: int, n_in: int) -> Device:
            dev = make_device({"kind": "serial", "port": emu.address, "n_in": n_in,
                               "seed": seed * 1000 + k, "timeout": 0.1, "retries": 8,
                               "reconnect_delay": 0.02, **keys})
            assert isinstance(dev, SerialDevice)
            links.append(dev.link_stats)
            return dev

        results["serial"] = train(serial, data, **kw)
        results["emulator"] = emu.stats()
    gc.collect()
    results["link"] = [s.as_dict() for s in links]
    results["identical"] = results["direct"] == results["serial"]
    for name in ("direct", "serial"):
        r = results[name]
        loss = ", ".join(f"{v:.6f}" for v in r["loss"])
        acc = ", ".join(f"{v:.3f}" for v in r["test_acc"])
        echo(f"{name:>6}: loss per epoch [{loss}], test accuracy [{acc}]")
    retries = sum(s["retries"] for s in results["link"])
    echo(f"bit-identical: {results['identical']} ({retries} requests sent again on the line)")
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train", type=int, default=300, help="training samples")
    p.add_argument("--test", type=int, default=100, help="test samples")
    p.add_argument("--faults", action="store_true", help="corrupt, drop and delay frames")
    a = p.parse_args()
    main(epochs=a.epochs, n_train=a.train, n_test=a.test, faults=a.faults)
