"""Hillenbrand vowel recordings as waveforms: the raw-audio data set ``hillenbrand-audio``.

The input of ``sim:acoustic-wave`` (and of wavetorch's vowel task, Hughes et al., Science
Advances 2019): each row is one recording, resampled, cropped or padded to a fixed length
and scaled to ``max |x| = 1``. The split is by speaker: no speaker has recordings in both
train and test, so a test score measures generalisation to new voices, not to new tokens of
voices already heard.

The recordings (Hillenbrand, Getty, Clark and Wheeler, J. Acoust. Soc. Am. 97:3099, 1995;
``wav/``: men and women, 12 vowels, 16 kHz) carry no open licence: physnn never downloads or
ships them, ``path`` names a folder you have.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset
from .vowels import _NOT_DOWNLOADED, HILLENBRAND_VOWELS, _not_found, read_hillenbrand_wav

AUDIO_GROUPS = ("m", "w", "b", "g")
"""Speaker groups of Hillenbrand's file names: men, women, boys, girls."""

CROPS = ("center", "start")
"""Where a recording longer than ``length`` is cut: its middle (the vowel nucleus of an
/hVd/ word) or its beginning."""

SCALES = ("signed", "unit")
"""``signed``: waveforms in [-1, 1] (``max |x| = 1``), what ``sim:acoustic-wave`` takes;
``unit``: ``(x + 1) / 2`` in [0, 1], for pipelines that map [0, 1] features onto a device's
domain (the experiment runner does): mapped onto [-1, 1] it is the signed waveform again."""

_FILE = re.compile(r"^([mwbg])(\d{2})([a-z]{2})\.wav$")


@dataclass
class AudioDataset(Dataset):
    """A ``Dataset`` of waveforms (one row a recording) and what a device needs to know."""

    sample_rate: int = 0
    """Sample rate of every row, Hz (what ``sim:acoustic-wave``'s ``sample_rate`` must be)."""
    train_speakers: tuple[str, ...] = ()
    """Speakers (``w01``: group letter and number) of the training rows."""
    test_speakers: tuple[str, ...] = ()
    """Speakers of the test rows; none of them is in ``train_speakers``."""
    train_tokens: tuple[str, ...] = ()
    """File names (without ``.wav``) of the training rows, in row order."""
    test_tokens: tuple[str, ...] = ()
    """File names of the test rows, in row order."""


def load_hillenbrand_audio(
    *,
    path: str | Path | None = None,
    seed: int = 0,
    vowels: Sequence[str] = ("ae", "ei", "iy"),
    groups: Sequence[str] = ("m", "w"),
    length: int = 1000,
    sample_rate: int | None = 8000,
    crop: str = "center",
    test_fraction: float = 0.25,
    remove_dc: bool = True,
    scale: str = "signed",
    label_slots: bool = False,
) -> AudioDataset:
    """Hillenbrand's recordings of ``vowels`` by speakers of ``groups`` (the registry's
    ``"hillenbrand-audio"``).

    ``path``: the folder holding the ``.wav`` files, or the folder above its ``wav/``
    (required: physnn never downloads them). Each recording is resampled to ``sample_rate``
    Hz (``scipy.signal.resample_poly``: a polyphase filter with an anti-aliasing low-pass;
    None keeps the files' 16 kHz), its mean is removed (``remove_dc``), it is cut to
    ``length`` samples around its middle or from its start (``crop``) or padded with zeros
    (centred, or at the end with ``crop="start"``), and scaled to ``max |x| = 1`` (``scale``).

    Classes are ``vowels`` in that order. The split is by speaker and fixed by ``seed``:
    within each group, ``test_fraction`` of its speakers (at least one) go to test with all
    their recordings. Returns an ``AudioDataset`` (``sample_rate``, the speakers and tokens
    of each split).

    ``label_slots``: put one silent entry per class in front of every row (``Dataset.label_slots
    = len(vowels)``), where PhyLL overlays the label; ``sim:acoustic-wave`` with as many
    ``label_tones`` plays each as a tone burst before the waveform. Silent is 0, which is 0.5
    with ``scale="unit"``.
    """
    vowel_list, group_list = _check_options(vowels, groups, length, sample_rate, crop,
                                            test_fraction, scale)
    folder, names = _files(path, vowel_list, group_list)
    rec = read_hillenbrand_wav(folder, names)
    rate = rec.sample_rate if sample_rate is None else int(sample_rate)
    x = np.stack([_prepare(s, rec.sample_rate, rate, int(length), crop, remove_dc)
                  for s in rec.signals])
    if label_slots:
        x = np.concatenate([np.zeros((x.shape[0], len(vowel_list))), x], axis=1)
    if scale == "unit":
        x = (x + 1) / 2
    speakers = np.asarray([n[:3] for n in rec.names])
    y = np.asarray([vowel_list.index(n[3:5]) for n in rec.names], dtype=np.int64)
    train, test = speaker_split(speakers, test_fraction, seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y)
    tokens = np.asarray(rec.names)
    return AudioDataset(
        "hillenbrand-audio", xt[train], yt[train], xt[test], yt[test], len(vowel_list),
        vowel_list, label_slots=len(vowel_list) if label_slots else 0, sample_rate=rate,
        train_speakers=tuple(sorted({str(s) for s in speakers[train]})),
        test_speakers=tuple(sorted({str(s) for s in speakers[test]})),
        train_tokens=tuple(str(n) for n in tokens[train]),
        test_tokens=tuple(str(n) for n in tokens[test]),
    )


def _as_codes(value: str | Sequence[str], what: str) -> list[str]:
    """A list of codes from a list or a string (``"mw"`` for groups, ``"iy"`` for one vowel)."""
    if isinstance(value, str):
        return list(value) if what == "group" else [value]
    return [str(v) for v in value]


def _check_options(
    vowels: Sequence[str], groups: Sequence[str], length: int, sample_rate: int | None,
    crop: str, test_fraction: float, scale: str,
) -> tuple[list[str], list[str]]:
    """Refuse what ``load_hillenbrand_audio`` cannot honour, one line each; the vowel and
    group lists."""
    vowel_list = _as_codes(vowels, "vowel")
    bad = [v for v in vowel_list if v not in HILLENBRAND_VOWELS]
    if bad:
        raise ValueError(f"unknown vowel {bad}; allowed: {', '.join(HILLENBRAND_VOWELS)}")
    if len(set(vowel_list)) != len(vowel_list) or len(vowel_list) < 2:
        raise ValueError(f"vowels must be >= 2 distinct codes, got {vowel_list}")
    group_list = _as_codes(groups, "group")
    bad = [g for g in group_list if g not in AUDIO_GROUPS]
    if bad or not group_list:
        raise ValueError(
            f"unknown speaker group {bad or group_list}; allowed: {', '.join(AUDIO_GROUPS)} "
            "(men, women, boys, girls)"
        )
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a whole number of samples >= 1, got {length!r}")
    if sample_rate is not None and (isinstance(sample_rate, bool)
                                    or not isinstance(sample_rate, int) or sample_rate < 1):
        raise ValueError(f"sample_rate must be a whole number of Hz >= 1 or None, got {sample_rate!r}")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    return vowel_list, sorted(set(group_list), key=group_list.index)


def _files(
    path: str | Path | None, vowels: list[str], groups: list[str]
) -> tuple[Path, list[str]]:
    """The folder of the recordings and the names (sorted) of those asked for."""
    if path is None:
        raise ValueError(
            f"hillenbrand-audio needs path=: the folder of the .wav files. {_NOT_DOWNLOADED}"
        )
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise _not_found(f"{folder} is not a folder", folder)
    if not any(folder.glob("*.wav")) and (folder / "wav").is_dir():
        folder = folder / "wav"
    found = [m for p in sorted(folder.glob("*.wav")) if (m := _FILE.match(p.name))]
    if not found:
        raise FileNotFoundError(f"no recordings like w01ae.wav in {folder}. {_NOT_DOWNLOADED}")
    present = sorted({m.group(1) for m in found})
    missing = [g for g in groups if g not in present]
    if missing:
        raise ValueError(
            f"no recordings of speaker group {missing} in {folder} (it holds groups "
            f"{', '.join(present)})"
        )
    names = [m.string[:-4] for m in found if m.group(1) in groups and m.group(3) in vowels]
    if not names:
        raise ValueError(f"no recordings of vowels {vowels} by groups {groups} in {folder}")
    return folder, names


def _prepare(
    signal: np.ndarray, rate: int, target: int, length: int, crop: str, remove_dc: bool
) -> np.ndarray:
    """One recording resampled to ``target`` Hz, cropped or padded to ``length``, scaled to
    ``max |x| = 1`` (float64)."""
    x = np.asarray(signal, dtype=np.float64)
    if target != rate:
        from scipy.signal import resample_poly

        g = gcd(int(target), int(rate))
        x = resample_poly(x, int(target) // g, int(rate) // g)
    if remove_dc and x.size:
        x = x - x.mean()
    if x.size > length:
        start = (x.size - length) // 2 if crop == "center" else 0
        x = x[start : start + length]
    elif x.size < length:
        before = (length - x.size) // 2 if crop == "center" else 0
        x = np.pad(x, (before, length - x.size - before))
    peak = float(np.abs(x).max()) if x.size else 0.0
    return x / peak if peak > 0 else x


def speaker_split(
    speakers: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices with no speaker in both, fixed by ``seed``.

    ``speakers`` holds one id per row whose first letter is the group (``w01``); within each
    group ``round(test_fraction * speakers)`` of its speakers (at least one, at most all but
    one) go to test. A group of one speaker goes to train.
    """
    rng = np.random.default_rng(seed)
    ids = sorted(set(speakers.tolist()))
    test_ids: set[str] = set()
    for group in sorted({s[0] for s in ids}):
        members = [s for s in ids if s[0] == group]
        if len(members) < 2:
            continue
        n_test = min(len(members) - 1, max(1, round(test_fraction * len(members))))
        order = rng.permutation(len(members))
        test_ids.update(members[i] for i in order[:n_test])
    if not test_ids:
        raise ValueError(
            f"a speaker split needs at least 2 speakers in one group, got {len(ids)} speaker(s)"
        )
    is_test = np.isin(speakers, sorted(test_ids))
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
