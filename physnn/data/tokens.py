"""Named token lists: which rows of a measurement table make up a published task.

A paper's data set is often a subset of a public table that no rule selects (Momeni et al.
2023 used 258 of the 336 women's 7-vowel tokens of Hillenbrand et al. 1995): only the list
of token names reproduces it. Names are facts and ship with the package; the measurements
stay in the user's file.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

SUBSETS = {"momeni2023": "momeni2023_tokens.txt"}
"""Named token lists shipped with physnn (package data), by name: ``momeni2023``, the 258
women's tokens of {ae, ah, aw, er, ih, iy, uw} of Momeni et al., Science 382:1297 (2023),
in the order of the authors' released table."""


def read_token_list(subset: str | Path) -> list[str]:
    """The token names of a named subset (``SUBSETS``) or of a file, in listed order.

    A file holds one name per line; ``#`` starts a comment, blank lines are skipped. A name
    listed twice is an error (it would weigh that token twice and shift the split).
    """
    name = str(subset)
    if name in SUBSETS:
        text = (resources.files("physnn.data") / SUBSETS[name]).read_text(encoding="utf-8")
        where = f"subset {name!r}"
    else:
        p = Path(name).expanduser()
        if not p.is_file():
            raise FileNotFoundError(
                f"subset {name!r} is neither a named subset ({', '.join(SUBSETS)}) nor a "
                "token-list file"
            )
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{p} is not UTF-8 text (byte {e.start})") from None
        where = str(p)
    names = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{where} lists no token names")
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    twice = [n for n, c in counts.items() if c > 1]
    if twice:
        raise ValueError(f"{where} lists token(s) more than once: {', '.join(twice[:10])}")
    return names


def token_rows(tokens: np.ndarray, names: Sequence[str], where: str) -> np.ndarray:
    """Row indices of ``names`` in ``tokens``, in the order of ``names``.

    The list's order, not the file's, fixes the row order, so a subset reproduces its
    authors' table wherever order matters (the seeded split shuffles within each class in
    row order). Names absent from ``tokens`` are an error that names them: a list meant
    for another file must not silently shrink the task.
    """
    index = {str(t): i for i, t in enumerate(tokens)}
    unknown = [n for n in names if n not in index]
    if unknown:
        more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise ValueError(
            f"{len(unknown)} listed token(s) not in {where}: {', '.join(unknown[:10])}{more}"
        )
    return np.asarray([index[n] for n in names], dtype=np.int64)
