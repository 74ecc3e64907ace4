"""One group of measurements of a calibration record: the arrays, nothing about files.

Kept apart from ``physnn.twins.record`` so the analysis can read sections without
importing the record that calls it (imports inside ``twins`` point one way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Section:
    """One group of measurements: ``inputs`` and the ``outputs`` measured for them.

    Shapes per section (``C`` = output channels):

    - ``sweep``: inputs ``[N, n_in]``, outputs ``[N, C]``, query_index ``[N]``
    - ``repeats``: inputs ``[M, n_in]``, outputs ``[R, M, C]`` (R passes), query_index ``[R]``
    - ``drift``: inputs ``[K, n_in]``, outputs ``[T, K, C]`` (T checkpoints), query_index ``[T]``
    - ``response``: inputs ``[P, n_in]``, outputs ``[P, C]``, query_index ``[P]``,
      extras ``coordinate`` and ``value`` ``[P]`` (which input was varied, to what)

    ``query_index`` is the device's query count (samples measured since the calibration
    started) when the row, pass or checkpoint began: the clock drift is measured against.
    """

    inputs: np.ndarray
    outputs: np.ndarray
    query_index: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inputs = np.asarray(self.inputs, dtype=np.float64)
        self.outputs = np.asarray(self.outputs, dtype=np.float64)
        if self.query_index is not None:
            self.query_index = np.asarray(self.query_index, dtype=np.int64)
        self.extras = {k: np.asarray(v) for k, v in self.extras.items()}
