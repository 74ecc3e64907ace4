"""Import input/output pairs measured elsewhere (CSV, NPZ, HDF5) into a calibration record.

Accepted layouts:

- CSV, two files: ``inputs.csv`` (one row per sample, ``n_in`` numbers) and ``outputs.csv``
  (the same rows, ``n_out`` numbers); a header row is optional.
- CSV, one file with a header naming the columns: inputs ``in_0 .. in_{n-1}`` and outputs
  ``out_0 .. out_{m-1}`` (the prefixes are configurable); other columns are ignored.
- NPZ: arrays ``inputs`` and ``outputs`` (names configurable).
- HDF5: datasets ``inputs`` and ``outputs`` (paths configurable); a physnn calibration record
  is read as it is.

Bad input fails with a ValueError naming the file, line or column: mismatched row counts,
NaN or infinite values, rows of the wrong width, non-numbers, inputs outside the domain.
Input that imports but looks wrong is warned about (logger ``physnn.import``, and kept in the
record's provenance as ``origin.warnings``): a first row of column numbers (a header written
as numbers) or of zeros (padding), rows repeated exactly, constant input or output columns.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import sys
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from .._version import __version__
from ..core.device import Domain
from .record import CalibrationRecord, Section, is_record, read_record

FORMATS = ("csv", "npz", "h5")

log = logging.getLogger("physnn.import")


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown measurement format {fmt!r}; allowed: {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower()
    known = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".npz": "npz", ".h5": "h5", ".hdf5": "h5"}
    if suffix not in known:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix; use .csv, .npz or .h5 "
            "(or name the format)"
        )
    return known[suffix]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[list[str] | None, np.ndarray]:
    """A CSV's header (if its first row is not all numbers) and its rows as floats."""
    if not path.is_file():
        raise FileNotFoundError(f"measurement file {path} does not exist")
    raw = path.read_bytes()
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # Excel's UTF-8 mark is not a cell
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        raise ValueError(
            f"{path} is not UTF-8 text: byte 0x{raw[at]:02x} at offset {at} (line "
            f"{raw[:at].count(10) + 1}) cannot be decoded; save the CSV as UTF-8"
        ) from None
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t ")
    except csv.Error:
        dialect = csv.excel
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(text.splitlines(), dialect))]
    rows = [(i, [c.strip() for c in r if c.strip() != ""]) for i, r in rows]
    rows = [(i, r) for i, r in rows if r and not r[0].startswith("#")]
    if not rows:
        raise ValueError(f"{path} holds no rows")
    header = None
    if not all(_is_number(c) for c in rows[0][1]):
        header = rows[0][1]
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path} has a header but no data rows")
    width = len(header) if header is not None else len(rows[0][1])
    data = np.empty((len(rows), width))
    for j, (line, r) in enumerate(rows):
        if len(r) != width:
            raise ValueError(
                f"{path} line {line}: {len(r)} values, expected {width} (the width of "
                f"{'the header' if header is not None else 'the first row'})"
            )
        for k, cell in enumerate(r):
            try:
                data[j, k] = float(cell)
            except ValueError:
                col = header[k] if header is not None else str(k + 1)
                raise ValueError(f"{path} line {line}, column {col}: {cell!r} is not a number") from None
    return header, data


def _columns(header: list[str], prefix: str) -> list[int]:
    """Indices of columns ``<prefix><int>`` ordered by that integer; they must run 0..n-1."""
    pat = re.compile(re.escape(prefix) + r"(\d+)$")
    found = {int(m.group(1)): k for k, name in enumerate(header) if (m := pat.match(name))}
    if found and sorted(found) != list(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise ValueError(f"columns {prefix}0..{prefix}{max(found)} are incomplete: missing "
                         f"{', '.join(f'{prefix}{i}' for i in missing)}")
    return [found[i] for i in sorted(found)]


def _check_finite(what: str, a: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"{where}: {what}[{r}, {c}] is {a[r, c]} ({int(bad.sum())} non-finite values); "
            "remove or repair those rows"
        )


def _load_pairs(
    inputs: Path, outputs: Path | None, fmt: str | None, in_prefix: str, out_prefix: str,
    input_key: str, output_key: str,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Inputs, outputs and where they came from, whatever the file format."""
    kind = _format_of(inputs, fmt)
    origin: dict[str, Any] = {"format": kind, "files": [str(inputs)]}
    if kind == "csv":
        if outputs is not None:
            origin["files"].append(str(outputs))
        return (*_load_csv(inputs, outputs, in_prefix, out_prefix), origin)
    if outputs is not None:
        raise ValueError(f"a separate outputs file is only for CSV; {inputs} is {kind}")
    if not inputs.is_file():
        raise FileNotFoundError(f"measurement file {inputs} does not exist")
    load = _load_npz if kind == "npz" else _load_h5
    return (*load(inputs, input_key, output_key), origin)


def _load_csv(
    inputs: Path, outputs: Path | None, in_prefix: str, out_prefix: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Two CSV files (inputs, outputs), or one whose header names the columns."""
    header, a = _read_csv(inputs)
    if outputs is not None:
        _, b = _read_csv(outputs)
        return a, b
    if header is None:
        raise ValueError(
            f"{inputs} has no header: a single CSV needs named columns "
            f"({in_prefix}0.. and {out_prefix}0..), or give inputs and outputs as two files"
        )
    ci, co = _columns(header, in_prefix), _columns(header, out_prefix)
    if not ci or not co:
        raise ValueError(
            f"{inputs}: found {len(ci)} input columns ({in_prefix}0..) and {len(co)} output "
            f"columns ({out_prefix}0..); need both. Header: {', '.join(header[:12])}"
            + (" ..." if len(header) > 12 else "")
        )
    return a[:, ci], a[:, co]


def _load_npz(path: Path, input_key: str, output_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The two named arrays of an ``.npz`` file (no pickles: measured data are numbers)."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); expected an .npz archive of arrays")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz file: {e}") from None
    with z:
        missing = [k for k in (input_key, output_key) if k not in z.files]
        if missing:
            raise ValueError(f"{path} has no array {missing[0]!r}; it holds {sorted(z.files)}")
        return np.asarray(z[input_key], float), np.asarray(z[output_key], float)


def _load_h5(path: Path, input_key: str, output_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The two named datasets of an HDF5 file."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file: {e}") from None
    with f:
        names: list[str] = []
        f.visit(names.append)
        missing = [k for k in (input_key, output_key)
                   if k not in f or not isinstance(f[k], h5py.Dataset)]
        if missing:
            raise ValueError(f"{path} has no dataset {missing[0]!r}; it holds {sorted(names)[:20]}")
        return np.asarray(f[input_key][()], float), np.asarray(f[output_key][()], float)


def _infer_domain(x: np.ndarray, max_levels: int = 16) -> Domain:
    values = np.unique(x)
    if 2 <= values.size <= max_levels:
        return Domain(levels=tuple(float(v) for v in values))
    lo, hi = float(x.min()), float(x.max())
    if not lo < hi:
        raise ValueError("all imported inputs are equal; give the input domain explicitly")
    return Domain(lo, hi)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_measurements(
    inputs: str | Path,
    outputs: str | Path | None = None,
    *,
    fmt: str | None = None,
    domain: Sequence[float] | None = None,
    levels: Sequence[float] | None = None,
    name: str = "imported",
    output_units: str = "a.u.",
    n_in: int | None = None,
    n_out: int | None = None,
    in_prefix: str = "in_",
    out_prefix: str = "out_",
    input_key: str = "inputs",
    output_key: str = "outputs",
    command: str | None = None,
) -> CalibrationRecord:
    """Read measured pairs and return them as a calibration record (not yet written).

    The input domain is ``domain=(lo, hi)``, ``levels=(...)``, or inferred: the distinct
    values if there are at most 16, else ``[min, max]`` of the inputs. ``n_in``/``n_out``,
    when given, are checked against the files' widths.
    """
    inputs = Path(inputs)
    outputs = Path(outputs) if outputs is not None else None
    if outputs is None and fmt in (None, "h5") and inputs.suffix.lower() in (".h5", ".hdf5") \
            and inputs.is_file() and is_record(inputs):
        return read_record(inputs)
    x, y, origin = _load_pairs(inputs, outputs, fmt, in_prefix, out_prefix, input_key, output_key)
    where = " + ".join(origin["files"])
    _check_pairs(x, y, where, n_in, n_out)
    dom = _domain(x, domain, levels)
    _check_in_domain(x, dom, where)
    origin["sha256"] = [_sha256(Path(p)) for p in origin["files"]]
    origin["warnings"] = pair_warnings(x, y)
    for text in origin["warnings"]:
        log.warning("%s: %s", where, text)
    origin["domain_inferred"] = domain is None and levels is None
    spec = {
        "name": name, "n_in": x.shape[1], "n_out": y.shape[1],
        "domain": {"lo": dom.lo, "hi": dom.hi, **({"levels": list(dom.levels)} if dom.levels else {})},
        "output_units": output_units,
    }
    return CalibrationRecord(
        spec=spec,
        sweep=Section(x, y),
        device=None,
        provenance={
            "source": "import",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "physnn_version": __version__,
            "command": command if command is not None else " ".join(sys.argv),
            "origin": origin,
        },
    )


def _check_pairs(x: np.ndarray, y: np.ndarray, where: str, n_in: int | None,
                 n_out: int | None) -> None:
    """Refuse pairs a record cannot hold, naming the file and the first bad entry."""
    for what, a in (("inputs", x), ("outputs", y)):
        if a.ndim != 2:
            raise ValueError(f"{where}: {what} must be 2-D [samples, width], got shape {a.shape}")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"{where}: {what} are empty (shape {a.shape})")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: inputs have {x.shape[0]} rows but outputs have {y.shape[0]}; every "
            "sample needs one row in each"
        )
    _check_finite("inputs", x, where)
    _check_finite("outputs", y, where)
    for what, want, got in (("n_in", n_in, x.shape[1]), ("n_out", n_out, y.shape[1])):
        if want is not None and want != got:
            raise ValueError(f"{where}: expected {what}={want} but the data are {got} wide")


def _domain(x: np.ndarray, domain: Sequence[float] | None,
            levels: Sequence[float] | None) -> Domain:
    """The input domain the caller gave (a range or levels), else one inferred from ``x``."""
    if domain is not None and levels is not None:
        raise ValueError("give either domain=(lo, hi) or levels, not both")
    if levels is not None:
        return Domain(levels=tuple(float(v) for v in levels))
    if domain is not None:
        if len(domain) != 2:
            raise ValueError(f"domain must be (lo, hi), got {tuple(domain)}")
        return Domain(float(domain[0]), float(domain[1]))
    return _infer_domain(x)


def _check_in_domain(x: np.ndarray, dom: Domain, where: str) -> None:
    """Every input inside ``dom``: a twin is only asked about inputs the device can take."""
    bad = dom.violations(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))
    if bad.any():
        r, c = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{where}: inputs[{r}, {c}] = {x[r, c]:.6g} is outside the domain {dom.describe()} "
            f"({int(bad.sum())} entries); give the right domain or levels"
        )


def _counts_columns(row: np.ndarray) -> bool:
    """``row`` is 0, 1, 2, .. or 1, 2, 3, ..: column numbers, not a measurement."""
    k = np.arange(row.size, dtype=np.float64)
    return row.size >= 3 and (np.array_equal(row, k) or np.array_equal(row, k + 1))


def _first_row_warnings(x: np.ndarray, y: np.ndarray) -> list[str]:
    """A first row that is a header or padding rather than a measurement.

    A non-numeric first row is read as a header on purpose (and a non-numeric row further
    down is an error), so only the look-alikes are left: a header of column numbers, which
    is all numbers, and an all-zero row that pads the file."""
    out = [
        f"the first row of the {what} is {', '.join(f'{v:g}' for v in a[0, :3])}, .., "
        f"{a[0, -1]:g}: column numbers, a header written as numbers? remove it if so"
        for what, a in (("inputs", x), ("outputs", y)) if _counts_columns(a[0])
    ]
    if not x[0].any() and not y[0].any():
        out.append("the first row is all zeros, inputs and outputs: padding rather than a "
                   "measurement? remove it if so")
    return out


def pair_warnings(x: np.ndarray, y: np.ndarray) -> list[str]:
    """What in imported pairs imports but is likely a mistake, one line each.

    Measured outputs never repeat exactly, so a row that repeats an earlier one exactly
    (inputs and outputs) is copied data, and it would pass for a zero-noise repeat in the
    noise floor. A constant column carries nothing for a twin to learn, and a constant output
    makes per-output NMSE undefined (see ``physnn.twins.twin.NEAR_CONSTANT_FRACTION``)."""
    out = _first_row_warnings(x, y)
    rows = np.concatenate([x, y], axis=1)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    dup = np.flatnonzero(first[inverse] != np.arange(rows.shape[0]))
    if dup.size:
        i = int(dup[0])
        out.append(
            f"{dup.size} of {rows.shape[0]} rows repeat an earlier row exactly (inputs and "
            f"outputs), first row {i} = row {int(first[inverse[i]])} (0-based data rows): "
            "copied data? measured outputs never repeat exactly"
        )
    for what, a in (("input", x), ("output", y)):
        const = np.flatnonzero(np.ptp(a, axis=0) == 0)
        if const.size:
            shown = ", ".join(map(str, const[:20])) + (" .." if const.size > 20 else "")
            out.append(f"{const.size} constant {what} column(s) (zero spread): {shown}")
    return out
