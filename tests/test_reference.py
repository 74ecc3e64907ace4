"""The logistic-regression reference in torch gives sklearn's figure, and is fitted once."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from physnn.experiments import load_config
from physnn.experiments import reference as ref
from physnn.experiments.runner import load_data


def _split(preset: str, seed: int = 0) -> tuple[np.ndarray, ...]:
    data = load_data(load_config(preset), seed)
    x_tr, x_te = data.plain_features()
    return x_tr, data.y_train.numpy(), x_te, data.y_test.numpy()


def _objective(x: np.ndarray, y: np.ndarray, w: torch.Tensor, b: torch.Tensor) -> float:
    """sklearn's objective (C = 1) per sample."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    loss = F.cross_entropy(xt @ w + b, torch.as_tensor(y), reduction="sum") + 0.5 * w.square().sum()
    return float(loss) / len(y)


@pytest.mark.parametrize("preset", ["digits-optical", "vowels-microwave"])
def test_torch_reference_gives_sklearns_accuracy_and_objective(preset):
    from sklearn.linear_model import LogisticRegression

    x_tr, y_tr, x_te, y_te = _split(preset)
    torch_acc = ref.logistic_regression_accuracy(x_tr, y_tr, x_te, y_te, 0)
    sk_acc = ref.logistic_regression_accuracy(x_tr, y_tr, x_te, y_te, 0, solver="sklearn")
    assert abs(torch_acc - sk_acc) <= 0.003  # within 0.3 points
    w, b = ref.fit_logistic_regression(
        torch.as_tensor(x_tr, dtype=torch.float64), torch.as_tensor(y_tr), int(y_tr.max()) + 1
    )
    sk = LogisticRegression(max_iter=2000).fit(x_tr, y_tr)
    sk_w, sk_b = torch.as_tensor(sk.coef_.T).double(), torch.as_tensor(sk.intercept_).double()
    # the same minimum of the same objective: torch's is at least as low, and close
    f_torch, f_sk = _objective(x_tr, y_tr, w, b), _objective(x_tr, y_tr, sk_w, sk_b)
    assert f_torch <= f_sk + 1e-6 and f_torch == pytest.approx(f_sk, rel=1e-3)


def test_fit_is_cached_across_seeds_that_share_a_split():
    rng = np.random.default_rng(0)
    x = rng.random((300, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    n = len(ref._CACHE)
    first = ref.logistic_regression_accuracy(x[:200], y[:200], x[200:], y[200:], 0)
    assert len(ref._CACHE) == n + 1 and first > 0.8
    assert ref.logistic_regression_accuracy(x[:200], y[:200], x[200:], y[200:], 7) == first
    assert len(ref._CACHE) == n + 1  # seed 7 reused seed 0's fit
    ref.logistic_regression_accuracy(x[:200], y[:200], x[200:], 1 - y[200:], 0)
    assert len(ref._CACHE) == n + 2  # other arrays: another fit


def test_unknown_solver_is_refused():
    x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="solver 'newton'"):
        ref.logistic_regression_accuracy(x, y, x, y, 0, solver="newton")
