"""Digital reference models on the same split, so a reader sees what the physics adds."""

from __future__ import annotations

import warnings

import numpy as np


def logistic_regression_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> float:
    """Test accuracy of multinomial logistic regression on the raw (scaled) features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean())
