"""Your own data: a classification table from a CSV, NPZ, HDF5 or spreadsheet file.

``load_table`` (the registry's ``"table"``) turns one row per sample, one column per feature
and a label column into a ``physnn.data.Dataset``, with the same split, scaling, label slots
and padding as the built-in loaders (it calls ``make_dataset``), so any preset trains on it
with ``--set data.name=table --set data.path=FILE --set data.label=COLUMN``.

File layouts (the suffix chooses the reader):

- ``.csv``, ``.tsv``, ``.txt``: UTF-8 text, the first non-blank line names the columns.
  The delimiter is a tab for ``.tsv``, else whichever of ``,`` ``;`` tab the header uses
  most (a spreadsheet exported in a locale with decimal commas uses ``;``).
- ``.npz`` (``numpy.savez``) and ``.h5``/``.hdf5`` (datasets at the file's root): every
  1-D array is a column named by its key; a 2-D array ``x`` of shape (rows, k) is the k
  columns ``x_0`` ... ``x_{k-1}``, so ``features="x_"`` selects them in order. Labels may
  be numbers or strings (fixed-width ``str``/``bytes``, UTF-8; not Python objects).
  h5py lists a root's datasets alphabetically unless the file was written with
  ``track_order=True``: name features with a prefix and a 2-D array to keep their order.
- ``.xlsx``, ``.xlsm``, ``.ods``: the first sheet (or ``sheet``), header in the first row;
  needs the optional extra ``pip install 'physnn[table]'`` (pandas, openpyxl, odfpy).

Every problem in the file is a one-line ``ValueError`` naming the file, the row (the line of
a text file, the sheet's row, an array's index) and the column.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import DIGIT_LEVELS, Dataset, make_dataset

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
ARRAY_SUFFIXES = (".npz", ".h5", ".hdf5")
SHEET_SUFFIXES = (".xlsx", ".xlsm", ".ods")
EXTRA = "pip install 'physnn[table]'"
"""How to install what spreadsheets need (pandas with openpyxl and odfpy)."""
_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})  # compared lower-cased


@dataclass(frozen=True)
class Table:
    """A file's columns as read, before any is interpreted: the cells as the file gave them.

    Kept raw so that every error can still name the file, the row and the column.
    """

    file: Path
    columns: dict[str, np.ndarray]
    """Cells by column name, in the file's order: strings (text files) or numbers."""
    rows: np.ndarray
    """Each row's number as the user finds it in the file (see ``unit``)."""
    unit: str
    """What ``rows`` count: ``line`` (text file), ``row`` (sheet) or ``index`` (array)."""

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, i: int, column: str) -> str:
        """``FILE, line N, column 'C'``: the place of row ``i``'s cell, for error messages."""
        return f"{self.file}, {self.unit} {self.rows[i]}, column {column!r}"

    def names(self) -> str:
        """The column names for an error message (the first 30 of a wide table)."""
        cols = list(self.columns)
        more = f", ... ({len(cols)} in all)" if len(cols) > 30 else ""
        return ", ".join(cols[:30]) + more

    def column(self, name: str) -> np.ndarray:
        """The cells of column ``name``; an unknown name is an error listing the columns."""
        if name not in self.columns:
            raise ValueError(f"{self.file}: no column {name!r}; columns: {self.names()}")
        return self.columns[name]


# ----------------------------------------------------------------------------- readers


def read_table(path: str | Path, *, sheet: str | int | None = None) -> Table:
    """Read ``path`` into a ``Table`` (the layouts are in this module's docstring)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist (or is not a file)")
    suffix = file.suffix.lower()
    if sheet is not None and suffix not in SHEET_SUFFIXES:
        raise ValueError(f"sheet= is only used with spreadsheets ({', '.join(SHEET_SUFFIXES)})")
    if suffix in TEXT_SUFFIXES:
        return _read_text(file, "\t" if suffix == ".tsv" else None)
    if suffix == ".npz":
        return _arrays_table(file, _npz_arrays(file))
    if suffix in (".h5", ".hdf5"):
        return _arrays_table(file, _hdf5_arrays(file))
    if suffix in SHEET_SUFFIXES:
        return _read_sheet(file, sheet)
    allowed = ", ".join(TEXT_SUFFIXES + ARRAY_SUFFIXES + SHEET_SUFFIXES)
    raise ValueError(f"{file}: unknown table format {file.suffix!r}; allowed: {allowed}")


def _read_text(file: Path, delimiter: str | None) -> Table:
    """A UTF-8 delimited text file: header line, then one line per row (blank lines skipped)."""
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{file} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); save it as "
            "UTF-8 (in a spreadsheet program: 'CSV UTF-8')"
        ) from None
    if delimiter is None:
        first = next((ln for ln in text.splitlines() if ln.strip()), "")
        delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    cells: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        if header is None:
            header = _header(file, [c.strip() for c in row], "line", reader.line_num)
            continue
        if len(row) != len(header):
            raise ValueError(
                f"{file}, line {reader.line_num}: {len(row)} fields, the header names "
                f"{len(header)} columns (delimiter {delimiter!r})"
            )
        cells.append(row)
        lines.append(reader.line_num)
    if header is None or not cells:
        raise ValueError(f"{file} holds no table: a header line and at least one row are needed")
    columns = np.asarray(cells, dtype=object).T
    return Table(file, dict(zip(header, columns, strict=True)), np.asarray(lines), "line")


def _header(file: Path, names: list[str], unit: str, at: int) -> list[str]:
    """Column names, checked: none empty, none twice."""
    for k, n in enumerate(names):
        if not n:
            raise ValueError(f"{file}, {unit} {at}: column {k + 1} has no name")
        if n in names[:k]:
            raise ValueError(f"{file}, {unit} {at}: column {n!r} is named twice")
    return names


def _npz_arrays(file: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``numpy.savez`` archive, in the order they were saved."""
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{file} is not a NumPy .npz archive: {e}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{file} holds one array, not a .npz archive of named arrays")
    out = {}
    with archive:
        for key in archive.files:
            try:
                out[key] = archive[key]
            except ValueError:
                raise ValueError(
                    f"{file}: array {key!r} holds Python objects; save strings as a str array "
                    "(numpy.asarray(labels, dtype=str))"
                ) from None
    return out


def _hdf5_arrays(file: Path) -> dict[str, np.ndarray]:
    """The datasets at an HDF5 file's root (groups are not searched), strings decoded."""
    import h5py

    out: dict[str, np.ndarray] = {}
    try:
        h5 = h5py.File(file, "r")
    except OSError as e:
        raise ValueError(f"{file} is not an HDF5 file: {e}") from None
    with h5:
        for key, item in h5.items():
            if not isinstance(item, h5py.Dataset):
                continue
            data = np.asarray(item[()])
            if h5py.check_string_dtype(item.dtype) is not None or data.dtype.kind == "S":
                data = _decode(file, key, data)
            out[key] = data
    return out


def _decode(file: Path, key: str, data: np.ndarray) -> np.ndarray:
    """Byte strings to text; bytes that are not UTF-8 are an error naming the index."""
    flat = data.reshape(-1)
    text = []
    for i, b in enumerate(flat):
        try:
            text.append(b.decode("utf-8") if isinstance(b, bytes) else str(b))
        except UnicodeDecodeError:
            raise ValueError(f"{file}, index {i}, column {key!r}: {b!r} is not UTF-8") from None
    return np.asarray(text, dtype=object).reshape(data.shape)


def _arrays_table(file: Path, arrays: dict[str, np.ndarray]) -> Table:
    """Named arrays as columns: 1-D by name, 2-D ``x`` as ``x_0`` ... ``x_{k-1}``."""
    columns: dict[str, np.ndarray] = {}
    n: int | None = None
    first = ""
    for key, a in arrays.items():
        if a.ndim not in (1, 2):
            raise ValueError(f"{file}: array {key!r} has {a.ndim} dimensions; columns are 1-D "
                             "arrays or the columns of a 2-D one")
        if n is None:
            n, first = len(a), key
        elif len(a) != n:
            raise ValueError(f"{file}: array {key!r} has {len(a)} rows, {first!r} has {n}")
        parts = {key: a} if a.ndim == 1 else {f"{key}_{j}": a[:, j] for j in range(a.shape[1])}
        for name, col in parts.items():
            if name in columns:
                raise ValueError(f"{file}: column {name!r} is named twice")
            columns[name] = col
    if n is None or n == 0:
        raise ValueError(f"{file} holds no table: no array with at least one row")
    return Table(file, columns, np.arange(n), "index")


def _read_sheet(file: Path, sheet: str | int | None) -> Table:
    """A spreadsheet's first (or named) sheet through pandas; the header is the first row."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            f"reading the spreadsheet {file} needs pandas: install the extra, {EXTRA}"
        ) from None
    try:
        frame = pd.read_excel(file, sheet_name=0 if sheet is None else sheet, dtype=object)
    except ImportError as e:
        raise ImportError(
            f"reading the spreadsheet {file} needs {e.name or 'a reader'}: {EXTRA}"
        ) from None
    except (ValueError, KeyError) as e:
        raise ValueError(f"{file}: {e}") from None
    names = _header(file, [str(c).strip() for c in frame.columns], "row", 1)
    columns = {n: frame[c].to_numpy(dtype=object) for n, c in zip(names, frame.columns,
                                                                   strict=True)}
    if not len(frame):
        raise ValueError(f"{file} holds no table: a header row and at least one row are needed")
    return Table(file, columns, np.arange(len(frame)) + 2, "row")


# ---------------------------------------------------------------------------- cells


def _is_missing(cell: Any) -> bool:
    if cell is None:
        return True
    if isinstance(cell, str):
        return cell.strip().lower() in _MISSING
    return isinstance(cell, float | np.floating) and math.isnan(cell)


def _number(table: Table, i: int, column: str) -> float:
    """One cell as a finite float, or an error naming the file, row and column."""
    cell = table.columns[column][i]
    if _is_missing(cell):
        raise ValueError(f"{table.where(i, column)}: missing value (empty or NaN)")
    try:
        v = float(cell.strip() if isinstance(cell, str) else cell)
    except (TypeError, ValueError):
        raise ValueError(f"{table.where(i, column)}: {cell!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{table.where(i, column)}: {cell!r} is not a finite number")
    return v


def _numbers(table: Table, names: list[str]) -> np.ndarray:
    """The named columns as a float matrix (rows, len(names)); any bad cell is an error."""
    out = np.empty((len(table), len(names)))
    for k, name in enumerate(names):
        cells = table.columns[name]
        try:
            v = np.asarray(cells, dtype=np.float64)
            ok = bool(np.isfinite(v).all())
        except (TypeError, ValueError):
            ok = False
        if not ok:  # cell by cell, to name the first bad one
            v = np.asarray([_number(table, i, name) for i in range(len(table))])
        out[:, k] = v
    return out


def _text(table: Table, column: str) -> list[str]:
    """A label-like column as strings (``3.0`` -> ``3``); a missing cell is an error."""
    out = []
    for i, cell in enumerate(table.column(column)):
        if _is_missing(cell):
            raise ValueError(f"{table.where(i, column)}: missing value (empty or NaN)")
        if isinstance(cell, float | np.floating) and float(cell).is_integer():
            cell = int(cell)
        out.append(str(cell).strip())
    return out


def _feature_names(table: Table, features: str | Sequence[str] | None,
                   reserved: dict[str, str]) -> list[str]:
    """Feature columns: all but ``reserved``, those starting with a prefix, or a list."""
    if features is None or isinstance(features, str):
        prefix = features or ""
        names = [c for c in table.columns if c.startswith(prefix) and c not in reserved]
        if not names:
            raise ValueError(
                f"{table.file}: no feature column starts with {prefix!r}; columns: {table.names()}"
            )
        return names
    names = [str(f) for f in features]
    if not names:
        raise ValueError(f"{table.file}: features is an empty list")
    for n in names:
        table.column(n)
        if n in reserved:
            raise ValueError(f"{table.file}: column {n!r} is the {reserved[n]} column, not a "
                             "feature")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{table.file}: feature column(s) listed twice: {', '.join(twice)}")
    return names


def _classes(table: Table, label: str, classes: Sequence[str] | None
             ) -> tuple[np.ndarray, list[str]]:
    """Class indices and names: ``classes`` in its order, else sorted (numerically if numbers)."""
    labels = _text(table, label)
    if classes is None:
        found = sorted(set(labels))
        try:
            names = sorted(found, key=float)
        except ValueError:
            names = found
    else:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise ValueError(f"classes lists a name twice: {names}")
    index = {c: k for k, c in enumerate(names)}
    for i, lab in enumerate(labels):
        if lab not in index:
            raise ValueError(f"{table.where(i, label)}: label {lab!r} is not one of classes {names}")
    y = np.asarray([index[lab] for lab in labels], dtype=np.int64)
    counts = np.bincount(y, minlength=len(names))
    for k, c in enumerate(counts):
        if c < 2:
            at = "" if c == 0 else f" ({table.unit} {table.rows[np.flatnonzero(y == k)[0]]})"
            raise ValueError(
                f"{table.file}: class {names[k]!r} (column {label!r}) has {c} row(s){at}; every "
                "class needs >= 2 to be split into train and test"
            )
    if len(names) < 2:
        raise ValueError(f"{table.file}: column {label!r} holds one class, {names}; need >= 2")
    return y, names


# ---------------------------------------------------------------------------- splits


def _fixed_split(table: Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows from a column of ``train``/``test`` (any case)."""
    values = [v.lower() for v in _text(table, column)]
    for i, v in enumerate(values):
        if v not in ("train", "test"):
            raise ValueError(f"{table.where(i, column)}: {v!r} is neither 'train' nor 'test'")
    s = np.asarray(values)
    return np.flatnonzero(s == "train"), np.flatnonzero(s == "test")


def _group_split(groups: list[str], test_fraction: float, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Whole groups to the test set, in a seeded random order, until it holds
    ``test_fraction`` of the rows; no group is on both sides."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sizes = np.bincount(inverse)
    picked: list[int] = []
    n_test = 0
    for g in np.random.default_rng(seed).permutation(len(names)):
        if n_test >= test_fraction * len(groups):
            break
        picked.append(int(g))
        n_test += int(sizes[g])
    test = np.isin(inverse, picked)
    return np.flatnonzero(~test), np.flatnonzero(test)


def _check_split(table: Table, y: np.ndarray, names: list[str], train: np.ndarray,
                 test: np.ndarray, how: str, groups: list[str] | None) -> None:
    """Every class on both sides; with groups, no group on both sides."""
    for side, rows in (("training", train), ("test", test)):
        absent = [names[k] for k in range(len(names)) if not (y[rows] == k).any()]
        if absent:
            raise ValueError(
                f"{table.file}: {how} leaves class(es) {absent} out of the {side} set; every "
                "class needs rows on both sides (more groups, another seed or test_fraction)"
            )
    if groups is not None:
        both = sorted({groups[i] for i in train} & {groups[i] for i in test})
        if both:
            raise ValueError(f"{table.file}: {how} puts group(s) {both[:10]} in both the "
                             "training and the test set")


# ------------------------------------------------------------------------- the data set


def load_table(
    *,
    path: str | Path,
    label: str = "label",
    features: str | Sequence[str] | None = None,
    group: str | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    sheet: str | int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    scaling: str = "minmax",
    pad_to: int | None = None,
    reserve_label_slots: bool = True,
    label_width: int = 1,
    digits: int = 1,
    digit_levels: int = DIGIT_LEVELS,
) -> Dataset:
    """A classification table from a file as a ``Dataset`` (the registry's ``"table"``).

    ``path``: a ``.csv``/``.tsv``/``.txt``, ``.npz``, ``.h5``/``.hdf5`` or ``.xlsx``/``.ods``
    file (layouts: this module's docstring). ``label``: the column of class labels.
    ``features``: a list of column names, or a prefix string (``"F"``: every column whose
    name starts with F, in the file's order); None takes every column but the label,
    group and split ones. ``classes``: the class names in the order of their indices;
    None sorts the labels (numerically when all are numbers).

    The split, in order of precedence:

    - ``split``: a column of ``train``/``test``: that fixed split (with ``group`` as well,
      it is checked to put no group on both sides);
    - ``group``: a column of group ids (speaker, session, sample): whole groups go to the
      test set in a seeded random order until it holds ``test_fraction`` of the rows, so
      no group is in both (a model is tested on speakers it never heard);
    - neither: ``stratified_split`` by ``test_fraction`` and ``seed``, exactly as
      ``load_vowels`` and the other loaders split: the same rows in the same order with the
      same classes give the same tensors.

    Every class needs a row in both sets. ``scaling``, ``pad_to``, ``reserve_label_slots``,
    ``label_width``, ``digits`` and ``digit_levels`` mean what they mean for ``make_dataset``
    (statistics from the training rows only). Missing or non-numeric feature cells, unknown
    columns, classes of one row and files that are not UTF-8 are errors naming the file, row
    and column.
    """
    table = read_table(path, sheet=sheet)
    reserved = {label: "label"}
    for role, col in (("group", group), ("split", split)):
        if col is not None:
            table.column(col)
            if col in reserved:
                raise ValueError(f"column {col!r} cannot be both the {reserved[col]} and the "
                                 f"{role} column")
            reserved[col] = role
    names = _feature_names(table, features, reserved)
    y, class_names = _classes(table, label, classes)
    x = _numbers(table, names)
    groups = None if group is None else _text(table, group)
    rows: tuple[np.ndarray, np.ndarray] | None = None
    how = ""
    if split is not None:
        rows = _fixed_split(table, split)
        how = f"the fixed split (column {split!r})"
    elif groups is not None:
        rows = _group_split(groups, test_fraction, seed)
        how = f"the group split (column {group!r}, seed {seed}, test_fraction {test_fraction})"
    if rows is not None:
        _check_split(table, y, class_names, rows[0], rows[1], how, groups)
    return make_dataset(
        f"table-{table.file.stem}", x, y, class_names, test_fraction=test_fraction, seed=seed,
        reserve_label_slots=reserve_label_slots, label_width=label_width, scaling=scaling,
        pad_to=pad_to, split=rows, digits=digits, digit_levels=digit_levels,
    )


def write_table(path: str | Path, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> Path:
    """Write named columns as a UTF-8 CSV that ``load_table`` reads back exactly.

    Floats are written with ``repr`` (the shortest text that parses to the same double),
    so a table exported from arrays gives bit-identical tensors; NaN becomes an empty cell
    (which ``load_table`` refuses as a missing value: drop or fill it first).
    """
    cols = {str(k): list(np.asarray(v).tolist()) for k, v in columns.items()}
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns differ in length: {lengths}")

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else repr(v)
        return str(v)

    file = Path(path).expanduser()
    with file.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for row in zip(*cols.values(), strict=True):
            w.writerow([cell(v) for v in row])
    return file
