"""Vowel formant data sets: Hillenbrand et al. (1995), Peterson & Barney (1952), or synthetic.

The vowel task of the backpropagation-free physical-network paper (Momeni et al., Science
382:1297, 2023) classifies women's vowels {ae, ah, aw, er, ih, iy, uw} from 12 formant
features: F1, F2, F3 at the steady state and at 20 %, 50 % and 80 % of the vowel.

Three sources give the same kind of ``physnn.data.Dataset`` (see ``load_vowels``):

- ``"synthetic"`` (default, needs no file): tokens drawn from a speaker model around the
  published mean formants of Hillenbrand et al. (1995), Table V. Not real speech.
- ``"hillenbrand"``: the measurement table ``vowdata.dat`` of Hillenbrand, Getty, Clark and
  Wheeler, J. Acoust. Soc. Am. 97(5):3099-3111 (1995), read from a path you give.
- ``"peterson-barney"``: the Peterson & Barney (1952) table that ships inside the optional
  dependency praat-parselmouth (steady-state F0-F3 only).

physnn never downloads data: the Hillenbrand recordings and measurements carry no open
licence and are not part of the package.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .dataset import DIGIT_LEVELS, SCALINGS, Dataset, make_dataset
from .tokens import read_token_list, token_rows

log = logging.getLogger(__name__)

VOWELS_7 = ("ae", "ah", "aw", "er", "ih", "iy", "uw")
"""The 7-vowel task of Momeni et al. (2023)."""

HILLENBRAND_VOWELS = ("ae", "ah", "aw", "eh", "ei", "er", "ih", "iy", "oa", "oo", "uh", "uw")
"""Hillenbrand's vowel codes: ae had, ah hod, aw hawed, eh head, ei hayed, er heard, ih hid,
iy heed, oa boat, oo hood, uh hud, uw who'd."""

COLUMNS = (
    "duration", "F0", "F1", "F2", "F3", "F4",
    "F1_20", "F2_20", "F3_20", "F1_50", "F2_50", "F3_50", "F1_80", "F2_80", "F3_80",
)
"""Numeric columns of ``vowdata.dat`` after the file name, in file order (ms and Hz);
``F0`` to ``F4`` are measured at the steady state, ``Fk_P`` at P % of the vowel."""

FEATURES_12 = (
    "F1", "F2", "F3", "F1_20", "F2_20", "F3_20",
    "F1_50", "F2_50", "F3_50", "F1_80", "F2_80", "F3_80",
)
"""The 12 features of the paper's vowel task."""

SOURCES = ("synthetic", "hillenbrand", "peterson-barney")

_TOKEN = re.compile(r"^([mwbg])(\d{2})([a-z]{2})$")
_NOT_DOWNLOADED = (
    "physnn never downloads data: get the Hillenbrand et al. (1995) files (vowdata.dat, "
    "wav/) yourself; project developers find them in ../shared/data/hillenbrand beside the "
    "repository"
)


@dataclass(frozen=True)
class VowelTable:
    """One row per vowel token: labels as arrays, numeric columns by name (NaN = missing)."""

    token: np.ndarray
    """Token name, e.g. ``w01ae``."""
    group: np.ndarray
    """``m`` man, ``w`` woman, ``b`` boy, ``g`` girl (``c`` child where boys and girls are
    not told apart: Peterson & Barney, Table V)."""
    speaker: np.ndarray
    """Speaker number within the group."""
    vowel: np.ndarray
    """Vowel code (Hillenbrand's codes, see ``HILLENBRAND_VOWELS``)."""
    columns: dict[str, np.ndarray]
    """Numeric columns (float, Hz or ms); NaN where the value was not measurable."""

    def __len__(self) -> int:
        return len(self.token)

    def __getitem__(self, column: str) -> np.ndarray:
        try:
            return self.columns[column]
        except KeyError:
            raise KeyError(f"no column {column!r}; columns: {', '.join(self.columns)}") from None

    def features(self, names: Sequence[str] = FEATURES_12) -> np.ndarray:
        """The named columns side by side, shape (tokens, len(names))."""
        return np.stack([self[n] for n in names], axis=1)

    def select(self, mask: np.ndarray) -> VowelTable:
        """The rows where ``mask`` is true (or the given row indices)."""
        return VowelTable(
            self.token[mask], self.group[mask], self.speaker[mask], self.vowel[mask],
            {k: v[mask] for k, v in self.columns.items()},
        )

    def subset(
        self, groups: Iterable[str] | None = None, vowels: Iterable[str] | None = None
    ) -> VowelTable:
        """Tokens of the given groups (letters) and vowels (codes); None keeps all."""
        mask = np.ones(len(self), dtype=bool)
        if groups is not None:
            mask &= np.isin(self.group, list(groups))
        if vowels is not None:
            mask &= np.isin(self.vowel, list(vowels))
        return self.select(mask)


# --------------------------------------------------------------------------- Hillenbrand


def _not_found(message: str, path: Path) -> FileNotFoundError:
    """Missing data; a relative path names the directory it was looked up from (a preset's
    relative ``data.path`` only works from the repository root)."""
    where = "" if path.is_absolute() else f" (looked up from {Path.cwd()})"
    return FileNotFoundError(f"{message}{where}; pass data.path=DIR. {_NOT_DOWNLOADED}")


def _table_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise _not_found(f"{p} does not exist", p)
    if p.is_dir():
        f = p / "vowdata.dat"
        if not f.is_file():
            raise _not_found(f"no vowdata.dat in folder {p}", p)
        return f
    return p


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_hillenbrand_table(path: str | Path) -> VowelTable:
    """Parse Hillenbrand's ``vowdata.dat`` (``path``: the file or the folder holding it).

    The file is a free-text header, then one whitespace-separated line per token: the name
    (``w01ae``: group letter, speaker number, vowel code) and the 15 ``COLUMNS``.
    Zeros ("not measurable") become NaN. Raises ``FileNotFoundError`` for a missing path
    and ``ValueError`` (with the line number) for a malformed line or a file that is not
    the table.
    """
    f = _table_file(path)
    raw = f.read_bytes()
    if b"\x00" in raw:
        raise ValueError(f"{f} is a binary file, not the Hillenbrand vowdata.dat table")
    text = raw.decode("latin-1")
    tokens: list[str] = []
    groups: list[str] = []
    speakers: list[int] = []
    vowels: list[str] = []
    values: list[list[float]] = []
    in_data = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        looks_like_row = _TOKEN.match(fields[0]) is not None or (
            len(fields) > 1 and not _is_number(fields[0]) and all(map(_is_number, fields[1:]))
        )
        if not in_data and not looks_like_row:
            continue  # free-text header
        in_data = True
        m, nums = _parse_row(fields, f"{f}, line {lineno}")
        tokens.append(fields[0])
        groups.append(m.group(1))
        speakers.append(int(m.group(2)))
        vowels.append(m.group(3))
        values.append(nums)
    if not tokens:
        raise ValueError(
            f"{f} is not the Hillenbrand vowdata.dat table: no token line like "
            f"'w01ae 290 220 ...' found"
        )
    arr = np.asarray(values, dtype=float)
    arr[arr == 0] = np.nan
    return VowelTable(
        np.asarray(tokens), np.asarray(groups), np.asarray(speakers, dtype=int),
        np.asarray(vowels), {name: arr[:, i] for i, name in enumerate(COLUMNS)},
    )


def _parse_row(fields: list[str], where: str) -> tuple[re.Match[str], list[float]]:
    """One token line: its name split by ``_TOKEN`` and its ``COLUMNS`` values."""
    n_cols = len(COLUMNS)
    m = _TOKEN.match(fields[0])
    if m is None:
        raise ValueError(
            f"{where}: {fields[0]!r} is not a token name like 'w01ae' "
            f"(group m/w/b/g, 2-digit speaker, vowel code)"
        )
    if len(fields) != 1 + n_cols:
        raise ValueError(
            f"{where}: expected a token name and {n_cols} numbers, found {len(fields)} fields"
        )
    try:
        nums = [float(v) for v in fields[1:]]
    except ValueError:
        bad = next(v for v in fields[1:] if not _is_number(v))
        raise ValueError(f"{where}: {bad!r} is not a number") from None
    if any(v < 0 or not np.isfinite(v) for v in nums):
        raise ValueError(f"{where}: values must be finite and >= 0 (0 = not measurable)")
    return m, nums


class VowelRecordings(NamedTuple):
    """Recordings read by ``read_hillenbrand_wav``, in the order asked for."""

    signals: list[np.ndarray]
    """One float32 array per file, samples in [-1, 1)."""
    sample_rate: int
    names: list[str]
    """File names without ``.wav``, in the order of ``signals``."""


def read_hillenbrand_wav(
    folder: str | Path, files: Iterable[str] | None = None
) -> VowelRecordings:
    """Read Hillenbrand's RIFF 16-bit mono recordings (``folder`` or its ``wav/`` subfolder).

    ``files``: names like ``w01ae`` or ``w01ae.wav``; None reads every ``*.wav``, sorted.
    All files must share one sample rate (16 kHz in the original set).
    """
    from scipy.io import wavfile

    d = Path(folder).expanduser()
    if not d.is_dir():
        raise _not_found(f"{d} is not a folder", d)
    if files is None and not any(d.glob("*.wav")) and (d / "wav").is_dir():
        d = d / "wav"
    if files is None:
        paths = sorted(d.glob("*.wav"))
        if not paths:
            raise _not_found(f"no .wav files in {d}", d)
    else:
        files = [str(n) for n in files]
        if files and (d / "wav").is_dir() and not (d / _wav_name(files[0])).exists():
            d = d / "wav"
        paths = [d / _wav_name(n) for n in files]
    signals, names, rate = [], [], None
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist")
        try:
            r, data = wavfile.read(p)
        except ValueError as e:
            raise ValueError(f"{p} is not a RIFF/WAVE PCM file: {e}") from None
        if data.dtype != np.int16 or data.ndim != 1:
            ch = 1 if data.ndim == 1 else data.shape[1]
            raise ValueError(
                f"{p}: expected 16-bit mono PCM, got {data.dtype} with {ch} channel(s)"
            )
        if rate is not None and r != rate:
            raise ValueError(f"{p}: sample rate {r} Hz differs from {rate} Hz of the others")
        rate = r
        signals.append(data.astype(np.float32) / 32768.0)
        names.append(p.stem)
    if rate is None:
        raise ValueError("no files to read")
    return VowelRecordings(signals, int(rate), names)


def _wav_name(name: str) -> str:
    return name if name.endswith(".wav") else f"{name}.wav"


# ------------------------------------------------------------------------ Peterson-Barney

# Peterson & Barney's ARPAbet-like codes -> Hillenbrand's codes (same IPA vowel).
_PB_TO_HILLENBRAND = {
    "iy": "iy", "ih": "ih", "eh": "eh", "ae": "ae", "aa": "ah", "ao": "aw",
    "ah": "uh", "uh": "oo", "uw": "uw", "er": "er",
}


def read_peterson_barney() -> VowelTable:
    """Peterson & Barney (1952): 1,520 tokens, steady-state F0-F3, from praat-parselmouth.

    33 men (``m``), 28 women (``w``) and 15 children (``c``) said 10 vowels twice each.
    Vowel codes are translated to Hillenbrand's (P&B ``aa`` -> ``ah``, ``ao`` -> ``aw``,
    ``ah`` -> ``uh``, ``uh`` -> ``oo``; the others are the same). The token name appends the
    repetition: ``w34iy-1``, ``w34iy-2``.
    """
    try:
        from parselmouth.praat import call
    except ImportError:
        raise ImportError(
            "the Peterson & Barney (1952) table comes with the optional dependency "
            "praat-parselmouth; install it with `pip install praat-parselmouth` "
            "(or `pip install 'physnn[vowels]'`)"
        ) from None
    table = call("Create formant table (Peterson & Barney 1952)")
    lines = call(table, "List", False).strip().splitlines()
    header = lines[0].split("\t")
    expected = ["Type", "Sex", "Speaker", "Vowel", "IPA", "F0", "F1", "F2", "F3"]
    if header != expected:
        raise RuntimeError(f"unexpected Peterson & Barney columns from parselmouth: {header}")
    rows = [ln.split("\t") for ln in lines[1:]]
    seen: dict[str, int] = {}
    tokens = []
    for r in rows:
        base = f"{r[0]}{int(r[2]):02d}{_PB_TO_HILLENBRAND[r[3]]}"
        seen[base] = seen.get(base, 0) + 1
        tokens.append(f"{base}-{seen[base]}")
    num = np.asarray([[float(v) for v in r[5:9]] for r in rows])
    num[num <= 0] = np.nan
    return VowelTable(
        np.asarray(tokens), np.asarray([r[0] for r in rows]),
        np.asarray([int(r[2]) for r in rows]),
        np.asarray([_PB_TO_HILLENBRAND[r[3]] for r in rows]),
        {name: num[:, i] for i, name in enumerate(("F0", "F1", "F2", "F3"))},
    )


# ------------------------------------------------------------------------------ synthetic

# Hillenbrand, Getty, Clark & Wheeler (1995), "Acoustic characteristics of American English
# vowels", J. Acoust. Soc. Am. 97(5):3099-3111, Table V: mean F0, F1, F2, F3 in Hz at the
# steady state, for men (m), women (w) and children (c). Published figures.
TABLE_V: dict[str, dict[str, tuple[int, int, int, int]]] = {
    "iy": {"m": (138, 342, 2322, 3000), "w": (227, 437, 2761, 3372), "c": (246, 452, 3081, 3702)},
    "ih": {"m": (135, 427, 2034, 2684), "w": (224, 483, 2365, 3053), "c": (241, 511, 2552, 3323)},
    "ei": {"m": (129, 476, 2089, 2691), "w": (219, 536, 2530, 3047), "c": (237, 564, 2656, 3323)},
    "eh": {"m": (127, 580, 1799, 2605), "w": (214, 731, 2058, 2979), "c": (230, 749, 2267, 3310)},
    "ae": {"m": (123, 588, 1952, 2601), "w": (215, 669, 2349, 2972), "c": (228, 717, 2501, 3289)},
    "ah": {"m": (123, 768, 1333, 2522), "w": (215, 936, 1551, 2815), "c": (229, 1002, 1688, 2950)},
    "aw": {"m": (121, 652, 997, 2538), "w": (210, 781, 1136, 2824), "c": (225, 803, 1210, 2982)},
    "oa": {"m": (129, 497, 910, 2459), "w": (217, 555, 1035, 2828), "c": (236, 597, 1137, 2987)},
    "oo": {"m": (133, 469, 1122, 2434), "w": (230, 519, 1225, 2827), "c": (243, 568, 1490, 3072)},
    "uw": {"m": (143, 378, 997, 2343), "w": (235, 459, 1105, 2735), "c": (249, 494, 1345, 2988)},
    "uh": {"m": (133, 623, 1200, 2550), "w": (218, 753, 1426, 2933), "c": (236, 749, 1546, 3145)},
    "er": {"m": (130, 474, 1379, 1710), "w": (217, 523, 1588, 1929), "c": (237, 586, 1719, 2143)},
}


@dataclass(frozen=True)
class SpeakerModel:
    """Spreads of the synthetic vowel generator (standard deviations of log-factors)."""

    vocal_tract: float = 0.045
    """Per speaker: one multiplicative factor on all formants (vocal-tract length)."""
    f0: float = 0.10
    """Per speaker: one multiplicative factor on F0."""
    token: tuple[float, float, float] = (0.07, 0.06, 0.045)
    """Per token: independent jitter of the F1, F2, F3 targets (articulation)."""
    onset: float = 0.1
    """Largest onset glide at 20 % of the vowel, as a fraction of the way from the target
    toward the speaker's neutral vowel (drawn uniformly in [0, onset] per token)."""
    offset: float = 0.5
    """Largest offset glide at 80 % (uniform in [0, offset] per token); 50 % of the vowel
    is 40 % of the way there."""
    measurement: float = 0.02
    """Per measured point: formant-tracking error."""
    f0_token: float = 0.04
    """Per token: F0 jitter."""


def synthesize_vowel_table(
    *,
    seed: int = 0,
    n_speakers: int = 37,
    vowels: Sequence[str] = VOWELS_7,
    group: str = "w",
    model: SpeakerModel | None = None,
) -> VowelTable:
    """SYNTHETIC vowel tokens: every speaker says every vowel once. Not real speech.

    Driven by the published means of Hillenbrand et al. (1995) Table V (``TABLE_V``) for
    ``group`` (``m``, ``w`` or ``c``). Each speaker gets one vocal-tract factor that scales
    all formants and one F0 factor; each token jitters its F1-F3 targets; the formant track
    sits on the target at the steady state and glides toward the speaker's neutral vowel
    (the mean of the 12 vowels of Table V): a little at 20 % (onset), more toward the end
    (50 % and 80 %, offset), by random fractions (``SpeakerModel``); every measured
    point carries a small tracking error.
    Gives the same columns as ``vowdata.dat`` (``duration`` and ``F4`` are NaN). One seed,
    identical tokens.
    """
    model = model or SpeakerModel()
    if group not in ("m", "w", "c"):
        raise ValueError(f"synthetic group must be 'm', 'w' or 'c' (Table V), got {group!r}")
    unknown = [v for v in vowels if v not in TABLE_V]
    if unknown:
        raise ValueError(f"unknown vowel codes {unknown}; allowed: {', '.join(TABLE_V)}")
    if n_speakers < 1:
        raise ValueError(f"n_speakers must be >= 1, got {n_speakers}")
    rng = np.random.default_rng(seed)
    means = np.array([TABLE_V[v][group] for v in vowels], dtype=float)  # (V, 4): F0..F3
    neutral = np.array([TABLE_V[v][group][1:] for v in TABLE_V], dtype=float).mean(0)
    n_v = len(vowels)
    tract = np.exp(model.vocal_tract * rng.standard_normal(n_speakers))  # (S,)
    f0_spk = np.exp(model.f0 * rng.standard_normal(n_speakers))
    shape = (n_speakers, n_v)
    target = (
        means[None, :, 1:] * tract[:, None, None]
        * np.exp(np.asarray(model.token) * rng.standard_normal((*shape, 3)))
    )  # (S, V, 3)
    centre = neutral[None, None, :] * tract[:, None, None]
    onset = model.onset * rng.uniform(size=(*shape, 1))
    offset = model.offset * rng.uniform(size=(*shape, 1))
    points = {  # fraction of the way from the target to the neutral vowel
        "": np.zeros_like(onset), "_20": onset, "_50": 0.4 * offset, "_80": offset,
    }
    cols: dict[str, np.ndarray] = {}
    f0 = means[None, :, 0] * f0_spk[:, None] * np.exp(model.f0_token * rng.standard_normal(shape))
    n = n_speakers * n_v
    cols["duration"] = np.full(n, np.nan)
    cols["F0"] = f0.reshape(n)
    for suffix, w in points.items():
        track = target + w * (centre - target)
        track = track * np.exp(model.measurement * rng.standard_normal(track.shape))
        for k in range(3):
            cols[f"F{k + 1}{suffix}"] = track[..., k].reshape(n)
        if suffix == "":
            cols["F4"] = np.full(n, np.nan)
    cols = {c: cols[c] for c in COLUMNS}
    spk = np.repeat(np.arange(1, n_speakers + 1), n_v)
    vow = np.tile(np.asarray(vowels), n_speakers)
    tokens = np.asarray([f"{group}{s:02d}{v}" for s, v in zip(spk, vow, strict=True)])
    return VowelTable(tokens, np.full(n, group), spk, vow, cols)


# --------------------------------------------------------------------------- the data set


def load_vowels(
    *,
    source: str = "synthetic",
    path: str | Path | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    reserve_label_slots: bool = True,
    label_width: int = 1,
    pad_to: int | None = None,
    vowels: Sequence[str] = VOWELS_7,
    group: str = "w",
    features: Sequence[str] | None = None,
    scaling: str = "zscore",
    missing: str = "drop",
    n_speakers: int | None = None,
    subset: str | Path | None = None,
    digits: int = 1,
    digit_levels: int = DIGIT_LEVELS,
) -> Dataset:
    """The vowel classification task as a ``Dataset`` (the registry's ``"vowels"``).

    ``source``:

    - ``"synthetic"`` (default, no file needed): ``synthesize_vowel_table`` with
      ``n_speakers`` (37) speakers of ``group``; the Dataset is named ``vowels-synthetic``.
      SYNTHETIC tokens around Hillenbrand's Table V means, not recordings.
    - ``"hillenbrand"``: ``path`` (the folder holding ``vowdata.dat``, or the file) is
      required; physnn never downloads it. The women's 7-vowel task has 336 tokens in the
      file (48 speakers x 7); ``subset="momeni2023"`` keeps the paper's 258 (their list of
      token names ships with physnn, the values still come from ``path``).
    - ``"peterson-barney"``: needs praat-parselmouth; only steady-state F0-F3 exist, so the
      default features are F1, F2, F3 (no formant track, F0 is a speaker cue rather than a
      vowel cue); 56 tokens per vowel for women.

    ``vowels`` (Hillenbrand codes) become ``class_names`` in that order; ``group`` is one or
    more group letters (Hillenbrand ``m w b g``, Peterson & Barney and synthetic ``m w c``).
    ``features`` defaults to ``FEATURES_12`` (F1-F3 at the steady state, 20, 50, 80 %)
    for Hillenbrand and synthetic. ``missing``: what to do with Hillenbrand tokens whose
    formants were not measurable (a 0 in the file): ``"drop"`` (default: the token is
    removed; in the women's 7-vowel task 20 of 336 tokens, 11 ``er``, 5 ``iy``, 2 ``aw``,
    1 ``ae``, 1 ``ah``, each missing an F2 or F3; 316 stay) or ``"impute"`` (the training
    split's mean of that feature; all 336 stay).

    Features are scaled with the training split's statistics (``scaling``, default
    ``"zscore"``: z-score, then shift and scale the whole matrix into [0, 1]; see
    ``make_dataset``), ``reserve_label_slots`` prepends ``label_width`` zero entries
    per class for the label overlay, and ``pad_to`` pads with zeros to that input width.
    ``digits`` and ``digit_levels`` write each feature as several device inputs
    (``make_dataset``). Split: stratified, ``test_fraction`` per class, fixed by ``seed``.

    ``subset`` (Hillenbrand only): a named token list (``"momeni2023"``, see
    ``physnn.data.tokens.SUBSETS``) or a file of token names, one per line, ``#`` comments.
    Its tokens are taken in the list's order (the split shuffles each class in row order);
    a listed token missing from the file, or outside ``group`` and ``vowels``, is an error.
    """
    vowels = _check_options(source, scaling, missing, vowels, path, n_speakers, subset)
    table = _read_table(source, path, seed, n_speakers, vowels, group, subset)
    if features is None:
        features = ("F1", "F2", "F3") if source == "peterson-barney" else FEATURES_12
    features = [features] if isinstance(features, str) else list(features)
    table, x = _feature_matrix(table, features, missing, source)
    y = _labels(table, vowels, source, group)
    return make_dataset(
        f"vowels-{source}", x, y, vowels,
        test_fraction=test_fraction, seed=seed, reserve_label_slots=reserve_label_slots,
        label_width=label_width, scaling=scaling, pad_to=pad_to, impute_missing=True,
        digits=digits, digit_levels=digit_levels,
    )


def _check_options(source: str, scaling: str, missing: str, vowels: Sequence[str],
                   path: str | Path | None, n_speakers: int | None,
                   subset: str | Path | None = None) -> list[str]:
    """Refuse option combinations ``load_vowels`` cannot honour; the vowels as a list."""
    if source not in SOURCES:
        raise ValueError(f"unknown vowel source {source!r}; allowed: {', '.join(SOURCES)}")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; allowed: {', '.join(SCALINGS)}")
    if missing not in ("impute", "drop"):
        raise ValueError(f"missing must be 'impute' or 'drop', got {missing!r}")
    codes = [vowels] if isinstance(vowels, str) else list(vowels)
    if len(set(codes)) != len(codes) or len(codes) < 2:
        raise ValueError(f"vowels must be >= 2 distinct codes, got {codes}")
    if path is not None and source != "hillenbrand":
        raise ValueError(f"path is only used with source='hillenbrand', not {source!r}")
    if subset is not None and source != "hillenbrand":
        raise ValueError(f"subset is only used with source='hillenbrand', not {source!r}")
    if n_speakers is not None and source != "synthetic":
        raise ValueError(f"n_speakers is only used with source='synthetic', not {source!r}")
    return codes


def _read_table(source: str, path: str | Path | None, seed: int, n_speakers: int | None,
                vowels: list[str], group: str,
                subset: str | Path | None = None) -> VowelTable:
    """The tokens of ``group`` and ``vowels`` from ``source`` (of ``subset``, in its order)."""
    if source == "synthetic":
        return synthesize_vowel_table(
            seed=seed, n_speakers=37 if n_speakers is None else int(n_speakers),
            vowels=vowels, group=group,
        )
    if source == "hillenbrand":
        if path is None:
            raise ValueError(
                "source='hillenbrand' needs path=: the folder holding vowdata.dat (or the "
                f"file itself). {_NOT_DOWNLOADED}"
            )
        table = read_hillenbrand_table(path)
        _check_choice("group", group, "mwbg")
        if subset is not None:
            return _token_subset(table, subset, vowels, group, str(path))
    else:
        table = read_peterson_barney()
        _check_choice("group", group, "mwc")
    _check_choice("vowel", vowels, sorted(set(table.vowel)))
    return table.subset(groups=group, vowels=vowels)


def _token_subset(table: VowelTable, subset: str | Path, vowels: list[str], group: str,
                  where: str) -> VowelTable:
    """The listed tokens in the list's order; all must be of ``group`` and ``vowels``."""
    _check_choice("vowel", vowels, sorted(set(table.vowel)))
    picked = table.select(token_rows(table.token, read_token_list(subset), where))
    outside = ~(np.isin(picked.group, list(group)) & np.isin(picked.vowel, vowels))
    if outside.any():
        raise ValueError(
            f"subset {str(subset)!r}: {int(outside.sum())} token(s) outside group {group!r} "
            f"and vowels {vowels} (first: {picked.token[outside][0]}); set group/vowels to match"
        )
    return picked


def _feature_matrix(table: VowelTable, features: list[str], missing: str,
                    source: str) -> tuple[VowelTable, np.ndarray]:
    """The feature columns, without the tokens that miss one when ``missing="drop"``."""
    x = table.features(features)
    incomplete = np.isnan(x).any(1)
    if incomplete.any() and missing == "drop":
        log.info("%s: dropped %d of %d tokens with unmeasurable formants",
                 source, int(incomplete.sum()), len(x))
        return table.select(~incomplete), x[~incomplete]
    if incomplete.any():
        log.info("%s: %d of %d tokens have unmeasurable formants, imputed with the training "
                 "mean", source, int(incomplete.sum()), len(x))
    return table, x


def _labels(table: VowelTable, vowels: list[str], source: str, group: str) -> np.ndarray:
    """Class indices in the order of ``vowels``; every class needs two tokens to be split."""
    index = {v: i for i, v in enumerate(vowels)}
    y = np.asarray([index[v] for v in table.vowel], dtype=np.int64)
    counts = np.bincount(y, minlength=len(vowels))
    if counts.min() < 2:
        empty = [v for v, c in zip(vowels, counts, strict=True) if c < 2]
        raise ValueError(f"{source}: fewer than 2 tokens of {empty} in group {group!r}")
    return y


def _check_choice(what: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    bad = [g for g in given if g not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad}; allowed: {', '.join(allowed)}")
